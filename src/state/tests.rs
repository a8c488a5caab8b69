use super::*;

#[test]
fn subkeys_are_hkdf_sha256_and_distinct() {
    // RFC 5869 test case 1 (SHA-256), first 32 bytes of its 42-byte OKM.
    let ikm = [0x0bu8; 22];
    let salt = hex::decode("000102030405060708090a0b0c").unwrap();
    let info = hex::decode("f0f1f2f3f4f5f6f7f8f9").unwrap();
    assert_eq!(
        hex::encode(derive(&ikm, &salt, &info).as_ref()),
        "3cb25f25faacd57a90434f64d0362f2a2d2d0a90cf1a5a4c5db02d56ecc4c5bf"
    );
    let key = StateKey::from_bytes(&[7u8; 32], Source::DevFile, "test").unwrap();
    let all = [
        Subkey::Database,
        Subkey::AuditRecords,
        Subkey::AuditInputHmac,
        Subkey::Pseudonyms,
        Subkey::CheckpointSeed,
    ];
    let keys: Vec<[u8; 32]> = all.iter().map(|&u| *key.subkey(u)).collect();
    for (i, a) in keys.iter().enumerate() {
        assert_ne!(a, &[7u8; 32], "a subkey is never the state key");
        for b in &keys[i + 1..] {
            assert_ne!(a, b, "each use has its own subkey");
        }
    }
    // Deterministic: the same state key gives the same subkeys on every start.
    let again = StateKey::from_bytes(&[7u8; 32], Source::DevFile, "test").unwrap();
    assert_eq!(*again.subkey(Subkey::CheckpointSeed), keys[4]);
}

#[test]
fn the_dev_file_is_created_private_once_and_refused_when_readable_by_others() {
    use std::os::unix::fs::PermissionsExt;
    let d = tempfile::tempdir().unwrap();
    let a = StateKey::dev_file(d.path()).unwrap();
    let path = d.path().join(DEV_KEY_FILE);
    let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    let b = StateKey::dev_file(d.path()).unwrap();
    assert_eq!(*a.subkey(Subkey::Database), *b.subkey(Subkey::Database));
    assert!(!b.source().confidential());
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
    let err = StateKey::dev_file(d.path()).unwrap_err();
    assert!(matches!(err, StateError::Mode { mode: 0o644, .. }), "{err}");
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
    std::fs::write(&path, [1u8; 31]).unwrap();
    assert!(matches!(
        StateKey::dev_file(d.path()).unwrap_err(),
        StateError::Length { found: 31, .. }
    ));
}

#[test]
fn deployment_names_are_checked() {
    assert_eq!(resource_path("default").unwrap(), "default/state/default");
    assert_eq!(
        resource_path("eu-1.prod").unwrap(),
        "default/state/eu-1.prod"
    );
    for bad in ["", ".", "..", "a/b", "a b", &"x".repeat(129)] {
        assert!(resource_path(bad).is_err(), "{bad:?}");
    }
}

#[test]
fn a_key_file_is_raw_or_hex() {
    let d = tempfile::tempdir().unwrap();
    let raw = d.path().join("raw");
    std::fs::write(&raw, [9u8; 32]).unwrap();
    let hexf = d.path().join("hex");
    std::fs::write(&hexf, format!("{}\n", hex::encode([9u8; 32]))).unwrap();
    let a = StateKey::from_file(&raw).unwrap();
    let b = StateKey::from_file(&hexf).unwrap();
    assert_eq!(
        *a.subkey(Subkey::AuditRecords),
        *b.subkey(Subkey::AuditRecords)
    );
    std::fs::write(&raw, b"short").unwrap();
    assert!(StateKey::from_file(&raw).is_err());
}
