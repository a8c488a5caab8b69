//! Files the server, the broker and the CLI keep on the host's disk: private directories,
//! atomically replaced files (secrets included) and 32-byte key files.
//!
//! A leaf module: it depends on nothing else in the crate, so the key broker and the CLI can
//! write files without compiling against the inference server.
//!
//! Writes go through a temporary file that is created fresh (`O_CREAT | O_EXCL`, mode 0600,
//! a random name in the target's directory), written, given its final mode, fsynced and
//! renamed over the target, after which the directory itself is fsynced. A pre-created
//! `NAME.tmp` or a symlink in the directory therefore never captures the bytes, and a crash
//! leaves either the old file or the new one.

use std::io::Write;
use std::path::{Path, PathBuf};

use zeroize::Zeroizing;

#[cfg(test)]
mod tests;

/// Why a file operation failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum FileError {
    /// An I/O error on `path`.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
    /// A key file holds the wrong number of bytes.
    #[error("{}: key file holds {found} bytes, expected {expected}", path.display())]
    KeyLength {
        /// The key file.
        path: PathBuf,
        /// Its length.
        found: usize,
        /// The length a key has.
        expected: usize,
    },
    /// The operating system's random generator failed.
    #[error("random generator: {0}")]
    Random(String),
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> FileError + '_ {
    move |source| FileError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Creates a directory (and parents) readable only by its owner. An existing directory keeps
/// its mode: use [`restrict_dir`] to tighten it.
pub fn create_private_dir(dir: &Path) -> Result<(), FileError> {
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(io(dir))
}

/// Writes `bytes` to `path` atomically with the given mode (see the module docs). The
/// temporary file is mode 0600 while it is written, whatever `mode` is.
pub fn write_file(path: &Path, bytes: &[u8], mode: u32) -> Result<(), FileError> {
    use std::os::unix::fs::PermissionsExt;
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    // tempfile creates the file with O_CREAT | O_EXCL (never following a symlink or reusing
    // a file that exists) and mode 0600, under a random name.
    let mut tmp = tempfile::Builder::new()
        .prefix(&format!(".{name}."))
        .suffix(".tmp")
        .tempfile_in(dir)
        .map_err(io(dir))?;
    tmp.write_all(bytes).map_err(io(path))?;
    tmp.as_file()
        .set_permissions(std::fs::Permissions::from_mode(mode))
        .map_err(io(path))?;
    tmp.as_file().sync_all().map_err(io(path))?;
    tmp.persist(path).map_err(|e| FileError::Io {
        path: path.to_path_buf(),
        source: e.error,
    })?;
    sync_dir(dir)
}

/// Fsyncs a directory, so that a rename or a new file in it survives a crash.
pub fn sync_dir(dir: &Path) -> Result<(), FileError> {
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io(dir))
}

/// Reads a 32-byte key file, or creates one with fresh random bytes (mode 0600, never
/// replacing a file that appears meanwhile) when there is none.
pub fn load_or_create_key(path: &Path) -> Result<Zeroizing<[u8; 32]>, FileError> {
    use std::os::unix::fs::OpenOptionsExt;
    let mut key = Zeroizing::new([0u8; 32]);
    match std::fs::read(path).map(Zeroizing::new) {
        Ok(bytes) if bytes.len() == 32 => {
            key.copy_from_slice(&bytes);
            Ok(key)
        }
        Ok(bytes) => Err(FileError::KeyLength {
            path: path.to_path_buf(),
            found: bytes.len(),
            expected: 32,
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            getrandom::fill(key.as_mut()).map_err(|e| FileError::Random(e.to_string()))?;
            let mut f = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .custom_flags(libc::O_NOFOLLOW)
                .mode(0o600)
                .open(path)
                .map_err(io(path))?;
            f.write_all(key.as_ref()).map_err(io(path))?;
            f.sync_all().map_err(io(path))?;
            if let Some(dir) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
                sync_dir(dir)?;
            }
            Ok(key)
        }
        Err(e) => Err(io(path)(e)),
    }
}
