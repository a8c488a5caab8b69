//! Segment files: naming, listing, recovery of the chain at start (a torn last line is cut),
//! and age-based retention behind a signed retention record.

use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};

use ed25519_dalek::{Signer, SigningKey};

use super::*;
use verify::SegmentFacts;

/// The path of segment `n`.
pub fn segment_path(dir: &Path, n: u64) -> PathBuf {
    dir.join(format!("segment-{n:06}.jsonl"))
}

/// The segment numbers present in `dir`, ascending.
pub fn segments(dir: &Path) -> Result<Vec<u64>, AuditError> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(io_err(dir))? {
        let entry = entry.map_err(io_err(dir))?;
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if let Some(n) = name
            .strip_prefix("segment-")
            .and_then(|s| s.strip_suffix(".jsonl"))
            .and_then(|s| s.parse::<u64>().ok())
        {
            out.push(n);
        }
    }
    out.sort_unstable();
    Ok(out)
}

/// What [`recover`] found.
pub(super) struct Recovered {
    /// The segment to append to.
    pub segment: u64,
    /// The last record's sequence number.
    pub seq: u64,
    /// The last record's hash.
    pub head: String,
    /// Records in the last segment.
    pub in_segment: u64,
    /// Records after the last checkpoint.
    pub uncovered: u64,
    /// The segments up to this one are left to the background check (`None`: the whole log
    /// was verified here).
    pub verify_until: Option<u64>,
    /// What was verified here of each segment (the last one's included).
    pub facts: Vec<SegmentFacts>,
}

/// Cuts a torn last line and verifies the tail of the chain (the last two segments, every
/// signature by `key`): a start reads two segments, not the whole log. The segments before
/// are left to a background check ([`Recovered::verify_until`]).
pub(super) fn recover(dir: &Path, key: &[u8; 32]) -> Result<Recovered, AuditError> {
    let zero = "0".repeat(64);
    let segs = segments(dir)?;
    let Some(&last) = segs.last() else {
        return Ok(Recovered {
            segment: 1,
            seq: 0,
            head: zero,
            in_segment: 0,
            uncovered: 0,
            verify_until: None,
            facts: Vec::new(),
        });
    };
    // Cut a torn final line: anything after the last newline of the last segment.
    let path = segment_path(dir, last);
    let bytes = std::fs::read(&path).map_err(io_err(&path))?;
    let keep = bytes.iter().rposition(|b| *b == b'\n').map_or(0, |i| i + 1);
    if keep < bytes.len() {
        tracing::warn!(
            segment = %path.display(),
            bytes = bytes.len() - keep,
            "audit log: cutting a torn final line left by a crash"
        );
        let f = OpenOptions::new()
            .write(true)
            .open(&path)
            .map_err(io_err(&path))?;
        f.set_len(keep as u64).map_err(io_err(&path))?;
        f.sync_all().map_err(io_err(&path))?;
    }
    let tail_from = segs
        .len()
        .checked_sub(2)
        .and_then(|i| segs.get(i))
        .copied()
        .unwrap_or(last);
    let whole = segs.first() == Some(&tail_from);
    let report = if whole {
        verify_dir(dir, &[*key])
    } else {
        verify::verify_range(dir, &[*key], Some(tail_from), None)
    };
    if let Some(fail) = report.first_failure {
        if fail.problem.contains("untrusted key") {
            return Err(AuditError::ForeignKey {
                path: fail.segment,
                expected: hex::encode(key),
                problem: fail.problem,
            });
        }
        return Err(AuditError::Damaged {
            path: fail.segment,
            line: fail.line,
            problem: fail.problem,
        });
    }
    // The last segment's records, as its verification counted them (none: it is empty).
    let in_segment = report
        .segments
        .iter()
        .find(|f| f.segment == last)
        .map_or(0, |f| f.records);
    Ok(Recovered {
        segment: last,
        seq: report.last_seq,
        head: report.head.unwrap_or(zero),
        in_segment,
        uncovered: report.uncovered,
        verify_until: (!whole).then_some(tail_from),
        facts: report.segments,
    })
}

/// The background check of the segments a start did not verify: the chain and signatures
/// of every segment up to `until` (which the start verified too, so the two overlap).
pub(super) fn verify_before_tail(
    dir: &Path,
    key: &[u8; 32],
    until: u64,
) -> Result<Vec<SegmentFacts>, String> {
    let report = verify::verify_range(dir, &[*key], None, Some(until));
    match report.first_failure {
        None => Ok(report.segments),
        Some(f) => Err(format!(
            "audit log damaged at {} line {}: {}",
            f.segment, f.line, f.problem
        )),
    }
}

