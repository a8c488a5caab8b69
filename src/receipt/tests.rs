use std::sync::Arc;

use confidant_attestation::{Policy, Timestamp};

use super::digest::{RequestInput, request, response};
use super::verify::{Against, verify};
use super::*;
use crate::tee::Simulated;

/// A simulated server: its attester measures a file holding `tag`.
fn server(tag: &str) -> (Arc<ReceiptSigner>, String) {
    let dir = tempfile::tempdir().expect("tempdir");
    let binary = dir.path().join("server");
    std::fs::write(&binary, tag).expect("write");
    let attester = Simulated::measuring(&binary).expect("measure");
    let measurement = hex::encode(attester.measurement());
    let signer = ReceiptSigner::new(&attester).expect("signer");
    (Arc::new(signer), measurement)
}

fn pinning(measurement: &str) -> Policy {
    Policy::from_toml(&format!(
        "measurements = [\"{measurement}\"]\nallow_simulated = true\n"
    ))
    .expect("policy")
}

fn now() -> Timestamp {
    Timestamp::from_unix_seconds(crate::unix_now().max(0) as u64)
}

const SALT: &[u8] = b"0123456789abcdef-client-salt";

fn request_digest() -> [u8; 32] {
    request(
        SALT,
        RequestInput::Rows {
            shape: &[2, 3],
            values: &[1.0, 2.0, 3.0, 4.0, 5.0, 6.0],
        },
    )
}

fn response_digest() -> [u8; 32] {
    response(2, 2, &[0.25, 0.75, 0.5, 0.5], &["yes", "no"])
}

fn draft(signer: &Arc<ReceiptSigner>, n: usize) -> Draft<'static> {
    Draft {
        signer: Arc::clone(signer),
        rpc: "predict",
        request_id: format!("req-{n}").into(),
        request: request_digest(),
        response: response_digest(),
        model: "demo".into(),
        version: "1.0.0".into(),
        manifest: [7; 32],
        epsilon: 0.5,
    }
}

/// Receipts for a group of `n` statements; the `i`-th statement is `draft(i)` at seq 100 + i.
fn group(signer: &Arc<ReceiptSigner>, n: usize) -> Vec<Vec<u8>> {
    let statements: Vec<Vec<u8>> = (0..n)
        .map(|i| {
            draft(signer, i)
                .statement(100 + i as u64, &"ab".repeat(32), 1_700_000_000_000)
                .to_cbor()
        })
        .collect();
    signer.sign_group(&statements)
}

fn against<'a>(signer: &'a ReceiptSigner, policy: &'a Policy) -> Against<'a> {
    Against {
        evidence_json: signer.evidence_json(),
        policy,
        now: now(),
        request: Some(request_digest()),
        response: Some(response_digest()),
    }
}

#[test]
fn every_receipt_of_groups_of_every_size_verifies() {
    let (signer, m) = server("server A");
    let policy = pinning(&m);
    for n in [1, 2, 3, 5, 8, 13] {
        let receipts = group(&signer, n);
        assert_eq!(receipts.len(), n);
        for (i, r) in receipts.iter().enumerate() {
            let v = verify(r, &against(&signer, &policy));
            assert!(v.accepted(), "group {n}, receipt {i}: {:?}", v.failures);
            let st = v.statement.expect("statement");
            assert_eq!(st["audit_seq"], 100 + i as u64);
            assert_eq!(st["request_id"], format!("req-{i}"));
            assert_eq!(st["epsilon"], 0.5);
        }
    }
    // Counted for /metrics: six groups, signed whole (no nonces are made ahead here).
    assert_eq!(
        signer.counts(),
        SignedCounts {
            groups_nonce_ahead: 0,
            groups_whole: 6,
            receipts: 1 + 2 + 3 + 5 + 8 + 13,
        }
    );
}

