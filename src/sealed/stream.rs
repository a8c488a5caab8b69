//! AES-256-GCM in STREAM chunks (Hoang, Reyhanitabar, Rogaway and Vizár, "Online
//! Authenticated-Encryption and its Nonce-Reuse Misuse-Resistance", 2015).
//!
//! Chunk `i` of `n` is sealed under nonce `prefix(7) ‖ u32_be(i) ‖ last(1)`, where `last` is 1
//! only for the final chunk, with the manifest's AAD digest as associated data. So a chunk
//! cannot move to another position (counter), the stream cannot be cut short or extended
//! (last flag), and chunks cannot move to another model (AAD). Chunks are independent, so
//! both directions run in parallel on every core. The bulk path uses ring, whose AES-GCM is
//! several times faster than RustCrypto's on CPUs with VAES and VPCLMULQDQ.

use rayon::prelude::*;
use ring::aead::{AES_256_GCM, Aad, LessSafeKey, Nonce, Tag, UnboundKey};

use super::error::{KeyError, SealedError};
use super::manifest::{NONCE_PREFIX_LEN, TAG_LEN};
use crate::secure::SecretBuffer;

/// A model data key (DEK): 32 random bytes, held in locked memory and zeroized on drop.
/// No `Debug`, `Clone` or `Serialize`.
pub struct DataKey {
    bytes: SecretBuffer,
}

impl DataKey {
    /// The key length in bytes.
    pub const LEN: usize = 32;

    /// A fresh key from the OS CSPRNG.
    pub fn generate() -> Result<Self, SealedError> {
        let mut bytes = SecretBuffer::zeroed(Self::LEN);
        getrandom::fill(bytes.secret_bytes_mut())
            .map_err(|e| SealedError::Random(e.to_string()))?;
        Ok(Self { bytes })
    }

    /// Wraps 32 key bytes (copied into locked memory; the caller zeroizes its copy).
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, KeyError> {
        if bytes.len() != Self::LEN {
            return Err(KeyError::DataKeyLength {
                expected: Self::LEN,
                found: bytes.len(),
            });
        }
        Ok(Self {
            bytes: SecretBuffer::copy_from(bytes),
        })
    }

    /// Reads a key file: exactly 32 raw bytes.
    pub fn from_file(path: &std::path::Path) -> Result<Self, SealedError> {
        let raw =
            zeroize::Zeroizing::new(std::fs::read(path).map_err(|e| SealedError::io(path, e))?);
        Self::from_bytes(&raw).map_err(|problem| SealedError::KeyFile {
            path: path.display().to_string(),
            problem,
        })
    }

    /// The key bytes.
    pub fn secret_bytes(&self) -> &[u8] {
        self.bytes.secret_bytes()
    }

    fn aead(&self) -> LessSafeKey {
        // The length is fixed at LEN = 32, which is AES-256's key length, so this cannot fail.
        #[allow(clippy::expect_used)]
        let unbound = UnboundKey::new(&AES_256_GCM, self.secret_bytes())
            .expect("AES-256 key is 32 bytes by construction");
        LessSafeKey::new(unbound)
    }
}

fn nonce(prefix: &[u8; NONCE_PREFIX_LEN], index: u64, last: bool) -> Nonce {
    let mut n = [0u8; 12];
    n[..NONCE_PREFIX_LEN].copy_from_slice(prefix);
    // index < 2^32 is enforced by Manifest::validate and by seal().
    n[7..11].copy_from_slice(&(index as u32).to_be_bytes());
    n[11] = u8::from(last);
    Nonce::assume_unique_for_key(n)
}

/// Encrypts `plaintext` into `n = max(1, ceil(len / chunk_size))` sealed chunks, laid out as
/// every chunk body in order (exactly the plaintext length) followed by the n 16-byte tags.
/// Keeping the tags apart lets the reader decrypt in place, in parallel, and end with a
/// contiguous plaintext, with no copy and no compaction pass.
pub(crate) fn encrypt(
    key: &DataKey,
    prefix: &[u8; NONCE_PREFIX_LEN],
    aad: &[u8; 32],
    chunk_size: usize,
    plaintext: &[u8],
) -> Result<Vec<u8>, SealedError> {
    let aead = key.aead();
    let count = super::manifest::chunk_count(plaintext.len() as u64, chunk_size as u32);
    let mut out = vec![0u8; plaintext.len() + (count * TAG_LEN) as usize];
    let (bodies, tags) = out.split_at_mut(plaintext.len());
    bodies.copy_from_slice(plaintext);
    let seal = |i: usize, body: &mut [u8], tag_dst: &mut [u8]| -> Result<(), SealedError> {
        let last = i as u64 + 1 == count;
        let tag = aead
            .seal_in_place_separate_tag(nonce(prefix, i as u64, last), Aad::from(aad), body)
            .map_err(|_| SealedError::Random("AES-GCM seal failed".into()))?;
        tag_dst.copy_from_slice(tag.as_ref());
        Ok(())
    };
    if plaintext.is_empty() {
        seal(0, &mut [], tags)?;
        return Ok(out);
    }
    bodies
        .par_chunks_mut(chunk_size)
        .zip(tags.par_chunks_mut(TAG_LEN as usize))
        .enumerate()
        .try_for_each(|(i, (body, tag))| seal(i, body, tag))?;
    Ok(out)
}

