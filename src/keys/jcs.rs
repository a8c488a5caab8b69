//! RFC 8785 JSON Canonicalization Scheme (JCS), for the runtime data that KBS hashes into
//! report_data.
//!
//! Object members are sorted by their keys' UTF-16 code units (RFC 8785 §3.2.3), there is no
//! insignificant whitespace, and strings are escaped as ECMAScript's `JSON.stringify` does
//! (which is what serde_json writes: `\"`, `\\`, `\b \f \n \r \t`, other controls as
//! lowercase `\u00xx`, everything else verbatim). Runtime data holds only strings and
//! objects; integers are written plainly and any other number is refused rather than risk
//! a form that differs from ECMAScript's number serialization.
//!
//! [`crate::canonical`] sorts by UTF-8 bytes instead; the two orders differ only for keys with
//! characters above U+FFFF, but interoperability with Trustee's `serde_json_canonicalizer`
//! needs the exact rule, so it is implemented here.

use serde_json::Value;

use super::error::JcsError;

/// The largest integer an IEEE-754 double holds exactly.
const MAX_EXACT: u64 = 1 << 53;

/// The canonical form of `value`.
pub fn to_vec(value: &Value) -> Result<Vec<u8>, JcsError> {
    let mut out = Vec::new();
    write(value, &mut out)?;
    Ok(out)
}

fn write(v: &Value, out: &mut Vec<u8>) -> Result<(), JcsError> {
    match v {
        Value::Object(map) => {
            let mut entries: Vec<(Vec<u16>, &String, &Value)> = map
                .iter()
                .map(|(k, v)| (k.encode_utf16().collect(), k, v))
                .collect();
            entries.sort_unstable_by(|a, b| a.0.cmp(&b.0));
            out.push(b'{');
            for (i, (_, k, val)) in entries.into_iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                write_string(k, out);
                out.push(b':');
                write(val, out)?;
            }
            out.push(b'}');
        }
        Value::Array(items) => {
            out.push(b'[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                write(item, out)?;
            }
            out.push(b']');
        }
        Value::String(s) => write_string(s, out),
        Value::Number(n) => {
            let exact = n
                .as_u64()
                .map(|u| u <= MAX_EXACT)
                .or_else(|| n.as_i64().map(|i| i.unsigned_abs() <= MAX_EXACT))
                .unwrap_or(false);
            if !exact {
                return Err(JcsError::Number(n.to_string()));
            }
            out.extend_from_slice(n.to_string().as_bytes());
        }
        Value::Bool(true) => out.extend_from_slice(b"true"),
        Value::Bool(false) => out.extend_from_slice(b"false"),
        Value::Null => out.extend_from_slice(b"null"),
    }
    Ok(())
}

fn write_string(s: &str, out: &mut Vec<u8>) {
    // serde_json's string escaping is ECMAScript's (see the module docs); writing a &str to
    // a Vec cannot fail.
    let _ = serde_json::to_writer(&mut *out, s);
}
