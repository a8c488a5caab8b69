//! Consent and the right to be forgotten, end to end over gRPC: consent per purpose gates
//! requests that name a data subject; erasure crypto-shreds the subject's pseudonym key,
//! returns a signed receipt, and leaves the audit chain verifiable.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

mod common;

use common::code;

use common::{Server, confidant, create_key, stderr, stdout};
use confidant::client::Client;
use ed25519_dalek::{Signature, Verifier, VerifyingKey};
use tonic::Code;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consent_gates_subject_requests_and_forgetting_shreds_the_link() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let server = Server::start(&["--data-dir", data.to_str().unwrap()]);
    let admin = create_key(&data, "dpo", &["--scopes", "admin"]);
    let row = vec![confidant::demo::SAMPLE_ROW.to_vec()];
    let subject = "patient-0042@hospital.example";
    let base = server.client().await;
    let mut as_subject = base
        .clone()
        .with_purpose("demonstration")
        .unwrap()
        .with_subject(subject)
        .unwrap();

    // No consent yet: FAILED_PRECONDITION, and no purpose at all is refused too.
    let e = as_subject.predict("demo", &row).await.unwrap_err();
    assert_eq!(code(&e), Code::FailedPrecondition, "{e}");
    assert!(
        e.to_string()
            .contains("no consent for purpose demonstration"),
        "{e}"
    );
    let e = base
        .clone()
        .with_subject(subject)
        .unwrap()
        .predict("demo", &row)
        .await
        .unwrap_err();
    assert_eq!(code(&e), Code::FailedPrecondition, "{e}");
    assert!(e.to_string().contains("must declare its purpose"), "{e}");

    // Consent changes need the admin scope.
    let e = base
        .clone()
        .set_consent(subject, "demonstration", true, "form-9")
        .await
        .unwrap_err();
    assert_eq!(code(&e), Code::PermissionDenied, "{e}");
    let mut dpo = Client::connect(&server.addr, &server.ca())
        .await
        .unwrap()
        .with_api_key(&admin)
        .unwrap();
    let granted = dpo
        .set_consent(subject, "demonstration", true, "form-9")
        .await
        .unwrap();
    assert!(granted.granted);
    let pseudonym = granted.subject_pseudonym.clone();
    assert_eq!(pseudonym.len(), 64);
    as_subject.predict("demo", &row).await.unwrap();

    // Withdrawn, then granted again through the CLI.
    dpo.set_consent(subject, "demonstration", false, "phone")
        .await
        .unwrap();
    let e = as_subject.predict("demo", &row).await.unwrap_err();
    assert_eq!(code(&e), Code::FailedPrecondition, "{e}");
    let conn = [
        "--addr",
        server.addr.as_str(),
        "--tls-ca",
        server.cert.to_str().unwrap(),
        "--api-key",
        admin.as_str(),
    ];
    let mut args = vec![
        "privacy",
        "consent",
        "--subject",
        subject,
        "--purpose",
        "demonstration",
        "--grant",
    ];
    args.extend_from_slice(&conn);
    let out = confidant(&args);
    assert!(out.status.success(), "{}", stderr(&out));
    let v: serde_json::Value = serde_json::from_str(&stdout(&out)).unwrap();
    assert_eq!(
        v["subject_pseudonym"],
        pseudonym.as_str(),
        "one key per subject"
    );
    as_subject.predict("demo", &row).await.unwrap();

    // Forget: a signed receipt, idempotent.
    let mut args = vec!["privacy", "forget", subject];
    args.extend_from_slice(&conn);
    let out = confidant(&args);
    assert!(out.status.success(), "{}", stderr(&out));
    let receipt: serde_json::Value = serde_json::from_str(&stdout(&out)).unwrap();
    assert_eq!(receipt["existed"], true);
    assert_eq!(receipt["subject_pseudonym"], pseudonym.as_str());
    let key = VerifyingKey::from_bytes(
        &hex::decode(receipt["public_key"].as_str().unwrap())
            .unwrap()
            .try_into()
            .unwrap(),
    )
    .unwrap();
    let sig = Signature::from_slice(&hex::decode(receipt["signature"].as_str().unwrap()).unwrap())
        .unwrap();
    let mut msg = b"confidant.erasure.v1\0".to_vec();
    msg.extend_from_slice(receipt["statement"].as_str().unwrap().as_bytes());
    key.verify(&msg, &sig)
        .expect("the erasure receipt verifies");
    let again = dpo.forget(subject).await.unwrap();
    assert!(!again.existed, "forgetting twice is harmless");

    // The subject's next request fails for lack of consent.
    let e = as_subject.predict("demo", &row).await.unwrap_err();
    assert_eq!(code(&e), Code::FailedPrecondition, "{e}");

    // The audit chain still verifies; it carries the (now unlinkable) pseudonym, never the id.
    std::thread::sleep(std::time::Duration::from_millis(100));
    assert!(server.stop().success());
    let on_disk = std::fs::read_to_string(data.join("audit/segment-000001.jsonl")).unwrap();
    let log = common::audit_export(&data);
    for text in [&on_disk, &log] {
        assert!(
            !text.contains("patient-0042"),
            "the subject id reached the audit log"
        );
    }
    assert!(
        !on_disk.contains(&format!("\"subject\":\"{pseudonym}\"")),
        "the pseudonym is encrypted on disk"
    );
    let with_subject = log
        .lines()
        .filter(|l| l.contains(&format!("\"subject\":\"{pseudonym}\"")))
        .count();
    assert_eq!(
        with_subject, 2,
        "two allowed predictions carried the pseudonym"
    );
    for action in ["consent.grant", "consent.withdraw", "subject.forget"] {
        assert!(log.contains(action), "{action} is an audit event");
    }
    let out = confidant(&["audit", "verify", data.join("audit").to_str().unwrap()]);
    assert!(out.status.success(), "{}{}", stdout(&out), stderr(&out));
    // The pseudonym key is gone from the database: nothing can recompute the link.
    let db = std::sync::Arc::new(common::open_db(&data));
    let subjects = confidant::privacy::subjects::Subjects::new(
        db,
        common::state_key(&data).subkey(confidant::state::Subkey::Pseudonyms),
    );
    assert_eq!(subjects.pseudonym(subject).unwrap(), None);
}
