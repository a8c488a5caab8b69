use super::*;

#[test]
fn log_erfc_matches_erfc_where_both_work_and_is_continuous_at_the_switch() {
    for &x in &[-3.0, -0.5, 0.0, 0.7, 3.0, 10.0, 19.0] {
        assert!((log_erfc(x) - erfc(x).ln()).abs() < 1e-12 * (1.0 + erfc(x).ln().abs()));
    }
    let below = erfc(19.999_999).ln();
    let above = log_erfc(20.0);
    assert!((below - above).abs() < 1e-4, "{below} {above}");
    assert!(log_erfc(100.0).is_finite());
}

#[test]
fn signed_log_sums_alternating_terms() {
    let v = |x: f64| SignedLog {
        negative: x < 0.0,
        log_abs: x.abs().ln(),
    };
    let s = v(5.0).plus(v(-3.0)).plus(v(0.5));
    assert!(!s.negative);
    assert!((s.log_abs.exp() - 2.5).abs() < 1e-12);
    let z = v(2.0).plus(v(-2.0));
    assert_eq!(z, SignedLog::ZERO);
}

#[test]
fn normal_cdf_known_values() {
    assert!((normal_cdf(0.0) - 0.5).abs() < 1e-15);
    assert!((normal_cdf(1.959_963_984_540_054) - 0.975).abs() < 1e-12);
    assert!((log_normal_cdf(-40.0) - (-804.608_442_013_754_1)).abs() < 1e-6);
}
