//! GPU evidence for a server that serves on CUDA devices: the CPU attester plus the evidence
//! of each GPU ([`WithGpus`]), collected through NVML ([`nvml`](super::nvml)).
//!
//! Fail closed: a server on `--device cuda:N` (or `auto` that picked a GPU) always attests
//! with its GPUs' evidence. If NVML is absent or a GPU cannot produce a report, the attester
//! errors ([`TeeError::Gpu`]) instead of attesting as a CPU server, so the server gets no key
//! and stays NOT_SERVING with that reason in its log. A server on CPU sends no GPU evidence.

use std::fmt;
use std::sync::Arc;

use super::{Attester, AttesterKind, Evidence, GpuEvidence, TeeError};
use crate::gpu::DeviceSpec;

/// Where GPU evidence comes from: NVML in production; tests substitute recorded evidence
/// (which a broker refuses outside tests: its nonce is not the session's).
pub trait GpuSource: Send + Sync + fmt::Debug {
    /// The evidence of CUDA device `device` answering `nonce`.
    fn collect(&self, device: u32, nonce: &[u8; 32]) -> Result<GpuEvidence, TeeError>;
}

/// A CPU attester for a server that serves on GPUs: CPU evidence from `cpu`, and evidence of
/// every GPU in `devices` from `source`.
#[derive(Debug)]
pub struct WithGpus {
    cpu: Arc<dyn Attester>,
    devices: Vec<u32>,
    source: Arc<dyn GpuSource>,
}

impl WithGpus {
    /// `cpu` serving on `devices` (CUDA ordinals), their evidence from `source`.
    pub fn new(cpu: Arc<dyn Attester>, devices: Vec<u32>, source: Arc<dyn GpuSource>) -> Self {
        Self {
            cpu,
            devices,
            source,
        }
    }
}

impl Attester for WithGpus {
    fn kind(&self) -> AttesterKind {
        self.cpu.kind()
    }

    fn evidence(&self, report_data: &[u8; 64]) -> Result<Evidence, TeeError> {
        self.cpu.evidence(report_data)
    }

    fn gpus(&self) -> &[u32] {
        &self.devices
    }

    fn gpu_evidence(&self, nonce: &[u8; 32]) -> Result<Vec<GpuEvidence>, TeeError> {
        self.devices
            .iter()
            .map(|d| self.source.collect(*d, nonce))
            .collect()
    }
}

/// The CUDA devices a server on `spec` serves on: `cuda:N` is N; `auto` is device 0 when
/// this build has CUDA and a device answers (as [`crate::gpu::open`] picks), else none.
pub fn serving_devices(spec: DeviceSpec) -> Vec<u32> {
    match spec {
        DeviceSpec::Cpu => Vec::new(),
        DeviceSpec::Auto if crate::gpu::cuda_device_count() > 0 => vec![0],
        DeviceSpec::Auto => Vec::new(),
        // The parser bounds ordinals far below u32::MAX; an impossible one is kept as is
        // rather than dropped, so the collection fails for it (fail closed).
        DeviceSpec::Cuda(n) => vec![u32::try_from(n).unwrap_or(u32::MAX)],
    }
}

/// The attester for a server on `spec`: `cpu` itself on CPU, else `cpu` with the evidence of
/// its GPUs from NVML.
pub fn for_device(cpu: Arc<dyn Attester>, spec: DeviceSpec) -> Arc<dyn Attester> {
    let devices = serving_devices(spec);
    if devices.is_empty() {
        tracing::info!("models run on the CPU: attestations carry no GPU evidence");
        return cpu;
    }
    tracing::info!(
        devices = ?devices,
        "models run on CUDA: every attestation carries the GPUs' evidence (NVML); without \
         it no key is released"
    );
    Arc::new(WithGpus::new(
        cpu,
        devices,
        Arc::new(super::nvml::Nvml::default()),
    ))
}

/// A description of what an attester's GPU evidence covers, for logs.
pub fn describe(attester: &dyn Attester) -> String {
    match attester.gpus() {
        [] => "none (models on the CPU)".to_owned(),
        gpus => format!(
            "{} GPU(s): {}",
            gpus.len(),
            gpus.iter()
                .map(|g| format!("cuda:{g}"))
                .collect::<Vec<_>>()
                .join(", ")
        ),
    }
}
