//! AES-256-GCM decryption of sealed STREAM chunks on the GPU (`kernels/aes_gcm.cu`), and its
//! CPU reference.
//!
//! The loader copies a sealed model's ciphertext region (every chunk body, then every tag;
//! [`crate::sealed::stream`]) to the device and calls `decrypt_chunks_on_device` (feature `cuda`): the
//! plaintext weights then exist only in device memory, never in host memory.
//!
//! # Algorithm
//!
//! Chunk `c` of `n` is AES-256-GCM under the nonce `prefix(7) ‖ u32_be(c) ‖ last(1)` with the
//! manifest's 32-byte AAD digest as associated data. Decryption is CTR mode (block `b` of a
//! chunk uses counter `b + 2`) and the tag is `E_K(J0) ⊕ GHASH`, with
//! `GHASH = Σ X_i·H^(N+2−i)` over the `N` AAD and ciphertext blocks `X_1..X_N` and the
//! length block `X_{N+1}`. The device computes that sum in [`LANES`] lanes: block `k`
//! (0-based) goes to lane `k mod LANES`, each lane folds its blocks by Horner with
//! `H^LANES`, multiplies its fold by `H^(N − k_last + 1)` (a power in `H^2..=H^(LANES+1)`,
//! precomputed once per thread block), and the lanes' shares are XOR-reduced. The reference
//! below computes exactly this form, and is tested against the `aes-gcm` crate; the kernel's
//! building blocks are checked against the same known answers on the CPU by
//! `kernels/host_check`. The tag comparison is constant-time on both sides.

use zeroize::Zeroizing;

use super::GpuError;
/// The STREAM nonce prefix length (the sealed format's; `kernels/aes_gcm.cu` builds its
/// nonces from it).
pub const NONCE_PREFIX_LEN: usize = 7;
/// The AES-GCM tag length.
pub const TAG_LEN: u64 = 16;

/// The number of chunks of a `size`-byte plaintext in `chunk_size`-byte chunks (at least one).
pub fn chunk_count(size: u64, chunk_size: u32) -> u64 {
    size.div_ceil(u64::from(chunk_size.max(1))).max(1)
}

/// Lanes of the parallel GHASH: threads per chunk on the device (`GCM_LANES`).
pub const LANES: usize = 256;

/// Words of an expanded AES-256 key (15 round keys of four big-endian words).
pub const ROUND_KEY_WORDS: usize = 60;

const SBOX: [u8; 256] = [
    0x63, 0x7c, 0x77, 0x7b, 0xf2, 0x6b, 0x6f, 0xc5, 0x30, 0x01, 0x67, 0x2b, 0xfe, 0xd7, 0xab, 0x76,
    0xca, 0x82, 0xc9, 0x7d, 0xfa, 0x59, 0x47, 0xf0, 0xad, 0xd4, 0xa2, 0xaf, 0x9c, 0xa4, 0x72, 0xc0,
    0xb7, 0xfd, 0x93, 0x26, 0x36, 0x3f, 0xf7, 0xcc, 0x34, 0xa5, 0xe5, 0xf1, 0x71, 0xd8, 0x31, 0x15,
    0x04, 0xc7, 0x23, 0xc3, 0x18, 0x96, 0x05, 0x9a, 0x07, 0x12, 0x80, 0xe2, 0xeb, 0x27, 0xb2, 0x75,
    0x09, 0x83, 0x2c, 0x1a, 0x1b, 0x6e, 0x5a, 0xa0, 0x52, 0x3b, 0xd6, 0xb3, 0x29, 0xe3, 0x2f, 0x84,
    0x53, 0xd1, 0x00, 0xed, 0x20, 0xfc, 0xb1, 0x5b, 0x6a, 0xcb, 0xbe, 0x39, 0x4a, 0x4c, 0x58, 0xcf,
    0xd0, 0xef, 0xaa, 0xfb, 0x43, 0x4d, 0x33, 0x85, 0x45, 0xf9, 0x02, 0x7f, 0x50, 0x3c, 0x9f, 0xa8,
    0x51, 0xa3, 0x40, 0x8f, 0x92, 0x9d, 0x38, 0xf5, 0xbc, 0xb6, 0xda, 0x21, 0x10, 0xff, 0xf3, 0xd2,
    0xcd, 0x0c, 0x13, 0xec, 0x5f, 0x97, 0x44, 0x17, 0xc4, 0xa7, 0x7e, 0x3d, 0x64, 0x5d, 0x19, 0x73,
    0x60, 0x81, 0x4f, 0xdc, 0x22, 0x2a, 0x90, 0x88, 0x46, 0xee, 0xb8, 0x14, 0xde, 0x5e, 0x0b, 0xdb,
    0xe0, 0x32, 0x3a, 0x0a, 0x49, 0x06, 0x24, 0x5c, 0xc2, 0xd3, 0xac, 0x62, 0x91, 0x95, 0xe4, 0x79,
    0xe7, 0xc8, 0x37, 0x6d, 0x8d, 0xd5, 0x4e, 0xa9, 0x6c, 0x56, 0xf4, 0xea, 0x65, 0x7a, 0xae, 0x08,
    0xba, 0x78, 0x25, 0x2e, 0x1c, 0xa6, 0xb4, 0xc6, 0xe8, 0xdd, 0x74, 0x1f, 0x4b, 0xbd, 0x8b, 0x8a,
    0x70, 0x3e, 0xb5, 0x66, 0x48, 0x03, 0xf6, 0x0e, 0x61, 0x35, 0x57, 0xb9, 0x86, 0xc1, 0x1d, 0x9e,
    0xe1, 0xf8, 0x98, 0x11, 0x69, 0xd9, 0x8e, 0x94, 0x9b, 0x1e, 0x87, 0xe9, 0xce, 0x55, 0x28, 0xdf,
    0x8c, 0xa1, 0x89, 0x0d, 0xbf, 0xe6, 0x42, 0x68, 0x41, 0x99, 0x2d, 0x0f, 0xb0, 0x54, 0xbb, 0x16,
];

