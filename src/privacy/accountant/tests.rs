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

/// The reference grid of issue 21 (scripts/accountant-reference.py): q × σ × T × δ.
const REFERENCE: &str = include_str!("../../../tests/fixtures/privacy/accountant-reference.csv");

struct Reference {
    m: SubsampledGaussian,
    delta: f64,
    dp_accounting_pld: f64,
    /// prv-accountant's lower bound, where it is consistent (see below); NaN elsewhere.
    prv_lower: f64,
    /// dp_accounting's optimistic PLD: a lower bound on ε from a second tool.
    optimistic: f64,
    opacus_rdp: f64,
    opacus_rdp_ours: f64,
}

fn reference() -> Vec<Reference> {
    REFERENCE
        .lines()
        .filter(|l| !l.starts_with('#') && !l.starts_with("sample_rate") && !l.is_empty())
        .map(|l| {
            let f: Vec<f64> = l.split(',').map(|x| x.parse().unwrap()).collect();
            assert_eq!(f.len(), 11, "{l}");
            // prv-accountant 0.2.0 breaks down for q = 0.2 at large ε: its "lower bound"
            // exceeds Opacus's RDP ε, a rigorous upper bound. Its bounds count only where its
            // own estimate is below the RDP ε.
            let prv_consistent = f[6] <= f[8];
            Reference {
                m: SubsampledGaussian {
                    sample_rate: f[0],
                    noise_multiplier: f[1],
                    steps: f[2] as u64,
                },
                delta: f[3],
                dp_accounting_pld: f[4],
                prv_lower: if prv_consistent { f[5] } else { f64::NAN },
                optimistic: f[10],
                opacus_rdp: f[8],
                opacus_rdp_ours: f[9],
            }
        })
        .collect()
}

