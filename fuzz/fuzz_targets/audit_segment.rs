//! An audit segment as the host's disk hands it over: verified (`audit verify`), exported
//! under the records key, and opened by the server (its recovery reads the last segment).
//! Beyond never panicking: a segment that verifies under the seed's checkpoint key is a
//! prefix of the seed (the host can cut the log, which the broker's anchor detects, but
//! not change, add or reorder a record).
#![no_main]
use confidant::audit::{AuditConfig, AuditLog, export_dir, seal::Opener, segment_path, verify_dir};
use libfuzzer_sys::fuzz_target;

mod seed_keys;
use seed_keys::audit_keys;

const SEED: &[u8] = include_bytes!("../corpus_seed/audit_segment/ten-events");

fuzz_target!(|data: &[u8]| {
    let Ok(dir) = tempfile::tempdir() else {
        return;
    };
    if std::fs::write(segment_path(dir.path(), 1), data).is_err() {
        return;
    }
    let keys = audit_keys();
    let pinned = keys.signing.verifying_key().to_bytes();
    if verify_dir(dir.path(), &[pinned]).is_ok() {
        assert!(
            SEED.starts_with(data),
            "a segment that is not a prefix of the genuine one verified"
        );
    }
    let mut opener = Opener::new(keys.records.clone());
    let _ = export_dir(dir.path(), &[], &mut opener, &mut Vec::new());
    let config = AuditConfig {
        journal_bytes: 0,
        ..AuditConfig::default()
    };
    if let Ok(log) = AuditLog::open(dir.path(), keys, config) {
        log.close();
    }
});
