//! The simulated TEE, for machines with neither SEV-SNP nor TDX. **It proves nothing**: the
//! signing chain is generated in this process. Its measurement is the SHA-384 of the running
//! binary, so that, as with a measured launch, a changed binary changes the measurement.

use std::io::Read as _;
use std::path::{Path, PathBuf};

use confidant_attestation::{Evidence, SimulatedTee};
use sha2::{Digest as _, Sha384};

use super::error::TeeError;
use super::{Attester, AttesterKind};

/// The running binary, as Linux exposes it.
pub const SELF_EXE: &str = "/proc/self/exe";

/// The simulated attester: [`SimulatedTee::shared`] signing reports whose measurement is
/// [`binary_measurement`] of the running binary.
#[derive(Debug, Clone)]
pub struct Simulated {
    binary: PathBuf,
    measurement: [u8; 48],
}

impl Simulated {
    /// Measures the running binary ([`SELF_EXE`]).
    pub fn new() -> Result<Self, TeeError> {
        Self::measuring(Path::new(SELF_EXE))
    }

    /// Measures `binary` instead of the running one.
    pub fn measuring(binary: &Path) -> Result<Self, TeeError> {
        Ok(Self {
            binary: binary.to_path_buf(),
            measurement: binary_measurement(binary)?,
        })
    }

    /// The measurement every report of this attester carries.
    pub fn measurement(&self) -> &[u8; 48] {
        &self.measurement
    }

    /// The binary that was measured.
    pub fn binary(&self) -> &Path {
        &self.binary
    }
}

impl Attester for Simulated {
    fn kind(&self) -> AttesterKind {
        AttesterKind::Simulated
    }

    fn evidence(&self, report_data: &[u8; 64]) -> Result<Evidence, TeeError> {
        let tee = SimulatedTee::shared()?;
        let evidence = tee.attest(report_data, &self.measurement)?;
        Ok(match evidence {
            Evidence::Simulated(e) => match super::generated_now() {
                Some(now) => Evidence::Simulated(e.with_generated_at(now)),
                None => Evidence::Simulated(e),
            },
            other => other,
        })
    }
}

/// The simulated measurement of `binary`: SHA-384 of its bytes.
pub fn binary_measurement(binary: &Path) -> Result<[u8; 48], TeeError> {
    let io = |source| TeeError::Io {
        interface: "simulated",
        step: "measure",
        path: binary.to_path_buf(),
        source,
    };
    let mut file = std::fs::File::open(binary).map_err(io)?;
    let mut hasher = Sha384::new();
    let mut buf = vec![0u8; 1 << 16];
    loop {
        let n = file.read(&mut buf).map_err(io)?;
        if n == 0 {
            break;
        }
        hasher.update(buf.get(..n).unwrap_or_default());
    }
    Ok(hasher.finalize().into())
}
