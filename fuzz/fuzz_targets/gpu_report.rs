//! The NVIDIA SPDM report parser and GPU verification on arbitrary report bytes.
#![no_main]

use confidant_attestation::nvidia::{SpdmReport, report_from_file};
use confidant_attestation::{GpuEvidence, GpuReferences, Timestamp, verify_gpu};
use libfuzzer_sys::fuzz_target;

const REPORT: &[u8] =
    include_bytes!("../../attestation/tests/data/nvidia/blackwell-gb100-575.32-asdk/report.bin");
const CHAIN: &str =
    include_str!("../../attestation/tests/data/nvidia/blackwell-gb100-575.32-asdk/chain.pem");
const NONCE: [u8; 32] = [
    0x93, 0x1d, 0x8d, 0xd0, 0xad, 0xd2, 0x03, 0xac, 0x3d, 0x8b, 0x4f, 0xbd, 0xe7, 0x5e, 0x11, 0x52,
    0x78, 0xee, 0xfc, 0xdc, 0xea, 0xc5, 0xb8, 0x76, 0x71, 0xa7, 0x48, 0xf3, 0x23, 0x64, 0xdf, 0xcb,
];

fuzz_target!(|data: &[u8]| {
    let _ = report_from_file(data);
    if let Ok(report) = SpdmReport::parse(data) {
        // Offsets found must lie inside the input.
        assert!(report.signed_len + 96 == data.len());
        let evidence = GpuEvidence::new(data.to_vec(), CHAIN.to_owned());
        let verdict = verify_gpu(
            &evidence,
            &NONCE,
            GpuReferences::default(),
            Timestamp::from_unix_seconds(1_735_689_600),
        );
        // Only the genuine report verifies under the genuine chain.
        assert!(
            !verdict.is_accept() || data == REPORT,
            "a mutated report was accepted"
        );
    }
});
