//! GPU evidence through NVML: `nvmlDeviceGetConfComputeGpuAttestationReport` (the SPDM
//! GET_MEASUREMENTS request ‖ response for a nonce) and
//! `nvmlDeviceGetConfComputeGpuCertificate` (the attestation certificate chain, PEM).
//!
//! NVML (`libnvidia-ml.so.1`, installed with the driver) is loaded at run time on first use,
//! through a thin binding of the six functions needed (`nvml-wrapper` does not expose the
//! confidential-computing calls in the version the lock file allows; `cudarc` 0.19 has no NVML).
//! A missing library or function is an error naming it, so a host without NVML reports "no
//! GPU evidence" cleanly. Without the `cuda` feature there is no NVML: every collection says so.

use super::gpu::GpuSource;
use super::{GpuEvidence, TeeError};

/// NVML, loaded on first use (`cuda` builds).
#[derive(Debug, Default)]
pub struct Nvml {
    #[cfg(feature = "cuda")]
    library: std::sync::OnceLock<Result<binding::Library, String>>,
}

impl GpuSource for Nvml {
    fn collect(&self, device: u32, nonce: &[u8; 32]) -> Result<GpuEvidence, TeeError> {
        #[cfg(feature = "cuda")]
        {
            let library = self
                .library
                .get_or_init(binding::Library::open)
                .as_ref()
                .map_err(|reason| TeeError::Gpu {
                    device,
                    reason: reason.clone(),
                })?;
            library
                .evidence(device, nonce)
                .map_err(|reason| TeeError::Gpu { device, reason })
        }
        #[cfg(not(feature = "cuda"))]
        {
            let _ = nonce;
            Err(TeeError::Gpu {
                device,
                reason: "this build has no `cuda` feature, so no NVML: no GPU evidence".to_owned(),
            })
        }
    }
}

/// The raw NVML interface: C types, symbols, and the calls wrapped as safe functions.
#[cfg(feature = "cuda")]
#[allow(unsafe_code)]
mod binding {
    use std::ffi::{CStr, c_char, c_uint, c_void};

    use super::GpuEvidence;

    /// `nvmlReturn_t`.
    type NvmlReturn = c_uint;
    /// `nvmlDevice_t`, an opaque handle.
    type NvmlDevice = *mut c_void;

    const NVML_SUCCESS: NvmlReturn = 0;
    /// The NVML library's soname, as the driver installs it.
    const LIBRARY: &str = "libnvidia-ml.so.1";

    /// `NVML_CC_GPU_CEC_NONCE_SIZE`, `NVML_CC_GPU_ATTESTATION_REPORT_SIZE`,
    /// `NVML_CC_GPU_CEC_ATTESTATION_REPORT_SIZE` (nvml.h).
    const NONCE_SIZE: usize = 0x20;
    const REPORT_SIZE: usize = 0x2000;
    const CEC_REPORT_SIZE: usize = 0x1000;
    /// `NVML_GPU_CERT_CHAIN_SIZE`, `NVML_GPU_ATTESTATION_CERT_CHAIN_SIZE` (nvml.h).
    const CERT_CHAIN_SIZE: usize = 0x1000;
    const ATTESTATION_CERT_CHAIN_SIZE: usize = 0x1400;

    /// `nvmlConfComputeGpuAttestationReport_t` (nvml.h, driver 535 and later). NVML writes
    /// every field; only the report and its size are read.
    #[repr(C)]
    #[allow(dead_code)]
    struct AttestationReport {
        is_cec_attestation_report_present: c_uint,
        attestation_report_size: c_uint,
        cec_attestation_report_size: c_uint,
        nonce: [u8; NONCE_SIZE],
        attestation_report: [u8; REPORT_SIZE],
        cec_attestation_report: [u8; CEC_REPORT_SIZE],
    }

    /// `nvmlConfComputeGpuCertificate_t` (nvml.h). Only the attestation chain is read.
    #[repr(C)]
    #[allow(dead_code)]
    struct Certificate {
        cert_chain_size: c_uint,
        attestation_cert_chain_size: c_uint,
        cert_chain: [u8; CERT_CHAIN_SIZE],
        attestation_cert_chain: [u8; ATTESTATION_CERT_CHAIN_SIZE],
    }

