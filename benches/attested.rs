//! The attested channel's cost: a fresh connection verified by attestation (TLS handshake,
//! `GetEvidence` with a new nonce, evidence from the simulated TEE, verification against a
//! policy, SPKI binding check) against a fresh connection verified by a CA (TLS handshake
//! only), both to the same in-process server, in the same run.
//!
//! Run: `cargo bench --bench attested -- --warm-up-time 1 --measurement-time 5`.

use std::time::Duration;

use confidant::client::Client;
use confidant::client::attested::{ChannelPolicy, connect_attested};
use confidant::server::{self, ServeConfig};
use confidant_attestation::Policy;
use criterion::Criterion;

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
    let config = ServeConfig::embedded_demo(
        "127.0.0.1:0".parse().expect("addr"),
        dir.path().to_path_buf(),
    );
    let ca_path = config.cert_path();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let (ready_tx, ready_rx) = tokio::sync::oneshot::channel();
    let task = rt.spawn(server::run(
        config,
        async move {
            let _ = stopped.await;
        },
        move |running| {
            let _ = ready_tx.send(running.addr);
        },
    ));
    let addr = format!("https://{}", rt.block_on(ready_rx).expect("server ready"));
    let ca = std::fs::read(ca_path).expect("cert");
    let measurement = hex::encode(
        confidant::tee::Simulated::new()
            .expect("simulated TEE")
            .measurement(),
    );
    let policy = ChannelPolicy::new(
        Policy::from_toml(&format!(
            "measurements = [\"{measurement}\"]\nallow_simulated = true\n"
        ))
        .expect("policy"),
    );

    let mut group = c.benchmark_group("channel");
    group.bench_function("ca_verified_connect", |b| {
        b.iter(|| rt.block_on(Client::connect(&addr, &ca)).expect("connect"));
    });
    group.bench_function("attested_connect", |b| {
        b.iter(|| {
            rt.block_on(connect_attested(&addr, &policy))
                .expect("attested")
        });
    });
    group.finish();
    let _ = stop.send(());
    let _ = rt.block_on(task);
}

fn main() {
    let mut c = Criterion::default()
        .configure_from_args()
        .measurement_time(Duration::from_secs(5));
    bench(&mut c);
    c.final_summary();
}
