//! A receipt (tagged COSE_Sign1 over a Merkle root, with an inclusion proof) as `receipt
//! verify` reads it from anyone: opened, its statement decoded, its proof walked. Beyond
//! never panicking: a receipt that opens under the seeds' key is one of the seeds, byte for
//! byte (the canonical-encoding check leaves no second form of a signed receipt).
#![no_main]
use confidant::receipt::{Statement, envelope};
use libfuzzer_sys::fuzz_target;

mod seed_keys;

macro_rules! seeds {
    ($($name:literal),*) => {
        [$(include_bytes!(concat!("../corpus_seed/receipt/", $name)) as &[u8]),*]
    };
}

const SEEDS: [&[u8]; 12] = seeds!(
    "group1-0", "group3-0", "group3-1", "group3-2", "group8-0", "group8-1", "group8-2", "group8-3",
    "group8-4", "group8-5", "group8-6", "group8-7"
);

fuzz_target!(|data: &[u8]| {
    if let Ok(opened) = envelope::open(data) {
        if opened.public_key == seed_keys::receipt_key().verifying_key().to_bytes() {
            assert!(
                SEEDS.contains(&data),
                "a receipt that is not one the key signed opened"
            );
        }
        let _ = Statement::from_cbor(&opened.statement);
    }
    let _ = Statement::from_cbor(data);
    if data.len() >= 16 {
        let index = u64::from_le_bytes(data[..8].try_into().unwrap());
        let size = u64::from_le_bytes(data[8..16].try_into().unwrap());
        let _ = envelope::root_from_inclusion(b"statement", index, size, &data[16..]);
    }
});
