use super::*;
use crate::privacy::rng::ChaChaDpRng;
use crate::privacy::special::ln_gamma;

fn rng(seed: u8) -> ChaChaDpRng {
    ChaChaDpRng::dangerous_from_seed([seed; 32])
}

/// Regularized incomplete beta I_x(a, b) by Lentz's continued fraction.
fn beta_inc(a: f64, b: f64, x: f64) -> f64 {
    if x <= 0.0 {
        return 0.0;
    }
    if x >= 1.0 {
        return 1.0;
    }
    if x > (a + 1.0) / (a + b + 2.0) {
        return 1.0 - beta_inc(b, a, 1.0 - x);
    }
    let ln_front = ln_gamma(a + b) - ln_gamma(a) - ln_gamma(b) + a * x.ln() + b * (1.0 - x).ln();
    let tiny = 1e-300;
    let (mut c, mut d) = (1.0, 1.0 - (a + b) * x / (a + 1.0));
    if d.abs() < tiny {
        d = tiny;
    }
    d = 1.0 / d;
    let mut f = d;
    for m in 1..100_000 {
        let m = f64::from(m);
        for num in [
            m * (b - m) * x / ((a + 2.0 * m - 1.0) * (a + 2.0 * m)),
            -(a + m) * (a + b + m) * x / ((a + 2.0 * m) * (a + 2.0 * m + 1.0)),
        ] {
            d = 1.0 + num * d;
            if d.abs() < tiny {
                d = tiny;
            }
            c = 1.0 + num / c;
            if c.abs() < tiny {
                c = tiny;
            }
            d = 1.0 / d;
            f *= c * d;
        }
        if (c * d - 1.0).abs() < 1e-15 {
            break;
        }
    }
    ln_front.exp() * f / a
}

fn beta_quantile(p: f64, a: f64, b: f64) -> f64 {
    let (mut lo, mut hi) = (0.0, 1.0);
    for _ in 0..80 {
        let mid = 0.5 * (lo + hi);
        if beta_inc(a, b, mid) < p {
            lo = mid;
        } else {
            hi = mid;
        }
    }
    0.5 * (lo + hi)
}

/// Clopper–Pearson one-sided bounds at level `alpha` for `k` successes in `n`.
fn clopper_pearson(k: u64, n: u64, alpha: f64) -> (f64, f64) {
    let (k, n) = (k as f64, n as f64);
    let lower = if k == 0.0 {
        0.0
    } else {
        beta_quantile(alpha, k, n - k + 1.0)
    };
    let upper = if k == n {
        1.0
    } else {
        beta_quantile(1.0 - alpha, k + 1.0, n - k)
    };
    (lower, upper)
}

/// An empirical lower bound on the ε of `release` from neighbouring inputs 0 and 1 (ℓ₁
/// distance 1), using the event "output > 1": for Laplace noise the likelihood ratio on it
/// is e^ε, the largest possible. Each Clopper–Pearson bound holds with probability 1 − 1e-6.
fn audit_epsilon(runs: u64, mut release: impl FnMut(f64) -> f64) -> f64 {
    let mut count = |x: f64| (0..runs).filter(|_| release(x) > 1.0).count() as u64;
    let k1 = count(1.0);
    let k0 = count(0.0);
    let (p1_lower, _) = clopper_pearson(k1, runs, 1e-6);
    let (_, p0_upper) = clopper_pearson(k0, runs, 1e-6);
    (p1_lower / p0_upper).ln()
}

#[test]
fn clopper_pearson_matches_known_values() {
    // scipy.stats.beta.ppf(0.025, 5, 16) and beta.ppf(0.975, 6, 15).
    let (lo, hi) = clopper_pearson(5, 20, 0.025);
    assert!((lo - 0.086_571_469).abs() < 1e-6, "{lo}");
    assert!((hi - 0.491_045_872).abs() < 1e-6, "{hi}");
}

#[test]
fn laplace_audit_holds_and_catches_half_noise() {
    let runs = 200_000;
    let honest = LaplaceScores::new(1.0, 1.0, 1).unwrap();
    let mut r = rng(11);
    let eps_lb = audit_epsilon(runs, |x| honest.release(&mut r, &[x]).unwrap()[0]);
    assert!(eps_lb <= 1.0, "honest mechanism audited at ε ≥ {eps_lb}");
    assert!(
        eps_lb > 0.9,
        "the audit is too weak to mean anything: {eps_lb}"
    );

    // The same mechanism with half the noise (the scale for ε = 2) while claiming ε = 1.
    let half = LaplaceScores::new(2.0, 1.0, 1).unwrap();
    let eps_lb = audit_epsilon(runs, |x| half.release(&mut r, &[x]).unwrap()[0]);
    assert!(
        eps_lb > 1.0,
        "half-noised mechanism not caught: ε ≥ {eps_lb}"
    );
}

#[test]
fn laplace_charges_rounding_and_stays_below_target() {
    let m = LaplaceScores::new(0.5, 2.0, 10).unwrap();
    let g = m.guarantee();
    assert!(g.epsilon() <= 0.5 && g.epsilon() > 0.499_9, "{g:?}");
    // b = (Δ + d·g)/ε: above the unrounded 2/0.5.
    assert!(m.scale() > 4.0);
    assert!(m.scale() < 4.0 * (1.0 + 1e-4));
}

