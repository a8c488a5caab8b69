use super::*;

pub(super) fn key() -> SigningKey {
    SigningKey::from_bytes(&[7u8; 32])
}

pub(super) fn predict(i: u64) -> Event {
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

/// The test keys: signing key `[7; 32]`, input HMAC key `hmac`, records key `[3; 32]`.
pub(super) fn keys_with(hmac: u8) -> AuditKeys {
    AuditKeys {
        signing: key(),
        input_hmac: Zeroizing::new([hmac; 32]),
        records: Zeroizing::new([3u8; 32]),
    }
}

/// A log under the test keys, with audit input key `[1; 32]`.
pub(super) fn open_log(dir: &Path, config: AuditConfig) -> AuditLog {
    AuditLog::open(dir, keys_with(1), config).unwrap()
}

/// Every record of the log with its event decrypted (under the records key `[3; 32]`).
pub(super) fn plain_records(dir: &Path) -> Vec<Record> {
    let mut out = Vec::new();
    let mut opener = seal::Opener::new(Zeroizing::new([3u8; 32]));
    export_dir(dir, &[], &mut opener, &mut out).unwrap();
    String::from_utf8(out)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// Rewrites segment 1 as `lines`, recomputing every record's `prev` and `hash` (what anyone
/// can do without a key), and leaving checkpoint signatures as they are.
fn rechain(dir: &Path, lines: &[String]) {
    let mut prev = "0".repeat(64);
    let mut out = String::new();
    for (i, l) in lines.iter().enumerate() {
        let mut r: Record = serde_json::from_str(l).unwrap();
        r.seq = i as u64 + 1;
        r.prev = prev.clone();
        if let Event::Checkpoint { head, .. } = &mut r.event {
            *head = prev.clone();
        }
        r.hash = r.compute_hash();
        prev = r.hash.clone();
        out.push_str(&String::from_utf8(crate::canonical::to_vec(&r).unwrap()).unwrap());
        out.push('\n');
    }
    std::fs::write(segment_path(dir, 1), out).unwrap();
}

fn write_log(dir: &Path, n: u64) {
    let log = open_log(
        dir,
        AuditConfig {
            checkpoint_every: 4,
            checkpoint_interval: Duration::from_secs(3600),
            group_linger: Duration::ZERO,
            ..AuditConfig::default()
        },
    );
    for i in 0..n {
        log.append(predict(i));
    }
    log.close();
}

fn lines(dir: &Path) -> Vec<String> {
    std::fs::read_to_string(segment_path(dir, 1))
        .unwrap()
        .lines()
        .map(str::to_string)
        .collect()
}

#[test]
fn a_written_log_verifies_with_checkpoints_and_reopens() {
    let d = tempfile::tempdir().unwrap();
    write_log(d.path(), 10);
    let r = verify_dir(d.path(), &[*key().verifying_key().as_bytes()]);
    assert!(r.is_ok(), "{r:?}");
    // 10 records, a checkpoint after every 4, and a final one at close.
    assert_eq!(r.checkpoints, 3);
    assert_eq!(r.records, 13);
    // Reopening continues the chain.
    write_log(d.path(), 2);
    let r = verify_dir(d.path(), &[]);
    assert!(r.is_ok(), "{r:?}");
    assert_eq!(r.records, 16);
    // An untrusted signer is reported.
    let other = SigningKey::from_bytes(&[9u8; 32]);
    let r = verify_dir(d.path(), &[*other.verifying_key().as_bytes()]);
    assert!(r.first_failure.unwrap().problem.contains("untrusted key"));
}

#[test]
fn any_one_line_edit_delete_or_swap_fails_at_that_line() {
    let d = tempfile::tempdir().unwrap();
    write_log(d.path(), 8);
    let original = lines(d.path());
    let n = original.len();
    for target in 0..n {
        // Edit: change one character of the record body.
        let mut edited = original.clone();
        edited[target] = edited[target]
            .replacen("\"rows\":1", "\"rows\":2", 1)
            .replacen("\"head\":\"", "\"head\":\"f", 1);
        if edited[target] == original[target] {
            edited[target] = edited[target].replacen("\"ts_ms\":", "\"ts_ms\":1", 1);
        }
        std::fs::write(segment_path(d.path(), 1), edited.join("\n") + "\n").unwrap();
        let f = verify_dir(d.path(), &[])
            .first_failure
            .expect("edit not detected");
        assert_eq!(
            f.line,
            target as u64 + 1,
            "edit of line {}: {f:?}",
            target + 1
        );

        // Delete (all but the last line: deleting the last leaves a shorter valid chain,
        // which the signed checkpoints and the server's head bound).
        if target + 1 < n {
            let mut deleted = original.clone();
            deleted.remove(target);
            std::fs::write(segment_path(d.path(), 1), deleted.join("\n") + "\n").unwrap();
            let f = verify_dir(d.path(), &[])
                .first_failure
                .expect("delete not detected");
            assert_eq!(
                f.line,
                target as u64 + 1,
                "delete of line {}: {f:?}",
                target + 1
            );

            let mut swapped = original.clone();
            swapped.swap(target, target + 1);
            std::fs::write(segment_path(d.path(), 1), swapped.join("\n") + "\n").unwrap();
            let f = verify_dir(d.path(), &[])
                .first_failure
                .expect("swap not detected");
            assert_eq!(
                f.line,
                target as u64 + 1,
                "swap at line {}: {f:?}",
                target + 1
            );
        }
    }
}

#[test]
fn a_torn_final_line_is_cut_and_nothing_committed_is_lost() {
    let d = tempfile::tempdir().unwrap();
    write_log(d.path(), 5);
    let before = lines(d.path());
    let mut bytes = std::fs::read(segment_path(d.path(), 1)).unwrap();
    bytes.extend_from_slice(b"{\"seq\":99,\"ts_ms\":");
    std::fs::write(segment_path(d.path(), 1), bytes).unwrap();
    write_log(d.path(), 1);
    let after = lines(d.path());
    assert_eq!(&after[..before.len()], &before[..]);
    assert!(verify_dir(d.path(), &[]).is_ok());
}

#[test]
fn opening_a_damaged_log_is_refused() {
    let d = tempfile::tempdir().unwrap();
    write_log(d.path(), 3);
    let mut l = lines(d.path());
    l[1] = l[1].replacen("\"ts_ms\":", "\"ts_ms\":1", 1);
    std::fs::write(segment_path(d.path(), 1), l.join("\n") + "\n").unwrap();
    let err = AuditLog::open(d.path(), keys_with(1), AuditConfig::default())
        .err()
        .unwrap();
    assert!(err.to_string().contains("line 2"), "{err}");
}

#[test]
fn input_hmac_is_deterministic_and_keyed() {
    let d = tempfile::tempdir().unwrap();
    let a = open_log(d.path(), AuditConfig::default());
    let h1 = a.input_hmac(&[1.0, 2.0]);
    assert_eq!(h1, a.input_hmac(&[1.0, 2.0]));
    assert_ne!(h1, a.input_hmac(&[1.0, 2.5]));
    a.close();
    let d2 = tempfile::tempdir().unwrap();
    let b = AuditLog::open(d2.path(), keys_with(2), AuditConfig::default()).unwrap();
    assert_ne!(h1, b.input_hmac(&[1.0, 2.0]));
}

fn retained_log(dir: &Path) {
    let log = open_log(
        dir,
        AuditConfig {
            checkpoint_every: 1000,
            checkpoint_interval: Duration::from_secs(3600),
            group_linger: Duration::ZERO,
            segment_records: 5,
            retention: Some(Duration::from_millis(200)),
            max_bytes: None,
            journal_bytes: DEFAULT_JOURNAL_BYTES,
            receipt_linger: RECEIPT_LINGER,
        },
    );
    for i in 0..12 {
        log.append_durable(predict(i)).unwrap();
    }
    std::thread::sleep(Duration::from_millis(1100));
    // The next group triggers the retention pass; then the log rolls on to a new segment.
    log.append_durable(predict(99)).unwrap();
    std::thread::sleep(Duration::from_millis(200));
    for i in 0..6 {
        log.append_durable(predict(200 + i)).unwrap();
    }
    log.close();
}

#[test]
fn retention_deletes_expired_segments_and_the_rest_still_verifies() {
    let dir = tempfile::tempdir().unwrap();
    retained_log(dir.path());
    let segs = segments(dir.path()).unwrap();
    assert!(
        segs.first().copied().unwrap_or(0) > 1,
        "old segments were deleted: {segs:?}"
    );
    let report = verify_dir(dir.path(), &[*key().verifying_key().as_bytes()]);
    assert!(report.is_ok(), "{report:?}");
    let text: String = segs
        .iter()
        .map(|n| std::fs::read_to_string(segment_path(dir.path(), *n)).unwrap())
        .collect();
    assert!(text.contains("\"kind\":\"retention\""), "{text}");
    // The log reopens and keeps appending on the retained chain.
    let log = open_log(dir.path(), AuditConfig::default());
    log.append(predict(100));
    log.close();
    assert!(verify_dir(dir.path(), &[]).is_ok());
}

#[test]
fn deleting_segments_without_a_retention_record_is_caught() {
    let dir = tempfile::tempdir().unwrap();
    let log = open_log(
        dir.path(),
        AuditConfig {
            segment_records: 5,
            group_linger: Duration::ZERO,
            ..AuditConfig::default()
        },
    );
    for i in 0..12 {
        log.append(predict(i));
    }
    log.close();
    std::fs::remove_file(segment_path(dir.path(), 1)).unwrap();
    let report = verify_dir(dir.path(), &[]);
    let failure = report.first_failure.expect("must fail");
    assert!(
        failure.problem.contains("no signed retention record"),
        "{failure:?}"
    );
}

#[test]
fn deleting_a_kept_segment_after_retention_is_caught() {
    let dir = tempfile::tempdir().unwrap();
    retained_log(dir.path());
    let segs = segments(dir.path()).unwrap();
    assert!(segs.len() >= 2, "{segs:?}");
    // Removing the first kept segment moves the start past what the retention record vouches.
    std::fs::remove_file(segment_path(dir.path(), segs[0])).unwrap();
    assert!(!verify_dir(dir.path(), &[]).is_ok());
}

#[test]
fn lines_are_written_in_canonical_form() {
    let dir = tempfile::tempdir().unwrap();
    write_log(dir.path(), 6);
    for line in lines(dir.path()) {
        let r: Record = serde_json::from_str(&line).unwrap();
        let canonical = String::from_utf8(crate::canonical::to_vec(&r).unwrap()).unwrap();
        assert_eq!(line, canonical, "one serialization serves hash and line");
    }
}

#[test]
fn input_hmac_is_standard_hmac_sha256_over_little_endian_f32() {
    let dir = tempfile::tempdir().unwrap();
    let log = open_log(dir.path(), AuditConfig::default());
    // Python: hmac.new(bytes([1]*32), struct.pack('<ff', 0.5, 1.0), hashlib.sha256).hexdigest()
    assert_eq!(
        log.input_hmac(&[0.5, 1.0]),
        "8c80062960490542d28e5035c8f035179f6ae8053a4e0398bbb35e23b53b9c16"
    );
    log.close();
}

#[test]
fn the_prepared_path_writes_exactly_the_canonical_body_for_every_event() {
    let base = predict(7);
    let mut shapes = vec![base.clone()];
    let Event::Predict {
        request_id,
        principal,
        model,
        latency_us,
        rows,
        ..
    } = base.clone()
    else {
        unreachable!()
    };
    for (purpose, subject, input_hmac, flagged, argmax, epsilon, rpc, reason) in [
        (None, None, None, vec![], vec![], 0.0, None, "OK"),
        (
            Some("p\"q\\\n\u{1}é"),
            Some("s"),
            Some("ab"),
            vec![0, 3],
            vec![1, 0, 4_000_000_000],
            0.125,
            Some("explain"),
            "INVALID_ARGUMENT",
        ),
        (Some(""), None, None, vec![], vec![2], f64::NAN, None, "x"),
        (None, Some("t"), None, vec![9], vec![], 1e-300, None, "y"),
        (None, None, None, vec![], vec![], f64::INFINITY, None, "z"),
        (None, None, None, vec![], vec![], 123_456.789, None, "z"),
    ] {
        shapes.push(Event::Predict {
            request_id: request_id.clone(),
            principal: principal.clone(),
            model: model.clone(),
            purpose: purpose.map(str::to_string),
            subject: subject.map(str::to_string),
            input_hmac: input_hmac.map(str::to_string),
            output_argmax: argmax,
            flagged_rows: flagged,
            rows,
            latency_us,
            decision: "refuse".into(),
            reason: reason.into(),
            epsilon,
            rpc: rpc.map(Into::into),
        });
    }
    // Every other kind of event takes the same prepared path (see `event_json`).
    shapes.extend([
        Event::Admin {
            actor: "admin \"root\"".into(),
            action: "keys.create".into(),
            detail: "key_id=k1 principal=é\n".into(),
        },
        Event::Checkpoint {
            head: "cd".repeat(32),
            public_key: "ef".repeat(32),
            signature: "01".repeat(64),
        },
        Event::Retention {
            removed_through_segment: 3,
            first_kept_seq: 1_000_001,
            first_kept_prev: "23".repeat(32),
            public_key: "ef".repeat(32),
            signature: "45".repeat(64),
        },
    ]);
    for event in shapes {
        let mut record = Record {
            seq: 42,
            ts_ms: 1_790_000_000_123,
            event: event.clone(),
            prev: "ab".repeat(32),
            hash: String::new(),
        };
        let json = event_json(&event).unwrap();
        let (mut got, mut tail) = (b"earlier lines\n".to_vec(), Vec::new());
        let (hash, raw) = write_record(
            &mut got,
            &mut tail,
            42,
            1_790_000_000_123,
            &record.prev,
            &json,
        );
        let hash = String::from_utf8(hash.to_vec()).unwrap();
        assert_eq!(hash, record.compute_hash());
        assert_eq!(hex::encode(raw), hash);
        record.hash = hash;
        let want = crate::canonical::to_vec(&record).unwrap();
        assert_eq!(
            String::from_utf8(got).unwrap(),
            format!("earlier lines\n{}", String::from_utf8(want).unwrap())
        );
    }
    let admin = Event::Admin {
        actor: "a".into(),
        action: "b".into(),
        detail: "c".into(),
    };
    assert!(PredictEvent::of(&admin).is_none());
}

#[test]
fn strings_are_written_as_serde_json_writes_them() {
    for s in [
        "",
        "plain-id_0123",
        "é ü 漢字",
        "q\"uote",
        "back\\slash",
        "tab\t",
        "nl\n",
        "\u{1f}",
        "\u{7f}del",
        " ~",
    ] {
        let mut got = Vec::new();
        json_str(&mut got, s);
        assert_eq!(got, serde_json::to_vec(s).unwrap(), "{s:?}");
    }
}

#[test]
fn a_prepared_predict_event_writes_the_same_record_as_the_owned_event() {
    let d = tempfile::tempdir().unwrap();
    let log = open_log(
        d.path(),
        AuditConfig {
            group_linger: Duration::ZERO,
            ..AuditConfig::default()
        },
    );
    let hmac = log.input_hmac_hex(&[1.0, -2.5, f32::MIN_POSITIVE]);
    assert_eq!(
        std::str::from_utf8(&hmac).unwrap(),
        log.input_hmac(&[1.0, -2.5, f32::MIN_POSITIVE])
    );
    let event = PredictEvent {
        request_id: "0e5b8d9c-2f1a-4c3b-9d7e-6a5f4e3d2c1b",
        principal: "al\"ice",
        model: "m@1",
        purpose: Some("p"),
        subject: None,
        input_hmac: std::str::from_utf8(&hmac).ok(),
        output_argmax: &[1, 0],
        flagged_rows: &[1],
        rows: 2,
        latency_us: 10,
        decision: "allow",
        reason: "OK",
        epsilon: 0.25,
        rpc: Some("explain"),
    };
    log.append_predict(&event);
    log.append(event.to_event());
    log.close();
    // The two records, then the closing checkpoint.
    let records = plain_records(d.path());
    let predicts: Vec<&Record> = records
        .iter()
        .filter(|r| matches!(r.event, Event::Predict { .. }))
        .collect();
    assert_eq!(predicts.len(), 2);
    assert_eq!(predicts[0].event, event.to_event());
    assert_eq!(predicts[0].event, predicts[1].event);
    // Both lines are canonical and chained.
    let r = verify_dir(d.path(), &[*key().verifying_key().as_bytes()]);
    assert!(r.is_ok(), "{r:?}");
}

#[test]
fn concurrent_appends_keep_each_threads_order_and_durable_appends_wait_for_disk() {
    let d = tempfile::tempdir().unwrap();
    let log = Arc::new(open_log(
        d.path(),
        AuditConfig {
            checkpoint_every: 100,
            checkpoint_interval: Duration::from_secs(3600),
            group_linger: Duration::from_millis(2),
            ..AuditConfig::default()
        },
    ));
    let threads: Vec<_> = (0..4u64)
        .map(|t| {
            let log = Arc::clone(&log);
            let dir = d.path().to_path_buf();
            std::thread::spawn(move || {
                for i in 0..300u64 {
                    let id = t * 1000 + i;
                    if i % 100 == 99 {
                        log.append_durable(predict(id)).unwrap();
                        // On disk when append_durable returns.
                        let on_disk = plain_records(&dir);
                        assert!(on_disk.iter().any(|r| matches!(
                            &r.event,
                            Event::Predict { request_id, .. } if *request_id == format!("r{id}")
                        )));
                    } else if i % 2 == 0 {
                        log.append(predict(id));
                    } else {
                        let Event::Predict {
                            request_id,
                            principal,
                            model,
                            ..
                        } = predict(id)
                        else {
                            unreachable!()
                        };
                        log.append_predict(&PredictEvent {
                            request_id: &request_id,
                            principal: &principal,
                            model: &model,
                            purpose: Some("p"),
                            subject: None,
                            input_hmac: Some("00"),
                            output_argmax: &[1],
                            flagged_rows: &[],
                            rows: 1,
                            latency_us: 10,
                            decision: "allow",
                            reason: "ok",
                            epsilon: 0.0,
                            rpc: None,
                        });
                    }
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    log.close();
    // Closed: later appends are refused, not lost silently.
    assert!(matches!(
        log.append_durable(predict(9)),
        Err(AuditError::Stopped)
    ));
    let r = verify_dir(d.path(), &[*key().verifying_key().as_bytes()]);
    assert!(r.is_ok(), "{r:?}");
    let mut next = [0u64; 4];
    let mut predicts = 0;
    for rec in plain_records(d.path()) {
        if let Event::Predict { request_id, .. } = rec.event {
            let id: u64 = request_id[1..].parse().unwrap();
            let (t, i) = ((id / 1000) as usize, id % 1000);
            assert_eq!(i, next[t], "thread {t}'s events out of order");
            next[t] += 1;
            predicts += 1;
        }
    }
    assert_eq!(predicts, 1200);
    assert_eq!(next, [300; 4]);
}

#[test]
fn events_are_sealed_on_disk_and_export_opens_them_with_the_key_only() {
    let d = tempfile::tempdir().unwrap();
    write_log(d.path(), 6);
    let text = std::fs::read_to_string(segment_path(d.path(), 1)).unwrap();
    for clear in ["alice", "request_id", "output_argmax", "\"r3\"", "predict"] {
        assert!(!text.contains(clear), "{clear} is in clear: {text}");
    }
    assert!(text.contains("\"kind\":\"sealed\""));
    assert!(
        text.contains("\"kind\":\"checkpoint\""),
        "checkpoints stay in clear"
    );
    // No key needed to verify.
    let r = verify_dir(d.path(), &[*key().verifying_key().as_bytes()]);
    assert!(r.is_ok(), "{r:?}");
    assert_eq!(r.uncovered, 0, "a closed log ends with a checkpoint");
    // With the key, every event comes back.
    let records = plain_records(d.path());
    let predicts: Vec<_> = records
        .iter()
        .filter(|r| matches!(r.event, Event::Predict { .. }))
        .collect();
    assert_eq!(predicts.len(), 6);
    assert_eq!(predicts[3].event, predict(3));
    // Another state key opens nothing.
    let mut wrong = seal::Opener::new(Zeroizing::new([4u8; 32]));
    let err = export_dir(d.path(), &[], &mut wrong, &mut Vec::new()).unwrap_err();
    assert!(err.to_string().contains("does not decrypt"), "{err}");
}

#[test]
fn an_edited_and_rechained_record_is_caught_by_the_signatures_or_the_uncovered_tail() {
    let d = tempfile::tempdir().unwrap();
    write_log(d.path(), 8);
    let original = lines(d.path());
    let pinned = [*key().verifying_key().as_bytes()];
    // Replace record 2's event by record 3's ciphertext (a well-formed sealed event) and
    // recompute the whole chain: the next checkpoint's signature no longer matches.
    let mut edited = original.clone();
    edited[1] = edited[1].replacen("\"ts_ms\":", "\"ts_ms\":1", 1);
    rechain(d.path(), &edited);
    let f = verify_dir(d.path(), &pinned)
        .first_failure
        .expect("edit caught");
    assert!(f.problem.contains("signature does not verify"), "{f:?}");
    assert_eq!(f.line, 5, "the first checkpoint after the edit");
    // Without --pubkey, the same: the log's own key does not sign the new head.
    assert!(!verify_dir(d.path(), &[]).is_ok());
    // Dropping every checkpoint after the edit leaves the records uncovered.
    let kept: Vec<String> = edited
        .iter()
        .enumerate()
        .filter(|(i, l)| *i < 4 || !l.contains("\"kind\":\"checkpoint\""))
        .map(|(_, l)| l.clone())
        .collect();
    rechain(d.path(), &kept);
    let r = verify_dir(d.path(), &pinned);
    assert!(r.is_ok(), "the chain itself is consistent: {r:?}");
    assert_eq!(
        r.uncovered, 8,
        "no checkpoint covers any of the 8 records now"
    );
    // Moving a ciphertext to another position fails authentication (the seq is bound).
    let mut moved = original.clone();
    let a: Record = serde_json::from_str(&moved[1]).unwrap();
    let mut b: Record = serde_json::from_str(&moved[2]).unwrap();
    b.event = a.event.clone();
    moved[2] = String::from_utf8(crate::canonical::to_vec(&b).unwrap()).unwrap();
    rechain(d.path(), &moved);
    let mut opener = seal::Opener::new(Zeroizing::new([3u8; 32]));
    // The chain breaks at the signature first; export refuses a log that does not verify.
    assert!(export_dir(d.path(), &[], &mut opener, &mut Vec::new()).is_err());
    assert!(matches!(
        opener.open(b.seq, "00000000000000000000000000000000", "AAAA"),
        Err(seal::OpenError::Authentication)
    ));
    let Event::Sealed {
        ciphertext,
        key_salt,
    } = &a.event
    else {
        unreachable!()
    };
    assert!(opener.open(a.seq, key_salt, ciphertext).is_ok());
    assert!(matches!(
        opener.open(b.seq, key_salt, ciphertext),
        Err(seal::OpenError::Authentication)
    ));
}

#[test]
fn without_a_pinned_key_a_second_signer_is_refused_and_the_report_says_not_pinned() {
    let d = tempfile::tempdir().unwrap();
    write_log(d.path(), 3);
    let r = verify_dir(d.path(), &[]);
    assert_eq!(r.signatures, verify::NOT_PINNED);
    assert_eq!(
        r.signing_key.as_deref(),
        Some(hex::encode(key().verifying_key().as_bytes()).as_str())
    );
    let r = verify_dir(d.path(), &[*key().verifying_key().as_bytes()]);
    assert_eq!(r.signatures, verify::PINNED);
    // A log continued under another key (another state key) is refused at open ...
    let other = AuditKeys {
        signing: SigningKey::from_bytes(&[9u8; 32]),
        ..keys_with(1)
    };
    let err = AuditLog::open(d.path(), other, AuditConfig::default())
        .err()
        .unwrap();
    assert!(matches!(err, AuditError::ForeignKey { .. }), "{err}");
    // ... and a checkpoint by a second key, appended by hand, fails verify without --pubkey.
    let mut l = lines(d.path());
    let last: Record = serde_json::from_str(l.last().unwrap()).unwrap();
    let forger = SigningKey::from_bytes(&[9u8; 32]);
    let seq = last.seq + 1;
    let mut r = Record {
        seq,
        ts_ms: last.ts_ms,
        event: Event::Checkpoint {
            head: last.hash.clone(),
            public_key: hex::encode(forger.verifying_key().as_bytes()),
            signature: hex::encode(forger.sign(&checkpoint_message(seq, &last.hash)).to_bytes()),
        },
        prev: last.hash.clone(),
        hash: String::new(),
    };
    r.hash = r.compute_hash();
    l.push(String::from_utf8(crate::canonical::to_vec(&r).unwrap()).unwrap());
    std::fs::write(segment_path(d.path(), 1), l.join("\n") + "\n").unwrap();
    let f = verify_dir(d.path(), &[])
        .first_failure
        .expect("second key caught");
    assert!(f.problem.contains("does not change"), "{f:?}");
}

#[test]
fn segments_are_private() {
    use std::os::unix::fs::PermissionsExt;
    let d = tempfile::tempdir().unwrap();
    let dir = d.path().join("audit");
    write_log(&dir, 2);
    let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&dir), 0o700);
    assert_eq!(mode(&segment_path(&dir, 1)), 0o600);
}

/// Before the change a failed write or fsync was logged, its group dropped and the writer
/// went on chaining new records onto hashes that were never written: the chain broke and
/// nothing told the server. Now the group is kept and retried, the log says it is not
/// writable meanwhile (durable appends are refused), and once the disk is back every record
/// is on disk and the chain verifies.
#[test]
fn a_failed_write_is_retried_until_it_lands_and_the_chain_stays_whole() {
    let d = tempfile::tempdir().unwrap();
    let log = open_log(
        d.path(),
        AuditConfig {
            checkpoint_every: 1000,
            checkpoint_interval: Duration::from_secs(3600),
            group_linger: Duration::ZERO,
            segment_records: 2,
            retention: None,
            max_bytes: None,
            journal_bytes: DEFAULT_JOURNAL_BYTES,
            receipt_linger: RECEIPT_LINGER,
        },
    );
    // The second segment is a device on which every write fails with ENOSPC.
    let next = segment_path(d.path(), 2);
    std::os::unix::fs::symlink("/dev/full", &next).unwrap();
    log.append_durable(predict(0)).unwrap();
    log.append_durable(predict(1)).unwrap();
    assert!(log.is_writable());
    log.append(predict(2));
    let wait_for = |want: bool| {
        for _ in 0..200 {
            if log.is_writable() == want {
                return;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        panic!("is_writable never became {want}");
    };
    wait_for(false);
    assert!(matches!(
        log.append_durable(predict(3)),
        Err(AuditError::Unwritable)
    ));
    log.append(predict(4));
    std::fs::remove_file(&next).unwrap();
    wait_for(true);
    log.append_durable(predict(5)).unwrap();
    log.close();
    let report = verify_dir(d.path(), &[]);
    assert!(report.first_failure.is_none(), "{:?}", report.first_failure);
    let text: String = plain_records(d.path())
        .iter()
        .map(|r| serde_json::to_string(r).unwrap())
        .collect();
    for id in ["\"r2\"", "\"r4\"", "\"r5\""] {
        assert!(text.contains(id), "{id} missing from {text}");
    }
    assert!(
        !text.contains("\"r3\""),
        "the refused durable append was not queued"
    );
}

#[test]
fn an_fsync_overtaken_by_a_cut_covers_nothing_and_its_records_land_with_the_retry() {
    // The writer thread fsyncs without the lock; meanwhile the receipts' task may fail a
    // write and cut the file back to the last fsync. The fsync must then count for nothing.
    let d = tempfile::tempdir().unwrap();
    let log = open_log(
        d.path(),
        AuditConfig {
            checkpoint_interval: Duration::from_secs(3600),
            ..AuditConfig::default()
        },
    );
    {
        let mut guard = lock_writer(&log.writer);
        let w = &mut *guard;
        for i in 0..2 {
            push(
                &mut w.st,
                &mut w.buf,
                &event_json(&predict(i)).unwrap(),
                Kind::Sealed,
            );
        }
        assert!(write_pending(&mut w.st, &w.buf));
        let unsynced = w.buf.len();
        let ticket = begin_sync(&mut w.st, &w.buf).expect("something to fsync");
        failed(
            &mut w.st,
            &std::io::Error::other("a write failed meanwhile"),
        );
        let result = ticket.sync();
        assert!(result.is_ok(), "the fsync itself succeeded");
        assert!(!end_sync(&mut w.st, &mut w.buf, ticket, result));
        assert_eq!(w.buf.len(), unsynced, "nothing left the buffer");
        assert_eq!(
            std::fs::metadata(segment_path(d.path(), 1)).unwrap().len(),
            w.st.synced_len,
            "the file was cut back"
        );
        assert!(!log.is_writable());
    }
    // As the receipts' task does after a failed write: the thread retries.
    log.queue.lock().thread_wanted = true;
    log.queue.ready.notify_one();
    for _ in 0..200 {
        if log.is_writable() {
            break;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    assert!(log.is_writable(), "the retry wrote the records again");
    log.close();
    let report = verify_dir(d.path(), &[]);
    assert!(report.is_ok(), "{report:?}");
    let ids: Vec<String> = plain_records(d.path())
        .into_iter()
        .filter_map(|r| match r.event {
            Event::Predict { request_id, .. } => Some(request_id),
            _ => None,
        })
        .collect();
    assert_eq!(ids, ["r0", "r1"]);
}

#[tokio::test]
async fn a_durable_append_is_on_disk_when_awaited_and_ends_a_long_gathering() {
    let d = tempfile::tempdir().unwrap();
    // A gathering far longer than the test may take: only the waiter can end it. Without a
    // journal, the answer waits for the writer.
    let log = open_log(
        d.path(),
        AuditConfig {
            group_linger: Duration::from_secs(600),
            journal_bytes: 0,
            ..AuditConfig::default()
        },
    );
    let mut checkpoints = log.checkpoints();
    // An event nobody waits for starts a gathering; the durable one ends it.
    log.append(predict(1));
    let event = allowed_event("durable-1");
    let durable = log.append_predict_durable(&event).unwrap();
    tokio::time::timeout(Duration::from_secs(60), durable.wait())
        .await
        .expect("the waiter ended the gathering")
        .unwrap();
    // On disk now, before any close: both records are in the segment file.
    let text = std::fs::read_to_string(segment_path(d.path(), 1)).unwrap();
    assert_eq!(text.lines().count(), 2, "both events: {text}");
    let report = verify_dir(d.path(), &[]);
    assert!(report.is_ok(), "{report:?}");
    assert_eq!(report.last_seq, 2);
    // The closing checkpoint is published once it is on disk, with its record's hash.
    log.close();
    checkpoints.changed().await.unwrap();
    let c = checkpoints.borrow().clone().unwrap();
    assert_eq!(c.seq, 3);
    assert_eq!(
        record_at(d.path(), 3).unwrap().unwrap().hash,
        c.head,
        "the published head is the checkpoint record's hash"
    );
    // A closed log refuses durable appends instead of leaving the caller waiting.
    assert!(matches!(
        log.append_predict_durable(&event),
        Err(AuditError::Stopped)
    ));
}

#[tokio::test]
async fn a_start_verifies_the_tail_and_the_rest_in_the_background() {
    let d = tempfile::tempdir().unwrap();
    let small = AuditConfig {
        segment_records: 10,
        ..AuditConfig::default()
    };
    let log = open_log(d.path(), small);
    for i in 0..60 {
        log.append(predict(i));
    }
    log.close();
    drop(log);
    assert!(segments(d.path()).unwrap().len() >= 6);
    // Intact: the background check passes.
    let log = open_log(d.path(), small);
    let mut integrity = log.integrity();
    let state = integrity
        .wait_for(|s| *s != Integrity::Verifying)
        .await
        .unwrap()
        .clone();
    assert_eq!(state, Integrity::Verified);
    log.close();
    drop(log);
    // A record edited in the first segment: the start opens (it reads the tail only), and
    // the background check reports the damage, naming where.
    let first = segment_path(d.path(), 1);
    let text = std::fs::read_to_string(&first).unwrap();
    let mut l: Vec<String> = text.lines().map(str::to_owned).collect();
    l[1] = l[1].replacen("\"ts_ms\":", "\"ts_ms\":1", 1);
    std::fs::write(&first, l.join("\n") + "\n").unwrap();
    let log = open_log(d.path(), small);
    let mut integrity = log.integrity();
    let state = integrity
        .wait_for(|s| *s != Integrity::Verifying)
        .await
        .unwrap()
        .clone();
    match state {
        Integrity::Damaged(problem) => {
            assert!(
                problem.contains("segment-000001") && problem.contains("line 2"),
                "{problem}"
            )
        }
        other => panic!("{other:?}"),
    }
    log.close();
    drop(log);
    // Damage in the tail still refuses the start.
    let segs = segments(d.path()).unwrap();
    let last = segment_path(d.path(), *segs.last().unwrap());
    let text = std::fs::read_to_string(&last).unwrap();
    let mut l: Vec<String> = text.lines().map(str::to_owned).collect();
    l[0] = l[0].replacen("\"ts_ms\":", "\"ts_ms\":1", 1);
    std::fs::write(&last, l.join("\n") + "\n").unwrap();
    assert!(AuditLog::open(d.path(), keys_with(1), small).is_err());
}

#[test]
fn a_size_cap_rotates_out_the_oldest_segments_behind_a_signed_retention_record() {
    let d = tempfile::tempdir().unwrap();
    let config = AuditConfig {
        segment_records: 5,
        group_linger: Duration::ZERO,
        ..AuditConfig::default()
    };
    let log = open_log(d.path(), config);
    for i in 0..40 {
        log.append_durable(predict(i)).unwrap();
    }
    log.close();
    drop(log);
    let size = |d: &Path| -> u64 {
        segments(d)
            .unwrap()
            .iter()
            .map(|&n| std::fs::metadata(segment_path(d, n)).unwrap().len())
            .sum()
    };
    let before = size(d.path());
    let cap = before / 3;
    let log = open_log(
        d.path(),
        AuditConfig {
            max_bytes: Some(cap),
            ..config
        },
    );
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while segments(d.path()).unwrap()[0] == 1 {
        assert!(
            std::time::Instant::now() < deadline,
            "nothing was rotated out"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    log.close();
    drop(log);
    // At most the cap plus the current segment is left, and the chain still verifies from
    // the retention record that vouches for its new start.
    assert!(
        size(d.path()) <= cap + before / 8,
        "{} > {cap}",
        size(d.path())
    );
    let report = verify_dir(d.path(), &[]);
    assert!(report.is_ok(), "{report:?}");
    let records = plain_records(d.path());
    assert!(
        records
            .iter()
            .any(|r| matches!(r.event, Event::Retention { .. })),
        "a signed retention record"
    );
}

/// A receipts' audit log whose gathering would outlast the test: only the calls it expects
/// can end it. `on_runtime`: its receipts are written by the runtime's task (as the server
/// has them), else by the writer thread.
fn receipts_log(dir: &Path, on_runtime: bool) -> (AuditLog, Arc<crate::receipt::ReceiptSigner>) {
    receipts_log_with(
        dir,
        on_runtime,
        AuditConfig {
            receipt_linger: Duration::from_secs(600),
            ..AuditConfig::default()
        },
    )
}

fn receipts_log_with(
    dir: &Path,
    on_runtime: bool,
    config: AuditConfig,
) -> (AuditLog, Arc<crate::receipt::ReceiptSigner>) {
    let log = open_log(dir, config);
    if on_runtime {
        log.write_receipts_on_runtime(None);
        assert!(log.queue.receipt_task.get().is_some(), "the task started");
    }
    let key = ed25519_dalek::SigningKey::from_bytes(&[5; 32]);
    let signer = Arc::new(
        crate::receipt::ReceiptSigner::from_parts(key, b"{}".to_vec()).expect("the signer"),
    );
    (log, signer)
}

/// No call that will carry a receipt is counted as under way.
pub(super) fn assert_none_expected(log: &AuditLog) {
    assert_eq!(
        log.queue
            .expected_receipts
            .load(std::sync::atomic::Ordering::Acquire),
        0
    );
}

/// An allowed Predict of one row by alice.
pub(super) fn allowed_event(id: &str) -> PredictEvent<'_> {
    PredictEvent {
        request_id: id,
        principal: "alice",
        model: "m@1",
        purpose: None,
        subject: None,
        input_hmac: None,
        output_argmax: &[0],
        flagged_rows: &[],
        rows: 1,
        latency_us: 1,
        decision: "allow",
        reason: "OK",
        epsilon: 0.0,
        rpc: None,
    }
}

pub(super) fn receipt_draft(
    signer: &Arc<crate::receipt::ReceiptSigner>,
    id: &str,
) -> crate::receipt::Draft<'static> {
    crate::receipt::Draft {
        signer: Arc::clone(signer),
        rpc: "predict",
        request_id: id.to_string().into(),
        request: [1; 32],
        response: [2; 32],
        model: "m".into(),
        version: "1".into(),
        manifest: [3; 32],
        epsilon: 0.0,
    }
}

/// The size of the group a receipt was signed in.
pub(super) fn group_size(receipt: &[u8]) -> u64 {
    crate::receipt::envelope::open(receipt).unwrap().tree_size
}

pub(super) async fn receipt_of(durable: Durable) -> Vec<u8> {
    tokio::time::timeout(Duration::from_secs(60), durable.wait_for_receipt())
        .await
        .expect("the receipt came without the gathering's full length")
        .unwrap()
        .expect("a receipt")
}

/// Queues record `id` with a receipt.
pub(super) fn append_receipt(
    log: &AuditLog,
    signer: &Arc<crate::receipt::ReceiptSigner>,
    id: &str,
    expected: Option<ReceiptExpected>,
) -> Durable {
    log.append_predict_with_receipt(&allowed_event(id), receipt_draft(signer, id), expected)
        .unwrap()
}

#[tokio::test]
async fn a_receipt_nobody_else_is_expected_with_is_signed_at_once() {
    for on_runtime in [false, true] {
        let d = tempfile::tempdir().unwrap();
        let (log, signer) = receipts_log(d.path(), on_runtime);
        let expected = log.expect_receipt();
        let durable = append_receipt(&log, &signer, "a", Some(expected));
        assert_eq!(group_size(&receipt_of(durable).await), 1, "{on_runtime}");
        // Without saying so beforehand: the same.
        let durable = append_receipt(&log, &signer, "b", None);
        assert_eq!(group_size(&receipt_of(durable).await), 1, "{on_runtime}");
        assert_none_expected(&log);
    }
}

#[tokio::test]
async fn a_lone_receipt_on_the_runtime_is_written_and_signed_by_its_own_call() {
    let d = tempfile::tempdir().unwrap();
    let (log, signer) = receipts_log(d.path(), true);
    // Ready at the first poll: on this one-thread runtime the receipts' task cannot have run
    // in between, so the call itself wrote the record and signed the receipt. (The writer
    // thread may take a receipt in a turn of its own, when it wakes to fsync, so five are
    // tried; without this path none is ever ready at once.)
    let mut receipts = Vec::new();
    let mut at_once = 0;
    for i in 0..5 {
        let id = format!("r{i}");
        let expected = log.expect_receipt();
        let durable = append_receipt(&log, &signer, &id, Some(expected));
        let mut wait = std::pin::pin!(durable.wait_for_receipt());
        // One poll that cannot yield to the runtime.
        let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
        let receipt = match std::future::Future::poll(wait.as_mut(), &mut cx) {
            std::task::Poll::Ready(r) => {
                at_once += 1;
                r
            }
            std::task::Poll::Pending => tokio::time::timeout(Duration::from_secs(60), wait)
                .await
                .expect("the receipt came"),
        };
        let receipt = receipt.unwrap().expect("a receipt");
        assert_eq!(group_size(&receipt), 1);
        receipts.push((id, receipt));
    }
    assert!(at_once > 0, "no lone receipt was signed by its own call");
    assert_none_expected(&log);
    close_and_check_receipts(log, d.path(), &receipts);
}

#[tokio::test]
async fn the_gathering_waits_for_the_receipts_under_way_and_ends_when_they_arrive_or_fail() {
    for on_runtime in [false, true] {
        let d = tempfile::tempdir().unwrap();
        let (log, signer) = receipts_log(d.path(), on_runtime);
        // Two calls under way: the first one's receipt waits for the second (which only its
        // arrival can end, the gathering being 600 s), and both are signed in one group.
        let (first, second) = (log.expect_receipt(), log.expect_receipt());
        let a = append_receipt(&log, &signer, "a", Some(first));
        let b = append_receipt(&log, &signer, "b", Some(second));
        let (ra, rb) = (receipt_of(a).await, receipt_of(b).await);
        assert_eq!((group_size(&ra), group_size(&rb)), (2, 2), "{on_runtime}");
        // A call under way that fails before its record is queued ends the gathering too.
        let (first, failing) = (log.expect_receipt(), log.expect_receipt());
        let a = append_receipt(&log, &signer, "c", Some(first));
        drop(failing);
        assert_eq!(group_size(&receipt_of(a).await), 1, "{on_runtime}");
        assert_none_expected(&log);
    }
}

#[tokio::test]
async fn a_call_refused_after_asking_for_a_receipt_wakes_no_writer_when_no_receipt_waits() {
    for on_runtime in [false, true] {
        let d = tempfile::tempdir().unwrap();
        // The writer thread gathers plain records for 600 s: only a turn taken for receipts
        // writes one sooner.
        let (log, signer) = receipts_log_with(
            d.path(),
            on_runtime,
            AuditConfig {
                receipt_linger: Duration::from_secs(600),
                group_linger: Duration::from_secs(600),
                checkpoint_interval: Duration::from_secs(600),
                ..AuditConfig::default()
            },
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
        let before = lines(d.path()).len();
        // A call that asked for a receipt is refused: its expectation ends before its
        // record (which nobody waits for) is queued, as in the pipeline.
        drop(log.expect_receipt());
        log.append_predict(&allowed_event("refused"));
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert_eq!(
            lines(d.path()).len(),
            before,
            "no receipt waited: nothing was written for the refusal ({on_runtime})"
        );
        assert_none_expected(&log);
        // A receipt after it is still signed at once, and its group's write takes the
        // refusal's record along.
        let r = receipt_of(append_receipt(
            &log,
            &signer,
            "a",
            Some(log.expect_receipt()),
        ))
        .await;
        assert_eq!(group_size(&r), 1, "{on_runtime}");
        assert!(lines(d.path()).len() >= before + 2, "{on_runtime}");
        close_and_check_receipts(log, d.path(), &[("a".to_string(), r)]);
    }
}

#[tokio::test]
async fn a_receipt_waits_for_a_slow_call_under_way_no_longer_than_the_linger() {
    for on_runtime in [false, true] {
        let d = tempfile::tempdir().unwrap();
        let (log, signer) = receipts_log_with(
            d.path(),
            on_runtime,
            AuditConfig {
                receipt_linger: Duration::from_millis(50),
                ..AuditConfig::default()
            },
        );
        // A call under way whose record never comes while the other's receipt waits.
        let (slow, fast) = (log.expect_receipt(), log.expect_receipt());
        let started = std::time::Instant::now();
        let durable = append_receipt(&log, &signer, "fast", Some(fast));
        let receipt = tokio::time::timeout(Duration::from_secs(5), durable.wait_for_receipt())
            .await
            .expect("the linger ends the gathering")
            .unwrap()
            .unwrap();
        let waited = started.elapsed();
        assert_eq!(group_size(&receipt), 1, "{on_runtime}");
        assert!(
            waited >= Duration::from_millis(45),
            "{on_runtime}: it gathered for the linger, not {waited:?}"
        );
        drop(slow);
        assert_none_expected(&log);
    }
}

/// `calls` tasks, each appending `each` records with receipts one after the other (saying
/// so beforehand, then yielding, as a call does between `receipt_ask` and its record): the
/// request ids and receipts of all.
pub(super) async fn concurrent_receipts(
    log: &Arc<AuditLog>,
    signer: &Arc<crate::receipt::ReceiptSigner>,
    calls: usize,
    each: usize,
) -> Vec<(String, Vec<u8>)> {
    let mut tasks = tokio::task::JoinSet::new();
    for t in 0..calls {
        let (log, signer) = (Arc::clone(log), Arc::clone(signer));
        tasks.spawn(async move {
            let mut out = Vec::new();
            for i in 0..each {
                let id = format!("t{t}-{i}");
                let expected = log.expect_receipt();
                tokio::task::yield_now().await;
                let durable = append_receipt(&log, &signer, &id, Some(expected));
                out.push((id, receipt_of(durable).await));
            }
            out
        });
    }
    let mut receipts = Vec::new();
    while let Some(r) = tasks.join_next().await {
        receipts.extend(r.unwrap());
    }
    receipts
}

/// Closes `log`, then checks that its directory verifies and that each receipt states its
/// record.
pub(super) fn close_and_check_receipts(log: AuditLog, dir: &Path, receipts: &[(String, Vec<u8>)]) {
    log.close();
    let report = verify_dir(dir, &[]);
    assert!(report.is_ok(), "{report:?}");
    assert_receipts_state_their_records(dir, receipts);
}

/// Each receipt states its own record: the request id it was drafted with is the event's at
/// the sequence number and chain hash it states.
pub(super) fn assert_receipts_state_their_records(dir: &Path, receipts: &[(String, Vec<u8>)]) {
    let records: std::collections::HashMap<u64, Record> =
        plain_records(dir).into_iter().map(|r| (r.seq, r)).collect();
    for (id, receipt) in receipts {
        let opened = crate::receipt::envelope::open(receipt).unwrap();
        let statement = crate::receipt::Statement::from_cbor(&opened.statement).unwrap();
        assert_eq!(&statement.request_id, id);
        let record = &records[&statement.audit_seq];
        assert_eq!(record.hash, statement.audit_hash, "{id}");
        assert_eq!(record.ts_ms, statement.time_ms, "{id}");
        match &record.event {
            Event::Predict { request_id, .. } => assert_eq!(request_id, id),
            other => panic!("{id}: record {} is {other:?}", statement.audit_seq),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn receipts_written_on_the_runtime_state_their_records_across_fsyncs_and_segments() {
    // Small segments (the task hands rotation to the thread), frequent checkpoints, and an
    // fsync every millisecond (the thread's, without the lock, while the task writes), with
    // admin events that wait for their fsync and answers without receipts among them.
    let d = tempfile::tempdir().unwrap();
    let (log, signer) = receipts_log_with(
        d.path(),
        true,
        AuditConfig {
            checkpoint_every: 7,
            group_linger: Duration::from_millis(1),
            segment_records: 40,
            ..AuditConfig::default()
        },
    );
    let log = Arc::new(log);
    let admin = tokio::task::spawn_blocking({
        let log = Arc::clone(&log);
        move || {
            for i in 0..20 {
                log.append_durable(predict(1000 + i)).unwrap();
                log.append(predict(2000 + i));
            }
        }
    });
    let receipts = concurrent_receipts(&log, &signer, 8, 40).await;
    admin.await.unwrap();
    let log = Arc::into_inner(log).expect("no other holder");
    log.close();
    assert_eq!(receipts.len(), 320);
    let report = verify_dir(d.path(), &[]);
    assert!(report.is_ok(), "{report:?}");
    assert!(segments(d.path()).unwrap().len() > 5, "the log rotated");
    assert_receipts_state_their_records(d.path(), &receipts);
    // Receipts were signed in groups, not one by one.
    let largest = receipts.iter().map(|(_, r)| group_size(r)).max().unwrap();
    assert!(largest > 1, "groups of {largest}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_receipt_whose_record_cannot_be_written_is_withheld_and_receipts_resume_after() {
    for on_runtime in [false, true] {
        let d = tempfile::tempdir().unwrap();
        let (log, signer) = receipts_log_with(
            d.path(),
            on_runtime,
            AuditConfig {
                group_linger: Duration::ZERO,
                segment_records: 3,
                ..AuditConfig::default()
            },
        );
        // The second segment is a device on which every write fails with ENOSPC.
        let next = segment_path(d.path(), 2);
        std::os::unix::fs::symlink("/dev/full", &next).unwrap();
        let mut receipts = Vec::new();
        let mut refused = 0;
        for i in 0..8 {
            let id = format!("a{i}");
            let durable = append_receipt(&log, &signer, &id, None);
            match tokio::time::timeout(Duration::from_secs(60), durable.wait_for_receipt())
                .await
                .unwrap()
            {
                Ok(r) => receipts.push((id, r.expect("a receipt"))),
                Err(AuditError::Unwritable) => refused += 1,
                Err(e) => panic!("{e}"),
            }
        }
        assert!(refused > 0, "{on_runtime}: the writes to /dev/full failed");
        assert!(!log.is_writable());
        std::fs::remove_file(&next).unwrap();
        for _ in 0..200 {
            if log.is_writable() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert!(log.is_writable(), "{on_runtime}: the retry landed");
        for i in 0..8 {
            let id = format!("b{i}");
            let durable = append_receipt(&log, &signer, &id, None);
            receipts.push((id, receipt_of(durable).await));
        }
        log.close();
        let report = verify_dir(d.path(), &[]);
        assert!(report.is_ok(), "{on_runtime}: {report:?}");
        assert_receipts_state_their_records(d.path(), &receipts);
    }
}

/// A log of several segments, reopened, whose background check has passed; retention is
/// run by hand ([`apply_retention`]), so that the files can be changed just before it.
async fn verified_log_of_segments(d: &Path) -> AuditLog {
    let small = AuditConfig {
        segment_records: 5,
        group_linger: Duration::ZERO,
        retention: None,
        max_bytes: None,
        ..AuditConfig::default()
    };
    let log = open_log(d, small);
    for i in 0..30 {
        log.append_durable(predict(i)).unwrap();
    }
    log.close();
    drop(log);
    // Reopened: the last two segments are verified at the start, the rest in the background.
    let log = open_log(d, small);
    let state = log
        .integrity()
        .wait_for(|s| *s != Integrity::Verifying)
        .await
        .unwrap()
        .clone();
    assert_eq!(state, Integrity::Verified);
    // And more records, so that a segment is also closed by this run.
    for i in 30..42 {
        log.append_durable(predict(i)).unwrap();
    }
    assert!(segments(d).unwrap().len() >= 8, "{:?}", segments(d));
    log
}

/// Waits until the clock has left the millisecond of the log's newest record. A retention of
/// zero deletes a closed segment whose last record is older than the pass, not one written in
/// the pass's own millisecond (CI once caught the last closed segment so, and kept it).
async fn after_the_newest_record(log: &AuditLog) {
    let newest = lock_writer(&log.writer).st.last_ts_ms;
    while outbox::now_ms() <= newest {
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}

fn retention_pass(log: &AuditLog, retention: Option<Duration>, max_bytes: Option<u64>) {
    let mut w = lock_writer(&log.writer);
    let w = &mut *w;
    apply_retention(&mut w.st, &mut w.buf, &key(), retention, max_bytes).unwrap();
}

#[tokio::test]
async fn the_host_cannot_make_retention_delete_records_early() {
    let d = tempfile::tempdir().unwrap();
    let log = verified_log_of_segments(d.path()).await;
    let before = segments(d.path()).unwrap();
    // The host backdates the last record of the oldest segment (after it was verified)...
    let first = segment_path(d.path(), before[0]);
    let text = std::fs::read_to_string(&first).unwrap();
    let mut l: Vec<String> = text.lines().map(str::to_owned).collect();
    let last = l.len() - 1;
    l[last] = l[last].replacen("\"ts_ms\":", "\"ts_ms\":1", 1);
    std::fs::write(&first, l.join("\n") + "\n").unwrap();
    // ... and inflates the next one past the cap (64 MiB of zeros, a sparse file).
    let second = segment_path(d.path(), before[1]);
    let f = OpenOptions::new().write(true).open(&second).unwrap();
    f.set_len(f.metadata().unwrap().len() + (64 << 20)).unwrap();
    drop(f);
    // Nothing has expired (a day's retention) and the log is far below a 32 MiB cap: the
    // server deletes nothing, and signs no retention record.
    retention_pass(&log, Some(Duration::from_secs(86_400)), Some(32 << 20));
    assert_eq!(segments(d.path()).unwrap(), before);
    let text: String = before
        .iter()
        .map(|n| std::fs::read_to_string(segment_path(d.path(), *n)).unwrap_or_default())
        .collect();
    assert!(!text.contains("\"kind\":\"retention\""));
    log.close();
}

#[tokio::test]
async fn retention_deletes_by_what_was_verified_and_written() {
    let d = tempfile::tempdir().unwrap();
    let log = verified_log_of_segments(d.path()).await;
    let before = segments(d.path()).unwrap();
    // Everything closed has expired (a retention of zero): the segments verified at the
    // start, in the background, and closed by this run all go, behind one signed record.
    after_the_newest_record(&log).await;
    retention_pass(&log, Some(Duration::ZERO), None);
    log.close();
    drop(log);
    let after = segments(d.path()).unwrap();
    assert_eq!(after, vec![*before.last().unwrap()], "{before:?}");
    let report = verify_dir(d.path(), &[*key().verifying_key().as_bytes()]);
    assert!(report.is_ok(), "{report:?}");
    // A size cap below one segment leaves the current segment only, likewise.
    let d = tempfile::tempdir().unwrap();
    let log = verified_log_of_segments(d.path()).await;
    let before = segments(d.path()).unwrap();
    retention_pass(&log, None, Some(1));
    log.close();
    drop(log);
    assert_eq!(segments(d.path()).unwrap(), vec![*before.last().unwrap()]);
    assert!(verify_dir(d.path(), &[]).is_ok());
}

#[tokio::test]
async fn what_retention_knows_of_each_segment_matches_the_files() {
    // Facts of segments closed by a run, and facts verified at a start and in the background,
    // both agree with the segments as written.
    let check = |log: &AuditLog, d: &Path| {
        let w = lock_writer(&log.writer);
        let closed: Vec<u64> = w.st.closed.keys().copied().collect();
        let all = segments(d).unwrap();
        assert_eq!(
            closed,
            all[..all.len() - 1],
            "every segment but the current one"
        );
        for f in w.st.closed.values() {
            let path = segment_path(d, f.segment);
            let text = std::fs::read_to_string(&path).unwrap();
            let last: Record = serde_json::from_str(text.lines().last().unwrap()).unwrap();
            assert_eq!(
                (f.last_seq, f.last_hash.as_str(), f.last_ts_ms, f.bytes),
                (last.seq, last.hash.as_str(), last.ts_ms, text.len() as u64),
                "segment {}",
                f.segment
            );
            // Every segment holds exactly `segment_records` (5), across the reopen too: the
            // start counted the last segment's records right.
            assert_eq!(
                (f.records, text.lines().count()),
                (5, 5),
                "segment {}",
                f.segment
            );
        }
        let current = segment_path(d, *all.last().unwrap());
        assert_eq!(
            w.st.segment_bytes,
            std::fs::metadata(current).unwrap().len()
        );
    };
    let d = tempfile::tempdir().unwrap();
    let log = verified_log_of_segments(d.path()).await;
    // The background check's facts are taken in by a retention pass (one that deletes nothing).
    retention_pass(&log, None, None);
    check(&log, d.path());
    log.close();
}

#[tokio::test]
async fn retention_never_deletes_past_a_segment_it_knows_nothing_of() {
    // Were the oldest segment unknown to the writer, deleting the next ones would leave a
    // gap that fails verification: retention deletes nothing instead.
    let d = tempfile::tempdir().unwrap();
    let log = verified_log_of_segments(d.path()).await;
    retention_pass(&log, None, None);
    let before = segments(d.path()).unwrap();
    lock_writer(&log.writer).st.closed.remove(&before[0]);
    retention_pass(&log, Some(Duration::ZERO), None);
    assert_eq!(segments(d.path()).unwrap(), before);
    log.close();
    drop(log);
    assert!(verify_dir(d.path(), &[]).is_ok());
}
