//! The GPU backend: device selection, our CUDA kernels (`kernels/*.cu`) and their CPU
//! references, and the loaders that put sealed weights into device memory.
//!
//! Every kernel has a CPU reference with the same semantics, compiled and tested in every
//! build. The kernels themselves are compiled only with the `cuda` feature (nvcc at build
//! time, CUDA libraries at link and run time). Without it, every entry point that would need
//! a GPU returns [`GpuError::NotBuilt`], so a `--device cuda:0` on a CPU build is a clear
//! error at start, never a panic.
//!
//! `noise` and `chacha` (DP noise on the device) are experimental: they exist only with the
//! `experimental` feature, because no server path calls them yet.

use std::fmt;
use std::str::FromStr;

use candle_core::Device;

#[cfg(feature = "cuda")]
pub mod cuda;
pub mod mlp;
pub mod sensitivity;

/// The PTX of every `kernels/*.cu`, compiled by `build.rs` (one `&str` constant per file,
/// named after it in capitals: `ptx::MLP` for `kernels/mlp.cu`).
#[cfg(feature = "cuda")]
pub(crate) mod ptx {
    include!(concat!(env!("OUT_DIR"), "/kernels.rs"));
}

/// How sealed weights reach a CUDA device (`serve --gpu-load`); see `crate::loading`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum LoadPath {
    /// CPU decryption into page-locked staging buffers, double-buffered copies.
    #[default]
    Staged,
    /// Ciphertext to the device, AES-GCM on the device.
    DeviceDecrypt,
}

impl std::str::FromStr for LoadPath {
    type Err = GpuError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "staged" => Ok(Self::Staged),
            "device-decrypt" => Ok(Self::DeviceDecrypt),
            _ => Err(GpuError::LoadPath {
                value: s.to_string(),
            }),
        }
    }
}

/// Why a GPU operation failed.
#[derive(Debug, thiserror::Error)]
pub enum GpuError {
    /// This binary was built without the `cuda` feature.
    #[error(
        "{what} needs CUDA, but this binary was built without it (rebuild with `--features cuda`)"
    )]
    NotBuilt {
        /// What was asked for.
        what: String,
    },
    /// A `--device` value that is not `auto`, `cpu` or `cuda:N`.
    #[error("invalid device {value:?}: {reason} (expected auto, cpu, cuda or cuda:N)")]
    Spec {
        /// The value given.
        value: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// A `--gpu-load` value that is not `staged` or `device-decrypt`.
    #[error("unknown GPU load path {value:?} (expected staged or device-decrypt)")]
    LoadPath {
        /// The value given.
        value: String,
    },
    /// No usable CUDA driver or device.
    #[error("CUDA device {ordinal} is not available: {reason}")]
    Unavailable {
        /// The device asked for.
        ordinal: usize,
        /// The driver's answer.
        reason: String,
    },
    /// A kernel's arguments do not fit its contract (shape, dtype, size).
    #[error("{kernel}: {reason}")]
    Arguments {
        /// The kernel.
        kernel: &'static str,
        /// What is wrong.
        reason: String,
    },
    /// The device-side AES-GCM tag check failed; the device buffers were zeroized.
    #[error(
        "sealed chunk {chunk} failed authentication on the device; the load was aborted and the device buffers zeroized"
    )]
    TagMismatch {
        /// The STREAM chunk index.
        chunk: u64,
    },
    /// The CUDA driver or candle reported an error.
    #[error("CUDA: {0}")]
    Driver(String),
}

impl From<candle_core::Error> for GpuError {
    fn from(e: candle_core::Error) -> Self {
        Self::Driver(e.to_string())
    }
}

/// Where the server runs its models: `--device auto|cpu|cuda:N`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum DeviceSpec {
    /// The first CUDA device if this build has CUDA and a device answers, else the CPU.
    #[default]
    Auto,
    /// The CPU.
    Cpu,
    /// CUDA device N.
    Cuda(usize),
}

/// The largest CUDA ordinal accepted (a sanity bound for the parser, not a hardware limit).
const MAX_ORDINAL: usize = 1023;

