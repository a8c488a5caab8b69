//! Sampler throughput: exact and fast discrete Laplace, discrete Gaussian, ChaCha20 words.
// criterion_group! generates an undocumented function.
#![allow(missing_docs)]

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use std::hint::black_box;

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

criterion_group!(benches, samplers);
criterion_main!(benches);
