use super::*;

#[test]
fn seeded_generators_repeat_and_os_generators_differ() {
    let mut a = ChaChaDpRng::dangerous_from_seed([7; 32]);
    let mut b = ChaChaDpRng::dangerous_from_seed([7; 32]);
    assert_eq!(a.next_u64(), b.next_u64());
    let mut c = ChaChaDpRng::from_os().unwrap();
    let mut d = ChaChaDpRng::from_os().unwrap();
    assert_ne!(c.next_u64(), d.next_u64());
}

#[test]
fn fork_differs_from_parent() {
    let mut a = ChaChaDpRng::dangerous_from_seed([1; 32]);
    let mut f = a.fork();
    assert_ne!(a.next_u64(), f.next_u64());
}

#[test]
fn fill_is_roughly_balanced() {
    let mut a = ChaChaDpRng::dangerous_from_seed([3; 32]);
    let mut buf = vec![0u64; 4096];
    a.fill_u64(&mut buf);
    let ones: u32 = buf.iter().map(|w| w.count_ones()).sum();
    let n = 4096.0 * 64.0;
    // Binomial(n, 1/2): 6 standard deviations.
    assert!((f64::from(ones) - n / 2.0).abs() < 6.0 * (n / 4.0_f64).sqrt());
}
