//! ChaCha20 as a counter-based generator: the CPU reference of `kernels/chacha20.cuh` and
//! `kernels/chacha_stream.cuh`.
//!
//! D. J. Bernstein's original layout: words 0–3 the constants, 4–11 the 256-bit key, 12–13 a
//! 64-bit block counter and 14–15 a 64-bit nonce, which we use as a stream id. Word `j` of
//! stream `(key, nonce)` is word `j mod 16` of block `j div 16`; 64-bit words are two
//! consecutive 32-bit words, the first in the low half. This is exactly
//! `rand_chacha::ChaCha20Rng::from_seed(key)` after `set_stream(nonce)` (tested), so the
//! device stream is pinned to an independent implementation. Not cuRAND or Philox: DP noise
//! needs a CSPRNG, because whoever predicts the noise subtracts it.
//!
//! Experimental with [`super::noise`], its only user (feature `experimental`).

use zeroize::{Zeroize, Zeroizing};

use crate::privacy::rng::DpRng;
use crate::privacy::{PrivacyError, error::Result};

/// 32-bit words per ChaCha20 block.
pub const BLOCK_WORDS: usize = 16;

const CONSTANTS: [u32; 4] = [0x6170_7865, 0x3320_646e, 0x7962_2d32, 0x6b20_6574];

/// A 256-bit ChaCha20 key for DP noise, drawn from the OS inside the TEE. No `Debug`, `Clone`
/// or `Serialize`; zeroized on drop.
pub struct NoiseKey {
    bytes: Zeroizing<[u8; 32]>,
}

impl NoiseKey {
    /// A key from the operating system's CSPRNG (getrandom).
    pub fn from_os() -> Result<Self> {
        let mut bytes = Zeroizing::new([0u8; 32]);
        getrandom::fill(bytes.as_mut_slice()).map_err(|e| PrivacyError::Entropy {
            reason: e.to_string(),
        })?;
        Ok(Self { bytes })
    }

    /// A caller-chosen key: reproducible, so only for tests and benches. Noise from a known
    /// key gives no privacy.
    pub fn dangerous_from_bytes(bytes: [u8; 32]) -> Self {
        Self {
            bytes: Zeroizing::new(bytes),
        }
    }

    /// The key bytes.
    pub fn secret_bytes(&self) -> &[u8; 32] {
        &self.bytes
    }

    /// The eight little-endian key words (state words 4–11).
    pub fn words(&self) -> Zeroizing<[u32; 8]> {
        let mut w = Zeroizing::new([0u32; 8]);
        for (o, c) in w.iter_mut().zip(self.bytes.chunks_exact(4)) {
            *o = u32::from_le_bytes([c[0], c[1], c[2], c[3]]);
        }
        w
    }

    /// The key as the kernels take it: four `u64`, word `2i` in the low half of element `i`.
    pub fn kernel_words(&self) -> Zeroizing<[u64; 4]> {
        let mut k = Zeroizing::new([0u64; 4]);
        for (o, c) in k.iter_mut().zip(self.bytes.chunks_exact(8)) {
            *o = u64::from_le_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]]);
        }
        k
    }
}

#[inline(always)]
fn quarter_round(x: &mut [u32; 16], a: usize, b: usize, c: usize, d: usize) {
    x[a] = x[a].wrapping_add(x[b]);
    x[d] = (x[d] ^ x[a]).rotate_left(16);
    x[c] = x[c].wrapping_add(x[d]);
    x[b] = (x[b] ^ x[c]).rotate_left(12);
    x[a] = x[a].wrapping_add(x[b]);
    x[d] = (x[d] ^ x[a]).rotate_left(8);
    x[c] = x[c].wrapping_add(x[d]);
    x[b] = (x[b] ^ x[c]).rotate_left(7);
}

/// One ChaCha20 block (20 rounds) of `(key, counter, nonce)`.
pub fn chacha20_block(key: &[u32; 8], counter: u64, nonce: u64) -> [u32; 16] {
    let mut input = [0u32; 16];
    input[..4].copy_from_slice(&CONSTANTS);
    input[4..12].copy_from_slice(key);
    input[12] = counter as u32;
    input[13] = (counter >> 32) as u32;
    input[14] = nonce as u32;
    input[15] = (nonce >> 32) as u32;
    let mut x = input;
    for _ in 0..10 {
        quarter_round(&mut x, 0, 4, 8, 12);
        quarter_round(&mut x, 1, 5, 9, 13);
        quarter_round(&mut x, 2, 6, 10, 14);
        quarter_round(&mut x, 3, 7, 11, 15);
        quarter_round(&mut x, 0, 5, 10, 15);
        quarter_round(&mut x, 1, 6, 11, 12);
        quarter_round(&mut x, 2, 7, 8, 13);
        quarter_round(&mut x, 3, 4, 9, 14);
    }
    for (o, i) in x.iter_mut().zip(input.iter()) {
        *o = o.wrapping_add(*i);
    }
    input[4..12].zeroize();
    x
}

/// Words `16·counter0 ..` of stream `(key, nonce)` into `out`: the reference of the
/// `chacha20_fill` kernel.
pub fn fill_words(key: &NoiseKey, nonce: u64, counter0: u64, out: &mut [u32]) {
    let k = key.words();
    for (b, chunk) in out.chunks_mut(BLOCK_WORDS).enumerate() {
        let mut block = chacha20_block(&k, counter0.wrapping_add(b as u64), nonce);
        chunk.copy_from_slice(&block[..chunk.len()]);
        block.zeroize();
    }
}

/// A sequential reader of one ChaCha20 stream, the twin of `ChaChaStream` in
/// `kernels/chacha_stream.cuh`. As a [`DpRng`] it feeds the existing Rust samplers exactly the
/// words the device samplers read. No `Debug` or `Clone`: its state is the noise.
pub struct ChaChaStream {
    key: Zeroizing<[u32; 8]>,
    nonce: u64,
    next_block: u64,
    pos: usize,
    buf: Zeroizing<[u32; 16]>,
}

impl ChaChaStream {
    /// Stream `(key, nonce)` from block 0.
    pub fn new(key: &NoiseKey, nonce: u64) -> Self {
        Self::at_block(key, nonce, 0)
    }

    /// Stream `(key, nonce)` from block `block`.
    pub fn at_block(key: &NoiseKey, nonce: u64, block: u64) -> Self {
        Self {
            key: key.words(),
            nonce,
            next_block: block,
            pos: BLOCK_WORDS / 2,
            buf: Zeroizing::new([0; 16]),
        }
    }
}

impl DpRng for ChaChaStream {
    fn next_u64(&mut self) -> u64 {
        if self.pos >= BLOCK_WORDS / 2 {
            *self.buf = chacha20_block(&self.key, self.next_block, self.nonce);
            self.next_block = self.next_block.wrapping_add(1);
            self.pos = 0;
        }
        let i = 2 * self.pos;
        self.pos += 1;
        u64::from(self.buf[i]) | (u64::from(self.buf[i + 1]) << 32)
    }
}

#[cfg(test)]
mod tests;
