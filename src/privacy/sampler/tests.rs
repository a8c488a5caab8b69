use super::fast::FastDiscreteLaplace;
use super::*;
use crate::privacy::rng::ChaChaDpRng;

fn rng(seed: u8) -> ChaChaDpRng {
    ChaChaDpRng::dangerous_from_seed([seed; 32])
}

/// KS statistic of integer samples against an exact CDF, evaluated at every integer in the
/// sample range (where the empirical CDF jumps).
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
        // Just below x the exact CDF is cdf(x−1); at x it is cdf(x).
        d = d
            .max((before - cdf(x - 1)).abs())
            .max((after - cdf(x)).abs());
    }
    d
}

/// Pearson χ² over the bins −k..=k plus the two tails, against exact bin probabilities.
fn chi_square(samples: &[i64], pmf: impl Fn(i64) -> f64, k: i64) -> (f64, usize) {
    let n = samples.len() as f64;
    let mut counts = vec![0f64; (2 * k + 3) as usize];
    for &s in samples {
        let bin = (s.clamp(-k - 1, k + 1) + k + 1) as usize;
        counts[bin] += 1.0;
    }
    let inner: f64 = (-k..=k).map(&pmf).sum();
    let tail = (1.0 - inner) / 2.0;
    let mut stat = 0.0;
    for (b, &c) in counts.iter().enumerate() {
        let x = b as i64 - k - 1;
        let p = if x.abs() > k { tail } else { pmf(x) };
        let e = p * n;
        assert!(e >= 5.0, "bin {x} expects {e}");
        stat += (c - e) * (c - e) / e;
    }
    (stat, counts.len() - 1)
}

/// χ² critical value at p ≈ 1e-6 (Wilson–Hilferty).
fn chi_square_critical(df: usize) -> f64 {
    let df = df as f64;
    let z = 4.75;
    df * (1.0 - 2.0 / (9.0 * df) + z * (2.0 / (9.0 * df)).sqrt()).powi(3)
}

fn dlap_pmf(t: f64) -> impl Fn(i64) -> f64 {
    let p = (-1.0 / t).exp();
    move |x: i64| (1.0 - p) / (1.0 + p) * p.powi(x.unsigned_abs() as i32)
}

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

fn dgauss_pmf(sigma2: f64) -> (impl Fn(i64) -> f64, impl Fn(i64) -> f64) {
    let w = move |x: i64| (-(x as f64).powi(2) / (2.0 * sigma2)).exp();
    let bound = (sigma2.sqrt() * 40.0) as i64 + 10;
    let z: f64 = (-bound..=bound).map(w).sum();
    let pmf = move |x: i64| w(x) / z;
    let cdf = move |x: i64| {
        if x < 0 {
            (-bound..=x).map(w).sum::<f64>() / z
        } else {
            1.0 - ((x + 1)..=bound).map(w).sum::<f64>() / z
        }
    };
    (pmf, cdf)
}

#[test]
fn bernoulli_exp_neg_matches_exp() {
    let mut r = rng(1);
    for (num, den) in [(1u128, 3u128), (5, 2), (0, 1), (7, 1)] {
        let n = 200_000;
        let hits = (0..n)
            .filter(|_| bernoulli_exp_neg(&mut r, Rational { num, den }).unwrap())
            .count() as f64;
        let p = (-(num as f64) / den as f64).exp();
        let sd = (p * (1.0 - p) / n as f64).sqrt().max(1e-9);
        assert!((hits / n as f64 - p).abs() < 5.0 * sd, "γ={num}/{den}");
    }
}

#[test]
fn uniform_below_is_uniform_including_above_2_64() {
    let mut r = rng(2);
    let mut counts = [0u32; 7];
    for _ in 0..70_000 {
        counts[uniform_below(&mut r, 7) as usize] += 1;
    }
    for c in counts {
        assert!((f64::from(c) - 10_000.0).abs() < 500.0);
    }
    let big = (1u128 << 100) + 12345;
    for _ in 0..1000 {
        assert!(uniform_below(&mut r, big) < big);
    }
}

#[test]
fn exact_discrete_laplace_ks_and_chi_square() {
    let mut r = rng(3);
    for (t, n) in [(3.0f64, 200_000usize), (0.5, 200_000)] {
        let scale = Rational::from_f64_ceil(t, 8).unwrap();
        let mut s: Vec<i64> = (0..n)
            .map(|_| discrete_laplace(&mut r, scale).unwrap())
            .collect();
        let k = if t > 1.0 { 12 } else { 3 };
        let (stat, df) = chi_square(&s, dlap_pmf(t), k);
        assert!(stat < chi_square_critical(df), "t={t}: χ²={stat} df={df}");
        let d = ks_statistic(&mut s, dlap_cdf(t));
        assert!(d < 2.69 / (n as f64).sqrt(), "t={t}: D={d}");
    }
}

