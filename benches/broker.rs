//! Attested key release latency on loopback: one full RCAR exchange (new TLS connection,
//! `auth`, a fresh P-256 TEE key, simulated evidence binding the runtime data, `attest` with
//! evidence verification, `GET resource` with release-policy verification and JWE
//! encryption, JWE decryption) against a bare TLS round trip to the same broker (new
//! connection, one request), in the same run.
//!
//! Run: `cargo bench --bench broker -- --warm-up-time 1 --measurement-time 5`.

use std::sync::Arc;
use std::time::Duration;

use confidant::keys::broker::{self, BrokerConfig};
use confidant::keys::{BrokerEndpoint, fetch_resource};
use criterion::Criterion;
use hyper::Method;

#[allow(clippy::expect_used)]
fn bench(c: &mut Criterion) {
    // SAFETY: criterion has started no thread before its first benchmark function.
    #[allow(unsafe_code)]
    let _ = unsafe { confidant::secure::pin_thread_count() };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let dir = tempfile::tempdir().expect("tempdir");
    let mut config = BrokerConfig::new(
        "127.0.0.1:0".parse().expect("addr"),
        dir.path().join("broker"),
    );
    // The bench is one peer making thousands of exchanges: lift the per-peer limits.
    config.limits.auth_burst = u32::MAX;
    config.limits.auth_per_second = 1e9;
    config.limits.sessions_per_peer = usize::MAX;
    config.limits.max_sessions = usize::MAX;
    let running = rt.block_on(broker::start(config)).expect("broker");
    let binary = dir.path().join("binary");
    std::fs::write(&binary, b"a stand-in for the measured binary").expect("binary");
    let attester = Arc::new(confidant::tee::Simulated::measuring(&binary).expect("simulated"));
    let path = "default/models/bench";
    running.put_resource(path, &[7u8; 32]).expect("resource");
    running
        .set_policy(
            path,
            &format!(
                "measurements = [\"{}\"]\nallow_simulated = true\n",
                hex::encode(attester.measurement())
            ),
        )
        .expect("policy");
    let endpoint =
        BrokerEndpoint::new(&running.url, Some(running.cert_pem.as_bytes())).expect("endpoint");
    // The simulated chain is generated once per process; not part of any measurement.
    rt.block_on(fetch_resource(&endpoint, attester.clone(), path))
        .expect("warm-up release");

    let mut group = c.benchmark_group("broker");
    group.bench_function("tls_round_trip", |b| {
        b.iter(|| {
            rt.block_on(async {
                let mut conn = endpoint.connect().await.expect("connect");
                conn.send(Method::GET, "/kbs/v0/ping", Vec::new(), None)
                    .await
                    .expect("round trip")
            })
        });
    });
    group.bench_function("key_release", |b| {
        b.iter(|| {
            rt.block_on(fetch_resource(&endpoint, attester.clone(), path))
                .expect("release")
        });
    });
    group.finish();
    rt.block_on(running.shutdown());
}

fn main() {
    let mut c = Criterion::default()
        .configure_from_args()
        .measurement_time(Duration::from_secs(5));
    bench(&mut c);
    c.final_summary();
}
