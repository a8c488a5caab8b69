//! Request ids: UUID v4 strings from a per-thread ChaCha20 stream keyed from the OS.
//!
//! A request id must be unique and unpredictable (it names the request in the audit log and
//! in the response). `uuid::Uuid::new_v4` asks the OS for 16 bytes per id, a system call on
//! every request; here each thread keys a ChaCha20 stream once from the OS CSPRNG and takes
//! 16 bytes of keystream per id, which is as unpredictable and costs no system call.

use std::cell::RefCell;

use rand_chacha::ChaCha20Rng;
use rand_core::{RngCore, SeedableRng};

thread_local! {
    static STREAM: RefCell<Option<ChaCha20Rng>> = const { RefCell::new(None) };
}

/// A fresh request id (a random UUID v4, hyphenated, lower case).
pub fn new() -> String {
    let id = new_bytes();
    as_str(&id).to_string()
}

/// [`new`] as its 36 ASCII bytes, with no allocation.
pub fn new_bytes() -> [u8; uuid::fmt::Hyphenated::LENGTH] {
    let bytes = STREAM.with(|cell| {
        let mut stream = cell.borrow_mut();
        if stream.is_none() {
            *stream = Some(ChaCha20Rng::from_seed(*crate::secure::os_seed().ok()?));
        }
        let mut bytes = [0u8; 16];
        stream.as_mut()?.fill_bytes(&mut bytes);
        Some(bytes)
    });
    let id = match bytes {
        Some(b) => uuid::Builder::from_random_bytes(b).into_uuid(),
        // No OS randomness to key the stream: let uuid ask the OS itself, as it always did.
        None => uuid::Uuid::new_v4(),
    };
    let mut out = [0u8; uuid::fmt::Hyphenated::LENGTH];
    id.hyphenated().encode_lower(&mut out);
    out
}

/// The id in `bytes` (from [`new_bytes`]: always ASCII).
pub fn as_str(bytes: &[u8; uuid::fmt::Hyphenated::LENGTH]) -> &str {
    std::str::from_utf8(bytes).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    #[test]
    fn ids_are_distinct_v4_uuids() {
        let ids: std::collections::HashSet<String> = (0..10_000).map(|_| super::new()).collect();
        assert_eq!(ids.len(), 10_000);
        for id in ids.iter().take(100) {
            let u = uuid::Uuid::parse_str(id).unwrap();
            assert_eq!(u.get_version_num(), 4);
            assert_eq!(u.get_variant(), uuid::Variant::RFC4122);
            assert_eq!(id, &u.hyphenated().to_string());
        }
    }
}