#[test]
fn mechanisms_release_only_grid_points() {
    let mut r = rng(12);
    let lap = LaplaceScores::new(1.0, 1.0, 4).unwrap();
    let gauss = GaussianScores::new(1.0, 1e-5, 1.0, 4).unwrap();
    for i in 0..2000 {
        let x = f64::from(i);
        let scores = [x.sin() * 1e-9, x.cos() * 123.456, -x * 1e5, 1.0 / (x + 0.3)];
        for (y, step) in lap
            .release(&mut r, &scores)
            .unwrap()
            .into_iter()
            .map(|y| (y, lap.grid().step()))
            .chain(
                gauss
                    .release(&mut r, &scores)
                    .unwrap()
                    .into_iter()
                    .map(|y| (y, gauss.grid().step())),
            )
        {
            assert_eq!((y / step).fract(), 0.0, "{y} off grid {step}");
        }
    }
}

#[test]
fn mechanisms_refuse_bad_input() {
    let mut r = rng(13);
    let lap = LaplaceScores::new(1.0, 1.0, 2).unwrap();
    assert!(lap.release(&mut r, &[1.0]).is_err());
    assert!(matches!(
        lap.release(&mut r, &[1.0, f64::NAN]),
        Err(PrivacyError::NonFiniteInput { index: 1 })
    ));
    assert!(LaplaceScores::new(0.0, 1.0, 2).is_err());
    assert!(LaplaceScores::new(f64::INFINITY, 1.0, 2).is_err());
    assert!(GaussianScores::new(1.0, 0.0, 1.0, 2).is_err());
    assert!(label_only(&[]).is_err());
    assert!(
        NoisyArgmax::new(1.0, 1.0, false)
            .unwrap()
            .release(&mut r, &[])
            .is_err()
    );
}

#[test]
fn analytic_gaussian_matches_balle_wang() {
    // Balle & Wang 2018: at ε = 1, δ = 1e-5, Δ = 1 the analytic σ ≈ 3.73 (classic 4.84).
    let s = analytic_gaussian_sigma(1.0, 1e-5, 1.0).unwrap();
    assert!((s - 3.730).abs() < 0.01, "{s}");
    assert!(gaussian_delta(1.0, s, 1.0) <= 1e-5);
    assert!(gaussian_delta(1.0, s * 0.999, 1.0) > 1e-5);
    // Works where the classic formula does not (ε > 1).
    let s = analytic_gaussian_sigma(8.0, 1e-6, 1.0).unwrap();
    assert!(gaussian_delta(8.0, s, 1.0) <= 1e-6 && s > 0.0);
}

#[test]
fn gaussian_scores_guarantee() {
    let m = GaussianScores::new(1.0, 1e-5, 1.0, 3).unwrap();
    let g = m.guarantee();
    assert_eq!(g.epsilon(), 1.0);
    assert_eq!(g.delta(), 1e-5);
    assert!(m.sigma() >= 3.73 && m.sigma() < 3.75, "{}", m.sigma());
    let rho = g.rho().unwrap();
    assert!((rho - 1.0 / (2.0 * m.sigma() * m.sigma())).abs() < 1e-3);
}

#[test]
fn noisy_argmax_prefers_the_best_and_follows_permute_and_flip() {
    let mut r = rng(14);
    let m = NoisyArgmax::new(2.0, 1.0, false).unwrap();
    let scores = [0.0, 1.0, 3.0];
    let n = 60_000;
    let mut counts = [0f64; 3];
    for _ in 0..n {
        counts[m.release(&mut r, &scores).unwrap()] += 1.0;
    }
    // Exact permute-and-flip probabilities with p_r = exp(−ε(q* − q_r)/2), by enumerating
    // the 6 orders.
    let p = [(-3.0f64).exp(), (-2.0f64).exp(), 1.0];
    let mut expected = [0.0; 3];
    for order in [
        [0, 1, 2],
        [0, 2, 1],
        [1, 0, 2],
        [1, 2, 0],
        [2, 0, 1],
        [2, 1, 0],
    ] {
        let mut reach = 1.0 / 6.0;
        for &i in &order {
            expected[i] += reach * p[i];
            reach *= 1.0 - p[i];
        }
    }
    for i in 0..3 {
        let e = expected[i];
        let sd = (e * (1.0 - e) / f64::from(n)).sqrt();
        assert!(
            (counts[i] / f64::from(n) - e).abs() < 5.0 * sd,
            "{i}: {counts:?} {expected:?}"
        );
    }
    let g = m.guarantee();
    assert!(g.epsilon() <= 2.0 && g.epsilon() > 1.999);
}

#[test]
fn label_only_is_argmax_with_low_index_ties() {
    assert_eq!(label_only(&[0.1, 0.7, 0.7, 0.2]).unwrap(), 1);
    assert_eq!(label_only(&[-1.0]).unwrap(), 0);
    assert!(label_only(&[0.0, f64::INFINITY]).is_err());
}
