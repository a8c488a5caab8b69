//! The sealed file: reading, verifying and decrypting it (writing one is `sealing.rs`).
//!
//! ```text
//! offset  size  field
//! 0       8     magic "CNFDSEAL"
//! 8       2     format version, u16 big-endian (1)
//! 10      4     manifest length m, u32 big-endian (1 ..= 4 MiB)
//! 14      m     manifest, canonical JSON (sorted keys, no whitespace)
//! 14+m    64    Ed25519 signature over "confidant.sealed.signature.v1\0" ‖ manifest digest
//! 78+m    c     ciphertext: the n STREAM chunk bodies (exactly the plaintext length), then
//!               the n 16-byte GCM tags, in chunk order
//! ```
//!
//! The file ends exactly after the ciphertext; trailing bytes are refused. The server reads
//! the whole file straight into locked memory and decrypts the bodies in place, in parallel,
//! so the plaintext weights never exist anywhere else in host memory.

use std::path::Path;

use sha2::{Digest, Sha256};

use super::error::SealedError;
use super::manifest::{BUNDLE_VERSION, MANIFEST_VERSION, Manifest, SealedModel};
use super::publisher::PublisherKey;
use super::stream::{self, DataKey};
use crate::engine::ModelConfig;
use crate::secure::SecretBuffer;

/// The 8-byte magic that starts every sealed model.
pub const MAGIC: &[u8; 8] = b"CNFDSEAL";
/// The file format version of a single-file (MLP) model; [`BUNDLE_VERSION`] marks a bundle.
/// This build reads and writes both.
pub const FORMAT_VERSION: u16 = MANIFEST_VERSION;
/// The file format versions this build reads.
pub const SUPPORTED_VERSIONS: [u16; 2] = [MANIFEST_VERSION, BUNDLE_VERSION];
/// Largest accepted manifest.
pub const MAX_MANIFEST_LEN: u32 = 4 << 20;
pub(super) const HEADER_LEN: usize = 14;
const SIGNATURE_LEN: usize = 64;

/// A sealed model whose structure parsed, but whose signature is not yet checked. Its bytes
/// live in locked memory, because decryption turns them into the plaintext in place. `M` is
/// the manifest's model config (see [`Manifest`]).
pub struct SealedFile<M = ModelConfig> {
    bytes: SecretBuffer,
    manifest: Manifest<M>,
    manifest_range: std::ops::Range<usize>,
    signature: [u8; SIGNATURE_LEN],
    ciphertext_offset: usize,
}

/// A sealed model whose manifest signature verified under a trusted publisher key. Only this
/// type can decrypt.
pub struct VerifiedSealedFile<M = ModelConfig> {
    file: SealedFile<M>,
    publisher: PublisherKey,
}

/// The format version in a sealed file's header ([`MANIFEST_VERSION`] for a single
/// safetensors file, [`BUNDLE_VERSION`] for a model directory), read without reading or
/// trusting the rest: a loader picks its path with it, then verifies everything.
pub fn peek_format(path: &Path) -> Result<u16, SealedError> {
    use std::io::Read;
    let mut header = [0u8; 10];
    std::fs::File::open(path)
        .and_then(|mut f| f.read_exact(&mut header))
        .map_err(|e| SealedError::io(path, e))?;
    if &header[..8] != MAGIC.as_slice() {
        return Err(SealedError::BadMagic);
    }
    Ok(u16::from_be_bytes([header[8], header[9]]))
}

impl SealedFile {
    /// Reads a sealed MLP straight into locked memory and parses it.
    pub fn read(path: &Path) -> Result<Self, SealedError> {
        Self::read_as(path)
    }

    /// Parses sealed-MLP bytes (copied into locked memory).
    pub fn parse(bytes: Vec<u8>) -> Result<Self, SealedError> {
        Self::parse_as(bytes)
    }

    /// Parses the layout of a sealed MLP.
    pub fn parse_buffer(buffer: SecretBuffer) -> Result<Self, SealedError> {
        Self::parse_buffer_as(buffer)
    }
}

impl<M: SealedModel> SealedFile<M> {
    /// Reads a sealed file straight into locked memory and parses it, with manifest model
    /// type `M` (`SealedFile::<ModelSpec>::read_as` reads a model of any kind).
    pub fn read_as(path: &Path) -> Result<Self, SealedError> {
        use std::io::Read;
        let mut f = std::fs::File::open(path).map_err(|e| SealedError::io(path, e))?;
        let len = f.metadata().map_err(|e| SealedError::io(path, e))?.len();
        let len = usize::try_from(len)
            .map_err(|_| SealedError::ManifestInvalid("the file does not fit in memory".into()))?;
        let mut buf = SecretBuffer::zeroed(len);
        f.read_exact(buf.secret_bytes_mut())
            .map_err(|e| SealedError::io(path, e))?;
        // A file that grew while we read it is refused rather than half-read.
        let mut probe = [0u8; 1];
        if f.read(&mut probe).map_err(|e| SealedError::io(path, e))? != 0 {
            return Err(SealedError::CiphertextLength {
                found: len as u64 + 1,
                expected: len as u64,
            });
        }
        Self::parse_buffer_as(buf)
    }

