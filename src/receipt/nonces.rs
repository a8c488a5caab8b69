//! Ed25519 signing split in two: the costly half made ahead, while a CPU would otherwise be
//! idle; the cheap half when a group is signed.
//!
//! An Ed25519 signature of `M` by the secret scalar `a` (public key `A`) is `(R, S)` with
//! `R = r·B`, `S = r + SHA-512(R ‖ A ‖ M)·a mod ℓ`, for a secret nonce `r` used once. RFC 8032
//! derives `r` from the message (`SHA-512(prefix ‖ M)`), so all of it waits for the message;
//! but a verifier cannot tell how `r` was chosen, only that the equation holds, and the
//! fixed-base multiplication `r·B` (about 95 % of the work) does not need `M` at all. So a
//! thread of its own makes pairs `(r, R)` ahead (the **offline** half), under Linux's
//! `SCHED_IDLE` policy: it runs only on a CPU that has nothing else to run, and never takes
//! a CPU from the server (on a VM whose vCPUs share a physical core it still slows the other
//! vCPU somewhat while it runs: BENCHMARKS.md, "Receipts", session 28). Signing a group (the **online** half) then costs one SHA-512 and a
//! multiply-add mod ℓ: about 0.8 µs, against 8.9 µs for AWS-LC's whole signature on the VM of
//! BENCHMARKS.md ("Receipts", session 28). When no pair is ready (a CPU busy all the time),
//! the group is signed whole by AWS-LC, as before.
//!
//! **The nonce.** `r = SHA-512("confidant-receipt-nonce-v1" ‖ prefix ‖ n ‖ 32 random bytes)`
//! reduced mod ℓ, where `prefix` is the secret half of the key's expansion (RFC 8032's
//! `h[32..64]`, which keys its own derivation) and `n` counts the pairs made for this key.
//! The key lives as long as the process; `n` never repeats within it, so neither does `r`,
//! even if the OS's randomness failed; and `prefix` keeps `r` unpredictable to anyone without
//! the key, as RFC 8032's derivation does. Each pair is taken from the pool once (moved out
//! under its lock) and zeroed when dropped. The curve and scalar arithmetic is
//! curve25519-dalek's (constant time); nothing here is new cryptography, only Ed25519's own
//! signing equation with the nonce made before the message is known.
//!
//! **Never waiting on it.** The signer only ever *tries* the pool's lock: the thread runs at
//! the lowest priority there is, and a signer blocked behind it while it is preempted would
//! wait as long as the CPUs stay busy. A failed try signs with AWS-LC.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, TryLockError};

use curve25519_dalek::{EdwardsPoint, Scalar};
use ed25519_dalek::hazmat::ExpandedSecretKey;
use sha2::{Digest as _, Sha512};
use zeroize::Zeroize;

/// Pairs held ready: at a group a pair, enough for a burst of this many groups while the CPUs
/// are busy.
pub(crate) const POOL: usize = 512;

/// The pool is refilled once it falls below this.
const LOW: usize = POOL / 2;

/// Pairs made between two looks at the pool (about 14 µs each with curve25519-dalek, their
/// points compressed together).
const BATCH: usize = 16;

/// The domain of the nonces' derivation.
const NONCE_DOMAIN: &[u8] = b"confidant-receipt-nonce-v1";

/// A nonce `r` and its point `R = r·B`, compressed: used once, zeroed when dropped.
struct Pair {
    r: Scalar,
    big_r: [u8; 32],
}

impl Pair {
    /// A pair of zeros, left in a slot a pair was taken from.
    const ZERO: Self = Self {
        r: Scalar::ZERO,
        big_r: [0; 32],
    };
}

impl Zeroize for Pair {
    fn zeroize(&mut self) {
        self.r.zeroize();
        self.big_r.zeroize();
    }
}

impl Drop for Pair {
    fn drop(&mut self) {
        self.zeroize();
    }
}

/// The key's halves that signing needs: the secret scalar and the prefix (zeroed when
/// dropped, by `ed25519-dalek`), and the public key.
struct Key {
    expanded: ExpandedSecretKey,
    public: [u8; 32],
}

