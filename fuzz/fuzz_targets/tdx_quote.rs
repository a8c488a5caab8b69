//! The TDX quote parser and dcap-qvl verification on arbitrary quote bytes.
#![no_main]

use std::sync::OnceLock;

use confidant_attestation::{
    Evidence, Policy, TdxCollateral, TdxEvidence, Timestamp, evidence, verify,
};
use libfuzzer_sys::fuzz_target;

const COLLATERAL: &[u8] =
    include_bytes!("../../attestation/tests/data/tdx/dcapqvl-b0c06f-v4-uptodate/collateral.json");

fuzz_target!(|data: &[u8]| {
    static COLLATERAL_PARSED: OnceLock<TdxCollateral> = OnceLock::new();
    let collateral =
        COLLATERAL_PARSED.get_or_init(|| TdxCollateral::from_json(COLLATERAL).expect("collateral"));
    if evidence::parse_tdx_quote(data).is_ok() {
        let evidence = Evidence::Tdx(TdxEvidence::new(data.to_vec()));
        // Must not panic. (No accept assertion: the certification data is not covered by the
        // quote signature, so some mutations of it legitimately still verify.)
        let _ = verify(
            &evidence,
            Some(collateral),
            &Policy::default(),
            Timestamp::from_unix_seconds(1_750_809_600),
        );
    }
});