    /// Parses sealed-file bytes (copied into locked memory).
    pub fn parse_as(bytes: Vec<u8>) -> Result<Self, SealedError> {
        Self::parse_buffer_as(SecretBuffer::copy_from(&bytes))
    }

    /// Parses the layout: magic, version, manifest (canonical, valid, of the header's
    /// format) and ciphertext length.
    pub fn parse_buffer_as(buffer: SecretBuffer) -> Result<Self, SealedError> {
        let bytes = buffer.secret_bytes();
        let header = bytes
            .get(..HEADER_LEN)
            .ok_or(SealedError::Truncated { part: "header" })?;
        if header.get(..8) != Some(MAGIC.as_slice()) {
            return Err(SealedError::BadMagic);
        }
        let version = u16::from_be_bytes([header[8], header[9]]);
        if !SUPPORTED_VERSIONS.contains(&version) {
            return Err(SealedError::UnsupportedVersion {
                found: version,
                supported: BUNDLE_VERSION,
            });
        }
        if !M::reads_format(version) {
            return Err(SealedError::BundleNotReadHere { found: version });
        }
        let mlen = u32::from_be_bytes([header[10], header[11], header[12], header[13]]);
        if mlen == 0 || mlen > MAX_MANIFEST_LEN {
            return Err(SealedError::ManifestLength {
                len: u64::from(mlen),
                max: u64::from(MAX_MANIFEST_LEN),
            });
        }
        let manifest_range = HEADER_LEN..HEADER_LEN + mlen as usize;
        let manifest_bytes = bytes
            .get(manifest_range.clone())
            .ok_or(SealedError::Truncated { part: "manifest" })?;
        let manifest = Manifest::<M>::from_canonical_json(manifest_bytes)?;
        manifest.validate()?;
        if manifest.format != version {
            return Err(SealedError::ManifestInvalid(format!(
                "the header says format {version} but the manifest says {}",
                manifest.format
            )));
        }
        let sig_range = manifest_range.end..manifest_range.end + SIGNATURE_LEN;
        let mut signature = [0u8; SIGNATURE_LEN];
        signature.copy_from_slice(
            bytes
                .get(sig_range.clone())
                .ok_or(SealedError::Truncated { part: "signature" })?,
        );
        let ciphertext_offset = sig_range.end;
        let found = (bytes.len() - ciphertext_offset) as u64;
        if found != manifest.encryption.ciphertext_size {
            return Err(SealedError::CiphertextLength {
                found,
                expected: manifest.encryption.ciphertext_size,
            });
        }
        Ok(Self {
            bytes: buffer,
            manifest,
            manifest_range,
            signature,
            ciphertext_offset,
        })
    }

    /// The manifest (unverified until [`Self::verify`] succeeds).
    pub fn manifest(&self) -> &Manifest<M> {
        &self.manifest
    }

    /// The manifest exactly as stored.
    pub fn manifest_bytes(&self) -> &[u8] {
        &self.bytes.secret_bytes()[self.manifest_range.clone()]
    }

    /// The ciphertext.
    pub fn ciphertext(&self) -> &[u8] {
        &self.bytes.secret_bytes()[self.ciphertext_offset..]
    }

    /// Checks the signature against the trusted publisher keys. The manifest names its
    /// publisher's key id; that key must be among `trusted` and must verify the signature.
    pub fn verify(self, trusted: &[PublisherKey]) -> Result<VerifiedSealedFile<M>, SealedError> {
        let key_id = &self.manifest.publisher.key_id;
        let publisher = trusted
            .iter()
            .find(|k| &k.key_id() == key_id)
            .ok_or_else(|| SealedError::UntrustedPublisher {
                key_id: key_id.clone(),
            })?
            .clone();
        let message = self.manifest.signing_message()?;
        if !publisher.verify(&message, &self.signature) {
            return Err(SealedError::BadSignature {
                key_id: key_id.clone(),
            });
        }
        Ok(VerifiedSealedFile {
            file: self,
            publisher,
        })
    }

    /// Recomputes SHA-256 of the ciphertext and compares it with the manifest. Needs no key,
    /// so `confidant inspect` can detect any modified byte.
    pub fn verify_ciphertext_digest(&self) -> Result<(), SealedError> {
        let d = Sha256::digest(self.ciphertext());
        if hex::encode(d) != self.manifest.encryption.ciphertext_sha256 {
            return Err(SealedError::CiphertextDigest);
        }
        Ok(())
    }
}

