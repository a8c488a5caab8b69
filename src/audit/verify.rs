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
    /// Records after the last checkpoint: no signature covers them yet (a live log's
    /// current group, or a tail someone could have rewritten after a crash). 0 when the log
    /// ends with a checkpoint.
    pub uncovered: u64,
    /// What the signatures were checked against: `"pinned"` (the keys given with
    /// `--pubkey`) or `"checked against the key the log names, not pinned"` (without
    /// `--pubkey`: every checkpoint and retention record must be signed by the first key the
    /// log names, which proves consistency, not who signed).
    pub signatures: &'static str,
    /// The key that signed the log's checkpoints and retention records (hex).
    pub signing_key: Option<String>,
    /// The first failure, if any.
    pub first_failure: Option<Failure>,
    /// What was verified of each segment, for the server's retention (not reported).
    #[serde(skip)]
    pub(super) segments: Vec<SegmentFacts>,
}

/// What a verification (or the writer, as it closes a segment) established about a segment:
/// retention decides from these, never from the files, which the host can change after they
/// were verified.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct SegmentFacts {
    pub segment: u64,
    /// Its last record: sequence number, chain hash (hex) and time.
    pub last_seq: u64,
    pub last_hash: String,
    pub last_ts_ms: u64,
    /// Its records (lines), and its length, newlines included.
    pub records: u64,
    pub bytes: u64,
}

/// [`VerifyReport::signatures`] when keys were given.
pub const PINNED: &str = "pinned";
/// [`VerifyReport::signatures`] without keys.
pub const NOT_PINNED: &str = "checked against the key the log names, not pinned";

impl VerifyReport {
    /// Whether the whole log verified.
    pub fn is_ok(&self) -> bool {
        self.first_failure.is_none()
    }
}

/// Verifies every segment in `dir`. With `trusted` keys (raw Ed25519 public keys), every
/// checkpoint and retention record must be signed by one of them. Without, every one must be
/// signed by the first key the log names (a deployment's checkpoint key is stable), which a
/// forger who rewrites the whole log can choose: only `trusted` keys say who signed.
pub fn verify_dir(dir: &Path, trusted: &[[u8; 32]]) -> VerifyReport {
    verify_range(dir, trusted, None, None)
}

