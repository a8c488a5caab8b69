use candle_core::{Device, Tensor};

use super::*;
use crate::privacy::sampler::discrete_gaussian_sigma2;

fn key(seed: u8) -> NoiseKey {
    NoiseKey::dangerous_from_bytes(std::array::from_fn(|i| seed ^ (i as u8).wrapping_mul(29)))
}

#[test]
fn grid_laplace_without_a_tail_is_fill_on_the_shared_stream() {
    // When no sample reaches the cap, the scheme reads exactly the words `fill` reads from
    // stream `nonce`, so the two agree; with a tail, only the tail sample's stream differs.
    let sampler = FastDiscreteLaplace::new(1024.0).unwrap();
    let k = key(1);
    let mut ours = vec![0i64; 200];
    grid_laplace_reference(&k, 5, &sampler, &mut ours);
    let mut plain = vec![0i64; 200];
    sampler.fill(&mut ChaChaStream::new(&k, 5), &mut plain);
    let cap = sampler.cap();
    let first_tail = ours
        .iter()
        .position(|x| x.abs() >= cap)
        .unwrap_or(ours.len());
    assert_eq!(ours[..first_tail], plain[..first_tail]);
    assert!(
        first_tail > 50,
        "a tail this early is unlikely: {first_tail}"
    );
}

#[test]
fn grid_laplace_tails_read_their_own_stream() {
    // At scale 1/4 about 3.6 % of samples take the cold path: exercise it.
    let sampler = FastDiscreteLaplace::new(0.25).unwrap();
    let k = key(2);
    let mut out = vec![0i64; 2000];
    grid_laplace_reference(&k, 0, &sampler, &mut out);
    assert!(
        out.iter().any(|x| x.abs() >= sampler.cap()),
        "no tail sample"
    );
    let mut again = vec![0i64; 2000];
    grid_laplace_reference(&k, 0, &sampler, &mut again);
    assert_eq!(out, again, "deterministic for a key");
    let mut other = vec![0i64; 2000];
    grid_laplace_reference(&key(3), 0, &sampler, &mut other);
    assert_ne!(out, other);
}

#[test]
fn exact_samplers_run_on_substreams() {
    let k = key(4);
    let sigma2 = discrete_gaussian_sigma2(3.5).unwrap();
    let mut g = vec![0i64; 4000];
    discrete_gaussian_reference(&k, 100, sigma2, &mut g).unwrap();
    // Sample i is the sampler on stream 100 + i.
    let mut rng = ChaChaStream::new(&k, 107);
    assert_eq!(g[7], sampler::discrete_gaussian(&mut rng, sigma2).unwrap());
    let mean = g.iter().sum::<i64>() as f64 / g.len() as f64;
    let var = g.iter().map(|&x| (x as f64 - mean).powi(2)).sum::<f64>() / g.len() as f64;
    assert!(mean.abs() < 0.3, "mean {mean}");
    assert!((var - 12.25).abs() < 1.5, "variance {var}");
    let mut l = vec![0i64; 10];
    let scale = Rational::new(7, 2).unwrap();
    discrete_laplace_reference(&k, 0, scale, &mut l).unwrap();
    let mut rng = ChaChaStream::new(&k, 3);
    assert_eq!(l[3], sampler::discrete_laplace(&mut rng, scale).unwrap());
}

#[test]
fn noisy_argmax_reference_is_the_mechanism_per_row() {
    let m = NoisyArgmax::new(1.0, 1.0, false).unwrap();
    let scores: Vec<f32> = (0..60).map(|i| ((i * 37) % 11) as f32 * 0.5).collect();
    let labels = noisy_argmax_reference(&key(5), 9, &m, &scores, 6).unwrap();
    assert_eq!(labels.len(), 10);
    for (r, row) in scores.chunks(6).enumerate() {
        let row64: Vec<f64> = row.iter().map(|&v| f64::from(v)).collect();
        let mut rng = ChaChaStream::new(&key(5), 9 + r as u64);
        assert_eq!(labels[r] as usize, m.release(&mut rng, &row64).unwrap());
    }
    // A huge ε makes it the plain argmax.
    let sharp = NoisyArgmax::new(10.0, 1e-3, false).unwrap();
    let rows = [0.1f32, 0.9, 0.3, 5.0, 1.0, 2.0];
    assert_eq!(
        noisy_argmax_reference(&key(6), 0, &sharp, &rows, 3).unwrap(),
        vec![1, 0]
    );
}

#[test]
fn the_custom_op_on_the_cpu_is_the_reference() {
    let m = NoisyArgmax::new(0.5, 1.0, true).unwrap();
    let scores: Vec<f32> = (0..40).map(|i| (i % 7) as f32).collect();
    let t = Tensor::from_vec(scores.clone(), (8, 5), &Device::Cpu).unwrap();
    let labels = noisy_argmax(&t, &key(7), 3, &m).unwrap();
    assert_eq!(labels.dims(), &[8]);
    let want = noisy_argmax_reference(&key(7), 3, &m, &scores, 5).unwrap();
    assert_eq!(labels.to_vec1::<u32>().unwrap(), want);
    // Non-contiguous or non-f32 input is refused, not misread.
    assert!(noisy_argmax(&t.t().unwrap(), &key(7), 3, &m).is_err());
    assert!(
        noisy_argmax(
            &t.to_dtype(candle_core::DType::F64).unwrap(),
            &key(7),
            3,
            &m
        )
        .is_err()
    );
}

#[test]
fn nonce_ranges() {
    assert_eq!(nonces_used(10, false), 10);
    assert_eq!(nonces_used(10, true), 11);
}

#[test]
fn laplace_argmax_reference_is_add_grid_laplace_then_the_first_maximum() {
    use crate::privacy::mechanism::LaplaceScores;
    let m = LaplaceScores::new(1.0, 1.0, 4).unwrap().fast().unwrap();
    let scores: Vec<f32> = (0..40).map(|i| ((i * 13) % 9) as f32 * 0.25).collect();
    let (labels, noisy) = laplace_argmax_reference(&key(8), 50, &m, &scores, 4).unwrap();
    assert_eq!(labels.len(), 10);
    let grid = m.grid();
    for (r, row) in noisy.chunks(4).enumerate() {
        // Every released value is on the grid, and the label is the first maximum.
        for &x in row {
            assert_eq!(grid.from_steps(grid.to_steps(x, 0).unwrap()), x);
        }
        let max = row.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        assert_eq!(
            labels[r] as usize,
            row.iter().position(|&x| x == max).unwrap()
        );
    }
    // The CPU custom op is the reference.
    let t = Tensor::from_vec(scores.clone(), (10, 4), &Device::Cpu).unwrap();
    let op = laplace_argmax(&t, &key(8), 50, &m).unwrap();
    assert_eq!(op.to_vec1::<u32>().unwrap(), labels);
    // Without tails, the noise is grid_laplace's on the same stream.
    let mut z = vec![0i64; 40];
    grid_laplace_reference(&key(8), 50, m.sampler(), &mut z);
    for (i, (&x, &y)) in scores.iter().zip(&noisy).enumerate() {
        let n = grid.to_steps(f64::from(x), i).unwrap();
        assert_eq!(grid.to_steps(y, i).unwrap(), n + z[i], "element {i}");
    }
}
