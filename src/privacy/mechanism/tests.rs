use super::*;
use crate::privacy::rng::ChaChaDpRng;

fn rng(seed: u8) -> ChaChaDpRng {
    ChaChaDpRng::dangerous_from_seed([seed; 32])
}

// The empirical audit (Clopper–Pearson, 10⁶ runs) is in tests/dp_statistics.rs.

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

#[test]
fn fast_laplace_charges_the_sampler_slack_and_checks_rows() {
    let mut r = rng(15);
    let exact = LaplaceScores::new(1.0, 2.0, 10).unwrap();
    let fast = exact.fast().unwrap();
    let (e, f) = (exact.guarantee().epsilon(), fast.guarantee().epsilon());
    // Ten coordinates at about 2.2·10⁻⁷ each.
    assert!(f > e && f - e < 5e-6, "{e} {f}");
    assert_eq!(fast.grid(), exact.grid());
    let mut rows = vec![0.5; 30];
    fast.release_in_place(&mut r, &mut rows).unwrap();
    assert!(rows.iter().any(|&y| y != 0.5));
    assert!(fast.release_in_place(&mut r, &mut [0.5; 15]).is_err());
    assert!(fast.release_in_place(&mut r, &mut []).is_err());
}
