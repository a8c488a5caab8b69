//! Each kernel against an independent scalar reference: libm in f64 for `exp` and GELU,
//! candle's own ops for the softmax and the layer norm, a naive triple loop for the matmul;
//! and the dispatched build (AVX-512 or AVX2 where the CPU has it) against the portable one.

#![allow(clippy::unwrap_used)]

use candle_core::{Device, Tensor};

use super::*;

/// Deterministic values in `[-scale, scale)`.
fn values(n: usize, seed: u64, scale: f32) -> Vec<f32> {
    let mut s = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..n)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            ((s >> 40) as f32 / (1u64 << 24) as f32 * 2.0 - 1.0) * scale
        })
        .collect()
}

/// A candle result's values, flattened.
fn flat(t: candle_core::Result<Tensor>) -> Vec<f32> {
    t.unwrap().flatten_all().unwrap().to_vec1::<f32>().unwrap()
}

fn grid(lo: f32, hi: f32, n: usize) -> Vec<f32> {
    (0..=n)
        .map(|i| lo + (hi - lo) * i as f32 / n as f32)
        .collect()
}

fn gelu_ref(x: f32) -> f64 {
    let x = f64::from(x);
    0.5 * x * libm::erfc(-x / std::f64::consts::SQRT_2)
}

#[test]
fn exp_is_within_two_ulp_and_zero_below_the_normal_range() {
    for x in grid(-87.3, 88.0, 400_000) {
        let want = f64::from(x).exp();
        let got = f64::from(exp(x));
        assert!(
            (got - want).abs() <= 2.0 * f64::from(f32::EPSILON) * want,
            "exp({x}) = {got}, want {want}"
        );
    }
    for x in [-87.4, -100.0, -1e10, f32::MIN, f32::NEG_INFINITY] {
        assert_eq!(exp(x), 0.0, "exp({x})");
    }
    assert!(exp(f32::NAN).is_nan());
}

#[test]
fn gelu_is_within_4e7_of_the_exact_erf_gelu() {
    let mut xs = grid(-12.0, 12.0, 600_000);
    xs.extend(grid(-1.5, 1.5, 100_000));
    for x in xs {
        let (got, want) = (f64::from(gelu(x)), gelu_ref(x));
        assert!((got - want).abs() <= 4e-7, "gelu({x}) = {got}, want {want}");
        // In the negative tail 1 + erf is computed as erfc, without cancellation.
        if (-8.0..-1.5).contains(&x) {
            assert!(
                ((got - want) / want).abs() <= 1e-5,
                "gelu({x}) = {got}, want {want}"
            );
        }
    }
    assert!(gelu(f32::NAN).is_nan());
    assert_eq!(gelu(f32::INFINITY), f32::INFINITY);
    assert_eq!(gelu(-1e30), 0.0);
}

#[test]
fn bias_gelu_adds_the_bias_row_by_row_and_matches_the_portable_build() {
    let (rows, width) = (5, 37);
    let x = values(rows * width, 1, 6.0);
    let bias = values(width, 2, 1.0);
    let mut fast = x.clone();
    bias_gelu(&mut fast, width, &bias);
    let mut portable = x.clone();
    bias_gelu_portable(&mut portable, width, &bias);
    for (i, (f, p)) in fast.iter().zip(&portable).enumerate() {
        let want = gelu_ref(x[i] + bias[i % width]);
        assert!((f64::from(*f) - want).abs() <= 4e-7, "{i}: {f} vs {want}");
        assert!((f - p).abs() <= 1e-6, "{i}: {f} vs portable {p}");
    }
}

#[test]
fn masked_softmax_matches_candle_and_gives_padding_nothing() {
    let (rows, width) = (6, 45);
    let x = values(rows * width, 3, 8.0);
    let mask: Vec<f32> = (0..width).map(|j| f32::from(j < 40)).collect();
    let mask_bias: Vec<f32> = mask.iter().map(|m| (1.0 - m) * f32::MIN).collect();
    let mut fast = x.clone();
    masked_softmax(&mut fast, width, &mask_bias);
    let mut portable = x.clone();
    masked_softmax_portable(&mut portable, width, &mask_bias);
    let dev = Device::Cpu;
    let t = Tensor::from_vec(x, (rows, width), &dev).unwrap();
    let b = Tensor::from_vec(mask_bias, width, &dev).unwrap();
    let want = flat(candle_nn::ops::softmax_last_dim(
        &t.broadcast_add(&b).unwrap(),
    ));
    for (i, ((f, p), w)) in fast.iter().zip(&portable).zip(&want).enumerate() {
        assert!((f - w).abs() <= 1e-6, "{i}: {f} vs candle {w}");
        assert!((f - p).abs() <= 1e-7, "{i}: {f} vs portable {p}");
        if i % width >= 40 {
            assert_eq!(*f, 0.0, "padding key {i}");
        }
    }
    for row in fast.chunks(width) {
        assert!((row.iter().sum::<f32>() - 1.0).abs() < 1e-5);
    }
}

