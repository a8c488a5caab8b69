//! GPU evidence through NVML: `nvmlDeviceGetConfComputeGpuAttestationReport` (the SPDM
//! GET_MEASUREMENTS request ‖ response for a nonce) and `nvmlDeviceGetConfComputeGpuCertificate`
//! (the device chain). Without the `cuda` feature there is no NVML: every collection says so.

use super::gpu::GpuSource;
use super::{GpuEvidence, TeeError};

/// NVML, loaded on first use.
#[derive(Debug, Default)]
pub struct Nvml {
    _private: (),
}

impl GpuSource for Nvml {
    fn collect(&self, device: u32, nonce: &[u8; 32]) -> Result<GpuEvidence, TeeError> {
        let _ = nonce;
        Err(TeeError::Gpu {
            device,
            reason: "this build has no `cuda` feature, so no NVML: no GPU evidence".to_owned(),
        })
    }
}
