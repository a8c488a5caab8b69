use super::*;
use crate::engine::config::{InputSchema, RangePolicy};

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
    let mut s = Screener::with_seed(spec, &schema(), [7; 32]);
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
    let mut a = Screener::with_seed(spec(ScreenAction::Flag), &schema(), [1; 32]);
    let mut b = Screener::with_seed(spec(ScreenAction::Flag), &schema(), [2; 32]);
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
    let s = Screener::with_seed(spec, &schema(), [0; 32]);
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
    let zig = super::normal::Ziggurat::new();
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
