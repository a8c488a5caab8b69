//! Records into the segment file: chaining and sealing each record, writing to the kernel,
//! fsyncing (in two halves when the writer's lock is released meanwhile), and cutting the
//! file back when a write or fsync fails.

use std::io::{Seek, SeekFrom, Write};

use ed25519_dalek::{Signer, SigningKey};

use super::*;
use std::sync::atomic::Ordering;

/// How soon a group that failed to reach disk is retried.
pub(super) const RETRY_EVERY: Duration = Duration::from_millis(200);

/// How a record is written.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) enum Kind {
    /// An event, encrypted (see [`super::seal`]).
    Sealed,
    /// A retention record, in clear: an auditor checks its signature.
    Retention,
    /// A checkpoint, in clear.
    Checkpoint,
}

/// Appends the record of one event (its canonical JSON object) to `buf`, chained to the head;
/// a `Kind::Sealed` event is encrypted first, here in the writer thread.
pub(super) fn push(st: &mut State, buf: &mut Vec<u8>, event_json: &[u8], kind: Kind) {
    // A segment's records go to its own file: rotate only once what precedes is on disk
    // (until then the current segment grows past its size).
    if st.in_segment >= st.segment_records && flush(st, buf) {
        // What retention will know of the segment closed here: what was written into it.
        st.closed.insert(
            st.segment,
            verify::SegmentFacts {
                segment: st.segment,
                last_seq: st.seq,
                last_hash: st.head.clone(),
                last_ts_ms: st.last_ts_ms,
                records: st.in_segment,
                bytes: st.segment_bytes,
            },
        );
        st.segment += 1;
        st.in_segment = 0;
        st.segment_bytes = 0;
        let path = segment_path(&st.dir, st.segment);
        match open_segment(&path) {
            Ok(f) => {
                st.synced_len = f.metadata().map_or(0, |m| m.len());
                st.segment_bytes = st.synced_len;
                st.file = f;
            }
            Err(e) => {
                tracing::error!(error = %e, "audit log: cannot open a new segment");
                // The next flush opens it or fails (and marks the log unwritable): the
                // records are never written to the previous segment's file.
                st.reopen = true;
            }
        }
    }
    st.seq += 1;
    let ts_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64);
    let start = buf.len();
    let (hash, raw) = if kind == Kind::Sealed {
        st.sealed.clear();
        st.sealer.seal(st.seq, event_json, &mut st.sealed);
        write_record(buf, &mut st.tail, st.seq, ts_ms, &st.head, &st.sealed)
    } else {
        write_record(buf, &mut st.tail, st.seq, ts_ms, &st.head, event_json)
    };
    // The hex digits are ASCII; the head keeps its allocation from record to record.
    st.head.clear();
    st.head.extend(hash.iter().map(|&b| char::from(b)));
    st.head_raw = raw;
    st.last_ts_ms = ts_ms;
    buf.push(b'\n');
    st.segment_bytes += (buf.len() - start) as u64;
    st.in_segment += 1;
    if kind == Kind::Checkpoint {
        st.since_checkpoint = 0;
        st.last_checkpoint = std::time::Instant::now();
        st.unflushed_checkpoint = Some(Checkpointed {
            seq: st.seq,
            head: st.head.clone(),
        });
    } else {
        st.since_checkpoint += 1;
    }
}

/// [`push`] for an event the writer makes itself (checkpoints, retention records).
pub(super) fn push_event(st: &mut State, buf: &mut Vec<u8>, event: &Event) {
    match event_json(event) {
        Ok(json) => {
            let kind = match event {
                Event::Checkpoint { .. } => Kind::Checkpoint,
                Event::Retention { .. } => Kind::Retention,
                _ => Kind::Sealed,
            };
            push(st, buf, &json, kind);
        }
        Err(e) => tracing::error!(error = %e, "an audit event was lost"),
    }
}

pub(super) fn push_checkpoint(st: &mut State, buf: &mut Vec<u8>, signing: &SigningKey) {
    // The checkpoint signs the head as of the record before it, at its own seq.
    let seq = st.seq + 1;
    let head = st.head.clone();
    let signature = hex::encode(signing.sign(&checkpoint_message(seq, &head)).to_bytes());
    let event = Event::Checkpoint {
        head,
        public_key: hex::encode(signing.verifying_key().as_bytes()),
        signature,
    };
    push_event(st, buf, &event);
}

/// Writes and fsyncs `buf`. On success it is cleared and the log is writable; on failure
/// whatever part reached the file since the last fsync is cut off again, `buf` is kept for
/// the retry, the segment will be reopened, and the log is unwritable until a retry
/// succeeds. Returns whether the group is on disk.
pub(super) fn flush(st: &mut State, buf: &mut Vec<u8>) -> bool {
    write_pending(st, buf) && sync_pending(st, buf)
}

