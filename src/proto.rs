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
