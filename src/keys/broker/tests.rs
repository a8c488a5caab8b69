//! The broker's limits on anonymous callers, what a session keeps, and what a caller the
//! release policy does not admit learns. The RCAR exchange itself is tested in
//! `src/keys/tests.rs` and, with real processes, in `tests/broker.rs`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use confidant_attestation::{Evidence, SnpEvidence};
use hyper::Method;

use super::sessions::{Attested, NoChallenge, Peer, PeerLimits, Sessions};
use super::{BrokerConfig, RunningBroker, start};
use crate::keys::client::{BrokerEndpoint, Connection, attest_request, fetch_resource};
use crate::keys::error::{BrokerError, RcarError};
use crate::keys::jwe::TeeKeyPair;
use crate::tee::{Attester, AttesterKind, TeeError};

// ---- the session table, directly ----

fn limits() -> PeerLimits {
    PeerLimits {
        challenges_per_peer: 3,
        max_challenges: 5,
        sessions_per_peer: 2,
        max_sessions: 3,
        auth_burst: 4,
        auth_per_second: 2.0,
        max_peers: 100,
    }
}

fn peer(last: u8) -> Peer {
    Peer::of(IpAddr::V4(Ipv4Addr::new(10, 0, 0, last)))
}

fn table() -> Sessions {
    Sessions::new(limits(), Duration::from_secs(60), Duration::from_secs(300))
}

fn open(s: &Sessions, p: Peer, id: &str, now: Instant) {
    s.open_challenge(p, id.into(), format!("nonce-{id}"), "snp".into(), now)
        .unwrap();
}

/// Claims of genuine simulated evidence, as `attest` keeps them.
fn attested() -> Attested {
    let tee = confidant_attestation::SimulatedTee::shared().unwrap();
    let evidence = tee.attest(&[0; 64], &[1; 48]).unwrap();
    let mut base = confidant_attestation::Policy::dangerous_authenticity_only();
    base.dangerous_allow_simulated = true;
    let (verdict, appraised) = confidant_attestation::verify_and_keep(
        &evidence,
        None,
        &base,
        super::http::now_timestamp(),
    );
    assert!(verdict.is_accept(), "{:?}", verdict.failures);
    Attested {
        appraised: appraised.unwrap(),
        tee_pubkey: TeeKeyPair::generate().unwrap().public_key().clone(),
        report_data: [0; 64],
        gpus: Vec::new(),
    }
}

#[test]
fn a_peer_holds_a_bounded_number_of_challenges_and_crowds_out_only_itself() {
    let s = table();
    let now = Instant::now();
    for i in 0..10 {
        open(&s, peer(1), &format!("a{i}"), now);
    }
    // Three open at most: the newest three.
    assert_eq!(s.counts(peer(1)), (3, 0, 3, 0));
    assert!(matches!(
        s.take_challenge("a6", now),
        Err(NoChallenge::Unknown)
    ));
    let (nonce, tee, who) = s.take_challenge("a9", now).ok().unwrap();
    assert_eq!(
        (nonce.as_str(), tee.as_str(), who),
        ("nonce-a9", "snp", peer(1))
    );
    // Another peer's challenges are not touched by the first one's flood ...
    open(&s, peer(2), "b0", now);
    open(&s, peer(2), "b1", now);
    for i in 10..20 {
        open(&s, peer(1), &format!("a{i}"), now);
    }
    assert!(s.take_challenge("b0", now).is_ok());
    // ... until the whole table is full, when the oldest of all goes.
    open(&s, peer(3), "c0", now);
    open(&s, peer(4), "d0", now);
    assert_eq!(s.counts(peer(1)).0, 5);
    assert!(matches!(
        s.take_challenge("b1", now),
        Err(NoChallenge::Unknown)
    ));
    // An expired challenge is refused as expired, then forgotten.
    open(&s, peer(5), "e0", now);
    let later = now + Duration::from_secs(61);
    assert!(matches!(
        s.take_challenge("e0", later),
        Err(NoChallenge::Expired)
    ));
    open(&s, peer(5), "e1", later);
    assert_eq!(
        s.counts(peer(5)),
        (1, 0, 1, 0),
        "expired challenges are purged"
    );
}

