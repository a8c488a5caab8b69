//! Verification of an audit directory: the hash chain across every segment, and every
//! checkpoint's signature. Reports the first broken record.

use std::io::BufRead;
use std::path::Path;

use ed25519_dalek::{Signature, VerifyingKey};
use serde::Serialize;

use super::{Event, Record, checkpoint_message, segment_path, segments};

/// Where the chain first breaks.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Failure {
    /// The segment file.
    pub segment: String,
    /// The 1-based line in that segment.
    pub line: u64,
    /// What is wrong.
    pub problem: String,
}

/// The result of [`verify_dir`].
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct VerifyReport {
    /// Records that verified.
    pub records: u64,
    /// Checkpoints that verified.
    pub checkpoints: u64,
    /// The hash of the last verified record.
    pub head: Option<String>,
    /// The sequence number of the last verified record (0 for an empty log).
    pub last_seq: u64,
    /// The first failure, if any.
    pub first_failure: Option<Failure>,
}

impl VerifyReport {
    /// Whether the whole log verified.
    pub fn is_ok(&self) -> bool {
        self.first_failure.is_none()
    }
}

/// Verifies every segment in `dir`. With `trusted` keys (raw Ed25519 public keys), every
/// checkpoint must be signed by one of them; otherwise by the key it names.
pub fn verify_dir(dir: &Path, trusted: &[[u8; 32]]) -> VerifyReport {
    let mut report = VerifyReport::default();
    let segs = match segments(dir) {
        Ok(s) => s,
        Err(e) => {
            report.first_failure = Some(Failure {
                segment: dir.display().to_string(),
                line: 0,
                problem: e.to_string(),
            });
            return report;
        }
    };
    let mut prev = "0".repeat(64);
    let mut expected_seq = 1u64;
    // A log whose first segment is not segment 1 (retention deletes whole segments from the
    // start) must be vouched for by a signed retention record naming exactly its first record.
    let mut anchor: Option<(u64, String, String)> = None;
    if let Some(&first_seg) = segs.first().filter(|&&n| n > 1) {
        let path = segment_path(dir, first_seg);
        if let Ok(f) = std::fs::File::open(&path)
            && let Some(Ok(line)) = std::io::BufReader::new(f).lines().next()
            && let Ok(r) = serde_json::from_str::<Record>(&line)
        {
            prev.clone_from(&r.prev);
            expected_seq = r.seq;
            anchor = Some((r.seq, r.prev, path.display().to_string()));
        }
    }
    let mut anchor_confirmed = false;
    for (i, n) in segs.iter().enumerate() {
        if i > 0 && *n != segs[i - 1] + 1 {
            report.first_failure = Some(Failure {
                segment: segment_path(dir, *n).display().to_string(),
                line: 0,
                problem: format!("segment {} is missing", segs[i - 1] + 1),
            });
            return report;
        }
        let path = segment_path(dir, *n);
        let fail = |line: u64, problem: String| Failure {
            segment: path.display().to_string(),
            line,
            problem,
        };
        let file = match std::fs::File::open(&path) {
            Ok(f) => f,
            Err(e) => {
                report.first_failure = Some(fail(0, e.to_string()));
                return report;
            }
        };
        for (idx, line) in std::io::BufReader::new(file).lines().enumerate() {
            let lineno = idx as u64 + 1;
            let text = match line {
                Ok(t) => t,
                Err(e) => {
                    report.first_failure = Some(fail(lineno, format!("unreadable: {e}")));
                    return report;
                }
            };
            let record: Record = match serde_json::from_str(&text) {
                Ok(r) => r,
                Err(e) => {
                    report.first_failure =
                        Some(fail(lineno, format!("not a valid audit record: {e}")));
                    return report;
                }
            };
            if let Err(problem) = check(&record, &prev, expected_seq, trusted) {
                report.first_failure = Some(fail(lineno, problem));
                return report;
            }
            if matches!(record.event, Event::Checkpoint { .. }) {
                report.checkpoints += 1;
            }
            if let (
                Event::Retention {
                    first_kept_seq,
                    first_kept_prev,
                    ..
                },
                Some((seq, p, _)),
            ) = (&record.event, &anchor)
                && first_kept_seq == seq
                && first_kept_prev == p
            {
                anchor_confirmed = true;
            }
            prev = record.hash;
            expected_seq += 1;
            report.records += 1;
            report.head = Some(prev.clone());
            report.last_seq = record.seq;
        }
    }
    if let Some((seq, _, segment)) = anchor
        && !anchor_confirmed
    {
        report.first_failure = Some(Failure {
            segment,
            line: 1,
            problem: format!(
                "the log starts at record {seq}, and no signed retention record vouches for \
                 the removal of the records before it"
            ),
        });
    }
    report
}

fn check(r: &Record, prev: &str, expected_seq: u64, trusted: &[[u8; 32]]) -> Result<(), String> {
    if r.seq != expected_seq {
        return Err(format!(
            "sequence number {} where {expected_seq} was expected (a record was deleted, \
             inserted or moved)",
            r.seq
        ));
    }
    if r.prev != prev {
        return Err("chain broken: prev does not match the previous record's hash".into());
    }
    if r.hash != r.compute_hash() {
        return Err("record hash mismatch: the record was modified".into());
    }
    if let Event::Checkpoint {
        head,
        public_key,
        signature,
    } = &r.event
    {
        if head != prev {
            return Err("checkpoint head does not match the chain".into());
        }
        let mut pk = [0u8; 32];
        hex::decode_to_slice(public_key, &mut pk)
            .map_err(|_| "checkpoint key is not 32 hex bytes")?;
        if !trusted.is_empty() && !trusted.contains(&pk) {
            return Err(format!("checkpoint signed by untrusted key {public_key}"));
        }
        let mut sig = [0u8; 64];
        hex::decode_to_slice(signature, &mut sig)
            .map_err(|_| "checkpoint signature is not 64 hex bytes")?;
        let key = VerifyingKey::from_bytes(&pk).map_err(|_| "checkpoint key is invalid")?;
        key.verify_strict(
            &checkpoint_message(r.seq, head),
            &Signature::from_bytes(&sig),
        )
        .map_err(|_| "checkpoint signature does not verify")?;
    }
    if let Event::Retention {
        removed_through_segment,
        first_kept_seq,
        first_kept_prev,
        public_key,
        signature,
    } = &r.event
    {
        let mut pk = [0u8; 32];
        hex::decode_to_slice(public_key, &mut pk)
            .map_err(|_| "retention key is not 32 hex bytes")?;
        if !trusted.is_empty() && !trusted.contains(&pk) {
            return Err(format!(
                "retention record signed by untrusted key {public_key}"
            ));
        }
        let mut sig = [0u8; 64];
        hex::decode_to_slice(signature, &mut sig)
            .map_err(|_| "retention signature is not 64 hex bytes")?;
        let key = VerifyingKey::from_bytes(&pk).map_err(|_| "retention key is invalid")?;
        key.verify_strict(
            &super::retention_message(*first_kept_seq, first_kept_prev, *removed_through_segment),
            &Signature::from_bytes(&sig),
        )
        .map_err(|_| "retention signature does not verify")?;
    }
    Ok(())
}