#[test]
fn any_changed_byte_of_a_receipt_fails() {
    let (signer, m) = server("server A");
    let policy = pinning(&m);
    let receipts = group(&signer, 3);
    let receipt = &receipts[1];
    for i in 0..receipt.len() {
        for bit in [0x01u8, 0x80] {
            let mut bad = receipt.clone();
            bad[i] ^= bit;
            let v = verify(&bad, &against(&signer, &policy));
            assert!(
                !v.accepted(),
                "flipping bit {bit:#x} of byte {i} went unnoticed"
            );
        }
    }
    // Truncated, or with bytes after it.
    let v = verify(&receipt[..receipt.len() - 1], &against(&signer, &policy));
    assert!(!v.accepted());
    let mut longer = receipt.clone();
    longer.push(0);
    let v = verify(&longer, &against(&signer, &policy));
    assert!(!v.accepted());
    assert_eq!(v.checks[0].name, "envelope", "{:?}", v.failures);
}

#[test]
fn any_changed_byte_of_the_evidence_fails() {
    let (signer, m) = server("server A");
    let policy = pinning(&m);
    let receipt = &group(&signer, 1)[0];
    let evidence = signer.evidence_json().to_vec();
    // Every byte would take minutes of RSA verification in a debug build: a spread of them,
    // the first and the last included.
    let step = (evidence.len() / 97).max(1);
    for i in (0..evidence.len())
        .step_by(step)
        .chain([evidence.len() - 1])
    {
        let mut bad = evidence.clone();
        bad[i] ^= 0x01;
        let with = Against {
            evidence_json: &bad,
            ..against(&signer, &policy)
        };
        let v = verify(receipt, &with);
        assert!(!v.accepted(), "byte {i} of the evidence changed unnoticed");
        assert!(
            v.failures.iter().any(|f| f.starts_with("evidence_digest")),
            "{:?}",
            v.failures
        );
    }
}

#[test]
fn another_request_or_response_fails() {
    let (signer, m) = server("server A");
    let policy = pinning(&m);
    let receipt = &group(&signer, 2)[0];
    let other_request = request(
        SALT,
        RequestInput::Rows {
            shape: &[2, 3],
            values: &[1.0, 2.0, 3.0, 4.0, 5.0, 6.5],
        },
    );
    let v = verify(
        receipt,
        &Against {
            request: Some(other_request),
            ..against(&signer, &policy)
        },
    );
    assert_eq!(v.failures.len(), 1, "{:?}", v.failures);
    assert!(v.failures[0].starts_with("request:"));
    // The same request under another salt is another digest: the salt keys it.
    let resalted = request(
        b"another salt, 16+ bytes",
        RequestInput::Rows {
            shape: &[2, 3],
            values: &[1.0, 2.0, 3.0, 4.0, 5.0, 6.0],
        },
    );
    assert_ne!(resalted, request_digest());
    let other_response = response(2, 2, &[0.25, 0.75, 0.5, 0.5], &["yes", "yes"]);
    let v = verify(
        receipt,
        &Against {
            response: Some(other_response),
            ..against(&signer, &policy)
        },
    );
    assert_eq!(v.failures.len(), 1, "{:?}", v.failures);
    assert!(v.failures[0].starts_with("response:"));
}

#[test]
fn a_receipt_of_another_server_is_refused() {
    let (a, measurement_a) = server("server A");
    let (b, _) = server("server B");
    let policy_a = pinning(&measurement_a);
    let receipt_b = &group(&b, 1)[0];
    // B's receipt with B's evidence: B's measurement is not the one the policy pins.
    let v = verify(receipt_b, &against(&b, &policy_a));
    assert!(!v.accepted());
    assert!(
        v.failures.iter().any(|f| f.starts_with("evidence:")),
        "{:?}",
        v.failures
    );
    // B's receipt presented with A's evidence: the digest and the key binding both fail.
    let v = verify(receipt_b, &against(&a, &policy_a));
    let names: Vec<&str> = v.checks.iter().filter(|c| !c.ok).map(|c| c.name).collect();
    assert_eq!(
        names,
        ["evidence_digest", "key_binding"],
        "{:?}",
        v.failures
    );
    // A receipt signed by B's key, claiming A's evidence digest: the binding still fails.
    let statement = draft(&a, 0).statement(1, &"00".repeat(32), 0).to_cbor();
    let forged = b.sign_group(&[statement]);
    let v = verify(&forged[0], &against(&a, &policy_a));
    let names: Vec<&str> = v.checks.iter().filter(|c| !c.ok).map(|c| c.name).collect();
    assert_eq!(names, ["key_binding"], "{:?}", v.failures);
}

