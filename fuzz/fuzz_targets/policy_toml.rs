//! The policy TOML parser.
#![no_main]

use confidant_attestation::Policy;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data)
        && let Ok(policy) = Policy::from_toml(text)
    {
        // A parsed policy never silently allows simulated evidence.
        assert!(!policy.dangerous_allow_simulated || text.contains("allow_simulated"));
        // Nor any guest, unless it says so in words.
        assert!(
            !policy.measurements.is_empty() || text.contains("i_understand_this_accepts_any_guest")
        );
    }
});
