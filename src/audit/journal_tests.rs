//! The journal: answers leave once their events are journaled, and a crash before the writer
//! wrote them loses nothing (see [`super::journal`]).

use super::tests::{allowed_event, open_log, plain_records, predict};
use super::*;

/// A writer that gathers for an hour: nothing reaches the log file unless someone waits.
fn lingering() -> AuditConfig {
    AuditConfig {
        group_linger: Duration::from_secs(3600),
        ..AuditConfig::default()
    }
}

/// Request ids of the log's Predict records, in order.
fn ids(dir: &Path) -> Vec<String> {
    plain_records(dir)
        .into_iter()
        .filter_map(|r| match r.event {
            Event::Predict { request_id, .. } => Some(request_id),
            _ => None,
        })
        .collect()
}

/// As a kill -9 would: the log is never closed, and its writer (which lingers for an hour)
/// never writes what it holds.
fn crash(log: AuditLog) {
    std::mem::forget(log);
}

/// Journals the answers `a1` to `a<n>` (none reaches the log file), then crashes.
fn crash_after_journaling(dir: &Path, n: u32) {
    let log = open_log(dir, lingering());
    for i in 1..=n {
        assert!(
            log.append_predict_durable(&allowed_event(&format!("a{i}")))
                .unwrap()
                .is_journaled()
        );
    }
    crash(log);
}

#[tokio::test]
async fn journaled_answers_leave_at_once_and_survive_a_crash_before_the_writer_wrote_them() {
    let d = tempfile::tempdir().unwrap();
    let log = open_log(d.path(), lingering());
    log.append(predict(0));
    for i in 1..=5 {
        let id = format!("a{i}");
        let durable = log.append_predict_durable(&allowed_event(&id)).unwrap();
        assert!(durable.is_journaled(), "answer {i} is journaled");
        // Nothing to wait for: the writer has not written it.
        tokio::time::timeout(Duration::from_secs(5), durable.wait())
            .await
            .expect("a journaled answer does not wait")
            .unwrap();
    }
    let segment = std::fs::read(segment_path(d.path(), 1)).unwrap_or_default();
    assert!(
        segment.is_empty(),
        "the writer wrote nothing yet: {} bytes",
        segment.len()
    );
    crash(log);
    // The next start writes them into the log, in order, and checkpoints them.
    let log = open_log(d.path(), AuditConfig::default());
    log.close();
    assert_eq!(ids(d.path()), ["r0", "a1", "a2", "a3", "a4", "a5"]);
    let report = verify_dir(d.path(), &[]);
    assert!(report.is_ok(), "{report:?}");
    assert_eq!(report.uncovered, 0);
    // And only once: a further start replays nothing.
    drop(log);
    let log = open_log(d.path(), AuditConfig::default());
    log.close();
    assert_eq!(ids(d.path()), ["r0", "a1", "a2", "a3", "a4", "a5"]);
}

#[test]
fn the_journal_holds_no_plaintext_and_is_private() {
    use std::os::unix::fs::PermissionsExt;
    let d = tempfile::tempdir().unwrap();
    let log = open_log(d.path(), lingering());
    let durable = log
        .append_predict_durable(&allowed_event("needle-request-id"))
        .unwrap();
    assert!(durable.is_journaled());
    let path = d.path().join(JOURNAL_FILE);
    let bytes = std::fs::read(&path).unwrap();
    assert!(
        !bytes
            .windows(b"needle".len())
            .any(|w| w == b"needle" || w == b"alice"),
        "the journal holds plaintext"
    );
    let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    crash(log);
}

#[test]
fn a_changed_entry_stops_the_replay_there() {
    let d = tempfile::tempdir().unwrap();
    crash_after_journaling(d.path(), 3);
    // Flip the last byte of the second entry's sealed body.
    let path = d.path().join(JOURNAL_FILE);
    let mut bytes = std::fs::read(&path).unwrap();
    let entry_len = |at: usize| u32::from_le_bytes(bytes[at + 4..at + 8].try_into().unwrap());
    let first = 4096;
    let second = first + ((16 + entry_len(first) as usize + 7) & !7);
    let last = second + 16 + entry_len(second) as usize - 1;
    bytes[last] ^= 1;
    std::fs::write(&path, &bytes).unwrap();
    // The first entry is replayed; the changed one and everything after it are not.
    let log = open_log(d.path(), AuditConfig::default());
    log.close();
    assert_eq!(ids(d.path()), ["a1"]);
    assert!(verify_dir(d.path(), &[]).is_ok());
}

