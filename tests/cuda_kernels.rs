//! The CUDA kernels against their CPU references (feature `cuda`; each test prints a notice
//! and passes when no device answers, so the suite runs anywhere but checks only on a GPU).
//! The experimental noise kernels are checked in `cuda_noise.rs`.
#![cfg(feature = "cuda")]

use confidant::gpu::GpuError;
use confidant::gpu::aes_gcm::{self, StreamLayout};
use confidant::sealed::stream::DataKey;

mod cuda_common;
use cuda_common::device;

fn sealed_region(len: usize, chunk_size: u32) -> (DataKey, StreamLayout, Vec<u8>, Vec<u8>) {
    let key = DataKey::generate().expect("OS randomness");
    let layout = StreamLayout {
        plaintext_len: len as u64,
        chunk_size,
        nonce_prefix: [3, 1, 4, 1, 5, 9, 2],
        aad: std::array::from_fn(|i| i as u8),
    };
    let plaintext: Vec<u8> = (0..len).map(|i| (i * 131 % 253) as u8).collect();
    let region = confidant_seal(&key, &layout, &plaintext);
    (key, layout, region, plaintext)
}

/// Seals `plaintext` in the STREAM layout (bodies, then tags) as `sealed::stream::encrypt`
/// does (it is crate-private), with ring as the independent AES-GCM.
fn confidant_seal(key: &DataKey, layout: &StreamLayout, plaintext: &[u8]) -> Vec<u8> {
    use ring::aead::{AES_256_GCM, Aad, LessSafeKey, Nonce, UnboundKey};
    let k =
        LessSafeKey::new(UnboundKey::new(&AES_256_GCM, key.secret_bytes()).expect("a 32-byte key"));
    let count = layout.chunk_count();
    let mut bodies = plaintext.to_vec();
    let mut tags = Vec::new();
    for (i, body) in bodies.chunks_mut(layout.chunk_size as usize).enumerate() {
        let nonce = aes_gcm::chunk_nonce(&layout.nonce_prefix, i as u32, i as u64 + 1 == count);
        let tag = k
            .seal_in_place_separate_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(&layout.aad),
                body,
            )
            .expect("AES-GCM seal");
        tags.extend_from_slice(tag.as_ref());
    }
    bodies.extend_from_slice(&tags);
    bodies
}

#[test]
fn device_decryption_equals_ring_and_the_reference() {
    let Some((_, dev)) = device() else { return };
    let stream = dev.cuda_stream();
    for (len, chunk) in [
        (1usize, 4096u32),
        (4096, 4096),
        (4096 * 5 + 77, 4096),
        (3 << 20, 1 << 20),
        (100_000, 65_536),
        (4100 * 3 + 9, 4100),
    ] {
        let (key, layout, region, plaintext) = sealed_region(len, chunk);
        let mut ct = stream.clone_htod(&region[..]).unwrap();
        let out = aes_gcm::decrypt_chunks_on_device(
            &dev,
            &confidant::loading::data_key_bytes(&key).unwrap(),
            &mut ct,
            &layout,
        )
        .unwrap();
        assert_eq!(stream.clone_dtoh(&out).unwrap(), plaintext, "len {len}");
        let k = confidant::loading::data_key_bytes(&key).unwrap();
        let reference = aes_gcm::decrypt_chunks_reference(&k, &layout, &region).unwrap();
        assert_eq!(&reference[..], &plaintext[..]);
    }
}

#[test]
fn device_decryption_of_a_sealed_model() {
    let Some((_, dev)) = device() else { return };
    let config = confidant::demo::config().unwrap();
    let publisher = confidant::sealed::PublisherSigningKey::generate().unwrap();
    let sealed = confidant::sealed::seal(
        &config,
        confidant::demo::WEIGHTS,
        &publisher,
        &confidant::sealed::SealOptions::default(),
    )
    .unwrap();
    let file = confidant::sealed::SealedFile::parse(sealed.file.clone()).unwrap();
    let layout = confidant::loading::stream_layout(file.manifest()).unwrap();
    let stream = dev.cuda_stream();
    let mut ct = stream.clone_htod(file.ciphertext()).unwrap();
    let out = aes_gcm::decrypt_chunks_on_device(
        &dev,
        &confidant::loading::data_key_bytes(&sealed.data_key).unwrap(),
        &mut ct,
        &layout,
    )
    .unwrap();
    assert_eq!(stream.clone_dtoh(&out).unwrap(), confidant::demo::WEIGHTS);
}

#[test]
fn tampering_is_detected_and_the_buffers_zeroized() {
    let Some((_, dev)) = device() else { return };
    let stream = dev.cuda_stream();
    let (key, layout, region, _) = sealed_region(4096 * 3 + 10, 4096);
    let tag_of_last = region.len() - 16;
    for (at, chunk) in [(5000usize, 1u64), (tag_of_last + 15, 3), (0, 0)] {
        let mut bad = region.clone();
        bad[at] ^= 0x01;
        let mut ct = stream.clone_htod(&bad[..]).unwrap();
        match aes_gcm::decrypt_chunks_on_device(
            &dev,
            &confidant::loading::data_key_bytes(&key).unwrap(),
            &mut ct,
            &layout,
        ) {
            Err(GpuError::TagMismatch { chunk: c }) => assert_eq!(c, chunk, "byte {at}"),
            other => panic!(
                "byte {at}: expected a tag mismatch, got {:?}",
                other.map(|_| ())
            ),
        }
        assert!(
            stream.clone_dtoh(&ct).unwrap().iter().all(|&b| b == 0),
            "input zeroized"
        );
    }
    let wrong = DataKey::generate().unwrap();
    let mut ct = stream.clone_htod(&region[..]).unwrap();
    assert!(matches!(
        aes_gcm::decrypt_chunks_on_device(
            &dev,
            &confidant::loading::data_key_bytes(&wrong).unwrap(),
            &mut ct,
            &layout
        ),
        Err(GpuError::TagMismatch { chunk: 0 })
    ));
}

#[test]
fn bench_helper_reports_throughput() {
    let Some((_, dev)) = device() else { return };
    let aes_gbps = confidant::loading::cuda::bench_decrypt_gbps(&dev, 256 << 20).unwrap();
    eprintln!("BENCH aes-gcm decrypt {aes_gbps:.1} GB/s");
    assert!(aes_gbps > 0.0);
}