#[test]
fn the_evidence_must_meet_the_policy() {
    let (signer, m) = server("server A");
    let receipt = &group(&signer, 1)[0];
    // Simulated evidence under a policy that does not allow it.
    let strict = Policy::from_toml(&format!("measurements = [\"{m}\"]\n")).expect("policy");
    let v = verify(receipt, &against(&signer, &strict));
    assert!(
        v.failures.iter().any(|f| f.starts_with("evidence:")),
        "{:?}",
        v.failures
    );
}

#[test]
fn digests_of_the_canonical_forms() {
    // Rows and texts are different forms even with the same bytes.
    let texts = request(SALT, RequestInput::Texts(&[b"a".to_vec()]));
    let rows = request(
        SALT,
        RequestInput::Rows {
            shape: &[1, 1],
            values: &[f32::from_le_bytes([b'a', 0, 0, 0])],
        },
    );
    assert_ne!(texts, rows);
    // Length prefixes: ["ab", "c"] is not ["a", "bc"].
    assert_ne!(
        request(SALT, RequestInput::Texts(&[b"ab".to_vec(), b"c".to_vec()])),
        request(SALT, RequestInput::Texts(&[b"a".to_vec(), b"bc".to_vec()]))
    );
    // The files `confidant receipt verify` reads give the same digests.
    let file = digest::RequestFile {
        salt: hex::encode(SALT),
        inputs: Some(vec![vec![1.0, 2.0, 3.0], vec![4.0, 5.0, 6.0]]),
        texts: None,
    };
    assert_eq!(file.digest().expect("digest"), request_digest());
    let printed = serde_json::json!({
        "model": "demo",
        "outputs": [[0.25f32, 0.75f32], [0.5f32, 0.5f32]],
        "labels": ["yes", "no"],
    });
    assert_eq!(
        digest::response_from_json(&printed).expect("digest"),
        response_digest()
    );
    // f32 values that are not exact in decimal survive printing and parsing.
    let x = 0.1f32 + 1e-7;
    let printed = serde_json::to_string(&serde_json::json!({ "embeddings": [[x]] })).expect("json");
    let parsed: serde_json::Value = serde_json::from_str(&printed).expect("json");
    assert_eq!(
        digest::response_from_json(&parsed).expect("digest"),
        response(1, 1, &[x], &[] as &[&str])
    );
}

#[test]
fn salts_are_hex_of_16_to_64_bytes() {
    assert_eq!(parse_salt(&"ab".repeat(16)).unwrap(), [0xab; 16]);
    assert_eq!(parse_salt(&"Cd".repeat(64)).unwrap(), [0xcd; 64]);
    assert_eq!(
        parse_salt(&format!(" {} ", "01".repeat(20))).unwrap(),
        [1; 20]
    );
    let mut buf = [0u8; super::MAX_SALT];
    assert_eq!(
        super::parse_salt_into(&"0f".repeat(33), &mut buf).unwrap(),
        [0x0f; 33]
    );
    let says = |bad: &str| match parse_salt(bad) {
        Err(ReceiptError::Salt(m)) => m,
        other => panic!("{bad:?}: {other:?}"),
    };
    for (bad, why) in [
        ("", "got 0"),
        ("zz", "Invalid character 'z' at position 0"),
        (&"ab".repeat(15), "got 15"),
        (&"ab".repeat(65), "got 65"),
        ("abc", "Odd number of digits"),
        (
            &format!("{}zz", "ab".repeat(20)),
            "Invalid character 'z' at position 40",
        ),
        (
            &format!("{}zz", "ab".repeat(70)),
            "Invalid character 'z' at position 140",
        ),
    ] {
        let m = says(bad);
        assert!(
            m.starts_with(SALT_HEADER) && m.contains(why),
            "{bad:?}: {m}"
        );
    }
}

