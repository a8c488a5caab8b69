//! Sealed-model decryption throughput against two same-run baselines.
//!
//! The model is a real, valid MLP (4096 → 4096 → 2, f32) so that `seal` accepts it: about
//! 64 MiB of safetensors, sealed in the default 1 MiB STREAM chunks. Every function in the
//! group reports throughput over the same plaintext byte count.
//!
//! - `confidant`: the server's path once the file is in memory: `verify` (Ed25519 over the
//!   manifest) then `into_plaintext` (decrypt every chunk in parallel, in place, in the locked
//!   buffer the file was read into). The server reads the file straight into that buffer; here
//!   `SealedFile::parse` copies it there in the untimed setup, as the ring baseline's setup
//!   copies the ciphertext. Dropping the plaintext (zeroize) is also untimed.
//! - `confidant_unseal_digests`: `unseal(.., check_digests = true)`, the full load path with
//!   both SHA-256 digests recomputed. Only the clone of the file bytes is untimed.
//! - `memcpy`: one `copy_from_slice` of the same number of bytes between two buffers that are
//!   already faulted in (one core).
//! - `ring_all_cores`: ring AES-256-GCM `open_in_place_separate_tag` over the very same 1 MiB
//!   chunks, with the same key, nonces and AAD, on all cores with rayon. The ciphertext clone
//!   it decrypts in place is made in the untimed setup, so this is pure decryption.
//! - `alloc_secret_buffer` (diagnostic): `SecretBuffer::zeroed` of the plaintext size (a
//!   huge-page mapping locked on fault: nearly free until written).
//!
//! Run: `cargo bench --bench sealed -- --warm-up-time 1 --measurement-time 5`.

use std::collections::HashMap;
use std::hint::black_box;

use confidant::engine::ModelConfig;
use confidant::sealed::{
    DataKey, PublisherSigningKey, SealOptions, SealedFile, VerifiedSealedFile, seal, unseal,
};
use criterion::{BatchSize, Criterion, Throughput};
use rayon::prelude::*;
use ring::aead::{AES_256_GCM, Aad, LessSafeKey, Nonce, Tag, UnboundKey};
use safetensors::tensor::TensorView;

/// Input width and hidden width: 4096 × 4096 f32 weights are 64 MiB.
const WIDTH: usize = 4096;
const TAG_LEN: usize = 16;

/// Deterministic values in [-0.05, 0.05) (finite, so `seal` accepts them).
fn values(n: usize, seed: u64) -> Vec<u8> {
    let mut s = seed | 1;
    let mut out = Vec::with_capacity(n * 4);
    for _ in 0..n {
        // xorshift64*
        s ^= s >> 12;
        s ^= s << 25;
        s ^= s >> 27;
        let r = s.wrapping_mul(0x2545_F491_4F6C_DD1D);
        let v = ((r >> 40) as f32 / (1u64 << 24) as f32 - 0.5) * 0.1;
        out.extend_from_slice(&v.to_le_bytes());
    }
    out
}

#[allow(clippy::expect_used)]
fn view(shape: Vec<usize>, data: &[u8]) -> TensorView<'_> {
    TensorView::new(safetensors::Dtype::F32, shape, data).expect("tensor view")
}

fn wide_model() -> (ModelConfig, Vec<u8>) {
    let w0 = values(WIDTH * WIDTH, 1);
    let b0 = values(WIDTH, 2);
    let w2 = values(2 * WIDTH, 3);
    let b2 = values(2, 4);
    let tensors = vec![
        ("0.weight", view(vec![WIDTH, WIDTH], &w0)),
        ("0.bias", view(vec![WIDTH], &b0)),
        ("2.weight", view(vec![2, WIDTH], &w2)),
        ("2.bias", view(vec![2], &b2)),
    ];
    #[allow(clippy::expect_used)]
    let weights = safetensors::serialize(tensors, None::<HashMap<String, String>>)
        .expect("serialize safetensors");
    let features: Vec<String> = (0..WIDTH).map(|i| format!("f{i}")).collect();
    let config = serde_json::json!({
        "id": "bench-wide", "version": "1.0.0",
        "architecture": {"kind": "mlp", "output": "softmax", "layers": [
            {"weight": "0.weight", "bias": "0.bias", "activation": "relu"},
            {"weight": "2.weight", "bias": "2.bias", "activation": "none"}]},
        "input": {"features": features, "min": vec![-1.0; WIDTH], "max": vec![1.0; WIDTH]},
        "labels": ["a", "b"]
    });
    #[allow(clippy::expect_used)]
    let config = ModelConfig::from_json(config.to_string().as_bytes()).expect("model config");
    (config, weights)
}

