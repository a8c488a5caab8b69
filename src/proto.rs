//! Generated gRPC types and services (from proto/, compiled by build.rs with protox).
#![allow(missing_docs, clippy::all, clippy::pedantic)]

/// `confidant.v1`: the Confidant API.
pub mod confidant {
    /// Version 1.
    pub mod v1 {
        tonic::include_proto!("confidant.v1");
    }
}

/// `inference`: the Open Inference Protocol (KServe predict v2, `GRPCInferenceService`), with
/// Triton's two extra `InferParameter` fields.
pub mod inference {
    tonic::include_proto!("inference");
}

/// The codec of every generated service and client (build.rs names it).
pub mod codec {
    use std::marker::PhantomData;

    use prost::Message;
    use tonic::Status;
    use tonic::codec::{BufferSettings, Codec, DecodeBuf, Decoder};
    use tonic_prost::ProstEncoder;

    /// prost's codec, except that a message that does not decode (invalid UTF-8 in a
    /// `string` field, a truncated varint, a wrong wire type) is the sender's error:
    /// `INVALID_ARGUMENT` naming the problem, where tonic-prost answers `INTERNAL`. On the
    /// server that is a caller's malformed request; a client reports a server's malformed
    /// answer the same way.
    #[derive(Debug, Clone)]
    pub struct StrictCodec<T, U>(PhantomData<(T, U)>);

    impl<T, U> Default for StrictCodec<T, U> {
        fn default() -> Self {
            Self(PhantomData)
        }
    }

    impl<T, U> Codec for StrictCodec<T, U>
    where
        T: Message + Send + 'static,
        U: Message + Default + Send + 'static,
    {
        type Encode = T;
        type Decode = U;
        type Encoder = ProstEncoder<T>;
        type Decoder = StrictDecoder<U>;

        fn encoder(&mut self) -> Self::Encoder {
            ProstEncoder::new(BufferSettings::default())
        }

        fn decoder(&mut self) -> Self::Decoder {
            StrictDecoder(PhantomData)
        }
    }

    /// The decoder of [`StrictCodec`].
    #[derive(Debug, Clone)]
    pub struct StrictDecoder<U>(PhantomData<U>);

    impl<U: Message + Default> Decoder for StrictDecoder<U> {
        type Item = U;
        type Error = Status;

        fn decode(&mut self, buf: &mut DecodeBuf<'_>) -> Result<Option<U>, Status> {
            U::decode(buf)
                .map(Some)
                .map_err(|e| Status::invalid_argument(format!("the message does not decode: {e}")))
        }
    }
}

/// The encoded file descriptor set of every proto, for gRPC server reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] = tonic::include_file_descriptor_set!("confidant_descriptor");

/// The canonical upper-case name of a gRPC status code, as in the gRPC spec.
pub fn code_name(code: tonic::Code) -> &'static str {
    match code {
        tonic::Code::Ok => "OK",
        tonic::Code::Cancelled => "CANCELLED",
        tonic::Code::Unknown => "UNKNOWN",
        tonic::Code::InvalidArgument => "INVALID_ARGUMENT",
        tonic::Code::DeadlineExceeded => "DEADLINE_EXCEEDED",
        tonic::Code::NotFound => "NOT_FOUND",
        tonic::Code::AlreadyExists => "ALREADY_EXISTS",
        tonic::Code::PermissionDenied => "PERMISSION_DENIED",
        tonic::Code::ResourceExhausted => "RESOURCE_EXHAUSTED",
        tonic::Code::FailedPrecondition => "FAILED_PRECONDITION",
        tonic::Code::Aborted => "ABORTED",
        tonic::Code::OutOfRange => "OUT_OF_RANGE",
        tonic::Code::Unimplemented => "UNIMPLEMENTED",
        tonic::Code::Internal => "INTERNAL",
        tonic::Code::Unavailable => "UNAVAILABLE",
        tonic::Code::DataLoss => "DATA_LOSS",
        tonic::Code::Unauthenticated => "UNAUTHENTICATED",
    }
}