#[test]
fn the_explanation_digest_of_what_explain_prints() {
    let tokens = vec!["[CLS]".to_string(), "hi".to_string(), "[SEP]".to_string()];
    let items = [digest::Explained {
        target: 1,
        attributions: &[0.0, 0.25, 0.0],
        output_at_input: 0.75,
        output_at_baseline: 0.5,
        completeness_error: 1e-6,
        steps: 64,
        tokens: &tokens,
    }];
    let want = digest::explanation(&items, &[], "[PAD]");
    let printed = serde_json::json!({
        "model": "m",
        "texts": [{"tokens": tokens, "attributions": [0.0f32, 0.25f32, 0.0f32],
                   "special": [true, false, true], "truncated": false}],
        "targets": [1], "output_at_input": [0.75f32], "output_at_baseline": [0.5f32],
        "completeness_error": [1e-6f32], "baseline_token": "[PAD]", "steps": [64],
    });
    assert_eq!(digest::response_from_json(&printed).expect("digest"), want);
    // Rows: the baseline vector counts, and another token set is another explanation.
    let rows = [digest::Explained {
        tokens: &[],
        ..items[0]
    }];
    assert_ne!(digest::explanation(&rows, &[0.0; 3], ""), want);
    let mut wrong = printed.clone();
    wrong["steps"] = serde_json::json!([64, 64]);
    assert!(digest::response_from_json(&wrong).is_err());
}

#[test]
fn receipts_encode_as_coset_encodes_them() {
    // Each receipt's header is written by hand around the group's coset encoding: it must
    // be byte for byte what coset writes for the whole receipt (sizes that cross CBOR's
    // one-, two- and three-byte heads included).
    let key = ed25519_dalek::SigningKey::from_bytes(&[9; 32]);
    for n in [1, 2, 3, 5, 8, 13, 24, 300] {
        let statements: Vec<Vec<u8>> = (0..n)
            .map(|i| vec![i as u8; if i == 0 { 300 } else { 10 + i % 40 }])
            .collect();
        for (i, u) in crate::receipt::envelope::GroupFrame::new(&key)
            .expect("the key")
            .sign_group(statements)
            .into_iter()
            .enumerate()
        {
            let expected = u.encode_with_coset(&key);
            assert_eq!(u.encode(), expected, "group of {n}, receipt {i}");
        }
    }
}

#[test]
fn aws_lc_and_dalek_sign_the_same_bytes() {
    // Groups are signed by AWS-LC; `encode_with_coset` signs with ed25519-dalek. Ed25519 is
    // deterministic: the receipts must be the same bytes, and open (dalek's strict check).
    for k in 0..12 {
        let mut seed = [0u8; 32];
        getrandom::fill(&mut seed).unwrap();
        let key = ed25519_dalek::SigningKey::from_bytes(&seed);
        let frame = crate::receipt::envelope::GroupFrame::new(&key).expect("AWS-LC takes it");
        let statements: Vec<Vec<u8>> = (0..=k).map(|i| vec![i as u8; 40 + k]).collect();
        for (i, u) in frame.sign_group(statements).into_iter().enumerate() {
            let expected = u.encode_with_coset(&key);
            let receipt = u.encode();
            assert_eq!(receipt, expected, "key {k}, receipt {i}");
            let opened = crate::receipt::envelope::open(&receipt).expect("opens");
            assert_eq!(opened.public_key, key.verifying_key().to_bytes());
        }
    }
}

#[test]
fn statements_encode_as_ciborium_encodes_them() {
    let (signer, _) = server("server A");
    for (i, epsilon) in [0.0, 0.5, 1.0 / 3.0, 1e300, 65504.0]
        .into_iter()
        .enumerate()
    {
        let mut d = draft(&signer, i);
        d.epsilon = epsilon;
        let seq = u64::from(u32::MAX) + i as u64;
        let st = d.statement(seq, &"cd".repeat(32), 1_700_000_000_000);
        assert_eq!(st.v, STATEMENT_VERSION);
        assert_eq!(
            st.to_cbor(),
            st.to_cbor_with_ciborium(),
            "epsilon {epsilon}"
        );
        assert_eq!(
            d.statement_cbor(seq, &"cd".repeat(32), 1_700_000_000_000),
            st.to_cbor()
        );
        assert_eq!(Statement::from_cbor(&st.to_cbor()).unwrap(), st);
        // Version 1 (names as keys, the hash as hex text), as earlier servers wrote it.
        let v1 = Statement { v: 1, ..st.clone() };
        assert_eq!(
            v1.to_cbor(),
            v1.to_cbor_with_ciborium(),
            "epsilon {epsilon}"
        );
        assert_eq!(Statement::from_cbor(&v1.to_cbor()).unwrap(), v1);
        // Version 2 is the smaller: integer keys, the hash as its 32 bytes.
        assert!(st.to_cbor().len() + 100 < v1.to_cbor().len());
    }
}

