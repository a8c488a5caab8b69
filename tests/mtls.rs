//! Mutual TLS: client certificates map to principals, with the same scopes, purposes and
//! limits as API keys; and admin commands run beside the server land in its audit chain.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

mod common;

use common::code;

use std::path::Path;

use common::{Server, confidant, stderr, stdout};
use confidant::client::{Client, ClientError};
use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};
use tonic::Code;

struct Pki {
    ca_pem: String,
    issuer: CertifiedIssuer<'static, KeyPair>,
}

fn ca(name: &str) -> Pki {
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, name);
    let issuer = CertifiedIssuer::self_signed(params, KeyPair::generate().unwrap()).unwrap();
    Pki {
        ca_pem: issuer.pem(),
        issuer,
    }
}

/// A client certificate issued by `pki`, written as `<name>.pem` and `<name>.key`.
fn client_cert(pki: &Pki, dir: &Path, name: &str) -> (Vec<u8>, Vec<u8>) {
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, name);
    params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ClientAuth];
    let key = KeyPair::generate().unwrap();
    let cert = params.signed_by(&key, &pki.issuer).unwrap();
    std::fs::write(dir.join(format!("{name}.pem")), cert.pem()).unwrap();
    std::fs::write(dir.join(format!("{name}.key")), key.serialize_pem()).unwrap();
    (cert.pem().into_bytes(), key.serialize_pem().into_bytes())
}

async fn connect(server: &Server, identity: Option<(&[u8], &[u8])>) -> Result<Client, ClientError> {
    Client::connect_with_identity(&server.addr, &server.ca(), identity).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_certificates_map_to_principals() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let data = d.join("data");
    let pki = ca("Confidant test client CA");
    std::fs::write(d.join("client-ca.pem"), &pki.ca_pem).unwrap();
    let (hospital_cert, hospital_key) = client_cert(&pki, d, "hospital");
    let (stranger_cert, stranger_key) = client_cert(&pki, d, "stranger");
    let rogue = ca("Some other CA");
    let (rogue_cert, rogue_key) = client_cert(&rogue, d, "rogue");

    // Start once to create the data dir and the demo key, then register the certificate
    // while the server runs (the admin command runs beside it).
    let server = Server::start(&[
        "--data-dir",
        data.to_str().unwrap(),
        "--client-ca",
        d.join("client-ca.pem").to_str().unwrap(),
    ]);
    let out = confidant(&[
        "keys",
        "create",
        "--data-dir",
        data.to_str().unwrap(),
        "--principal",
        "hospital",
        "--scopes",
        "predict",
        "--purposes",
        "demonstration",
        "--rpd",
        "2",
        "--client-cert",
        d.join("hospital.pem").to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let created: serde_json::Value = serde_json::from_str(&stdout(&out)).unwrap();
    assert_eq!(created["kind"], "client_cert");
    assert!(
        created.get("api_key").is_none(),
        "no bearer secret for a certificate"
    );
    // Registering the same certificate twice is refused.
    let again = confidant(&[
        "keys",
        "create",
        "--data-dir",
        data.to_str().unwrap(),
        "--principal",
        "other",
        "--client-cert",
        d.join("hospital.pem").to_str().unwrap(),
    ]);
    assert!(!again.status.success());
    assert!(
        stderr(&again).contains("already registered"),
        "{}",
        stderr(&again)
    );

    let row = vec![confidant::demo::SAMPLE_ROW.to_vec()];

    // The registered certificate is the credential: scopes, purposes and quota apply.
    let mut hospital = connect(&server, Some((&hospital_cert, &hospital_key)))
        .await
        .unwrap()
        .with_purpose("demonstration")
        .unwrap();
    hospital.predict("demo", &row).await.unwrap();
    hospital.predict("demo", &row).await.unwrap();
    let e = hospital.predict("demo", &row).await.unwrap_err();
    assert_eq!(code(&e), Code::ResourceExhausted, "{e}");
    let e = connect(&server, Some((&hospital_cert, &hospital_key)))
        .await
        .unwrap()
        .with_purpose("marketing")
        .unwrap()
        .predict("demo", &row)
        .await
        .unwrap_err();
    assert_eq!(code(&e), Code::PermissionDenied, "{e}");

    // A certificate from the trusted CA that no principal registered: UNAUTHENTICATED.
    let e = connect(&server, Some((&stranger_cert, &stranger_key)))
        .await
        .unwrap()
        .predict("demo", &row)
        .await
        .unwrap_err();
    assert_eq!(code(&e), Code::Unauthenticated, "{e}");
    assert!(e.to_string().contains("not registered"), "{e}");

    // A certificate from another CA fails the TLS handshake.
    let rogue_result = match connect(&server, Some((&rogue_cert, &rogue_key))).await {
        Ok(mut c) => c.predict("demo", &row).await.map(|_| ()),
        Err(e) => Err(e),
    };
    assert!(
        rogue_result.is_err(),
        "a certificate from an untrusted CA must be refused"
    );

    // Clients without a certificate still use API keys.
    server.client().await.predict("demo", &row).await.unwrap();

    // Revocation applies to certificates too.
    let out = confidant(&[
        "keys",
        "revoke",
        "--data-dir",
        data.to_str().unwrap(),
        "--principal",
        "hospital",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let e = connect(&server, Some((&hospital_cert, &hospital_key)))
        .await
        .unwrap()
        .predict("demo", &row)
        .await
        .unwrap_err();
    assert_eq!(code(&e), Code::Unauthenticated, "{e}");

    // The CLI predicts with --tls-cert/--tls-key as well (a fresh principal).
    let out = confidant(&[
        "keys",
        "create",
        "--data-dir",
        data.to_str().unwrap(),
        "--principal",
        "lab",
        "--purposes",
        "demonstration",
        "--client-cert",
        d.join("stranger.pem").to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let out = confidant(&[
        "predict",
        "--addr",
        &server.addr,
        "--tls-ca",
        server.cert.to_str().unwrap(),
        "--tls-cert",
        d.join("stranger.pem").to_str().unwrap(),
        "--tls-key",
        d.join("stranger.key").to_str().unwrap(),
        "--purpose",
        "demonstration",
        "--model",
        "demo",
        "--input",
        &serde_json::to_string(&row).unwrap(),
    ]);
    assert!(out.status.success(), "{}", stderr(&out));

    // Every key creation and revocation made beside the server is in the audit chain, and
    // the chain verifies.
    std::thread::sleep(std::time::Duration::from_millis(1500));
    assert!(server.stop().success());
    let log = common::audit_export(&data);
    let admin: Vec<serde_json::Value> = log
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .filter(|r| r["event"]["kind"] == "admin")
        .collect();
    let actions: Vec<(String, String)> = admin
        .iter()
        .map(|r| {
            (
                r["event"]["action"].as_str().unwrap().to_string(),
                r["event"]["detail"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    let has = |action: &str, needle: &str| {
        actions
            .iter()
            .any(|(a, d)| a == action && d.contains(needle))
    };
    assert!(has("key.create", "principal demo"), "{actions:?}");
    assert!(
        has("key.create", "(client_cert) for principal hospital"),
        "{actions:?}"
    );
    assert!(
        has("key.create", "(client_cert) for principal lab"),
        "{actions:?}"
    );
    assert!(has("key.revoke", ""), "{actions:?}");
    assert!(!log.contains("cfd_"), "no API key in the audit log");
    let out = confidant(&["audit", "verify", data.join("audit").to_str().unwrap()]);
    assert!(out.status.success(), "{}{}", stdout(&out), stderr(&out));
}