impl<M: SealedModel> VerifiedSealedFile<M> {
    /// The verified manifest.
    pub fn manifest(&self) -> &Manifest<M> {
        &self.file.manifest
    }

    /// The publisher key that verified the signature.
    pub fn publisher(&self) -> &PublisherKey {
        &self.publisher
    }

    /// The unverified file, for digest checks.
    pub fn file(&self) -> &SealedFile<M> {
        &self.file
    }

    fn plaintext_len(&self) -> Result<usize, SealedError> {
        usize::try_from(self.file.manifest.weights.size)
            .map_err(|_| SealedError::ManifestInvalid("weights.size does not fit in memory".into()))
    }

    /// Decrypts every chunk in parallel into a new locked, zeroizing buffer, leaving this
    /// file intact (for `inspect`). AES-GCM authenticates every byte, so a wrong key or any
    /// modified, reordered, truncated or foreign chunk fails here.
    pub fn decrypt(&self, key: &DataKey) -> Result<Plaintext, SealedError> {
        let m = &self.file.manifest;
        let plaintext_len = self.plaintext_len()?;
        let ciphertext = self.file.ciphertext();
        let mut out = SecretBuffer::zeroed(ciphertext.len());
        stream::decrypt_into(
            key,
            &m.nonce_prefix()?,
            &m.aad_digest()?,
            m.encryption.chunk_size as usize,
            plaintext_len,
            ciphertext,
            out.secret_bytes_mut(),
        )?;
        Ok(Plaintext {
            buffer: out,
            range: 0..plaintext_len,
        })
    }

    /// Decrypts in place, in parallel, in the locked buffer the file was read into: the
    /// server's path, with no copy of the weights. Consumes the file; on failure the
    /// buffer is zeroized and dropped.
    pub fn into_plaintext(mut self, key: &DataKey) -> Result<Plaintext, SealedError> {
        let plaintext_len = self.plaintext_len()?;
        let prefix = self.file.manifest.nonce_prefix()?;
        let aad = self.file.manifest.aad_digest()?;
        let chunk = self.file.manifest.encryption.chunk_size as usize;
        let offset = self.file.ciphertext_offset;
        let region = &mut self.file.bytes.secret_bytes_mut()[offset..];
        stream::decrypt_in_place(key, &prefix, &aad, chunk, plaintext_len, region)?;
        Ok(Plaintext {
            buffer: self.file.bytes,
            range: offset..offset + plaintext_len,
        })
    }

    /// The chunk layout: `(chunk size, chunk count, plaintext length)`.
    pub fn chunk_layout(&self) -> Result<(usize, u64, usize), SealedError> {
        let m = &self.file.manifest;
        let len = self.plaintext_len()?;
        let chunk = m.encryption.chunk_size as usize;
        Ok((
            chunk,
            super::manifest::chunk_count(len as u64, chunk as u32),
            len,
        ))
    }

    /// Decrypts chunks `first..first + n` into `out[..bytes]` and returns `bytes`, leaving the
    /// file intact: the GPU loader's staging step (a group of chunks at a time into a
    /// page-locked buffer). On failure `out` is zeroized.
    pub fn decrypt_chunks_into(
        &self,
        key: &DataKey,
        first: u64,
        n: u64,
        out: &mut [u8],
    ) -> Result<usize, SealedError> {
        let m = &self.file.manifest;
        let (chunk, count, len) = self.chunk_layout()?;
        if n == 0 || first.checked_add(n).is_none_or(|end| end > count) {
            return Err(SealedError::ManifestInvalid(format!(
                "chunks {first}..{} of {count}",
                first.saturating_add(n)
            )));
        }
        let start = first as usize * chunk;
        let end = (start + n as usize * chunk).min(len);
        let bytes = end - start;
        if out.len() < bytes {
            return Err(SealedError::CiphertextLength {
                found: out.len() as u64,
                expected: bytes as u64,
            });
        }
        let ct = self.file.ciphertext();
        let tag = super::manifest::TAG_LEN as usize;
        let tags = &ct[len + first as usize * tag..len + (first + n) as usize * tag];
        out[..bytes].copy_from_slice(&ct[start..end]);
        let r = stream::decrypt_chunk_range(
            key,
            &m.nonce_prefix()?,
            &m.aad_digest()?,
            chunk,
            first,
            count,
            &mut out[..bytes],
            tags,
        );
        if r.is_err() {
            zeroize::Zeroize::zeroize(out);
        }
        r.map(|()| bytes)
    }