#[test]
fn auth_calls_are_metered_per_peer() {
    let s = table();
    let now = Instant::now();
    for _ in 0..4 {
        s.admit_auth(peer(1), now).unwrap();
    }
    let Err(BrokerError::TooManyRequests { retry_after, what }) = s.admit_auth(peer(1), now) else {
        panic!("the fifth call in the same instant is over the burst");
    };
    assert_eq!(retry_after, Duration::from_secs(1), "{what}");
    assert!(what.contains("10.0.0.1"), "{what}");
    // Another peer has its own bucket; the first regains 2 calls a second.
    s.admit_auth(peer(2), now).unwrap();
    s.admit_auth(peer(1), now + Duration::from_millis(500))
        .unwrap();
    assert!(
        s.admit_auth(peer(1), now + Duration::from_millis(500))
            .is_err()
    );
    // An IPv6 peer is its /64: the low bits do not buy a new bucket.
    let v6 = |low: u16| Peer::of(IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 0, 1, 0, 0, 0, low)));
    for low in 0..4 {
        s.admit_auth(v6(low), now).unwrap();
    }
    assert!(matches!(
        s.admit_auth(v6(99), now),
        Err(BrokerError::TooManyRequests { .. })
    ));
    assert_eq!(v6(1).to_string(), "2001:db8:0:1::/64");
    // An IPv4-mapped IPv6 address is the IPv4 peer.
    assert_eq!(
        Peer::of(IpAddr::V6(Ipv4Addr::new(10, 0, 0, 1).to_ipv6_mapped())),
        peer(1)
    );
}

#[test]
fn attested_sessions_are_bounded_and_never_crowded_out_by_challenges() {
    let s = table();
    let now = Instant::now();
    let claims = attested();
    let again = || Attested {
        appraised: claims.appraised.clone(),
        tee_pubkey: claims.tee_pubkey.clone(),
        report_data: claims.report_data,
        gpus: Vec::new(),
    };
    s.attest("s1", peer(1), again(), now).unwrap();
    s.attest("s2", peer(1), again(), now).unwrap();
    // The peer's third is refused with 429, before any evidence would be verified.
    let err = s.session_room(peer(1), now).unwrap_err();
    assert_eq!(err.status(), 429, "{err}");
    let err = s.attest("s3", peer(1), again(), now).unwrap_err();
    assert!(matches!(err, BrokerError::TooManyRequests { .. }), "{err}");
    s.attest("s4", peer(2), again(), now).unwrap();
    // The table is full: another peer is told the broker is busy (503).
    assert_eq!(s.session_room(peer(3), now).unwrap_err().status(), 503);
    // A flood of challenges from everyone changes nothing for attested sessions.
    for i in 0..1000 {
        open(&s, peer((i % 7) as u8), &format!("x{i}"), now);
    }
    for id in ["s1", "s2", "s4"] {
        assert!(s.attested(id, now).is_ok(), "{id}");
    }
    // Sessions end when they expire, and make room then.
    let later = now + Duration::from_secs(301);
    assert!(matches!(
        s.attested("s1", later),
        Err(BrokerError::Session(m)) if m.contains("expired")
    ));
    s.attest("s5", peer(1), again(), later).unwrap();
}

#[test]
fn a_429_says_when_to_retry() {
    let e = BrokerError::TooManyRequests {
        what: "x".into(),
        retry_after: Duration::from_millis(1500),
    };
    let r = super::http::error_response(&e);
    assert_eq!(r.status().as_u16(), 429);
    assert_eq!(r.headers()[hyper::header::RETRY_AFTER], "2");
}

// ---- over HTTPS, in process ----

struct Fixture {
    dir: tempfile::TempDir,
    broker: RunningBroker,
    endpoint: BrokerEndpoint,
    attester: Arc<crate::tee::Simulated>,
}

async fn fixture(tweak: impl FnOnce(&mut BrokerConfig)) -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let mut config = BrokerConfig::new("127.0.0.1:0".parse().unwrap(), dir.path().join("broker"));
    tweak(&mut config);
    let broker = start(config.clone()).await.unwrap();
    let ca = std::fs::read(config.cert_path()).unwrap();
    let endpoint = BrokerEndpoint::new(&broker.url, Some(&ca)).unwrap();
    let bin = dir.path().join("fake-binary");
    std::fs::write(&bin, b"the binary whose hash is the simulated measurement").unwrap();
    let attester = Arc::new(crate::tee::Simulated::measuring(&bin).unwrap());
    Fixture {
        dir,
        broker,
        endpoint,
        attester,
    }
}