#[test]
fn a_statement_that_breaks_its_layout_is_refused() {
    use ciborium::value::Value;
    let (signer, _) = server("server A");
    let st = draft(&signer, 1).statement(9, &"cd".repeat(32), 1_700_000_000_000);
    let value: Value = ciborium::from_reader(&st.to_cbor()[..]).unwrap();
    let Value::Map(entries) = value else {
        panic!("a map")
    };
    let encode = |entries: Vec<(Value, Value)>| {
        let mut out = Vec::new();
        ciborium::into_writer(&Value::Map(entries), &mut out).unwrap();
        out
    };
    let refused = |bytes: Vec<u8>, why: &str| {
        let e = Statement::from_cbor(&bytes).expect_err(why).to_string();
        assert!(e.contains(why), "{e} (expected {why:?})");
    };
    // A key missing, repeated, unknown; a digest of the wrong length; a wrong type.
    let mut missing = entries.clone();
    missing.remove(10);
    refused(encode(missing), "no key 11");
    let mut repeated = entries.clone();
    repeated.push(entries[0].clone());
    refused(encode(repeated), "repeated");
    let mut unknown = entries.clone();
    unknown.push((Value::Integer(14.into()), Value::Integer(0.into())));
    refused(encode(unknown), "unknown key");
    let mut short = entries.clone();
    short[10].1 = Value::Bytes(vec![0; 31]);
    refused(encode(short), "key 11 must be 32 bytes");
    let mut text = entries.clone();
    text[1].1 = Value::Bytes(b"predict".to_vec());
    refused(encode(text), "key 2 must be text");
    // The version must match the layout.
    let mut v1 = entries.clone();
    v1[0].1 = Value::Integer(1.into());
    refused(
        encode(v1),
        "version 1 written with version 2's integer keys",
    );
    let named = Statement { v: 2, ..st.clone() };
    let mut serde_bytes = Vec::new();
    ciborium::into_writer(&named, &mut serde_bytes).unwrap();
    refused(serde_bytes, "version 2 written with version 1's named keys");
    // Trailing bytes.
    let mut trailing = st.to_cbor();
    trailing.push(0);
    refused(trailing, "1 bytes after its end");
}

#[test]
fn a_prepared_statement_is_finished_into_the_same_bytes() {
    let (signer, _) = server("server A");
    let d = draft(&signer, 7);
    for seq in [
        0,
        1,
        23,
        24,
        255,
        256,
        65_536,
        u64::from(u32::MAX) + 1,
        u64::MAX,
    ] {
        for time_ms in [0, 1_700_000_000_000] {
            let hash = "ef".repeat(32);
            let (statement, signer) = draft(&signer, 7)
                .prepare()
                .finish(seq, &[0xef; 32], time_ms);
            assert!(Arc::ptr_eq(&signer, &d.signer));
            assert_eq!(
                statement,
                d.statement(seq, &hash, time_ms).to_cbor_with_ciborium(),
                "seq {seq}"
            );
        }
    }
}