const fn xtime(x: u8) -> u8 {
    (x << 1) ^ ((x >> 7) * 0x1b)
}

/// Te0..Te3: `Te0[i] = (2s, s, s, 3s)` for `s = S[i]`, `Te_k = Te0 >>> 8k`.
const TE: [[u32; 256]; 4] = {
    let mut t = [[0u32; 256]; 4];
    let mut i = 0;
    while i < 256 {
        let s = SBOX[i];
        let s2 = xtime(s);
        let s3 = s2 ^ s;
        let te0 = ((s2 as u32) << 24) | ((s as u32) << 16) | ((s as u32) << 8) | s3 as u32;
        t[0][i] = te0;
        t[1][i] = te0.rotate_right(8);
        t[2][i] = te0.rotate_right(16);
        t[3][i] = te0.rotate_right(24);
        i += 1;
    }
    t
};

fn sub_word(w: u32) -> u32 {
    let b = w.to_be_bytes();
    u32::from_be_bytes([
        SBOX[b[0] as usize],
        SBOX[b[1] as usize],
        SBOX[b[2] as usize],
        SBOX[b[3] as usize],
    ])
}

/// An expanded AES-256 key. Secret: no `Debug` or `Clone`, zeroized on drop.
pub struct RoundKeys {
    words: Zeroizing<[u32; ROUND_KEY_WORDS]>,
}

impl RoundKeys {
    /// FIPS 197 §5.2 key expansion.
    pub fn expand(key: &[u8; 32]) -> Self {
        let mut w = Zeroizing::new([0u32; ROUND_KEY_WORDS]);
        for (o, c) in w.iter_mut().zip(key.chunks_exact(4)) {
            *o = u32::from_be_bytes([c[0], c[1], c[2], c[3]]);
        }
        let mut rcon: u8 = 1;
        for i in 8..ROUND_KEY_WORDS {
            let mut temp = w[i - 1];
            if i % 8 == 0 {
                temp = sub_word(temp.rotate_left(8)) ^ (u32::from(rcon) << 24);
                rcon = xtime(rcon);
            } else if i % 8 == 4 {
                temp = sub_word(temp);
            }
            w[i] = w[i - 8] ^ temp;
        }
        Self { words: w }
    }

    /// The words, as the kernel takes them.
    pub fn secret_words(&self) -> &[u32; ROUND_KEY_WORDS] {
        &self.words
    }