impl Fixture {
    fn policy(&self, measurement: &[u8; 48]) -> String {
        format!(
            "measurements = [\"{}\"]\nallow_simulated = true\n",
            hex::encode(measurement)
        )
    }

    async fn attested(&self) -> Connection {
        let mut conn = self.endpoint.connect().await.unwrap();
        let challenge = conn.auth("snp").await.unwrap();
        let key = TeeKeyPair::generate().unwrap();
        let request =
            attest_request(self.attester.as_ref(), &challenge.nonce, key.public_key()).unwrap();
        conn.attest(&request).await.unwrap();
        conn
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

/// Before this change every `auth` was answered 200 until 10,000 challenges filled the one
/// table; a caller over its rate is now answered 429 with `Retry-After`, before its body is
/// read, and that costs an attested session nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_over_its_auth_rate_is_answered_429_and_attested_sessions_carry_on() {
    let f = fixture(|c| {
        c.limits.auth_burst = 3;
        // Slow enough that no call is regained while the test runs.
        c.limits.auth_per_second = 0.001;
    })
    .await;
    let path = "default/models/m";
    f.broker.put_resource(path, &[4u8; 32]).unwrap();
    f.broker
        .set_policy(path, &f.policy(f.attester.measurement()))
        .unwrap();
    let mut attested = f.attested().await;
    let mut anonymous = f.endpoint.connect().await.unwrap();
    let body = br#"{"version":"0.4.0","tee":"snp","extra-params":""}"#;
    let mut statuses = Vec::new();
    let mut over = None;
    for _ in 0..6 {
        anonymous.set_session(None);
        let a = anonymous
            .send(Method::POST, "/kbs/v0/auth", body.to_vec(), None)
            .await
            .unwrap();
        statuses.push(a.status.as_u16());
        if a.status.as_u16() == 429 {
            let v: serde_json::Value = serde_json::from_slice(&a.body).unwrap();
            assert!(
                v["type"].as_str().unwrap().ends_with("/TooManyRequests"),
                "{v}"
            );
            over = Some(v["detail"].as_str().unwrap().to_owned());
        }
    }
    // Two of the three burst calls remain (the attested session spent one).
    assert_eq!(statuses, [200, 200, 429, 429, 429, 429]);
    assert!(over.unwrap().contains("auth calls per second"));
    // The attested session still gets its key.
    let jwe = attested.resource(path).await.unwrap();
    assert!(!jwe.is_empty());
}

/// Evidence with more certificate entries than an SNP chain has, or an attest body over
/// the evidence cap, is refused before verification (before this change: up to 1 MiB and
/// any number of entries were parsed, verified and kept for the session's lifetime).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_evidence_and_long_certificate_tables_are_refused() {
    let f = fixture(|_| {}).await;
    #[derive(Debug)]
    struct Padded(Arc<crate::tee::Simulated>);
    impl Attester for Padded {
        fn kind(&self) -> AttesterKind {
            AttesterKind::Simulated
        }
        fn evidence(&self, report_data: &[u8; 64]) -> Result<Evidence, TeeError> {
            let Evidence::Simulated(e) = self.0.evidence(report_data)? else {
                unreachable!()
            };
            let mut chain = e.cert_chain().to_vec();
            while chain.len() <= super::MAX_CERT_ENTRIES {
                chain.push(chain[0].clone());
            }
            Ok(Evidence::Simulated(SnpEvidence::new(
                e.report().to_vec(),
                chain,
            )))
        }
    }
    let mut conn = f.endpoint.connect().await.unwrap();
    let challenge = conn.auth("snp").await.unwrap();
    let key = TeeKeyPair::generate().unwrap();
    let request = attest_request(
        &Padded(Arc::clone(&f.attester)),
        &challenge.nonce,
        key.public_key(),
    )
    .unwrap();
    let (s, kind, detail) = refused(conn.attest(&request).await.unwrap_err());
    assert_eq!((s, kind.as_str()), (400, "InvalidRequest"), "{detail}");
    assert!(detail.contains("cert_chain has 5 entries"), "{detail}");