/// Deletes the oldest segments whose newest record is older than `retention`, and then the
/// oldest while the log is larger than `max_bytes` (never the current segment), after a
/// durable, signed retention record vouches for where the chain now starts.
///
/// It decides from what this server verified of each segment, or wrote into it
/// ([`State::closed`]), never from the files: the host could otherwise backdate a record or
/// inflate a file, and have the server delete records early under its own signature.
pub(super) fn apply_retention(
    st: &mut State,
    buf: &mut Vec<u8>,
    signing: &SigningKey,
    retention: Option<Duration>,
    max_bytes: Option<u64>,
) -> Result<(), AuditError> {
    // The background check's findings, once it has passed (retention waits for it).
    let verified = std::mem::take(
        &mut *st
            .verified_earlier
            .lock()
            .unwrap_or_else(|p| p.into_inner()),
    );
    for f in verified {
        if f.segment < st.segment {
            st.closed.entry(f.segment).or_insert(f);
        }
    }
    let cutoff = retention.map(|r| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64)
            .saturating_sub(r.as_millis() as u64)
    });
    // Deletions start at the oldest segment on disk, or not at all: one this server knows
    // nothing of would be left before a gap (the host can only hold retention back this way).
    let oldest_on_disk = segments(&st.dir)?.first().copied();
    if oldest_on_disk.is_some_and(|n| n < st.segment)
        && oldest_on_disk != st.closed.keys().next().copied()
    {
        tracing::warn!(
            oldest = oldest_on_disk,
            "audit retention: the oldest segment was neither verified nor written by this \
             server; nothing is deleted"
        );
        return Ok(());
    }
    let mut total: u64 = st.closed.values().map(|f| f.bytes).sum::<u64>() + st.segment_bytes;
    let mut removable: Vec<u64> = Vec::new();
    for (&n, f) in st.closed.range(..st.segment) {
        // Only a run of consecutive segments from the oldest.
        if removable.last().is_some_and(|&last| n != last + 1) {
            break;
        }
        let too_big = max_bytes.is_some_and(|cap| total > cap);
        let too_old = cutoff.is_some_and(|cutoff| f.last_ts_ms < cutoff);
        if too_big || too_old {
            removable.push(n);
            total -= f.bytes;
        } else {
            break;
        }
    }
    let Some(&through) = removable.last() else {
        return Ok(());
    };
    // The chain goes on with the next segment's first record: the one after the last
    // removed, linked to its hash. The next segment holds one (a segment is opened for the
    // record that goes into it).
    if through + 1 == st.segment && st.in_segment == 0 {
        return Ok(());
    }
    let (first_kept_seq, first_kept_prev) = {
        let f = &st.closed[&through];
        (f.last_seq + 1, f.last_hash.clone())
    };
    let signature = hex::encode(
        signing
            .sign(&retention_message(
                first_kept_seq,
                &first_kept_prev,
                through,
            ))
            .to_bytes(),
    );
    push_event(
        st,
        buf,
        &Event::Retention {
            removed_through_segment: through,
            first_kept_seq,
            first_kept_prev,
            public_key: hex::encode(signing.verifying_key().as_bytes()),
            signature,
        },
    );
    if !flush(st, buf) {
        // Nothing is deleted unless the record that vouches for the deletion is on disk.
        let path = segment_path(&st.dir, st.segment);
        return Err(AuditError::Io {
            path: path.display().to_string(),
            source: std::io::Error::other("the retention record could not be written"),
        });
    }
    for n in removable {
        let path = segment_path(&st.dir, n);
        std::fs::remove_file(&path).map_err(io_err(&path))?;
        st.closed.remove(&n);
    }
    tracing::info!(
        through_segment = through,
        "audit retention: expired segments deleted"
    );
    Ok(())
}

/// Record `seq`, if the log holds it: found in the last segment whose first record is at or
/// before it (one segment is read, not the whole log).
pub fn record_at(dir: &Path, seq: u64) -> Result<Option<Record>, AuditError> {
    if seq == 0 {
        return Ok(None);
    }
    let mut candidate = None;
    for n in segments(dir)? {
        match first_record(&segment_path(dir, n))? {
            Some(first) if first.seq <= seq => candidate = Some((n, first.seq)),
            Some(_) => break,
            None => {}
        }
    }
    let Some((n, first_seq)) = candidate else {
        return Ok(None);
    };
    // A segment's records are consecutive: record `seq` is line `seq - first_seq`; only that
    // line is parsed (and checked).
    let path = segment_path(dir, n);
    let f = File::open(&path).map_err(io_err(&path))?;
    let index = (seq - first_seq) as usize;
    match BufReader::new(f).lines().nth(index) {
        Some(line) => {
            let line = line.map_err(io_err(&path))?;
            Ok(serde_json::from_str::<Record>(&line)
                .ok()
                .filter(|r| r.seq == seq))
        }
        None => Ok(None),
    }
}

/// How many sealed-event records the log holds after record `seq` (read from the newest
/// segments back; only the lines after `seq` are parsed).
pub(super) fn sealed_after(dir: &Path, seq: u64) -> Result<u64, AuditError> {
    let mut n = 0;
    for s in segments(dir)?.into_iter().rev() {
        let path = segment_path(dir, s);
        let bytes = std::fs::read(&path).map_err(io_err(&path))?;
        let mut lines = bytes.split(|b| *b == b'\n').filter(|l| !l.is_empty());
        let Some(first) = lines
            .next()
            .and_then(|l| serde_json::from_slice::<Record>(l).ok())
        else {
            continue;
        };
        // A segment's records are consecutive: those after `seq` are the lines from index
        // `seq + 1 - first.seq` on.
        let skip = (seq + 1).saturating_sub(first.seq);
        let count = |r: &Record| r.seq > seq && matches!(r.event, Event::Sealed { .. });
        if skip == 0 && count(&first) {
            n += 1;
        }
        for line in lines.skip(skip.saturating_sub(1) as usize) {
            if let Ok(r) = serde_json::from_slice::<Record>(line)
                && count(&r)
            {
                n += 1;
            }
        }
        if first.seq <= seq + 1 {
            break;
        }
    }
    Ok(n)
}

pub(super) fn first_record(path: &Path) -> Result<Option<Record>, AuditError> {
    let f = File::open(path).map_err(io_err(path))?;
    let line = BufReader::new(f)
        .lines()
        .next()
        .transpose()
        .map_err(io_err(path))?;
    Ok(line.and_then(|l| serde_json::from_str(&l).ok()))
}
