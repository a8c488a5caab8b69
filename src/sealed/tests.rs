use super::*;
use crate::engine::ModelConfig;

/// A valid model of `8 → hidden → 2` whose safetensors blob spans several 4 KiB chunks.
pub(crate) fn test_model(id: &str, hidden: usize) -> (ModelConfig, Vec<u8>) {
    let config = ModelConfig::from_json(
        serde_json::json!({
            "id": id, "version": "1.0.0",
            "architecture": {"kind": "mlp", "output": "softmax", "layers": [
                {"weight": "0.weight", "bias": "0.bias", "activation": "relu"},
                {"weight": "2.weight", "bias": "2.bias", "activation": "none"}]},
            "input": {"features": (0..8).map(|i| format!("f{i}")).collect::<Vec<_>>(),
                      "min": vec![-1.0f32; 8], "max": vec![1.0f32; 8]},
            "labels": ["no", "yes"]
        })
        .to_string()
        .as_bytes(),
    )
    .expect("valid test config");
    let w0: Vec<f32> = (0..hidden * 8)
        .map(|i| ((i % 13) as f32 - 6.0) / 10.0)
        .collect();
    let b0: Vec<f32> = (0..hidden).map(|i| (i % 5) as f32 / 10.0).collect();
    let w2: Vec<f32> = (0..2 * hidden)
        .map(|i| ((i % 7) as f32 - 3.0) / 10.0)
        .collect();
    let b2 = vec![0.1f32, -0.1];
    let bytes = |v: &[f32]| v.iter().flat_map(|x| x.to_le_bytes()).collect::<Vec<u8>>();
    let (w0b, b0b, w2b, b2b) = (bytes(&w0), bytes(&b0), bytes(&w2), bytes(&b2));
    use safetensors::tensor::TensorView;
    let views = vec![
        (
            "0.weight",
            TensorView::new(safetensors::Dtype::F32, vec![hidden, 8], &w0b).unwrap(),
        ),
        (
            "0.bias",
            TensorView::new(safetensors::Dtype::F32, vec![hidden], &b0b).unwrap(),
        ),
        (
            "2.weight",
            TensorView::new(safetensors::Dtype::F32, vec![2, hidden], &w2b).unwrap(),
        ),
        (
            "2.bias",
            TensorView::new(safetensors::Dtype::F32, vec![2], &b2b).unwrap(),
        ),
    ];
    let blob = safetensors::serialize(views, None).expect("serialize");
    (config, blob)
}

struct Fixture {
    publisher: PublisherSigningKey,
    sealed: Sealed,
    weights: Vec<u8>,
}

fn fixture() -> Fixture {
    let (config, weights) = test_model("tamper", 256);
    let publisher = PublisherSigningKey::generate().unwrap();
    let options = SealOptions {
        chunk_size: 4096,
        ..SealOptions::default()
    };
    let sealed = seal(&config, &weights, &publisher, &options).unwrap();
    assert!(
        sealed.manifest.encryption.chunks >= 3,
        "test needs several chunks"
    );
    Fixture {
        publisher,
        sealed,
        weights,
    }
}

/// The full load path with digest checks; returns the error text on refusal.
fn load(f: &Fixture, bytes: Vec<u8>) -> Result<(), String> {
    unseal(bytes, &[f.publisher.public_key()], &f.sealed.data_key, true)
        .map(|_| ())
        .map_err(|e| e.to_string())
}

/// The load path without digest checks: only the AEAD tags stand guard.
fn load_aead_only(f: &Fixture, bytes: Vec<u8>) -> Result<(), String> {
    unseal(
        bytes,
        &[f.publisher.public_key()],
        &f.sealed.data_key,
        false,
    )
    .map(|_| ())
    .map_err(|e| e.to_string())
}

fn header_len(f: &Fixture) -> usize {
    14 + f.sealed.manifest.to_canonical_json().unwrap().len() + 64
}

#[test]
fn round_trip() {
    let f = fixture();
    let out = unseal(
        f.sealed.file.clone(),
        &[f.publisher.public_key()],
        &f.sealed.data_key,
        true,
    )
    .unwrap();
    assert_eq!(out.weights.secret_bytes(), f.weights.as_slice());
    assert_eq!(out.manifest, f.sealed.manifest);
    assert_eq!(
        out.manifest.encryption.key_resource,
        "default/models/tamper"
    );
}

#[test]
fn empty_plaintext_has_one_authenticated_chunk() {
    let key = DataKey::generate().unwrap();
    let prefix = [7u8; 7];
    let aad = [1u8; 32];
    let ct = stream::encrypt(&key, &prefix, &aad, 4096, &[]).unwrap();
    assert_eq!(ct.len(), 16);
    let mut out = [0u8; 16];
    stream::decrypt_into(&key, &prefix, &aad, 4096, 0, &ct, &mut out).unwrap();
    let mut bad = ct.clone();
    bad[0] ^= 1;
    assert!(matches!(
        stream::decrypt_into(&key, &prefix, &aad, 4096, 0, &bad, &mut out),
        Err(SealedError::ChunkAuthentication { index: 0, .. })
    ));
}

