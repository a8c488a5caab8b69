use super::*;
use crate::engine::config::{InputSchema, RangePolicy};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

fn schema() -> InputSchema {
    InputSchema {
        features: vec!["a".into(), "b".into()],
        min: vec![0.0, -10.0],
        max: vec![1.0, 10.0],
        normalization: None,
        tensor_name: None,
        out_of_range: RangePolicy::Reject,
    }
}

fn spec(action: ScreenAction) -> ScreeningSpec {
    ScreeningSpec {
        copies: 8,
        noise: 0.01,
        threshold: 0.1,
        action,
    }
}

#[test]
fn validate_refuses_out_of_range_settings() {
    let ok = spec(ScreenAction::Flag);
    assert!(ok.validate().is_ok());
    for bad in [
        ScreeningSpec { copies: 0, ..ok },
        ScreeningSpec { copies: 65, ..ok },
        ScreeningSpec { noise: 0.0, ..ok },
        ScreeningSpec { noise: 1.5, ..ok },
        ScreeningSpec {
            noise: f32::NAN,
            ..ok
        },
        ScreeningSpec {
            threshold: 0.0,
            ..ok
        },
        ScreeningSpec {
            threshold: f32::INFINITY,
            ..ok
        },
    ] {
        let err = bad.validate().expect_err("must refuse").to_string();
        assert!(err.contains("screening."), "{err}");
    }
}

#[test]
fn server_config_only_tightens_the_manifest() {
    let manifest = ScreeningSpec {
        copies: 8,
        noise: 0.01,
        threshold: 0.1,
        action: ScreenAction::Reject,
    };
    // A server trying to loosen every knob changes nothing but the noise-free parts it may.
    let loose = ScreeningSpec {
        copies: 1,
        noise: 0.5,
        threshold: 10.0,
        action: ScreenAction::Flag,
    };
    assert_eq!(manifest.tightened_by(&loose), manifest);
    let strict = ScreeningSpec {
        copies: 16,
        noise: 0.001,
        threshold: 0.05,
        action: ScreenAction::Reject,
    };
    let got = ScreeningSpec::effective(Some(&manifest), Some(&strict)).expect("some");
    assert_eq!(got.copies, 16);
    assert_eq!(got.threshold, 0.05);
    assert_eq!(got.noise, 0.01, "noise stays the manifest's");
    assert_eq!(ScreeningSpec::effective(None, Some(&strict)), Some(strict));
    assert_eq!(ScreeningSpec::effective(None, None), None);
}

#[test]
fn perturbations_are_scaled_to_each_feature_range() {
    let spec = ScreeningSpec {
        copies: 64,
        ..spec(ScreenAction::Flag)
    };
    let mut s = Screener::with_seed(spec, &schema(), &[7; 32]);
    let rows: Vec<f32> = [0.5, 0.0].repeat(500);
    let mut out = Vec::new();
    s.perturb_into(&rows, &mut out);
    assert_eq!(out.len(), rows.len() * 64);
    for (f, (centre, sigma)) in [(0.5f64, 0.01f64), (0.0, 0.2)].into_iter().enumerate() {
        let xs: Vec<f64> = out
            .iter()
            .skip(f)
            .step_by(2)
            .map(|&x| f64::from(x))
            .collect();
        let n = xs.len() as f64;
        let mean = xs.iter().sum::<f64>() / n;
        let sd = (xs.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / n).sqrt();
        assert!(
            (mean - centre).abs() < 5.0 * sigma / n.sqrt(),
            "feature {f}: mean {mean}"
        );
        assert!(
            (sd / sigma - 1.0).abs() < 0.02,
            "feature {f}: sd {sd}, want {sigma}"
        );
    }
}

#[test]
fn different_seeds_give_different_perturbations() {
    let mut a = Screener::with_seed(spec(ScreenAction::Flag), &schema(), &[1; 32]);
    let mut b = Screener::with_seed(spec(ScreenAction::Flag), &schema(), &[2; 32]);
    let (mut oa, mut ob) = (Vec::new(), Vec::new());
    a.perturb_into(&[0.5, 0.0], &mut oa);
    b.perturb_into(&[0.5, 0.0], &mut ob);
    assert_ne!(oa, ob);
}

