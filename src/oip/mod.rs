//! The Open Inference Protocol (KServe predict v2, the gRPC API Triton serves): a second front
//! end on the same port, TLS and guards as `confidant.v1`, so that Triton's clients
//! (`tritonclient`, `perf_analyzer`) and KServe tooling can call a Confidant server.
//!
//! - [`service`]: `inference.GRPCInferenceService`, translated onto the shared
//!   [`Pipeline`](crate::pipeline::Pipeline).
//! - [`tensor`]: protocol tensors (raw little-endian or typed contents) to the engine's f32
//!   rows, refusing every lossy conversion.
//! - [`error`]: why a tensor was refused (INVALID_ARGUMENT).
//!
//! Tensor names come from the model config (`input.tensor_name`, `output_tensor_name`),
//! `input__0` and `output__0` by default; inputs are `[rows, features]`.

pub mod error;
pub mod service;
pub mod tensor;

pub use error::TensorError;
pub use service::OipService;
pub use tensor::Datatype;

#[cfg(test)]
mod tests;
