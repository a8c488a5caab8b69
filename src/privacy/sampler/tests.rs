use super::fast::FastDiscreteLaplace;
use super::*;
use crate::privacy::rng::ChaChaDpRng;

fn rng(seed: u8) -> ChaChaDpRng {
    ChaChaDpRng::dangerous_from_seed([seed; 32])
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

// The distribution tests (KS and χ² at 10⁶ samples, Bernoulli frequencies, the audit) are
// in tests/dp_statistics.rs.

#[test]
fn fast_sampler_bounds_are_small_where_the_mechanisms_use_it() {
    let t = 1_048_576.0;
    let fast = FastDiscreteLaplace::new(t).unwrap();
    let eta = fast.point_deviation();
    // η = (4·K·2^-48/t + 6·2^-52)/(1 − p) with K = ⌊10·ln 2·t⌋, plus the 1 % margin.
    let k = (10.0 * std::f64::consts::LN_2 * t).floor();
    let expected = (4.0 * k * 2f64.powi(-48) / t + 6.0 * f64::EPSILON) / -(-1.0 / t).exp_m1();
    assert!(
        eta >= expected && eta < expected * 1.02,
        "{eta} vs {expected}"
    );
    assert!(eta > 1.0e-7 && eta < 1.1e-7, "{eta}");
    let tv = fast.total_variation_bound();
    assert!(tv >= eta && tv < 1.1 * eta, "{tv}");
    // One coordinate, sensitivity 2^20 steps: about ℓ(η) = 2η.
    let s = fast.epsilon_slack(t, 1);
    assert!(s > 2.0 * eta && s < 2.1 * eta, "{s}");
    // The slack counts every coordinate that can differ, and no more than ⌊D⌋ of them.
    assert!(fast.epsilon_slack(t, 10) > 9.9 * s);
    let small = FastDiscreteLaplace::new(1.0).unwrap();
    assert!(small.epsilon_slack(2.5, 1000) < 2.1 * small.epsilon_slack(2.5, 2));
    // The total-variation bound rests on ρ₁/(1−ρ₂) < 1/8 (tail mass over restart odds).
    for t in (0..400).map(|i| 0.25 * 1.05f64.powi(i)) {
        let p = (-1.0 / t).exp();
        let k = (10.0 * std::f64::consts::LN_2 * t).floor().max(1.0);
        let (rho1, rho2) = (2.0 / (1.0 + p) * p.powf(k), p.powf(k));
        assert!(rho1 / (1.0 - rho2) < 0.125, "t = {t}");
    }
    // The bound grows linearly in the scale and stays usable at the top of the range.
    let top = FastDiscreteLaplace::new(4_294_967_296.0).unwrap();
    assert!(top.point_deviation() < 1e-3);
}

#[test]
fn fast_sampler_takes_the_tail_path_and_keeps_its_mean_and_symmetry() {
    // At scale 1/4 the cap is K = 1 and |X| ≥ 1 has probability 2p/(1+p) ≈ 3.6 %, so the
    // cold path runs thousands of times here.
    let mut r = rng(8);
    let fast = FastDiscreteLaplace::new(0.25).unwrap();
    let mut s = vec![0i64; 200_000];
    fast.fill(&mut r, &mut s);
    let p = (-4.0f64).exp();
    let beyond_one = s.iter().filter(|x| x.unsigned_abs() >= 2).count() as f64 / 2e5;
    let expected = 2.0 * p * p / (1.0 + p);
    assert!((beyond_one - expected).abs() < 6.0 * (expected / 2e5).sqrt());
    let positive = s.iter().filter(|&&x| x > 0).count() as f64;
    let negative = s.iter().filter(|&&x| x < 0).count() as f64;
    assert!((positive - negative).abs() < 6.0 * (positive + negative).sqrt());
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