/// Decrypts and authenticates every chunk of `region` (bodies then tags, as [`encrypt`]
/// lays them out) in place and in parallel. Afterwards `region[..plaintext_len]` is the
/// plaintext. On any failure the bodies are zeroized, so no partial plaintext survives.
pub(crate) fn decrypt_in_place(
    key: &DataKey,
    prefix: &[u8; NONCE_PREFIX_LEN],
    aad: &[u8; 32],
    chunk_size: usize,
    plaintext_len: usize,
    region: &mut [u8],
) -> Result<(), SealedError> {
    let count = super::manifest::chunk_count(plaintext_len as u64, chunk_size as u32);
    let expected = plaintext_len as u64 + count * TAG_LEN;
    if region.len() as u64 != expected {
        return Err(SealedError::CiphertextLength {
            found: region.len() as u64,
            expected,
        });
    }
    let (bodies, tags) = region.split_at_mut(plaintext_len);
    decrypt_chunk_range(key, prefix, aad, chunk_size, 0, count, bodies, tags)
}

/// Decrypts chunks `first..first + n` of a region of `count` chunks in place: `bodies` holds
/// exactly their bodies, `tags` their tags. On failure the bodies are zeroized. The GPU
/// loader decrypts a group of chunks at a time into a page-locked staging buffer with it.
#[allow(clippy::too_many_arguments)]
pub(crate) fn decrypt_chunk_range(
    key: &DataKey,
    prefix: &[u8; NONCE_PREFIX_LEN],
    aad: &[u8; 32],
    chunk_size: usize,
    first: u64,
    count: u64,
    bodies: &mut [u8],
    tags: &[u8],
) -> Result<(), SealedError> {
    let aead = key.aead();
    let open = |i: u64, body: &mut [u8], tag: &[u8]| -> Result<(), SealedError> {
        let fail = || SealedError::ChunkAuthentication { index: i, count };
        let tag = Tag::try_from(tag).map_err(|_| fail())?;
        let last = i + 1 == count;
        aead.open_in_place_separate_tag(nonce(prefix, i, last), Aad::from(aad), tag, body, 0..)
            .map(|_| ())
            .map_err(|_| fail())
    };
    let n = tags.len() / TAG_LEN as usize;
    let result = if bodies.is_empty() && n == 1 {
        open(first, bodies, tags)
    } else if bodies.len().div_ceil(chunk_size) != n || !tags.len().is_multiple_of(TAG_LEN as usize)
    {
        Err(SealedError::CiphertextLength {
            found: bodies.len() as u64,
            expected: (n * chunk_size) as u64,
        })
    } else {
        bodies
            .par_chunks_mut(chunk_size)
            .zip(tags.par_chunks(TAG_LEN as usize))
            .enumerate()
            .try_for_each(|(i, (body, tag))| open(first + i as u64, body, tag))
    };
    if result.is_err() {
        zeroize::Zeroize::zeroize(bodies);
    }
    result
}

/// Decrypts `ciphertext` (bodies then tags) into `out`, leaving `ciphertext` untouched:
/// copies the region into `out` and decrypts there. `out` must hold the whole region; its
/// first `plaintext_len` bytes are the plaintext afterwards.
pub(crate) fn decrypt_into(
    key: &DataKey,
    prefix: &[u8; NONCE_PREFIX_LEN],
    aad: &[u8; 32],
    chunk_size: usize,
    plaintext_len: usize,
    ciphertext: &[u8],
    out: &mut [u8],
) -> Result<(), SealedError> {
    if out.len() != ciphertext.len() {
        return Err(SealedError::CiphertextLength {
            found: ciphertext.len() as u64,
            expected: out.len() as u64,
        });
    }
    out.copy_from_slice(ciphertext);
    decrypt_in_place(key, prefix, aad, chunk_size, plaintext_len, out)
}
