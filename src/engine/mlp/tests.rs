use candle_core::Device;

use super::*;
use crate::engine::config::ModelConfig;
use safetensors::SafeTensors;

const WEIGHTS: &[u8] = include_bytes!("../../../tests/fixtures/mlp/weights.safetensors");
const SOFTMAX: &[u8] = include_bytes!("../../../tests/fixtures/mlp/softmax.json");
const LOGITS: &[u8] = include_bytes!("../../../tests/fixtures/mlp/logits.json");
const REFERENCE: &str = include_str!("../../../tests/fixtures/mlp/reference.json");

fn reference() -> (Vec<Vec<f64>>, serde_json::Value) {
    let v: serde_json::Value = serde_json::from_str(REFERENCE).unwrap();
    let inputs = serde_json::from_value(v["inputs"].clone()).unwrap();
    (inputs, v["outputs"].clone())
}

fn assert_close(got: &[f32], want: &[f64], rel: f64) {
    assert_eq!(got.len(), want.len());
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        let err = (f64::from(*g) - w).abs();
        assert!(
            err <= rel * w.abs().max(1e-3),
            "value {i}: got {g}, reference {w}, error {err}"
        );
    }
}

#[test]
fn matches_numpy_reference_for_every_activation_and_both_outputs() {
    let (inputs, outputs) = reference();
    let flat: Vec<f32> = inputs.iter().flatten().map(|x| *x as f32).collect();
    for (variant, config) in [("softmax", SOFTMAX), ("logits", LOGITS)] {
        let config = ModelConfig::from_json(config).unwrap();
        let mlp = Mlp::from_safetensors(&config, WEIGHTS, &Device::Cpu).unwrap();
        let got = mlp.forward_rows(&flat, inputs.len()).unwrap();
        let want: Vec<Vec<f64>> = serde_json::from_value(outputs[variant].clone()).unwrap();
        let want: Vec<f64> = want.into_iter().flatten().collect();
        assert_close(&got, &want, 1e-5);
    }
}

#[test]
fn the_fused_cpu_path_and_candle_agree_on_the_reference_for_every_batch_size() {
    let (inputs, outputs) = reference();
    for (variant, config) in [("softmax", SOFTMAX), ("logits", LOGITS)] {
        let config = ModelConfig::from_json(config).unwrap();
        let mlp = Mlp::from_safetensors(&config, WEIGHTS, &Device::Cpu).unwrap();
        let want: Vec<Vec<f64>> = serde_json::from_value(outputs[variant].clone()).unwrap();
        // Batch sizes around the four-row blocking, built by cycling the reference rows.
        for rows in [1, 3, 4, 5, 8, 9, 37] {
            let idx: Vec<usize> = (0..rows).map(|r| r % inputs.len()).collect();
            let flat: Vec<f32> = idx
                .iter()
                .flat_map(|&i| inputs[i].iter().map(|x| *x as f32))
                .collect();
            let fused = mlp.forward_fused_cpu(&flat, rows).unwrap();
            let x = Tensor::from_slice(&flat, (rows, mlp.in_features()), &Device::Cpu).unwrap();
            let candle = mlp
                .forward(&x)
                .unwrap()
                .flatten_all()
                .unwrap()
                .to_vec1::<f32>()
                .unwrap();
            let candle: Vec<f64> = candle.iter().map(|v| f64::from(*v)).collect();
            assert_close(&fused, &candle, 1e-5);
            let reference: Vec<f64> = idx.iter().flat_map(|&i| want[i].clone()).collect();
            assert_close(&fused, &reference, 1e-5);
        }
    }
}

