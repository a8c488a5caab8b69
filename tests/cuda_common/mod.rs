//! What the CUDA test files share: the device they run on.

use candle_core::{CudaDevice, Device};
use confidant::gpu;

/// `cuda:0` and its CUDA handle, or `None` (with a notice) where no device answers. On a
/// machine where a GPU is expected (`CONFIDANT_EXPECT_GPU=1`, which scripts/gpu-check.sh sets)
/// a skip is a failure: a check that cannot run must not pass.
pub fn device() -> Option<(Device, CudaDevice)> {
    if gpu::cuda_device_count() == 0 {
        assert!(
            std::env::var_os("CONFIDANT_EXPECT_GPU").is_none_or(|v| v != "1"),
            "CONFIDANT_EXPECT_GPU=1 but no CUDA device is visible"
        );
        eprintln!("no CUDA device: skipping the kernel check");
        return None;
    }
    let dev = gpu::open(gpu::DeviceSpec::Cuda(0)).expect("open cuda:0");
    let cuda = gpu::cuda::cuda_device(&dev, "test")
        .expect("cuda device")
        .clone();
    Some((dev, cuda))
}