    /// Encrypts one block given as four big-endian words.
    pub fn encrypt_block(&self, s: [u32; 4]) -> [u32; 4] {
        let rk = &*self.words;
        let b = |x: u32, shift: u32| ((x >> shift) & 0xff) as usize;
        let [mut s0, mut s1, mut s2, mut s3] =
            [s[0] ^ rk[0], s[1] ^ rk[1], s[2] ^ rk[2], s[3] ^ rk[3]];
        for r in 1..14 {
            let k = &rk[4 * r..4 * r + 4];
            let t0 = TE[0][b(s0, 24)] ^ TE[1][b(s1, 16)] ^ TE[2][b(s2, 8)] ^ TE[3][b(s3, 0)] ^ k[0];
            let t1 = TE[0][b(s1, 24)] ^ TE[1][b(s2, 16)] ^ TE[2][b(s3, 8)] ^ TE[3][b(s0, 0)] ^ k[1];
            let t2 = TE[0][b(s2, 24)] ^ TE[1][b(s3, 16)] ^ TE[2][b(s0, 8)] ^ TE[3][b(s1, 0)] ^ k[2];
            let t3 = TE[0][b(s3, 24)] ^ TE[1][b(s0, 16)] ^ TE[2][b(s1, 8)] ^ TE[3][b(s2, 0)] ^ k[3];
            (s0, s1, s2, s3) = (t0, t1, t2, t3);
        }
        let k = &rk[56..60];
        let last = |a: u32, b1: u32, c: u32, d: u32, k: u32| {
            u32::from_be_bytes([
                SBOX[b(a, 24)],
                SBOX[b(b1, 16)],
                SBOX[b(c, 8)],
                SBOX[b(d, 0)],
            ]) ^ k
        };
        [
            last(s0, s1, s2, s3, k[0]),
            last(s1, s2, s3, s0, k[1]),
            last(s2, s3, s0, s1, k[2]),
            last(s3, s0, s1, s2, k[3]),
        ]
    }
}

/// An element of GF(2^128) in GCM's bit order: `hi` is bytes 0–7 big-endian, `lo` bytes 8–15.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Gf128 {
    /// Bytes 0–7, big-endian.
    pub hi: u64,
    /// Bytes 8–15, big-endian.
    pub lo: u64,
}

impl Gf128 {
    /// 16 bytes (at most 16 of `bytes`, zero-padded).
    pub fn from_bytes(bytes: &[u8]) -> Self {
        let mut b = [0u8; 16];
        let n = bytes.len().min(16);
        b[..n].copy_from_slice(&bytes[..n]);
        let (hi, lo) = b.split_at(8);
        Self {
            hi: u64::from_be_bytes(hi.try_into().unwrap_or_default()),
            lo: u64::from_be_bytes(lo.try_into().unwrap_or_default()),
        }
    }

    /// From four big-endian words.
    pub fn from_words(w: [u32; 4]) -> Self {
        Self {
            hi: (u64::from(w[0]) << 32) | u64::from(w[1]),
            lo: (u64::from(w[2]) << 32) | u64::from(w[3]),
        }
    }

    /// The 16 bytes.
    pub fn to_bytes(self) -> [u8; 16] {
        let mut b = [0u8; 16];
        b[..8].copy_from_slice(&self.hi.to_be_bytes());
        b[8..].copy_from_slice(&self.lo.to_be_bytes());
        b
    }

    /// Addition (XOR).
    pub fn xor(self, o: Self) -> Self {
        Self {
            hi: self.hi ^ o.hi,
            lo: self.lo ^ o.lo,
        }
    }

    /// Multiplication (SP 800-38D Algorithm 1), branch-free like the kernel's `gf_mul`.
    pub fn times(self, y: Self) -> Self {
        let (mut zh, mut zl, mut vh, mut vl) = (0u64, 0u64, y.hi, y.lo);
        for i in 0..128 {
            let word = if i < 64 { self.hi } else { self.lo };
            let m = 0u64.wrapping_sub((word >> (63 - (i & 63))) & 1);
            zh ^= vh & m;
            zl ^= vl & m;
            let lsb = vl & 1;
            vl = (vl >> 1) | (vh << 63);
            vh = (vh >> 1) ^ (0xe100_0000_0000_0000 & 0u64.wrapping_sub(lsb));
        }
        Self { hi: zh, lo: zl }
    }

    /// `self^e`, `e ≥ 1`.
    pub fn pow(self, mut e: u32) -> Self {
        let mut result: Option<Self> = None;
        let mut base = self;
        while e != 0 {
            if e & 1 == 1 {
                result = Some(result.map_or(base, |r| r.times(base)));
            }
            e >>= 1;
            if e != 0 {
                base = base.times(base);
            }
        }
        result.unwrap_or(Self { hi: 0, lo: 0 })
    }
}