impl Key {
    /// The `n`-th nonce, with `random` mixed in.
    fn nonce(&self, n: u64, random: &[u8; 32]) -> Scalar {
        Scalar::from_hash(
            Sha512::new()
                .chain_update(NONCE_DOMAIN)
                .chain_update(self.expanded.hash_prefix)
                .chain_update(n.to_le_bytes())
                .chain_update(random),
        )
    }

    /// Nonces `first..first + count` and their points, each nonce with fresh OS randomness
    /// mixed in (without it, a nonce is still unique by its count and secret by the prefix:
    /// see the module). The points are compressed together: one field inversion for the
    /// batch instead of one each (14.1 µs a pair instead of 17.5 on this VM).
    fn pairs(&self, first: u64, count: usize) -> Vec<Pair> {
        let mut random = zeroize::Zeroizing::new([0u8; 32]);
        let nonces: zeroize::Zeroizing<Vec<Scalar>> = zeroize::Zeroizing::new(
            (first..first + count as u64)
                .map(|n| {
                    let _ = getrandom::fill(random.as_mut_slice());
                    self.nonce(n, &random)
                })
                .collect(),
        );
        let points: Vec<EdwardsPoint> = nonces.iter().map(EdwardsPoint::mul_base).collect();
        nonces
            .iter()
            .zip(EdwardsPoint::compress_batch_alloc(&points))
            .map(|(r, big_r)| Pair {
                r: *r,
                big_r: big_r.to_bytes(),
            })
            .collect()
    }

    /// The `n`-th nonce with `random` mixed in, and its point.
    #[cfg(test)]
    fn pair(&self, n: u64, random: &[u8; 32]) -> Pair {
        let r = self.nonce(n, random);
        Pair {
            r,
            big_r: EdwardsPoint::mul_base(&r).compress().to_bytes(),
        }
    }

    /// The online half: `R ‖ S` with `S = r + SHA-512(R ‖ A ‖ M)·a mod ℓ`.
    fn sign(&self, pair: &Pair, message: &[u8]) -> [u8; 64] {
        let k = Scalar::from_hash(
            Sha512::new()
                .chain_update(pair.big_r)
                .chain_update(self.public)
                .chain_update(message),
        );
        let mut s = k * self.expanded.scalar + pair.r;
        let mut signature = [0u8; 64];
        signature[..32].copy_from_slice(&pair.big_r);
        signature[32..].copy_from_slice(s.as_bytes());
        s.zeroize();
        signature
    }
}

struct Inner {
    key: Key,
    pairs: Mutex<Vec<Pair>>,
    /// Woken when the pool falls below [`LOW`], or when it closes.
    low: Condvar,
    /// Whether the thread has been woken since it last waited.
    wanted: AtomicBool,
    closed: AtomicBool,
    /// Whether [`NoncePool::make_ahead`] started the thread, once called.
    started: std::sync::OnceLock<bool>,
}

/// Nonces made ahead for one key, by a thread of the lowest priority (see the module). Its
/// thread ends when this is dropped.
pub struct NoncePool {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for NoncePool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NoncePool")
            .field("ready", &self.ready())
            .finish_non_exhaustive()
    }
}

impl NoncePool {
    /// A pool for `key`, empty until [`Self::make_ahead`] starts its thread.
    pub fn new(key: &ed25519_dalek::SigningKey) -> Self {
        Self {
            inner: Arc::new(Inner {
                key: Key {
                    expanded: ExpandedSecretKey::from(key.as_bytes()),
                    public: key.verifying_key().to_bytes(),
                },
                pairs: Mutex::new(Vec::with_capacity(POOL)),
                low: Condvar::new(),
                wanted: AtomicBool::new(false),
                closed: AtomicBool::new(false),
                started: std::sync::OnceLock::new(),
            }),
        }
    }

    /// Starts making nonces, on a thread that runs only when a CPU would otherwise be idle
    /// (once; it ends when the pool is dropped). False where that cannot be had (not Linux,
    /// or the scheduler refused `SCHED_IDLE`: a thread of normal priority would take CPU from
    /// serving, at more than AWS-LC's cost a signature) or the thread did not start: every group
    /// is then signed whole.
    pub fn make_ahead(&self) -> bool {
        *self.inner.started.get_or_init(|| self.spawn())
    }