/// Writes the part of `buf` not yet written (to the kernel: it survives a crash of the
/// process). On failure, see [`flush`].
pub(super) fn write_pending(st: &mut State, buf: &[u8]) -> bool {
    if st.written >= buf.len() {
        return true;
    }
    let r = (|| {
        if st.reopen {
            let path = segment_path(&st.dir, st.segment);
            st.file = OpenOptions::new().create(true).append(true).open(&path)?;
            st.reopen = false;
            st.synced_len = st.file.seek(SeekFrom::End(0))?;
        }
        st.file.write_all(&buf[st.written..])
    })();
    match r {
        Ok(()) => {
            st.written = buf.len();
            true
        }
        Err(e) => {
            failed(st, &e);
            false
        }
    }
}

/// Fsyncs what [`write_pending`] wrote; on success `buf` is cleared, the log is writable,
/// and a checkpoint in it is published. On failure, see [`flush`].
pub(super) fn sync_pending(st: &mut State, buf: &mut Vec<u8>) -> bool {
    let Some(ticket) = begin_sync(st, buf) else {
        return true;
    };
    let result = ticket.sync();
    end_sync(st, buf, ticket, result)
}

/// What an fsync covers: the first `len` bytes of the writer's buffer, all written when it
/// began, the journal's mark and the checkpoint among them.
pub(super) struct SyncTicket {
    /// The segment's file, a handle of its own, so that the fsync needs no lock.
    file: std::io::Result<File>,
    len: usize,
    mark: journal::Mark,
    checkpoint: Option<Checkpointed>,
    /// [`State::cuts`] when it began: a cut meanwhile undoes what it covers.
    cuts: u64,
}

impl SyncTicket {
    pub(super) fn sync(&self) -> std::io::Result<()> {
        match &self.file {
            Ok(file) => file.sync_data(),
            Err(e) => Err(std::io::Error::new(e.kind(), e.to_string())),
        }
    }
}

/// Begins an fsync of what is written (all of `buf`: the caller's write succeeded); `None`
/// when nothing is.
pub(super) fn begin_sync(st: &mut State, buf: &[u8]) -> Option<SyncTicket> {
    if buf.is_empty() {
        return None;
    }
    debug_assert_eq!(
        st.written,
        buf.len(),
        "an fsync covers only what is written"
    );
    Some(SyncTicket {
        file: st.file.try_clone(),
        len: buf.len(),
        mark: super::journal::Mark {
            q: st.pushed_q,
            seq: st.seq,
            tail: st.journal_tail,
        },
        checkpoint: st.unflushed_checkpoint.take(),
        cuts: st.cuts,
    })
}

/// Ends an fsync: on success what it covered leaves `buf` (what was written since stays),
/// the log is writable, and its checkpoint is published; on failure, or if the file was cut
/// back meanwhile, see [`flush`].
pub(super) fn end_sync(
    st: &mut State,
    buf: &mut Vec<u8>,
    ticket: SyncTicket,
    result: std::io::Result<()>,
) -> bool {
    let cut = st.cuts != ticket.cuts;
    match result {
        Ok(()) if !cut => {
            st.synced_len += ticket.len as u64;
            buf.drain(..ticket.len);
            st.written = st.written.saturating_sub(ticket.len);
            st.synced_mark = Some(ticket.mark);
            st.last_sync = std::time::Instant::now();
            if let Some(c) = ticket.checkpoint {
                st.checkpointed.send_replace(Some(c));
            }
            if !st.writable.swap(true, Ordering::AcqRel) {
                tracing::warn!("the audit log is writable again; requests are served");
            }
            true
        }
        result => {
            // The checkpoint goes out with the fsync that does keep it (unless a later one
            // is waiting already).
            if st.unflushed_checkpoint.is_none() {
                st.unflushed_checkpoint = ticket.checkpoint;
            }
            if let Err(e) = result
                && !cut
            {
                failed(st, &e);
            }
            false
        }
    }
}

/// A write or fsync failed: cut the file back to its last fsync (best effort; a torn group
/// is also cut when the log is next opened), write all of `buf` again at the retry, and
/// refuse requests until then.
pub(super) fn failed(st: &mut State, e: &std::io::Error) {
    let _ = st.file.set_len(st.synced_len);
    st.cuts += 1;
    st.written = 0;
    st.reopen = true;
    if st.writable.swap(false, Ordering::AcqRel) {
        tracing::error!(
            error = %e,
            "audit log write failed; requests are refused until it can be written"
        );
    }
}
