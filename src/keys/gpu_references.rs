//! The broker's own GPU references: NVIDIA's signed RIMs (`.swidtag`, driver and VBIOS) and
//! OCSP responses (DER) for the device and RIM certificates, which the operator keeps current.
//! A client's attested channel reads its own the same way (`--gpu-rims`, `--gpu-ocsp` next to
//! `--policy`), once per command.
//!
//! Like the TDX collateral ([`super::collateral`]), they come from files the operator gives to
//! `broker serve` (`--gpu-rims DIR`, `--gpu-ocsp DIR`), re-read at each attestation that
//! carries GPU evidence, so that replacing them (by rename) takes effect without a restart.
//! What GPUs send is never used as a reference. Without a RIM for a GPU's driver and VBIOS
//! its measurements are not compared, and a release policy with `cc_mode = "on"` refuses it;
//! without OCSP responses revocation is `not_checked`, and a policy with `require_ocsp`
//! refuses it.

use std::path::{Path, PathBuf};

use confidant_attestation::nvidia::composite::{HeldReferences, HeldRim};

/// The largest reference file read (RIMs are tens of KiB, OCSP responses a few).
const MAX_FILE_BYTES: u64 = 4 << 20;
/// The most files read from a directory.
const MAX_FILES: usize = 1024;

/// Why GPU references could not be loaded.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum GpuReferenceError {
    /// A file or the directory could not be read.
    #[error("GPU references {path}: {source}")]
    Io {
        /// The path.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
    /// A file is not a RIM, or is too large, or there are too many.
    #[error("GPU references {path}: {reason}")]
    Invalid {
        /// The path.
        path: PathBuf,
        /// What was wrong.
        reason: String,
    },
}

/// Where the broker reads its GPU references.
#[derive(Debug, Clone, Default)]
pub struct GpuReferenceSource {
    rims: Option<PathBuf>,
    ocsp: Option<PathBuf>,
}

/// The references read now (the attestation crate's [`HeldReferences`]: every RIM,
/// `*.swidtag` or `*.xml`, of the RIM directory and every OCSP response, `*.der` or `*.ocsp`, of
/// the OCSP directory).
pub type GpuReferenceSet = HeldReferences;

impl GpuReferenceSource {
    /// RIMs from the directory `rims`, OCSP responses from `ocsp` (nothing is read yet).
    pub fn new(rims: Option<PathBuf>, ocsp: Option<PathBuf>) -> Self {
        Self { rims, ocsp }
    }

    /// Whether any directory is configured.
    pub fn is_configured(&self) -> bool {
        self.rims.is_some() || self.ocsp.is_some()
    }

    /// Reads every reference now. A RIM that does not read is an error naming the file.
    pub fn load(&self) -> Result<GpuReferenceSet, GpuReferenceError> {
        let mut set = GpuReferenceSet::default();
        if let Some(dir) = &self.rims {
            for (path, bytes) in read_dir(dir, &["swidtag", "xml"])? {
                let rim = HeldRim::read(bytes).map_err(|e| GpuReferenceError::Invalid {
                    path,
                    reason: e.to_string(),
                })?;
                set.rims.push(rim);
            }
        }
        if let Some(dir) = &self.ocsp {
            set.ocsp = read_dir(dir, &["der", "ocsp"])?
                .into_iter()
                .map(|(_, bytes)| bytes)
                .collect();
        }
        Ok(set)
    }
}

/// The files of `dir` with one of `extensions`, sorted by name, each bounded in size.
fn read_dir(dir: &Path, extensions: &[&str]) -> Result<Vec<(PathBuf, Vec<u8>)>, GpuReferenceError> {
    let io = |path: &Path| {
        let path = path.to_owned();
        move |source| GpuReferenceError::Io { path, source }
    };
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(io(dir))? {
        let path = entry.map_err(io(dir))?.path();
        let wanted = path
            .extension()
            .and_then(|e| e.to_str())
            .is_some_and(|e| extensions.contains(&e));
        if wanted && path.is_file() {
            files.push(path);
        }
    }
    if files.len() > MAX_FILES {
        return Err(GpuReferenceError::Invalid {
            path: dir.to_owned(),
            reason: format!("more than {MAX_FILES} files"),
        });
    }
    files.sort();
    let mut out = Vec::with_capacity(files.len());
    for path in files {
        let len = std::fs::metadata(&path).map_err(io(&path))?.len();
        if len > MAX_FILE_BYTES {
            return Err(GpuReferenceError::Invalid {
                path,
                reason: format!("{len} bytes is more than the {MAX_FILE_BYTES} read"),
            });
        }
        let bytes = std::fs::read(&path).map_err(io(&path))?;
        out.push((path, bytes));
    }
    Ok(out)
}
