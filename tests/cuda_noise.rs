//! The experimental DP-noise kernels (`kernels/noise.cu`, `gpu::noise`) against their CPU
//! references (features `cuda` and `experimental`; each test prints a notice and passes when
//! no device answers, and fails instead under `CONFIDANT_EXPECT_GPU=1`).
#![cfg(all(feature = "cuda", feature = "experimental"))]

use candle_core::{Device, Tensor};
use confidant::gpu::chacha::{self, NoiseKey};
use confidant::gpu::noise;
use confidant::privacy::mechanism::NoisyArgmax;
use confidant::privacy::sampler::fast::FastDiscreteLaplace;
use confidant::privacy::sampler::{Rational, discrete_gaussian_sigma2};

mod cuda_common;
use cuda_common::device;

fn key(seed: u8) -> NoiseKey {
    NoiseKey::dangerous_from_bytes(std::array::from_fn(|i| seed ^ (i as u8).wrapping_mul(77)))
}

#[test]
fn chacha20_fill_equals_the_reference() {
    let Some((_, dev)) = device() else { return };
    let stream = dev.cuda_stream();
    for (n, nonce, counter0) in [
        (1usize, 0u64, 0u64),
        (16, 1, 0),
        (1000, 7, 3),
        (1 << 20, u64::MAX, 1 << 33),
    ] {
        let k = key(n as u8);
        let mut out = stream.alloc_zeros::<u32>(n).unwrap();
        noise::chacha20_fill_on_device(&dev, &mut out, &k, nonce, counter0).unwrap();
        let got = stream.clone_dtoh(&out).unwrap();
        let mut want = vec![0u32; n];
        chacha::fill_words(&k, nonce, counter0, &mut want);
        assert_eq!(got, want, "n {n}");
    }
}

#[test]
fn grid_laplace_equals_the_reference() {
    let Some((_, dev)) = device() else { return };
    for (scale, n) in [(0.25, 5000usize), (3.7, 1001), (1048576.0, 4096)] {
        let sampler = FastDiscreteLaplace::new(scale).unwrap();
        let k = key(3);
        let out = noise::grid_laplace_on_device(&dev, &k, 42, &sampler, n).unwrap();
        let got = dev.cuda_stream().clone_dtoh(&out).unwrap();
        let mut want = vec![0i64; n];
        noise::grid_laplace_reference(&k, 42, &sampler, &mut want);
        assert_eq!(got, want, "scale {scale}");
    }
}

#[test]
fn exact_samplers_equal_the_reference() {
    let Some((_, dev)) = device() else { return };
    let k = key(5);
    for sigma in [0.6, 4.25, 1000.0] {
        let sigma2 = discrete_gaussian_sigma2(sigma).unwrap();
        let out = noise::discrete_gaussian_on_device(&dev, &k, 9, sigma2, 3000).unwrap();
        let got = dev.cuda_stream().clone_dtoh(&out).unwrap();
        let mut want = vec![0i64; 3000];
        noise::discrete_gaussian_reference(&k, 9, sigma2, &mut want).unwrap();
        assert_eq!(got, want, "sigma {sigma}");
    }
    for (t, s) in [(1u128, 1u128), (13, 4), (1 << 20, 1)] {
        let scale = Rational::new(t, s).unwrap();
        let out = noise::discrete_laplace_on_device(&dev, &k, 1, scale, 3000).unwrap();
        let got = dev.cuda_stream().clone_dtoh(&out).unwrap();
        let mut want = vec![0i64; 3000];
        noise::discrete_laplace_reference(&k, 1, scale, &mut want).unwrap();
        assert_eq!(got, want, "scale {t}/{s}");
    }
}

#[test]
fn noisy_argmax_op_equals_the_reference() {
    let Some((cuda, _)) = device() else { return };
    let (rows, classes) = (513, 10);
    let scores: Vec<f32> = (0..rows * classes)
        .map(|i| ((i * 7919) % 101) as f32 / 17.0)
        .collect();
    for (eps, sens, mono) in [(1.0, 1.0, false), (0.05, 0.5, true), (20.0, 0.01, false)] {
        let m = NoisyArgmax::new(eps, sens, mono).unwrap();
        let k = key(7);
        let on_gpu = Tensor::from_vec(scores.clone(), (rows, classes), &cuda).unwrap();
        let got = noise::noisy_argmax(&on_gpu, &k, 100, &m)
            .unwrap()
            .to_vec1::<u32>()
            .unwrap();
        let want = noise::noisy_argmax_reference(&k, 100, &m, &scores, classes).unwrap();
        assert_eq!(got, want, "eps {eps}");
        let on_cpu = Tensor::from_vec(scores.clone(), (rows, classes), &Device::Cpu).unwrap();
        let cpu = noise::noisy_argmax(&on_cpu, &k, 100, &m)
            .unwrap()
            .to_vec1::<u32>()
            .unwrap();
        assert_eq!(cpu, want);
    }
    // A non-finite score is an error, not a label.
    let mut bad = scores.clone();
    bad[3] = f32::NAN;
    let t = Tensor::from_vec(bad, (rows, classes), &cuda).unwrap();
    let m = NoisyArgmax::new(1.0, 1.0, false).unwrap();
    assert!(noise::noisy_argmax(&t, &key(1), 0, &m).is_err());
}

#[test]
fn laplace_argmax_op_equals_the_reference() {
    let Some((cuda, dev)) = device() else { return };
    let (rows, classes) = (1000, 7);
    let scores: Vec<f32> = (0..rows * classes)
        .map(|i| ((i * 104_729) % 89) as f32 / 7.0)
        .collect();
    for eps in [0.05, 1.0, 50.0] {
        let m = confidant::privacy::mechanism::LaplaceScores::new(eps, 1.0, classes)
            .unwrap()
            .fast()
            .unwrap();
        let k = key(9);
        let (want, want_noisy) =
            noise::laplace_argmax_reference(&k, 5, &m, &scores, classes).unwrap();
        let t = Tensor::from_vec(scores.clone(), (rows, classes), &cuda).unwrap();
        let got = noise::laplace_argmax(&t, &k, 5, &m)
            .unwrap()
            .to_vec1::<u32>()
            .unwrap();
        assert_eq!(got, want, "eps {eps}");
        let s = dev.cuda_stream().clone_htod(&scores[..]).unwrap();
        let (_, noisy) = noise::laplace_argmax_on_device(&dev, &s, classes, &k, 5, &m).unwrap();
        assert_eq!(dev.cuda_stream().clone_dtoh(&noisy).unwrap(), want_noisy);
    }
}

#[test]
fn bench_helper_reports_throughput() {
    let Some((_, dev)) = device() else { return };
    let (noise_gbps, copy_gbps) = noise::bench_noise_gbps(&dev, 256 << 20).unwrap();
    eprintln!("BENCH chacha20_fill {noise_gbps:.1} GB/s, dtod copy {copy_gbps:.1} GB/s");
    assert!(noise_gbps > 0.0 && copy_gbps > 0.0);
}
