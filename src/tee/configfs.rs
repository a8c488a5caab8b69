//! configfs-tsm (Linux 6.7 and later): one interface for SEV-SNP and TDX guests.
//!
//! Per report: `mkdir <root>/<entry>`, write report_data to `inblob`, read `outblob` (the SNP
//! report or the TDX quote), `auxblob` (SNP: the host's certificate table) and `provider`,
//! check `generation` (one write, ours), `rmdir`. See the kernel's
//! `Documentation/ABI/testing/configfs-tsm`.

use std::fmt;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use confidant_attestation::{Evidence, TeeKind};

use super::error::TeeError;
use super::{Attester, AttesterKind, cert_table, snp_evidence, tdx_evidence};

/// Where configfs-tsm report entries live.
pub const TSM_REPORT_ROOT: &str = "/sys/kernel/config/tsm/report";

const INTERFACE: &str = "configfs-tsm";

/// Entries made by this process get distinct names; the pid keeps processes apart.
static NEXT_ENTRY: AtomicU64 = AtomicU64::new(0);

/// Which guest driver serves configfs-tsm (the `provider` attribute).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Provider {
    /// `sev_guest`: AMD SEV-SNP.
    SevGuest,
    /// `tdx_guest`: Intel TDX.
    TdxGuest,
}

impl Provider {
    fn parse(text: &str) -> Result<Self, TeeError> {
        match text.trim() {
            "sev_guest" => Ok(Self::SevGuest),
            "tdx_guest" => Ok(Self::TdxGuest),
            other => Err(TeeError::UnknownProvider {
                provider: other.chars().take(64).collect(),
            }),
        }
    }

    /// The TEE this provider's evidence comes from.
    pub fn tee(self) -> TeeKind {
        match self {
            Self::SevGuest => TeeKind::Snp,
            Self::TdxGuest => TeeKind::Tdx,
        }
    }
}

/// Stands in for the kernel in unit tests: configfs creates an entry's attributes on `mkdir`
/// and drops them on `rmdir`; a plain directory does neither.
pub(crate) trait FakeKernel: Send + Sync + fmt::Debug {
    /// Lays out the attribute files of a fresh entry.
    fn populate(&self, entry: &Path) -> std::io::Result<()>;
    /// Removes them again so that `rmdir` succeeds.
    fn depopulate(&self, entry: &Path) -> std::io::Result<()>;
}

/// The configfs-tsm attester.
#[derive(Debug, Clone)]
pub struct ConfigfsTsm {
    root: PathBuf,
    provider: Provider,
    kernel: Option<Arc<dyn FakeKernel>>,
}

impl ConfigfsTsm {
    /// Probes configfs-tsm under `root` (normally [`TSM_REPORT_ROOT`]): makes and removes one
    /// entry and reads its provider. Fails when the directory is absent or no TEE driver
    /// serves it.
    pub fn probe(root: &Path) -> Result<Self, TeeError> {
        Self::probe_with(root, None)
    }

    pub(crate) fn probe_with(
        root: &Path,
        kernel: Option<Arc<dyn FakeKernel>>,
    ) -> Result<Self, TeeError> {
        let entry = Entry::create(root, kernel.clone())?;
        let provider = Provider::parse(&entry.read_text("provider")?)?;
        drop(entry);
        Ok(Self {
            root: root.to_path_buf(),
            provider,
            kernel,
        })
    }

    /// The driver behind configfs-tsm.
    pub fn provider(&self) -> Provider {
        self.provider
    }
}

impl Attester for ConfigfsTsm {
    fn kind(&self) -> AttesterKind {
        AttesterKind::ConfigfsTsm(self.provider)
    }

