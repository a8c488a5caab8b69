//! The model config: the JSON a publisher writes next to the safetensors weights.
//!
//! `confidant seal` validates it against the weights and embeds it, signed, in the sealed
//! manifest. The server trusts only the signed copy. Unknown fields are refused, so that a
//! field this version does not understand (a privacy policy, say) is never silently dropped.

use serde::{Deserialize, Serialize};

use super::error::ConfigError;
use super::explain::ExplanationSpec;
use super::screening::ScreeningSpec;
use crate::privacy::policy::PrivacyPolicy;

mod encoder;

pub use encoder::{
    DEFAULT_EMBEDDING_OUTPUT_TENSOR, DEFAULT_TEXT_INPUT_TENSOR, EncoderArchitecture, EncoderConfig,
    HeadKind, MAX_TOKENS_LIMIT, Pooling, TextHead, TextTask, Truncation,
};

/// Longest accepted model id, in bytes.
pub const MAX_ID_LEN: usize = 128;
/// Most input features a model may declare.
pub const MAX_FEATURES: usize = 1 << 20;
/// Most layers an MLP may declare.
pub const MAX_LAYERS: usize = 1024;
/// The Open Inference Protocol input tensor name when the config names none (Triton's
/// convention for unnamed model inputs).
pub const DEFAULT_INPUT_TENSOR: &str = "input__0";
/// The Open Inference Protocol output tensor name when the config names none.
pub const DEFAULT_OUTPUT_TENSOR: &str = "output__0";

/// A model as its publisher describes it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelConfig {
    /// The model id: `[A-Za-z0-9._-]`, 1 to 128 bytes. Requests address the model by it.
    pub id: String,
    /// The model version (free text, for example semver).
    pub version: String,
    /// A human description.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// The network.
    pub architecture: Architecture,
    /// The input schema.
    pub input: InputSchema,
    /// One label per output column.
    pub labels: Vec<String>,
    /// The output tensor's name in the Open Inference Protocol [default: `output__0`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output_tensor_name: Option<String>,
    /// The purposes this model may be used for (GDPR purpose limitation). When not empty,
    /// every request must declare one of them.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub purposes: Vec<String>,
    /// The differential-privacy guarantee of training, where there is one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dp_training: Option<DpGuarantee>,
    /// Adversarial-sensitivity screening, mandatory when set here: the server config can
    /// tighten it but not switch it off.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub screening: Option<ScreeningSpec>,
    /// The output privacy policy of Predict, mandatory when set here: the server config can
    /// tighten it but not weaken it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub privacy: Option<PrivacyPolicy>,
    /// How Explain explains this model (its integrated-gradients baseline).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub explanation: Option<ExplanationSpec>,
}

/// The network architecture.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Architecture {
    /// The kind of network. Only `mlp` for now.
    pub kind: ArchitectureKind,
    /// What the last layer's output becomes.
    pub output: OutputKind,
    /// The dense layers, input first.
    pub layers: Vec<LayerSpec>,
}

/// The supported network kinds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ArchitectureKind {
    /// A multi-layer perceptron: dense layers with element-wise activations.
    Mlp,
    /// A BERT-family transformer text encoder ([`EncoderConfig`]).
    Bert,
}

impl ArchitectureKind {
    /// The name used in configs.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Mlp => "mlp",
            Self::Bert => "bert",
        }
    }

    /// What a model of this kind takes as input, as refusals name it.
    pub fn input_form(self) -> &'static str {
        match self {
            Self::Mlp => "numeric rows",
            Self::Bert => "texts",
        }
    }
}

/// A model config of any kind, told apart by `architecture.kind`; it serializes exactly as
/// the config it holds.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum ModelSpec {
    /// `architecture.kind = "mlp"`.
    Mlp(ModelConfig),
    /// `architecture.kind = "bert"`.
    Bert(EncoderConfig),
}

impl ModelSpec {
    /// Parses and validates a config of any kind from JSON bytes.
    pub fn from_json(bytes: &[u8]) -> Result<Self, ConfigError> {
        let spec: Self =
            serde_json::from_slice(bytes).map_err(|e| ConfigError::Json(e.to_string()))?;
        spec.validate()?;
        Ok(spec)
    }

