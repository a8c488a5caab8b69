//! Writes the seed inputs of the targets whose genuine inputs are made rather than recorded
//! (receipts, a sealed model, an audit segment, a journal a crash left, JWE, tensors) into
//! `corpus_seed/`, with the keys of [`seed_keys`]: see fuzz/README.md for the commands.
use std::path::Path;
use std::sync::Arc;

use confidant::audit::{AuditConfig, AuditLog, Event, segment_path};
use confidant::receipt::{Draft, ReceiptSigner};

mod seed_keys;
use seed_keys::audit_keys;

fn put(root: &Path, target: &str, name: &str, bytes: &[u8]) {
    let dir = root.join(target);
    std::fs::create_dir_all(&dir).expect("corpus dir");
    std::fs::write(dir.join(name), bytes).expect("seed");
}

fn predict(i: u64) -> Event {
    Event::Predict {
        request_id: format!("r{i}"),
        principal: "alice".into(),
        model: "m@1".into(),
        purpose: Some("p".into()),
        subject: None,
        input_hmac: Some("00".into()),
        output_argmax: vec![1],
        flagged_rows: Vec::new(),
        rows: 1,
        latency_us: 10,
        decision: "allow".into(),
        reason: "ok".into(),
        epsilon: 0.0,
        rpc: None,
    }
}

/// The log's only segment, which the audit targets put back as segment 1.
fn segment_one(dir: &Path) -> Vec<u8> {
    let segments = confidant::audit::segments(dir).unwrap();
    assert_eq!(segments, [1], "the targets write the seed as segment 1");
    std::fs::read(segment_path(dir, 1)).unwrap()
}

/// `make_seeds --crash DIR`: queues events with a journal and aborts, as a crash would, so
/// that the journal holds what the log may lack.
fn crash(dir: &Path) -> ! {
    let config = AuditConfig {
        journal_bytes: 64 * 1024,
        checkpoint_every: 4,
        ..AuditConfig::default()
    };
    let log = AuditLog::open(dir, audit_keys(), config).unwrap();
    for i in 0..12u64 {
        log.append(predict(i));
    }
    std::process::abort();
}

fn main() {
    let mut args = std::env::args().skip(1);
    let first = args.next();
    if first.as_deref() == Some("--crash") {
        crash(Path::new(&args.next().expect("--crash DIR")));
    }
    let root = std::path::PathBuf::from(first.unwrap_or("corpus_seed".into()));

    // Receipts: groups of 1, 3 and 8.
    let key = seed_keys::receipt_key();
    let signer =
        Arc::new(ReceiptSigner::from_parts(key, b"{\"tee\":\"simulated\"}".to_vec()).unwrap());
    for n in [1usize, 3, 8] {
        let statements: Vec<Vec<u8>> = (0..n as u64)
            .map(|i| {
                Draft {
                    signer: Arc::clone(&signer),
                    rpc: "Predict",
                    request_id: format!("r{i}").into(),
                    request: [1; 32],
                    response: [2; 32],
                    model: "demo".into(),
                    version: "1.0.0".into(),
                    manifest: [3; 32],
                    epsilon: 0.5,
                }
                .statement_cbor(i + 1, &"ab".repeat(32), 1_700_000_000_000 + i)
            })
            .collect();
        for (i, r) in signer.sign_group(&statements).iter().enumerate() {
            put(&root, "receipt", &format!("group{n}-{i}"), r);
        }
    }

    // A sealed demo model.
    let config = confidant::demo::config().unwrap();
    // A fixed publisher key: the target checks that only the seed passes under it.
    let pem = ed25519_dalek::pkcs8::EncodePrivateKey::to_pkcs8_pem(
        &seed_keys::publisher_key(),
        Default::default(),
    )
    .unwrap();
    let pem_file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(pem_file.path(), pem.as_bytes()).unwrap();
    let publisher = confidant::sealed::PublisherSigningKey::from_pem_file(pem_file.path()).unwrap();
    let sealed = confidant::sealed::seal(
        &config,
        confidant::demo::WEIGHTS,
        &publisher,
        &confidant::sealed::SealOptions::default(),
    )
    .unwrap();
    put(&root, "sealed", "demo", &sealed.file);

    // An audit segment: events and checkpoints.
    let dir = tempfile::tempdir().unwrap();
    let config = AuditConfig {
        journal_bytes: 0,
        checkpoint_every: 4,
        ..AuditConfig::default()
    };
    let log = AuditLog::open(dir.path(), audit_keys(), config).unwrap();
    for i in 0..10u64 {
        log.append(predict(i));
    }
    log.close();
    drop(log);
    put(
        &root,
        "audit_segment",
        "ten-events",
        &segment_one(dir.path()),
    );

    // Tensors: FP32 [1, 30] (head 0x26: FP32, two dims) and BYTES [2] (head 0x1a: one dim).
    let mut fp32 = vec![0x26u8];
    fp32.extend(1i64.to_le_bytes());
    fp32.extend(30i64.to_le_bytes());
    for v in 0..30 {
        fp32.extend((v as f32).to_le_bytes());
    }
    put(&root, "oip_tensor", "fp32", &fp32);
    let mut texts = vec![0x1au8];
    texts.extend(2i64.to_le_bytes());
    for t in [&b"hello"[..], b"world!"] {
        texts.extend((t.len() as u32).to_le_bytes());
        texts.extend(t);
    }
    put(&root, "oip_tensor", "bytes", &texts);

    // A journal a crash left (the child aborts with events queued), and the segment beside it.
    let dir = tempfile::tempdir().unwrap();
    let status = std::process::Command::new(std::env::current_exe().unwrap())
        .arg("--crash")
        .arg(dir.path())
        .status()
        .unwrap();
    assert!(!status.success(), "the child was to abort");
    let journal = std::fs::read(dir.path().join(confidant::audit::JOURNAL_FILE)).unwrap();
    put(&root, "audit_journal", "after-abort", &journal);
    std::fs::write(root.join("audit_journal.segment"), segment_one(dir.path())).unwrap();

    // A KBS resource sealed to a TEE key, as the broker answers (mode 0: open it), and a
    // plaintext to seal and open (mode 1).
    let pair = confidant::keys::jwe::TeeKeyPair::generate().unwrap();
    let mut jwe = vec![0u8];
    jwe.extend(
        confidant::keys::jwe::encrypt(pair.public_key(), b"a 32-byte model data key ......")
            .unwrap(),
    );
    put(&root, "jwe", "resource", &jwe);
    put(&root, "jwe", "roundtrip", b"\x01secret");

    println!("seeds written under {}", root.display());
}
