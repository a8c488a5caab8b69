//! Confidential state, end to end over a real server (issue 17): after a demo-mode run with a
//! Predict, `keys create` and a consent change, nothing in the data directory shows a
//! predicted class, an input value, a subject id or an API key, and nothing in it is
//! readable by group or other; an audit record edited and re-chained is caught by
//! `audit verify --pubkey`, and so is the same edit with the checkpoints after it dropped.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use common::{Server, confidant, create_key, stderr, stdout};
use confidant::audit::{Event, Record};
use confidant::client::Client;

/// Every file and directory under `dir`.
fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        out.push(path.clone());
        if std::fs::symlink_metadata(&path).unwrap().is_dir() {
            walk(&path, out);
        }
    }
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

/// Rewrites segment 1 from `records`, recomputing every `prev`, `hash` and checkpoint
/// `head` (no key needed), leaving the signatures as they were.
fn rechain(segment: &Path, records: &[Record]) {
    let mut prev = "0".repeat(64);
    let mut out = Vec::new();
    for (i, r) in records.iter().enumerate() {
        let mut r = r.clone();
        r.seq = i as u64 + 1;
        r.prev = prev.clone();
        if let Event::Checkpoint { head, .. } = &mut r.event {
            head.clone_from(&prev);
        }
        r.hash = r.compute_hash();
        prev.clone_from(&r.hash);
        out.extend_from_slice(&confidant::canonical::to_vec(&r).unwrap());
        out.push(b'\n');
    }
    std::fs::write(segment, out).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nothing_persisted_is_readable_by_the_host_and_an_edited_record_is_caught() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let server = Server::start(&["--data-dir", data.to_str().unwrap()]);
    assert!(
        server
            .logs()
            .contains("state key from the demo's embedded broker"),
        "{}",
        server.logs()
    );
    // Both keys are created beside the running server, through the encrypted database.
    let admin = create_key(&data, "dpo-state", &["--scopes", "admin"]);
    let user = create_key(&data, "carol-state", &["--purposes", "demonstration"]);
    let subject = "patient-7781@hospital.example";
    let mut dpo = Client::connect(&server.addr, &server.ca())
        .await
        .unwrap()
        .with_api_key(&admin)
        .unwrap();
    dpo.set_consent(subject, "demonstration", true, "form-31337")
        .await
        .unwrap();
    let input = 13.371_337_f32;
    let mut row = confidant::demo::SAMPLE_ROW.to_vec();
    row[0] = input;
    let mut client = Client::connect(&server.addr, &server.ca())
        .await
        .unwrap()
        .with_api_key(&user)
        .unwrap()
        .with_purpose("demonstration")
        .unwrap()
        .with_subject(subject)
        .unwrap();
    let p = client.predict("demo", &[row]).await.unwrap();
    let label = p.labels[0].clone();
    let score = p.outputs[0][0];
    std::thread::sleep(std::time::Duration::from_millis(200));
    assert!(server.stop().success());

    // Nothing readable: no plaintext of any of these anywhere under the data directory.
    let mut paths = Vec::new();
    walk(&data, &mut paths);
    assert!(paths.len() > 10, "{paths:?}");
    let needles: Vec<(&str, Vec<u8>)> = vec![
        ("the user's API key", user.clone().into_bytes()),
        ("the admin's API key", admin.clone().into_bytes()),
        ("the subject id", subject.as_bytes().to_vec()),
        ("the input value as text", b"13.371337".to_vec()),
        ("the input value as f32", input.to_le_bytes().to_vec()),
        ("the output score as text", score.to_string().into_bytes()),
        ("the output score as f32", score.to_le_bytes().to_vec()),
        ("the predicted class field", b"output_argmax".to_vec()),
        ("the principal", b"carol-state".to_vec()),
        ("the consent source", b"form-31337".to_vec()),
    ];
    for path in &paths {
        let meta = std::fs::symlink_metadata(path).unwrap();
        let mode = meta.permissions().mode() & 0o777;
        assert_eq!(
            mode & 0o077,
            0,
            "{} is mode {mode:o}: readable by group or other",
            path.display()
        );
        if meta.is_dir() {
            continue;
        }
        let bytes = std::fs::read(path).unwrap();
        for (what, needle) in &needles {
            assert!(
                !contains(&bytes, needle),
                "{} holds {what} in clear",
                path.display()
            );
        }
        // The class names are the publisher's public model metadata, signed in the sealed
        // model's manifest; no per-row record of a predicted class exists anywhere else.
        if !path.ends_with("demo/demo.sealed") {
            assert!(
                !contains(&bytes, label.as_bytes()),
                "{} holds the predicted label {label}",
                path.display()
            );
        }
    }
    for gone in ["audit.key", "subjects.key", "state.key"] {
        assert!(!data.join(gone).exists(), "{gone} is a file");
    }
    let db = std::fs::read(data.join("confidant.db")).unwrap();
    assert!(
        !db.starts_with(b"SQLite format 3"),
        "the database is plain SQLite"
    );

    // With the state key (the demo's embedded broker), the auditor reads every event.
    let exported = common::audit_export(&data);
    let records: Vec<Record> = exported
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let predict = records
        .iter()
        .find(|r| {
            matches!(&r.event, Event::Predict { principal, decision, .. }
                if principal == "carol-state" && decision == "allow")
        })
        .expect("the Predict record");
    let Event::Predict {
        output_argmax,
        subject: pseudonym,
        ..
    } = &predict.event
    else {
        unreachable!()
    };
    assert_eq!(output_argmax.len(), 1);
    assert!(pseudonym.as_deref().is_some_and(|s| s.len() == 64));
    assert!(exported.contains("consent.grant"), "{exported}");

    // The checkpoint key is the deployment's: derived from the state key, so an auditor
    // pins one key.
    let pubkey = hex::encode(
        confidant::audit::AuditKeys::from_state(&common::state_key(&data))
            .signing
            .verifying_key()
            .as_bytes(),
    );
    let audit = data.join("audit");
    let verify = |extra: &[&str]| {
        let mut args = vec!["audit", "verify", audit.to_str().unwrap()];
        args.extend_from_slice(extra);
        confidant(&args)
    };
    let out = verify(&["--pubkey", &pubkey]);
    assert!(out.status.success(), "{}{}", stdout(&out), stderr(&out));
    let report: serde_json::Value = serde_json::from_str(&stdout(&out)).unwrap();
    assert_eq!(report["signatures"], "pinned");
    assert_eq!(report["uncovered"], 0);
    let out = verify(&[]);
    let report: serde_json::Value = serde_json::from_str(&stdout(&out)).unwrap();
    assert_eq!(
        report["signatures"],
        "checked against the key the log names, not pinned"
    );
    assert_eq!(report["signing_key"], pubkey.as_str());

    // The host edits the Predict record (swaps in another record's ciphertext) and
    // recomputes the whole chain: the next checkpoint's signature gives it away.
    let segment = audit.join("segment-000001.jsonl");
    let original: Vec<Record> = std::fs::read_to_string(&segment)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let at = (predict.seq - 1) as usize;
    let donor = original
        .iter()
        .find(|r| r.seq != predict.seq && matches!(r.event, Event::Sealed { .. }))
        .unwrap()
        .event
        .clone();
    let mut edited = original.clone();
    edited[at].event = donor;
    rechain(&segment, &edited);
    let out = verify(&["--pubkey", &pubkey]);
    assert!(!out.status.success(), "{}", stdout(&out));
    assert!(
        stderr(&out).contains("signature does not verify"),
        "{}",
        stderr(&out)
    );
    // ... and with every checkpoint after the edit dropped, the uncovered tail does.
    let cut: Vec<Record> = edited
        .iter()
        .enumerate()
        .filter(|(i, r)| *i < at || !matches!(r.event, Event::Checkpoint { .. }))
        .map(|(_, r)| r.clone())
        .collect();
    rechain(&segment, &cut);
    let out = verify(&["--pubkey", &pubkey]);
    assert!(!out.status.success(), "{}", stdout(&out));
    assert!(
        stderr(&out).contains("not covered by a signed checkpoint"),
        "{}",
        stderr(&out)
    );
    // The restored log verifies again.
    rechain(&segment, &original);
    assert!(verify(&["--pubkey", &pubkey]).status.success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_created_before_the_first_demo_start_is_kept_under_the_demo_state_key() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    // No server has run: `keys create` starts the data directory with a development key
    // file, which the demo's embedded broker adopts at the first start.
    let key = create_key(&data, "early", &["--purposes", "demonstration"]);
    assert!(data.join(confidant::state::DEV_KEY_FILE).is_file());
    let server = Server::start(&["--data-dir", data.to_str().unwrap()]);
    assert!(
        !data.join(confidant::state::DEV_KEY_FILE).exists(),
        "the embedded broker holds the state key now"
    );
    let mut client = Client::connect(&server.addr, &server.ca())
        .await
        .unwrap()
        .with_api_key(&key)
        .unwrap()
        .with_purpose("demonstration")
        .unwrap();
    client
        .predict("demo", &[confidant::demo::SAMPLE_ROW.to_vec()])
        .await
        .unwrap();
    // `keys list` beside the server finds the same key through the embedded broker.
    let out = confidant(&["keys", "list", "--data-dir", data.to_str().unwrap()]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stdout(&out).contains("early"), "{}", stdout(&out));
    assert!(server.stop().success());
}