    /// Checks decrypted weights against the signed plaintext SHA-256. The AEAD tags already
    /// authenticate every byte; this also pins the weights to what the publisher hashed, so
    /// a broker that hands out another key for a crafted ciphertext is caught (AES-GCM is not
    /// key-committing).
    pub fn verify_plaintext_digest(&self, plaintext: &Plaintext) -> Result<(), SealedError> {
        check_plaintext_digest(&self.file.manifest, plaintext)
    }
}

fn check_plaintext_digest<M: SealedModel>(
    manifest: &Manifest<M>,
    plaintext: &Plaintext,
) -> Result<(), SealedError> {
    let bytes = plaintext.secret_bytes();
    let d = Sha256::digest(bytes);
    if hex::encode(d) != manifest.weights.sha256 {
        return Err(SealedError::PlaintextDigest);
    }
    // A bundle's entries are covered by the digest above; checking each against its own
    // signed digest as well catches a manifest whose entry list disagrees with its bytes.
    for e in &manifest.entries {
        let entry = manifest
            .entry_range(&e.name)
            .and_then(|r| bytes.get(r))
            .ok_or(SealedError::PlaintextDigest)?;
        if hex::encode(Sha256::digest(entry)) != e.sha256 {
            return Err(SealedError::PlaintextDigest);
        }
    }
    Ok(())
}

/// Decrypted weights, inside a locked, zeroizing buffer. No `Debug` or `Clone`.
pub struct Plaintext {
    buffer: SecretBuffer,
    range: std::ops::Range<usize>,
}

impl Plaintext {
    /// The plaintext weights.
    pub fn secret_bytes(&self) -> &[u8] {
        &self.buffer.secret_bytes()[self.range.clone()]
    }
}

/// Everything needed to serve a sealed model after the checks passed.
pub struct Unsealed<M = ModelConfig> {
    /// The verified manifest.
    pub manifest: Manifest<M>,
    /// The publisher key id that signed it.
    pub publisher_key_id: String,
    /// The plaintext safetensors, locked and zeroizing.
    pub weights: Plaintext,
}

impl<M: SealedModel> Unsealed<M> {
    /// The plaintext of bundle entry `name` (format 2), still in its locked buffer.
    pub fn entry(&self, name: &str) -> Option<&[u8]> {
        self.manifest
            .entry_range(name)
            .and_then(|r| self.weights.secret_bytes().get(r))
    }
}

/// The full load path from bytes: parse, verify the signature, decrypt in place, and (if
/// `check_digests`) recompute both SHA-256 digests.
pub fn unseal(
    bytes: Vec<u8>,
    trusted: &[PublisherKey],
    key: &DataKey,
    check_digests: bool,
) -> Result<Unsealed, SealedError> {
    unseal_parsed(SealedFile::parse(bytes)?, trusted, key, check_digests)
}

/// The server's load path: read the file straight into locked memory, then as [`unseal`].
pub fn unseal_file(
    path: &Path,
    trusted: &[PublisherKey],
    key: &DataKey,
    check_digests: bool,
) -> Result<Unsealed, SealedError> {
    unseal_parsed(SealedFile::read(path)?, trusted, key, check_digests)
}

/// [`unseal_file`] for a model of any kind (`M` = [`ModelSpec`](crate::engine::ModelSpec)).
pub fn unseal_file_as<M: SealedModel>(
    path: &Path,
    trusted: &[PublisherKey],
    key: &DataKey,
    check_digests: bool,
) -> Result<Unsealed<M>, SealedError> {
    unseal_parsed(SealedFile::<M>::read_as(path)?, trusted, key, check_digests)
}

/// [`unseal`] for a model of any kind.
pub fn unseal_as<M: SealedModel>(
    bytes: Vec<u8>,
    trusted: &[PublisherKey],
    key: &DataKey,
    check_digests: bool,
) -> Result<Unsealed<M>, SealedError> {
    unseal_parsed(
        SealedFile::<M>::parse_as(bytes)?,
        trusted,
        key,
        check_digests,
    )
}

fn unseal_parsed<M: SealedModel>(
    file: SealedFile<M>,
    trusted: &[PublisherKey],
    key: &DataKey,
    check_digests: bool,
) -> Result<Unsealed<M>, SealedError> {
    let verified = file.verify(trusted)?;
    if check_digests {
        verified.file().verify_ciphertext_digest()?;
    }
    let manifest = verified.manifest().clone();
    let publisher_key_id = verified.publisher().key_id();
    let weights = verified.into_plaintext(key)?;
    if check_digests {
        check_plaintext_digest(&manifest, &weights)?;
    }
    Ok(Unsealed {
        manifest,
        publisher_key_id,
        weights,
    })
}
