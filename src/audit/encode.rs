//! The canonical JSON of a record, written piece by piece on the hot path: the same bytes as
//! [`crate::canonical::to_vec`] (a test checks every kind of event), with no value tree, no key
//! sort and no copy of the event to hash it.

use sha2::Digest;

use super::*;

/// Appends the line of a record (its canonical JSON, see [`crate::canonical`], without the
/// newline) around an event object already in canonical form, and returns its chain hash
/// (as the line writes it, in hex, and its 32 bytes).
/// `tail` is scratch space. No `serde_json::Value` tree, no key sort, and the event is not
/// copied to be hashed: the hash runs over the pieces of the body (the record with an empty
/// `hash`, which sorts right after `event`), and the line is the same pieces with the hash
/// in place. A test checks the line against `canonical::to_vec` for every kind of event.
pub(super) fn write_record(
    buf: &mut Vec<u8>,
    tail: &mut Vec<u8>,
    seq: u64,
    ts_ms: u64,
    prev: &str,
    event_json: &[u8],
) -> ([u8; 64], [u8; 32]) {
    const OPEN: &[u8] = b"{\"event\":";
    tail.clear();
    let at = write_body_tail(tail, seq, ts_ms, prev);
    let mut h = chain_hasher(prev);
    h.update(OPEN);
    h.update(event_json);
    h.update(&tail[..]);
    let raw: [u8; 32] = h.finalize().into();
    let hash = hex32(&raw);
    buf.reserve(OPEN.len() + event_json.len() + tail.len() + hash.len());
    buf.extend_from_slice(OPEN);
    buf.extend_from_slice(event_json);
    buf.extend_from_slice(&tail[..at]);
    buf.extend_from_slice(&hash);
    buf.extend_from_slice(&tail[at..]);
    (hash, raw)
}

/// The canonical JSON object of a Predict event: keys in byte order, as
/// `canonical::to_vec` sorts them.
pub(super) fn write_predict_event(out: &mut Vec<u8>, e: &PredictEvent<'_>) {
    out.extend_from_slice(b"{\"decision\":");
    json_str(out, e.decision);
    out.extend_from_slice(b",\"epsilon\":");
    json_f64(out, e.epsilon);
    if !e.flagged_rows.is_empty() {
        out.extend_from_slice(b",\"flagged_rows\":");
        json_u32s(out, e.flagged_rows);
    }
    out.extend_from_slice(b",\"input_hmac\":");
    json_opt_str(out, e.input_hmac);
    out.extend_from_slice(b",\"kind\":\"predict\",\"latency_us\":");
    json_u64(out, e.latency_us);
    out.extend_from_slice(b",\"model\":");
    json_str(out, e.model);
    out.extend_from_slice(b",\"output_argmax\":");
    json_u32s(out, e.output_argmax);
    out.extend_from_slice(b",\"principal\":");
    json_str(out, e.principal);
    out.extend_from_slice(b",\"purpose\":");
    json_opt_str(out, e.purpose);
    out.extend_from_slice(b",\"reason\":");
    json_str(out, e.reason);
    out.extend_from_slice(b",\"request_id\":");
    json_str(out, e.request_id);
    out.extend_from_slice(b",\"rows\":");
    json_u64(out, e.rows);
    if let Some(rpc) = e.rpc {
        out.extend_from_slice(b",\"rpc\":");
        json_str(out, rpc);
    }
    out.extend_from_slice(b",\"subject\":");
    json_opt_str(out, e.subject);
    out.push(b'}');
}

/// The rest of a canonical record body after its event object (`"hash"` empty); returns
/// where the hash belongs (between the quotes of `"hash":""`).
pub(super) fn write_body_tail(out: &mut Vec<u8>, seq: u64, ts_ms: u64, prev: &str) -> usize {
    out.extend_from_slice(b",\"hash\":\"");
    let at = out.len();
    out.extend_from_slice(b"\",\"prev\":");
    json_str(out, prev);
    out.extend_from_slice(b",\"seq\":");
    json_u64(out, seq);
    out.extend_from_slice(b",\"ts_ms\":");
    json_u64(out, ts_ms);
    out.push(b'}');
    at
}

// The scalars are written by serde_json itself, so escaping and number formatting are the
// ones `canonical::to_vec` uses. Writing to a `Vec` cannot fail.
pub(super) fn json_str(out: &mut Vec<u8>, s: &str) {
    // Most fields (ids, hex digests, names) need no escape: copy them between quotes, which
    // is byte for byte what serde_json writes for them. Anything else goes through serde_json.
    // A fold with no early exit, so that the scan compiles to vector compares.
    let plain = !s.bytes().fold(false, |special, b| {
        special | (b < 0x20) | (b == b'"') | (b == b'\\') | (b == 0x7f)
    });
    if plain {
        out.reserve(s.len() + 2);
        out.push(b'"');
        out.extend_from_slice(s.as_bytes());
        out.push(b'"');
    } else {
        let _ = serde_json::to_writer(&mut *out, s);
    }
}

pub(super) fn json_opt_str(out: &mut Vec<u8>, s: Option<&str>) {
    match s {
        Some(s) => json_str(out, s),
        None => out.extend_from_slice(b"null"),
    }
}

pub(super) fn json_u64(out: &mut Vec<u8>, n: u64) {
    let _ = serde_json::to_writer(&mut *out, &n);
}

pub(super) fn json_f64(out: &mut Vec<u8>, x: f64) {
    // As `serde_json::Value` does: a non-finite number becomes null.
    let _ = serde_json::to_writer(&mut *out, &x);
}

pub(super) fn json_u32s(out: &mut Vec<u8>, items: &[u32]) {
    out.push(b'[');
    for (i, n) in items.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        json_u64(out, u64::from(*n));
    }
    out.push(b']');
}
