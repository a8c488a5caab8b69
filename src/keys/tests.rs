#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD as B64, URL_SAFE_NO_PAD as B64URL};
use confidant_attestation::{Evidence, SimulatedTee, SnpEvidence};
use hyper::Method;

use super::broker::{self, BrokerConfig, RunningBroker};
use super::client::{BrokerEndpoint, Connection, attest_request, fetch_resource};
use super::error::{JweError, RcarError};
use super::jwe::{self, ParsedJwe, TeeKeyPair, TeePubKey};
use super::protocol::{AttestRequest, canonical_runtime_data, runtime_data_digest};
use super::{jcs, protocol};
use crate::tee::{Attester, AttesterKind, TeeError};

const VECTOR: &str = include_str!("../../tests/vectors/kbs-rcar-0.4.0-exchange.json");

fn vector() -> serde_json::Value {
    serde_json::from_str(VECTOR).unwrap()
}

// ---- JCS and the runtime-data binding, against the recorded Trustee exchange ----

#[test]
fn runtime_data_hash_matches_the_recorded_trustee_exchange() {
    let v = vector();
    let request: AttestRequest =
        serde_json::from_value(v["attest_request"].clone()).expect("the recorded request parses");
    let rd = &request.runtime_data;
    let canonical = canonical_runtime_data(
        &rd.nonce,
        &rd.tee_pubkey,
        &request.tee_evidence.additional_evidence,
    )
    .unwrap();
    assert_eq!(
        std::str::from_utf8(&canonical).unwrap(),
        v["canonical_runtime_data"].as_str().unwrap()
    );
    let digest = runtime_data_digest(&rd.nonce, &rd.tee_pubkey, "").unwrap();
    assert_eq!(
        hex::encode(digest),
        v["runtime_data_sha384"].as_str().unwrap()
    );
    // The sample evidence carried exactly that digest.
    let sample_rd = request.tee_evidence.primary_evidence["report_data"]
        .as_str()
        .unwrap();
    assert_eq!(B64.decode(sample_rd).unwrap(), digest);
}

#[test]
fn unknown_jwk_members_are_dropped_before_hashing_as_trustee_does() {
    let v = vector();
    let mut key = v["attest_request"]["runtime-data"]["tee-pubkey"].clone();
    key["use"] = "enc".into();
    key["kid"] = "k1".into();
    let key: TeePubKey = serde_json::from_value(key).unwrap();
    let nonce = v["attest_request"]["runtime-data"]["nonce"]
        .as_str()
        .unwrap();
    let digest = runtime_data_digest(nonce, &key, "").unwrap();
    assert_eq!(
        hex::encode(digest),
        v["runtime_data_sha384"].as_str().unwrap()
    );
}

#[test]
fn jcs_sorts_by_utf16_code_units_and_refuses_non_integers() {
    // U+E000 sorts after U+10000 in UTF-8 byte order but before it in UTF-16.
    let value = serde_json::json!({"\u{10000}": 1, "\u{e000}": 2, "a": {"z": "\n\u{1}é", "b": [true, null]}});
    let out = String::from_utf8(jcs::to_vec(&value).unwrap()).unwrap();
    assert_eq!(
        out,
        "{\"a\":{\"b\":[true,null],\"z\":\"\\n\\u0001é\"},\"\u{10000}\":1,\"\u{e000}\":2}"
    );
    let err = jcs::to_vec(&serde_json::json!({"x": 0.5})).unwrap_err();
    assert!(err.to_string().contains("not an integer"), "{err}");
}

/// The GPU evidence set's canonical text, written directly by the attestation crate, is the
/// RFC 8785 form of its JSON, escapes and member order included.
#[test]
fn gpu_evidence_set_canonical_text_is_jcs() {
    use confidant_attestation::GpuEvidence;
    use protocol::GpuEvidenceSet;
    let set = GpuEvidenceSet {
        nvidia_gpus: vec![
            GpuEvidence::new(
                vec![0x00, 0xff, 0x10],
                "-----BEGIN CERTIFICATE-----\r\n\"q\"\\\u{1}\té\u{10000}\n".to_owned(),
            ),
            GpuEvidence::new(vec![1; 40], String::new()),
        ],
    };
    let text = set.to_canonical_json().unwrap();
    let value = serde_json::to_value(&set).unwrap();
    assert_eq!(text.as_bytes(), jcs::to_vec(&value).unwrap().as_slice());
    assert_eq!(
        GpuEvidenceSet::from_canonical_json(&text).unwrap(),
        Some(set)
    );
    assert_eq!(GpuEvidenceSet::from_canonical_json("").unwrap(), None);
}

#[test]
fn report_data_is_the_digest_then_sixteen_zero_bytes() {
    let rd = protocol::report_data(&[7u8; 48]);
    assert_eq!(&rd[..48], &[7u8; 48]);
    assert_eq!(&rd[48..], &[0u8; 16]);
}

// ---- JWE ----

#[test]
fn jwe_round_trip_with_a_fresh_key() {
    let key = TeeKeyPair::generate().unwrap();
    let jwe = jwe::encrypt(key.public_key(), b"a 32-byte data key, or anything").unwrap();
    let text: serde_json::Value = serde_json::from_slice(&jwe).unwrap();
    let mut members: Vec<_> = text.as_object().unwrap().keys().cloned().collect();
    members.sort();
    assert_eq!(
        members,
        ["ciphertext", "encrypted_key", "iv", "protected", "tag"]
    );
    let parsed = ParsedJwe::parse(&jwe).unwrap();
    assert!(parsed.protected_json.starts_with(
        r#"{"alg":"ECDH-ES+A256KW","enc":"A256GCM","epk":{"crv":"P-256","kty":"EC","x":"#
    ));
    let plain = key.decrypt(&jwe).unwrap();
    assert_eq!(plain.as_slice(), b"a 32-byte data key, or anything");
}

#[test]
fn jwe_for_another_key_or_tampered_does_not_open() {
    let alice = TeeKeyPair::generate().unwrap();
    let mallory = TeeKeyPair::generate().unwrap();
    let jwe = jwe::encrypt(alice.public_key(), b"secret").unwrap();
    let err = mallory.decrypt(&jwe).unwrap_err();
    assert!(
        matches!(err, JweError::Decrypt { step: "key unwrap" }),
        "{err}"
    );

    let mut v: serde_json::Value = serde_json::from_slice(&jwe).unwrap();
    let mut ct = B64URL.decode(v["ciphertext"].as_str().unwrap()).unwrap();
    ct[0] ^= 1;
    v["ciphertext"] = B64URL.encode(ct).into();
    let err = alice.decrypt(&serde_json::to_vec(&v).unwrap()).unwrap_err();
    assert!(
        matches!(err, JweError::Decrypt { step: "content" }),
        "{err}"
    );
}

