//! Randomness for DP noise: ChaCha20 seeded from the OS, behind the [`DpRng`] trait so tests
//! can inject a fixed seed and mechanisms never reach for a global generator.

use rand_chacha::ChaCha20Rng;
use rand_core::{RngCore, SeedableRng};
use zeroize::Zeroizing;

use super::error::{PrivacyError, Result};

/// A source of uniform 64-bit words for DP noise. Implementations must be cryptographically
/// secure in production: the privacy proofs assume the words are independent and uniform, and
/// an attacker who can predict them can subtract the noise.
pub trait DpRng {
    /// One uniform 64-bit word.
    fn next_u64(&mut self) -> u64;

    /// Fills `out` with uniform words. Override where a bulk path is faster.
    fn fill_u64(&mut self, out: &mut [u64]) {
        for o in out {
            *o = self.next_u64();
        }
    }
}

impl<R: DpRng + ?Sized> DpRng for &mut R {
    fn next_u64(&mut self) -> u64 {
        (**self).next_u64()
    }
    fn fill_u64(&mut self, out: &mut [u64]) {
        (**self).fill_u64(out);
    }
}

/// ChaCha20 keyed from the OS entropy source (getrandom). No `Debug` or `Clone`: its state is
/// the noise, and a copy would replay it.
pub struct ChaChaDpRng {
    inner: ChaCha20Rng,
}

impl ChaChaDpRng {
    /// A generator keyed with 32 bytes from the operating system.
    pub fn from_os() -> Result<Self> {
        let mut seed = Zeroizing::new([0u8; 32]);
        getrandom::fill(seed.as_mut_slice()).map_err(|e| PrivacyError::Entropy {
            reason: e.to_string(),
        })?;
        Ok(Self {
            inner: ChaCha20Rng::from_seed(*seed),
        })
    }

    /// A generator with a caller-chosen key: reproducible, so only for tests and benches.
    /// Noise from a known seed gives no privacy.
    pub fn dangerous_from_seed(seed: [u8; 32]) -> Self {
        Self {
            inner: ChaCha20Rng::from_seed(seed),
        }
    }

    /// An independent generator keyed from this one's output, for parallel workers.
    pub fn fork(&mut self) -> Self {
        let mut seed = Zeroizing::new([0u8; 32]);
        self.inner.fill_bytes(seed.as_mut_slice());
        Self {
            inner: ChaCha20Rng::from_seed(*seed),
        }
    }
}

impl DpRng for ChaChaDpRng {
    #[inline]
    fn next_u64(&mut self) -> u64 {
        self.inner.next_u64()
    }
}

#[cfg(test)]
mod tests;
