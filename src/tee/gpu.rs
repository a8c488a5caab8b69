//! GPU evidence for a server that serves on CUDA devices: the CPU attester plus the evidence
//! of each GPU ([`WithGpus`]), collected through NVML ([`nvml`](super::nvml)).
//!
//! Fail closed: a server on `--device cuda:N` (or `auto` that picked a GPU) always attests
//! with its GPUs' evidence. If NVML is absent or a GPU cannot produce a report, the attester
//! errors ([`TeeError::Gpu`]) instead of attesting as a CPU server, so the server gets no key
//! and stays NOT_SERVING with that reason in its log. A server on CPU sends no GPU evidence.

use std::fmt;
use std::sync::Arc;

use confidant_attestation::nvidia::{GpuEvidenceSet, gpu_nonce};

use super::{Attester, AttesterKind, Evidence, GpuEvidence, TeeError};

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

    fn evidence_for_runtime_digest(&self, digest: &[u8; 48]) -> Result<Evidence, TeeError> {
        self.cpu.evidence_for_runtime_digest(digest)
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

/// The attester for a server whose models run on the CUDA devices `devices` (ordinals; see
/// `gpu::serving_ordinals`): `cpu` itself when there are none, else `cpu` with the evidence
/// of those GPUs from NVML.
pub fn for_devices(cpu: Arc<dyn Attester>, devices: Vec<u32>) -> Arc<dyn Attester> {
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

/// The evidence of CUDA device `device` answering `nonce`, from NVML (`cuda` builds; others
/// say there is no NVML): what `confidant attest gpu-evidence` writes.
pub fn collect_device(device: u32, nonce: &[u8; 32]) -> Result<GpuEvidence, TeeError> {
    super::nvml::Nvml::default().collect(device, nonce)
}

/// The GPU evidence an attestation for the verifier's challenge `verifier_nonce` carries
/// (the challenge's bytes as sent: for RCAR the base64 text, for the attested channel the
/// client's nonce): `None` for a server on CPU; else the evidence of every GPU the attester
/// serves on, each answering [`gpu_nonce`](confidant_attestation::nvidia::gpu_nonce) of the
/// challenge. A server on GPUs that cannot collect all of them gets an error, never `None`
/// (fail closed). The key broker's client and the Attestation service both collect here.
pub fn collect(
    attester: &dyn Attester,
    verifier_nonce: &[u8],
) -> Result<Option<GpuEvidenceSet>, TeeError> {
    let gpus = attester.gpus();
    if gpus.is_empty() {
        return Ok(None);
    }
    let nvidia_gpus = attester.gpu_evidence(&gpu_nonce(verifier_nonce))?;
    if nvidia_gpus.len() != gpus.len() {
        return Err(TeeError::Gpu {
            device: gpus.first().copied().unwrap_or_default(),
            reason: format!(
                "{} GPU evidence(s) for {} GPU(s) served on",
                nvidia_gpus.len(),
                gpus.len()
            ),
        });
    }
    Ok(Some(GpuEvidenceSet { nvidia_gpus }))
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