#[test]
fn a_batch_larger_than_one_fused_pass_runs_on_the_fused_loop_in_slices() {
    let (inputs, outputs) = reference();
    let config = ModelConfig::from_json(SOFTMAX).unwrap();
    let mlp = Mlp::from_safetensors(&config, WEIGHTS, &Device::Cpu).unwrap();
    let want: Vec<Vec<f64>> = serde_json::from_value(outputs["softmax"].clone()).unwrap();
    let per_pass = mlp.fused_cpu_rows(1);
    assert!(per_pass > 0 && !mlp.fused_cpu_fits(2 * per_pass + 3));
    // Two full passes and a part of one; the slices' edges fall inside four-row blocks.
    let rows = 2 * per_pass + 3;
    let idx: Vec<usize> = (0..rows).map(|r| (r * 7) % inputs.len()).collect();
    let flat: Vec<f32> = idx
        .iter()
        .flat_map(|&i| inputs[i].iter().map(|x| *x as f32))
        .collect();
    let got = mlp.forward_rows(&flat, rows).unwrap();
    let reference: Vec<f64> = idx.iter().flat_map(|&i| want[i].clone()).collect();
    assert_close(&got, &reference, 1e-5);
    // Each row as the fused loop computes it alone, to the bit.
    let width = mlp.out_features();
    for r in [0, per_pass - 1, per_pass, 2 * per_pass, rows - 1] {
        let one = &flat[r * mlp.in_features()..(r + 1) * mlp.in_features()];
        assert_eq!(
            mlp.forward_fused_cpu(one, 1).unwrap(),
            got[r * width..(r + 1) * width].to_vec(),
            "row {r}"
        );
    }
    // As many rows as one pass of at most FUSED_MAX_MACS multiply-adds holds.
    assert_eq!(per_pass, FUSED_MAX_MACS / mlp.macs_per_row);
}

#[test]
fn batch_rows_are_independent() {
    let (inputs, _) = reference();
    let config = ModelConfig::from_json(SOFTMAX).unwrap();
    let mlp = Mlp::from_safetensors(&config, WEIGHTS, &Device::Cpu).unwrap();
    let flat: Vec<f32> = inputs.iter().flatten().map(|x| *x as f32).collect();
    let all = mlp.forward_rows(&flat, inputs.len()).unwrap();
    for (r, row) in inputs.iter().enumerate() {
        let one: Vec<f32> = row.iter().map(|x| *x as f32).collect();
        let got = mlp.forward_rows(&one, 1).unwrap();
        let want: Vec<f64> = all[r * 3..r * 3 + 3]
            .iter()
            .map(|x| f64::from(*x))
            .collect();
        assert_close(&got, &want, 1e-6);
    }
}

#[test]
fn missing_tensor_wrong_shape_and_bad_values_are_refused() {
    let mut config = ModelConfig::from_json(SOFTMAX).unwrap();
    config.architecture.layers[1].weight = "9.weight".into();
    let err = Mlp::from_safetensors(&config, WEIGHTS, &Device::Cpu)
        .err()
        .unwrap();
    assert!(
        matches!(err, EngineError::MissingTensor { layer: 1, .. }),
        "{err}"
    );

    let mut config = ModelConfig::from_json(SOFTMAX).unwrap();
    config.architecture.layers.swap(1, 2);
    let err = Mlp::from_safetensors(&config, WEIGHTS, &Device::Cpu)
        .err()
        .unwrap();
    assert!(matches!(err, EngineError::Shape { .. }), "{err}");

    let mut config = ModelConfig::from_json(SOFTMAX).unwrap();
    config.labels.push("d".into());
    let err = Mlp::from_safetensors(&config, WEIGHTS, &Device::Cpu)
        .err()
        .unwrap();
    assert!(matches!(err, EngineError::Shape { .. }), "{err}");

    let config = ModelConfig::from_json(SOFTMAX).unwrap();
    let err = Mlp::from_safetensors(&config, b"\x08\x00\x00\x00\x00\x00\x00\x00{}", &Device::Cpu)
        .err()
        .unwrap();
    assert!(
        matches!(
            err,
            EngineError::Safetensors(_) | EngineError::MissingTensor { .. }
        ),
        "{err}"
    );

    // A NaN weight.
    let nan = nan_weights();
    let err = Mlp::from_safetensors(&config, &nan, &Device::Cpu)
        .err()
        .unwrap();
    assert!(matches!(err, EngineError::NonFinite { .. }), "{err}");
}