#[test]
fn layout_is_bodies_then_tags_and_decrypts_in_place() {
    let key = DataKey::generate().unwrap();
    let prefix = [4u8; 7];
    let aad = [5u8; 32];
    let pt: Vec<u8> = (0..10_000u32).map(|i| (i % 251) as u8).collect();
    let mut region = stream::encrypt(&key, &prefix, &aad, 4096, &pt).unwrap();
    assert_eq!(region.len(), pt.len() + 3 * 16);
    stream::decrypt_in_place(&key, &prefix, &aad, 4096, pt.len(), &mut region).unwrap();
    assert_eq!(&region[..pt.len()], pt.as_slice());
}

#[test]
fn every_flipped_header_manifest_or_signature_byte_is_refused() {
    let f = fixture();
    for i in 0..header_len(&f) {
        let mut b = f.sealed.file.clone();
        b[i] ^= 0x01;
        let err = load_aead_only(&f, b).expect_err(&format!("flip at byte {i} accepted"));
        assert!(
            [
                "bad magic",
                "format version",
                "manifest",
                "truncated",
                "ciphertext length",
                "signature"
            ]
            .iter()
            .any(|k| err.contains(k)),
            "byte {i}: message names no check: {err}"
        );
    }
}

#[test]
fn flipped_ciphertext_bytes_fail_the_digest_and_the_aead_checks() {
    let f = fixture();
    let start = header_len(&f);
    let len = f.sealed.file.len();
    let tags = len - f.sealed.manifest.encryption.chunks as usize * 16;
    // Every byte of the first chunk's body, a stride through the other bodies, and every
    // byte of the tag table.
    let positions = (start..start + 4096)
        .chain((start + 4096..tags).step_by(61))
        .chain(tags..len);
    for i in positions {
        let mut b = f.sealed.file.clone();
        b[i] ^= 0x80;
        let full = load(&f, b.clone()).expect_err("accepted");
        assert!(full.contains("ciphertext SHA-256 check failed"), "{full}");
        let aead = load_aead_only(&f, b).expect_err("accepted without digest check");
        assert!(aead.contains("failed AES-256-GCM authentication"), "{aead}");
    }
}

#[test]
fn inspect_path_detects_ciphertext_flip_without_the_key() {
    let f = fixture();
    let mut b = f.sealed.file.clone();
    let last = b.len() - 100;
    b[last] ^= 4;
    let file = SealedFile::parse(b).unwrap();
    let err = file.verify_ciphertext_digest().unwrap_err();
    assert!(matches!(err, SealedError::CiphertextDigest));
}

#[test]
fn truncation_and_trailing_bytes_are_refused() {
    let f = fixture();
    let full = f.sealed.file.clone();
    for cut in [
        0,
        5,
        13,
        20,
        header_len(&f) - 1,
        header_len(&f),
        full.len() - 16,
        full.len() - 1,
    ] {
        let err = load(&f, full[..cut].to_vec()).expect_err("truncated file accepted");
        assert!(
            err.contains("truncated") || err.contains("ciphertext length"),
            "cut {cut}: {err}"
        );
    }
    let mut longer = full.clone();
    longer.push(0);
    let err = load(&f, longer).unwrap_err();
    assert!(err.contains("ciphertext length check failed"), "{err}");
}

#[test]
fn dropping_the_final_chunk_is_refused_even_with_a_forged_length() {
    // Cutting the last chunk would also need a new manifest, which breaks the signature; at
    // the AEAD level, the last-chunk flag makes a shortened stream fail.
    let key = DataKey::generate().unwrap();
    let prefix = [9u8; 7];
    let aad = [2u8; 32];
    let pt = vec![5u8; 4096 * 3];
    let ct = stream::encrypt(&key, &prefix, &aad, 4096, &pt).unwrap();
    let tags = 4096 * 3;
    let mut two_chunks = ct[..4096 * 2].to_vec();
    two_chunks.extend_from_slice(&ct[tags..tags + 32]);
    let err =
        stream::decrypt_in_place(&key, &prefix, &aad, 4096, 4096 * 2, &mut two_chunks).unwrap_err();
    assert!(
        matches!(err, SealedError::ChunkAuthentication { index: 1, .. }),
        "{err}"
    );
    assert!(
        two_chunks[..4096 * 2].iter().all(|b| *b == 0),
        "failed decryption must leave no plaintext"
    );
}