/// `H^1 ..= H^(LANES+1)` (index `e − 1`), which the device computes once per thread block.
pub fn hash_powers(h: Gf128) -> Vec<Gf128> {
    let mut p = Vec::with_capacity(LANES + 1);
    let mut x = h;
    for _ in 0..=LANES {
        p.push(x);
        x = x.times(h);
    }
    p
}

/// GHASH of `aad` and `ciphertext` in the lane-parallel form of the kernel (module docs).
/// `hpow` is [`hash_powers`] of `H`.
pub fn ghash_lanes(hpow: &[Gf128], aad: &[u8], ciphertext: &[u8]) -> Gf128 {
    let h = hpow[0];
    let h_lanes = hpow[LANES - 1];
    let blocks = aad.chunks(16).chain(ciphertext.chunks(16));
    let total = aad.len().div_ceil(16) + ciphertext.len().div_ceil(16);
    let mut acc = vec![Gf128::default(); LANES];
    let mut last = vec![None; LANES];
    for (k, x) in blocks.enumerate() {
        let lane = k % LANES;
        acc[lane] = acc[lane].times(h_lanes).xor(Gf128::from_bytes(x));
        last[lane] = Some(k);
    }
    let mut s = Gf128::default();
    for (a, l) in acc.iter().zip(&last) {
        if let Some(l) = l {
            s = s.xor(a.times(hpow[total - l]));
        }
    }
    let lengths = Gf128 {
        hi: aad.len() as u64 * 8,
        lo: ciphertext.len() as u64 * 8,
    };
    s.xor(lengths.times(h))
}

/// The 12-byte nonce of STREAM chunk `index` (as `sealed::stream` derives it).
pub fn chunk_nonce(prefix: &[u8; NONCE_PREFIX_LEN], index: u32, last: bool) -> [u8; 12] {
    let mut n = [0u8; 12];
    n[..NONCE_PREFIX_LEN].copy_from_slice(prefix);
    n[7..11].copy_from_slice(&index.to_be_bytes());
    n[11] = u8::from(last);
    n
}

/// Decrypts one AES-256-GCM chunk into `out` (same length as `ciphertext`) and returns
/// whether its tag verified (compared in constant time). `out` is written either way; the
/// caller discards it on failure.
pub fn decrypt_chunk(
    keys: &RoundKeys,
    hpow: &[Gf128],
    nonce: &[u8; 12],
    aad: &[u8],
    ciphertext: &[u8],
    tag: &[u8; 16],
    out: &mut [u8],
) -> bool {
    let n = |i: usize| u32::from_be_bytes([nonce[i], nonce[i + 1], nonce[i + 2], nonce[i + 3]]);
    let (n0, n1, n2) = (n(0), n(4), n(8));
    for (b, (c, p)) in ciphertext.chunks(16).zip(out.chunks_mut(16)).enumerate() {
        // Chunks are at most 64 MiB, so b + 2 < 2^32.
        let ks = keys.encrypt_block([n0, n1, n2, b as u32 + 2]);
        let ks = Zeroizing::new(Gf128::from_words(ks).to_bytes());
        for ((p, c), k) in p.iter_mut().zip(c).zip(ks.iter()) {
            *p = c ^ k;
        }
    }
    let s = ghash_lanes(hpow, aad, ciphertext);
    let computed = s.xor(Gf128::from_words(keys.encrypt_block([n0, n1, n2, 1])));
    subtle::ConstantTimeEq::ct_eq(&computed.to_bytes()[..], &tag[..]).into()
}

/// What `decrypt_chunks_on_device` (feature `cuda`) needs to know about a sealed region: its manifest's
/// plaintext length, chunk size, nonce prefix and AAD digest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamLayout {
    /// Plaintext bytes (the sum of the chunk bodies).
    pub plaintext_len: u64,
    /// Plaintext bytes per chunk (the last may be shorter). A multiple of 16 (every size
    /// `seal` writes by default is a power of two) lets the kernel move 16-byte vectors;
    /// other sizes take its byte path.
    pub chunk_size: u32,
    /// The 7-byte STREAM nonce prefix.
    pub nonce_prefix: [u8; NONCE_PREFIX_LEN],
    /// The AAD of every chunk: the manifest's AAD digest.
    pub aad: [u8; 32],
}

