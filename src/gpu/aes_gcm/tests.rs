use ring::aead::{AES_256_GCM, Aad, LessSafeKey, Nonce, UnboundKey};

use super::*;
use crate::sealed::{PublisherSigningKey, SealOptions, SealedFile, seal};

fn hex(s: &str) -> Vec<u8> {
    hex::decode(s).unwrap()
}

/// A deterministic byte pattern (xorshift), for keys and messages.
fn bytes(seed: u64, n: usize) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

/// ring's AES-256-GCM (an independent implementation): ciphertext and tag.
fn ring_seal(
    key: &[u8; 32],
    nonce: &[u8; 12],
    aad: &[u8],
    plaintext: &[u8],
) -> (Vec<u8>, [u8; 16]) {
    let k = LessSafeKey::new(UnboundKey::new(&AES_256_GCM, key).unwrap());
    let mut ct = plaintext.to_vec();
    let tag = k
        .seal_in_place_separate_tag(
            Nonce::assume_unique_for_key(*nonce),
            Aad::from(aad),
            &mut ct,
        )
        .unwrap();
    (ct, tag.as_ref().try_into().unwrap())
}

fn open(
    key: &[u8; 32],
    nonce: &[u8; 12],
    aad: &[u8],
    ct: &[u8],
    tag: &[u8; 16],
) -> (Vec<u8>, bool) {
    let keys = RoundKeys::expand(key);
    let hpow = hash_powers(Gf128::from_words(keys.encrypt_block([0; 4])));
    let mut out = vec![0u8; ct.len()];
    let ok = decrypt_chunk(&keys, &hpow, nonce, aad, ct, tag, &mut out);
    (out, ok)
}

/// FIPS 197 Appendix C.3 (AES-256).
#[test]
fn fips_197_aes_256() {
    let key: [u8; 32] = std::array::from_fn(|i| i as u8);
    let keys = RoundKeys::expand(&key);
    let pt = Gf128::from_bytes(&hex("00112233445566778899aabbccddeeff"));
    let words = [
        (pt.hi >> 32) as u32,
        pt.hi as u32,
        (pt.lo >> 32) as u32,
        pt.lo as u32,
    ];
    let ct = Gf128::from_words(keys.encrypt_block(words)).to_bytes();
    assert_eq!(ct.to_vec(), hex("8ea2b7ca516745bfeafc49904b496089"));
}

/// McGrew & Viega, "The Galois/Counter Mode of Operation", Test Case 16 (AES-256, 60-byte
/// plaintext, 20-byte AAD).
#[test]
fn gcm_test_case_16() {
    let key: [u8; 32] = hex("feffe9928665731c6d6a8f9467308308feffe9928665731c6d6a8f9467308308")
        .try_into()
        .unwrap();
    let nonce: [u8; 12] = hex("cafebabefacedbaddecaf888").try_into().unwrap();
    let aad = hex("feedfacedeadbeeffeedfacedeadbeefabaddad2");
    let pt = hex(concat!(
        "d9313225f88406e5a55909c5aff5269a86a7a9531534f7da2e4c303d8a318a72",
        "1c3c0c95956809532fcf0e2449a6b525b16aedf5aa0de657ba637b39"
    ));
    let ct = hex(concat!(
        "522dc1f099567d07f47f37a32a84427d643a8cdcbfe5c0c97598a2bd2555d1aa",
        "8cb08e48590dbb3da7b08b1056828838c5f61e6393ba7a0abcc9f662"
    ));
    let tag: [u8; 16] = hex("76fc6ece0f4e1768cddf8853bb2d551b").try_into().unwrap();
    assert_eq!(
        ring_seal(&key, &nonce, &aad, &pt),
        (ct.clone(), tag),
        "the vector itself"
    );
    let (out, ok) = open(&key, &nonce, &aad, &ct, &tag);
    assert!(ok);
    assert_eq!(out, pt);
}

#[test]
fn lane_ghash_equals_sequential_ghash() {
    let h = Gf128::from_bytes(&bytes(1, 16));
    let hpow = hash_powers(h);
    for (aad_len, ct_len) in [
        (0, 0),
        (32, 0),
        (0, 1),
        (32, 4096),
        (20, 16 * LANES * 3 + 5),
    ] {
        let aad = bytes(2, aad_len);
        let ct = bytes(3, ct_len);
        let mut y = Gf128::default();
        for x in aad.chunks(16).chain(ct.chunks(16)) {
            y = y.xor(Gf128::from_bytes(x)).times(h);
        }
        let lengths = Gf128 {
            hi: aad_len as u64 * 8,
            lo: ct_len as u64 * 8,
        };
        y = y.xor(lengths).times(h);
        assert_eq!(
            ghash_lanes(&hpow, &aad, &ct),
            y,
            "aad {aad_len} ct {ct_len}"
        );
    }
}