    type InitFn = unsafe extern "C" fn() -> NvmlReturn;
    type HandleFn = unsafe extern "C" fn(c_uint, *mut NvmlDevice) -> NvmlReturn;
    type ReportFn = unsafe extern "C" fn(NvmlDevice, *mut AttestationReport) -> NvmlReturn;
    type CertificateFn = unsafe extern "C" fn(NvmlDevice, *mut Certificate) -> NvmlReturn;
    type ErrorStringFn = unsafe extern "C" fn(NvmlReturn) -> *const c_char;

    /// NVML, loaded and initialized; shut down on drop.
    pub(super) struct Library {
        // The function pointers below point into this library: it outlives them because
        // they are fields of the same struct and are never handed out.
        _library: libloading::Library,
        shutdown: InitFn,
        handle_by_index: HandleFn,
        report: ReportFn,
        certificate: CertificateFn,
        error_string: ErrorStringFn,
    }

    impl std::fmt::Debug for Library {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("Nvml")
        }
    }

    /// Copies a symbol's address out of `library` as a function pointer of type `T`.
    ///
    /// # Safety
    ///
    /// `T` must be the C prototype of `name` in nvml.h, and the pointer must not be used after
    /// `library` is unloaded.
    unsafe fn symbol<T: Copy>(library: &libloading::Library, name: &[u8]) -> Result<T, String> {
        // SAFETY: the caller guarantees `T` is the symbol's true prototype; libloading checks
        // that the symbol exists (a null or missing symbol is an error).
        let symbol = unsafe { library.get::<T>(name) }.map_err(|e| {
            format!(
                "NVML has no {}: {e} (driver too old for confidential computing?)",
                String::from_utf8_lossy(name.strip_suffix(b"\0").unwrap_or(name))
            )
        })?;
        Ok(*symbol)
    }

    impl Library {
        /// Loads `libnvidia-ml.so.1`, resolves the functions and calls `nvmlInit_v2`.
        pub(super) fn open() -> Result<Self, String> {
            // SAFETY: loading NVML runs its initializers, which only register the library;
            // it is the driver's own library, loaded by name from the system's search path.
            let library = unsafe { libloading::Library::new(LIBRARY) }
                .map_err(|e| format!("NVML is not available ({LIBRARY}: {e})"))?;
            // SAFETY: each type below is the prototype nvml.h gives for the symbol named; the
            // pointers are stored next to `library` in `Self` and never outlive it.
            let (init, shutdown, handle_by_index, report, certificate, error_string) = unsafe {
                (
                    symbol::<InitFn>(&library, b"nvmlInit_v2\0")?,
                    symbol::<InitFn>(&library, b"nvmlShutdown\0")?,
                    symbol::<HandleFn>(&library, b"nvmlDeviceGetHandleByIndex_v2\0")?,
                    symbol::<ReportFn>(
                        &library,
                        b"nvmlDeviceGetConfComputeGpuAttestationReport\0",
                    )?,
                    symbol::<CertificateFn>(&library, b"nvmlDeviceGetConfComputeGpuCertificate\0")?,
                    symbol::<ErrorStringFn>(&library, b"nvmlErrorString\0")?,
                )
            };
            // SAFETY: nvmlInit_v2 takes no arguments; NVML counts its initializations, and
            // `Drop` balances this one with nvmlShutdown (only a successful one: `Self` is
            // built after it).
            let status = unsafe { init() };
            if status != NVML_SUCCESS {
                // SAFETY: as in `error`: any status, a static NUL-terminated string or null.
                let reason = unsafe { describe(error_string, status) };
                return Err(format!("nvmlInit_v2 failed: {reason}"));
            }
            Ok(Self {
                _library: library,
                shutdown,
                handle_by_index,
                report,
                certificate,
                error_string,
            })
        }

        /// NVML's description of a status code.
        fn error(&self, status: NvmlReturn) -> String {
            // SAFETY: `error_string` is nvmlErrorString of the library `self` keeps loaded.
            unsafe { describe(self.error_string, status) }
        }

        /// The evidence of device `index` answering `nonce`.
        pub(super) fn evidence(&self, index: u32, nonce: &[u8; 32]) -> Result<GpuEvidence, String> {
            let mut device: NvmlDevice = std::ptr::null_mut();
            // SAFETY: `device` is a valid out-pointer for one handle; NVML checks the index.
            let status = unsafe { (self.handle_by_index)(index, &mut device) };
            if status != NVML_SUCCESS || device.is_null() {
                return Err(format!("no NVML device {index}: {}", self.error(status)));
            }
            // About 12 KiB: on the heap, zeroed, so that no uninitialized byte is ever read.
            let mut report = Box::new(AttestationReport {
                is_cec_attestation_report_present: 0,
                attestation_report_size: 0,
                cec_attestation_report_size: 0,
                nonce: *nonce,
                attestation_report: [0; REPORT_SIZE],
                cec_attestation_report: [0; CEC_REPORT_SIZE],
            });
            // SAFETY: `device` came from NVML above; `report` is a live, writable struct of
            // the layout nvml.h declares, with the nonce as input.
            let status = unsafe { (self.report)(device, &mut *report) };
            if status != NVML_SUCCESS {
                return Err(format!(
                    "nvmlDeviceGetConfComputeGpuAttestationReport: {} (is the GPU in CC mode?)",
                    self.error(status)
                ));
            }
            let len = report.attestation_report_size as usize;
            let bytes = report
                .attestation_report
                .get(..len)
                .filter(|b| !b.is_empty())
                .ok_or_else(|| format!("NVML returned a report of {len} bytes"))?
                .to_vec();
            let mut cert = Box::new(Certificate {
                cert_chain_size: 0,
                attestation_cert_chain_size: 0,
                cert_chain: [0; CERT_CHAIN_SIZE],
                attestation_cert_chain: [0; ATTESTATION_CERT_CHAIN_SIZE],
            });
            // SAFETY: as above, a live, writable struct of the declared layout.
            let status = unsafe { (self.certificate)(device, &mut *cert) };
            if status != NVML_SUCCESS {
                return Err(format!(
                    "nvmlDeviceGetConfComputeGpuCertificate: {}",
                    self.error(status)
                ));
            }
            let len = cert.attestation_cert_chain_size as usize;
            let pem = cert
                .attestation_cert_chain
                .get(..len)
                .filter(|b| !b.is_empty())
                .ok_or_else(|| format!("NVML returned a certificate chain of {len} bytes"))?;
            let pem = std::str::from_utf8(pem)
                .map_err(|e| format!("the certificate chain is not PEM text: {e}"))?
                .trim_end_matches('\0')
                .to_owned();
            Ok(GpuEvidence::new(bytes, pem))
        }
    }

    /// NVML's description of `status`.
    ///
    /// # Safety
    ///
    /// `error_string` must be nvmlErrorString of a loaded NVML.
    unsafe fn describe(error_string: ErrorStringFn, status: NvmlReturn) -> String {
        // SAFETY: nvmlErrorString accepts any status and returns a pointer to a static,
        // NUL-terminated string (or null, handled below); the caller keeps NVML loaded.
        let text = unsafe { error_string(status) };
        if text.is_null() {
            return format!("NVML error {status}");
        }
        // SAFETY: non-null, NUL-terminated and static, per nvml.h.
        let text = unsafe { CStr::from_ptr(text) };
        format!("{} (NVML error {status})", text.to_string_lossy())
    }

    impl Drop for Library {
        fn drop(&mut self) {
            // SAFETY: balances the successful nvmlInit_v2 of `open`.
            let _ = unsafe { (self.shutdown)() };
        }
    }

    // The structs have the sizes nvml.h implies (no padding): a layout mistake fails the build.
    const _: () = {
        assert!(
            std::mem::size_of::<AttestationReport>()
                == 12 + NONCE_SIZE + REPORT_SIZE + CEC_REPORT_SIZE
        );
        assert!(
            std::mem::size_of::<Certificate>() == 8 + CERT_CHAIN_SIZE + ATTESTATION_CERT_CHAIN_SIZE
        );
    };
}
