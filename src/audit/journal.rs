//! The journal: every queued event, sealed, in a memory-mapped file from the moment it is
//! queued. An answer leaves as soon as its event is journaled, without waiting for the
//! writer thread: the journal's pages belong to the kernel (the page cache) the moment they
//! are written, so a crash of the process (kill -9 included) cannot lose them, and the next
//! open replays into the log the journaled events that the log lacks.
//!
//! `<audit dir>/journal` (0600) is a 4 KiB header and then a ring of entries:
//!
//! - header: magic (8) ‖ salt (16) ‖ `chained_q` ‖ `chained_seq` ‖ `tail` (u64 LE each) ‖
//!   HMAC-SHA256 (32) of the bytes before it, under a key derived from the salt;
//! - entry: commit (u32 LE) ‖ length (u32 LE) ‖ q (u64 LE) ‖ ciphertext and tag (length
//!   bytes), padded to 8 bytes. A `WRAP` word where an entry would start means that the ring
//!   goes on at its start.
//!
//! Every queued event gets the next queue number `q` (from 1 at each open), journaled or not:
//! an event that the full ring cannot take is queued without an entry (an answer then waits
//! for its record as it would without a journal; see [`super::Durable`]). The writer writes
//! the events in `q` order; after each fsync it stores in the header the last `q` and the last
//! `seq` on disk and where the next entry starts (everything before it is free). At open, the
//! records after `chained_seq` that are sealed events are the next `k` events after
//! `chained_q`, in order, so the journaled events after `chained_q + k` are the ones the log
//! lacks, and they are replayed in order before anything else is written.
//!
//! Entries are AES-256-GCM under a key derived from the audit-records subkey and a salt drawn
//! at each open, with `q` as nonce and associated data: the host reads nothing, and an entry
//! that is changed does not open (the replay stops there, with an error). The header is
//! authenticated: the host can at most put back an older journal, whose counts only make `k`
//! larger, so that fewer events are replayed, never one that the log already holds. Deleting
//! the journal loses what it alone held: the records after the last freshness anchor, the
//! window of loss SECURITY.md states.

// Mapping a file is `unsafe` in memmap2 because another process could change the file while it
// is mapped; see the SAFETY note at the one call.
#![allow(unsafe_code)]

use std::fs::OpenOptions;
use std::path::{Path, PathBuf};

use hmac::{Hmac, KeyInit, Mac};
use ring::aead::{AES_256_GCM, Aad, LessSafeKey, Nonce, UnboundKey};
use sha2::Sha256;

use super::{AuditError, io_err};

/// The journal's file name in the audit directory.
pub const JOURNAL_FILE: &str = "journal";
/// The ring's default size (`[audit] journal_mib`): some 80,000 Predict events, seconds of
/// traffic at full speed, while only the events since the last fsync need to be in it.
pub const DEFAULT_JOURNAL_BYTES: usize = 32 << 20;
const HEADER: usize = 4096;
const MAGIC: &[u8; 8] = b"CFJRNL01";
const COMMIT: u32 = 0x4c4e_524a;
const WRAP: u32 = 0x5041_5257;
const ENTRY_HEAD: usize = 16;
const TAG: usize = 16;
const KEY_INFO: &[u8] = b"confidant.audit.journal-key.v1";
const MAC_INFO: &[u8] = b"confidant.audit.journal-header.v1";
const AAD_DOMAIN: &[u8] = b"confidant.audit.journal.v1\0";
/// Header fields: magic, salt, three counters; then the MAC.
const HEADER_SIGNED: usize = 8 + 16 + 24;

fn nonce(q: u64) -> Nonce {
    let mut n = [0u8; 12];
    n[4..].copy_from_slice(&q.to_be_bytes());
    Nonce::assume_unique_for_key(n)
}

fn aad(q: u64) -> [u8; AAD_DOMAIN.len() + 8] {
    let mut a = [0u8; AAD_DOMAIN.len() + 8];
    a[..AAD_DOMAIN.len()].copy_from_slice(AAD_DOMAIN);
    a[AAD_DOMAIN.len()..].copy_from_slice(&q.to_be_bytes());
    a
}

fn keys(records_key: &[u8; 32], salt: &[u8; 16]) -> (LessSafeKey, Hmac<Sha256>) {
    let k = crate::state::derive(records_key, salt, KEY_INFO);
    let m = crate::state::derive(records_key, salt, MAC_INFO);
    (
        // 32 bytes is AES-256's key length.
        LessSafeKey::new(
            UnboundKey::new(&AES_256_GCM, k.as_ref())
                .unwrap_or_else(|_| unreachable!("a 32-byte AES-256 key")),
        ),
        <Hmac<Sha256> as KeyInit>::new_from_slice(m.as_ref())
            .unwrap_or_else(|_| unreachable!("HMAC accepts keys of any length")),
    )
}

fn padded(len: usize) -> usize {
    (ENTRY_HEAD + len + TAG + 7) & !7
}

fn u64_at(b: &[u8], at: usize) -> Option<u64> {
    b.get(at..at + 8)
        .and_then(|s| s.try_into().ok())
        .map(u64::from_le_bytes)
}

