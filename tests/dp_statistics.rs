//! Statistical tests of the DP samplers and mechanisms: Kolmogorov–Smirnov against the exact
//! CDF (10⁶ samples, `D < 2.69/√N`, the critical value at α ≈ 10⁻⁶) and Pearson χ² for the
//! exact discrete Laplace, the exact discrete Gaussian and the fast grid-Laplace path; a
//! Bernoulli(exp(−γ)) frequency test; grid support of every released mechanism under
//! adversarial inputs; and an empirical audit of the Laplace mechanism's ε by Clopper–Pearson
//! intervals, which must hold for the honest mechanism and catch a half-noised one.
//!
//! Every test uses fixed seeds, so it is deterministic; thresholds sit at α ≈ 10⁻⁶ so a
//! correct sampler would fail with that probability for a fresh seed, not for these ones.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use confidant::privacy::PrivacyError;
use confidant::privacy::mechanism::{GaussianScores, LaplaceScores, NoisyArgmax, label_only};
use confidant::privacy::policy::PrivacyPolicy;
use confidant::privacy::rng::ChaChaDpRng;
use confidant::privacy::sampler::fast::FastDiscreteLaplace;
use confidant::privacy::sampler::{self, Rational};
use confidant::privacy::special::ln_gamma;

const N: usize = 1_000_000;

fn rng(seed: u8) -> ChaChaDpRng {
    ChaChaDpRng::dangerous_from_seed([seed; 32])
}

/// The KS critical value at α ≈ 10⁻⁶: `√(−ln(α/2)/2) / √n` (conservative for discrete laws).
fn ks_critical(n: usize) -> f64 {
    2.69 / (n as f64).sqrt()
}

/// KS statistic of integer samples against an exact CDF, evaluated on both sides of every
/// jump of the empirical CDF.
fn ks_statistic(samples: &mut [i64], cdf: impl Fn(i64) -> f64) -> f64 {
    samples.sort_unstable();
    let n = samples.len() as f64;
    let mut d: f64 = 0.0;
    let mut i = 0;
    while i < samples.len() {
        let x = samples[i];
        let before = i as f64 / n;
        while i < samples.len() && samples[i] == x {
            i += 1;
        }
        let after = i as f64 / n;
        d = d
            .max((before - cdf(x - 1)).abs())
            .max((after - cdf(x)).abs());
    }
    d
}

/// Pearson χ² over bins of `width` integers, bin `b` holding `b·width ..= (b+1)·width − 1`
/// for `b` in `−k..=k`, plus the two tails, against exact bin probabilities from `cdf`. `k`
/// is the largest (up to 60) for which every bin expects at least 5.
fn chi_square(samples: &[i64], cdf: impl Fn(i64) -> f64, width: i64) -> (f64, usize) {
    let n = samples.len() as f64;
    let bin_p = |b: i64| cdf((b + 1) * width - 1) - cdf(b * width - 1);
    let lower_tail = |k: i64| cdf(-k * width - 1);
    let upper_tail = |k: i64| 1.0 - cdf((k + 1) * width - 1);
    let fits = |k: i64| {
        [bin_p(-k), bin_p(k), lower_tail(k), upper_tail(k)]
            .iter()
            .all(|&p| p * n >= 5.0)
    };
    let k = (0..=60).take_while(|&k| fits(k)).last().unwrap_or(0);
    let mut counts = vec![0f64; (2 * k + 3) as usize];
    for &s in samples {
        let b = s.div_euclid(width).clamp(-k - 1, k + 1);
        counts[(b + k + 1) as usize] += 1.0;
    }
    let mut stat = 0.0;
    for (i, &c) in counts.iter().enumerate() {
        let b = i as i64 - k - 1;
        let p = if b < -k {
            lower_tail(k)
        } else if b > k {
            upper_tail(k)
        } else {
            bin_p(b)
        };
        let e = p * n;
        assert!(e >= 5.0, "bin {b} expects {e}");
        stat += (c - e) * (c - e) / e;
    }
    (stat, counts.len() - 1)
}

/// The χ² critical value at α ≈ 10⁻⁶ (Wilson–Hilferty, z = 4.75).
fn chi_square_critical(df: usize) -> f64 {
    let df = df as f64;
    let z = 4.75;
    df * (1.0 - 2.0 / (9.0 * df) + z * (2.0 / (9.0 * df)).sqrt()).powi(3)
}