impl StreamLayout {
    /// The number of chunks, `max(1, ⌈plaintext_len / chunk_size⌉)`.
    pub fn chunk_count(&self) -> u64 {
        chunk_count(self.plaintext_len, self.chunk_size)
    }

    /// The ciphertext region's length: the bodies and then one tag per chunk.
    pub fn ciphertext_len(&self) -> u64 {
        self.plaintext_len + self.chunk_count() * TAG_LEN
    }

    /// Checks what the device path relies on: a positive plaintext length, a chunk size in
    /// 1 ..= 64 MiB, fewer than 2^32 chunks, and a region of exactly
    /// [`Self::ciphertext_len`] bytes.
    pub fn check(&self, region_len: u64) -> Result<(), GpuError> {
        let bad = |reason: String| {
            Err(GpuError::Arguments {
                kernel: "aes_gcm_stream_decrypt",
                reason,
            })
        };
        if self.plaintext_len == 0 {
            return bad("the plaintext is empty".into());
        }
        if self.chunk_size == 0 || self.chunk_size > 64 << 20 {
            return bad(format!(
                "chunk size {} is outside 1 ..= 64 MiB",
                self.chunk_size
            ));
        }
        if self.chunk_count() > u64::from(u32::MAX) {
            return bad("more than 2^32 - 1 chunks".into());
        }
        if region_len != self.ciphertext_len() {
            return bad(format!(
                "the ciphertext region is {region_len} bytes, the layout needs {}",
                self.ciphertext_len()
            ));
        }
        Ok(())
    }
}

/// The CPU reference of `decrypt_chunks_on_device` (feature `cuda`): decrypts every chunk of `region`
/// (bodies then tags) in the kernel's lane-parallel form. On the first chunk that fails
/// authentication the partial plaintext is dropped (zeroized) and the error names it.
pub fn decrypt_chunks_reference(
    key: &[u8; 32],
    layout: &StreamLayout,
    region: &[u8],
) -> Result<Zeroizing<Vec<u8>>, GpuError> {
    layout.check(region.len() as u64)?;
    let keys = RoundKeys::expand(key);
    let hpow = hash_powers(Gf128::from_words(keys.encrypt_block([0; 4])));
    let plaintext_len = layout.plaintext_len as usize;
    let (bodies, tags) = region.split_at(plaintext_len);
    let mut out = Zeroizing::new(vec![0u8; plaintext_len]);
    let count = layout.chunk_count();
    let chunk = layout.chunk_size as usize;
    for (c, ((body, tag), dst)) in bodies
        .chunks(chunk)
        .zip(tags.chunks_exact(TAG_LEN as usize))
        .zip(out.chunks_mut(chunk))
        .enumerate()
    {
        let nonce = chunk_nonce(&layout.nonce_prefix, c as u32, c as u64 + 1 == count);
        let tag: &[u8; 16] = tag
            .try_into()
            .map_err(|_| GpuError::TagMismatch { chunk: c as u64 })?;
        if !decrypt_chunk(&keys, &hpow, &nonce, &layout.aad, body, tag, dst) {
            return Err(GpuError::TagMismatch { chunk: c as u64 });
        }
    }
    Ok(out)
}

#[cfg(feature = "cuda")]
pub use device::decrypt_chunks_on_device;

/// The launch wrapper (feature `cuda`).
#[cfg(feature = "cuda")]
#[allow(unsafe_code)]
mod device {

    use candle_core::CudaDevice;
    use candle_core::cuda_backend::cudarc::driver::{CudaSlice, LaunchConfig, PushKernelArg};
    use zeroize::Zeroizing;

    use super::super::GpuError;
    use super::super::cuda::driver;
    use super::{LANES, RoundKeys, StreamLayout};

    const KERNEL: &str = "aes_gcm_stream_decrypt";