#[test]
fn exact_discrete_laplace_rational_scale() {
    // Scale 7/3: the Y = ⌊X/s⌋ step of CKS Algorithm 2.
    let mut r = rng(4);
    let n = 100_000;
    let mut s: Vec<i64> = (0..n)
        .map(|_| discrete_laplace(&mut r, Rational { num: 7, den: 3 }).unwrap())
        .collect();
    let d = ks_statistic(&mut s, dlap_cdf(7.0 / 3.0));
    assert!(d < 2.69 / (n as f64).sqrt(), "D={d}");
}

#[test]
fn exact_discrete_gaussian_ks_and_chi_square() {
    let mut r = rng(5);
    for (sigma, n) in [(2.5f64, 200_000usize), (0.6, 100_000)] {
        let s2 = discrete_gaussian_sigma2(sigma).unwrap();
        assert!(s2.to_f64() >= sigma * sigma);
        let mut s: Vec<i64> = (0..n)
            .map(|_| discrete_gaussian(&mut r, s2).unwrap())
            .collect();
        let (pmf, cdf) = dgauss_pmf(s2.to_f64());
        let k = if sigma > 1.0 { 8 } else { 1 };
        let (stat, df) = chi_square(&s, &pmf, k);
        assert!(stat < chi_square_critical(df), "σ={sigma}: χ²={stat}");
        let d = ks_statistic(&mut s, cdf);
        assert!(d < 2.69 / (n as f64).sqrt(), "σ={sigma}: D={d}");
    }
}

#[test]
fn fast_discrete_laplace_ks_1e6_and_chi_square() {
    let mut r = rng(6);
    for t in [0.3f64, 1.0, 5.7, 1000.0] {
        let fast = FastDiscreteLaplace::new(t).unwrap();
        let n = 1_000_000;
        let mut s = vec![0i64; n];
        fast.fill(&mut r, &mut s);
        if t < 100.0 {
            let k = (t * 4.0).ceil() as i64;
            let (stat, df) = chi_square(&s, dlap_pmf(t), k);
            assert!(stat < chi_square_critical(df), "t={t}: χ²={stat} df={df}");
        }
        let d = ks_statistic(&mut s, dlap_cdf(t));
        assert!(d < 2.69 / (n as f64).sqrt(), "t={t}: D={d}");
    }
}

#[test]
fn fast_sampler_rejects_out_of_range_scales() {
    assert!(FastDiscreteLaplace::new(0.1).is_err());
    assert!(FastDiscreteLaplace::new(f64::NAN).is_err());
    assert!(FastDiscreteLaplace::new(1e12).is_err());
}

#[test]
fn grid_rounds_to_nearest_and_rejects_non_finite() {
    let g = Grid::new(-2).unwrap();
    assert_eq!(g.to_steps(0.375, 0).unwrap(), 2); // 1.5 steps: ties away from zero
    assert_eq!(g.to_steps(-0.3, 0).unwrap(), -1);
    assert!(g.to_steps(f64::NAN, 3).is_err());
    assert!(g.to_steps(1e300, 0).is_err());
    assert_eq!(g.from_steps(-5), -1.25);
}

#[test]
fn rational_from_f64_rounds_in_the_safe_direction() {
    let r = Rational::from_f64_ceil(0.1, 8).unwrap();
    assert_eq!(r, Rational { num: 13, den: 128 });
    let r = Rational::from_f64_floor(0.1, 8).unwrap();
    assert_eq!(r, Rational { num: 25, den: 256 });
    let r = Rational::from_f64_ceil(3.5, 8).unwrap();
    assert_eq!(r, Rational { num: 7, den: 2 });
    assert!(Rational::from_f64_ceil(-1.0, 8).is_err());
}

#[test]
fn grid_laplace_outputs_lie_on_the_grid() {
    let mut r = rng(7);
    let fast = FastDiscreteLaplace::new(1000.0).unwrap();
    let grid = Grid::new(-10).unwrap();
    let mut values: Vec<f64> = (0..10_000)
        .map(|i| (i as f64 * 0.123_456_789).sin() * 10f64.powi(i % 7 - 3))
        .collect();
    fast::add_grid_laplace(&mut r, &fast, grid, &mut values).unwrap();
    for v in values {
        let steps = v / grid.step();
        assert_eq!(steps.fract(), 0.0, "{v} is off the grid");
    }
}
