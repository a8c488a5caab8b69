//! Process hardening and locked, zeroizing memory for secrets.
//!
//! This is one of the few places in the crate that may use `unsafe` (the others are the GPU
//! launcher and `storage::wal_index`, a read-only mapping of SQLite's WAL-index header).
//! Everything here wraps a libc call whose preconditions are checked in safe code:
//!
//! - [`harden_process`] turns off core dumps and ptrace-style access (`PR_SET_DUMPABLE=0`,
//!   `RLIMIT_CORE=0`), so plaintext weights and keys cannot leave through a crash dump.
//! - [`SecretBuffer`] holds plaintext weights and keys in memory that is `mlock`ed (never
//!   swapped), excluded from core dumps (`MADV_DONTDUMP`) and zeroized before it is freed.
//! - [`pin_thread_count`] fixes `RAYON_NUM_THREADS` before any thread exists. candle 0.11
//!   otherwise re-reads the cgroup CPU quota from /proc on every matmul (~30 µs).
#![allow(unsafe_code)]

use std::sync::atomic::{AtomicBool, Ordering};

use zeroize::Zeroize;

/// What [`harden_process`] managed to do. Failures are reported, not fatal: a development
/// machine may refuse some of them, and the caller decides how loudly to warn.
#[derive(Debug, Clone, Default)]
pub struct Hardening {
    /// `prctl(PR_SET_DUMPABLE, 0)` succeeded.
    pub not_dumpable: bool,
    /// `setrlimit(RLIMIT_CORE, 0)` succeeded.
    pub no_core_dumps: bool,
    /// The soft `RLIMIT_MEMLOCK` in bytes (`None` means unlimited).
    pub memlock_limit: Option<u64>,
}

/// Disables core dumps and makes the process non-dumpable. Call once at server start.
pub fn harden_process() -> Hardening {
    let mut out = Hardening::default();
    #[cfg(target_os = "linux")]
    {
        // SAFETY: prctl with PR_SET_DUMPABLE takes plain integer arguments and touches no
        // memory of ours.
        out.not_dumpable = unsafe { libc::prctl(libc::PR_SET_DUMPABLE, 0, 0, 0, 0) } == 0;
    }
    let zero = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: `zero` is a valid, initialized rlimit that outlives the call.
    out.no_core_dumps = unsafe { libc::setrlimit(libc::RLIMIT_CORE, &zero) } == 0;
    out.memlock_limit = memlock_limit();
    out
}

/// The soft `RLIMIT_MEMLOCK`, in bytes; `None` when unlimited or unknown.
pub fn memlock_limit() -> Option<u64> {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: `lim` is a valid, writable rlimit that outlives the call.
    let rc = unsafe { libc::getrlimit(libc::RLIMIT_MEMLOCK, &mut lim) };
    if rc != 0 || lim.rlim_cur == libc::RLIM_INFINITY {
        None
    } else {
        Some(lim.rlim_cur)
    }
}

/// A 32-byte seed from the OS CSPRNG, zeroized when dropped: what every random stream the
/// server keys for itself (request ids, screening noise) starts from.
pub fn os_seed() -> Result<zeroize::Zeroizing<[u8; 32]>, getrandom::Error> {
    let mut seed = zeroize::Zeroizing::new([0u8; 32]);
    getrandom::fill(seed.as_mut())?;
    Ok(seed)
}

/// Sets `RAYON_NUM_THREADS` (unless the user set it) so that candle sizes its work once.
/// Returns the count.
///
/// # Safety
///
/// No other thread may exist when it is called (call it first thing in `main`, before any
/// runtime, pool or logger starts a thread): it writes the environment with
/// [`std::env::set_var`], and a concurrent read of the environment from another thread
/// (including one inside libc, such as `getenv` in a resolver) is undefined behaviour.
///
/// ```compile_fail,E0133
/// // An `unsafe fn`: calling it outside an `unsafe` block does not compile. (It was a
/// // safe `fn` before issue 16, when this compiled and so this doctest failed.)
/// let _ = confidant::secure::pin_thread_count();
/// ```
pub unsafe fn pin_thread_count() -> usize {
    if let Some(n) = std::env::var("RAYON_NUM_THREADS")
        .ok()
        .and_then(|v| v.parse::<usize>().ok())
        .filter(|n| *n > 0)
    {
        return n;
    }
    let n = std::thread::available_parallelism().map_or(1, |n| n.get());
    // SAFETY: the caller's obligation (see `# Safety`): no other thread exists yet, so
    // nothing can read the environment concurrently.
    unsafe { std::env::set_var("RAYON_NUM_THREADS", n.to_string()) };
    n
}

