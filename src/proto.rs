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