fn nan_weights() -> Vec<u8> {
    let st = SafeTensors::deserialize(WEIGHTS).unwrap();
    let mut owned: Vec<(String, Vec<usize>, Vec<u8>)> = st
        .tensors()
        .into_iter()
        .map(|(n, v)| (n, v.shape().to_vec(), v.data().to_vec()))
        .collect();
    for (name, _, data) in &mut owned {
        if name == "4.weight" {
            data[0..4].copy_from_slice(&f32::NAN.to_le_bytes());
        }
    }
    let views: Vec<(String, safetensors::tensor::TensorView<'_>)> = owned
        .iter()
        .map(|(n, s, d)| {
            (
                n.clone(),
                safetensors::tensor::TensorView::new(safetensors::Dtype::F32, s.clone(), d)
                    .unwrap(),
            )
        })
        .collect();
    safetensors::serialize(views, None).unwrap()
}

#[test]
fn config_validation_names_the_problem() {
    let bad = [
        (r#"{"id":"a b"}"#, "model config is not valid"),
        (
            r#"{"id":"x","version":"1","architecture":{"kind":"mlp","output":"softmax","layers":[]},
               "input":{"features":["a"],"min":[0],"max":[1]},"labels":["y"]}"#,
            "layers",
        ),
        (
            r#"{"id":"x","version":"1","architecture":{"kind":"mlp","output":"softmax","layers":[{"weight":"0.weight","activation":"relu"}]},
               "input":{"features":["a"],"min":[2],"max":[1]},"labels":["y"]}"#,
            "min <= max",
        ),
        (
            r#"{"id":"x","version":"1","architecture":{"kind":"mlp","output":"softmax","layers":[{"weight":"0.weight","activation":"swish"}]},
               "input":{"features":["a"],"min":[0],"max":[1]},"labels":["y"]}"#,
            "swish",
        ),
        (
            r#"{"id":"x","version":"1","architecture":{"kind":"mlp","output":"softmax","layers":[{"weight":"0.weight","activation":"relu"}]},
               "input":{"features":["a"],"min":[0],"max":[1],"normalization":{"mean":[0],"std":[0]}},"labels":["y"]}"#,
            "std[0]",
        ),
    ];
    for (json, needle) in bad {
        let err = ModelConfig::from_json(json.as_bytes())
            .unwrap_err()
            .to_string();
        assert!(err.contains(needle), "{json}: {err}");
    }
}

#[test]
fn the_blocked_dense_kernel_matches_a_plain_triple_loop_for_every_tile_shape() {
    // Widths on both sides of the 16-column tile and the four-row block, with a tail.
    let mut seed = 0x9e37_79b9_u32;
    let mut next = move || {
        seed ^= seed << 13;
        seed ^= seed >> 17;
        seed ^= seed << 5;
        (seed as f32 / u32::MAX as f32) * 2.0 - 1.0
    };
    for out in [1, 2, 3, 15, 16, 17, 32, 33, 40] {
        for inp in [1, 5, 30] {
            for rows in [1, 2, 3, 4, 5, 7, 8, 9, 13] {
                let x: Vec<f32> = (0..rows * inp).map(|_| next()).collect();
                let w: Vec<f32> = (0..inp * out).map(|_| next()).collect();
                let start: Vec<f32> = (0..rows * out).map(|_| next()).collect();
                let mut want = start.clone();
                for r in 0..rows {
                    for j in 0..out {
                        let mut s = 0f64;
                        for k in 0..inp {
                            s += f64::from(x[r * inp + k]) * f64::from(w[k * out + j]);
                        }
                        want[r * out + j] = (f64::from(want[r * out + j]) + s) as f32;
                    }
                }
                let mut got = start;
                dense_accumulate(&x, rows, inp, &w, out, &mut got);
                for (i, (g, e)) in got.iter().zip(&want).enumerate() {
                    assert!(
                        (g - e).abs() <= 1e-5 * (1.0 + e.abs()),
                        "rows {rows} inp {inp} out {out}, value {i}: got {g}, want {e}"
                    );
                }
            }
        }
    }
}
