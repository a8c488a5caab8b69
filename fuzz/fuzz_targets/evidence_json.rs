//! Evidence JSON (every `tee` shape) through parsing, re-serialization and verification.
#![no_main]

use confidant_attestation::{Evidence, Policy, Timestamp, verify_json};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let now = Timestamp::from_unix_seconds(1_767_225_600);
    let verdict = verify_json(data, None, &Policy::default(), now);
    // Simulated and sample evidence are never accepted by the default policy, whatever the
    // JSON says.
    if matches!(
        verdict.tee,
        confidant_attestation::TeeKind::Simulated | confidant_attestation::TeeKind::Sample
    ) {
        assert!(!verdict.is_accept());
    }
    let _ = verdict.to_json_pretty();
    if let Ok(evidence) = Evidence::from_json(data)
        && let Ok(json) = evidence.to_json()
    {
        // What we write, we read back identically.
        let again = Evidence::from_json(json.as_bytes()).expect("own JSON parses");
        assert_eq!(again, evidence);
    }
});
