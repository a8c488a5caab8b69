//! The broker's own TDX collateral: Intel PCS documents (TCB info, QE identity, CRLs and
//! their issuer chains) that the operator keeps current, one JSON file per platform FMSPC.
//!
//! The broker never judges a quote by the collateral its attester sends: that collateral is
//! Intel-signed but may be stale (an old TCB info, from before a TCB recovery, under which an
//! unpatched platform is still `UpToDate`). It uses what [`CollateralSource`] reads from the
//! file or directory given to `broker serve --tdx-collateral`, re-read on every TDX
//! verification, so that replacing the files (by rename) takes effect without a restart.
//! See `docs/broker.md` for how an operator fetches and refreshes it.

use std::path::{Path, PathBuf};

use confidant_attestation::{Evidence, TdxCollateral, TdxCollateralSet};

use super::error::BrokerError;

/// The largest collateral file read (Intel's are tens of KiB).
const MAX_FILE_BYTES: u64 = 4 << 20;
/// The most collateral files read from a directory.
const MAX_FILES: usize = 256;

/// Why collateral could not be loaded.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CollateralError {
    /// A file or the directory could not be read.
    #[error("TDX collateral {path}: {source}")]
    Io {
        /// The path.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
    /// A file is not collateral, or the set is inconsistent.
    #[error("TDX collateral {path}: {reason}")]
    Invalid {
        /// The path.
        path: PathBuf,
        /// What was wrong.
        reason: String,
    },
}

/// Where the broker reads its TDX collateral: one QuoteCollateralV3 JSON file, or a
/// directory of `*.json` files (one per FMSPC).
#[derive(Debug, Clone)]
pub struct CollateralSource {
    path: PathBuf,
}

impl CollateralSource {
    /// A source at `path` (nothing is read yet).
    pub fn new(path: impl Into<PathBuf>) -> Self {
        Self { path: path.into() }
    }

    /// The configured path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Reads every collateral file now, indexed by FMSPC.
    pub fn load(&self) -> Result<TdxCollateralSet, CollateralError> {
        let io = |path: &Path| {
            let path = path.to_owned();
            move |source| CollateralError::Io { path, source }
        };
        let meta = std::fs::metadata(&self.path).map_err(io(&self.path))?;
        let files = if meta.is_dir() {
            let mut files = Vec::new();
            for entry in std::fs::read_dir(&self.path).map_err(io(&self.path))? {
                let path = entry.map_err(io(&self.path))?.path();
                if path.extension().is_some_and(|e| e == "json") && path.is_file() {
                    files.push(path);
                }
            }
            files.sort();
            if files.len() > MAX_FILES {
                return Err(CollateralError::Invalid {
                    path: self.path.clone(),
                    reason: format!("more than {MAX_FILES} collateral files"),
                });
            }
            files
        } else {
            vec![self.path.clone()]
        };
        let mut collaterals = Vec::with_capacity(files.len());
        for file in &files {
            let len = std::fs::metadata(file).map_err(io(file))?.len();
            if len > MAX_FILE_BYTES {
                return Err(CollateralError::Invalid {
                    path: file.clone(),
                    reason: format!("{len} bytes is more than the {MAX_FILE_BYTES} read"),
                });
            }
            let bytes = std::fs::read(file).map_err(io(file))?;
            let collateral =
                TdxCollateral::from_json(&bytes).map_err(|e| CollateralError::Invalid {
                    path: file.clone(),
                    reason: e.to_string(),
                })?;
            // Check what selection needs now, so that a bad file is named at load.
            collateral
                .fmspc()
                .and_then(|_| collateral.tcb_evaluation_data_number())
                .map_err(|e| CollateralError::Invalid {
                    path: file.clone(),
                    reason: e.to_string(),
                })?;
            collaterals.push(collateral);
        }
        TdxCollateralSet::new(collaterals).map_err(|e| CollateralError::Invalid {
            path: self.path.clone(),
            reason: e.to_string(),
        })
    }
}

/// The broker's collateral for TDX `evidence` (none for other TEEs), read from `source` now,
/// so that the operator's refresh takes effect at once. TDX evidence without a source, or
/// from a platform the source has no file for, is refused.
pub(crate) fn for_evidence(
    source: Option<&Path>,
    evidence: &Evidence,
) -> Result<Option<TdxCollateral>, BrokerError> {
    let Evidence::Tdx(tdx) = evidence else {
        return Ok(None);
    };
    let Some(path) = source else {
        return Err(BrokerError::Attestation(
            "TDX evidence, but this broker holds no TDX collateral (start it with \
             --tdx-collateral)"
                .into(),
        ));
    };
    let set = CollateralSource::new(path)
        .load()
        .map_err(|e| BrokerError::Internal(e.to_string()))?;
    match set.for_quote(tdx.quote()) {
        Ok(Some(collateral)) => Ok(Some(collateral.clone())),
        Ok(None) => {
            let fmspc = confidant_attestation::tdx::quote_fmspc(tdx.quote())
                .map(hex::encode)
                .unwrap_or_default();
            Err(BrokerError::Attestation(format!(
                "this broker holds no TDX collateral for the quote's platform (FMSPC {fmspc})"
            )))
        }
        Err(e) => Err(BrokerError::Attestation(format!("TDX quote: {e}"))),
    }
}
