//! Audit retention end to end: a real server deletes expired segments, and the retained
//! chain still verifies.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

mod common;

use common::{Server, confidant, stderr, stdout};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expired_segments_are_deleted_and_the_rest_verifies() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let toml = dir.path().join("serve.toml");
    // Two seconds of retention (in days), ten records per segment.
    std::fs::write(
        &toml,
        "[audit]\nretention_days = 0.0000231\nsegment_records = 10\n",
    )
    .unwrap();
    let server = Server::start(&[
        "--data-dir",
        data.to_str().unwrap(),
        "--config",
        toml.to_str().unwrap(),
    ]);
    let mut client = server.client().await;
    let row = vec![confidant::demo::SAMPLE_ROW.to_vec()];
    for _ in 0..35 {
        client.predict("demo", &row).await.unwrap();
    }
    std::thread::sleep(std::time::Duration::from_millis(3500));
    // New records: the writer's next pass applies retention.
    for _ in 0..5 {
        client.predict("demo", &row).await.unwrap();
        std::thread::sleep(std::time::Duration::from_millis(300));
    }
    assert!(server.stop().success());
    let audit = data.join("audit");
    assert!(
        !audit.join("segment-000001.jsonl").exists(),
        "the first, expired segment was deleted"
    );
    // The log's segments (the journal beside them is a binary ring).
    let all: String = std::fs::read_dir(&audit)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "jsonl"))
        .map(|p| std::fs::read_to_string(p).unwrap())
        .collect();
    assert!(
        all.contains("\"kind\":\"retention\""),
        "a signed retention record"
    );
    let out = confidant(&["audit", "verify", audit.to_str().unwrap()]);
    assert!(out.status.success(), "{}{}", stdout(&out), stderr(&out));
    let bad = [
        "--data-dir",
        data.to_str().unwrap(),
        "--config",
        toml.to_str().unwrap(),
    ];
    std::fs::write(&toml, "[audit]\nretention_days = -1\n").unwrap();
    let err = Server::try_start(&bad).err().expect("refused");
    assert!(err.contains("retention_days"), "{err}");
    for bad_group in ["0", "1001"] {
        std::fs::write(&toml, format!("[audit]\ngroup_commit_ms = {bad_group}\n")).unwrap();
        let err = Server::try_start(&bad).err().expect("refused");
        assert!(
            err.contains("audit.group_commit_ms must be 1 to 1000"),
            "{err}"
        );
    }
}
