use std::os::unix::fs::PermissionsExt;

use super::*;

fn mode(p: &Path) -> u32 {
    std::fs::metadata(p).unwrap().permissions().mode() & 0o777
}

/// Fails on the code before the change: `write_file` opened a fixed `<name>.tmp` with
/// `O_TRUNC` and without `O_EXCL`, so a world-readable `publisher.tmp` created beforehand by
/// another user kept its mode and received the secret before the rename (and a symlink there
/// was followed).
#[test]
fn a_precreated_tmp_file_does_not_capture_the_secret() {
    let dir = tempfile::tempdir().unwrap();
    let trap = dir.path().join("publisher.tmp");
    std::fs::write(&trap, b"").unwrap();
    std::fs::set_permissions(&trap, std::fs::Permissions::from_mode(0o666)).unwrap();
    let key = dir.path().join("publisher.key");
    write_file(&key, b"SECRET", 0o600).unwrap();
    assert_eq!(
        std::fs::read(&trap).unwrap(),
        b"",
        "the trap received bytes"
    );
    assert_eq!(std::fs::read(&key).unwrap(), b"SECRET");
    assert_eq!(mode(&key), 0o600);
    // No temporary is left behind.
    let names: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    assert_eq!(names.len(), 2, "{names:?}");
}

/// Fails on the code before the change: the fixed `<name>.tmp` path followed a symlink, so a
/// link planted in the output directory wrote the secret wherever it pointed.
#[test]
fn a_symlinked_tmp_does_not_capture_the_secret() {
    let dir = tempfile::tempdir().unwrap();
    let elsewhere = tempfile::tempdir().unwrap();
    let target = elsewhere.path().join("stolen");
    std::os::unix::fs::symlink(&target, dir.path().join("publisher.tmp")).unwrap();
    write_file(&dir.path().join("publisher.key"), b"SECRET", 0o600).unwrap();
    assert!(!target.exists(), "the symlink was followed");
}

/// Fails on the code before the change: an existing file kept its old, wider mode because
/// the mode applied only to newly created files.
#[test]
fn an_existing_world_readable_file_gets_the_new_mode() {
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("k");
    std::fs::write(&key, b"old").unwrap();
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o644)).unwrap();
    write_file(&key, b"new", 0o600).unwrap();
    assert_eq!(mode(&key), 0o600);
    assert_eq!(std::fs::read(&key).unwrap(), b"new");
}

#[test]
fn a_symlink_at_the_target_is_replaced_not_followed() {
    let dir = tempfile::tempdir().unwrap();
    let elsewhere = tempfile::tempdir().unwrap();
    let target = elsewhere.path().join("victim");
    std::fs::write(&target, b"untouched").unwrap();
    let link = dir.path().join("out.key");
    std::os::unix::fs::symlink(&target, &link).unwrap();
    write_file(&link, b"SECRET", 0o600).unwrap();
    assert_eq!(std::fs::read(&target).unwrap(), b"untouched");
    assert!(
        !std::fs::symlink_metadata(&link)
            .unwrap()
            .file_type()
            .is_symlink()
    );
}

#[test]
fn key_files_are_created_once_and_read_back() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("master.key");
    let a = load_or_create_key(&p).unwrap();
    let b = load_or_create_key(&p).unwrap();
    assert_eq!(*a, *b);
    assert_eq!(mode(&p), 0o600);
    std::fs::write(&p, [0u8; 31]).unwrap();
    match load_or_create_key(&p) {
        Err(FileError::KeyLength {
            found: 31,
            expected: 32,
            ..
        }) => {}
        other => panic!("expected KeyLength, got {other:?}"),
    }
}

#[test]
fn private_dirs_are_0700() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("a/b");
    create_private_dir(&p).unwrap();
    assert_eq!(mode(&p), 0o700);
}