#[test]
fn bias_layer_norm_matches_candle() {
    let (rows, width) = (7, 50);
    let x = values(rows * width, 4, 3.0);
    let bias = values(width, 5, 1.0);
    let gamma = values(width, 6, 2.0);
    let beta = values(width, 7, 1.0);
    let eps = 1e-12;
    let mut fast = x.clone();
    bias_layer_norm(&mut fast, width, &bias, &gamma, &beta, eps);
    let mut portable = x.clone();
    bias_layer_norm_portable(&mut portable, width, &bias, &gamma, &beta, eps);
    let dev = Device::Cpu;
    let t = Tensor::from_vec(x.clone(), (rows, width), &dev).unwrap();
    let tb = Tensor::from_vec(bias, width, &dev).unwrap();
    let g = Tensor::from_vec(gamma.clone(), width, &dev).unwrap();
    let b = Tensor::from_vec(beta.clone(), width, &dev).unwrap();
    let want = flat(candle_nn::ops::layer_norm(
        &t.broadcast_add(&tb).unwrap(),
        &g,
        &b,
        eps,
    ));
    for (i, ((f, p), w)) in fast.iter().zip(&portable).zip(&want).enumerate() {
        assert!((f - w).abs() <= 2e-6, "{i}: {f} vs candle {w}");
        assert!((f - p).abs() <= 1e-6, "{i}: {f} vs portable {p}");
    }
    // No bias: plain layer norm.
    let mut plain = x.clone();
    bias_layer_norm(&mut plain, width, &[], &gamma, &beta, eps);
    let want = flat(candle_nn::ops::layer_norm(&t, &g, &b, eps));
    for (f, w) in plain.iter().zip(&want) {
        assert!((f - w).abs() <= 2e-6);
    }
}

/// `dst (+)= lhs · rhs` by the definition, in f64.
#[allow(clippy::too_many_arguments)]
fn naive(
    dst: &mut [f32],
    dst_rs: usize,
    accumulate: bool,
    (m, k, n): (usize, usize, usize),
    lhs: &[f32],
    (lrs, lcs): (usize, usize),
    rhs: &[f32],
    (rrs, rcs): (usize, usize),
) {
    for i in 0..m {
        for j in 0..n {
            let dot: f64 = (0..k)
                .map(|l| f64::from(lhs[i * lrs + l * lcs]) * f64::from(rhs[l * rrs + j * rcs]))
                .sum();
            let d = &mut dst[i * dst_rs + j];
            *d = if accumulate {
                (f64::from(*d) + dot) as f32
            } else {
                dot as f32
            };
        }
    }
}

#[test]
fn matmul_matches_the_definition_for_strided_transposed_and_accumulated_products() {
    let (m, k, n) = (33, 20, 17);
    let a = values(2 * m * k + 5, 8, 1.0);
    let b = values(k * n * 3, 9, 1.0);
    // lhs: rows m, stride 2k (every other row block), offset 5; rhs: transposed (k × n
    // read column-major from an n × 3k buffer).
    let lhs = Mat::new(&a, 5, (m, k), (2 * k, 1)).unwrap();
    let rhs = Mat::new(&b, 0, (k, n), (1, 3 * k)).unwrap();
    for (accumulate, threads) in [(false, 1), (true, 1), (false, 2), (true, 2)] {
        let dst_rs = n + 3;
        let init = values(m * dst_rs, 10, 1.0);
        let mut got = init.clone();
        matmul(&mut got, dst_rs, accumulate, lhs, rhs, threads).unwrap();
        let mut want = init.clone();
        naive(
            &mut want,
            dst_rs,
            accumulate,
            (m, k, n),
            &a[5..],
            (2 * k, 1),
            &b,
            (1, 3 * k),
        );
        for (i, (g, w)) in got.iter().zip(&want).enumerate() {
            assert!((g - w).abs() <= 1e-5, "{i}: {g} vs {w}");
        }
        // The padding columns of each dst row are untouched.
        for i in 0..m {
            assert_eq!(got[i * dst_rs + n..][..3], init[i * dst_rs + n..][..3]);
        }
    }
}

#[test]
fn matmul_refuses_views_and_products_outside_their_slices() {
    let a = vec![0f32; 12];
    assert!(Mat::new(&a, 0, (3, 4), (4, 1)).is_ok());
    assert!(Mat::new(&a, 1, (3, 4), (4, 1)).is_err());
    assert!(Mat::new(&a, 0, (4, 3), (1, 4)).is_ok());
    assert!(Mat::new(&a, 0, (4, 3), (1, 5)).is_err());
    assert!(Mat::new(&a, 13, (0, 0), (1, 1)).is_err());
    assert!(Mat::new(&a, 0, (2, 2), (usize::MAX, 1)).is_err());
    let lhs = Mat::rows(&a, 3, 4).unwrap();
    let rhs = Mat::rows(&a, 4, 3).unwrap();
    let mut dst = vec![0f32; 9];
    assert!(matmul(&mut dst, 3, false, lhs, rhs, 1).is_ok());
    assert!(matmul(&mut dst[1..], 3, false, lhs, rhs, 1).is_err());
    assert!(matmul(&mut dst, 2, false, lhs, rhs, 1).is_err());
    assert!(matmul(&mut dst, 3, false, lhs, lhs, 1).is_err());
}