#[test]
fn random_chunks_equal_ring_and_tampering_is_detected() {
    for (i, len) in [
        0usize,
        1,
        15,
        16,
        17,
        255,
        4096,
        4101,
        16 * LANES + 16 * 3 + 9,
    ]
    .into_iter()
    .enumerate()
    {
        let key: [u8; 32] = bytes(10 + i as u64, 32).try_into().unwrap();
        let nonce: [u8; 12] = bytes(20 + i as u64, 12).try_into().unwrap();
        let aad = bytes(30 + i as u64, 32);
        let pt = bytes(40 + i as u64, len);
        let (ct, tag) = ring_seal(&key, &nonce, &aad, &pt);
        let (out, ok) = open(&key, &nonce, &aad, &ct, &tag);
        assert!(ok, "len {len}");
        assert_eq!(out, pt, "len {len}");
        let mut bad_tag = tag;
        bad_tag[i % 16] ^= 0x40;
        assert!(!open(&key, &nonce, &aad, &ct, &bad_tag).1, "tag, len {len}");
        if len > 0 {
            let mut bad = ct.clone();
            bad[len / 2] ^= 1;
            assert!(!open(&key, &nonce, &aad, &bad, &tag).1, "body, len {len}");
        }
        let mut bad_aad = aad.clone();
        bad_aad[0] ^= 1;
        assert!(!open(&key, &nonce, &bad_aad, &ct, &tag).1, "aad, len {len}");
    }
}

/// A small model sealed in 4 KiB chunks: the sealed file, its layout, its ciphertext region
/// and the plaintext weights.
fn sealed_demo() -> (crate::sealed::Sealed, StreamLayout, Vec<u8>, Vec<u8>) {
    let (config, weights) = crate::sealed::tests::test_model("gpu-aes-gcm", 256);
    let publisher = PublisherSigningKey::generate().unwrap();
    let options = SealOptions {
        chunk_size: 4096,
        ..SealOptions::default()
    };
    let sealed = seal(&config, &weights, &publisher, &options).unwrap();
    let file = SealedFile::parse(sealed.file.clone()).unwrap();
    let layout = crate::loading::stream_layout(file.manifest()).unwrap();
    let region = file.ciphertext().to_vec();
    (sealed, layout, region, weights)
}

#[test]
fn the_reference_opens_every_chunk_of_a_sealed_model() {
    let (sealed, layout, region, weights) = sealed_demo();
    assert!(layout.chunk_count() >= 3, "the test needs several chunks");
    let key = crate::loading::data_key_bytes(&sealed.data_key).unwrap();
    let plaintext = decrypt_chunks_reference(&key, &layout, &region).unwrap();
    assert_eq!(&plaintext[..], &weights[..]);
}

#[test]
fn the_reference_rejects_a_tampered_sealed_model() {
    let (sealed, layout, region, _) = sealed_demo();
    let key = crate::loading::data_key_bytes(&sealed.data_key).unwrap();
    let body_byte = 4096 + 100; // in chunk 1
    let tag_byte = region.len() - 16 + 3; // the last chunk's tag
    for (at, chunk) in [(body_byte, 1u64), (tag_byte, layout.chunk_count() - 1)] {
        let mut bad = region.clone();
        bad[at] ^= 0x80;
        match decrypt_chunks_reference(&key, &layout, &bad) {
            Err(GpuError::TagMismatch { chunk: c }) => assert_eq!(c, chunk),
            other => panic!("expected a tag mismatch, got {:?}", other.map(|_| ())),
        }
    }
    // A wrong key fails on chunk 0; a truncated region is refused before decrypting.
    let wrong = [0u8; 32];
    assert!(matches!(
        decrypt_chunks_reference(&wrong, &layout, &region),
        Err(GpuError::TagMismatch { chunk: 0 })
    ));
    assert!(matches!(
        decrypt_chunks_reference(&key, &layout, &region[..region.len() - 1]),
        Err(GpuError::Arguments { .. })
    ));
}

#[test]
fn layouts_the_device_cannot_take_are_refused() {
    let base = StreamLayout {
        plaintext_len: 100,
        chunk_size: 4096,
        nonce_prefix: [0; 7],
        aad: [0; 32],
    };
    assert!(base.check(116).is_ok());
    let odd = StreamLayout {
        chunk_size: 4100,
        ..base.clone()
    };
    assert!(
        odd.check(116).is_ok(),
        "the kernel's byte path takes any chunk size"
    );
    let huge = StreamLayout {
        chunk_size: (64 << 20) + 1,
        ..base.clone()
    };
    assert!(huge.check(116).is_err());
    let empty = StreamLayout {
        plaintext_len: 0,
        ..base
    };
    assert!(empty.check(16).is_err());
}