    /// The model id.
    pub fn id(&self) -> &str {
        match self {
            Self::Mlp(c) => &c.id,
            Self::Bert(c) => &c.id,
        }
    }

    /// The model version.
    pub fn version(&self) -> &str {
        match self {
            Self::Mlp(c) => &c.version,
            Self::Bert(c) => &c.version,
        }
    }

    /// The kind of network.
    pub fn kind(&self) -> ArchitectureKind {
        match self {
            Self::Mlp(_) => ArchitectureKind::Mlp,
            Self::Bert(_) => ArchitectureKind::Bert,
        }
    }

    /// Checks everything that can be checked without the weights.
    pub fn validate(&self) -> Result<(), ConfigError> {
        match self {
            Self::Mlp(c) => c.validate(),
            Self::Bert(c) => c.validate(),
        }
    }
}

impl Serialize for ModelSpec {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self {
            Self::Mlp(c) => c.serialize(serializer),
            Self::Bert(c) => c.serialize(serializer),
        }
    }
}

impl<'de> Deserialize<'de> for ModelSpec {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        use serde::de::Error;
        let value = serde_json::Value::deserialize(deserializer)?;
        let kind = value
            .get("architecture")
            .and_then(|a| a.get("kind"))
            .ok_or_else(|| D::Error::missing_field("architecture.kind"))?;
        let kind = ArchitectureKind::deserialize(kind).map_err(D::Error::custom)?;
        match kind {
            ArchitectureKind::Mlp => serde_json::from_value(value)
                .map(Self::Mlp)
                .map_err(D::Error::custom),
            ArchitectureKind::Bert => serde_json::from_value(value)
                .map(Self::Bert)
                .map_err(D::Error::custom),
        }
    }
}

/// The output transform.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OutputKind {
    /// Probabilities (softmax over the last layer).
    Softmax,
    /// The last layer's raw output.
    Logits,
}

impl OutputKind {
    /// The name used in configs and in the API.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Softmax => "softmax",
            Self::Logits => "logits",
        }
    }
}

/// One dense layer: `y = act(x · Wᵀ + b)`, with `W` of shape `[out, in]` as PyTorch stores it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LayerSpec {
    /// The safetensors name of the weight, for example `0.weight`.
    pub weight: String,
    /// The safetensors name of the bias, for example `0.bias`. Absent for `bias=False`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bias: Option<String>,
    /// The activation applied after the affine map.
    pub activation: Activation,
}

/// Element-wise activations.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Activation {
    /// max(0, x)
    Relu,
    /// GELU, the exact erf form (PyTorch's default `nn.GELU()`).
    Gelu,
    /// tanh(x)
    Tanh,
    /// 1 / (1 + e^-x)
    Sigmoid,
    /// The identity.
    None,
}

/// The input schema. Every request row is checked against it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InputSchema {
    /// Feature names, in column order.
    pub features: Vec<String>,
    /// Per-feature minimum accepted value.
    pub min: Vec<f32>,
    /// Per-feature maximum accepted value.
    pub max: Vec<f32>,
    /// Optional standardization applied before the first layer: `(x - mean) / std`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub normalization: Option<Normalization>,
    /// The input tensor's name in the Open Inference Protocol [default: `input__0`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tensor_name: Option<String>,
    /// What happens to a finite value outside `[min, max]`: `reject` (the default) refuses
    /// the request, `clip` clamps the value to the range. NaN and ±Inf are always refused.
    #[serde(default, skip_serializing_if = "RangePolicy::is_reject")]
    pub out_of_range: RangePolicy,
}

/// What happens to an input value outside its feature's signed range.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RangePolicy {
    /// Refuse the request, naming the row and the feature.
    #[default]
    Reject,
    /// Clamp the value into `[min, max]`.
    Clip,
}

impl RangePolicy {
    /// Whether this is the default, `reject`.
    pub fn is_reject(&self) -> bool {
        *self == Self::Reject
    }
}

/// Input standardization, as fitted on the training data.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Normalization {
    /// Per-feature mean.
    pub mean: Vec<f32>,
    /// Per-feature standard deviation; every value must be finite and > 0.
    pub std: Vec<f32>,
}