fn ring_open_all(
    key: &LessSafeKey,
    prefix: &[u8; 7],
    aad: &[u8; 32],
    chunk: usize,
    plaintext_len: usize,
    ct: &mut [u8],
) {
    // The sealed layout: every chunk body, then every 16-byte tag.
    let (bodies, tags) = ct.split_at_mut(plaintext_len);
    let count = bodies.len().div_ceil(chunk);
    bodies
        .par_chunks_mut(chunk)
        .zip(tags.par_chunks(TAG_LEN))
        .enumerate()
        .for_each(|(i, (body, tag))| {
            let mut n = [0u8; 12];
            n[..7].copy_from_slice(prefix);
            n[7..11].copy_from_slice(&(i as u32).to_be_bytes());
            n[11] = u8::from(i + 1 == count);
            #[allow(clippy::expect_used)]
            let tag = Tag::try_from(tag).expect("16-byte tag");
            #[allow(clippy::expect_used)]
            key.open_in_place_separate_tag(
                Nonce::assume_unique_for_key(n),
                Aad::from(aad),
                tag,
                body,
                0..,
            )
            .expect("baseline chunk authenticates");
        });
}

#[allow(clippy::expect_used)]
fn bench_decrypt(c: &mut Criterion) {
    let (config, weights) = wide_model();
    let publisher = PublisherSigningKey::generate().expect("publisher key");
    let trusted = [publisher.public_key()];
    let sealed = seal(&config, &weights, &publisher, &SealOptions::default()).expect("seal");
    let key: DataKey = sealed.data_key;
    let file = sealed.file;

    // Sanity: the server path round-trips before anything is timed.
    let verified: VerifiedSealedFile = SealedFile::parse(file.clone())
        .expect("parse")
        .verify(&trusted)
        .expect("verify");
    assert_eq!(
        verified.decrypt(&key).expect("decrypt").secret_bytes(),
        weights.as_slice()
    );
    let manifest = verified.manifest().clone();
    let ciphertext = verified.file().ciphertext().to_vec();
    drop(verified);
    let prefix = manifest.nonce_prefix().expect("nonce prefix");
    let aad = manifest.aad_digest().expect("aad digest");
    let chunk = manifest.encryption.chunk_size as usize;
    let ring_key =
        LessSafeKey::new(UnboundKey::new(&AES_256_GCM, key.secret_bytes()).expect("AES-256 key"));

    let mut group = c.benchmark_group("sealed_decrypt");
    group.throughput(Throughput::Bytes(weights.len() as u64));
    group.sample_size(30);

    group.bench_function("confidant", |b| {
        b.iter_batched(
            || SealedFile::parse(file.clone()).expect("parse"),
            |parsed| {
                // The server's path: verify, then decrypt in place in the locked buffer the
                // file was read into (parse copied it there, untimed, as the file read would).
                let verified = parsed.verify(&trusted).expect("verify");
                verified.into_plaintext(&key).expect("decrypt")
            },
            BatchSize::PerIteration,
        );
    });

    group.bench_function("confidant_unseal_digests", |b| {
        b.iter_batched(
            || file.clone(),
            |bytes| unseal(bytes, &trusted, &key, true).expect("unseal"),
            BatchSize::PerIteration,
        );
    });

    let src = weights.clone();
    let mut dst = vec![0u8; src.len()];
    group.bench_function("memcpy", |b| {
        b.iter(|| {
            dst.copy_from_slice(black_box(&src));
            black_box(&mut dst);
        });
    });

    group.bench_function("ring_all_cores", |b| {
        b.iter_batched(
            || ciphertext.clone(),
            |mut ct| {
                ring_open_all(&ring_key, &prefix, &aad, chunk, weights.len(), &mut ct);
                ct
            },
            BatchSize::PerIteration,
        );
    });
    // Diagnostic: the part of `confidant` that is not decryption, allocating (and locking)
    // the plaintext buffer. Dropping it (zeroize, munlock, free) is untimed.
    group.bench_function("alloc_secret_buffer", |b| {
        b.iter_with_large_drop(|| confidant::secure::SecretBuffer::zeroed(weights.len()));
    });
    group.finish();
}

fn main() {
    // Before any thread exists (criterion, rayon, candle): fixes RAYON_NUM_THREADS.
    // SAFETY: the first statement of `main`: no other thread exists yet.
    #[allow(unsafe_code)]
    let threads = unsafe { confidant::secure::pin_thread_count() };
    eprintln!("sealed bench: {threads} rayon threads");
    let mut c = Criterion::default().configure_from_args();
    bench_decrypt(&mut c);
    c.final_summary();
}