    fn spawn(&self) -> bool {
        let inner = Arc::clone(&self.inner);
        let (told, told_rx) = std::sync::mpsc::channel();
        let spawned = std::thread::Builder::new()
            .name("receipt-nonces".into())
            .spawn(move || {
                let lowest = lowest_priority();
                let ok = lowest.is_ok();
                let _ = told.send(lowest);
                if ok {
                    inner.refill();
                }
            });
        if let Err(e) = spawned {
            tracing::warn!("receipts: no thread to make signing nonces ahead: {e}");
            return false;
        }
        match told_rx.recv() {
            Ok(Ok(())) => true,
            Ok(Err(why)) => {
                tracing::info!(
                    "receipts: signing nonces are not made ahead ({why}); every group is signed whole"
                );
                false
            }
            Err(_) => false,
        }
    }

    /// `message` signed with a nonce made ahead, or `None` when none is ready now (or the
    /// pool's lock is held: this never waits).
    pub fn try_sign(&self, message: &[u8]) -> Option<[u8; 64]> {
        let (pair, low) = {
            let mut pairs = match self.inner.pairs.try_lock() {
                Ok(p) => p,
                Err(TryLockError::Poisoned(p)) => p.into_inner(),
                Err(TryLockError::WouldBlock) => return None,
            };
            let last = pairs.len().checked_sub(1)?;
            // Moved out with zeros left in its place, so that no copy of the nonce stays in
            // the pool's memory once the pool is shorter.
            let pair = std::mem::replace(pairs.get_mut(last)?, Pair::ZERO);
            pairs.truncate(last);
            (pair, last < LOW)
        };
        if low && !self.inner.wanted.swap(true, Ordering::AcqRel) {
            self.inner.low.notify_one();
        }
        Some(self.inner.key.sign(&pair, message))
    }

    /// Pairs ready now.
    pub fn ready(&self) -> usize {
        self.inner.lock().len()
    }
}

impl Drop for NoncePool {
    fn drop(&mut self) {
        let _pairs = self.inner.pairs.lock();
        self.inner.closed.store(true, Ordering::Release);
        self.inner.low.notify_all();
    }
}