    // Additional evidence over the cap: refused by size (413).
    let mut conn = f.endpoint.connect().await.unwrap();
    let challenge = conn.auth("snp").await.unwrap();
    let mut request =
        attest_request(f.attester.as_ref(), &challenge.nonce, key.public_key()).unwrap();
    request.tee_evidence.additional_evidence = "x".repeat(super::DEFAULT_MAX_EVIDENCE_BYTES);
    // The broker reads and discards an over-size body up to 1 MiB before it answers, so the
    // client, still uploading, gets the 413 rather than a reset connection.
    let (s, _, detail) = refused(conn.attest(&request).await.unwrap_err());
    assert_eq!(s, 413, "{detail}");
    assert!(
        detail.contains(&format!(
            "exceeds {} bytes",
            super::DEFAULT_MAX_EVIDENCE_BYTES
        )),
        "{detail}"
    );
    // Honest evidence of the usual size fits.
    let _ = f.attested().await;
}

/// Before this change an attested caller was told 404 for a path without a resource and
/// 403 with the failed checks for one whose policy refused it: it could map which resources
/// exist. Every refusal is now the same answer, and the reasons go to the broker's log.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unadmitted_caller_gets_the_same_answer_whether_or_not_the_path_exists() {
    let f = fixture(|_| {}).await;
    let other = f.policy(&[0xab; 48]);
    // A resource without a policy; one whose policy refuses; a policy without a resource
    // that refuses; nothing at all.
    f.broker
        .put_resource("default/models/nopolicy", &[1u8; 32])
        .unwrap();
    f.broker
        .put_resource("default/models/refused", &[1u8; 32])
        .unwrap();
    f.broker
        .set_policy("default/models/refused", &other)
        .unwrap();
    f.broker
        .set_policy("default/models/policy-only", &other)
        .unwrap();
    let mut answers = Vec::new();
    for path in [
        "default/models/nopolicy",
        "default/models/refused",
        "default/models/policy-only",
        "default/models/absent",
    ] {
        let err = fetch_resource(&f.endpoint, f.attester.clone(), path)
            .await
            .unwrap_err();
        let (s, kind, detail) = refused(err);
        answers.push((s, kind, detail.replace(path, "PATH")));
    }
    assert_eq!(answers[0].0, 403, "{answers:?}");
    assert_eq!(answers[0].1, "PolicyDeny", "{answers:?}");
    assert!(
        answers[0].2.contains("not released to this session"),
        "{answers:?}"
    );
    assert!(
        answers.iter().all(|a| *a == answers[0]),
        "the answers differ: {answers:#?}"
    );
    // A caller the policy admits is told when there is no resource.
    f.broker
        .set_policy(
            "default/models/policy-only",
            &f.policy(f.attester.measurement()),
        )
        .unwrap();
    let (s, _, detail) = refused(
        fetch_resource(
            &f.endpoint,
            f.attester.clone(),
            "default/models/policy-only",
        )
        .await
        .unwrap_err(),
    );
    assert_eq!(s, 404, "{detail}");
}

/// Before this change `resource` decrypted the stored secret before judging the policy: a
/// damaged row answered an unadmitted caller 500 instead of the policy's refusal. Now
/// nothing is decrypted until the policy admits the caller.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_secret_is_decrypted_only_after_the_policy_admits_the_caller() {
    let f = fixture(|_| {}).await;
    let path = "default/models/m";
    f.broker.put_resource(path, &[5u8; 32]).unwrap();
    f.broker.set_policy(path, &f.policy(&[0xab; 48])).unwrap();
    // Damage the ciphertext: decrypting it would fail (and be seen as an internal error).
    let db = crate::storage::Database::open_in(&f.dir.path().join("broker")).unwrap();
    let changed = db
        .transaction(|tx| {
            tx.execute(
                "UPDATE broker_resources SET ciphertext = zeroblob(48) WHERE path = ?1",
                [path],
            )
        })
        .unwrap();
    assert_eq!(changed, 1);
    let mut conn = f.attested().await;
    let (s, kind, _) = refused(conn.resource(path).await.unwrap_err());
    assert_eq!((s, kind.as_str()), (403, "PolicyDeny"));
    // Once the policy admits the caller, the secret is decrypted, and the damage shows.
    f.broker
        .set_policy(path, &f.policy(f.attester.measurement()))
        .unwrap();
    let (s, kind, detail) = refused(conn.resource(path).await.unwrap_err());
    assert_eq!((s, kind.as_str()), (500, "InternalError"), "{detail}");
}