/// Swaps chunks `a` and `b` (bodies and tags) of the fixture file.
fn swap_chunks(f: &Fixture, bytes: &mut [u8], a: usize, b: usize) {
    let start = header_len(f);
    let tags = bytes.len() - f.sealed.manifest.encryption.chunks as usize * 16;
    let (lo, hi) = (a.min(b), a.max(b));
    let body = |i: usize| start + i * 4096;
    let (x, y) = bytes.split_at_mut(body(hi));
    x[body(lo)..body(lo) + 4096].swap_with_slice(&mut y[..4096]);
    let (x, y) = bytes.split_at_mut(tags + hi * 16);
    x[tags + lo * 16..tags + lo * 16 + 16].swap_with_slice(&mut y[..16]);
}

#[test]
fn reordered_chunks_are_refused() {
    let f = fixture();
    let mut b = f.sealed.file.clone();
    swap_chunks(&f, &mut b, 0, 1);
    let err = load_aead_only(&f, b.clone()).unwrap_err();
    assert!(
        err.contains("chunk 0 of") || err.contains("chunk 1 of"),
        "{err}"
    );
    assert!(load(&f, b).unwrap_err().contains("ciphertext SHA-256"));
}

#[test]
fn foreign_chunks_are_refused() {
    // Same publisher, another model: its chunk 1 (body and tag) transplanted into ours.
    let f = fixture();
    let (config_b, weights_b) = test_model("other", 256);
    let sealed_b = seal(
        &config_b,
        &weights_b,
        &f.publisher,
        &SealOptions {
            chunk_size: 4096,
            ..SealOptions::default()
        },
    )
    .unwrap();
    let start_a = header_len(&f);
    let start_b = 14 + sealed_b.manifest.to_canonical_json().unwrap().len() + 64;
    let tags_a = f.sealed.file.len() - f.sealed.manifest.encryption.chunks as usize * 16;
    let tags_b = sealed_b.file.len() - sealed_b.manifest.encryption.chunks as usize * 16;
    let mut b = f.sealed.file.clone();
    b[start_a + 4096..start_a + 8192]
        .copy_from_slice(&sealed_b.file[start_b + 4096..start_b + 8192]);
    b[tags_a + 16..tags_a + 32].copy_from_slice(&sealed_b.file[tags_b + 16..tags_b + 32]);
    let err = load_aead_only(&f, b).unwrap_err();
    assert!(err.contains("chunk 1 of"), "{err}");

    // Even under the same key and prefix, the AAD binding refuses a transplanted chunk.
    let key = DataKey::generate().unwrap();
    let prefix = [3u8; 7];
    let pt = vec![1u8; 8192];
    let ct_a = stream::encrypt(&key, &prefix, &[0xAA; 32], 4096, &pt).unwrap();
    let ct_b = stream::encrypt(&key, &prefix, &[0xBB; 32], 4096, &pt).unwrap();
    let mut mixed = ct_a.clone();
    mixed[..4096].copy_from_slice(&ct_b[..4096]);
    mixed[8192..8208].copy_from_slice(&ct_b[8192..8208]);
    assert!(matches!(
        stream::decrypt_in_place(&key, &prefix, &[0xAA; 32], 4096, 8192, &mut mixed),
        Err(SealedError::ChunkAuthentication { index: 0, .. })
    ));
}

#[test]
fn wrong_data_key_is_refused() {
    let f = fixture();
    let wrong = DataKey::generate().unwrap();
    let err = unseal(
        f.sealed.file.clone(),
        &[f.publisher.public_key()],
        &wrong,
        false,
    )
    .err()
    .expect("wrong key accepted")
    .to_string();
    assert!(err.contains("failed AES-256-GCM authentication"), "{err}");
    assert!(err.contains("wrong data key"), "{err}");
}

#[test]
fn wrong_or_untrusted_publisher_is_refused() {
    let f = fixture();
    let other = PublisherSigningKey::generate().unwrap();
    let err = unseal(
        f.sealed.file.clone(),
        &[other.public_key()],
        &f.sealed.data_key,
        true,
    )
    .err()
    .unwrap();
    assert!(
        matches!(err, SealedError::UntrustedPublisher { .. }),
        "{err}"
    );

    // A manifest re-signed by another key but still naming the original key id.
    let file = SealedFile::parse(f.sealed.file.clone()).unwrap();
    let msg = file.manifest().signing_message().unwrap();
    let forged_sig = other.sign(&msg);
    let mut b = f.sealed.file.clone();
    let sig_at = header_len(&f) - 64;
    b[sig_at..sig_at + 64].copy_from_slice(&forged_sig);
    let err = load(&f, b).unwrap_err();
    assert!(err.contains("manifest signature check failed"), "{err}");
}