/// An (ε, δ) differential-privacy guarantee.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DpGuarantee {
    /// ε > 0.
    pub epsilon: f64,
    /// 0 ≤ δ < 1.
    pub delta: f64,
    /// How the guarantee was obtained, where a DP-SGD run recorded it: enough for anyone to
    /// recompute ε with `confidant privacy epsilon`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mechanism: Option<DpSgdMechanism>,
}

/// The DP-SGD parameters behind a [`DpGuarantee`]: the Poisson-subsampled Gaussian mechanism
/// composed over `steps` steps, under add-or-remove-one adjacency.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DpSgdMechanism {
    /// The Poisson sampling probability q (expected batch size / training rows), in (0, 1].
    pub sample_rate: f64,
    /// σ: the noise standard deviation divided by the clipping norm; > 0.
    pub noise_multiplier: f64,
    /// The number of noisy gradient steps; ≥ 1.
    pub steps: u64,
    /// The per-example gradient clipping norm C; > 0. It does not enter ε, but fixes the
    /// noise scale σ·C.
    pub clip_norm: f64,
    /// The accountant that computed ε: `pld`, `prv` or `rdp`.
    pub accountant: String,
}

impl ModelConfig {
    /// Parses and validates a config from JSON bytes.
    pub fn from_json(bytes: &[u8]) -> Result<Self, ConfigError> {
        let config: Self =
            serde_json::from_slice(bytes).map_err(|e| ConfigError::Json(e.to_string()))?;
        config.validate()?;
        Ok(config)
    }

    /// The number of input features.
    pub fn feature_count(&self) -> usize {
        self.input.features.len()
    }

    /// The number of outputs.
    pub fn output_count(&self) -> usize {
        self.labels.len()
    }

    /// The input tensor's Open Inference Protocol name.
    pub fn input_tensor_name(&self) -> &str {
        self.input
            .tensor_name
            .as_deref()
            .unwrap_or(DEFAULT_INPUT_TENSOR)
    }

    /// The output tensor's Open Inference Protocol name.
    pub fn output_tensor_name(&self) -> &str {
        self.output_tensor_name
            .as_deref()
            .unwrap_or(DEFAULT_OUTPUT_TENSOR)
    }

    /// Checks everything that can be checked without the weights.
    pub fn validate(&self) -> Result<(), ConfigError> {
        validate_id(&self.id)?;
        if self.version.is_empty() || self.version.len() > MAX_ID_LEN {
            return Err(ConfigError::Invalid(format!(
                "version must be 1 to {MAX_ID_LEN} bytes"
            )));
        }
        let n = self.input.features.len();
        if n == 0 || n > MAX_FEATURES {
            return Err(ConfigError::Invalid(format!(
                "input.features must list 1 to {MAX_FEATURES} features, found {n}"
            )));
        }
        for (what, v) in [
            ("input.min", &self.input.min),
            ("input.max", &self.input.max),
        ] {
            if v.len() != n {
                return Err(ConfigError::Invalid(format!(
                    "{what} has {} values but there are {n} features",
                    v.len()
                )));
            }
        }
        for (i, (lo, hi)) in self.input.min.iter().zip(&self.input.max).enumerate() {
            let name = &self.input.features[i];
            if !lo.is_finite() || !hi.is_finite() || lo > hi {
                return Err(ConfigError::Invalid(format!(
                    "feature {i} ({name}): min {lo} and max {hi} must be finite with min <= max"
                )));
            }
        }
        if let Some(norm) = &self.input.normalization {
            if norm.mean.len() != n || norm.std.len() != n {
                return Err(ConfigError::Invalid(format!(
                    "input.normalization mean/std must have {n} values each (found {} and {})",
                    norm.mean.len(),
                    norm.std.len()
                )));
            }
            if let Some(i) = norm.mean.iter().position(|m| !m.is_finite()) {
                return Err(ConfigError::Invalid(format!(
                    "input.normalization.mean[{i}] is not finite"
                )));
            }
            if let Some(i) = norm.std.iter().position(|s| !(s.is_finite() && *s > 0.0)) {
                return Err(ConfigError::Invalid(format!(
                    "input.normalization.std[{i}] must be finite and > 0"
                )));
            }
        }
        if self.labels.is_empty() {
            return Err(ConfigError::Invalid("labels must not be empty".into()));
        }
        for (what, name) in [
            ("input.tensor_name", &self.input.tensor_name),
            ("output_tensor_name", &self.output_tensor_name),
        ] {
            if let Some(name) = name
                && validate_id(name).is_err()
            {
                return Err(ConfigError::Invalid(format!(
                    "{what} {name:?} must be 1 to {MAX_ID_LEN} characters of [A-Za-z0-9._-], \
                     not starting with '.'"
                )));
            }
        }
        if self.input_tensor_name() == self.output_tensor_name() {
            return Err(ConfigError::Invalid(format!(
                "the input and output tensors are both named {:?}",
                self.input_tensor_name()
            )));
        }
        if self.architecture.kind != ArchitectureKind::Mlp {
            return Err(ConfigError::Invalid(format!(
                "architecture.kind {:?} is not an MLP; a text encoder's config has no input \
                 schema or layers (see EncoderConfig)",
                self.architecture.kind.as_str()
            )));
        }
        let layers = &self.architecture.layers;
        if layers.is_empty() || layers.len() > MAX_LAYERS {
            return Err(ConfigError::Invalid(format!(
                "architecture.layers must hold 1 to {MAX_LAYERS} layers, found {}",
                layers.len()
            )));
        }
        validate_purposes(&self.purposes)?;
        if let Some(dp) = &self.dp_training {
            dp.validate()?;
        }
        if let Some(screening) = &self.screening {
            screening.validate()?;
        }
        if let Some(explanation) = &self.explanation {
            explanation.validate(n)?;
        }
        if let Some(privacy) = &self.privacy {
            privacy
                .validate(self.architecture.output == OutputKind::Softmax)
                .map_err(|e| ConfigError::Invalid(format!("privacy: {e}")))?;
        }
        Ok(())
    }
}

