//! Sampler throughput: the fast grid-Laplace path against two baselines measured in the same
//! run (raw ChaCha20 words, and an unsafe float Laplace on the same generator, which is what
//! numpy's `laplace` computes), then the exact samplers; then the accountant at long horizons
//! (one PLD ε, with and without the tilted window and at δ = 1e-12, and a noise-multiplier
//! calibration, at 10⁴ steps).
// criterion_group! generates an undocumented function.
#![allow(missing_docs)]

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use rand_chacha::ChaCha20Rng;
use rand_core::{RngCore, SeedableRng};
use rand_distr::{Distribution, Exp1};
use std::hint::black_box;

use confidant::privacy::accountant::{self, AccountantKind, SubsampledGaussian, pld};
use confidant::privacy::mechanism::LaplaceScores;
use confidant::privacy::rng::{ChaChaDpRng, DpRng};
use confidant::privacy::sampler::fast::FastDiscreteLaplace;
use confidant::privacy::sampler::{self, Rational};

const BATCH: usize = 1 << 16;

fn samplers(c: &mut Criterion) {
    let mut rng = ChaChaDpRng::dangerous_from_seed([9; 32]);
    let mut group = c.benchmark_group("privacy_sampler");
    group.throughput(Throughput::Elements(BATCH as u64));

    let mut words = vec![0u64; BATCH];
    group.bench_function("chacha20_u64", |b| {
        b.iter(|| {
            rng.fill_u64(&mut words);
            black_box(&words);
        })
    });

    // The unsafe baseline: a float Laplace (Exp(1) by ziggurat, a sign, a scale) on the same
    // ChaCha20 stream. Not private (Mironov 2012); here only for its speed.
    let mut float_rng = ChaCha20Rng::from_seed([9; 32]);
    let mut floats = vec![0f64; BATCH];
    group.bench_function("float_laplace_unsafe_baseline", |b| {
        b.iter(|| {
            for x in floats.iter_mut() {
                let e: f64 = Exp1.sample(&mut float_rng);
                let sign = if float_rng.next_u32() & 1 == 1 {
                    -1.0
                } else {
                    1.0
                };
                *x = sign * e * 1024.0;
            }
            black_box(&floats);
        })
    });

    let mut out = vec![0i64; BATCH];
    for scale in [1.0_f64, 1024.0, 1_048_576.0] {
        let fast = FastDiscreteLaplace::new(scale).expect("valid scale");
        group.bench_function(format!("fast_grid_laplace_scale_{scale}"), |b| {
            b.iter(|| {
                fast.fill(&mut rng, &mut out);
                black_box(&out);
            })
        });
    }

    // The whole mechanism: rounding 2^16 scores to the grid, noise, scaling back.
    let mech = LaplaceScores::new(1.0, 1.0, 1)
        .and_then(|m| m.fast())
        .expect("valid mechanism");
    let scores: Vec<f64> = (0..BATCH).map(|i| (i as f64 * 0.618).fract()).collect();
    let mut noisy = scores.clone();
    group.bench_function("fast_laplace_scores_release_in_place", |b| {
        b.iter(|| {
            noisy.copy_from_slice(&scores);
            mech.release_in_place(&mut rng, &mut noisy)
                .expect("release");
            black_box(&noisy);
        })
    });
    group.finish();

    let mut group = c.benchmark_group("privacy_sampler_exact");
    group.throughput(Throughput::Elements(1024));
    let scale = Rational::new(1 << 20, 1).expect("valid scale");
    group.bench_function("exact_discrete_laplace_scale_2^20", |b| {
        b.iter(|| {
            for _ in 0..1024 {
                black_box(sampler::discrete_laplace(&mut rng, scale).expect("sample"));
            }
        })
    });
    let s2 = sampler::discrete_gaussian_sigma2(4096.0).expect("valid sigma");
    group.bench_function("exact_discrete_gaussian_sigma_4096", |b| {
        b.iter(|| {
            for _ in 0..1024 {
                black_box(sampler::discrete_gaussian(&mut rng, s2).expect("sample"));
            }
        })
    });
    group.finish();
}

fn accountant_long_horizon(c: &mut Criterion) {
    let mut group = c.benchmark_group("privacy_accountant");
    group.sample_size(10);
    group.warm_up_time(std::time::Duration::from_secs(1));
    for (q, sigma) in [(0.05, 0.8), (0.001, 0.6), (0.2, 0.6)] {
        let m = SubsampledGaussian {
            sample_rate: q,
            noise_multiplier: sigma,
            steps: 10_000,
        };
        group.bench_function(
            format!("pld_epsilon_q{q}_sigma{sigma}_T10000_delta1e-6"),
            |b| {
                b.iter(|| {
                    black_box(accountant::epsilon(&m, 1e-6, AccountantKind::Pld).expect("epsilon"))
                })
            },
        );
    }
    // The tilt's effect: the same ε composed on the whole Chernoff range, untilted (the
    // method before issue 21's second pass, with today's real FFT and exact-MGF range).
    let m = SubsampledGaussian {
        sample_rate: 0.05,
        noise_multiplier: 0.8,
        steps: 10_000,
    };
    let untilted = pld::PldOptions {
        tilt: false,
        ..pld::PldOptions::default()
    };
    group.bench_function(
        "pld_epsilon_q0.05_sigma0.8_T10000_delta1e-6_untilted",
        |b| b.iter(|| black_box(pld::epsilon(&m, 1e-6, &untilted).expect("epsilon"))),
    );
    // Small δ, refused before (the FFT's rounding bound was absolute, about 1e-9 here).
    group.bench_function("pld_epsilon_q0.05_sigma0.8_T10000_delta1e-12", |b| {
        b.iter(|| black_box(accountant::epsilon(&m, 1e-12, AccountantKind::Pld).expect("epsilon")))
    });
    group.bench_function("pld_noise_multiplier_eps2_q0.004_T10000_delta1e-6", |b| {
        b.iter(|| {
            black_box(
                accountant::noise_multiplier(2.0, 1e-6, 0.004, 10_000, AccountantKind::Pld)
                    .expect("sigma"),
            )
        })
    });
    group.bench_function("rdp_noise_multiplier_eps2_q0.004_T10000_delta1e-6", |b| {
        b.iter(|| {
            black_box(
                accountant::noise_multiplier(2.0, 1e-6, 0.004, 10_000, AccountantKind::Rdp)
                    .expect("sigma"),
            )
        })
    });
    group.finish();
}

criterion_group!(benches, samplers, accountant_long_horizon);
criterion_main!(benches);
