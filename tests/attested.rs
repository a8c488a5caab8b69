//! The attested channel end to end: a client trusts a server only after verifying its
//! evidence against a policy and the evidence's binding to the live TLS connection, and it
//! sends nothing else before that. A relay that terminates TLS with its own key is caught.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

mod common;

use std::sync::Arc;

use common::{Server, confidant, stderr, stdout};
use confidant::client::ClientError;
use confidant::client::attested::{ChannelPolicy, connect_attested};
use confidant_attestation::Policy;

fn measurement() -> String {
    let out = confidant(&["attest", "measurement"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let v: serde_json::Value = serde_json::from_str(&stdout(&out)).unwrap();
    v["measurement"].as_str().unwrap().to_string()
}

fn policy(measurement: &str, allow_simulated: bool) -> ChannelPolicy {
    ChannelPolicy::new(policy_with(measurement, allow_simulated, ""))
}

fn policy_with(measurement: &str, allow_simulated: bool, more: &str) -> Policy {
    Policy::from_toml(&format!(
        "measurements = [\"{measurement}\"]\nallow_simulated = {allow_simulated}\n{more}"
    ))
    .unwrap()
}

fn refusal(e: ClientError) -> String {
    match e {
        ClientError::Attestation(m) => m,
        other => panic!("expected an attestation refusal, got {other}"),
    }
}

fn predictions_seen(server: &Server) -> f64 {
    let (_, text) = common::http_get(server.metrics_url.as_ref().unwrap());
    text.lines()
        .filter(|l| l.starts_with("confidant_requests_total{"))
        .map(|l| l.rsplit_once(' ').unwrap().1.parse::<f64>().unwrap())
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_client_sends_nothing_until_the_evidence_and_its_binding_verify() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&["--data-dir", dir.path().join("data").to_str().unwrap()]);
    let key = server.api_key.clone().unwrap();
    let m = measurement();
    let row = vec![confidant::demo::SAMPLE_ROW.to_vec()];

    // The right measurement, simulated evidence allowed: verified, then Predict works.
    let (client, verdict) = connect_attested(&server.addr, &policy(&m, true))
        .await
        .unwrap();
    assert_eq!(verdict.cpu.measurement.as_deref(), Some(m.as_str()));
    assert!(
        verdict.gpus.is_empty(),
        "a server on CPU sends no GPU evidence"
    );
    let p = client
        .with_api_key(&key)
        .unwrap()
        .predict("demo", &row)
        .await
        .unwrap();
    assert_eq!(p.labels.len(), 1);
    assert_eq!(predictions_seen(&server), 1.0);

    // Another measurement: refused, and no request reached the inference service.
    let other = "ab".repeat(48);
    let msg = refusal(
        connect_attested(&server.addr, &policy(&other, true))
            .await
            .err()
            .expect("refused"),
    );
    assert!(msg.contains("measurement"), "{msg}");
    // Simulated evidence under a production policy (allow_simulated unset).
    let msg = refusal(
        connect_attested(&server.addr, &policy(&m, false))
            .await
            .err()
            .expect("refused"),
    );
    assert!(msg.contains("simulated"), "{msg}");
    // A policy with `[gpu]` needs GPU evidence, and this server serves on CPU: refused
    // (recorded GPU evidence, passing and failing, is judged in src/client/attested/tests.rs).
    let gpu_policy = ChannelPolicy::new(policy_with(&m, true, "[gpu]\ncc_mode = \"any\"\n"));
    let msg = refusal(
        connect_attested(&server.addr, &gpu_policy)
            .await
            .err()
            .expect("refused"),
    );
    assert!(msg.contains("none was presented"), "{msg}");
    assert_eq!(
        predictions_seen(&server),
        1.0,
        "refused clients sent no Predict"
    );

    // The CLI: `attest fetch` prints the verified claims; `predict --policy` needs no CA.
    let pol = dir.path().join("policy.toml");
    std::fs::write(
        &pol,
        format!("measurements = [\"{m}\"]\nallow_simulated = true\n"),
    )
    .unwrap();
    let out = confidant(&[
        "attest",
        "fetch",
        "--addr",
        &server.addr,
        "--policy",
        pol.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let v: serde_json::Value = serde_json::from_str(&stdout(&out)).unwrap();
    assert_eq!(v["verdict"], "accept");
    assert_eq!(v["measurement"], m.as_str());
    assert_eq!(
        v["gpus"],
        serde_json::json!([]),
        "a server on CPU: no GPU claims"
    );
    let bad = dir.path().join("bad.toml");
    std::fs::write(
        &bad,
        format!("measurements = [\"{other}\"]\nallow_simulated = true\n"),
    )
    .unwrap();
    let out = confidant(&[
        "predict",
        "--addr",
        &server.addr,
        "--policy",
        bad.to_str().unwrap(),
        "--api-key",
        &key,
        "--model",
        "demo",
        "--input",
        &serde_json::to_string(&row).unwrap(),
    ]);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("attestation refused, nothing was sent"),
        "{}",
        stderr(&out)
    );
    assert_eq!(predictions_seen(&server), 1.0);
}

fn self_signed() -> rcgen::CertifiedKey<rcgen::KeyPair> {
    rcgen::generate_simple_self_signed(vec!["localhost".to_string(), "127.0.0.1".to_string()])
        .unwrap()
}

/// A relay that terminates TLS with its own key and forwards everything, attestation
/// included, to the real server over a second TLS connection.
async fn start_mitm(upstream: String) -> String {
    start_relay(upstream, &self_signed()).await
}

/// A relay that terminates TLS with the key `ck` and forwards everything to `upstream`.
async fn start_relay(upstream: String, ck: &rcgen::CertifiedKey<rcgen::KeyPair>) -> String {
    use tokio::net::{TcpListener, TcpStream};
    let cert = rustls::pki_types::CertificateDer::from(ck.cert.der().to_vec());
    let key = rustls::pki_types::PrivateKeyDer::try_from(ck.signing_key.serialize_der()).unwrap();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut server_cfg = rustls::ServerConfig::builder_with_provider(Arc::clone(&provider))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(vec![cert], key)
        .unwrap();
    server_cfg.alpn_protocols = vec![b"h2".to_vec()];
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(server_cfg));
    let mut client_cfg = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(AcceptAll))
        .with_no_client_auth();
    client_cfg.alpn_protocols = vec![b"h2".to_vec()];
    let connector = tokio_rustls::TlsConnector::from(Arc::new(client_cfg));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let up = upstream.trim_start_matches("https://").to_string();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let (acceptor, connector, up) = (acceptor.clone(), connector.clone(), up.clone());
            tokio::spawn(async move {
                let Ok(mut inbound) = acceptor.accept(tcp).await else {
                    return;
                };
                let Ok(up_tcp) = TcpStream::connect(&up).await else {
                    return;
                };
                let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
                let Ok(mut outbound) = connector.connect(name, up_tcp).await else {
                    return;
                };
                let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
            });
        }
    });
    format!("https://{addr}")
}

