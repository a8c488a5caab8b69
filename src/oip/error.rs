//! Why an Open Inference Protocol request's tensors were refused.

use crate::pipeline::ApiError;

/// A tensor the server cannot turn into the model's `[rows, features]` f32 input, or an output
/// it cannot produce. Messages name the tensor and its datatype, never a value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TensorError {
    /// The request carries a number of input tensors other than one.
    #[error("model {model} takes exactly one input tensor ({expected:?}), the request has {found}")]
    InputCount {
        /// The model id.
        model: String,
        /// The model's input tensor name.
        expected: String,
        /// Inputs sent.
        found: usize,
    },
    /// An input tensor name the model does not have.
    #[error("model {model} has no input tensor {name:?}; its input is {expected:?}")]
    UnknownInput {
        /// The model id.
        model: String,
        /// The name sent.
        name: String,
        /// The model's input tensor name.
        expected: String,
    },
    /// A requested output the model does not have.
    #[error("model {model} has no output tensor {name:?}; its output is {expected:?}")]
    UnknownOutput {
        /// The model id.
        model: String,
        /// The name requested.
        name: String,
        /// The model's output tensor name.
        expected: String,
    },
    /// The shape is not `[rows, features]` with non-negative dimensions.
    #[error("input tensor {name:?}: shape must be [rows, features], got {shape:?}")]
    Shape {
        /// The tensor name.
        name: String,
        /// The shape sent.
        shape: Vec<i64>,
    },
    /// A datatype that has no lossless conversion to FP32 at all (BOOL, BYTES, unknown).
    #[error(
        "input tensor {name:?}: datatype {datatype:?} is not supported \
         (FP32, or FP16, BF16, FP64, INT8-64 or UINT8-64 converted losslessly)"
    )]
    Datatype {
        /// The tensor name.
        name: String,
        /// The datatype sent.
        datatype: String,
    },
    /// A value that FP32 cannot hold exactly.
    #[error(
        "input tensor {name:?} ({datatype}): element {index} is not exactly representable \
         as FP32; send FP32"
    )]
    Inexact {
        /// The tensor name.
        name: String,
        /// The datatype.
        datatype: &'static str,
        /// The flat element index.
        index: usize,
    },
    /// A typed-contents value outside its declared datatype (300 in an INT8 tensor).
    #[error("input tensor {name:?} ({datatype}): element {index} is outside the datatype's range")]
    OutOfType {
        /// The tensor name.
        name: String,
        /// The datatype.
        datatype: &'static str,
        /// The flat element index.
        index: usize,
    },
    /// Raw contents whose byte length does not match the shape and datatype.
    #[error(
        "input tensor {name:?} ({datatype}): shape {shape:?} needs {expected} bytes of raw \
         contents, got {found}"
    )]
    RawLength {
        /// The tensor name.
        name: String,
        /// The datatype.
        datatype: &'static str,
        /// The shape.
        shape: Vec<i64>,
        /// Bytes needed.
        expected: u128,
        /// Bytes sent.
        found: usize,
    },
    /// Typed contents whose element count does not match the shape.
    #[error(
        "input tensor {name:?} ({datatype}): shape {shape:?} needs {expected} values in \
         contents.{field}, got {found}"
    )]
    ContentsLength {
        /// The tensor name.
        name: String,
        /// The datatype.
        datatype: &'static str,
        /// The contents field the datatype uses.
        field: &'static str,
        /// The shape.
        shape: Vec<i64>,
        /// Values needed.
        expected: u128,
        /// Values sent.
        found: usize,
    },
    /// A datatype with no typed-contents field (FP16, BF16) sent without raw contents.
    #[error("input tensor {name:?} ({datatype}): this datatype must be sent in raw_input_contents")]
    RawOnly {
        /// The tensor name.
        name: String,
        /// The datatype.
        datatype: &'static str,
    },
    /// Both raw and typed contents for one tensor.
    #[error("input tensor {name:?}: send either raw_input_contents or contents, not both")]
    MixedContents {
        /// The tensor name.
        name: String,
    },
    /// A name the caller chose (tensor name, datatype, request id) that breaks the id rule:
    /// refused before it is echoed in any message.
    #[error(transparent)]
    Name(#[from] crate::names::NameError),
    /// A shape with more dimensions than any tensor this server takes (not echoed).
    #[error("input tensor {name:?}: shape has {dims} dimensions; it must be [rows, features]")]
    Rank {
        /// The tensor name.
        name: String,
        /// Dimensions sent.
        dims: usize,
    },
    /// A text model's input tensor is not `[n]` or `[n, 1]` BYTES.
    #[error(
        "input tensor {name:?}: a text model takes BYTES of shape [n] or [n, 1], got \
         {datatype} {shape:?}"
    )]
    TextTensor {
        /// The tensor name.
        name: String,
        /// The datatype sent.
        datatype: String,
        /// The shape sent.
        shape: Vec<i64>,
    },
    /// Raw BYTES contents that do not split into length-prefixed elements.
    #[error(
        "input tensor {name:?} (BYTES): raw contents must be {count} elements, each a 4-byte \
         little-endian length and that many bytes; {problem}"
    )]
    BytesEncoding {
        /// The tensor name.
        name: String,
        /// Elements the shape says.
        count: u64,
        /// What is wrong.
        problem: String,
    },
    /// `raw_input_contents` does not hold one entry per input.
    #[error("raw_input_contents has {raw} entries for {inputs} input tensors")]
    RawCount {
        /// Raw entries sent.
        raw: usize,
        /// Input tensors sent.
        inputs: usize,
    },
}

impl From<TensorError> for ApiError {
    fn from(e: TensorError) -> Self {
        // INVALID_ARGUMENT, mapped in the server's one `Status` conversion.
        ApiError::BadRequest(e.to_string())
    }
}