/// Checks one tight accountant (PLD or its PRV alias) on all 240 reference points.
fn check_reference_grid(kind: AccountantKind) {
    let rows = reference();
    assert_eq!(rows.len(), 240);
    let (mut worst_excess, mut min_margin, mut unchecked_lower) =
        (f64::NEG_INFINITY, f64::INFINITY, 0);
    let mut min_margin_optimistic = f64::INFINITY;
    let mut failures = Vec::new();
    // Rows come in pairs (δ = 1e-5, 1e-6) for each (q, σ, T): one composition answers both.
    for pair in rows.chunks(2) {
        let m = pair[0].m;
        assert!(pair.iter().all(|r| r.m == m));
        let deltas: Vec<f64> = pair.iter().map(|r| r.delta).collect();
        let eps = epsilons(&m, &deltas, kind).unwrap_or_else(|e| panic!("{kind:?} {m:?}: {e}"));
        for (r, &e) in pair.iter().zip(&eps) {
            let excess = e / r.dp_accounting_pld - 1.0;
            worst_excess = worst_excess.max(excess);
            if excess > 0.01 {
                failures.push(format!(
                    "{m:?} δ={}: ours {e}, dp_accounting {} (over by {:.3}%)",
                    r.delta,
                    r.dp_accounting_pld,
                    100.0 * excess
                ));
            }
            // The fixture's dp_accounting columns at q = 0.2, σ = 0.6, T = 10⁴ (ε ≈ 1250) are
            // the smallest ε its own get_delta_for_epsilon certifies: its get_epsilon_for_delta
            // underflows exp(−loss) above 745 and returns the loss quantile instead, 0.96
            // higher (see scripts/accountant-reference.py). Against those we are 0.0002% above
            // the pessimistic value and 0.5 above the optimistic one, like everywhere else.
            if e < r.optimistic {
                failures.push(format!(
                    "{m:?} δ={}: ours {e} below dp_accounting's optimistic PLD {}",
                    r.delta, r.optimistic
                ));
            }
            min_margin_optimistic = min_margin_optimistic.min(e - r.optimistic);
            if r.prv_lower.is_nan() {
                unchecked_lower += 1;
            } else {
                min_margin = min_margin.min(e - r.prv_lower);
                if e < r.prv_lower {
                    failures.push(format!(
                        "{m:?} δ={}: ours {e} below prv-accountant's lower bound {}",
                        r.delta, r.prv_lower
                    ));
                }
            }
            if e > r.opacus_rdp_ours * (1.0 + 1e-9) {
                failures.push(format!(
                    "{m:?} δ={}: ours {e} above the RDP bound {}",
                    r.delta, r.opacus_rdp_ours
                ));
            }
        }
    }
    eprintln!(
        "{kind:?}: worst excess over dp_accounting {:.4}%, least margin over the PRV lower bound \
         {min_margin:.3e} ({unchecked_lower} points where prv-accountant is inconsistent), over \
         the optimistic PLD {min_margin_optimistic:.3e}",
        100.0 * worst_excess
    );
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn pld_answers_every_reference_point_within_one_percent_and_above_the_lower_bound() {
    check_reference_grid(AccountantKind::Pld);
}

#[test]
fn prv_answers_every_reference_point_within_one_percent_and_above_the_lower_bound() {
    // The PRV accountant is an alias of the PLD one (AccountantKind::Prv): the same checks,
    // through its own dispatch, on every point.
    check_reference_grid(AccountantKind::Prv);
}

#[test]
fn prv_is_the_pld_accountant_bit_for_bit() {
    for r in reference().iter().filter(|r| r.m.steps <= 1000).step_by(7) {
        let prv = epsilon(&r.m, r.delta, AccountantKind::Prv).unwrap();
        let pld = epsilon(&r.m, r.delta, AccountantKind::Pld).unwrap();
        assert_eq!(prv.to_bits(), pld.to_bits(), "{:?}", r.m);
    }
}

#[test]
fn rdp_matches_opacus_on_the_reference_grid() {
    let mut worst = 0.0f64;
    for r in reference() {
        let eps = epsilon(&r.m, r.delta, AccountantKind::Rdp).unwrap();
        // Same orders as ours (Opacus's plus 128 and 256): within 0.1%, never below.
        let rel = eps / r.opacus_rdp_ours - 1.0;
        worst = worst.max(rel.abs());
        assert!(
            rel.abs() <= 1e-3 && rel >= -1e-9,
            "{:?} δ={}: ours {eps}, Opacus {}",
            r.m,
            r.delta,
            r.opacus_rdp_ours
        );
        // Opacus's own orders are a subset of ours.
        assert!(eps <= r.opacus_rdp * (1.0 + 1e-9), "{:?}", r.m);
    }
    eprintln!("RDP: worst relative difference from Opacus {worst:.2e}");
}

#[test]
fn long_horizon_small_delta_answers() {
    // The example: refused before with "δ below the mass at infinite loss".
    let m = SubsampledGaussian {
        sample_rate: 0.05,
        noise_multiplier: 0.8,
        steps: 10_000,
    };
    let eps = epsilon(&m, 1e-6, AccountantKind::Pld).unwrap();
    assert!((84.05..=84.133 * 1.01).contains(&eps), "{eps}");
    // Small δ, refused before below about 1e-9 at 10⁴ steps (the FFT's rounding bound was
    // absolute; composing the tilted PMF makes it relative to δ). References from
    // dp-accounting 0.6.0 at h = 1e-4 (PLDAccountant, and the optimistic PLD: a lower
    // bound), computed by scripts/accountant-reference.py's functions:
    //   δ = 1e-10: pessimistic 101.12714, optimistic 100.62668;
    //   δ = 1e-12: pessimistic 108.71091, optimistic 108.12029.
    let got = epsilons(&m, &[1e-10, 1e-12], AccountantKind::Pld).unwrap();
    for (&e, (pess, opt)) in got
        .iter()
        .zip([(101.12714, 100.62668), (108.71091, 108.12029)])
    {
        assert!(e >= opt && e <= pess * 1.01, "{e} against [{opt}, {pess}]");
        assert!(e <= pess * (1.0 + 1e-4), "{e} against {pess}");
    }
    let rdp = epsilon(&m, 1e-12, AccountantKind::Rdp).unwrap();
    assert!(got[1] < rdp, "{} {rdp}", got[1]);
    // Further down, every δ the Gaussian can meet (all of them) still answers, growing.
    let mut last = got[1];
    for delta in [1e-16, 1e-30, 1e-60] {
        let e = epsilon(&m, delta, AccountantKind::Pld).unwrap();
        assert!(e > last && e <= epsilon(&m, delta, AccountantKind::Rdp).unwrap());
        last = e;
    }
}

#[test]
fn noise_multiplier_is_the_smallest_grid_point_meeting_the_target() {
    // 40 calibrations: the returned σ is on the grid 1.001^j, meets the target, and the grid
    // point below it does not.
    let mut points = Vec::new();
    for (i, &(q, steps)) in [
        (0.004, 100u64),
        (0.01, 1000),
        (0.05, 100),
        (0.2, 100),
        (0.01, 100),
    ]
    .iter()
    .enumerate()
    {
        for (k, &target) in [0.3, 0.8, 1.5, 3.0, 8.0].iter().enumerate() {
            let delta = if (i + k) % 2 == 0 { 1e-5 } else { 1e-6 };
            points.push((target, delta, q, steps, AccountantKind::Pld));
        }
    }
    for &(q, steps) in &[(0.004, 1000u64), (0.05, 1000), (0.2, 10_000)] {
        for &target in &[0.5, 2.0, 6.0] {
            points.push((target, 1e-5, q, steps, AccountantKind::Rdp));
        }
    }
    points.push((1.0, 1e-5, 0.01, 10_000, AccountantKind::Rdp));
    points.push((2.0, 1e-6, 0.02, 1000, AccountantKind::Rdp));
    points.push((4.0, 1e-5, 0.1, 100, AccountantKind::Rdp));
    points.push((0.5, 1e-6, 0.004, 1000, AccountantKind::Pld));
    points.push((3.0, 1e-5, 0.05, 1000, AccountantKind::Pld));
    points.push((1.0, 1e-6, 0.01, 1000, AccountantKind::Prv));
    assert_eq!(points.len(), 40);
    for (target, delta, q, steps, kind) in points {
        let sigma = noise_multiplier(target, delta, q, steps, kind).unwrap();
        let j = (sigma.ln() / NOISE_GRID_RATIO.ln()).round() as i64;
        assert_eq!(sigma, noise_grid_point(j), "{sigma} is not on the grid");
        let eps = |s: f64| {
            epsilon(
                &SubsampledGaussian {
                    sample_rate: q,
                    noise_multiplier: s,
                    steps,
                },
                delta,
                kind,
            )
            .unwrap()
        };
        let at = eps(sigma);
        let below = eps(noise_grid_point(j - 1));
        assert!(
            at <= target,
            "{kind:?} q={q} T={steps}: σ={sigma} gives ε={at} > {target}"
        );
        assert!(
            below > target,
            "{kind:?} q={q} T={steps}: σ one step lower gives ε={below} ≤ {target}"
        );
    }
}

#[test]
fn pld_full_batch_matches_the_gaussian_closed_form() {
    // q = 1: T steps of the Gaussian mechanism are one with μ = √T/σ, whose δ(ε) is
    // Φ(−ε/μ + μ/2) − e^ε·Φ(−ε/μ − μ/2) (Balle & Wang 2018). Ours must be at or above the
    // exact ε and close to it.
    use crate::privacy::special::normal_cdf;
    for (sigma, steps, delta) in [
        (1.0, 1u64, 1e-5),
        (8.0, 100, 1e-6),
        (30.0, 10_000, 1e-6),
        (30.0, 10_000, 1e-12),
    ] {
        let mu = (steps as f64).sqrt() / sigma;
        let exact_delta =
            |e: f64| normal_cdf(-e / mu + mu / 2.0) - e.exp() * normal_cdf(-e / mu - mu / 2.0);
        let (mut lo, mut hi) = (0.0, 100.0);
        for _ in 0..200 {
            let mid = 0.5 * (lo + hi);
            if exact_delta(mid) > delta {
                lo = mid;
            } else {
                hi = mid;
            }
        }
        let m = SubsampledGaussian {
            sample_rate: 1.0,
            noise_multiplier: sigma,
            steps,
        };
        let ours = epsilon(&m, delta, AccountantKind::Pld).unwrap();
        assert!(
            ours >= lo && ours <= hi * 1.001 + 1e-3,
            "σ={sigma} T={steps} δ={delta}: ours {ours}, exact {hi}"
        );
    }
}