    fn evidence(&self, report_data: &[u8; 64]) -> Result<Evidence, TeeError> {
        let entry = Entry::create(&self.root, self.kernel.clone())?;
        entry.write("inblob", report_data)?;
        let outblob = entry.read("outblob")?;
        // Read back after the outblob: a generation other than 1 means another writer
        // touched our entry, and the outblob might answer their inblob.
        let generation = entry.read_text("generation")?;
        if generation.trim() != "1" {
            return Err(TeeError::Generation {
                path: entry.dir.clone(),
                found: generation.trim().chars().take(32).collect(),
            });
        }
        let provider = Provider::parse(&entry.read_text("provider")?)?;
        if provider != self.provider {
            return Err(TeeError::UnknownProvider {
                provider: format!("{provider:?} (was {:?} at probe)", self.provider),
            });
        }
        match provider {
            Provider::SevGuest => {
                // An absent or empty auxblob means the host supplied no certificates.
                let certs = match entry.read_optional("auxblob")? {
                    Some(blob) => cert_table::parse(&blob)?,
                    None => Vec::new(),
                };
                snp_evidence(INTERFACE, outblob, certs, report_data).map(Evidence::Snp)
            }
            // No collateral: the verifier brings its own (Intel PCS), as `attest verify
            // --collateral` does.
            Provider::TdxGuest => tdx_evidence(INTERFACE, outblob, report_data).map(Evidence::Tdx),
        }
    }
}

/// One report entry; removed on drop.
#[derive(Debug)]
struct Entry {
    dir: PathBuf,
    kernel: Option<Arc<dyn FakeKernel>>,
}

impl Entry {
    fn create(root: &Path, kernel: Option<Arc<dyn FakeKernel>>) -> Result<Self, TeeError> {
        if !root.is_dir() {
            return Err(io_error(
                "find",
                root,
                std::io::Error::from(std::io::ErrorKind::NotFound),
            ));
        }
        // A stale entry of a dead process with our pid may exist: try a few names.
        let mut last = None;
        for _ in 0..8 {
            let n = NEXT_ENTRY.fetch_add(1, Ordering::Relaxed);
            let dir = root.join(format!("confidant-{}-{n}", std::process::id()));
            match std::fs::create_dir(&dir) {
                Ok(()) => {
                    let entry = Self { dir, kernel };
                    if let Some(k) = &entry.kernel {
                        k.populate(&entry.dir)
                            .map_err(|e| io_error("populate report entry", &entry.dir, e))?;
                    }
                    return Ok(entry);
                }
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => last = Some(e),
                Err(e) => return Err(io_error("create report entry", &dir, e)),
            }
        }
        let e = last.unwrap_or_else(|| std::io::Error::from(std::io::ErrorKind::AlreadyExists));
        Err(io_error("create report entry", root, e))
    }

    fn path(&self, attribute: &str) -> PathBuf {
        self.dir.join(attribute)
    }

    fn write(&self, attribute: &str, bytes: &[u8]) -> Result<(), TeeError> {
        let path = self.path(attribute);
        // The attribute exists already; never create files of our own in configfs.
        std::fs::OpenOptions::new()
            .write(true)
            .open(&path)
            .and_then(|mut f| f.write_all(bytes))
            .map_err(|e| io_error("write", &path, e))
    }

    fn read(&self, attribute: &str) -> Result<Vec<u8>, TeeError> {
        let path = self.path(attribute);
        std::fs::read(&path).map_err(|e| io_error("read", &path, e))
    }

    fn read_optional(&self, attribute: &str) -> Result<Option<Vec<u8>>, TeeError> {
        let path = self.path(attribute);
        match std::fs::read(&path) {
            Ok(bytes) if bytes.is_empty() => Ok(None),
            Ok(bytes) => Ok(Some(bytes)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(io_error("read", &path, e)),
        }
    }

    fn read_text(&self, attribute: &str) -> Result<String, TeeError> {
        Ok(String::from_utf8_lossy(&self.read(attribute)?).into_owned())
    }
}

impl Drop for Entry {
    fn drop(&mut self) {
        if let Some(k) = &self.kernel
            && let Err(e) = k.depopulate(&self.dir)
        {
            tracing::warn!(entry = %self.dir.display(), error = %e, "cannot clear report entry");
        }
        if let Err(e) = std::fs::remove_dir(&self.dir) {
            tracing::warn!(entry = %self.dir.display(), error = %e, "cannot remove report entry");
        }
    }
}

fn io_error(step: &'static str, path: &Path, source: std::io::Error) -> TeeError {
    TeeError::Io {
        interface: INTERFACE,
        step,
        path: path.to_path_buf(),
        source,
    }
}