#[test]
fn jwe_parser_rejects_malformed_input_precisely() {
    let key = TeeKeyPair::generate().unwrap();
    let good: serde_json::Value =
        serde_json::from_slice(&jwe::encrypt(key.public_key(), b"x").unwrap()).unwrap();
    let cases: Vec<(serde_json::Value, &str)> = vec![
        (
            {
                let mut v = good.clone();
                v["iv"] = "!!".into();
                v
            },
            "JWE iv: not base64url",
        ),
        (
            {
                let mut v = good.clone();
                v["iv"] = B64URL.encode([0u8; 16]).into();
                v
            },
            "JWE iv: 16 bytes, A256GCM uses 12",
        ),
        (
            {
                let mut v = good.clone();
                v["tag"] = B64URL.encode([0u8; 4]).into();
                v
            },
            "JWE tag: 4 bytes",
        ),
        (
            {
                let mut v = good.clone();
                v["encrypted_key"] = B64URL.encode([0u8; 24]).into();
                v
            },
            "JWE encrypted_key: 24 bytes",
        ),
        (
            {
                let mut v = good.clone();
                v["header"] = serde_json::json!({});
                v
            },
            "unknown field `header`",
        ),
        (
            {
                let mut v = good.clone();
                v["protected"] = B64URL
                    .encode(r#"{"alg":"RSA-OAEP-256","enc":"A256GCM"}"#)
                    .into();
                v
            },
            "unsupported alg \"RSA-OAEP-256\"",
        ),
        (
            {
                let mut v = good.clone();
                v["protected"] = B64URL
                    .encode(r#"{"alg":"ECDH-ES+A256KW","enc":"A128GCM"}"#)
                    .into();
                v
            },
            "unsupported enc \"A128GCM\"",
        ),
        (
            {
                let mut v = good.clone();
                v["protected"] = B64URL.encode("not json").into();
                v
            },
            "JWE protected header:",
        ),
        (serde_json::json!({"protected": 1}), "JWE JSON:"),
    ];
    for (jwe, expected) in cases {
        let err = ParsedJwe::parse(&serde_json::to_vec(&jwe).unwrap()).unwrap_err();
        assert!(
            err.to_string().contains(expected),
            "{err} should contain {expected}"
        );
    }
    let err = ParsedJwe::parse(b"{not json").unwrap_err();
    assert!(err.to_string().starts_with("JWE JSON:"), "{err}");
}

#[test]
fn the_recorded_trustee_jwe_parses_with_the_expected_shape() {
    let v = vector();
    let body = v["resource_response"]["body"].as_str().unwrap();
    let parsed = ParsedJwe::parse(body.as_bytes()).unwrap();
    assert_eq!(parsed.encrypted_key.len(), 40);
    assert_eq!(parsed.ciphertext.len(), "interop-secret-0123456789".len());
    let header: serde_json::Value = serde_json::from_str(&parsed.protected_json).unwrap();
    assert_eq!(header, v["jwe_protected_header"]);
    // Without the recorded TEE's private key it cannot open: a fresh key fails at unwrap.
    let err = TeeKeyPair::generate()
        .unwrap()
        .decrypt(body.as_bytes())
        .unwrap_err();
    assert!(
        matches!(err, JweError::Decrypt { step: "key unwrap" }),
        "{err}"
    );
}

#[test]
fn keys_this_broker_cannot_encrypt_to_are_named() {
    let rsa = TeePubKey::Rsa {
        alg: "RSA-OAEP-256".into(),
        n: "AQAB".into(),
        e: "AQAB".into(),
    };
    assert_eq!(
        jwe::encrypt(&rsa, b"x").unwrap_err().to_string(),
        "unsupported kty \"RSA\" (supported: EC)"
    );
    let p384 = TeePubKey::Ec {
        crv: "P-384".into(),
        alg: "ECDH-ES+A256KW".into(),
        x: String::new(),
        y: String::new(),
    };
    assert!(
        jwe::encrypt(&p384, b"x")
            .unwrap_err()
            .to_string()
            .contains("unsupported crv \"P-384\"")
    );
    let short = TeePubKey::Ec {
        crv: "P-256".into(),
        alg: "ECDH-ES+A256KW".into(),
        x: "AAAA".into(),
        y: "AAAA".into(),
    };
    assert!(
        jwe::encrypt(&short, b"x")
            .unwrap_err()
            .to_string()
            .contains("x is 3 bytes")
    );
}

// ---- the client against the recorded Trustee responses ----

/// Replays the recorded Trustee answers over plain HTTP (as the recording was made) and
/// checks what our client sends.
async fn replay_kbs() -> (
    String,
    tokio::task::JoinHandle<()>,
    Arc<std::sync::Mutex<Vec<String>>>,
) {
    use axum::http::{HeaderMap, header};
    let v = vector();
    let seen = Arc::new(std::sync::Mutex::new(Vec::new()));
    let cookie = v["auth_response"]["set_cookie"]
        .as_str()
        .unwrap()
        .to_owned();
    let session = cookie.split(';').next().unwrap().to_owned();
    let answer = |body: String, cookie: Option<String>| {
        let mut r = axum::response::Response::new(axum::body::Body::from(body));
        r.headers_mut()
            .insert(header::CONTENT_TYPE, "application/json".parse().unwrap());
        if let Some(c) = cookie {
            r.headers_mut()
                .insert(header::SET_COOKIE, c.parse().unwrap());
        }
        r
    };
    let (s1, s2, s3) = (Arc::clone(&seen), Arc::clone(&seen), Arc::clone(&seen));
    let (auth_body, token_body, jwe_body) = (
        v["auth_response"]["body"].as_str().unwrap().to_owned(),
        v["attest_response"]["body"].as_str().unwrap().to_owned(),
        v["resource_response"]["body"].as_str().unwrap().to_owned(),
    );
    let (c1, c2, sess2, sess3) = (
        cookie.clone(),
        cookie.clone(),
        session.clone(),
        session.clone(),
    );
    let app = axum::Router::new()
        .route(
            "/kbs/v0/auth",
            axum::routing::post(move |body: String| async move {
                s1.lock().unwrap().push(format!("auth {body}"));
                answer(auth_body, Some(c1))
            }),
        )
        .route(
            "/kbs/v0/attest",
            axum::routing::post(move |h: HeaderMap, body: String| async move {
                let ok =
                    h.get(header::COOKIE).and_then(|c| c.to_str().ok()) == Some(sess2.as_str());
                s2.lock()
                    .unwrap()
                    .push(format!("attest cookie_ok={ok} {body}"));
                answer(token_body, Some(c2))
            }),
        )
        .route(
            "/kbs/v0/resource/{*path}",
            axum::routing::get(move |h: HeaderMap, uri: axum::http::Uri| async move {
                let ok =
                    h.get(header::COOKIE).and_then(|c| c.to_str().ok()) == Some(sess3.as_str());
                s3.lock()
                    .unwrap()
                    .push(format!("resource cookie_ok={ok} {}", uri.path()));
                answer(jwe_body, None)
            }),
        );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let task = tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    (format!("http://{addr}"), task, seen)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_client_follows_the_recorded_trustee_exchange() {
    let v = vector();
    let (url, task, seen) = replay_kbs().await;
    let endpoint = BrokerEndpoint::new(&url, None).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let attester: Arc<dyn Attester> = Arc::new(simulated(dir.path()));
    let err = fetch_resource(&endpoint, attester, "default/test/dummy")
        .await
        .unwrap_err();
    // The recorded JWE is for the recorded TEE key, not ours: everything up to the
    // decryption followed the protocol.
    assert!(
        matches!(
            err,
            RcarError::Jwe(JweError::Decrypt { step: "key unwrap" })
        ),
        "{err}"
    );
    let seen = seen.lock().unwrap().clone();
    assert_eq!(seen.len(), 3, "{seen:?}");
    let auth: serde_json::Value =
        serde_json::from_str(seen[0].strip_prefix("auth ").unwrap()).unwrap();
    assert_eq!(auth["version"], "0.4.0");
    assert_eq!(auth["tee"], "snp");
    assert_eq!(auth["extra-params"], "");
    let attest = seen[1]
        .strip_prefix("attest cookie_ok=true ")
        .expect("cookie sent on attest");
    let attest: serde_json::Value = serde_json::from_str(attest).unwrap();
    let recorded_nonce =
        serde_json::from_str::<serde_json::Value>(v["auth_response"]["body"].as_str().unwrap())
            .unwrap()["nonce"]
            .clone();
    assert_eq!(attest["runtime-data"]["nonce"], recorded_nonce);
    assert_eq!(
        attest["runtime-data"]["tee-pubkey"]["alg"],
        "ECDH-ES+A256KW"
    );
    assert_eq!(attest["tee-evidence"]["additional_evidence"], "");
    assert!(attest["tee-evidence"]["primary_evidence"]["attestation_report"].is_object());
    assert_eq!(
        seen[2],
        "resource cookie_ok=true /kbs/v0/resource/default/test/dummy"
    );
    task.abort();
}

#[test]
fn broker_urls_are_checked() {
    for (url, msg) in [
        ("ftp://x", "must start with https://"),
        ("https://127.0.0.1:8443", "give the CA"),
        ("http://host:notaport", "bad HOST:PORT"),
    ] {
        let err = BrokerEndpoint::new(url, None).unwrap_err().to_string();
        assert!(err.contains(msg), "{url}: {err}");
    }
    assert!(BrokerEndpoint::new("http://[::1]:8080/prefix/", None).is_ok());
    let err = BrokerEndpoint::new("https://x:1", Some(b"nothing"))
        .unwrap_err()
        .to_string();
    assert!(err.contains("no PEM certificate"), "{err}");
}

// ---- the broker, in process over real HTTPS ----

fn simulated(dir: &std::path::Path) -> crate::tee::Simulated {
    let bin = dir.join("fake-binary");
    std::fs::write(&bin, b"the binary whose hash is the simulated measurement").unwrap();
    crate::tee::Simulated::measuring(&bin).unwrap()
}

struct Fixture {
    _dir: tempfile::TempDir,
    broker: RunningBroker,
    endpoint: BrokerEndpoint,
    admin: String,
    attester: Arc<crate::tee::Simulated>,
}

async fn fixture(tweak: impl FnOnce(&mut BrokerConfig)) -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let mut config = BrokerConfig::new("127.0.0.1:0".parse().unwrap(), dir.path().join("broker"));
    tweak(&mut config);
    let broker = broker::start(config.clone()).await.unwrap();
    let ca = std::fs::read(config.cert_path()).unwrap();
    let endpoint = BrokerEndpoint::new(&broker.url, Some(&ca)).unwrap();
    let admin = std::fs::read_to_string(config.admin_key_path())
        .unwrap()
        .trim()
        .to_owned();
    let attester = Arc::new(simulated(dir.path()));
    Fixture {
        _dir: dir,
        broker,
        endpoint,
        admin,
        attester,
    }
}

impl Fixture {
    fn measurement(&self) -> String {
        hex::encode(self.attester.measurement())
    }

    fn register(&self, path: &str, secret: &[u8], policy: &str) {
        self.broker.put_resource(path, secret).unwrap();
        self.broker.set_policy(path, policy).unwrap();
    }

    fn good_policy(&self) -> String {
        format!(
            "measurements = [\"{}\"]\nallow_simulated = true\n",
            self.measurement()
        )
    }

    /// auth + attest with `attester`, returning the connection and the key.
    async fn attested(
        &self,
        attester: &dyn Attester,
    ) -> Result<(Connection, TeeKeyPair), RcarError> {
        let mut conn = self.endpoint.connect().await?;
        let challenge = conn.auth("snp").await?;
        let key = TeeKeyPair::generate()?;
        let request = attest_request(attester, &challenge.nonce, key.public_key())?;
        conn.attest(&request).await?;
        Ok((conn, key))
    }
}

fn refused(e: RcarError) -> (u16, String, String) {
    match e {
        RcarError::Refused {
            status,
            kind,
            detail,
            ..
        } => (status, kind, detail),
        other => panic!("expected a refusal, got {other}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_is_released_to_matching_evidence_and_decrypts() {
    let f = fixture(|_| {}).await;
    f.register("default/models/m1", &[9u8; 32], &f.good_policy());
    let key = fetch_resource(&f.endpoint, f.attester.clone(), "default/models/m1")
        .await
        .unwrap();
    assert_eq!(key.as_slice(), &[9u8; 32]);
}

/// No policy, a policy that refuses, and no resource at all get one answer (403, the
/// reasons only in the broker's log: `tests/broker.rs` checks them there); a caller whose
/// evidence the policy admits is told when there is no resource.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn release_policy_refusals_are_one_answer() {
    let f = fixture(|_| {}).await;
    f.broker
        .put_resource("default/models/nopolicy", &[1u8; 32])
        .unwrap();
    f.register(
        "default/models/other",
        &[1u8; 32],
        &format!(
            "measurements = [\"{}\"]\nallow_simulated = true\n",
            "ab".repeat(48)
        ),
    );
    f.register(
        "default/models/prod",
        &[1u8; 32],
        &format!("measurements = [\"{}\"]\n", f.measurement()),
    );
    for path in [
        "default/models/nopolicy",
        "default/models/other",
        "default/models/prod",
        "default/models/absent",
    ] {
        let err = fetch_resource(&f.endpoint, f.attester.clone(), path)
            .await
            .unwrap_err();
        let (s, kind, detail) = refused(err);
        assert_eq!((s, kind.as_str()), (403, "PolicyDeny"), "{path}: {detail}");
        assert!(
            detail.contains(&format!(
                "policy denied {path}: the resource is not released to this session"
            )),
            "{path}: {detail}"
        );
    }
    f.broker
        .set_policy("default/models/absent", &f.good_policy())
        .unwrap();
    let (s, _, detail) = refused(
        fetch_resource(&f.endpoint, f.attester.clone(), "default/models/absent")
            .await
            .unwrap_err(),
    );
    assert_eq!(s, 404, "{detail}");
    assert!(
        detail.contains("no resource at default/models/absent"),
        "{detail}"
    );
    let (s, _, detail) = refused(
        fetch_resource(&f.endpoint, f.attester.clone(), "../etc/passwd")
            .await
            .unwrap_err(),
    );
    assert_eq!(s, 400, "{detail}");
}

/// Evidence rigged in ways the broker must notice.
#[derive(Debug)]
enum Rigged {
    Debug([u8; 48]),
    Tampered([u8; 48]),
    Genuine,
}

impl Attester for Rigged {
    fn kind(&self) -> AttesterKind {
        AttesterKind::Simulated
    }

    fn evidence(&self, report_data: &[u8; 64]) -> Result<Evidence, TeeError> {
        let tee = SimulatedTee::shared()?;
        Ok(match self {
            Self::Debug(m) => tee.attest_with_guest_policy(
                report_data,
                m,
                confidant_attestation::simulated::GUEST_POLICY | 1 << 19,
            )?,
            Self::Tampered(m) => {
                let Evidence::Simulated(e) = tee.attest(report_data, m)? else {
                    unreachable!()
                };
                let mut report = e.report().to_vec();
                report[0x90] ^= 1; // the measurement, after signing
                Evidence::Simulated(SnpEvidence::new(report, e.cert_chain().to_vec()))
            }
            Self::Genuine => Evidence::Snp(
                SnpEvidence::from_parts(
                    include_bytes!("../../attestation/tests/data/snp/virtee-milan-v2/report.bin"),
                    include_bytes!("../../attestation/tests/data/snp/virtee-milan-v2/vcek.der"),
                    None,
                )
                .unwrap(),
            ),
        })
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn debug_tampered_and_unbound_evidence_get_no_key() {
    let f = fixture(|_| {}).await;
    f.register("default/models/m", &[1u8; 32], &f.good_policy());
    let m = *f.attester.measurement();

    // Debug: attests (the signature is good), but the release policy forbids debug (the
    // broker's log says so; the caller only that the resource is not released).
    let (mut conn, _) = f.attested(&Rigged::Debug(m)).await.unwrap();
    let (s, kind, detail) = refused(conn.resource("default/models/m").await.unwrap_err());
    assert_eq!((s, kind.as_str()), (403, "PolicyDeny"), "{detail}");
    assert!(detail.contains("not released to this session"), "{detail}");

    // Tampered after signing: refused at attest.
    let (s, kind, detail) = refused(f.attested(&Rigged::Tampered(m)).await.err().unwrap());
    assert_eq!((s, kind.as_str()), (401, "AttestationError"), "{detail}");
    assert!(
        detail.contains("evidence rejected") && detail.contains("signature"),
        "{detail}"
    );

    // A genuine SNP report cannot bind our nonce.
    let (s, _, detail) = refused(f.attested(&Rigged::Genuine).await.err().unwrap());
    assert_eq!(s, 401, "{detail}");
    assert!(detail.contains("report_data"), "{detail}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nonces_are_single_use() {
    let f = fixture(|_| {}).await;
    f.register("default/models/m", &[1u8; 32], &f.good_policy());
    let mut conn = f.endpoint.connect().await.unwrap();
    let challenge = conn.auth("snp").await.unwrap();
    let key = TeeKeyPair::generate().unwrap();
    let request = attest_request(f.attester.as_ref(), &challenge.nonce, key.public_key()).unwrap();
    conn.attest(&request).await.unwrap();
    // The same evidence again on the same session: its nonce is spent.
    let (s, _, detail) = refused(conn.attest(&request).await.unwrap_err());
    assert_eq!(s, 401);
    assert!(detail.contains("already attested"), "{detail}");
    // ... and on a fresh session: not that session's nonce.
    let mut other = f.endpoint.connect().await.unwrap();
    other.auth("snp").await.unwrap();
    let (s, _, detail) = refused(other.attest(&request).await.unwrap_err());
    assert_eq!(s, 401);
    assert!(detail.contains("replayed or stale"), "{detail}");
    // A failed attest spends the nonce too: the session is gone.
    let (_, _, detail) = refused(other.attest(&request).await.unwrap_err());
    assert!(detail.contains("unknown session"), "{detail}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn challenges_and_sessions_expire() {
    let f = fixture(|c| {
        c.challenge_ttl = Duration::from_millis(300);
        c.session_ttl = Duration::from_millis(300);
    })
    .await;
    f.register("default/models/m", &[1u8; 32], &f.good_policy());
    let mut conn = f.endpoint.connect().await.unwrap();
    let challenge = conn.auth("snp").await.unwrap();
    tokio::time::sleep(Duration::from_millis(400)).await;
    let key = TeeKeyPair::generate().unwrap();
    let request = attest_request(f.attester.as_ref(), &challenge.nonce, key.public_key()).unwrap();
    let (_, _, detail) = refused(conn.attest(&request).await.unwrap_err());
    assert!(detail.contains("challenge expired"), "{detail}");

    let (mut conn, _) = f.attested(f.attester.as_ref()).await.unwrap();
    tokio::time::sleep(Duration::from_millis(400)).await;
    let (s, kind, detail) = refused(conn.resource("default/models/m").await.unwrap_err());
    assert_eq!((s, kind.as_str()), (401, "TokenNotFound"));
    assert!(detail.contains("session expired"), "{detail}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_admin_api_needs_the_admin_key() {
    let f = fixture(|_| {}).await;
    let mut conn = f.endpoint.connect().await.unwrap();
    let a = conn
        .send(
            Method::POST,
            "/kbs/v0/resource/default/models/x",
            vec![1; 32],
            None,
        )
        .await
        .unwrap();
    assert_eq!(a.status.as_u16(), 401, "{:?}", a.body);
    assert!(String::from_utf8_lossy(&a.body).contains("Authorization: Bearer"));
    let a = conn
        .send(
            Method::POST,
            "/kbs/v0/resource/default/models/x",
            vec![1; 32],
            Some("wrong"),
        )
        .await
        .unwrap();
    assert_eq!(a.status.as_u16(), 403);
    assert!(String::from_utf8_lossy(&a.body).contains("the admin key is not valid"));
    assert!(!f.broker.has_resource("default/models/x").unwrap());
    conn.admin_post("/kbs/v0/resource/default/models/x", &f.admin, vec![1; 32])
        .await
        .unwrap();
    assert!(f.broker.has_resource("default/models/x").unwrap());
    let err = conn
        .admin_post(
            "/kbs/v0/resource-policy/default/models/x",
            &f.admin,
            b"measurement = []".to_vec(),
        )
        .await
        .unwrap_err();
    let (s, _, detail) = refused(err);
    assert_eq!(s, 400);
    assert!(
        detail.contains("release policy") && detail.contains("measurement"),
        "{detail}"
    );
    conn.admin_post(
        "/kbs/v0/resource-policy/default/models/x",
        &f.admin,
        f.good_policy().into_bytes(),
    )
    .await
    .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_requests_get_precise_errors() {
    let f = fixture(|c| c.max_body_bytes = 16 << 10).await;
    let mut conn = f.endpoint.connect().await.unwrap();
    let cases: Vec<(&str, Vec<u8>, u16, &str)> = vec![
        (
            "/kbs/v0/auth",
            b"{".to_vec(),
            400,
            "auth request: malformed JSON",
        ),
        (
            "/kbs/v0/auth",
            br#"{"version":"0.4.0","tee":"snp"}"#.to_vec(),
            400,
            "missing field `extra-params`",
        ),
        (
            "/kbs/v0/auth",
            br#"{"version":"0.3.0","tee":"snp","extra-params":""}"#.to_vec(),
            401,
            "protocol version \"0.3.0\"",
        ),
        (
            "/kbs/v0/auth",
            br#"{"version":"0.4.0","tee":"sgx","extra-params":""}"#.to_vec(),
            401,
            "TEE \"sgx\" is not supported",
        ),
        (
            "/kbs/v0/auth",
            vec![b' '; 20_000],
            413,
            // An auth body is capped at 4 KiB whatever the admin body limit.
            "exceeds 4096 bytes",
        ),
        (
            "/kbs/v0/attest",
            b"{}".to_vec(),
            401,
            "no kbs-session-id cookie",
        ),
    ];
    for (path, body, status, expected) in cases {
        let a = conn.send(Method::POST, path, body, None).await.unwrap();
        let body: serde_json::Value = serde_json::from_slice(&a.body).unwrap();
        let text = body["detail"].as_str().unwrap();
        assert_eq!(a.status.as_u16(), status, "{path}: {text}");
        assert!(text.contains(expected), "{path}: {text}");
    }
    // Attest bodies: bad JSON, a bad base64 key coordinate, evidence that is not an object.
    let (s, t) = bad_attest(&f, |v| v["runtime-data"] = serde_json::json!("x")).await;
    assert_eq!(s, 400, "{t}");
    assert!(t.contains("attest request: malformed JSON"), "{t}");
    let (s, t) = bad_attest(&f, |v| v["runtime-data"]["tee-pubkey"]["x"] = "***".into()).await;
    assert_eq!(s, 400, "{t}");
    assert!(
        t.contains("tee-pubkey: TEE public key: x is not base64url"),
        "{t}"
    );
    let (s, t) = bad_attest(&f, |v| {
        v["tee-evidence"]["primary_evidence"] = serde_json::json!([1])
    })
    .await;
    assert_eq!(s, 400, "{t}");
    assert!(t.contains("primary_evidence must be a JSON object"), "{t}");
    let (s, t) = bad_attest(&f, |v| {
        v["tee-evidence"]["primary_evidence"]["attestation_report"] = "AAAA".into()
    })
    .await;
    assert_eq!(s, 400, "{t}");
    assert!(t.contains("tee-evidence.primary_evidence"), "{t}");
}

/// An attest request for a fresh session, changed by `mutate`: the status and body.
async fn bad_attest(f: &Fixture, mutate: fn(&mut serde_json::Value)) -> (u16, String) {
    let mut conn = f.endpoint.connect().await.unwrap();
    let challenge = conn.auth("snp").await.unwrap();
    let key = TeeKeyPair::generate().unwrap();
    let request = attest_request(f.attester.as_ref(), &challenge.nonce, key.public_key()).unwrap();
    let mut v = serde_json::to_value(&request).unwrap();
    mutate(&mut v);
    let a = conn
        .send(
            Method::POST,
            "/kbs/v0/attest",
            serde_json::to_vec(&v).unwrap(),
            None,
        )
        .await
        .unwrap();
    (
        a.status.as_u16(),
        String::from_utf8_lossy(&a.body).into_owned(),
    )
}

#[test]
fn any_single_byte_change_to_a_jwe_is_refused_without_panicking() {
    use rand::{Rng as _, SeedableRng as _};
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(4);
    for _ in 0..400 {
        let key = TeeKeyPair::generate().unwrap();
        let mut jwe = jwe::encrypt(key.public_key(), b"the data key").unwrap();
        let at = rng.random_range(0..jwe.len());
        let old = jwe[at];
        while jwe[at] == old {
            jwe[at] = rng.random();
        }
        assert!(
            key.decrypt(&jwe).is_err(),
            "byte {at}: {old} -> {}",
            jwe[at]
        );
    }
}

// ---- issue 16: policies pin what they accept; TDX collateral is the broker's own ----

const TDX_V4_QUOTE: &[u8] =
    include_bytes!("../../attestation/tests/data/tdx/dcapqvl-b0c06f-v4-uptodate/quote.bin");
const TDX_V4_COLLATERAL: &[u8] =
    include_bytes!("../../attestation/tests/data/tdx/dcapqvl-b0c06f-v4-uptodate/collateral.json");
const TDX_V5_COLLATERAL: &[u8] =
    include_bytes!("../../attestation/tests/data/tdx/gotdx-90c06f-v5-uptodate/collateral.json");
/// The v4 vector's pinned time (expected.json `at_pinned_time`).
const TDX_V4_NOW: u64 = 1_750_809_600;
/// The v4 quote's report_data (expected.json).
const TDX_V4_REPORT_DATA: &str = "9a9d48e7f6799642d3d1b34e1e5e1742d4bb02dd6ddd551862c1211d35c304f9eca3efdbb481601c163cf52493d6e44aed55d51ec39b7e518fadb92c2b523f20";

fn tdx_evidence(with_collateral: bool) -> Evidence {
    let evidence = confidant_attestation::TdxEvidence::new(TDX_V4_QUOTE.to_vec());
    Evidence::Tdx(if with_collateral {
        evidence.with_collateral(
            confidant_attestation::TdxCollateral::from_json(TDX_V4_COLLATERAL).unwrap(),
        )
    } else {
        evidence
    })
}

fn tdx_config(collateral: Option<&std::path::Path>) -> BrokerConfig {
    let mut config = BrokerConfig::new("127.0.0.1:0".parse().unwrap(), "/nonexistent".into());
    config.tdx_collateral = collateral.map(std::path::Path::to_owned);
    config
}

/// Fails before issue 16: the broker verified a TDX quote with the collateral the attester
/// sent (it accepted this evidence with no collateral of its own), and a TDX server, whose
/// attester sends none, could not attest at all.
#[test]
fn the_broker_judges_tdx_quotes_with_its_own_collateral_only() {
    let now = confidant_attestation::Timestamp::from_unix_seconds(TDX_V4_NOW);
    let report_data: [u8; 64] = hex::decode(TDX_V4_REPORT_DATA).unwrap().try_into().unwrap();

    // The attester's collateral is not used: without the broker's own, refused.
    let err = broker::verify_integrity(&tdx_config(None), tdx_evidence(true), &report_data, now)
        .unwrap_err();
    assert!(err.to_string().contains("holds no TDX collateral"), "{err}");

    // A directory the operator keeps: the quote's FMSPC is selected from it, and evidence
    // without collateral (what a TDX server sends) attests.
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("b0c06f.json"), TDX_V4_COLLATERAL).unwrap();
    std::fs::write(dir.path().join("90c06f.json"), TDX_V5_COLLATERAL).unwrap();
    std::fs::write(dir.path().join("README"), "not collateral").unwrap();
    let config = tdx_config(Some(dir.path()));
    for carried in [false, true] {
        let (kept, verdict) =
            broker::verify_integrity(&config, tdx_evidence(carried), &report_data, now).unwrap();
        assert!(verdict.is_accept(), "{verdict:?}");
        // The session keeps the verified claims only: no evidence, so no attester collateral.
        assert_eq!(kept.tee(), confidant_attestation::TeeKind::Tdx);
        assert!(matches!(
            kept.claims(),
            confidant_attestation::Claims::Tdx(c) if c.tcb_evaluation_data_number.is_some()
        ));
    }

    // One file, for another platform only: refused, naming the FMSPC.
    let other = dir.path().join("90c06f.json");
    let err = broker::verify_integrity(
        &tdx_config(Some(&other)),
        tdx_evidence(true),
        &report_data,
        now,
    )
    .unwrap_err();
    assert!(err.to_string().contains("FMSPC b0c06f000000"), "{err}");

    // Stale collateral is judged by the release policy's floor.
    let policy = confidant_attestation::Policy::from_toml(
        "measurements = \"any\"\ni_understand_this_accepts_any_guest = true\n\
         [tdx]\nmin_tcb_evaluation_data_number = 18\n",
    )
    .unwrap();
    let collateral = confidant_attestation::TdxCollateral::from_json(TDX_V4_COLLATERAL).unwrap();
    let verdict =
        confidant_attestation::verify(&tdx_evidence(false), Some(&collateral), &policy, now);
    assert!(verdict.failed(confidant_attestation::Check::TcbEvaluationDataNumber));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broker_with_bad_collateral_does_not_start() {
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.json");
    std::fs::write(&bad, "{}").unwrap();
    let mut config = BrokerConfig::new("127.0.0.1:0".parse().unwrap(), dir.path().join("b"));
    config.tdx_collateral = Some(bad);
    let Err(err) = broker::start(config).await else {
        panic!("started with bad collateral")
    };
    assert!(err.to_string().contains("bad.json"), "{err}");
    // Two files for one platform: which is current would be a guess.
    let twice = dir.path().join("twice");
    std::fs::create_dir(&twice).unwrap();
    std::fs::write(twice.join("a.json"), TDX_V4_COLLATERAL).unwrap();
    std::fs::write(twice.join("b.json"), TDX_V4_COLLATERAL).unwrap();
    let err = super::collateral::CollateralSource::new(&twice)
        .load()
        .unwrap_err();
    assert!(
        err.to_string()
            .contains("two collaterals for FMSPC b0c06f000000"),
        "{err}"
    );
}

/// Fails before issue 16: the in-process path stored a policy without measurements.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn set_policy_refuses_a_policy_without_measurements() {
    let f = fixture(|_| {}).await;
    let err = f
        .broker
        .set_policy("default/models/m1", "allow_simulated = true\n")
        .unwrap_err();
    assert!(err.to_string().contains("measurements is missing"), "{err}");
    f.broker
        .set_policy(
            "default/models/m1",
            "measurements = \"any\"\ni_understand_this_accepts_any_guest = true\n",
        )
        .unwrap();
}

/// A policy stored before policies had to pin `measurements` is refused when the broker
/// loads it, at start, naming the resource.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stored_unpinned_policy_stops_the_broker_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let config = BrokerConfig::new("127.0.0.1:0".parse().unwrap(), dir.path().join("b"));
    let running = broker::start(config.clone()).await.unwrap();
    running.shutdown().await;
    // What an older broker stored.
    let db = crate::storage::Database::open_in(&config.data_dir).unwrap();
    db.transaction(|tx| {
        tx.execute(
            "INSERT INTO broker_policies (path, policy, updated_at) VALUES (?1, ?2, 0)",
            rusqlite::params!["default/models/old", "allow_simulated = true\n"],
        )
    })
    .unwrap();
    drop(db);
    let Err(err) = broker::start(config).await else {
        panic!("started with an unpinned stored policy")
    };
    let text = err.to_string();
    assert!(
        text.contains("default/models/old") && text.contains("measurements is missing"),
        "{text}"
    );
}

// ---- Trustee's sample evidence (`serve --tee sample`) ----

/// The sample attester makes, for the recorded runtime data, exactly the primary evidence
/// Trustee's sample attester sent: `{"svn": "1", "report_data": <base64 standard of the
/// 48-byte digest>}`, unpadded (Trustee's sample verifier compares the bytes exactly), with
/// only our `tee` tag added (Trustee ignores unknown members).
#[test]
fn sample_evidence_is_byte_for_byte_what_trustee_recorded() {
    let v = vector();
    let request: AttestRequest = serde_json::from_value(v["attest_request"].clone()).unwrap();
    let rd = &request.runtime_data;
    let ours = attest_request(&crate::tee::Sample, &rd.nonce, &rd.tee_pubkey).unwrap();
    let mut evidence = ours.tee_evidence.primary_evidence.clone();
    assert_eq!(evidence["tee"], "sample");
    evidence.as_object_mut().unwrap().remove("tee");
    assert_eq!(
        evidence,
        v["attest_request"]["tee-evidence"]["primary_evidence"]
    );
    assert_eq!(ours.tee_evidence.additional_evidence, "");
    let report_data = B64
        .decode(evidence["report_data"].as_str().unwrap())
        .unwrap();
    assert_eq!(report_data.len(), 48, "not padded to 64");
    assert_eq!(
        super::client::tee_name(confidant_attestation::TeeKind::Sample),
        "sample"
    );
    // The TLS binding (GetEvidence) uses all 64 bytes.
    let Evidence::Sample(tls) = crate::tee::Sample.evidence(&[7u8; 64]).unwrap() else {
        panic!("sample evidence expected")
    };
    assert_eq!(B64.decode(&tls.report_data).unwrap(), vec![7u8; 64]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_client_sends_sample_evidence_as_tee_sample() {
    let (url, task, seen) = replay_kbs().await;
    let endpoint = BrokerEndpoint::new(&url, None).unwrap();
    let err = fetch_resource(
        &endpoint,
        Arc::new(crate::tee::Sample),
        "default/test/dummy",
    )
    .await
    .unwrap_err();
    assert!(matches!(err, RcarError::Jwe(_)), "{err}");
    let seen = seen.lock().unwrap().clone();
    let auth: serde_json::Value =
        serde_json::from_str(seen[0].strip_prefix("auth ").unwrap()).unwrap();
    assert_eq!(auth["tee"], "sample");
    let attest: serde_json::Value = serde_json::from_str(
        seen[1]
            .strip_prefix("attest cookie_ok=true ")
            .expect("cookie sent on attest"),
    )
    .unwrap();
    assert_eq!(attest["tee-evidence"]["primary_evidence"]["svn"], "1");
    task.abort();
}

/// Our broker takes sample evidence (as a Trustee KBS does) but releases nothing to it
/// under a policy without `allow_simulated`, nor under one that pins a measurement (sample
/// evidence measures nothing) or the simulated TEE's root; only a policy that says all of
/// it in words releases the key.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn our_broker_refuses_sample_evidence_unless_the_policy_allows_simulated() {
    let f = fixture(|_| {}).await;
    let open = "measurements = \"any\"\ni_understand_this_accepts_any_guest = true\n";
    f.register("default/models/open", &[3u8; 32], open);
    f.register("default/models/pinned", &[3u8; 32], &f.good_policy());
    f.register(
        "default/models/rooted",
        &[3u8; 32],
        &format!(
            "{open}allow_simulated = true\nsimulated_ark_sha256 = [\"{}\"]\n",
            "00".repeat(32)
        ),
    );
    f.register(
        "default/models/dev",
        &[5u8; 32],
        &format!("{open}allow_simulated = true\n"),
    );
    let sample: Arc<dyn Attester> = Arc::new(crate::tee::Sample);
    for path in [
        "default/models/open",
        "default/models/pinned",
        "default/models/rooted",
    ] {
        let (s, kind, detail) = refused(
            fetch_resource(&f.endpoint, Arc::clone(&sample), path)
                .await
                .unwrap_err(),
        );
        assert_eq!((s, kind.as_str()), (403, "PolicyDeny"), "{path}: {detail}");
    }
    let key = fetch_resource(&f.endpoint, sample, "default/models/dev")
        .await
        .unwrap();
    assert_eq!(key.as_slice(), &[5u8; 32]);
}

/// Sample evidence that does not bind the session's runtime data (another digest, or a
/// report_data of the wrong length) is refused at attest, as Trustee refuses it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn our_broker_refuses_unbound_sample_evidence() {
    let f = fixture(|_| {}).await;
    for report_data in [
        B64.encode([1u8; 48]),
        B64.encode([0u8; 32]),
        "***".to_owned(),
    ] {
        let mut conn = f.endpoint.connect().await.unwrap();
        let challenge = conn.auth("sample").await.unwrap();
        let key = TeeKeyPair::generate().unwrap();
        let mut request =
            attest_request(&crate::tee::Sample, &challenge.nonce, key.public_key()).unwrap();
        request.tee_evidence.primary_evidence =
            serde_json::json!({"svn": "1", "report_data": report_data});
        let (s, _, detail) = refused(conn.attest(&request).await.unwrap_err());
        assert_eq!(s, 401, "{report_data}: {detail}");
        assert!(detail.contains("evidence rejected"), "{detail}");
    }
    // Sample evidence in a session opened for snp is refused too.
    let mut conn = f.endpoint.connect().await.unwrap();
    let challenge = conn.auth("snp").await.unwrap();
    let key = TeeKeyPair::generate().unwrap();
    let request = attest_request(&crate::tee::Sample, &challenge.nonce, key.public_key()).unwrap();
    let (s, _, detail) = refused(conn.attest(&request).await.unwrap_err());
    assert_eq!(s, 401, "{detail}");
    assert!(detail.contains("opened for snp"), "{detail}");
}

// ---- the same in reverse: what Trustee's own client (guest-components kbs_protocol) sends ----

/// Our broker answers each message of guest-components' `kbs_protocol` RCAR client (at
/// 8246e5e0) as a Trustee KBS does, with the statuses that client acts on: `auth` with its
/// `{"supported-hash-algorithms": [...]}` extra-params (200; our `""` extra-params make it
/// keep SHA-384), `attest` with kbs_types' `"init-data": null` and an untagged sample
/// evidence object (200, a JWT whose `exp`/`iat` jwt_simple reads as integers), and
/// `GET resource` on the session cookie with a query string (200, a JWE for its key).
/// Init-data that a client sends is accepted but neither verified nor put in the token
/// (no release policy of ours can refer to it). A Bearer token without the cookie is
/// answered 401 `TokenNotFound`, on which that client attests again (deliberate: this
/// broker releases on the cookie only).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn our_broker_answers_what_trustees_client_sends() {
    let f = fixture(|_| {}).await;
    let open = "measurements = \"any\"\ni_understand_this_accepts_any_guest = true\n";
    f.register(
        "default/key/dev",
        b"interop-secret-0123456789",
        &format!("{open}allow_simulated = true\n"),
    );
    for init_data in [
        serde_json::Value::Null,
        serde_json::json!({"format": "toml", "body": "algorithm = \"sha384\"\nversion = \"0.1.0\"\n"}),
    ] {
        let mut conn = f.endpoint.connect().await.unwrap();
        // kbs_protocol's get_resource tries the resource first, with no session: 401
        // TokenNotFound sends it to auth (as Trustee answers).
        let a = conn
            .send(
                Method::GET,
                "/kbs/v0/resource/default/key/dev",
                Vec::new(),
                None,
            )
            .await
            .unwrap();
        assert_eq!(a.status.as_u16(), 401);
        let e: serde_json::Value = serde_json::from_slice(&a.body).unwrap();
        assert_eq!(
            e["type"],
            "https://github.com/confidential-containers/kbs/errors/TokenNotFound"
        );
        // The auth body exactly as the real kbs-client sent it (docs/broker.md, "Checked
        // live with Trustee's own client").
        let auth = serde_json::json!({
            "version": "0.4.0",
            "tee": "sample",
            "extra-params": {"supported-hash-algorithms": ["sha256", "sha384", "sha512", "sm3"]},
        });
        let a = conn
            .send(
                Method::POST,
                "/kbs/v0/auth",
                serde_json::to_vec(&auth).unwrap(),
                None,
            )
            .await
            .unwrap();
        assert_eq!(a.status.as_u16(), 200);
        assert!(conn.session().is_some(), "no kbs-session-id cookie");
        let challenge: serde_json::Value = serde_json::from_slice(&a.body).unwrap();
        // No `selected-hash-algorithm`: the client keeps its default, SHA-384.
        assert_eq!(challenge["extra-params"], "");
        let nonce = challenge["nonce"].as_str().unwrap();
        assert_eq!(B64.decode(nonce).unwrap().len(), 32);

        let key = TeeKeyPair::generate().unwrap();
        let ours = attest_request(&crate::tee::Sample, nonce, key.public_key()).unwrap();
        let mut body = serde_json::to_value(&ours).unwrap();
        // guest-components' sample attester: `{"svn","report_data"}`, no `tee` member.
        body["tee-evidence"]["primary_evidence"]
            .as_object_mut()
            .unwrap()
            .remove("tee");
        body["init-data"] = init_data.clone();
        let a = conn
            .send(
                Method::POST,
                "/kbs/v0/attest",
                serde_json::to_vec(&body).unwrap(),
                None,
            )
            .await
            .unwrap();
        assert_eq!(
            a.status.as_u16(),
            200,
            "{}",
            String::from_utf8_lossy(&a.body)
        );
        let token = serde_json::from_slice::<serde_json::Value>(&a.body).unwrap()["token"]
            .as_str()
            .unwrap()
            .to_owned();
        let claims: serde_json::Value =
            serde_json::from_slice(&B64URL.decode(token.split('.').nth(1).unwrap()).unwrap())
                .unwrap();
        let (iat, exp) = (
            claims["iat"].as_u64().unwrap(),
            claims["exp"].as_u64().unwrap(),
        );
        assert!(exp > iat, "{claims}");
        assert!(claims.get("init_data_claims").is_none(), "{claims}");

        let a = conn
            .send(
                Method::GET,
                "/kbs/v0/resource/default/key/dev?version=1",
                Vec::new(),
                None,
            )
            .await
            .unwrap();
        assert_eq!(a.status.as_u16(), 200);
        assert_eq!(
            key.decrypt(&a.body).unwrap().as_slice(),
            b"interop-secret-0123456789"
        );

        // The token client (passport mode): Bearer, no cookie.
        let mut bare = f.endpoint.connect().await.unwrap();
        let a = bare
            .send(
                Method::GET,
                "/kbs/v0/resource/default/key/dev",
                Vec::new(),
                Some(&token),
            )
            .await
            .unwrap();
        assert_eq!(a.status.as_u16(), 401);
        let e: serde_json::Value = serde_json::from_slice(&a.body).unwrap();
        assert_eq!(
            e["type"],
            "https://github.com/confidential-containers/kbs/errors/TokenNotFound"
        );
        assert!(
            e["detail"]
                .as_str()
                .unwrap()
                .contains("not on a bearer token"),
            "{e}"
        );
    }
}

/// A broker whose certificate is a CA certificate (what `openssl req -x509` makes by
/// default, and what a Trustee KBS set up that way presents) is refused, and the error says
/// what to give instead; a certificate that does not chain to --broker-ca says that.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broker_certificate_marked_ca_is_refused_with_a_hint() {
    let key = rcgen::KeyPair::generate().unwrap();
    let mut params = rcgen::CertificateParams::new(vec!["127.0.0.1".to_owned()]).unwrap();
    params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let cert = params.self_signed(&key).unwrap();
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_no_client_auth()
    .with_single_cert(
        vec![cert.der().clone()],
        rustls::pki_types::PrivateKeyDer::Pkcs8(key.serialize_der().into()),
    )
    .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("https://{}", listener.local_addr().unwrap());
    let server = tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let _ = acceptor.accept(tcp).await;
        }
    });
    let endpoint = BrokerEndpoint::new(&url, Some(cert.pem().as_bytes())).unwrap();
    let err = endpoint
        .connect()
        .await
        .err()
        .expect("a CA certificate as the server's");
    let text = err.to_string();
    assert!(matches!(err, RcarError::Unreachable { .. }), "{text}");
    assert!(text.contains("CaUsedAsEndEntity"), "{text}");
    assert!(
        text.contains("give --broker-ca the CA that issued"),
        "{text}"
    );
    server.abort();
    // Our broker (a certificate without CA:TRUE) checked against another certificate.
    let f = fixture(|_| {}).await;
    let other = rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_owned()]).unwrap();
    let endpoint = BrokerEndpoint::new(&f.broker.url, Some(other.cert.pem().as_bytes())).unwrap();
    let text = endpoint.connect().await.err().unwrap().to_string();
    assert!(text.contains("does not chain to the --broker-ca"), "{text}");
}

