use super::*;
use crate::engine::config::{InputSchema, RangePolicy};

fn schema() -> InputSchema {
    InputSchema {
        features: vec!["a".into(), "b".into()],
        min: vec![0.0, -10.0],
        max: vec![1.0, 10.0],
        normalization: None,
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