/// Discrete Laplace of scale t: `P(x) = (1−p)/(1+p)·p^|x|`, `p = e^{−1/t}`; its CDF.
fn dlap_cdf(t: f64) -> impl Fn(i64) -> f64 {
    let p = (-1.0 / t).exp();
    move |x: i64| {
        if x >= 0 {
            1.0 - p.powf(x as f64 + 1.0) / (1.0 + p)
        } else {
            p.powf(-x as f64) / (1.0 + p)
        }
    }
}

/// The CDF of the discrete Gaussian with variance parameter σ², normalized by direct
/// summation.
fn dgauss_cdf(sigma2: f64) -> impl Fn(i64) -> f64 {
    let w = move |x: i64| (-(x as f64).powi(2) / (2.0 * sigma2)).exp();
    let bound = (sigma2.sqrt() * 40.0) as i64 + 10;
    let z: f64 = (-bound..=bound).map(w).sum();
    move |x: i64| {
        if x < 0 {
            (-bound..=x.max(-bound - 1)).map(w).sum::<f64>() / z
        } else {
            1.0 - ((x + 1)..=bound).map(w).sum::<f64>() / z
        }
    }
}

/// χ² over bins of `width` integers and KS, both at α ≈ 10⁻⁶.
fn check_ks_and_chi_square(
    what: &str,
    mut samples: Vec<i64>,
    cdf: impl Fn(i64) -> f64,
    width: i64,
) {
    let n = samples.len();
    let (stat, df) = chi_square(&samples, &cdf, width);
    let crit = chi_square_critical(df);
    let d = ks_statistic(&mut samples, cdf);
    println!(
        "{what}: n = {n}, χ² = {stat:.1} (df {df}, bins of {width}, critical {crit:.1}), \
         KS D = {d:.2e} (critical {:.2e})",
        ks_critical(n)
    );
    assert!(stat < crit, "{what}: χ² = {stat}, df = {df}");
    assert!(d < ks_critical(n), "{what}: D = {d}");
}

#[test]
fn exact_discrete_laplace_ks_and_chi_square() {
    let mut r = rng(3);
    // 3 and 1/2 are dyadic; 7/3 exercises the Y = ⌊X/s⌋ step of CKS Algorithm 2.
    for (label, scale, t, n) in [
        ("t = 3", Rational::new(3, 1).unwrap(), 3.0, N),
        ("t = 1/2", Rational::new(1, 2).unwrap(), 0.5, N),
        ("t = 7/3", Rational::new(7, 3).unwrap(), 7.0 / 3.0, N),
    ] {
        let s: Vec<i64> = (0..n)
            .map(|_| sampler::discrete_laplace(&mut r, scale).unwrap())
            .collect();
        check_ks_and_chi_square(
            &format!("exact discrete Laplace {label}"),
            s,
            dlap_cdf(t),
            1,
        );
    }
}

#[test]
fn exact_discrete_gaussian_ks_and_chi_square() {
    let mut r = rng(5);
    for (sigma, n) in [(2.5f64, N), (0.6, N)] {
        let s2 = sampler::discrete_gaussian_sigma2(sigma).unwrap();
        assert!(s2.to_f64() >= sigma * sigma);
        let s: Vec<i64> = (0..n)
            .map(|_| sampler::discrete_gaussian(&mut r, s2).unwrap())
            .collect();
        let cdf = dgauss_cdf(s2.to_f64());
        check_ks_and_chi_square(&format!("exact discrete Gaussian σ = {sigma}"), s, cdf, 1);
    }
}

#[test]
fn fast_grid_laplace_ks_and_chi_square() {
    let mut r = rng(6);
    // 1/4 restarts the tail path often (K = 1); 2^20 is the Laplace mechanism's scale at
    // ε = 1 on its grid.
    for t in [0.25f64, 1.0, 5.7, 1000.0, 1_048_576.0] {
        let fast = FastDiscreteLaplace::new(t).unwrap();
        let mut s = vec![0i64; N];
        fast.fill(&mut r, &mut s);
        // Bins of ⌈t/8⌉ integers: unit bins up to t = 8, wide ones for wide laws.
        let width = ((t / 8.0).ceil() as i64).max(1);
        check_ks_and_chi_square(&format!("fast t = {t}"), s, dlap_cdf(t), width);
    }
}

