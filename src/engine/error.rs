//! Engine errors.

/// A model config that cannot be used.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// The JSON does not parse into a config.
    #[error("model config is not valid: {0}")]
    Json(String),
    /// The config parses but breaks a rule.
    #[error("model config is not valid: {0}")]
    Invalid(String),
}

/// Errors from building or running models.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum EngineError {
    /// The config is unusable.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The safetensors weights do not parse.
    #[error("weights are not valid safetensors: {0}")]
    Safetensors(String),
    /// A tensor the config names is absent from the weights.
    #[error("weights have no tensor named {name:?} (named by layer {layer})")]
    MissingTensor {
        /// The tensor name.
        name: String,
        /// The layer index.
        layer: usize,
    },
    /// A tensor has the wrong shape for its place in the network.
    #[error("tensor {name:?} has shape {found:?}, expected {expected:?}")]
    Shape {
        /// The tensor name.
        name: String,
        /// Its shape.
        found: Vec<usize>,
        /// The shape the architecture needs.
        expected: Vec<usize>,
    },
    /// A tensor has a dtype we do not load.
    #[error("tensor {name:?} has dtype {dtype}; expected F32, F64, F16 or BF16")]
    Dtype {
        /// The tensor name.
        name: String,
        /// Its dtype.
        dtype: String,
    },
    /// A weight is NaN or infinite.
    #[error("tensor {name:?} holds a non-finite value")]
    NonFinite {
        /// The tensor name.
        name: String,
    },
    /// The request's shape does not fit the model.
    #[error("input has {found} columns, model {model} expects {expected}")]
    Width {
        /// The model id.
        model: String,
        /// Columns sent.
        found: usize,
        /// Columns expected.
        expected: usize,
    },
    /// The batch queue is full.
    #[error("model {model} queue is full ({capacity} requests waiting); retry later")]
    QueueFull {
        /// The model id.
        model: String,
        /// The queue capacity.
        capacity: usize,
    },
    /// The model is being unloaded or the server is shutting down.
    #[error("model {model} is shutting down")]
    ShuttingDown {
        /// The model id.
        model: String,
    },
    /// The input's form does not fit the model (rows for a text model, texts for an MLP).
    #[error("model {model} takes {expected}, not {found}")]
    WrongInput {
        /// The model id.
        model: String,
        /// What the model takes.
        expected: &'static str,
        /// What the request sent.
        found: &'static str,
    },
    /// No loaded model has this id.
    #[error("no model {0:?} is loaded")]
    UnknownModel(String),
    /// Two models with one id.
    #[error("model {0:?} is already loaded")]
    DuplicateModel(String),
    /// A file of a Hugging Face model directory (`config.json`, `1_Pooling/config.json`,
    /// ...) is not what a supported model has.
    #[error("{file}: {problem}")]
    ModelFile {
        /// The file, as named in the model directory.
        file: String,
        /// What is wrong.
        problem: String,
    },
    /// A file the model needs is not in the sealed bundle.
    #[error("the sealed model has no {0:?}")]
    MissingEntry(String),
    /// `tokenizer.json` does not load or does not fit the model.
    #[error("tokenizer.json is not usable: {0}")]
    Tokenizer(String),
    /// A text could not be tokenized.
    #[error("text {index} could not be tokenized: {problem}")]
    Tokenize {
        /// The text's index in the request.
        index: usize,
        /// What the tokenizer said.
        problem: String,
    },
    /// A text has more tokens than the model accepts and its policy is `refuse`.
    #[error(
        "text {index} has {tokens} tokens; model {model} accepts at most {limit} \
         (truncation: refuse)"
    )]
    TooManyTokens {
        /// The model id.
        model: String,
        /// The text's index in the request.
        index: usize,
        /// Its tokens, special tokens included.
        tokens: usize,
        /// The model's `max_tokens`.
        limit: usize,
    },
    /// The operation needs another task (logits from an embedding model, say).
    #[error("model {model} is a {task} model; {operation} needs a {needed} model")]
    WrongTask {
        /// The model id.
        model: String,
        /// The model's task.
        task: &'static str,
        /// What was asked.
        operation: &'static str,
        /// The task the operation needs.
        needed: &'static str,
    },
    /// An explanation names no output where there is no default (an embedding model), or
    /// one that does not exist.
    #[error("model {model}: {problem}")]
    ExplainTarget {
        /// The model id.
        model: String,
        /// What is wrong with the target.
        problem: String,
    },
    /// The model cannot be explained.
    #[error("model {model} cannot be explained: {reason}")]
    NotExplainable {
        /// The model id.
        model: String,
        /// Why.
        reason: String,
    },
    /// A failure inside candle (a bug or resource exhaustion, never bad input).
    #[error("compute failed: {0}")]
    Compute(#[from] candle_core::Error),
}
