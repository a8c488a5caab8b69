//! Per-request CPU cost of each guard, measured in isolation on this machine:
//! `cargo run --release --example guard_costs`. Feeds the guard-overhead analysis in
//! BENCHMARKS.md.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)] // A measurement script.
use std::sync::Arc;
use std::time::Instant;

use confidant::engine::{Mlp, Screener};
use confidant::guard::{Credentials, Guard, NewKey, RateDefaults, Scope};

fn time(name: &str, n: u32, mut f: impl FnMut()) {
    for _ in 0..n / 10 {
        f();
    }
    let t = Instant::now();
    for _ in 0..n {
        f();
    }
    println!(
        "{name:40} {:8.2} us",
        t.elapsed().as_secs_f64() * 1e6 / f64::from(n)
    );
}

fn main() -> anyhow::Result<()> {
    // SAFETY: the first statement of `main`: no other thread exists yet.
    #[allow(unsafe_code)]
    let _ = unsafe { confidant::secure::pin_thread_count() };
    let dir = tempfile::tempdir()?;
    let db = Arc::new(confidant::storage::Database::open_in(dir.path())?);
    let guard = Guard::new(
        Arc::clone(&db),
        RateDefaults {
            rpm: Some(1_000_000_000),
            rpd: Some(1_000_000_000),
            ..RateDefaults::default()
        },
    );
    let (_, secret) = guard.keys().create(
        &NewKey {
            principal: "p".into(),
            scopes: [Scope::Predict].into(),
            purposes: Default::default(),
            rpm: None,
            rpd: None,
        },
        0,
    )?;
    let key = secret.secret_str().to_string();
    let rec = guard.authenticate(Credentials {
        api_key: Some(&key),
        authorization: None,
        client_cert: None,
    })?;
    time("authenticate (cache hit, WAL-index check)", 20_000, || {
        guard
            .authenticate(Credentials {
                api_key: Some(&key),
                authorization: None,
                client_cert: None,
            })
            .unwrap();
    });
    time("admit: GCRA + daily quota (leased)", 20_000, || {
        guard.admit(&rec, 1_790_000_000).unwrap().commit();
    });
    let config = confidant::demo::config()?;
    let mlp = Mlp::from_safetensors(&config, confidant::demo::WEIGHTS, &candle_core::Device::Cpu)?;
    let row = confidant::demo::SAMPLE_ROW.to_vec();
    time("forward 1 row", 20_000, || {
        mlp.forward_rows(&row, 1).unwrap();
    });
    let mut screener = Screener::new(config.screening.unwrap(), &config.input)?;
    let nine = row.repeat(9);
    time("forward 9 rows", 20_000, || {
        mlp.forward_rows(&nine, 9).unwrap();
    });
    time("candle forward 9 rows", 20_000, || {
        let x = candle_core::Tensor::from_slice(&nine, (9, 30), &candle_core::Device::Cpu).unwrap();
        mlp.forward(&x).unwrap();
    });
    let pool = rayon::ThreadPoolBuilder::new().num_threads(1).build()?;
    time("forward 9 rows in a 1-thread pool", 20_000, || {
        pool.install(|| mlp.forward_rows(&nine, 9).unwrap());
    });
    let big = row.repeat(256);
    time("forward 256 rows", 2_000, || {
        mlp.forward_rows(&big, 256).unwrap();
    });
    time("forward 256 rows in a 1-thread pool", 2_000, || {
        pool.install(|| mlp.forward_rows(&big, 256).unwrap());
    });
    time("perturb 8 copies", 20_000, || {
        let mut p = Vec::new();
        screener.perturb_into(&row, &mut p);
    });
    time("screening: perturb 8 + forward 9 rows", 20_000, || {
        let mut all = row.clone();
        let mut p = Vec::new();
        screener.perturb_into(&row, &mut p);
        all.extend_from_slice(&p);
        let out = mlp.forward_rows(&all, 9).unwrap();
        screener.scores(&out[..2], &out[2..], 2);
    });
    let mut preact = Screener::new(config.screening.unwrap(), &config.input)?.for_model(&mlp)?;
    let per_row = preact.normals_per_row();
    time("screening: pre-activation normals (caller)", 20_000, || {
        let mut z = vec![0f32; per_row];
        confidant::engine::screening::draw_normals(&mut z);
    });
    let mut z = vec![0f32; per_row];
    confidant::engine::screening::draw_normals(&mut z);
    time("screening: pre-activation copies + forward", 20_000, || {
        preact.forward_cpu(&mlp, &row, 1, &z).unwrap().unwrap();
    });
    let audit_dir = tempfile::tempdir()?;
    let log = confidant::audit::AuditLog::open(
        audit_dir.path(),
        confidant::audit::AuditKeys {
            signing: ed25519_dalek::SigningKey::from_bytes(&[7; 32]),
            input_hmac: zeroize::Zeroizing::new([1; 32]),
            records: zeroize::Zeroizing::new([3; 32]),
        },
        confidant::audit::AuditConfig::default(),
    )?;
    time("input HMAC", 100_000, || {
        log.input_hmac(&row);
    });
    time("uuid v4 (getrandom per id)", 100_000, || {
        uuid::Uuid::new_v4().to_string();
    });
    time("request id (per-thread ChaCha20)", 100_000, || {
        confidant::pipeline::request_id::new();
    });
    let n = 50_000;
    let t = Instant::now();
    for i in 0..n {
        // As the server does: borrowed fields, serialized on this thread.
        let id = confidant::pipeline::request_id::new_bytes();
        let hmac = log.input_hmac_hex(&row);
        log.append_predict(&confidant::audit::PredictEvent {
            request_id: confidant::pipeline::request_id::as_str(&id),
            principal: "p",
            model: "demo@1.0.0",
            purpose: Some("demonstration"),
            subject: None,
            input_hmac: std::str::from_utf8(&hmac).ok(),
            output_argmax: &[1],
            flagged_rows: &[],
            rows: 1,
            latency_us: i,
            decision: "allow",
            reason: "OK",
            epsilon: 0.0,
            rpc: None,
        });
    }
    log.close();
    println!(
        "{:40} {:8.2} us (wall, writer included)",
        "audit append + write + fsync",
        t.elapsed().as_secs_f64() * 1e6 / f64::from(n as u32)
    );
    Ok(())
}