fn u32_at(b: &[u8], at: usize) -> Option<u32> {
    b.get(at..at + 4)
        .and_then(|s| s.try_into().ok())
        .map(u32::from_le_bytes)
}

/// Where the log and the journal agree after an fsync: the events through `q` are on disk,
/// the last record on disk is `seq`, and the entries before ring offset `tail` are free.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Mark {
    pub q: u64,
    pub seq: u64,
    pub tail: usize,
}

/// The open journal: appended to under the queue's lock, its header moved on by the writer.
pub(super) struct Journal {
    map: memmap2::MmapMut,
    key: LessSafeKey,
    mac: Hmac<Sha256>,
    salt: [u8; 16],
    /// Where the next entry goes (ring offset).
    head: usize,
    /// The first entry not yet on disk in the log (ring offset); `head == tail`: empty.
    tail: usize,
    /// Scratch space: an entry is sealed here, then copied in, so that no plaintext is ever
    /// in a page of the file.
    scratch: Vec<u8>,
}

impl Journal {
    fn ring_len(&self) -> usize {
        self.map.len() - HEADER
    }

    /// Creates (or starts afresh) the journal of `dir` with `bytes` of ring: a new salt, a
    /// header that says the log holds everything through `seq`, and no entries.
    pub(super) fn create(
        dir: &Path,
        records_key: &[u8; 32],
        bytes: usize,
        seq: u64,
    ) -> Result<Self, AuditError> {
        use std::os::unix::fs::OpenOptionsExt;
        let path = dir.join(JOURNAL_FILE);
        let bytes = bytes.max(64 * 1024) & !7;
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .custom_flags(libc::O_NOFOLLOW)
            .open(&path)
            .map_err(io_err(&path))?;
        // A sparse file: the ring's pages are made as they are first written.
        file.set_len((HEADER + bytes) as u64)
            .map_err(io_err(&path))?;
        // SAFETY: the file is this process's own (0600, in the 0700 audit directory, opened
        // without following links and truncated just now); nothing else in this process maps
        // or writes it. Another process with the same rights could still change it while it
        // is mapped; the journal reads back nothing it wrote (entries are only read at the
        // next open, from the file, and authenticated there), so such a change can alter no
        // value this process relies on.
        let map = unsafe { memmap2::MmapMut::map_mut(&file) }.map_err(io_err(&path))?;
        let mut salt = [0u8; 16];
        getrandom::fill(&mut salt).map_err(|e| AuditError::Random(e.to_string()))?;
        let (key, mac) = keys(records_key, &salt);
        let mut j = Self {
            map,
            key,
            mac,
            salt,
            head: 0,
            tail: 0,
            scratch: Vec::with_capacity(1024),
        };
        j.store_header(Mark { q: 0, seq, tail: 0 });
        Ok(j)
    }

    fn store_header(&mut self, mark: Mark) {
        let mut h = [0u8; HEADER_SIGNED + 32];
        h[..8].copy_from_slice(MAGIC);
        h[8..24].copy_from_slice(&self.salt);
        h[24..32].copy_from_slice(&mark.q.to_le_bytes());
        h[32..40].copy_from_slice(&mark.seq.to_le_bytes());
        h[40..48].copy_from_slice(&(mark.tail as u64).to_le_bytes());
        let mut mac = self.mac.clone();
        mac.update(&h[..HEADER_SIGNED]);
        h[HEADER_SIGNED..].copy_from_slice(&mac.finalize().into_bytes());
        self.map[..h.len()].copy_from_slice(&h);
    }

    /// Journals event `q` (its plaintext), returning where the ring's next entry starts
    /// after it; `None` if the ring has no room (the event then goes unjournaled).
    pub(super) fn append(&mut self, q: u64, plaintext: &[u8]) -> Option<usize> {
        let size = padded(plaintext.len());
        let ring = self.ring_len();
        let len = u32::try_from(plaintext.len() + TAG).ok()?;
        let at = if self.head >= self.tail {
            if self.head + size < ring || (self.head + size == ring && self.tail > 0) {
                self.head
            } else if size < self.tail {
                // Wrap: mark the rest of the ring unused (when a word fits) and go to 0.
                if self.head + 4 <= ring {
                    let w = HEADER + self.head;
                    self.map[w..w + 4].copy_from_slice(&WRAP.to_le_bytes());
                }
                0
            } else {
                return None;
            }
        } else if self.head + size < self.tail {
            self.head
        } else {
            return None;
        };
        self.scratch.clear();
        self.scratch.extend_from_slice(plaintext);
        let tag = self
            .key
            .seal_in_place_separate_tag(nonce(q), Aad::from(aad(q)), &mut self.scratch)
            .unwrap_or_else(|_| unreachable!("an audit event below AES-GCM's length limit"));
        self.scratch.extend_from_slice(tag.as_ref());
        let base = HEADER + at;
        // Length and number, then the sealed body, then the commit word: an entry cut short
        // by a crash has an old word, or an old number, or does not open.
        self.map[base + 4..base + 8].copy_from_slice(&len.to_le_bytes());
        self.map[base + 8..base + 16].copy_from_slice(&q.to_le_bytes());
        self.map[base + ENTRY_HEAD..base + ENTRY_HEAD + self.scratch.len()]
            .copy_from_slice(&self.scratch);
        std::sync::atomic::fence(std::sync::atomic::Ordering::Release);
        self.map[base..base + 4].copy_from_slice(&COMMIT.to_le_bytes());
        self.head = at + size;
        if self.head == ring {
            self.head = 0;
        }
        Some(self.head)
    }