#[test]
fn the_distribution_tests_catch_a_five_percent_scale_error() {
    // A negative control: the same tests must reject a sampler whose scale is 5 % off.
    let mut r = rng(7);
    let (t, wrong) = (5.7f64, 5.7 * 1.05);
    let mut s = vec![0i64; N];
    FastDiscreteLaplace::new(wrong)
        .unwrap()
        .fill(&mut r, &mut s);
    let (stat, df) = chi_square(&s, dlap_cdf(t), 1);
    let d = ks_statistic(&mut s, dlap_cdf(t));
    println!("scale 5 % off: χ² = {stat:.1} (df {df}), KS D = {d:.2e}");
    assert!(stat > chi_square_critical(df), "χ² missed it: {stat}");
    assert!(d > ks_critical(N), "KS missed it: {d}");
}

/// Clopper–Pearson bounds and their helpers.
mod clopper_pearson {
    use super::ln_gamma;

    /// Regularized incomplete beta I_x(a, b) by Lentz's continued fraction.
    pub fn beta_inc(a: f64, b: f64, x: f64) -> f64 {
        if x <= 0.0 {
            return 0.0;
        }
        if x >= 1.0 {
            return 1.0;
        }
        if x > (a + 1.0) / (a + b + 2.0) {
            return 1.0 - beta_inc(b, a, 1.0 - x);
        }
        let ln_front =
            ln_gamma(a + b) - ln_gamma(a) - ln_gamma(b) + a * x.ln() + b * (1.0 - x).ln();
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
        for _ in 0..100 {
            let mid = 0.5 * (lo + hi);
            if beta_inc(a, b, mid) < p {
                lo = mid;
            } else {
                hi = mid;
            }
        }
        0.5 * (lo + hi)
    }

