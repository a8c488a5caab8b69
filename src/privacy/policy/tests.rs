use super::*;
use crate::privacy::rng::ChaChaDpRng;

fn argmax_p(e: f64) -> PrivacyPolicy {
    PrivacyPolicy::NoisyArgmax {
        epsilon: e,
        sensitivity: None,
    }
}

#[test]
fn the_manifest_policy_can_be_tightened_but_never_weakened() {
    let laplace = |e| PrivacyPolicy::LaplaceScores {
        epsilon: e,
        sensitivity: None,
    };
    let gauss = |e, d| PrivacyPolicy::GaussianScores {
        epsilon: e,
        delta: d,
        sensitivity: None,
    };
    let ok = |a: PrivacyPolicy, b: PrivacyPolicy| a.may_be_replaced_by(&b, true, 2).unwrap();
    // Tighter.
    assert!(ok(argmax_p(1.0), argmax_p(0.5)));
    assert!(ok(laplace(1.0), laplace(0.5)));
    assert!(ok(laplace(1.0), argmax_p(1.0)));
    assert!(ok(gauss(1.0, 1e-6), gauss(0.5, 1e-7)));
    assert!(ok(gauss(1.0, 1e-6), laplace(1.0)));
    assert!(ok(PrivacyPolicy::LabelOnly, argmax_p(3.0)));
    assert!(ok(PrivacyPolicy::None, laplace(8.0)));
    // Weaker: a larger ε, a larger δ, scores instead of labels, or no guarantee at all.
    assert!(!ok(argmax_p(0.5), argmax_p(1.0)));
    assert!(!ok(argmax_p(1.0), laplace(0.1)));
    assert!(!ok(argmax_p(1.0), PrivacyPolicy::LabelOnly));
    assert!(!ok(argmax_p(1.0), PrivacyPolicy::None));
    assert!(!ok(laplace(1.0), gauss(0.5, 1e-9)));
    assert!(!ok(gauss(1.0, 1e-7), gauss(1.0, 1e-6)));
    assert!(!ok(PrivacyPolicy::LabelOnly, PrivacyPolicy::None));
    assert!(!ok(PrivacyPolicy::LabelOnly, laplace(0.1)));
}

#[test]
fn policies_parse_from_the_manifest_form_and_refuse_unknown_fields() {
    let p: PrivacyPolicy =
        serde_json::from_str(r#"{"mechanism":"noisy_argmax","epsilon":0.5}"#).unwrap();
    assert_eq!(p, argmax_p(0.5));
    assert!(
        serde_json::from_str::<PrivacyPolicy>(
            r#"{"mechanism":"noisy_argmax","epsilon":0.5,"x":1}"#
        )
        .is_err()
    );
    assert!(serde_json::from_str::<PrivacyPolicy>(r#"{"mechanism":"laplace"}"#).is_err());
    assert!(argmax_p(0.0).validate(true).is_err());
    assert!(argmax_p(f64::NAN).validate(true).is_err());
    // A logits model has no default sensitivity.
    let err = argmax_p(1.0).validate(false).unwrap_err().to_string();
    assert!(err.contains("sensitivity"), "{err}");
}

#[test]
fn apply_releases_what_the_policy_allows_and_charges_per_row() {
    let mut rng = ChaChaDpRng::dangerous_from_seed([3; 32]);
    let scores = [0.9f32, 0.1, 0.2, 0.8, 0.6, 0.4];
    let r = argmax_p(0.5).apply(&mut rng, &scores, 2, true).unwrap();
    assert!(r.values.is_none(), "noisy_argmax releases labels only");
    assert_eq!(r.labels.len(), 3);
    assert!((r.charge.epsilon - 1.5).abs() < 1e-9, "{:?}", r.charge);
    let r = PrivacyPolicy::LaplaceScores {
        epsilon: 1.0,
        sensitivity: None,
    }
    .apply(&mut rng, &scores, 2, true)
    .unwrap();
    assert_eq!(r.values.as_ref().unwrap().len(), 6);
    assert_ne!(r.values.as_deref().unwrap(), &scores[..], "noise was added");
    let r = PrivacyPolicy::GaussianScores {
        epsilon: 1.0,
        delta: 1e-6,
        sensitivity: None,
    }
    .apply(&mut rng, &scores, 2, true)
    .unwrap();
    assert!(r.charge.rho > 0.0 && r.charge.epsilon == 0.0);
    let r = PrivacyPolicy::LabelOnly
        .apply(&mut rng, &scores, 2, true)
        .unwrap();
    assert_eq!(r.labels, vec![0, 1, 0]);
    assert!(r.charge.is_zero());
}

#[test]
fn noisy_argmax_mostly_picks_the_clear_winner_at_high_epsilon() {
    let mut rng = ChaChaDpRng::dangerous_from_seed([9; 32]);
    let wins = (0..200)
        .filter(|_| {
            argmax_p(8.0)
                .apply(&mut rng, &[0.95, 0.05], 2, true)
                .unwrap()
                .labels[0]
                == 0
        })
        .count();
    assert!(wins > 190, "{wins}");
}

#[test]
fn zcdp_converts_to_epsilon_at_delta() {
    let c = Charge {
        epsilon: 1.0,
        rho: 0.125,
    };
    let want = 1.0 + 0.125 + 2.0 * (0.125f64 * (1e6f64).ln()).sqrt();
    assert!((c.epsilon_at(1e-6) - want).abs() < 1e-12);
}

#[test]
fn effective_policy_inherits_sensitivity_and_refuses_weakening() {
    let m = PrivacyPolicy::LaplaceScores {
        epsilon: 1.0,
        sensitivity: Some(4.0),
    };
    let s = PrivacyPolicy::LaplaceScores {
        epsilon: 0.5,
        sensitivity: None,
    };
    let got = PrivacyPolicy::effective(Some(&m), Some(&s), false, 2).unwrap();
    assert_eq!(
        got,
        PrivacyPolicy::LaplaceScores {
            epsilon: 0.5,
            sensitivity: Some(4.0)
        }
    );
    let understated = PrivacyPolicy::LaplaceScores {
        epsilon: 0.5,
        sensitivity: Some(0.1),
    };
    let err = PrivacyPolicy::effective(Some(&m), Some(&understated), false, 2).unwrap_err();
    assert!(
        matches!(
            err,
            OverrideError::StatesSensitivity {
                manifest: "laplace_scores"
            }
        ),
        "{err:?}"
    );
    assert!(
        err.to_string().contains("may not state a sensitivity"),
        "{err}"
    );
    let err = PrivacyPolicy::effective(Some(&argmax_p(1.0)), Some(&PrivacyPolicy::None), true, 2)
        .unwrap_err();
    assert!(
        matches!(
            err,
            OverrideError::Weakens {
                server: "none",
                manifest: "noisy_argmax"
            }
        ),
        "{err:?}"
    );
    assert!(err.to_string().contains("would weaken"), "{err}");
    assert_eq!(
        PrivacyPolicy::effective(None, None, true, 2).unwrap(),
        PrivacyPolicy::None
    );
    assert_eq!(
        PrivacyPolicy::effective(Some(&argmax_p(1.0)), None, true, 2).unwrap(),
        argmax_p(1.0)
    );
}