#[test]
fn scores_are_the_mean_absolute_output_change() {
    let spec = ScreeningSpec {
        copies: 2,
        ..spec(ScreenAction::Flag)
    };
    let s = Screener::with_seed(spec, &schema(), &[0; 32]);
    // Two rows, two outputs; copies of row 0 move by (0.1, 0.1) and (0.3, 0.1), row 1's not.
    let outputs = [0.5, 0.5, 1.0, 0.0];
    let perturbed = [0.6, 0.4, 0.8, 0.6, 1.0, 0.0, 1.0, 0.0];
    let scores = s.scores(&outputs, &perturbed, 2);
    assert_eq!(scores.len(), 2);
    assert!((scores[0] - 0.15).abs() < 1e-6, "{scores:?}");
    assert_eq!(scores[1], 0.0);
    assert!(s.is_flagged(0.15));
    assert!(!s.is_flagged(0.05));
    assert!(s.is_flagged(f32::NAN), "NaN under noise counts as unstable");
}

#[test]
fn the_ziggurat_draws_standard_normal_samples() {
    let zig = super::normal::table();
    let mut rng = ChaCha8Rng::from_seed([3; 32]);
    let mut z = vec![0f32; 2_000_001];
    zig.fill(&mut rng, &mut z);
    let n = z.len() as f64;
    let mean = z.iter().map(|&x| f64::from(x)).sum::<f64>() / n;
    let var = z.iter().map(|&x| f64::from(x).powi(2)).sum::<f64>() / n - mean * mean;
    assert!(mean.abs() < 5.0 / n.sqrt(), "mean {mean}");
    assert!((var - 1.0).abs() < 0.005, "variance {var}");
    // The empirical CDF against Φ, at points across the body and into the tail (beyond the
    // ziggurat's r = 3.44).
    for (t, phi) in [
        (-4.0, 3.167_124e-5),
        (-3.0, 1.349_898e-3),
        (-2.0, 2.275_013e-2),
        (-1.0, 0.158_655_3),
        (-0.5, 0.308_537_5),
        (0.0, 0.5),
        (0.3, 0.617_911_4),
        (1.0, 0.841_344_7),
        (2.5, 0.993_790_3),
        (3.5, 0.999_767_4),
    ] {
        let below = z.iter().filter(|&&x| f64::from(x) < t).count() as f64 / n;
        let sd = (phi * (1.0 - phi) / n).sqrt();
        assert!(
            (below - phi).abs() < 5.0 * sd + 1e-6,
            "P(Z < {t}) = {below}, want {phi}"
        );
    }
    // Odd lengths use the last half draw too, and a fresh stream gives fresh samples.
    let mut a = [0f32; 3];
    zig.fill(&mut rng, &mut a);
    assert!(a.iter().all(|x| x.is_finite() && *x != 0.0));
}

fn demo() -> (Mlp, InputSchema) {
    let config = crate::demo::config().unwrap();
    let mlp =
        Mlp::from_safetensors(&config, crate::demo::WEIGHTS, &candle_core::Device::Cpu).unwrap();
    (mlp, config.input.clone())
}

/// A model whose first layer (16) is wider than its input (8), so that `F = M` and the
/// pre-activation path must reproduce input perturbations exactly.
fn wide_first_layer() -> Mlp {
    let config = crate::engine::ModelConfig::from_json(include_bytes!(
        "../../../tests/fixtures/mlp/softmax.json"
    ))
    .unwrap();
    Mlp::from_safetensors(
        &config,
        include_bytes!("../../../tests/fixtures/mlp/weights.safetensors"),
        &candle_core::Device::Cpu,
    )
    .unwrap()
}

#[test]
fn with_a_wide_first_layer_preactivation_copies_equal_perturbed_inputs() {
    let mlp = wide_first_layer();
    let sigmas: Vec<f32> = (0..mlp.in_features())
        .map(|i| 0.01 + 0.02 * i as f32)
        .collect();
    let factor = mlp.preact_factor(&sigmas).unwrap().expect("a CPU model");
    assert_eq!(factor.rank(), mlp.in_features());
    let (rows, copies, inp) = (3, 5, mlp.in_features());
    let input: Vec<f32> = (0..rows * inp).map(|i| (i as f32 * 0.37).sin()).collect();
    let z: Vec<f32> = (0..rows * copies * inp)
        .map(|i| (i as f32 * 1.71).cos() * 1.5)
        .collect();
    let got = mlp
        .forward_screened_cpu(&input, rows, copies, &factor, &z)
        .unwrap();
    // The same copies made in input space: x + σ ∘ z.
    let mut all = input.clone();
    let mut zs = z.chunks_exact(inp);
    for row in input.chunks_exact(inp) {
        for zc in zs.by_ref().take(copies) {
            all.extend(row.iter().zip(&sigmas).zip(zc).map(|((x, s), z)| x + s * z));
        }
    }
    let want = mlp.forward_rows(&all, rows * (1 + copies)).unwrap();
    assert_eq!(got.len(), want.len());
    for (i, (g, w)) in got.iter().zip(&want).enumerate() {
        assert!((g - w).abs() <= 1e-5, "value {i}: {g} vs {w}");
    }
}

