//! A read-only view of the header of SQLite's WAL index (`<db>-shm`), for
//! [`Database::commit_marker`](super::Database::commit_marker).
//!
//! The header is 96 bytes at the start of the shared-memory file: two copies of the 48-byte
//! `WalIndexHdr` ("WAL-index format" in SQLite's file-format documentation). A writer that
//! commits updates the second copy, then the first, before the commit returns; a reader that
//! finds both copies equal holds a whole header. Mapping the file lets every request compare
//! the header without a system call (a `pread` costs about 1 µs on a VM).
//!
//! This is one of the few modules that may use `unsafe`: one `mmap`, one `munmap`, and
//! volatile reads of memory that other processes write.
#![allow(unsafe_code)]

use std::fs::File;
use std::os::fd::AsRawFd;
use std::ptr::NonNull;

/// Bytes of the two header copies.
pub(super) const HEADER: usize = 96;

/// The mapped first page of a WAL-index file.
pub(super) struct WalIndexView {
    ptr: NonNull<u8>,
    len: usize,
}

// SAFETY: the view is read-only and every read is a volatile copy; nothing in it is tied to
// the thread that mapped it.
unsafe impl Send for WalIndexView {}
// SAFETY: as above; concurrent volatile reads from several threads are fine.
unsafe impl Sync for WalIndexView {}

impl WalIndexView {
    /// Maps the start of `file`, if it holds at least a header.
    ///
    /// SQLite never shrinks the file while a connection (the caller's own) has it open: it
    /// truncates it only when it is the first connection to open the database, which it
    /// cannot be while the caller's connection holds its shared lock. So the mapped bytes
    /// stay backed by the file for as long as the caller keeps its connection.
    pub(super) fn map(file: &File) -> Option<Self> {
        let size = file.metadata().ok()?.len();
        if size < HEADER as u64 {
            return None;
        }
        let len = HEADER;
        // SAFETY: a fresh read-only shared mapping of `len` bytes of an open file descriptor
        // whose size (checked above) covers them; the kernel picks the address. The result is
        // checked before use.
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ,
                libc::MAP_SHARED,
                file.as_raw_fd(),
                0,
            )
        };
        if p == libc::MAP_FAILED {
            return None;
        }
        NonNull::new(p.cast::<u8>()).map(|ptr| Self { ptr, len })
    }

    /// The two header copies as they are now, or `None` if they differ (a writer is between
    /// its two updates).
    pub(super) fn header(&self) -> Option<[u8; HEADER]> {
        let mut out = [0u64; HEADER / 8];
        let base = self.ptr.as_ptr().cast::<u64>();
        for (i, word) in out.iter_mut().enumerate() {
            // SAFETY: `base` is page-aligned (mmap), so every `u64` at `i < 12` is aligned and
            // lies inside the `HEADER` mapped bytes; volatile, since another process writes
            // them.
            *word = unsafe { base.add(i).read_volatile() };
        }
        std::sync::atomic::fence(std::sync::atomic::Ordering::Acquire);
        let mut bytes = [0u8; HEADER];
        for (chunk, word) in bytes.chunks_exact_mut(8).zip(out) {
            chunk.copy_from_slice(&word.to_ne_bytes());
        }
        (bytes[..HEADER / 2] == bytes[HEADER / 2..]).then_some(bytes)
    }
}

impl Drop for WalIndexView {
    fn drop(&mut self) {
        // SAFETY: `ptr` and `len` are exactly what `mmap` returned and was asked for, and the
        // view is unmapped once, here.
        unsafe {
            libc::munmap(self.ptr.as_ptr().cast(), self.len);
        }
    }
}