    /// One-sided Clopper–Pearson bounds at level `alpha` each, for `k` successes in `n`.
    pub fn bounds(k: u64, n: u64, alpha: f64) -> (f64, f64) {
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
}

#[test]
fn clopper_pearson_matches_known_values() {
    // scipy.stats.beta.ppf(0.025, 5, 16) and beta.ppf(0.975, 6, 15).
    let (lo, hi) = clopper_pearson::bounds(5, 20, 0.025);
    assert!((lo - 0.086_571_469).abs() < 1e-6, "{lo}");
    assert!((hi - 0.491_045_872).abs() < 1e-6, "{hi}");
}

#[test]
fn bernoulli_exp_neg_frequencies_match_exp() {
    let mut r = rng(1);
    for (num, den, n) in [
        (0u128, 1u128, 10_000u64),
        (1, 3, 400_000),
        (1, 1, 400_000),
        (5, 2, 400_000),
        (7, 1, 400_000),
        (1, 1 << 40, 100_000),
    ] {
        let gamma = Rational::new(num, den).unwrap();
        let hits = (0..n)
            .filter(|_| sampler::bernoulli_exp_neg(&mut r, gamma).unwrap())
            .count() as u64;
        let p = (-(num as f64) / den as f64).exp();
        let (lo, hi) = clopper_pearson::bounds(hits, n, 1e-7);
        println!("Bernoulli(exp(−{num}/{den})): {hits}/{n}, p = {p:.6}, CP [{lo:.6}, {hi:.6}]");
        assert!(
            lo <= p && p <= hi,
            "γ = {num}/{den}: {hits}/{n} against p = {p}"
        );
    }
}

/// Inputs chosen to break a careless grid: a sum with a rounding error, both zeros, the
/// smallest subnormal and normal, values just off a grid point or a tie, the largest
/// magnitude the finest grid still holds (`big`), and their negatives.
fn adversarial_scores(big: f64) -> Vec<f64> {
    let mut v = vec![
        0.1 + 0.2,
        0.0,
        -0.0,
        f64::from_bits(1),
        f64::MIN_POSITIVE,
        f64::MIN_POSITIVE / 3.0,
        1.0 / 3.0,
        1.0 - f64::EPSILON / 2.0,
        (2.0f64).powi(-30) * 1.5,
        std::f64::consts::PI,
        big,
        big * 0.987_654_321,
    ];
    let negatives: Vec<f64> = v.iter().map(|x| -x).collect();
    v.extend(negatives);
    v
}

/// `y` is finite, an integer multiple of `step` with |multiple| < 2^53, and not −0.
fn assert_on_grid(y: f64, step: f64, what: &str) {
    let k = y / step;
    assert!(y.is_finite(), "{what}: {y} not finite");
    assert_eq!(k.fract(), 0.0, "{what}: {y} off grid {step}");
    assert!(
        k.abs() < 2f64.powi(53),
        "{what}: {y} beyond the exact range"
    );
    assert_eq!(k * step, y, "{what}: {y} not exactly k·step");
    assert_ne!(y.to_bits(), (-0.0f64).to_bits(), "{what}: −0 leaks a sign");
}

#[test]
fn every_release_lies_on_the_grid_whatever_the_input() {
    let mut r = rng(12);
    let dim = adversarial_scores(0.0).len();
    for (eps, sens) in [(1.0, 1.0), (0.01, 2.0), (50.0, 1e-6)] {
        let lap = LaplaceScores::new(eps, sens, dim).unwrap();
        let fast = lap.fast().unwrap();
        let gauss = GaussianScores::new(eps.min(10.0), 1e-6, sens, dim).unwrap();
        let argmax = NoisyArgmax::new(eps, sens, false).unwrap();
        let finest = [lap.grid().step(), gauss.grid().step(), argmax.grid().step()]
            .into_iter()
            .fold(f64::INFINITY, f64::min);
        // 2^51 steps of the finest grid, less a bit: the noise must not push it past 2^53.
        let scores = adversarial_scores(finest * 2f64.powi(51) * 0.75 + finest * 0.5);
        for _ in 0..200 {
            for y in lap.release(&mut r, &scores).unwrap() {
                assert_on_grid(y, lap.grid().step(), "Laplace");
            }
            let mut rows = scores.clone();
            fast.release_in_place(&mut r, &mut rows).unwrap();
            for y in rows {
                assert_on_grid(y, fast.grid().step(), "fast Laplace");
            }
            for y in gauss.release(&mut r, &scores).unwrap() {
                assert_on_grid(y, gauss.grid().step(), "Gaussian");
            }
            assert!(argmax.release(&mut r, &scores).unwrap() < dim);
        }
        assert!(label_only(&scores).unwrap() < dim);

        // Non-finite values are refused, naming their index, and the in-place path leaves
        // the input untouched.
        for bad in [f64::NAN, f64::INFINITY, f64::NEG_INFINITY] {
            let mut v = scores.clone();
            v[5] = bad;
            let refused = Err(PrivacyError::NonFiniteInput { index: 5 });
            assert_eq!(lap.release(&mut r, &v), refused);
            assert_eq!(gauss.release(&mut r, &v), refused);
            assert_eq!(argmax.release(&mut r, &v), refused.clone().map(|_| 0));
            assert_eq!(label_only(&v), refused.clone().map(|_| 0));
            let before: Vec<u64> = v.iter().map(|x| x.to_bits()).collect();
            assert_eq!(fast.release_in_place(&mut r, &mut v), refused.map(|_| ()));
            assert_eq!(v.iter().map(|x| x.to_bits()).collect::<Vec<_>>(), before);
        }
        // Values too large for the grid are refused, not wrapped.
        for huge in [1e300, -f64::MAX] {
            let mut v = scores.clone();
            v[0] = huge;
            let refused = Err(PrivacyError::OffGrid { index: 0 });
            assert_eq!(lap.release(&mut r, &v), refused);
            assert_eq!(gauss.release(&mut r, &v), refused);
            assert_eq!(fast.release_in_place(&mut r, &mut v), refused.map(|_| ()));
        }
    }
}

#[test]
fn policy_releases_lie_on_the_grid_whatever_the_input() {
    // What the server returns: PrivacyPolicy::apply on f32 scores, released as f32. The cast
    // to f32 is post-processing of the grid value, and keeps it a multiple of the step (a
    // coarser f32 spacing is a larger power of two).
    let mut r = rng(16);
    let row: Vec<f32> = vec![
        0.1 + 0.2,
        -0.0,
        f32::from_bits(1),
        f32::MIN_POSITIVE,
        1.0 / 3.0,
        0.999_999_94,
        -7.5,
        1e6,
    ];
    let width = row.len();
    let scores: Vec<f32> = row.iter().cycle().take(width * 50).copied().collect();
    for (policy, step) in [
        (
            PrivacyPolicy::LaplaceScores {
                epsilon: 1.0,
                sensitivity: Some(2.0),
            },
            LaplaceScores::new(1.0, 2.0, width).unwrap().grid().step(),
        ),
        (
            PrivacyPolicy::GaussianScores {
                epsilon: 0.5,
                delta: 1e-6,
                sensitivity: Some(2.0),
            },
            GaussianScores::new(0.5, 1e-6, 2.0, width)
                .unwrap()
                .grid()
                .step(),
        ),
    ] {
        let released = policy.apply(&mut r, &scores, width, false).unwrap();
        let values = released.values.unwrap();
        assert_eq!(values.len(), scores.len());
        for y in values {
            assert_on_grid(f64::from(y), step, policy.name());
        }
        assert!(released.labels.iter().all(|&l| l < width));
        let mut bad = scores.clone();
        bad[3] = f32::NAN;
        assert!(policy.apply(&mut r, &bad, width, false).is_err());
    }
    let argmax = PrivacyPolicy::NoisyArgmax {
        epsilon: 1.0,
        sensitivity: Some(1.0),
    };
    let released = argmax.apply(&mut r, &scores, width, false).unwrap();
    assert!(released.values.is_none());
    assert!(released.labels.iter().all(|&l| l < width));
}

/// An empirical lower bound on ε from the counts of the event "output > 1" on the
/// neighbouring inputs 1 (`k1`) and 0 (`k0`) over `runs` runs each. For Laplace noise the
/// likelihood ratio on that event is e^ε, the largest possible. Each Clopper–Pearson bound
/// holds with probability 1 − 10⁻⁶, so the result is a lower bound on the true ε with
/// probability at least 1 − 2·10⁻⁶.
fn epsilon_lower_bound(k1: u64, k0: u64, runs: u64) -> f64 {
    let (p1_lower, _) = clopper_pearson::bounds(k1, runs, 1e-6);
    let (_, p0_upper) = clopper_pearson::bounds(k0, runs, 1e-6);
    (p1_lower / p0_upper).ln()
}

/// Audits a one-score release on inputs 1 and 0 (distance 1, the sensitivity).
fn audit_epsilon(runs: u64, mut release: impl FnMut(f64) -> f64) -> f64 {
    let mut count = |x: f64| (0..runs).filter(|_| release(x) > 1.0).count() as u64;
    let k1 = count(1.0);
    let k0 = count(0.0);
    epsilon_lower_bound(k1, k0, runs)
}

#[test]
fn laplace_audit_holds_and_catches_half_noise() {
    let runs = N as u64;
    let honest = LaplaceScores::new(1.0, 1.0, 1).unwrap();
    let mut r = rng(11);
    let eps_lb = audit_epsilon(runs, |x| honest.release(&mut r, &[x]).unwrap()[0]);
    println!("exact Laplace, ε = 1: audited ε ≥ {eps_lb:.4}");
    assert!(
        eps_lb <= honest.guarantee().epsilon(),
        "honest audited at ε ≥ {eps_lb}"
    );
    assert!(
        eps_lb > 0.95,
        "the audit is too weak to mean anything: {eps_lb}"
    );

    // The fast path, in batches of rows, audited against its own (slightly larger) charge.
    let fast = honest.fast().unwrap();
    let mut count = |x: f64| {
        let (mut k, mut left) = (0u64, N);
        while left > 0 {
            let mut batch = vec![x; left.min(4096)];
            fast.release_in_place(&mut r, &mut batch).unwrap();
            k += batch.iter().filter(|&&y| y > 1.0).count() as u64;
            left -= batch.len();
        }
        k
    };
    let k1 = count(1.0);
    let k0 = count(0.0);
    let eps_lb = epsilon_lower_bound(k1, k0, runs);
    println!("fast Laplace, ε = 1: audited ε ≥ {eps_lb:.4}");
    assert!(
        eps_lb <= fast.guarantee().epsilon(),
        "fast audited at ε ≥ {eps_lb}"
    );
    assert!(eps_lb > 0.95, "the fast audit is too weak: {eps_lb}");

    // Half the noise (the scale for ε = 2) while claiming ε = 1 must be caught.
    let half = LaplaceScores::new(2.0, 1.0, 1).unwrap();
    let eps_lb = audit_epsilon(runs, |x| half.release(&mut r, &[x]).unwrap()[0]);
    println!("half-noised Laplace claiming ε = 1: audited ε ≥ {eps_lb:.4}");
    assert!(
        eps_lb > 1.0,
        "half-noised mechanism not caught: ε ≥ {eps_lb}"
    );
}
