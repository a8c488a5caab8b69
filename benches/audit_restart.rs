//! Restart time on a long audit log (issue 17 item 7): how long `AuditLog::open` takes on a
//! log of N records, which the server does before it opens its port, against verifying the
//! whole chain (what every start did before: the baseline, measured in the same run).
//!
//! Run: `cargo bench --bench audit_restart` (10 million records, about 5 GB in a temporary
//! directory; `AUDIT_RESTART_RECORDS` changes N). Without `--bench` (as `cargo test
//! --benches` runs it) it uses 20,000 records as a smoke test.

use std::time::{Duration, Instant};

use confidant::audit::{AuditConfig, AuditKeys, AuditLog, Event, Integrity, verify_dir};
use ed25519_dalek::SigningKey;
use zeroize::Zeroizing;

fn keys() -> AuditKeys {
    AuditKeys {
        signing: SigningKey::from_bytes(&[7u8; 32]),
        input_hmac: Zeroizing::new([1u8; 32]),
        records: Zeroizing::new([3u8; 32]),
    }
}

fn event(i: u64) -> Event {
    Event::Predict {
        request_id: format!("0e5b8d9c-2f1a-4c3b-9d7e-{i:012x}"),
        principal: "insurer".into(),
        model: "credit@1.0.0".into(),
        purpose: Some("underwriting".into()),
        subject: None,
        input_hmac: Some("ab".repeat(32)),
        output_argmax: vec![1],
        flagged_rows: Vec::new(),
        rows: 1,
        latency_us: 250,
        decision: "allow".into(),
        reason: "OK".into(),
        epsilon: 0.0,
        rpc: None,
    }
}

fn main() {
    let full = std::env::args().any(|a| a == "--bench");
    let records: u64 = std::env::var("AUDIT_RESTART_RECORDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(if full { 10_000_000 } else { 20_000 });
    let dir = tempfile::tempdir().expect("tempdir");
    let config = AuditConfig {
        group_linger: Duration::from_millis(10),
        ..AuditConfig::default()
    };
    let started = Instant::now();
    {
        let log = AuditLog::open(dir.path(), keys(), config).expect("open");
        for i in 0..records {
            log.append(event(i));
        }
        log.close();
    }
    let written = started.elapsed();
    let bytes: u64 = std::fs::read_dir(dir.path())
        .expect("dir")
        .filter_map(|e| e.ok()?.metadata().ok())
        .map(|m| m.len())
        .sum();
    // Baseline: the whole chain, as every start verified it before.
    let t = Instant::now();
    let report = verify_dir(dir.path(), &[*SigningKey::from_bytes(&[7u8; 32]).verifying_key().as_bytes()]);
    let whole = t.elapsed();
    assert!(report.is_ok(), "{report:?}");
    // A restart: open (the tail is verified), and the background check of the rest.
    let t = Instant::now();
    let log = AuditLog::open(dir.path(), keys(), config).expect("reopen");
    let open = t.elapsed();
    let mut integrity = log.integrity();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let state = rt.block_on(async {
        integrity
            .wait_for(|s| *s != Integrity::Verifying)
            .await
            .map(|s| s.clone())
    });
    let background = t.elapsed();
    assert_eq!(state.ok(), Some(Integrity::Verified));
    log.close();
    println!(
        "audit restart: {records} records ({:.2} GB, {:.1} bytes per record; written in {:.1} s): \
         open {:.3} s, whole-chain verify {:.3} s (open / whole = {:.4}); background check \
         done {:.1} s after open",
        bytes as f64 / 1e9,
        bytes as f64 / records.max(1) as f64,
        written.as_secs_f64(),
        open.as_secs_f64(),
        whole.as_secs_f64(),
        open.as_secs_f64() / whole.as_secs_f64().max(1e-9),
        background.as_secs_f64()
    );
}
