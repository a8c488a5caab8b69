//! The compact body of a sealed Predict record: CBOR (RFC 8949, through `ciborium`), an
//! array in a fixed field order with the input HMAC as 32 raw bytes, after a one-byte format
//! tag. The JSON object of the same event is about three times longer; sealed, the body is
//! base64 in the record's line, so every byte saved here saves a third more on disk.
//!
//! The plaintext of a sealed event is either this ([`FORMAT`] first) or, for every other
//! event and for records written before this format, the event's canonical JSON (`{` first):
//! [`super::seal::Opener`] reads both.

use std::borrow::Cow;

use serde::{Deserialize, Serialize};

use super::{Event, PredictEvent};

/// The first byte of a compact Predict body (a JSON body starts with `{`).
pub(super) const FORMAT: u8 = 0x01;

/// The fields of a Predict event, in the order they are written.
#[derive(Serialize)]
struct Fields<'a>(
    &'a str,
    &'a str,
    &'a str,
    Option<&'a str>,
    Option<&'a str>,
    Option<&'a serde_bytes::Bytes>,
    &'a [u32],
    &'a [u32],
    u64,
    u64,
    &'a str,
    &'a str,
    f64,
    Option<&'a str>,
);

/// The same, read back.
#[derive(Deserialize)]
struct OwnedFields(
    String,
    String,
    String,
    Option<String>,
    Option<String>,
    Option<serde_bytes::ByteBuf>,
    Vec<u32>,
    Vec<u32>,
    u64,
    u64,
    String,
    String,
    f64,
    Option<String>,
);

/// Appends the compact body of `e` to `out`. An event whose input HMAC is not 64 hex digits
/// (not reached: the pipeline makes them) is written as its canonical JSON instead, so that
/// nothing is lost.
pub(super) fn write(out: &mut Vec<u8>, e: &PredictEvent<'_>) {
    let mut hmac = [0u8; 32];
    let hmac = match e.input_hmac {
        Some(h) if hex::decode_to_slice(h, &mut hmac).is_ok() => {
            Some(serde_bytes::Bytes::new(&hmac))
        }
        Some(_) => {
            super::encode::write_predict_event(out, e);
            return;
        }
        None => None,
    };
    out.push(FORMAT);
    let fields = Fields(
        e.request_id,
        e.principal,
        e.model,
        e.purpose,
        e.subject,
        hmac,
        e.output_argmax,
        e.flagged_rows,
        e.rows,
        e.latency_us,
        e.decision,
        e.reason,
        e.epsilon,
        e.rpc,
    );
    // Writing to a Vec cannot fail, and every field serializes.
    if ciborium::into_writer(&fields, &mut *out).is_err() {
        unreachable!("CBOR into a Vec");
    }
}

/// Reads a compact body (after its format byte) back into the event.
pub(super) fn read(body: &[u8]) -> Result<Event, String> {
    let f: OwnedFields = ciborium::from_reader(body).map_err(|e| e.to_string())?;
    let input_hmac = match f.5 {
        Some(b) if b.len() == 32 => Some(hex::encode(b)),
        Some(b) => return Err(format!("input_hmac has {} bytes, not 32", b.len())),
        None => None,
    };
    Ok(Event::Predict {
        request_id: f.0,
        principal: f.1,
        model: f.2,
        purpose: f.3,
        subject: f.4,
        input_hmac,
        output_argmax: f.6,
        flagged_rows: f.7,
        rows: f.8,
        latency_us: f.9,
        decision: Cow::Owned(f.10),
        reason: Cow::Owned(f.11),
        epsilon: f.12,
        rpc: f.13.map(Cow::Owned),
    })
}
