//! Trustee's `sample` TEE, for development against a Trustee KBS (`serve --tee sample`).
//! **It proves nothing**: the evidence is report_data in the clear, signed by nobody, and any
//! program can write it. Confidant's broker and clients refuse it unless their policy sets
//! `allow_simulated = true`; the server warns that it is not confidential at every start.

use confidant_attestation::{Evidence, SampleEvidence};

use super::error::TeeError;
use super::{Attester, AttesterKind};

/// The warning the server logs at every start with this attester.
pub const NOT_CONFIDENTIAL: &str = "NOT CONFIDENTIAL: --tee sample sends Trustee's sample \
     evidence (no TEE, no measurement, signed by nobody). Any program can produce it, so a \
     broker that releases keys to it releases them to anyone. Development against a Trustee \
     KBS only; Confidant's own broker and clients refuse it unless the policy sets \
     allow_simulated = true";

/// The sample attester: [`SampleEvidence`] binding the report_data it is asked for.
#[derive(Debug, Clone, Copy, Default)]
pub struct Sample;

impl Attester for Sample {
    fn kind(&self) -> AttesterKind {
        AttesterKind::Sample
    }

    /// Binds all 64 bytes (Confidant's TLS binding uses every byte).
    fn evidence(&self, report_data: &[u8; 64]) -> Result<Evidence, TeeError> {
        Ok(Evidence::Sample(SampleEvidence::new(report_data)))
    }

    /// Binds the 48-byte digest exactly, unpadded, as Trustee's sample verifier requires.
    fn evidence_for_runtime_digest(&self, digest: &[u8; 48]) -> Result<Evidence, TeeError> {
        Ok(Evidence::Sample(SampleEvidence::new(digest)))
    }
}