    /// Decrypts and authenticates a sealed model's ciphertext region on the device.
    ///
    /// `ciphertext` holds the region exactly as the sealed file stores it after the
    /// signature: every chunk body in order (`layout.plaintext_len` bytes), then one 16-byte
    /// GCM tag per chunk ([`StreamLayout::ciphertext_len`] bytes in all). Copy it to the device
    /// with `dev.cuda_stream().clone_htod(&file.ciphertext())` (it is ciphertext, so it may
    /// pass through host memory). Build `layout` with [`StreamLayout::from_manifest`] from the
    /// **verified** manifest.
    ///
    /// Returns a new device buffer of `layout.plaintext_len` bytes holding the plaintext
    /// (the safetensors blob), on candle's stream of `device`, so candle operations queued
    /// afterwards see it. The expanded key is uploaded for the launch and zeroized on the
    /// device afterwards; the host copies are zeroized on drop.
    ///
    /// # Errors
    ///
    /// - [`GpuError::TagMismatch`] with the first failing chunk when any chunk does not
    ///   authenticate (wrong key, a modified, reordered, truncated or foreign chunk): both the
    ///   plaintext buffer and `ciphertext` are zeroized (device memset) before it returns, so
    ///   no unauthenticated plaintext survives.
    /// - [`GpuError::Arguments`] when the layout does not fit ([`StreamLayout::check`]).
    /// - [`GpuError::Driver`] on CUDA errors.
    pub fn decrypt_chunks_on_device(
        device: &CudaDevice,
        key: &[u8; 32],
        ciphertext: &mut CudaSlice<u8>,
        layout: &StreamLayout,
    ) -> Result<CudaSlice<u8>, GpuError> {
        layout.check(ciphertext.len() as u64)?;
        let count = layout.chunk_count();
        let plaintext_len =
            usize::try_from(layout.plaintext_len).map_err(|_| GpuError::Arguments {
                kernel: KERNEL,
                reason: "the plaintext does not fit in memory".into(),
            })?;
        let chunks = usize::try_from(count).map_err(driver)?;
        let keys = RoundKeys::expand(key);
        let stream = device.cuda_stream();
        let mut round_keys = stream
            .clone_htod(&keys.secret_words()[..])
            .map_err(driver)?;
        let aad = stream.clone_htod(&layout.aad[..]).map_err(driver)?;
        let mut ok = stream.alloc_zeros::<u32>(chunks).map_err(driver)?;
        let mut out = stream.alloc_zeros::<u8>(plaintext_len).map_err(driver)?;
        let p = &layout.nonce_prefix;
        let prefix0 = u32::from_be_bytes([p[0], p[1], p[2], p[3]]);
        let prefix1 = u32::from_be_bytes([0, p[4], p[5], p[6]]);
        let aad_len = layout.aad.len() as u32;
        let chunk_size = layout.chunk_size;
        let f = device.get_or_load_custom_func(
            KERNEL,
            "confidant_aes_gcm",
            super::super::ptx::AES_GCM,
        )?;
        let mut b = f.builder();
        b.arg(&mut out);
        b.arg(&*ciphertext);
        b.arg(&layout.plaintext_len).arg(&chunk_size).arg(&count);
        b.arg(&round_keys);
        b.arg(&prefix0).arg(&prefix1);
        b.arg(&aad).arg(&aad_len);
        b.arg(&mut ok);
        let cfg = LaunchConfig {
            grid_dim: (count.min(1 << 20) as u32, 1, 1),
            block_dim: (LANES as u32, 1, 1),
            shared_mem_bytes: 0,
        };
        // SAFETY: the arguments match aes_gcm_stream_decrypt(u8*, const u8*, u64, u32, u64,
        // const u32*, u32, u32, const u8*, u32, u32*) in kernels/aes_gcm.cu in type and
        // order. layout.check established what the kernel assumes: ciphertext holds
        // plaintext_len + 16·count bytes, 0 < chunk_size <= 64 MiB, count < 2^32 (the kernel
        // uses 16-byte accesses only when it finds the pointers and chunk size aligned); out holds plaintext_len bytes, ok count words, round_keys 60 words,
        // aad aad_len bytes; the block is LANES threads, as the kernel requires.
        unsafe { b.launch(cfg) }.map_err(driver)?;
        drop(b);
        stream.memset_zeros(&mut round_keys).map_err(driver)?;
        let flags = Zeroizing::new(stream.clone_dtoh(&ok).map_err(driver)?);
        stream.synchronize().map_err(driver)?;
        if let Some(bad) = flags.iter().position(|&f| f != 1) {
            stream.memset_zeros(&mut out).map_err(driver)?;
            stream.memset_zeros(ciphertext).map_err(driver)?;
            stream.synchronize().map_err(driver)?;
            return Err(GpuError::TagMismatch { chunk: bad as u64 });
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests;
