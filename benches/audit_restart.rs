//! Restart time on a long audit log (issue 17 item 7): a real server (the embedded demo, in
//! process) restarted on a data directory whose audit log holds N records, timed until its
//! port accepts a connection and until it is ready; and, in the same run, `AuditLog::open`
//! (what the start does with the log before the port opens: the last two segments) against
//! verifying the whole chain (what every start did before: the baseline).
//!
//! Run: `cargo bench --bench audit_restart` (10 million records, several GB in a temporary
//! directory; `AUDIT_RESTART_RECORDS` changes N). Without `--bench` (as `cargo test
//! --benches` runs it) it uses 20,000 records as a smoke test.

use std::time::{Duration, Instant};

use confidant::audit::{AuditConfig, AuditKeys, AuditLog, Event, Integrity, verify_dir};
use confidant::server::{self, ServeConfig};

/// The same allocator as the binary.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

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

fn config(dir: &std::path::Path, port: u16) -> ServeConfig {
    ServeConfig::embedded_demo(
        format!("127.0.0.1:{port}").parse().expect("addr"),
        dir.to_path_buf(),
    )
}

/// Starts the demo server on `dir`; returns (time until the port accepts, time until ready)
/// and stops it.
fn start_and_stop(rt: &tokio::runtime::Runtime, dir: &std::path::Path) -> (Duration, Duration) {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    let started = Instant::now();
    let task = rt.spawn(server::run(
        config(dir, port),
        async move {
            let _ = stopped.await;
        },
        move |_| {
            let _ = ready_tx.send(Instant::now());
        },
    ));
    let port_open = loop {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            break started.elapsed();
        }
        assert!(
            started.elapsed() < Duration::from_secs(600),
            "the port never opened"
        );
        std::thread::sleep(Duration::from_millis(2));
    };
    let ready = ready_rx
        .recv_timeout(Duration::from_secs(600))
        .expect("ready")
        - started;
    let _ = stop.send(());
    rt.block_on(task).expect("server task").expect("server");
    (port_open, ready)
}

fn main() {
    // As the binary does: fix candle's thread count before any thread exists.
    // SAFETY: the first statement of `main`: no other thread exists yet.
    #[allow(unsafe_code)]
    let _ = unsafe { confidant::secure::pin_thread_count() };
    let full = std::env::args().any(|a| a == "--bench");
    let records: u64 = std::env::var("AUDIT_RESTART_RECORDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(if full { 10_000_000 } else { 20_000 });
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let dir = tempfile::tempdir().expect("tempdir");
    // A first start makes the data directory (its state key in the embedded broker).
    let (first_port, first_ready) = start_and_stop(&rt, dir.path());
    let state = rt
        .block_on(confidant::demo::obtain_state_key(
            dir.path(),
            "default/state/default",
        ))
        .expect("state key");
    let public = *state.checkpoint_key().verifying_key().as_bytes();
    let audit_dir = dir.path().join("audit");
    let config = AuditConfig::default();
    let started = Instant::now();
    {
        let log = AuditLog::open(&audit_dir, AuditKeys::from_state(&state), config).expect("open");
        for i in 0..records {
            log.append(event(i));
        }
        log.close();
    }
    let written = started.elapsed();
    let bytes: u64 = std::fs::read_dir(&audit_dir)
        .expect("dir")
        .filter_map(|e| e.ok()?.metadata().ok())
        .map(|m| m.len())
        .sum();
    // Baseline: the whole chain, as every start verified it before.
    let t = Instant::now();
    let report = verify_dir(&audit_dir, &[public]);
    let whole = t.elapsed();
    assert!(report.is_ok(), "{report:?}");
    // What a start does with the log now, and the background check.
    let t = Instant::now();
    let log = AuditLog::open(&audit_dir, AuditKeys::from_state(&state), config).expect("reopen");
    let open = t.elapsed();
    let mut integrity = log.integrity();
    let state_of = rt.block_on(async {
        integrity
            .wait_for(|s| *s != Integrity::Verifying)
            .await
            .map(|s| s.clone())
    });
    let background = t.elapsed();
    assert_eq!(state_of.ok(), Some(Integrity::Verified));
    log.close();
    drop(log);
    drop(state);
    // A real restart on the long log.
    let (port_open, ready) = start_and_stop(&rt, dir.path());
    println!(
        "audit restart: {records} records ({:.2} GB, {:.1} bytes per record; written in {:.1} s)\n  \
         server start, fresh data dir: port open {:.3} s, ready {:.3} s\n  \
         server restart on the long log: port open {:.3} s, ready {:.3} s\n  \
         AuditLog::open {:.3} s against whole-chain verify {:.3} s (open / whole = {:.4}); \
         background check done {:.1} s after open",
        bytes as f64 / 1e9,
        bytes as f64 / records.max(1) as f64,
        written.as_secs_f64(),
        first_port.as_secs_f64(),
        first_ready.as_secs_f64(),
        port_open.as_secs_f64(),
        ready.as_secs_f64(),
        open.as_secs_f64(),
        whole.as_secs_f64(),
        open.as_secs_f64() / whole.as_secs_f64().max(1e-9),
        background.as_secs_f64()
    );
}
