//! The SNP report parser and the whole SNP verification path on arbitrary report bytes.
#![no_main]

use confidant_attestation::{Evidence, Policy, SnpEvidence, Timestamp, evidence, verify};
use libfuzzer_sys::fuzz_target;

const VCEK: &[u8] = include_bytes!("../../attestation/tests/data/snp/virtee-milan-v2/vcek.der");

fuzz_target!(|data: &[u8]| {
    let _ = evidence::parse_snp_report(data);
    // Verification must never panic and never accept: nobody can forge the VCEK's signature.
    let evidence =
        Evidence::Snp(SnpEvidence::from_parts(data, VCEK, None).expect("no chain to parse"));
    let verdict = verify(
        &evidence,
        None,
        &Policy::default(),
        Timestamp::from_unix_seconds(1_748_736_000),
    );
    assert!(
        !verdict.is_accept()
            || data
                == include_bytes!("../../attestation/tests/data/snp/virtee-milan-v2/report.bin")
    );
});