/// [`verify_dir`] over the segments from `from` to `until` (inclusive; `None`: the first, the
/// last). Starting after the first segment, the first record's link to the one before it is
/// taken as found: the caller verifies the segments before it separately (the server's
/// background check) and so the link (the ranges overlap by one segment).
pub(super) fn verify_range(
    dir: &Path,
    trusted: &[[u8; 32]],
    from: Option<u64>,
    until: Option<u64>,
) -> VerifyReport {
    let mut report = VerifyReport {
        signatures: if trusted.is_empty() {
            NOT_PINNED
        } else {
            PINNED
        },
        ..VerifyReport::default()
    };
    let mut named: Option<[u8; 32]> = None;
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
    let first_of_all = segs.first().copied();
    let segs: Vec<u64> = segs
        .into_iter()
        .filter(|&n| from.is_none_or(|f| n >= f) && until.is_none_or(|u| n <= u))
        .collect();
    let mid_log = matches!((from, first_of_all), (Some(f), Some(first)) if f > first);
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
            if !mid_log {
                anchor = Some((r.seq, r.prev, path.display().to_string()));
            }
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
        let (mut records, mut bytes, mut last) = (0u64, 0u64, None);
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
            if let Err(problem) = check(&record, &prev, expected_seq, trusted, &mut named) {
                report.first_failure = Some(fail(lineno, problem));
                return report;
            }
            if matches!(record.event, Event::Checkpoint { .. }) {
                report.checkpoints += 1;
                report.uncovered = 0;
            } else {
                report.uncovered += 1;
            }
            if report.signing_key.is_none() {
                report.signing_key = named.map(hex::encode);
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
            records += 1;
            bytes += text.len() as u64 + 1;
            last = Some((record.seq, record.ts_ms));
            prev = record.hash;
            expected_seq += 1;
            report.records += 1;
            report.head = Some(prev.clone());
            report.last_seq = record.seq;
        }
        if let Some((last_seq, last_ts_ms)) = last {
            report.segments.push(SegmentFacts {
                segment: *n,
                last_seq,
                last_hash: prev.clone(),
                last_ts_ms,
                records,
                bytes,
            });
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

/// The key of a signed record: one of `trusted`, or else the first key the log named.
fn signer(
    what: &str,
    public_key: &str,
    trusted: &[[u8; 32]],
    named: &mut Option<[u8; 32]>,
) -> Result<VerifyingKey, String> {
    let mut pk = [0u8; 32];
    hex::decode_to_slice(public_key, &mut pk)
        .map_err(|_| format!("{what} key is not 32 hex bytes"))?;
    if !trusted.is_empty() && !trusted.contains(&pk) {
        return Err(format!("{what} signed by untrusted key {public_key}"));
    }
    match named {
        Some(first) if *first != pk && trusted.is_empty() => {
            return Err(format!(
                "{what} signed by key {public_key}, while the log's earlier signatures are by \
                 {} (a deployment's checkpoint key does not change)",
                hex::encode(*first)
            ));
        }
        Some(_) => {}
        None => *named = Some(pk),
    }
    VerifyingKey::from_bytes(&pk).map_err(|_| format!("{what} key is invalid"))
}

fn check(
    r: &Record,
    prev: &str,
    expected_seq: u64,
    trusted: &[[u8; 32]],
    named: &mut Option<[u8; 32]>,
) -> Result<(), String> {
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
        let key = signer("checkpoint", public_key, trusted, named)?;
        let mut sig = [0u8; 64];
        hex::decode_to_slice(signature, &mut sig)
            .map_err(|_| "checkpoint signature is not 64 hex bytes")?;
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
        let key = signer("retention record", public_key, trusted, named)?;
        let mut sig = [0u8; 64];
        hex::decode_to_slice(signature, &mut sig)
            .map_err(|_| "retention signature is not 64 hex bytes")?;
        key.verify_strict(
            &super::retention_message(*first_kept_seq, first_kept_prev, *removed_through_segment),
            &Signature::from_bytes(&sig),
        )
        .map_err(|_| "retention signature does not verify")?;
    }
    Ok(())
}

/// Why [`export_dir`] stopped.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ExportError {
    /// The chain does not verify: nothing is exported from a damaged log.
    #[error("audit log broken at {} line {}: {}", .0.segment, .0.line, .0.problem)]
    Broken(Failure),
    /// A segment could not be read.
    #[error("{path}: {source}")]
    Io {
        /// The segment.
        path: String,
        /// Why.
        source: std::io::Error,
    },
    /// A sealed event does not open.
    #[error("{path} record {seq}: {source}")]
    Open {
        /// The segment.
        path: String,
        /// The record.
        seq: u64,
        /// Why.
        source: super::seal::OpenError,
    },
    /// The output could not be written.
    #[error("writing the export: {0}")]
    Write(std::io::Error),
}

/// Verifies `dir` (against `trusted`, as [`verify_dir`]) and then writes every record to
/// `out` as one JSON line, each sealed event replaced by its plaintext. Returns the report.
pub fn export_dir(
    dir: &Path,
    trusted: &[[u8; 32]],
    opener: &mut super::seal::Opener,
    out: &mut dyn std::io::Write,
) -> Result<VerifyReport, ExportError> {
    let report = verify_dir(dir, trusted);
    if let Some(f) = report.first_failure {
        return Err(ExportError::Broken(f));
    }
    let segs = segments(dir).map_err(|e| ExportError::Io {
        path: dir.display().to_string(),
        source: std::io::Error::other(e.to_string()),
    })?;
    for n in segs {
        let path = segment_path(dir, n);
        let io = |source| ExportError::Io {
            path: path.display().to_string(),
            source,
        };
        let file = std::fs::File::open(&path).map_err(io)?;
        for line in std::io::BufReader::new(file).lines() {
            let line = line.map_err(io)?;
            let mut record: Record = serde_json::from_str(&line)
                .map_err(|e| io(std::io::Error::new(std::io::ErrorKind::InvalidData, e)))?;
            if let Event::Sealed {
                ciphertext,
                key_salt,
            } = &record.event
            {
                record.event = opener
                    .open(record.seq, key_salt, ciphertext)
                    .map_err(|source| ExportError::Open {
                        path: path.display().to_string(),
                        seq: record.seq,
                        source,
                    })?;
            }
            serde_json::to_writer(&mut *out, &record)
                .map_err(|e| ExportError::Write(std::io::Error::other(e)))?;
            out.write_all(b"\n").map_err(ExportError::Write)?;
        }
    }
    Ok(report)
}