/// What Trustee's `kbs-client config …` sends, byte for byte as it sends it
/// (tools/kbs-client/src/lib.rs at Trustee 78962cd4): `set-resource` (raw body,
/// `application/octet-stream`, `Authorization: Bearer <token>`), `delete-resource` (DELETE),
/// `set-resource-policy` (`{"policy": "<base64url Rego>"}` to `/kbs/v0/resource-policy`), and
/// the attestation-service calls. Each gets an answer kbs-client reports: 200 where this broker
/// does the same thing, else a KBS error body saying what it does instead.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trustees_admin_requests_get_answers_kbs_client_can_act_on() {
    let f = fixture(|_| {}).await;
    let open = "measurements = \"any\"\ni_understand_this_accepts_any_guest = true\n";
    f.broker
        .set_policy(
            "default/test/dummy",
            &format!("{open}allow_simulated = true\n"),
        )
        .unwrap();
    let kind = |body: &[u8]| -> (String, String) {
        let e: serde_json::Value = serde_json::from_slice(body).unwrap();
        (
            e["type"]
                .as_str()
                .unwrap()
                .rsplit('/')
                .next()
                .unwrap()
                .to_owned(),
            e["detail"].as_str().unwrap().to_owned(),
        )
    };
    let mut admin = f.endpoint.connect().await.unwrap();
    let path = "/kbs/v0/resource/default/test/dummy";

    // set-resource: no token 401, a wrong token 403, the admin key 200 (empty body).
    let a = admin
        .send(Method::POST, path, b"kbs-client-secret".to_vec(), None)
        .await
        .unwrap();
    assert_eq!(
        (a.status.as_u16(), kind(&a.body).0.as_str()),
        (401, "AdminAuth")
    );
    let a = admin
        .send(
            Method::POST,
            path,
            b"kbs-client-secret".to_vec(),
            Some("not-the-key"),
        )
        .await
        .unwrap();
    assert_eq!(
        (a.status.as_u16(), kind(&a.body).0.as_str()),
        (403, "AdminAuth")
    );
    let a = admin
        .send(
            Method::POST,
            path,
            b"kbs-client-secret".to_vec(),
            Some(&f.admin),
        )
        .await
        .unwrap();
    assert_eq!(a.status.as_u16(), 200);
    assert!(a.body.is_empty());

    // The resource is released to a sample session (what kbs-client get-resource does).
    let release = || async {
        let mut conn = f.endpoint.connect().await.unwrap();
        let challenge = conn.auth("sample").await.unwrap();
        let key = TeeKeyPair::generate().unwrap();
        let body = attest_request(&crate::tee::Sample, &challenge.nonce, key.public_key()).unwrap();
        let a = conn
            .send(
                Method::POST,
                "/kbs/v0/attest",
                serde_json::to_vec(&body).unwrap(),
                None,
            )
            .await
            .unwrap();
        assert_eq!(
            a.status.as_u16(),
            200,
            "{}",
            String::from_utf8_lossy(&a.body)
        );
        let a = conn
            .send(Method::GET, path, Vec::new(), None)
            .await
            .unwrap();
        (a, key)
    };
    let (a, key) = release().await;
    assert_eq!(a.status.as_u16(), 200);
    assert_eq!(
        key.decrypt(&a.body).unwrap().as_slice(),
        b"kbs-client-secret"
    );

    // delete-resource: admin only; 200, then 404 (nothing left), and a session the policy
    // admits is told 404 (kbs_protocol: ResourceNotFound) rather than given anything.
    let a = admin
        .send(Method::DELETE, path, Vec::new(), None)
        .await
        .unwrap();
    assert_eq!(
        (a.status.as_u16(), kind(&a.body).0.as_str()),
        (401, "AdminAuth")
    );
    let a = admin
        .send(Method::DELETE, path, Vec::new(), Some("not-the-key"))
        .await
        .unwrap();
    assert_eq!(
        (a.status.as_u16(), kind(&a.body).0.as_str()),
        (403, "AdminAuth")
    );
    let a = admin
        .send(Method::DELETE, path, Vec::new(), Some(&f.admin))
        .await
        .unwrap();
    assert_eq!(
        a.status.as_u16(),
        200,
        "{}",
        String::from_utf8_lossy(&a.body)
    );
    let a = admin
        .send(Method::DELETE, path, Vec::new(), Some(&f.admin))
        .await
        .unwrap();
    assert_eq!(
        (a.status.as_u16(), kind(&a.body).0.as_str()),
        (404, "ResourceNotFound")
    );
    let (a, _) = release().await;
    assert_eq!(
        (a.status.as_u16(), kind(&a.body).0.as_str()),
        (404, "ResourceNotFound")
    );
    // The release policy stayed: a resource stored again is released under it.
    let a = admin
        .send(Method::POST, path, b"stored-again".to_vec(), Some(&f.admin))
        .await
        .unwrap();
    assert_eq!(a.status.as_u16(), 200);
    let (a, key) = release().await;
    assert_eq!(key.decrypt(&a.body).unwrap().as_slice(), b"stored-again");

    // set-resource-policy (Trustee's Rego): admin first, then 400 naming where the
    // per-resource TOML policy goes; nothing changes.
    let rego = B64URL.encode("package policy\ndefault allow = true\n");
    let body = serde_json::to_vec(&serde_json::json!({ "policy": rego })).unwrap();
    let a = admin
        .send(Method::POST, "/kbs/v0/resource-policy", body.clone(), None)
        .await
        .unwrap();
    assert_eq!(
        (a.status.as_u16(), kind(&a.body).0.as_str()),
        (401, "AdminAuth")
    );
    let a = admin
        .send(
            Method::POST,
            "/kbs/v0/resource-policy",
            body,
            Some(&f.admin),
        )
        .await
        .unwrap();
    let (k, detail) = kind(&a.body);
    assert_eq!((a.status.as_u16(), k.as_str()), (400, "InvalidRequest"));
    assert!(
        detail.contains("/kbs/v0/resource-policy/<repository>/<type>/<tag>"),
        "{detail}"
    );
    let (a, key) = release().await;
    assert_eq!(key.decrypt(&a.body).unwrap().as_slice(), b"stored-again");

    // The attestation service's endpoints (set-attestation-policy, set-sample-reference-value,
    // get-reference-value): 404 PluginNotFound, as Trustee answers a plugin it lacks.
    for (method, endpoint) in [
        (Method::POST, "/kbs/v0/attestation-policy"),
        (Method::POST, "/kbs/v0/reference-value"),
        (Method::GET, "/kbs/v0/reference-value/svn"),
    ] {
        let a = admin
            .send(method, endpoint, b"{}".to_vec(), Some(&f.admin))
            .await
            .unwrap();
        let (k, detail) = kind(&a.body);
        assert_eq!((a.status.as_u16(), k.as_str()), (404, "PluginNotFound"));
        assert!(detail.contains("release policy"), "{detail}");
    }
    let a = admin
        .send(Method::GET, "/kbs/v0/no-such-plugin", Vec::new(), None)
        .await
        .unwrap();
    assert_eq!(
        (a.status.as_u16(), kind(&a.body).0.as_str()),
        (404, "PluginNotFound")
    );
}