#[derive(Debug)]
struct AcceptAll;

impl rustls::client::danger::ServerCertVerifier for AcceptAll {
    fn verify_server_cert(
        &self,
        _: &rustls::pki_types::CertificateDer<'_>,
        _: &[rustls::pki_types::CertificateDer<'_>],
        _: &rustls::pki_types::ServerName<'_>,
        _: &[u8],
        _: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }
    fn verify_tls12_signature(
        &self,
        _: &[u8],
        _: &rustls::pki_types::CertificateDer<'_>,
        _: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        Ok(rustls::client::danger::HandshakeSignatureValid::assertion())
    }
    fn verify_tls13_signature(
        &self,
        _: &[u8],
        _: &rustls::pki_types::CertificateDer<'_>,
        _: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        Ok(rustls::client::danger::HandshakeSignatureValid::assertion())
    }
    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        rustls::crypto::ring::default_provider()
            .signature_verification_algorithms
            .supported_schemes()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tls_terminating_relay_is_caught_by_the_channel_binding() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&["--data-dir", dir.path().join("data").to_str().unwrap()]);
    let relay = start_mitm(server.addr.clone()).await;
    let m = measurement();
    // The relay forwards genuine evidence, but it binds the real server's key.
    let msg = refusal(
        connect_attested(&relay, &policy(&m, true))
            .await
            .err()
            .expect("refused"),
    );
    assert!(msg.contains("does not bind this TLS connection"), "{msg}");
    assert_eq!(predictions_seen(&server), 0.0);
    // Directly, the same policy passes.
    connect_attested(&server.addr, &policy(&m, true))
        .await
        .unwrap();
}

/// Before the change, a server given its TLS key by the operator (`--tls-cert/--tls-key`)
/// bound that key into its evidence, so a relay holding a copy of the key, terminating TLS
/// and forwarding `GetEvidence`, passed every client check. Now the server refuses
/// `GetEvidence` (FAILED_PRECONDITION) for a key born outside the process, and a client with
/// an ordinary policy refuses it, through the relay and directly.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_whose_tls_key_came_from_the_operator_is_refused_even_through_a_relay() {
    let dir = tempfile::tempdir().unwrap();
    let ck = self_signed();
    let (cert, key) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
    std::fs::write(&cert, ck.cert.pem()).unwrap();
    std::fs::write(&key, ck.signing_key.serialize_pem()).unwrap();
    let server = Server::start(&[
        "--data-dir",
        dir.path().join("data").to_str().unwrap(),
        "--tls-cert",
        cert.to_str().unwrap(),
        "--tls-key",
        key.to_str().unwrap(),
    ]);
    let m = measurement();
    // The relay presents the operator's key: the very key the server would have bound.
    let relay = start_relay(server.addr.clone(), &ck).await;
    for addr in [&relay, &server.addr] {
        let msg = refusal(
            connect_attested(addr, &policy(&m, true))
                .await
                .err()
                .expect("refused"),
        );
        assert!(msg.contains("gives no evidence"), "{msg}");
        assert!(msg.contains("--tls-cert"), "{msg}");
    }
    assert_eq!(predictions_seen(&server), 0.0);
    assert!(
        server.logs().contains("GetEvidence is refused"),
        "the server says so at start"
    );
}