    /// The writer's fsync covered the events through `mark.q`: their entries are free, and
    /// the header says so.
    pub(super) fn advance(&mut self, mark: Mark) {
        self.tail = mark.tail;
        self.store_header(mark);
    }
}

/// What the journal of a log holds that the log lacks: the events' plaintexts, in order.
pub(super) struct Replay {
    pub events: Vec<Vec<u8>>,
    /// Events that the journal skipped (queued while its ring was full) or that did not open:
    /// lost, and said so in the log.
    pub problem: Option<String>,
}

/// Reads `dir`'s journal (if any) and returns the events it holds that the log lacks.
/// `sealed_after(seq)` counts the sealed-event records the log holds after `seq`.
pub(super) fn replay(
    dir: &Path,
    records_key: &[u8; 32],
    sealed_after: impl FnOnce(u64) -> Result<u64, AuditError>,
) -> Result<Replay, AuditError> {
    let path: PathBuf = dir.join(JOURNAL_FILE);
    let bytes = match std::fs::read(&path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Ok(Replay {
                events: Vec::new(),
                problem: None,
            });
        }
        Err(e) => return Err(io_err(&path)(e)),
    };
    let none = |problem: &str| {
        Ok(Replay {
            events: Vec::new(),
            problem: (!problem.is_empty()).then(|| problem.to_string()),
        })
    };
    if bytes.len() <= HEADER || bytes.get(..8) != Some(&MAGIC[..]) {
        return none("the journal has no valid header; nothing was replayed");
    }
    let mut salt = [0u8; 16];
    salt.copy_from_slice(&bytes[8..24]);
    let (key, mut mac) = keys(records_key, &salt);
    mac.update(&bytes[..HEADER_SIGNED]);
    if mac
        .verify_slice(&bytes[HEADER_SIGNED..HEADER_SIGNED + 32])
        .is_err()
    {
        return none(
            "the journal's header does not verify (changed, or written under another state \
             key); nothing was replayed",
        );
    }
    let (Some(chained_q), Some(chained_seq), Some(tail)) =
        (u64_at(&bytes, 24), u64_at(&bytes, 32), u64_at(&bytes, 40))
    else {
        return none("the journal's header is short");
    };
    let ring = &bytes[HEADER..];
    let Ok(mut at) = usize::try_from(tail) else {
        return none("the journal's tail is out of range");
    };
    if at >= ring.len() {
        return none("the journal's tail is out of range");
    }
    // The log is read only if the journal holds an entry past the header's mark (after a
    // clean stop it holds none, and a start reads no segment for it).
    let mut sealed_after = Some(sealed_after);
    let mut have = chained_q;
    let mut events = Vec::new();
    let mut expected = chained_q + 1;
    let mut problem = None;
    let mut walked = 0usize;
    loop {
        match u32_at(ring, at) {
            Some(WRAP) => {
                walked += ring.len() - at;
                at = 0;
                continue;
            }
            Some(COMMIT) => {}
            // The end of the journal (or of the ring: its rest is unused).
            None => {
                walked += ring.len() - at;
                at = 0;
                if walked >= ring.len() {
                    break;
                }
                continue;
            }
            Some(_) => break,
        }
        let (Some(len), Some(q)) = (u32_at(ring, at + 4), u64_at(ring, at + 8)) else {
            break;
        };
        let len = len as usize;
        let size = padded(len.saturating_sub(TAG));
        // An entry of an earlier lap, or of an earlier opening: the journal ends here.
        if q < expected || len < TAG || at + ENTRY_HEAD + len > ring.len() {
            break;
        }
        if q > have
            && let Some(count) = sealed_after.take()
        {
            have = chained_q.saturating_add(count(chained_seq)?);
        }
        if q > have {
            let mut body = ring[at + ENTRY_HEAD..at + ENTRY_HEAD + len].to_vec();
            match key.open_in_place(nonce(q), Aad::from(aad(q)), &mut body) {
                Ok(plain) => {
                    if q != expected.max(have + 1) && problem.is_none() {
                        problem = Some(format!(
                            "events {}..{} were queued while the journal was full and are \
                             not in it",
                            expected.max(have + 1),
                            q - 1
                        ));
                    }
                    let n = plain.len();
                    body.truncate(n);
                    events.push(body);
                }
                Err(_) => {
                    problem = Some(format!(
                        "journal entry {q} does not open (changed, or cut short); the replay \
                         stops there"
                    ));
                    break;
                }
            }
        }
        expected = q + 1;
        walked += size;
        at += size;
        if at >= ring.len() {
            at = 0;
        }
        if walked >= ring.len() {
            break;
        }
    }
    Ok(Replay { events, problem })
}
