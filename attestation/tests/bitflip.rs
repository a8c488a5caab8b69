//! Property test: any single-bit flip in the signed region of a genuine report is rejected.
//!
//! The default run flips a few bits per report so that `cargo test` stays fast in debug
//! builds. Set `ATTESTATION_BITFLIPS` for more, e.g. the acceptance run of 10,000:
//!
//! ```sh
//! ATTESTATION_BITFLIPS=10000 cargo test --release -p confidant-attestation --test bitflip
//! ```
//!
//! Flips are spread over the reports round-robin; positions come from a seeded generator
//! (`ATTESTATION_BITFLIP_SEED`) so that any failure can be replayed.

mod common;

use common::*;
use confidant_attestation::{Policy, snp, verify};

/// splitmix64: small, seedable, good enough to pick bit positions.
struct SplitMix(u64);

impl SplitMix {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
}

fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

#[test]
fn random_single_bit_flips_in_signed_region_are_rejected() {
    let total = env_u64("ATTESTATION_BITFLIPS", 600);
    let seed = env_u64("ATTESTATION_BITFLIP_SEED", 0x5EED_C0FF_EE00_0003);
    let mut rng = SplitMix(seed);
    // The debug vector is judged with debug allowed, so that only the flip can reject it.
    let mut policy = Policy::dangerous_authenticity_only();
    policy.allow_debug = true;
    for vector in &SNP_VECTORS {
        assert!(
            verify(&vector.evidence(), None, &policy, vector.now()).is_accept(),
            "{}",
            vector.name
        );
    }
    let signed_bits = (snp::SIGNED_LEN * 8) as u64;
    for i in 0..total {
        let vector = &SNP_VECTORS[(i % SNP_VECTORS.len() as u64) as usize];
        let bit = (rng.next() % signed_bits) as usize;
        let mut report = vector.report.to_vec();
        report[bit / 8] ^= 1 << (bit % 8);
        let verdict = verify(&vector.evidence_from(&report), None, &policy, vector.now());
        assert!(
            !verdict.is_accept(),
            "flip #{i} of bit {bit} (byte {:#x}) in {} was accepted (seed {seed:#x})",
            bit / 8,
            vector.name
        );
    }
}
