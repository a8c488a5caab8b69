//! Tests only: the recorded genuine Hopper H100 evidence (from `attestation/tests/data`) as a
//! [`GpuSource`] that returns it whatever nonce it is asked for, keeping the nonces asked. The
//! broker's and the attested channel's GPU tests share it.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Mutex;

use confidant_attestation::GpuEvidence;

use super::TeeError;
use super::gpu::GpuSource;

pub(crate) const REPORT: &[u8] =
    include_bytes!("../../attestation/tests/data/nvidia/hopper-h100-545.00-nvtrust/report.bin");
pub(crate) const CHAIN: &str =
    include_str!("../../attestation/tests/data/nvidia/hopper-h100-545.00-nvtrust/chain.pem");
pub(crate) const DRIVER_RIM: &[u8] = include_bytes!(
    "../../attestation/tests/data/nvidia/hopper-h100-545.00-nvtrust/rim-driver-545.00.swidtag"
);
pub(crate) const VBIOS_RIM: &[u8] = include_bytes!(
    "../../attestation/tests/data/nvidia/hopper-h100-545.00-nvtrust/rim-vbios-96.00.5E.00.01.swidtag"
);
/// The nonce the recorded report answers, and a time at which its RIMs' signers are valid
/// (the vector's README).
pub(crate) const HOPPER_NONCE: &str =
    "4cff7f5380ead8fad8ec2c531c110aca4302a88f603792801a8ca29ee151af2e";
pub(crate) const AT: &str = "2025-01-01T00:00:00Z";

/// The recorded H100 evidence.
pub(crate) fn hopper() -> GpuEvidence {
    GpuEvidence::new(REPORT.to_vec(), CHAIN.to_owned())
}

/// Recorded GPU evidence whatever the nonce asked; keeps the nonces asked.
#[derive(Debug)]
pub(crate) struct Recorded {
    pub(crate) evidence: Vec<GpuEvidence>,
    pub(crate) asked: Mutex<Vec<[u8; 32]>>,
}

impl Recorded {
    /// A source answering with `evidence[device]`.
    pub(crate) fn new(evidence: Vec<GpuEvidence>) -> Self {
        Self {
            evidence,
            asked: Mutex::new(Vec::new()),
        }
    }
}

impl GpuSource for Recorded {
    fn collect(&self, device: u32, nonce: &[u8; 32]) -> Result<GpuEvidence, TeeError> {
        self.asked.lock().unwrap().push(*nonce);
        self.evidence
            .get(device as usize)
            .cloned()
            .ok_or_else(|| TeeError::Gpu {
                device,
                reason: "no recorded evidence".into(),
            })
    }
}
