//! Attester errors. Each variant names the interface and the step that failed, so that an
//! operator can tell a missing driver from a racing writer from a platform that returned
//! something other than what was asked for.

use std::path::PathBuf;

/// Why an attester could not produce evidence.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TeeError {
    /// `--tee` named no known evidence source.
    #[error("--tee {0:?}: expected auto or sample")]
    UnknownChoice(String),
    /// A file-system step on a TEE interface failed (configfs-tsm, `/dev/sev-guest`, or the
    /// running binary for the simulated measurement).
    #[error("{interface}: cannot {step} {}: {source}", path.display())]
    Io {
        /// The interface: `configfs-tsm`, `sev-guest` or `simulated`.
        interface: &'static str,
        /// What was being done, e.g. `create report entry`.
        step: &'static str,
        /// The path involved.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },

    /// configfs-tsm names a provider this build does not know.
    #[error("configfs-tsm: unknown provider {provider:?} (expected sev_guest or tdx_guest)")]
    UnknownProvider {
        /// The provider as read.
        provider: String,
    },

    /// Someone else wrote to our configfs-tsm entry between our write and our read, so the
    /// outblob may not belong to our report_data.
    #[error(
        "configfs-tsm: entry {} was written concurrently (generation {found}, expected 1)",
        path.display()
    )]
    Generation {
        /// The entry.
        path: PathBuf,
        /// The generation read back.
        found: String,
    },

    /// The platform returned a report or quote that does not decode.
    #[error("{interface}: the platform returned an undecodable {what}: {reason}")]
    Malformed {
        /// The interface.
        interface: &'static str,
        /// `SNP report`, `TDX quote` or `certificate table`.
        what: &'static str,
        /// What was wrong.
        reason: String,
    },

    /// The platform's report does not carry the report_data we asked for.
    #[error("{interface}: the report does not carry the requested report_data")]
    ReportDataMismatch {
        /// The interface.
        interface: &'static str,
    },

    /// The `/dev/sev-guest` ioctl failed.
    #[error("sev-guest: extended report request failed: {reason}")]
    SevGuest {
        /// The firmware or VMM error, as `sev` describes it.
        reason: String,
    },

    /// The server serves on GPUs and their evidence could not be collected (NVML absent, a
    /// GPU not in confidential-computing mode, a driver error). Fail closed: no GPU evidence,
    /// no attestation.
    #[error("no GPU evidence for cuda:{device}: {reason}")]
    Gpu {
        /// The CUDA ordinal.
        device: u32,
        /// What failed.
        reason: String,
    },

    /// The simulated TEE could not sign, or evidence could not be assembled.
    #[error(transparent)]
    Attestation(#[from] confidant_attestation::Error),
}
