//! Synthetic MLPs with deterministic weights, for the kernel tests and the GPU benchmarks
//! (the shapes of the tabular models Confidant serves, at any width).

use std::collections::HashMap;

use safetensors::tensor::TensorView;

use super::{EngineError, ModelConfig};

/// Deterministic values in `[-scale/2, scale/2)` (xorshift; not random, only spread).
pub fn values(n: usize, seed: u64, scale: f32) -> Vec<f32> {
    let mut s = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..n)
        .map(|_| {
            s ^= s >> 12;
            s ^= s << 25;
            s ^= s >> 27;
            let r = s.wrapping_mul(0x2545_F491_4F6C_DD1D);
            ((r >> 40) as f32 / (1u64 << 24) as f32 - 0.5) * scale
        })
        .collect()
}

/// A `widths[0] → … → widths[n]` MLP (relu between layers, softmax output, input
/// standardization, biases) as a model config and PyTorch-named safetensors bytes.
pub fn mlp(widths: &[usize], seed: u64) -> Result<(ModelConfig, Vec<u8>), EngineError> {
    let bad = |m: String| EngineError::Safetensors(m);
    if widths.len() < 2 {
        return Err(bad(
            "an MLP needs at least an input and an output width".into()
        ));
    }
    let mut data: Vec<(String, Vec<usize>, Vec<u8>)> = Vec::new();
    let mut layers = Vec::new();
    let last = widths.len() - 2;
    for (i, pair) in widths.windows(2).enumerate() {
        let (inp, out) = (pair[0], pair[1]);
        let scale = 2.0 / (inp as f32).sqrt();
        let bytes = |v: Vec<f32>| v.iter().flat_map(|x| x.to_le_bytes()).collect::<Vec<u8>>();
        data.push((
            format!("{}.weight", 2 * i),
            vec![out, inp],
            bytes(values(out * inp, seed + 10 + i as u64, scale)),
        ));
        data.push((
            format!("{}.bias", 2 * i),
            vec![out],
            bytes(values(out, seed + 100 + i as u64, 0.2)),
        ));
        layers.push(serde_json::json!({
            "weight": format!("{}.weight", 2 * i),
            "bias": format!("{}.bias", 2 * i),
            "activation": if i == last { "none" } else { "relu" },
        }));
    }
    let views = data
        .iter()
        .map(|(name, shape, b)| {
            TensorView::new(safetensors::Dtype::F32, shape.clone(), b)
                .map(|v| (name.clone(), v))
                .map_err(|e| bad(e.to_string()))
        })
        .collect::<Result<Vec<_>, _>>()?;
    let weights = safetensors::serialize(views, None::<HashMap<String, String>>)
        .map_err(|e| bad(e.to_string()))?;
    let inp = widths[0];
    let out = widths[widths.len() - 1];
    let features: Vec<String> = (0..inp).map(|i| format!("f{i}")).collect();
    let mean = values(inp, seed + 30, 1.0);
    let std: Vec<f32> = values(inp, seed + 31, 1.0)
        .iter()
        .map(|v| 1.0 + v)
        .collect();
    let labels: Vec<String> = (0..out).map(|i| format!("c{i}")).collect();
    let config = serde_json::json!({
        "id": format!("synthetic-{}", widths.iter().map(usize::to_string).collect::<Vec<_>>().join("-")),
        "version": "1.0.0",
        "architecture": {"kind": "mlp", "output": "softmax", "layers": layers},
        "input": {"features": features, "min": vec![-10.0; inp], "max": vec![10.0; inp],
                  "normalization": {"mean": mean, "std": std}},
        "labels": labels,
    });
    let config = ModelConfig::from_json(config.to_string().as_bytes())
        .map_err(|e| bad(format!("synthetic config: {e}")))?;
    Ok((config, weights))
}
