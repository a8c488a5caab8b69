//! The broker's side of composite evidence: at `attest`, the GPU evidence a session carries
//! is verified for integrity (report, chain to NVIDIA's pinned root, nonce, signature) at the
//! broker's clock, against the GPU nonce derived from the session's challenge, with the
//! broker's own RIMs and OCSP responses; the verdicts stay in the session. At each resource
//! the release policy judges them ([`confidant_attestation::nvidia::judge_gpus`]), fail
//! closed: a policy with `[gpu]` needs passing evidence from its number of GPUs, one without
//! `[gpu]` releases only to sessions that presented none (servers on CPU).
//!
//! # The test seam
//!
//! Recorded (genuine) GPU evidence answers a fixed nonce, and its RIMs' signer certificates
//! have since expired, so tests need the broker to expect another nonce and time for one
//! session. [`TestSeam`] is that hook. It exists only under `cfg(test)`, that is, in this
//! crate's own unit-test binary: the field holding it in the broker's state, the method that
//! sets it ([`super::RunningBroker::dangerous_test_expect_gpu`]) and the branch that reads it
//! are all compiled out of every other build (the `confidant` binary, integration tests,
//! release builds), and no flag, configuration key or request reaches it.

use confidant_attestation::nvidia::{gpu_nonce, verify_gpus};
use confidant_attestation::{GpuVerdict, Timestamp};

use super::Shared;
use super::http::now_timestamp;
use crate::keys::error::BrokerError;
use crate::keys::protocol::GpuEvidenceSet;

/// Verifies the integrity of each GPU's evidence for the session whose challenge is
/// `challenge` (the nonce text as issued), with the broker's own references
/// ([`verify_gpus`], which the client's attested channel uses too). Returns one verdict per
/// GPU (RIM and OCSP results included, for the release policy); refuses the attestation if any
/// GPU's evidence is not authentic, does not answer this session's GPU nonce, or repeats a
/// device.
pub(super) fn verify(
    state: &Shared,
    challenge: &str,
    set: &GpuEvidenceSet,
) -> Result<Vec<GpuVerdict>, BrokerError> {
    let (nonce, now) = expectation(state, challenge);
    let references = state
        .config
        .gpu_references
        .load()
        .map_err(|e| BrokerError::Internal(e.to_string()))?;
    let verified = verify_gpus(&set.nvidia_gpus, &nonce, &references, now)
        .map_err(|e| BrokerError::Attestation(e.to_string()))?;
    for (gpu, reason) in &verified.without_rims {
        tracing::warn!(
            gpu,
            %reason,
            "broker: no RIMs for this GPU; its measurements are not compared, so a \
             cc_mode = \"on\" policy refuses it (add NVIDIA's RIMs to --gpu-rims)"
        );
    }
    Ok(verified.verdicts)
}

/// The GPU nonce and the time this broker expects for `challenge`: [`gpu_nonce`] of the
/// challenge and the broker's clock, except where a unit test set otherwise.
fn expectation(state: &Shared, challenge: &str) -> ([u8; 32], Timestamp) {
    #[cfg(test)]
    if let Some(expected) = state.gpu_test_seam.expected(challenge) {
        return expected;
    }
    #[cfg(not(test))]
    let _ = state;
    (gpu_nonce(challenge.as_bytes()), now_timestamp())
}

/// Tests only (compiled under `cfg(test)` alone, see the module docs): per challenge, the GPU
/// nonce and time to expect instead of [`gpu_nonce`] and the clock.
#[cfg(test)]
#[derive(Debug, Default)]
pub(super) struct TestSeam(
    std::sync::Mutex<std::collections::HashMap<String, ([u8; 32], Timestamp)>>,
);

#[cfg(test)]
impl TestSeam {
    pub(super) fn expect(&self, challenge: &str, nonce: [u8; 32], at: Timestamp) {
        if let Ok(mut map) = self.0.lock() {
            map.insert(challenge.to_owned(), (nonce, at));
        }
    }

    fn expected(&self, challenge: &str) -> Option<([u8; 32], Timestamp)> {
        self.0.lock().ok()?.get(challenge).copied()
    }
}
