//! `/dev/sev-guest` (SEV-SNP guests on kernels without configfs-tsm), through `sev`'s safe
//! guest firmware API: an extended report, which carries the host's certificate table (the
//! VCEK or VLEK, and often the ASK and ARK).

use std::path::{Path, PathBuf};

use confidant_attestation::{CertTableEntry, CertType, Evidence};

use super::error::TeeError;
use super::{Attester, AttesterKind, snp_evidence};

/// The SEV-SNP guest device. `sev` always opens this path.
pub const SEV_GUEST_DEVICE: &str = "/dev/sev-guest";

const INTERFACE: &str = "sev-guest";

/// The `/dev/sev-guest` attester.
#[derive(Debug, Clone)]
pub struct SevGuest {
    device: PathBuf,
    vmpl: u32,
}

impl SevGuest {
    /// An attester for the device at [`SEV_GUEST_DEVICE`] requesting VMPL 0 reports (as
    /// configfs-tsm's default `privlevel`). Opens nothing yet.
    pub fn new() -> Self {
        Self {
            device: PathBuf::from(SEV_GUEST_DEVICE),
            vmpl: 0,
        }
    }

    /// Requests reports for `vmpl` instead (0–3; at least the VMPL the guest runs at).
    #[must_use]
    pub fn with_vmpl(mut self, vmpl: u32) -> Self {
        self.vmpl = vmpl;
        self
    }

    /// The device path.
    pub fn device(&self) -> &Path {
        &self.device
    }
}

impl Default for SevGuest {
    fn default() -> Self {
        Self::new()
    }
}

impl Attester for SevGuest {
    fn kind(&self) -> AttesterKind {
        AttesterKind::SevGuest
    }

    #[cfg(target_os = "linux")]
    fn evidence(&self, report_data: &[u8; 64]) -> Result<Evidence, TeeError> {
        let mut firmware =
            sev::firmware::guest::Firmware::open().map_err(|source| TeeError::Io {
                interface: INTERFACE,
                step: "open",
                path: self.device.clone(),
                source,
            })?;
        let (report, certs) = firmware
            .get_ext_report(None, Some(*report_data), Some(self.vmpl))
            .map_err(|e| TeeError::SevGuest {
                reason: e.to_string(),
            })?;
        let certs: Vec<CertTableEntry> = certs
            .unwrap_or_default()
            .into_iter()
            .map(|entry| CertTableEntry::new(cert_type(&entry.cert_type), entry.data))
            .collect();
        snp_evidence(INTERFACE, report, certs, report_data).map(Evidence::Snp)
    }

    #[cfg(not(target_os = "linux"))]
    fn evidence(&self, _report_data: &[u8; 64]) -> Result<Evidence, TeeError> {
        Err(TeeError::SevGuest {
            reason: "/dev/sev-guest exists only on Linux".to_owned(),
        })
    }
}

/// `sev`'s certificate kinds, as the attestation crate names them.
fn cert_type(kind: &sev::firmware::host::CertType) -> CertType {
    use sev::firmware::host::CertType as Sev;
    match kind {
        Sev::Empty => CertType::Empty,
        Sev::ARK => CertType::Ark,
        Sev::ASK => CertType::Ask,
        Sev::VCEK => CertType::Vcek,
        Sev::VLEK => CertType::Vlek,
        Sev::CRL => CertType::Crl,
        Sev::OTHER(guid) => CertType::Other(guid.to_string()),
    }
}