#[test]
fn unknown_format_version_is_refused() {
    let f = fixture();
    let mut b = f.sealed.file.clone();
    b[8..10].copy_from_slice(&3u16.to_be_bytes());
    let err = load(&f, b).unwrap_err();
    assert!(
        err.contains("unsupported sealed-model format version 3"),
        "{err}"
    );
    // Version 2 (a bundle) is known to the any-kind reader, but must be the signed
    // manifest's format; the MLP reader refuses it by name.
    let mut b = f.sealed.file.clone();
    b[8..10].copy_from_slice(&2u16.to_be_bytes());
    let err = load(&f, b.clone()).unwrap_err();
    assert!(err.contains("this is a sealed bundle (format 2"), "{err}");
    let err = SealedFile::<crate::engine::ModelSpec>::parse_as(b)
        .err()
        .unwrap()
        .to_string();
    assert!(
        err.contains("the header says format 2 but the manifest says 1"),
        "{err}"
    );
}

#[test]
fn non_canonical_manifest_is_refused_even_when_signed() {
    let f = fixture();
    let file = SealedFile::parse(f.sealed.file.clone()).unwrap();
    let manifest = file.manifest().clone();
    let pretty = serde_json::to_vec_pretty(&manifest).unwrap();
    let sig = f.publisher.sign(&manifest.signing_message().unwrap());
    let mut b = Vec::new();
    b.extend_from_slice(MAGIC);
    b.extend_from_slice(&FORMAT_VERSION.to_be_bytes());
    b.extend_from_slice(&(pretty.len() as u32).to_be_bytes());
    b.extend_from_slice(&pretty);
    b.extend_from_slice(&sig);
    b.extend_from_slice(file.ciphertext());
    let err = load(&f, b).unwrap_err();
    assert!(err.contains("canonical"), "{err}");
}

#[test]
fn manifest_rejects_unknown_fields() {
    let f = fixture();
    let mut v: serde_json::Value = serde_json::to_value(&f.sealed.manifest).unwrap();
    v["surprise"] = serde_json::json!(1);
    let bytes = serde_json::to_vec(&v).unwrap();
    assert!(matches!(
        Manifest::<crate::engine::ModelConfig>::from_canonical_json(&bytes),
        Err(SealedError::ManifestSyntax(_))
    ));
}

#[test]
fn seal_refuses_weights_that_do_not_fit_the_config() {
    let (mut config, other_weights) = test_model("m", 16);
    config.labels.push("maybe".into());
    let publisher = PublisherSigningKey::generate().unwrap();
    let err = seal(&config, &other_weights, &publisher, &SealOptions::default())
        .err()
        .unwrap()
        .to_string();
    assert!(err.contains("shape"), "{err}");
    let err = seal(
        &config,
        b"not safetensors",
        &publisher,
        &SealOptions::default(),
    )
    .err()
    .unwrap()
    .to_string();
    assert!(err.contains("safetensors"), "{err}");
}

#[test]
fn resource_paths_are_validated() {
    for ok in ["default/models/credit", "a/b/c.d-e_f"] {
        assert!(manifest::validate_resource_path(ok).is_ok(), "{ok}");
    }
    for bad in ["", "a/b", "a/b/c/d", "../b/c", "a//c", "a/b/c d", "a/./c"] {
        assert_eq!(
            manifest::validate_resource_path(bad),
            Err(crate::sealed::NameError::ResourcePath(bad.to_string())),
            "{bad}"
        );
    }
    assert_eq!(manifest::validate_entry_name("weights.safetensors"), Ok(()));
    for bad in ["", "/abs", "a/../b", "a/b/c/d/e", "sp ace", "."] {
        assert_eq!(
            manifest::validate_entry_name(bad),
            Err(crate::sealed::NameError::EntryName(bad.to_string())),
            "{bad}"
        );
    }
}

#[test]
fn publisher_key_pem_round_trip_and_garbage() {
    let k = PublisherSigningKey::generate().unwrap();
    let pem = k.public_key().to_pem();
    let back = PublisherKey::from_pem(&pem).unwrap();
    assert_eq!(back, k.public_key());
    assert_eq!(back.key_id().len(), 32);
    assert!(matches!(
        PublisherKey::from_pem("-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n"),
        Err(crate::sealed::KeyError::NotEd25519Pem(_))
    ));
    // The identity point (small order) is refused.
    use ed25519_dalek::pkcs8::EncodePublicKey;
    let mut identity = [0u8; 32];
    identity[0] = 1;
    let weak = ed25519_dalek::VerifyingKey::from_bytes(&identity)
        .unwrap()
        .to_public_key_pem(Default::default())
        .unwrap();
    assert_eq!(
        PublisherKey::from_pem(&weak),
        Err(crate::sealed::KeyError::WeakPublicKey)
    );
    assert!(matches!(
        DataKey::from_bytes(&[0u8; 31]),
        Err(crate::sealed::KeyError::DataKeyLength {
            expected: 32,
            found: 31
        })
    ));
}