#[test]
fn the_factor_reproduces_the_preactivation_covariance_of_input_noise() {
    let (mlp, schema) = demo();
    let screener = Screener::with_seed(
        ScreeningSpec {
            copies: 8,
            noise: 0.005,
            threshold: 0.15,
            action: ScreenAction::Flag,
        },
        &schema,
        &[7; 32],
    )
    .for_model(&mlp)
    .unwrap();
    let factor = screener
        .factor()
        .expect("the demo runs on the fused CPU path");
    let (inp, hidden) = (mlp.in_features(), 16);
    assert!(
        factor.rank() <= hidden && factor.rank() < inp,
        "rank {}",
        factor.rank()
    );
    // Mᵀ M, computed here from the demo's raw weights and standardization rather than
    // through the engine's own tensors.
    let rank = factor.rank();
    let m = preactivation_map(screener.sigmas());
    let f = factor.matrix();
    for a in 0..hidden {
        for b in 0..hidden {
            let want: f64 = m.iter().map(|row| row[a] * row[b]).sum();
            let got: f64 = (0..rank)
                .map(|k| f64::from(f[k * hidden + a]) * f64::from(f[k * hidden + b]))
                .sum();
            assert!(
                (got - want).abs() <= 1e-5 * (1.0 + want.abs()),
                "C[{a}][{b}]: factor {got}, input noise {want}"
            );
        }
    }
}

/// `M`, `[inp][hidden]`: how the demo's first-layer pre-activation moves per unit of
/// standard noise on each raw feature (PyTorch layout: `weight[j][i]`).
fn preactivation_map(sigmas: &[f32]) -> Vec<Vec<f64>> {
    let config = crate::demo::config().unwrap();
    let st = safetensors::SafeTensors::deserialize(crate::demo::WEIGHTS).unwrap();
    let w = st.tensor(&config.architecture.layers[0].weight).unwrap();
    let w: Vec<f32> = w
        .data()
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect();
    let norm = config
        .input
        .normalization
        .as_ref()
        .expect("the demo standardizes");
    let (hidden, inp) = (16, sigmas.len());
    (0..inp)
        .map(|i| {
            (0..hidden)
                .map(|j| f64::from(w[j * inp + i]) * f64::from(sigmas[i]) / f64::from(norm.std[i]))
                .collect()
        })
        .collect()
}

/// Screening that flags, with `copies` copies of noise 0.02.
fn flagging(copies: u32) -> ScreeningSpec {
    ScreeningSpec {
        copies,
        noise: 0.02,
        threshold: 0.15,
        action: ScreenAction::Flag,
    }
}

/// `rows` rows spread over the lower third of each feature's range.
fn rows_in_range(schema: &InputSchema, rows: usize) -> Vec<f32> {
    let inp = schema.min.len();
    (0..rows * inp)
        .map(|i| {
            let f = i % inp;
            let t = ((i * 7919) % 1000) as f32 / 1000.0;
            schema.min[f] + t * (schema.max[f] - schema.min[f]) * 0.3
        })
        .collect()
}

