//! The BERT forward pass's matmul (`confidant_bert_kernels::matmul`), whose `unsafe` call of
//! the `gemm` crate rests on `Mat::new` and the product's bounds check: views and products of
//! any shape, offset and strides (zero strides included) over slices of any length. Beyond
//! never panicking, and never reading or writing outside a slice (AddressSanitizer, which
//! `cargo fuzz` builds with, would stop on it): a view is accepted exactly when its last
//! element lies in its slice; an accepted product equals the definition exactly (small
//! integers, so f32 sums are exact) and leaves every other element of `dst` alone; a refused
//! one leaves `dst` untouched.
#![no_main]
use confidant_bert_kernels::{Mat, matmul};
use libfuzzer_sys::fuzz_target;

/// A view's parameters: slice length, offset, shape, strides.
#[derive(Clone, Copy)]
struct View {
    len: usize,
    start: usize,
    shape: (usize, usize),
    strides: (usize, usize),
}

impl View {
    fn from(b: &[u8]) -> Self {
        Self {
            len: usize::from(b[0]) % 160,
            start: usize::from(b[1]) % 24,
            shape: (usize::from(b[2]) % 10, usize::from(b[3]) % 10),
            strides: (usize::from(b[4]) % 24, usize::from(b[5]) % 24),
        }
    }

    /// Whether every element lies in the slice (an empty view always does, at any offset
    /// within the slice or just past it).
    fn fits(&self) -> bool {
        let (r, c) = self.shape;
        let (rs, cs) = self.strides;
        if self.start > self.len {
            return false;
        }
        r == 0 || c == 0 || self.start + (r - 1) * rs + (c - 1) * cs < self.len
    }

    fn at(&self, data: &[f32], i: usize, j: usize) -> f32 {
        data[self.start + i * self.strides.0 + j * self.strides.1]
    }
}

/// Small integers: every product and sum of up to 9 of them is exact in f32.
fn values(len: usize, seed: u8) -> Vec<f32> {
    (0..len)
        .map(|i| f32::from(((i as u8).wrapping_mul(7).wrapping_add(seed)) % 7) - 3.0)
        .collect()
}

fuzz_target!(|data: &[u8]| {
    if data.len() < 16 {
        return;
    }
    let (lv, rv) = (View::from(&data[0..6]), View::from(&data[6..12]));
    let lhs_buf = values(lv.len, data[14]);
    let rhs_buf = values(rv.len, data[15]);
    let lhs = Mat::new(&lhs_buf, lv.start, lv.shape, lv.strides);
    let rhs = Mat::new(&rhs_buf, rv.start, rv.shape, rv.strides);
    assert_eq!(
        lhs.is_ok(),
        lv.fits(),
        "lhs view accepted or refused wrongly"
    );
    assert_eq!(
        rhs.is_ok(),
        rv.fits(),
        "rhs view accepted or refused wrongly"
    );
    let (Ok(lhs), Ok(rhs)) = (lhs, rhs) else {
        return;
    };
    let (m, k) = lv.shape;
    let (k2, n) = rv.shape;
    let dst_rs = usize::from(data[12]) % 16;
    let dst_len = usize::from(data[13]) % 120;
    let accumulate = data[14] & 1 == 1;
    let threads = 1 + usize::from(data[15] & 1);
    let before = values(dst_len, data[13]);
    let mut dst = before.clone();
    // The contract: a row stride of at least n (even for no rows), the last element within.
    let product_fits =
        k == k2 && dst_rs >= n && (m == 0 || n == 0 || (m - 1) * dst_rs + (n - 1) < dst_len);
    match matmul(&mut dst, dst_rs, accumulate, lhs, rhs, threads) {
        Err(_) => {
            assert!(!product_fits, "a product that fits was refused");
            assert_eq!(dst, before, "a refused product changed dst");
        }
        Ok(()) => {
            assert!(product_fits, "a product that does not fit was accepted");
            for (idx, (&got, &was)) in dst.iter().zip(&before).enumerate() {
                // With no row stride no element is in the product (n is 0).
                let (i, j) = idx
                    .checked_div(dst_rs)
                    .zip(idx.checked_rem(dst_rs))
                    .unwrap_or((usize::MAX, usize::MAX));
                if i < m && j < n {
                    let dot: f32 = (0..k)
                        .map(|l| lv.at(&lhs_buf, i, l) * rv.at(&rhs_buf, l, j))
                        .sum();
                    let want = if accumulate { was + dot } else { dot };
                    assert_eq!(got, want, "dst({i}, {j})");
                } else {
                    assert_eq!(got, was, "dst[{idx}] outside the product changed");
                }
            }
        }
    }
});
