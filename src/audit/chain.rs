//! The hash chain's head, kept with the queue: each event is sealed, numbered, timed and
//! chained as it is queued, under the queue's lock, so the queue (and the journal) hold
//! finished records and the order of the appends is the order of the chain.
//!
//! Chaining at the append (rather than in the writer thread) is what lets an answer know its
//! record's place in the chain at once: a receipt states the record's sequence number and
//! chain hash, and is signed without waiting for the writer. A crash cannot change a record
//! once it is chained: the journal holds the finished line, and the replay writes it back
//! as it was (see [`super::journal`]).

use ed25519_dalek::{Signer, SigningKey};

use super::*;

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

/// The chain's head and what chaining a record needs.
pub(super) struct Chain {
    /// Encrypts each event body.
    sealer: seal::Sealer,
    /// Scratch space for one sealed event.
    sealed: Vec<u8>,
    /// Scratch space for the tail of one record's line (see [`write_record`]).
    tail: Vec<u8>,
    /// The last record's sequence number and chain hash (hex), and the time it states (ms
    /// since the Unix epoch).
    pub(super) seq: u64,
    pub(super) head: String,
    pub(super) last_ts_ms: u64,
    /// Records since the last checkpoint, and when that was.
    pub(super) since_checkpoint: u64,
    pub(super) last_checkpoint: std::time::Instant,
    /// A checkpoint follows every this many records.
    checkpoint_every: u64,
    /// Signs checkpoints.
    signing: SigningKey,
}

impl Chain {
    pub(super) fn new(
        sealer: seal::Sealer,
        seq: u64,
        head: String,
        checkpoint_every: u64,
        signing: SigningKey,
    ) -> Self {
        Self {
            sealer,
            sealed: Vec::with_capacity(1024),
            tail: Vec::with_capacity(256),
            seq,
            head,
            last_ts_ms: 0,
            since_checkpoint: 0,
            last_checkpoint: std::time::Instant::now(),
            checkpoint_every: checkpoint_every.max(1),
            signing,
        }
    }

    /// Appends the record of one event (its canonical JSON object) to `out` as one line,
    /// chained to the head; a `Kind::Sealed` event is encrypted first.
    pub(super) fn push(&mut self, out: &mut Vec<u8>, event_json: &[u8], kind: Kind) {
        self.seq += 1;
        let ts_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64);
        let hash = if kind == Kind::Sealed {
            self.sealed.clear();
            self.sealer.seal(self.seq, event_json, &mut self.sealed);
            write_record(
                out,
                &mut self.tail,
                self.seq,
                ts_ms,
                &self.head,
                &self.sealed,
            )
        } else {
            write_record(out, &mut self.tail, self.seq, ts_ms, &self.head, event_json)
        };
        // The hex digits are ASCII; the head keeps its allocation from record to record.
        self.head.clear();
        self.head.extend(hash.iter().map(|&b| char::from(b)));
        self.last_ts_ms = ts_ms;
        out.push(b'\n');
        if kind == Kind::Checkpoint {
            self.since_checkpoint = 0;
            self.last_checkpoint = std::time::Instant::now();
        } else {
            self.since_checkpoint += 1;
        }
    }

    /// Whether a checkpoint is due after the record just pushed.
    pub(super) fn checkpoint_due(&self) -> bool {
        self.since_checkpoint >= self.checkpoint_every
    }

    /// The JSON of a checkpoint record that signs the head, at the next sequence number.
    pub(super) fn checkpoint_json(&self) -> Vec<u8> {
        let seq = self.seq + 1;
        let signature = hex::encode(
            self.signing
                .sign(&checkpoint_message(seq, &self.head))
                .to_bytes(),
        );
        let event = Event::Checkpoint {
            head: self.head.clone(),
            public_key: hex::encode(self.signing.verifying_key().as_bytes()),
            signature,
        };
        event_json(&event).unwrap_or_default()
    }

    /// Checks that `line` (a record line without its newline) is the next record of this
    /// chain, and makes it the head: how the journal's finished records are replayed.
    pub(super) fn accept_line(&mut self, line: &[u8]) -> Result<(), String> {
        let r: Record = serde_json::from_slice(line).map_err(|e| format!("not a record ({e})"))?;
        if r.seq != self.seq + 1 {
            return Err(format!(
                "record {} where record {} was due",
                r.seq,
                self.seq + 1
            ));
        }
        if r.prev != self.head {
            return Err(format!("record {} does not chain to the log's head", r.seq));
        }
        if r.compute_hash() != r.hash {
            return Err(format!("record {} has a wrong hash", r.seq));
        }
        self.seq = r.seq;
        self.head = r.hash;
        self.last_ts_ms = r.ts_ms;
        if matches!(r.event, Event::Checkpoint { .. }) {
            self.since_checkpoint = 0;
        } else {
            self.since_checkpoint += 1;
        }
        Ok(())
    }
}