#[test]
fn preactivation_and_input_space_scores_have_the_same_distribution() {
    let (mlp, schema) = demo();
    let spec = flagging(64);
    let mut fast = Screener::with_seed(spec, &schema, &[1; 32])
        .for_model(&mlp)
        .unwrap();
    let mut slow = Screener::with_seed(spec, &schema, &[2; 32]);
    assert!(fast.factor().is_some() && slow.factor().is_none());
    // Rows from the schema's range, some near the decision boundary.
    // 24 rows × 65 forward rows stays within the fused loop's batch limit.
    let rows = 24;
    let input = rows_in_range(&schema, rows);
    let reps = 40;
    let width = mlp.out_features();
    let (mut fast_scores, mut slow_scores) = (Vec::new(), Vec::new());
    for _ in 0..reps {
        let (out, s_fast) = fast.forward_cpu(&mlp, &input, rows, &[]).unwrap().unwrap();
        let mut perturbed = Vec::new();
        slow.perturb_into(&input, &mut perturbed);
        let mut all = input.clone();
        all.extend_from_slice(&perturbed);
        let slow_out = mlp.forward_rows(&all, rows * (1 + 64)).unwrap();
        assert_eq!(
            out,
            slow_out[..rows * width].to_vec(),
            "the rows themselves are exact"
        );
        slow_scores.push(slow.scores(&slow_out[..rows * width], &slow_out[rows * width..], width));
        fast_scores.push(s_fast);
    }
    // Per row: the two means of `reps` independent scores (each over 64 copies) must agree
    // within 4.5 standard errors of their difference. (Scaling the noise wrongly by even 20%
    // moves the busy rows' means by many standard errors.)
    let stats = |s: &[Vec<f32>], r: usize| {
        let v: Vec<f64> = s.iter().map(|x| f64::from(x[r])).collect();
        let mean = v.iter().sum::<f64>() / v.len() as f64;
        let var = v.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (v.len() - 1) as f64;
        (mean, var / v.len() as f64)
    };
    let mut compared = 0;
    for r in 0..rows {
        let ((a, va), (b, vb)) = (stats(&fast_scores, r), stats(&slow_scores, r));
        if a.max(b) > 1e-3 {
            compared += 1;
            let se = (va + vb).sqrt();
            assert!(
                (a - b).abs() <= 4.5 * se,
                "row {r}: {a} vs {b} (standard error {se})"
            );
        }
    }
    assert!(compared >= 4, "only {compared} rows had measurable scores");
}

#[test]
fn a_batch_larger_than_one_fused_pass_is_screened_on_the_fused_loop_in_slices() {
    let (mlp, schema) = demo();
    let spec = flagging(8);
    let mut screener = Screener::with_seed(spec, &schema, &[3; 32])
        .for_model(&mlp)
        .unwrap();
    let rank = screener
        .factor()
        .expect("the demo runs on the fused loop")
        .rank();
    let per_pass = mlp.fused_cpu_rows(1 + 8);
    // Larger than one pass of the fused loop (the default batch of 256 rows is, with 8
    // copies of each): before, such a batch fell back to input-space copies and candle.
    let rows = 2 * per_pass + 5;
    assert!(!mlp.fused_cpu_fits(rows * 9));
    let inp = mlp.in_features();
    let input = rows_in_range(&schema, rows);
    let normals: Vec<f32> = (0..rows * 8 * rank)
        .map(|i| (i as f32 * 1.71).cos() * 1.5)
        .collect();
    let (out, scores) = screener
        .forward_cpu(&mlp, &input, rows, &normals)
        .expect("the fused path takes any batch of a model it fits")
        .unwrap();
    let width = mlp.out_features();
    assert_eq!((out.len(), scores.len()), (rows * width, rows));
    assert_eq!(out, mlp.forward_rows(&input, rows).unwrap());
    // Each slice screened on its own, with its rows' normals, gives the same scores.
    let mut want = Vec::new();
    for start in (0..rows).step_by(per_pass) {
        let n = per_pass.min(rows - start);
        let (_, s) = screener
            .forward_cpu(
                &mlp,
                &input[start * inp..(start + n) * inp],
                n,
                &normals[start * 8 * rank..(start + n) * 8 * rank],
            )
            .unwrap()
            .unwrap();
        want.extend(s);
    }
    assert_eq!(scores, want);
    assert!(scores.iter().any(|s| *s > 0.0));
}

#[test]
fn request_threads_draw_standard_normals_from_their_own_streams() {
    let mut a = vec![0f32; 20_000];
    assert!(draw_normals(&mut a));
    let mean = a.iter().map(|&x| f64::from(x)).sum::<f64>() / a.len() as f64;
    let var = a
        .iter()
        .map(|&x| (f64::from(x) - mean).powi(2))
        .sum::<f64>()
        / a.len() as f64;
    assert!(
        mean.abs() < 0.05 && (var - 1.0).abs() < 0.05,
        "mean {mean}, var {var}"
    );
    // Another thread's stream is seeded on its own.
    let b = std::thread::spawn(|| {
        let mut b = vec![0f32; 64];
        assert!(draw_normals(&mut b));
        b
    })
    .join()
    .unwrap();
    assert_ne!(&a[..64], &b[..]);
}
