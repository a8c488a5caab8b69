//! Canonical JSON: object keys sorted by their UTF-8 bytes, no insignificant whitespace,
//! numbers and strings as serde_json writes them.
//!
//! Signed manifests and the audit chain hash this encoding, so it must not depend on how
//! serde_json happens to be built: with its `preserve_order` feature (which a dependency,
//! dcap-qvl, turns on) `serde_json::Value` keeps insertion order instead of sorting. Keys are
//! therefore sorted here, explicitly.

use serde::Serialize;
use serde_json::Value;

/// Serializes `value` canonically.
pub fn to_vec<T: Serialize>(value: &T) -> serde_json::Result<Vec<u8>> {
    let v = serde_json::to_value(value)?;
    let mut out = Vec::new();
    write(&v, &mut out)?;
    Ok(out)
}

fn write(v: &Value, out: &mut Vec<u8>) -> serde_json::Result<()> {
    match v {
        Value::Object(map) => {
            let mut entries: Vec<(&String, &Value)> = map.iter().collect();
            entries.sort_unstable_by(|a, b| a.0.as_bytes().cmp(b.0.as_bytes()));
            out.push(b'{');
            for (i, (k, val)) in entries.into_iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                serde_json::to_writer(&mut *out, k)?;
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
        scalar => serde_json::to_writer(&mut *out, scalar)?,
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #[test]
    fn keys_are_sorted_at_every_depth_whatever_the_insertion_order() {
        #[derive(serde::Serialize)]
        struct Inner {
            zeta: u8,
            alpha: Vec<u8>,
        }
        #[derive(serde::Serialize)]
        struct Outer {
            model: Inner,
            labels: Vec<&'static str>,
            a: f32,
        }
        let v = Outer {
            model: Inner {
                zeta: 1,
                alpha: vec![2, 3],
            },
            labels: vec!["x"],
            a: 0.1,
        };
        let s = String::from_utf8(super::to_vec(&v).unwrap()).unwrap();
        assert_eq!(
            s,
            r#"{"a":0.10000000149011612,"labels":["x"],"model":{"alpha":[2,3],"zeta":1}}"#
        );
    }
}