#[test]
fn a_journal_from_another_state_key_or_with_a_changed_header_replays_nothing() {
    let d = tempfile::tempdir().unwrap();
    let log = open_log(d.path(), lingering());
    assert!(
        log.append_predict_durable(&allowed_event("a1"))
            .unwrap()
            .is_journaled()
    );
    crash(log);
    let path = d.path().join(JOURNAL_FILE);
    let mut bytes = std::fs::read(&path).unwrap();
    // `chained_q` moved back to replay more than the log lacks: the header's MAC fails.
    bytes[24] ^= 1;
    std::fs::write(&path, &bytes).unwrap();
    let log = open_log(d.path(), AuditConfig::default());
    log.close();
    assert!(ids(d.path()).is_empty());
}

#[test]
fn an_older_journal_put_back_replays_nothing_twice() {
    let d = tempfile::tempdir().unwrap();
    crash_after_journaling(d.path(), 3);
    let path = d.path().join(JOURNAL_FILE);
    let old = std::fs::read(&path).unwrap();
    // Replayed at this start; then more records, and a clean stop.
    let log = open_log(d.path(), AuditConfig::default());
    log.append(predict(9));
    log.close();
    drop(log);
    assert_eq!(ids(d.path()), ["a1", "a2", "a3", "r9"]);
    // The host puts the old journal back: its counts skip what the log holds.
    std::fs::write(&path, &old).unwrap();
    let log = open_log(d.path(), AuditConfig::default());
    log.close();
    assert_eq!(ids(d.path()), ["a1", "a2", "a3", "r9"]);
    assert!(verify_dir(d.path(), &[]).is_ok());
}

#[tokio::test]
async fn a_full_journal_makes_answers_wait_for_the_writer_and_loses_nothing() {
    let d = tempfile::tempdir().unwrap();
    // The smallest ring (64 KiB): a few hundred events fill it while the writer lingers.
    let log = open_log(
        d.path(),
        AuditConfig {
            journal_bytes: 1,
            ..lingering()
        },
    );
    let mut journaled = 0;
    let mut waited = None;
    for i in 0..2000 {
        let id = format!("a{i}");
        let durable = log.append_predict_durable(&allowed_event(&id)).unwrap();
        if durable.is_journaled() {
            journaled += 1;
        } else {
            // The first answer the ring cannot take ends the gathering and waits for its
            // record to be written.
            tokio::time::timeout(Duration::from_secs(60), durable.wait())
                .await
                .expect("the writer wrote the waiting answer's group")
                .unwrap();
            waited = Some(i);
            break;
        }
    }
    let waited = waited.expect("the ring filled up");
    assert_eq!(journaled, waited);
    assert!(journaled > 100, "only {journaled} events fit in 64 KiB");
    let text = std::fs::read_to_string(segment_path(d.path(), 1)).unwrap();
    assert_eq!(
        text.lines().count(),
        waited + 1,
        "written before the answer"
    );
    log.close();
    assert_eq!(ids(d.path()).len(), waited + 1);
}

#[test]
fn the_ring_wraps_and_a_replay_returns_exactly_the_entries_after_the_mark_in_order() {
    let d = tempfile::tempdir().unwrap();
    let key = [3u8; 32];
    let mut j = journal::Journal::create(d.path(), &key, 64 * 1024, 0).unwrap();
    let body = |q: u64| format!("event {q} {}", "x".repeat((q % 300) as usize)).into_bytes();
    // Append, and free entries as a writer would, until the ring has wrapped several times.
    let mut ends = Vec::new();
    let mut q = 0;
    while q < 3000 {
        q += 1;
        let at = j.append(q, &body(q)).expect("room: the writer keeps up");
        ends.push(at);
        if q > 20 {
            // The log holds everything up to 20 events back.
            let done = q - 20;
            j.advance(journal::Mark {
                q: done,
                seq: done,
                tail: ends[done as usize - 1],
            });
        }
    }
    // After the last advance (through q - 20), the log holds 7 more of the 20 events.
    let replay = journal::replay(d.path(), &key, |seq| {
        assert_eq!(seq, q - 20);
        Ok(7)
    })
    .unwrap();
    assert!(replay.problem.is_none(), "{:?}", replay.problem);
    let want: Vec<Vec<u8>> = (q - 12..=q).map(body).collect();
    assert_eq!(replay.events, want);
    // Without room (nothing freed), an append is refused rather than overwriting.
    let mut full = journal::Journal::create(d.path(), &key, 64 * 1024, 0).unwrap();
    let mut n = 0;
    while full.append(n + 1, &body(299)).is_some() {
        n += 1;
    }
    assert!(n > 100);
    let replay = journal::replay(d.path(), &key, |_| Ok(0)).unwrap();
    assert_eq!(
        replay.events.len() as u64,
        n,
        "every entry of the full ring"
    );
}