impl Inner {
    /// The thread: fills the pool, waits until it falls below [`LOW`], again, until closed.
    fn refill(&self) {
        let mut n = 0u64;
        loop {
            loop {
                if self.closed.load(Ordering::Acquire) {
                    return;
                }
                let missing = POOL.saturating_sub(self.lock().len());
                if missing == 0 {
                    break;
                }
                let count = missing.min(BATCH);
                let mut batch = self.key.pairs(n, count);
                n += count as u64;
                self.lock().extend(batch.drain(..));
                // Zeroes the batch's buffer, where the pairs were made before they moved.
                batch.zeroize();
            }
            let mut pairs = self.lock();
            self.wanted.store(false, Ordering::Release);
            while pairs.len() >= LOW && !self.closed.load(Ordering::Acquire) {
                pairs = self.low.wait(pairs).unwrap_or_else(|p| p.into_inner());
            }
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Pair>> {
        self.pairs.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// Puts the calling thread under `SCHED_IDLE`: it then runs only when a CPU has nothing else.
#[cfg(target_os = "linux")]
#[allow(unsafe_code)]
fn lowest_priority() -> Result<(), String> {
    let param = libc::sched_param { sched_priority: 0 };
    // SAFETY: pid 0 is the calling thread; `param` is a valid sched_param for SCHED_IDLE,
    // whose priority must be 0.
    let rc = unsafe { libc::sched_setscheduler(0, libc::SCHED_IDLE, &param) };
    if rc == 0 {
        Ok(())
    } else {
        Err(format!(
            "SCHED_IDLE refused: {}",
            std::io::Error::last_os_error()
        ))
    }
}

#[cfg(not(target_os = "linux"))]
fn lowest_priority() -> Result<(), String> {
    Err("no SCHED_IDLE on this OS".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key() -> (ed25519_dalek::SigningKey, ed25519_dalek::VerifyingKey) {
        let key = ed25519_dalek::SigningKey::from_bytes(&[42u8; 32]);
        let public = key.verifying_key();
        (key, public)
    }

    fn filled(n: usize) -> NoncePool {
        let (key, _) = key();
        let pool = NoncePool::new(&key);
        let mut pairs = pool.inner.lock();
        for i in 0..n as u64 {
            pairs.push(pool.inner.key.pair(i, &[7u8; 32]));
        }
        drop(pairs);
        pool
    }

    fn verifies(public: &ed25519_dalek::VerifyingKey, message: &[u8], sig: &[u8; 64]) -> bool {
        let strict = public
            .verify_strict(message, &ed25519_dalek::Signature::from_bytes(sig))
            .is_ok();
        let aws_lc = aws_lc_rs::signature::UnparsedPublicKey::new(
            &aws_lc_rs::signature::ED25519,
            public.as_bytes(),
        )
        .verify(message, sig)
        .is_ok();
        assert_eq!(strict, aws_lc, "dalek and AWS-LC disagree");
        strict
    }

    #[test]
    fn signatures_with_nonces_made_ahead_verify_as_ed25519_and_only_for_their_message() {
        let (_, public) = key();
        let pool = filled(40);
        let mut rs = std::collections::HashSet::new();
        for i in 0..40u32 {
            let message = format!("root {i}");
            let sig = pool.try_sign(message.as_bytes()).expect("a nonce is ready");
            assert!(verifies(&public, message.as_bytes(), &sig));
            assert!(!verifies(&public, b"another root", &sig));
            let mut flipped = sig;
            flipped[i as usize % 64] ^= 1;
            assert!(!verifies(&public, message.as_bytes(), &flipped));
            assert!(rs.insert(sig[..32].to_vec()), "a nonce was used twice");
        }
        assert!(pool.try_sign(b"none left").is_none(), "the pool is empty");
    }

    #[test]
    fn a_nonce_is_unique_by_its_count_even_when_randomness_repeats() {
        let (key, _) = key();
        let pool = NoncePool::new(&key);
        let same = [0u8; 32];
        let a = pool.inner.key.pair(0, &same);
        let b = pool.inner.key.pair(1, &same);
        assert_ne!(a.big_r, b.big_r);
        // And it depends on the key's secret prefix, not only on what an observer knows.
        let other = NoncePool::new(&ed25519_dalek::SigningKey::from_bytes(&[43u8; 32]));
        assert_ne!(a.big_r, other.inner.key.pair(0, &same).big_r);
    }

    #[test]
    fn points_compressed_together_are_each_nonce_times_the_base_point() {
        let (key, _) = key();
        let pool = NoncePool::new(&key);
        let pairs = pool.inner.key.pairs(5, 16);
        assert_eq!(pairs.len(), 16);
        for p in &pairs {
            assert_eq!(EdwardsPoint::mul_base(&p.r).compress().to_bytes(), p.big_r);
        }
    }

    #[test]
    fn a_busy_lock_means_no_nonce_rather_than_a_wait() {
        let pool = filled(4);
        let held = pool.inner.lock();
        assert!(pool.try_sign(b"root").is_none());
        drop(held);
        assert!(pool.try_sign(b"root").is_some());
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn the_thread_fills_the_pool_refills_it_and_ends_with_it() {
        let (key, public) = key();
        let pool = NoncePool::new(&key);
        if !pool.make_ahead() {
            // A sandbox whose scheduler refuses SCHED_IDLE: nothing is made ahead, and the
            // server signs every group whole.
            assert!(lowest_priority().is_err());
            return;
        }
        let filled = |want: usize| {
            let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
            while pool.ready() < want {
                assert!(
                    std::time::Instant::now() < deadline,
                    "{pool:?} never filled"
                );
                std::thread::sleep(std::time::Duration::from_millis(5));
            }
        };
        filled(POOL);
        for i in 0..POOL - LOW + 1 {
            let message = i.to_le_bytes();
            if let Some(sig) = pool.try_sign(&message) {
                assert!(verifies(&public, &message, &sig));
            }
        }
        // Below LOW: woken, it fills the pool again.
        filled(POOL);
        let inner = Arc::downgrade(&pool.inner);
        drop(pool);
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
        while inner.strong_count() > 0 {
            assert!(
                std::time::Instant::now() < deadline,
                "the thread outlived its pool"
            );
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
    }
}
