//! The audit journal as the host's disk hands it over after a crash: the server opens the log
//! beside it (a genuine segment that a crash left) and replays what the journal holds. Beyond
//! never panicking: whatever the journal says, a log that opens verifies afterwards under its
//! checkpoint key (a journal can add nothing the records key did not seal, nor break the chain).
#![no_main]
use confidant::audit::{AuditConfig, AuditLog, JOURNAL_FILE, segment_path, verify_dir};
use libfuzzer_sys::fuzz_target;

mod seed_keys;
use seed_keys::audit_keys;

const SEGMENT: &[u8] = include_bytes!("../corpus_seed/audit_journal.segment");

fuzz_target!(|data: &[u8]| {
    let Ok(dir) = tempfile::tempdir() else {
        return;
    };
    if std::fs::write(segment_path(dir.path(), 1), SEGMENT).is_err()
        || std::fs::write(dir.path().join(JOURNAL_FILE), data).is_err()
    {
        return;
    }
    let config = AuditConfig {
        journal_bytes: 64 * 1024,
        ..AuditConfig::default()
    };
    let pinned = audit_keys().signing.verifying_key().to_bytes();
    if let Ok(log) = AuditLog::open(dir.path(), audit_keys(), config) {
        log.close();
        drop(log);
        let report = verify_dir(dir.path(), &[pinned]);
        assert!(
            report.is_ok(),
            "the log a journal replayed into does not verify: {:?}",
            report.first_failure
        );
    }
});