/// Restores the default action of `SIGPIPE` (the Rust runtime ignores it), so that a
/// command whose output goes to a closed pipe (`confidant inspect … | head`) ends quietly,
/// as other Unix tools do, instead of panicking in `println!`. Only for commands that write
/// to stdout and exit: a server keeps the runtime's setting (its sockets never raise
/// `SIGPIPE` anyway: Rust writes to them with `MSG_NOSIGNAL`).
pub fn restore_default_sigpipe() {
    // SAFETY: `signal` with a valid signal number and `SIG_DFL` only changes this process's
    // disposition of that signal; no memory is shared with the call.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
}

static MLOCK_WARNED: AtomicBool = AtomicBool::new(false);

/// Buffers at least this large are mapped directly with transparent huge pages.
const HUGE: usize = 2 << 20;

/// A fixed-size byte buffer for secrets (keys, plaintext weights).
///
/// The memory is allocated once and never reallocated (so no unzeroized copy is left
/// behind), locked in RAM where the limit allows, excluded from core dumps, and zeroized on
/// drop. Its pages are its own (page-aligned, whole pages), so unlocking one buffer never
/// unlocks another. It has no `Debug`, `Clone` or `Serialize`.
///
/// Small buffers come from the allocator and are locked at once. Large ones (≥ 2 MiB, model
/// weights) are an anonymous `mmap` with transparent huge pages, locked with
/// `mlock2(MLOCK_ONFAULT)`: anonymous pages are already zero, so nothing is touched up
/// front, and the pages fault in (2 MiB at a time) on whichever threads first write them,
/// which for a sealed model is the parallel decryption. Locking and zeroing 64 MiB in one
/// thread first cost several times the decryption itself.
pub struct SecretBuffer {
    ptr: std::ptr::NonNull<u8>,
    len: usize,
    alloc: Allocation,
    locked: bool,
}

enum Allocation {
    Heap(std::alloc::Layout),
    Mapped(usize),
}

// SAFETY: SecretBuffer owns its allocation exclusively (like Box<[u8]>); shared access only
// hands out `&[u8]`, and mutation needs `&mut self`.
unsafe impl Send for SecretBuffer {}
// SAFETY: as above; `&SecretBuffer` only exposes `&[u8]`.
unsafe impl Sync for SecretBuffer {}

impl SecretBuffer {
    /// Allocates `len` zero bytes and tries to lock them in RAM.
    ///
    /// # Panics
    /// Panics (via `handle_alloc_error`) if memory cannot be had, as `Vec` does.
    pub fn zeroed(len: usize) -> Self {
        if len >= HUGE
            && let Some(b) = Self::mapped(len)
        {
            return b;
        }
        let page = page_size();
        let size = len.div_ceil(page).max(1) * page;
        let Ok(layout) = std::alloc::Layout::from_size_align(size, page) else {
            // Only reachable for absurd sizes near usize::MAX; treat like allocation failure.
            panic!("secret buffer of {len} bytes cannot be laid out");
        };
        // SAFETY: layout has a non-zero size (at least one page).
        let raw = unsafe { std::alloc::alloc_zeroed(layout) };
        let Some(ptr) = std::ptr::NonNull::new(raw) else {
            std::alloc::handle_alloc_error(layout)
        };
        let locked = lock_region(ptr.as_ptr(), size);
        Self {
            ptr,
            len,
            alloc: Allocation::Heap(layout),
            locked,
        }
    }

    /// An anonymous huge-page mapping locked on fault; `None` if mmap fails (the caller
    /// falls back to the allocator).
    fn mapped(len: usize) -> Option<Self> {
        let size = len.div_ceil(HUGE) * HUGE;
        // SAFETY: a fresh private anonymous mapping; no existing memory is affected.
        let raw = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                size,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        if raw == libc::MAP_FAILED {
            return None;
        }
        let ptr = std::ptr::NonNull::new(raw.cast::<u8>())?;
        #[cfg(target_os = "linux")]
        {
            // SAFETY: advisory calls on the mapping made above.
            unsafe {
                let _ = libc::madvise(raw, size, libc::MADV_HUGEPAGE);
                let _ = libc::madvise(raw, size, libc::MADV_DONTDUMP);
            }
        }
        #[cfg(target_os = "linux")]
        // SAFETY: locks (on fault) exactly the mapping made above.
        let locked = unsafe { libc::mlock2(raw, size, libc::MLOCK_ONFAULT) } == 0
            || lock_region(ptr.as_ptr(), size);
        #[cfg(not(target_os = "linux"))]
        let locked = lock_region(ptr.as_ptr(), size);
        if !locked {
            warn_mlock(len);
        }
        Some(Self {
            ptr,
            len,
            alloc: Allocation::Mapped(size),
            locked,
        })
    }

