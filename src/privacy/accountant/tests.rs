use super::pld::PldOptions;
use super::rdp::{Conversion, default_orders, epsilon_from_rdp, rdp_curve, rdp_poisson_gaussian};
use super::*;

const FIXTURE: &str = include_str!("../../../tests/fixtures/privacy/accountant.json");

struct Case {
    m: SubsampledGaussian,
    delta: f64,
    opacus: f64,
    pld: f64,
}

fn cases() -> Vec<Case> {
    let v: serde_json::Value = serde_json::from_str(FIXTURE).unwrap();
    v["cases"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| Case {
            m: SubsampledGaussian {
                sample_rate: c["sample_rate"].as_f64().unwrap(),
                noise_multiplier: c["noise_multiplier"].as_f64().unwrap(),
                steps: c["steps"].as_u64().unwrap(),
            },
            delta: c["delta"].as_f64().unwrap(),
            opacus: c["opacus_rdp_epsilon"].as_f64().unwrap(),
            pld: c["dp_accounting_pld_epsilon"].as_f64().unwrap(),
        })
        .collect()
}

#[test]
fn rdp_matches_opacus_fixtures() {
    for c in cases() {
        let eps = epsilon(&c.m, c.delta, AccountantKind::Rdp).unwrap();
        assert!(
            (eps - c.opacus).abs() < 1e-3 * c.opacus,
            "{:?}: ours {eps}, opacus {}",
            c.m,
            c.opacus
        );
    }
}

#[test]
fn rdp_integer_and_fractional_orders_agree_at_the_boundary() {
    // The fractional series at α = 3 ± 1e-9 must meet the integer formula at 3.
    for (q, s) in [(0.01, 1.0), (0.3, 0.8), (0.9, 2.0)] {
        let at = rdp_poisson_gaussian(q, s, 3.0).unwrap();
        let below = rdp_poisson_gaussian(q, s, 3.0 - 1e-9).unwrap();
        let above = rdp_poisson_gaussian(q, s, 3.0 + 1e-9).unwrap();
        assert!(
            (at - below).abs() < 1e-6 * at.max(1e-12),
            "{q} {s}: {at} {below}"
        );
        assert!(
            (at - above).abs() < 1e-6 * at.max(1e-12),
            "{q} {s}: {at} {above}"
        );
    }
    // q = 1 is the plain Gaussian, α/(2σ²).
    assert_eq!(rdp_poisson_gaussian(1.0, 2.0, 4.5).unwrap(), 4.5 / 8.0);
}

#[test]
fn balle_conversion_is_tighter_than_classic() {
    let m = SubsampledGaussian {
        sample_rate: 0.01,
        noise_multiplier: 1.0,
        steps: 1000,
    };
    let orders = default_orders();
    let curve = rdp_curve(&m, &orders).unwrap();
    let (balle, _) = epsilon_from_rdp(&orders, &curve, 1e-5, Conversion::Balle2020).unwrap();
    let (classic, _) = epsilon_from_rdp(&orders, &curve, 1e-5, Conversion::Classic).unwrap();
    assert!((balle - 2.1014).abs() < 1e-3, "{balle}");
    assert!(classic > balle, "{classic} {balle}");
}

#[test]
fn pld_headline_case_is_tight() {
    let m = SubsampledGaussian {
        sample_rate: 0.01,
        noise_multiplier: 1.0,
        steps: 1000,
    };
    let eps = epsilon(&m, 1e-5, AccountantKind::Pld).unwrap();
    assert!((1.82..=1.84).contains(&eps), "{eps}");
}

#[test]
fn pld_matches_dp_accounting_fixtures_and_is_below_rdp() {
    // Unoptimized builds take seconds per long composition; they check the shorter cases and
    // `cargo test --release` checks them all.
    let all = !cfg!(debug_assertions);
    for c in cases().into_iter().filter(|c| all || c.m.steps <= 10) {
        let eps = pld::epsilon(&c.m, c.delta, &PldOptions::default()).unwrap();
        // Both are pessimistic at h = 1e-4; they differ only in tail handling.
        assert!(
            (eps - c.pld).abs() < 0.01 * c.pld.max(0.1),
            "{:?}: ours {eps}, dp_accounting {}",
            c.m,
            c.pld
        );
        assert!(eps <= c.opacus + 1e-9, "{:?}: PLD {eps} above RDP", c.m);
    }
}

#[test]
fn noise_multiplier_never_exceeds_the_target() {
    for (eps, q, steps) in [(1.0, 0.004, 3000u64), (8.0, 0.1, 500)] {
        let sigma = noise_multiplier(eps, 1e-5, q, steps, AccountantKind::Rdp).unwrap();
        let m = SubsampledGaussian {
            sample_rate: q,
            noise_multiplier: sigma,
            steps,
        };
        let got = epsilon(&m, 1e-5, AccountantKind::Rdp).unwrap();
        assert!(got <= eps, "σ = {sigma} gives ε = {got} > {eps}");
        let tighter = SubsampledGaussian {
            noise_multiplier: sigma * 0.999,
            ..m
        };
        assert!(epsilon(&tighter, 1e-5, AccountantKind::Rdp).unwrap() > eps);
    }
    let sigma = noise_multiplier(2.1014, 1e-5, 0.01, 1000, AccountantKind::Rdp).unwrap();
    assert!((sigma - 1.0).abs() < 1e-3, "{sigma}");
}

#[test]
fn accountant_rejects_bad_parameters() {
    let m = SubsampledGaussian {
        sample_rate: 1.5,
        noise_multiplier: 1.0,
        steps: 10,
    };
    assert!(epsilon(&m, 1e-5, AccountantKind::Rdp).is_err());
    let m = SubsampledGaussian {
        sample_rate: 0.1,
        noise_multiplier: 1.0,
        steps: 0,
    };
    assert!(epsilon(&m, 1e-5, AccountantKind::Pld).is_err());
    assert!(noise_multiplier(-1.0, 1e-5, 0.1, 10, AccountantKind::Rdp).is_err());
}

#[test]
fn probe_long_horizon() {
    for (q, s, t) in [(0.001, 0.6, 10_000u64)] {
        let m = SubsampledGaussian { sample_rate: q, noise_multiplier: s, steps: t };
        let start = std::time::Instant::now();
        let e = pld::epsilons(&m, &[1e-5, 1e-6], &PldOptions::default());
        let c = pld::composed(&m, pld::Direction::Remove, 1e-6, &PldOptions::default()).unwrap();
        let c2 = pld::composed(&m, pld::Direction::Add, 1e-6, &PldOptions::default()).unwrap();
        eprintln!("remove {}\nadd {}", c.probe(1e-6), c2.probe(1e-6));
        eprintln!("{q} {s} {t}: {e:?} in {:?}; remove len {} h {} floor {:e}", start.elapsed(), c.len(), c.step(), c.floor());
    }
}
