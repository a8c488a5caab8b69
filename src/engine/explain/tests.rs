use candle_core::Device;

use super::*;
use crate::engine::ModelConfig;

const WEIGHTS: &[u8] = include_bytes!("../../../tests/fixtures/mlp/weights.safetensors");
const SOFTMAX: &[u8] = include_bytes!("../../../tests/fixtures/mlp/softmax.json");
const LOGITS: &[u8] = include_bytes!("../../../tests/fixtures/mlp/logits.json");

fn row(seed: u32) -> Vec<f32> {
    (0..8)
        .map(|i| ((i * 7 + seed * 13) % 17) as f32 / 4.0 - 2.0)
        .collect()
}

#[test]
fn attributions_are_complete_for_every_activation_and_both_outputs() {
    // The fixture MLP chains relu, gelu, tanh, sigmoid and none.
    for config in [SOFTMAX, LOGITS] {
        let config = ModelConfig::from_json(config).unwrap();
        let mlp = Mlp::from_safetensors(&config, WEIGHTS, &Device::Cpu).unwrap();
        let baseline = vec![0.0f32; 8];
        for seed in 0..5 {
            let x = row(seed);
            for target in [None, Some(0), Some(2)] {
                let a = integrated_gradients(&mlp, &x, &baseline, target).unwrap();
                let want = f64::from(a.output_at_input) - f64::from(a.output_at_baseline);
                let sum: f64 = a.attributions.iter().map(|v| f64::from(*v)).sum();
                assert!(
                    (sum - want).abs() <= 1e-3 * want.abs().max(1e-3),
                    "completeness: sum {sum}, f(x) - f(b) {want}, steps {}",
                    a.steps
                );
                assert_eq!(a.attributions.len(), 8);
            }
        }
    }
}

#[test]
fn a_feature_equal_to_its_baseline_gets_zero_attribution() {
    let config = ModelConfig::from_json(SOFTMAX).unwrap();
    let mlp = Mlp::from_safetensors(&config, WEIGHTS, &Device::Cpu).unwrap();
    let mut x = row(3);
    let baseline = vec![0.5f32; 8];
    x[4] = 0.5;
    let a = integrated_gradients(&mlp, &x, &baseline, None).unwrap();
    assert_eq!(a.attributions[4], 0.0);
}

#[test]
fn the_differentiable_forward_is_the_forward() {
    for config in [SOFTMAX, LOGITS] {
        let config = ModelConfig::from_json(config).unwrap();
        let mlp = Mlp::from_safetensors(&config, WEIGHTS, &Device::Cpu).unwrap();
        let x: Vec<f32> = (0..5).flat_map(row).collect();
        let t = Tensor::from_slice(&x, (5, 8), &Device::Cpu).unwrap();
        let a = mlp
            .forward(&t)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1::<f32>()
            .unwrap();
        let b = mlp
            .forward_differentiable(&t)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1::<f32>()
            .unwrap();
        for (p, q) in a.iter().zip(&b) {
            assert!((p - q).abs() <= 1e-5 * p.abs().max(1e-3), "{p} vs {q}");
        }
    }
}

#[test]
fn bad_targets_and_widths_are_refused() {
    let config = ModelConfig::from_json(SOFTMAX).unwrap();
    let mlp = Mlp::from_safetensors(&config, WEIGHTS, &Device::Cpu).unwrap();
    assert!(integrated_gradients(&mlp, &row(0), &[0.0; 8], Some(9)).is_err());
    assert!(integrated_gradients(&mlp, &row(0)[..7], &[0.0; 8], None).is_err());
    let spec = ExplanationSpec {
        baseline: Some(vec![0.0; 7]),
    };
    assert!(spec.validate(8).is_err());
}