impl DpGuarantee {
    /// Checks the ranges of ε, δ and the recorded mechanism.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if !(self.epsilon.is_finite()
            && self.epsilon > 0.0
            && self.delta.is_finite()
            && (0.0..1.0).contains(&self.delta))
        {
            return Err(ConfigError::Invalid(
                "dp_training needs a finite epsilon > 0 and 0 <= delta < 1".into(),
            ));
        }
        if let Some(m) = &self.mechanism {
            let ok = m.sample_rate.is_finite()
                && m.sample_rate > 0.0
                && m.sample_rate <= 1.0
                && m.noise_multiplier.is_finite()
                && m.noise_multiplier > 0.0
                && m.steps >= 1
                && m.clip_norm.is_finite()
                && m.clip_norm > 0.0
                && matches!(m.accountant.as_str(), "pld" | "prv" | "rdp");
            if !ok {
                return Err(ConfigError::Invalid(
                    "dp_training.mechanism needs 0 < sample_rate <= 1, a finite noise_multiplier \
                         > 0, steps >= 1, a finite clip_norm > 0 and accountant pld, prv or rdp"
                        .into(),
                ));
            }
        }
        Ok(())
    }
}

/// Checks declared purposes: each 1 to 128 characters of `[A-Za-z0-9._@-]`.
pub fn validate_purposes(purposes: &[String]) -> Result<(), ConfigError> {
    for p in purposes {
        let ok = !p.is_empty()
            && p.len() <= 128
            && p.bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-' | b'@'));
        if !ok {
            return Err(ConfigError::Invalid(format!(
                "purpose {p:?} must be 1 to 128 characters of [A-Za-z0-9._@-]"
            )));
        }
    }

    Ok(())
}

/// Checks a model id: 1 to 128 bytes of `[A-Za-z0-9._-]`, not starting with `.`.
pub fn validate_id(id: &str) -> Result<(), ConfigError> {
    let ok_chars = id
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
    if id.is_empty() || id.len() > MAX_ID_LEN || !ok_chars || id.starts_with('.') {
        return Err(ConfigError::Invalid(format!(
            "model id {id:?} must be 1 to {MAX_ID_LEN} characters of [A-Za-z0-9._-], \
             not starting with '.'"
        )));
    }
    Ok(())
}
