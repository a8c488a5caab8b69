//! The CUDA side of the GPU backend (feature `cuda`): device discovery and the launch
//! helpers that the kernel wrappers share.

use std::sync::Arc;

use candle_core::cuda_backend::cudarc::driver::{CudaContext, CudaStream};
use candle_core::{CudaDevice, Device};

use super::GpuError;

/// The number of CUDA devices, after initialising the driver. An error means no driver.
pub fn device_count() -> Result<usize, GpuError> {
    CudaContext::device_count()
        .map(|n| usize::try_from(n).unwrap_or(0))
        .map_err(|e| GpuError::Driver(format!("the CUDA driver did not initialise: {e}")))
}

/// Opens CUDA device `ordinal` as a candle device, after checking that the driver answers
/// and the device exists (so the error names the cause instead of failing deep in candle).
pub fn open(ordinal: usize) -> Result<Device, GpuError> {
    let count = device_count().map_err(|e| GpuError::Unavailable {
        ordinal,
        reason: e.to_string(),
    })?;
    if ordinal >= count {
        return Err(GpuError::Unavailable {
            ordinal,
            reason: format!("the driver reports {count} device(s)"),
        });
    }
    Device::new_cuda(ordinal).map_err(|e| GpuError::Unavailable {
        ordinal,
        reason: e.to_string(),
    })
}

/// The candle CUDA device behind `device`, or an error naming `kernel`.
pub fn cuda_device<'a>(
    device: &'a Device,
    kernel: &'static str,
) -> Result<&'a CudaDevice, GpuError> {
    match device {
        Device::Cuda(d) => Ok(d),
        _ => Err(GpuError::Arguments {
            kernel,
            reason: format!("needs a CUDA device, got {device:?}"),
        }),
    }
}

/// The stream candle issues its work on for `device` (our kernels use the same stream, so
/// they are ordered with candle's operations without extra synchronisation).
pub fn stream(device: &CudaDevice) -> Arc<CudaStream> {
    device.cuda_stream()
}

/// Maps a cudarc driver error.
pub fn driver(e: impl std::fmt::Display) -> GpuError {
    GpuError::Driver(e.to_string())
}

/// A contiguous CUDA F32 tensor's values as a view (the kernels' input access).
pub fn f32_view<'a>(
    s: &'a candle_core::CudaStorage,
    l: &candle_core::Layout,
    kernel: &'static str,
    what: &str,
) -> Result<candle_core::cuda_backend::cudarc::driver::CudaView<'a, f32>, GpuError> {
    let (a, b) = l.contiguous_offsets().ok_or_else(|| GpuError::Arguments {
        kernel,
        reason: format!("{what} must be contiguous"),
    })?;
    Ok(s.as_cuda_slice::<f32>()?.slice(a..b))
}