    /// Copies `src` into a new locked buffer. The caller remains responsible for `src`.
    pub fn copy_from(src: &[u8]) -> Self {
        let mut b = Self::zeroed(src.len());
        b.secret_bytes_mut().copy_from_slice(src);
        b
    }

    /// The secret bytes.
    pub fn secret_bytes(&self) -> &[u8] {
        // SAFETY: ptr is valid for at least `len` initialized (zeroed) bytes for the life of
        // self, and no `&mut` alias can exist while `&self` is borrowed.
        unsafe { std::slice::from_raw_parts(self.ptr.as_ptr(), self.len) }
    }

    /// The secret bytes, writable (for decrypting into).
    pub fn secret_bytes_mut(&mut self) -> &mut [u8] {
        // SAFETY: as in secret_bytes, and `&mut self` guarantees exclusivity.
        unsafe { std::slice::from_raw_parts_mut(self.ptr.as_ptr(), self.len) }
    }

    /// The length in bytes.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether the buffer is empty.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Whether locking succeeded for this buffer.
    pub fn is_locked(&self) -> bool {
        self.locked
    }
}

impl Drop for SecretBuffer {
    fn drop(&mut self) {
        let size = match self.alloc {
            Allocation::Heap(layout) => layout.size(),
            Allocation::Mapped(size) => size,
        };
        // SAFETY: ptr is valid for `size` bytes and exclusively ours.
        let all = unsafe { std::slice::from_raw_parts_mut(self.ptr.as_ptr(), size) };
        all.zeroize();
        if self.locked {
            unlock_region(self.ptr.as_ptr(), size);
        }
        match self.alloc {
            // SAFETY: allocated in `zeroed` with exactly this layout, freed once.
            Allocation::Heap(layout) => unsafe { std::alloc::dealloc(self.ptr.as_ptr(), layout) },
            Allocation::Mapped(size) => {
                // SAFETY: the mapping made in `mapped`, unmapped once.
                let _ = unsafe { libc::munmap(self.ptr.as_ptr().cast(), size) };
            }
        }
    }
}

/// Locks an existing region that this process owns (for example a tensor's storage) and
/// excludes it from core dumps. Returns whether `mlock` succeeded.
pub fn lock_slice<T>(region: &[T]) -> bool {
    lock_region(region.as_ptr().cast::<u8>(), std::mem::size_of_val(region))
}

/// Undoes [`lock_slice`].
pub fn unlock_slice<T>(region: &[T]) {
    unlock_region(region.as_ptr().cast::<u8>(), std::mem::size_of_val(region));
}

fn page_size() -> usize {
    // SAFETY: sysconf has no memory preconditions.
    usize::try_from(unsafe { libc::sysconf(libc::_SC_PAGESIZE) })
        .ok()
        .filter(|p| p.is_power_of_two())
        .unwrap_or(4096)
}

fn page_span(ptr: *const u8, len: usize) -> (*mut libc::c_void, usize) {
    let page = page_size();
    let start = (ptr as usize) & !(page - 1);
    let end = (ptr as usize).saturating_add(len);
    (start as *mut libc::c_void, end - start)
}

fn lock_region(ptr: *const u8, len: usize) -> bool {
    if len == 0 {
        return true;
    }
    let (start, span) = page_span(ptr, len);
    // SAFETY: the span covers pages that contain a live allocation of ours (`ptr..ptr+len`);
    // mlock and madvise(MADV_DONTDUMP) change page attributes only, not contents.
    let ok = unsafe { libc::mlock(start, span) } == 0;
    #[cfg(target_os = "linux")]
    {
        // SAFETY: as above; MADV_DONTDUMP is advisory and never frees memory.
        let _ = unsafe { libc::madvise(start, span, libc::MADV_DONTDUMP) };
    }
    if !ok {
        warn_mlock(len);
    }
    ok
}

fn warn_mlock(len: usize) {
    if !MLOCK_WARNED.swap(true, Ordering::Relaxed) {
        let limit = memlock_limit().map_or_else(|| "unlimited".to_string(), |l| l.to_string());
        tracing::warn!(
            bytes = len,
            memlock_limit = %limit,
            "mlock failed: secrets may be swapped to disk. Raise RLIMIT_MEMLOCK \
             (ulimit -l, or LimitMEMLOCK= in the systemd unit) to keep them in RAM"
        );
    }
}

fn unlock_region(ptr: *const u8, len: usize) {
    if len == 0 {
        return;
    }
    let (start, span) = page_span(ptr, len);
    // SAFETY: same span as the matching lock_region on a live allocation; munlock only
    // changes page attributes. Other locked buffers sharing an edge page may become
    // swappable, which costs protection, never memory safety.
    let _ = unsafe { libc::munlock(start, span) };
}

#[cfg(test)]
mod tests;