/// A receipt as servers before statement version 2 wrote it: a version 1 statement, and the
/// group's root carried as the payload (here a group of two, so that the proof has a hash).
fn earlier_layout(signer: &Arc<ReceiptSigner>, root_of: impl Fn([u8; 32]) -> [u8; 32]) -> Vec<u8> {
    use coset::cbor::value::Value;
    use coset::{CoseSign1Builder, HeaderBuilder, TaggedCborSerializable as _, iana};
    let statement = Statement {
        v: 1,
        ..draft(signer, 0).statement(5, &"ab".repeat(32), 1_700_000_000_000)
    }
    .to_cbor();
    let sibling = [9u8; 32];
    let leaf: [u8; 32] = sha2::Sha256::new()
        .chain_update([0u8])
        .chain_update(&statement)
        .finalize()
        .into();
    let root: [u8; 32] = sha2::Sha256::new()
        .chain_update([1u8])
        .chain_update(leaf)
        .chain_update(sibling)
        .finalize()
        .into();
    let mut proof = Vec::new();
    ciborium::into_writer(
        &Value::Array(vec![
            Value::Integer(2.into()),
            Value::Integer(0.into()),
            Value::Array(vec![Value::Bytes(sibling.to_vec())]),
        ]),
        &mut proof,
    )
    .unwrap();
    CoseSign1Builder::new()
        .protected(
            HeaderBuilder::new()
                .algorithm(iana::Algorithm::Ed25519)
                .key_id(signer.public_key().to_vec())
                .value(envelope::LABEL_VDS, Value::Integer(1.into()))
                .build(),
        )
        .unprotected(
            HeaderBuilder::new()
                .value(
                    envelope::LABEL_VDP,
                    Value::Map(vec![(
                        Value::Integer(envelope::VDP_INCLUSION.into()),
                        Value::Array(vec![Value::Bytes(proof)]),
                    )]),
                )
                .value(envelope::LABEL_STATEMENT, Value::Bytes(statement))
                .build(),
        )
        .payload(root_of(root).to_vec())
        .create_signature(b"", |tbs| signer.sign_raw(tbs))
        .build()
        .to_tagged_vec()
        .unwrap()
}

#[test]
fn a_receipt_in_the_earlier_layout_still_verifies() {
    let (signer, m) = server("server A");
    let policy = pinning(&m);
    let v = verify(&earlier_layout(&signer, |r| r), &against(&signer, &policy));
    assert!(v.accepted(), "{:?}", v.failures);
    assert_eq!(v.statement.as_ref().unwrap()["v"], 1);
    assert_eq!(v.statement.as_ref().unwrap()["audit_hash"], "ab".repeat(32));
    // Signed over another root than the proof leads to: refused, though the signature is good.
    let v = verify(
        &earlier_layout(&signer, |mut r| {
            r[0] ^= 1;
            r
        }),
        &against(&signer, &policy),
    );
    assert!(!v.accepted());
    assert!(
        v.failures
            .iter()
            .any(|f| f.contains("does not lead to the root the receipt carries")),
        "{:?}",
        v.failures
    );
}

#[test]
fn the_root_is_detached() {
    let (signer, _) = server("server A");
    for receipt in group(&signer, 3) {
        let sign1 =
            <coset::CoseSign1 as coset::TaggedCborSerializable>::from_tagged_slice(&receipt)
                .unwrap();
        assert_eq!(sign1.payload, None);
    }
}

#[test]
fn receipts_signed_with_nonces_made_ahead_verify_and_no_byte_of_their_signature_can_change() {
    let (signer, m) = server("server A");
    let policy = pinning(&m);
    if !signer.make_nonces_ahead() {
        // No SCHED_IDLE here: every group is signed whole (the tests above).
        return;
    }
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while signer.nonces_ready() < 8 {
        assert!(std::time::Instant::now() < deadline, "no nonce was made");
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    let receipts = group(&signer, 3);
    for r in &receipts {
        let v = verify(r, &against(&signer, &policy));
        assert!(v.accepted(), "{:?}", v.failures);
    }
    // The signature is the last 64 bytes: every bit of it matters.
    let receipt = &receipts[0];
    for i in receipt.len() - 64..receipt.len() {
        let mut bad = receipt.clone();
        bad[i] ^= 0x10;
        assert!(
            !verify(&bad, &against(&signer, &policy)).accepted(),
            "byte {i}"
        );
    }
    // Signed again, the same group gets another signature (a new nonce: AWS-LC's whole
    // signature, taken only when the pool's lock is busy, would be the same every time) and
    // still verifies.
    let mut seen = std::collections::HashSet::new();
    for _ in 0..5 {
        let again = group(&signer, 3);
        assert!(verify(&again[0], &against(&signer, &policy)).accepted());
        seen.insert(again[0].clone());
    }
    assert!(
        seen.len() > 1,
        "no group was signed with a nonce made ahead"
    );
    let counts = signer.counts();
    assert!(counts.groups_nonce_ahead >= 1, "{counts:?}");
    assert_eq!(counts.groups_nonce_ahead + counts.groups_whole, 6);
    assert_eq!(counts.receipts, 18);
}