impl FromStr for DeviceSpec {
    type Err = GpuError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = |reason| GpuError::Spec {
            value: s.to_string(),
            reason,
        };
        match s {
            "auto" => Ok(Self::Auto),
            "cpu" => Ok(Self::Cpu),
            "cuda" => Ok(Self::Cuda(0)),
            _ => {
                let n = s
                    .strip_prefix("cuda:")
                    .ok_or_else(|| bad("unknown device kind"))?;
                if n.is_empty() || !n.bytes().all(|b| b.is_ascii_digit()) {
                    return Err(bad("the CUDA ordinal must be a decimal number"));
                }
                let n: usize = n
                    .parse()
                    .map_err(|_| bad("the CUDA ordinal is too large"))?;
                if n > MAX_ORDINAL {
                    return Err(bad("the CUDA ordinal is too large"));
                }
                Ok(Self::Cuda(n))
            }
        }
    }
}

impl fmt::Display for DeviceSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Auto => f.write_str("auto"),
            Self::Cpu => f.write_str("cpu"),
            Self::Cuda(n) => write!(f, "cuda:{n}"),
        }
    }
}

/// Whether this binary was built with the `cuda` feature.
pub const fn cuda_built() -> bool {
    cfg!(feature = "cuda")
}

/// The number of CUDA devices the driver reports (0 without the `cuda` feature, or when the
/// driver does not initialise).
pub fn cuda_device_count() -> usize {
    #[cfg(feature = "cuda")]
    {
        cuda::device_count().unwrap_or(0)
    }
    #[cfg(not(feature = "cuda"))]
    {
        0
    }
}

/// The CUDA ordinals whose GPUs models on `spec` run on, as [`open`] picks them: `cuda:N` is
/// N; `auto` is device 0 when this build has CUDA and a device answers, else none; `cpu` none.
/// The server attests with these GPUs' evidence (`tee::gpu::for_devices`).
pub fn serving_ordinals(spec: DeviceSpec) -> Vec<u32> {
    match spec {
        DeviceSpec::Cpu => Vec::new(),
        DeviceSpec::Auto if cuda_device_count() > 0 => vec![0],
        DeviceSpec::Auto => Vec::new(),
        // The parser bounds ordinals far below u32::MAX; an impossible one is kept rather
        // than dropped, so that collecting its evidence fails (fail closed).
        DeviceSpec::Cuda(n) => vec![u32::try_from(n).unwrap_or(u32::MAX)],
    }
}

/// Opens the device `spec` names. `Auto` falls back to the CPU when there is no CUDA build
/// or no device; an explicit `cuda:N` never falls back.
pub fn open(spec: DeviceSpec) -> Result<Device, GpuError> {
    match spec {
        DeviceSpec::Cpu => Ok(Device::Cpu),
        DeviceSpec::Auto => {
            if cuda_device_count() > 0 {
                open(DeviceSpec::Cuda(0))
            } else {
                Ok(Device::Cpu)
            }
        }
        DeviceSpec::Cuda(ordinal) => {
            #[cfg(feature = "cuda")]
            {
                cuda::open(ordinal)
            }
            #[cfg(not(feature = "cuda"))]
            {
                Err(GpuError::NotBuilt {
                    what: format!("--device cuda:{ordinal}"),
                })
            }
        }
    }
}

// Sealed-weight decryption on the device (kernels/aes_gcm.cu), with its CPU reference.
pub mod aes_gcm;
// DP noise on the device (kernels/noise.cu) and its ChaCha20 stream, with their CPU
// references: experimental (feature `experimental`, off by default), because no server path
// calls them yet; DP output noise is drawn by the pipeline on the CPU on every backend.
#[cfg(feature = "experimental")]
pub mod chacha;
#[cfg(feature = "experimental")]
pub mod noise;

#[cfg(test)]
mod host_check_vectors;
/// The values of a contiguous CPU F32 tensor (the CPU references' input access).
pub(crate) fn cpu_f32<'a>(
    s: &'a candle_core::CpuStorage,
    l: &candle_core::Layout,
    what: &str,
) -> candle_core::Result<&'a [f32]> {
    let v = s.as_slice::<f32>()?;
    l.contiguous_offsets()
        .and_then(|(a, b)| v.get(a..b))
        .ok_or_else(|| candle_core::Error::Msg(format!("{what} must be contiguous")))
}

#[cfg(test)]
mod tests;
