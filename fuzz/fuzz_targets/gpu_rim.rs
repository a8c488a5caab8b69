//! The NVIDIA RIM reader (XML, XML-DSig, C14N) and the golden comparison on arbitrary RIM
//! bytes, judged against the genuine Hopper evidence.
#![no_main]

use std::sync::OnceLock;

use confidant_attestation::{GpuEvidence, GpuReferences, GpuVerdict, Timestamp, verify_gpu};
use libfuzzer_sys::fuzz_target;

const REPORT: &[u8] =
    include_bytes!("../../attestation/tests/data/nvidia/hopper-h100-545.00-nvtrust/report.bin");
const CHAIN: &str =
    include_str!("../../attestation/tests/data/nvidia/hopper-h100-545.00-nvtrust/chain.pem");
const DRIVER: &[u8] = include_bytes!(
    "../../attestation/tests/data/nvidia/hopper-h100-545.00-nvtrust/rim-driver-545.00.swidtag"
);
const VBIOS: &[u8] = include_bytes!(
    "../../attestation/tests/data/nvidia/hopper-h100-545.00-nvtrust/rim-vbios-96.00.5E.00.01.swidtag"
);
const NONCE: [u8; 32] = [
    0x4c, 0xff, 0x7f, 0x53, 0x80, 0xea, 0xd8, 0xfa, 0xd8, 0xec, 0x2c, 0x53, 0x1c, 0x11, 0x0a, 0xca,
    0x43, 0x02, 0xa8, 0x8f, 0x60, 0x37, 0x92, 0x80, 0x1a, 0x8c, 0xa2, 0x9e, 0xe1, 0x51, 0xaf, 0x2e,
];

fn judge(driver_rim: &[u8]) -> GpuVerdict {
    let evidence = GpuEvidence::new(REPORT.to_vec(), CHAIN.to_owned());
    // The fuzzed RIM stands in for the driver RIM, next to the genuine VBIOS RIM.
    let rims: [&[u8]; 2] = [driver_rim, VBIOS];
    verify_gpu(
        &evidence,
        &NONCE,
        GpuReferences {
            rims: &rims,
            ocsp: &[],
        },
        Timestamp::from_unix_seconds(1_735_689_600),
    )
}

fuzz_target!(|data: &[u8]| {
    static GENUINE: OnceLock<GpuVerdict> = OnceLock::new();
    let genuine = GENUINE.get_or_init(|| judge(DRIVER));
    assert!(genuine.is_accept());
    // The RIM reader alone, on every input; the whole verification (which also checks the
    // report's signature, the costly part) only for RIMs whose own signature verifies.
    match confidant_attestation::nvidia::rim::read(data) {
        Ok((_, Ok(()))) => {}
        _ => return,
    }
    let verdict = judge(data);
    // XML-DSig lets through what canonicalization discards (comments, quoting, whitespace
    // inside tags, an XML declaration), so a mutated RIM may pass only if everything the
    // verdict reads from it is NVIDIA's.
    if verdict.is_accept() {
        assert_eq!(
            verdict.claims.rims, genuine.claims.rims,
            "a RIM with other content was accepted"
        );
    }
});
