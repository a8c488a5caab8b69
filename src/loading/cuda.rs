//! Sealed weights into CUDA memory (feature `cuda`).
//!
//! Two paths end with the model's plaintext safetensors in device memory:
//! - [`LoadPath::Staged`], the default: groups of STREAM chunks are decrypted on the CPU into
//!   two page-locked staging buffers (`cuMemHostAlloc`; confidential-computing mode forbids
//!   registering ordinary memory), each copied to the device asynchronously while the other
//!   is filled, and zeroized as soon as its copy has completed.
//! - [`LoadPath::DeviceDecrypt`], plaintext-free: the ciphertext is copied to the device and
//!   decrypted there by `kernels/aes_gcm.cu`, so plaintext weights never exist in host
//!   memory. A tag mismatch zeroizes the device buffers and aborts the load.
//!
//! [`mlp_from_device`] then builds the model from the device buffer: only the safetensors
//! header (names, shapes, offsets) is read back to the host; each tensor is copied device to
//! device into its own allocation and the plaintext buffer is zeroized.

use std::collections::BTreeMap;
use std::time::Instant;

use candle_core::cuda_backend::cudarc::driver::CudaSlice;
use candle_core::op::BackpropOp;
use candle_core::{CudaDevice, CudaStorage, Device, Storage, Tensor};
use zeroize::Zeroize;

use crate::engine::{EngineError, Mlp, ModelConfig};
use crate::gpu::cuda::driver;
use crate::gpu::{GpuError, LoadPath};
use crate::sealed::{DataKey, VerifiedSealedFile};

/// Bytes per staging buffer (two are used).
pub const STAGING_BYTES: usize = 32 << 20;

/// The model's plaintext safetensors in device memory (`len` bytes; the allocation may be
/// longer). Zeroized on the device when dropped.
pub struct DevicePlaintext {
    buf: CudaSlice<u8>,
    len: usize,
    device: CudaDevice,
}

impl DevicePlaintext {
    /// The plaintext length.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether the plaintext is empty.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

impl Drop for DevicePlaintext {
    fn drop(&mut self) {
        let stream = self.device.cuda_stream();
        // Best effort: a failing memset means the context is gone, and the memory with it.
        let _ = stream.memset_zeros(&mut self.buf);
        let _ = stream.synchronize();
    }
}

/// Decrypts `file` into device memory by `path`.
pub fn load_sealed(
    file: &VerifiedSealedFile,
    key: &DataKey,
    device: &CudaDevice,
    path: LoadPath,
) -> Result<DevicePlaintext, GpuError> {
    match path {
        LoadPath::Staged => load_staged(file, key, device, STAGING_BYTES),
        LoadPath::DeviceDecrypt => load_device_decrypt(file, key, device),
    }
}

/// The staged path with staging buffers of `staging_bytes` (rounded to whole chunks).
pub fn load_staged(
    file: &VerifiedSealedFile,
    key: &DataKey,
    device: &CudaDevice,
    staging_bytes: usize,
) -> Result<DevicePlaintext, GpuError> {
    let sealed = |e: crate::sealed::SealedError| GpuError::Driver(format!("sealed model: {e}"));
    let (chunk, count, len) = file.chunk_layout().map_err(sealed)?;
    let per = (staging_bytes / chunk.max(1)).max(1) as u64;
    let group_bytes = per as usize * chunk;
    let groups = count.div_ceil(per) as usize;
    let stream = device.cuda_stream();
    let ctx = stream.context().clone();
    // Padded to whole groups, so every copy moves a whole staging buffer.
    let buf = stream
        .alloc_zeros::<u8>((groups * group_bytes).max(1))
        .map_err(driver)?;
    let mut plain = DevicePlaintext {
        buf,
        len,
        device: device.clone(),
    };
    // SAFETY: page-locked allocations, zero-filled below before any use.
    let mut staging = [
        unsafe { ctx.alloc_pinned_with_flags::<u8>(group_bytes, 0) }.map_err(driver)?,
        unsafe { ctx.alloc_pinned_with_flags::<u8>(group_bytes, 0) }.map_err(driver)?,
    ];
    for s in &mut staging {
        s.as_mut_slice().map_err(driver)?.zeroize();
    }
    let mut result = Ok(());
    for g in 0..groups {
        let s = &mut staging[g % 2];
        // Waits for this buffer's previous copy, then wipes what it held.
        let host = match s.as_mut_slice() {
            Ok(h) => h,
            Err(e) => {
                result = Err(driver(e));
                break;
            }
        };
        host.zeroize();
        let first = g as u64 * per;
        let n = per.min(count - first);
        if let Err(e) = file.decrypt_chunks_into(key, first, n, host) {
            result = Err(sealed(e));
            break;
        }
        let start = g * group_bytes;
        let mut dst = plain.buf.slice_mut(start..start + group_bytes);
        if let Err(e) = stream.memcpy_htod(&*s, &mut dst) {
            result = Err(driver(e));
            break;
        }
    }
    // Both buffers: wait for the last copies and wipe them.
    for s in &mut staging {
        match s.as_mut_slice() {
            Ok(h) => h.zeroize(),
            Err(e) => result = result.and(Err(driver(e))),
        }
    }
    result?;
    stream.synchronize().map_err(driver)?;
    Ok(plain)
}

/// One tensor's entry in a safetensors header.
#[derive(serde::Deserialize)]
struct Entry {
    dtype: String,
    shape: Vec<usize>,
    data_offsets: [usize; 2],
}

/// Largest safetensors header read back (metadata only).
const MAX_HEADER: usize = 16 << 20;

/// Builds the MLP `config` describes from plaintext safetensors in device memory. Only the
/// header is read back to the host. F32 tensors only (the sealing tool writes F32).
pub fn mlp_from_device(
    config: &ModelConfig,
    plain: &DevicePlaintext,
    device: &Device,
) -> Result<Mlp, EngineError> {
    let compute = |m: String| EngineError::Safetensors(m);
    let Device::Cuda(cuda) = device else {
        return Err(compute("mlp_from_device needs a CUDA device".into()));
    };
    let stream = cuda.cuda_stream();
    if plain.len < 8 {
        return Err(compute(
            "the plaintext is shorter than a safetensors header".into(),
        ));
    }
    let mut n8 = [0u8; 8];
    stream
        .memcpy_dtoh(&plain.buf.slice(0..8), &mut n8)
        .map_err(|e| compute(format!("reading the header length: {e}")))?;
    let n = u64::from_le_bytes(n8) as usize;
    if n > MAX_HEADER || n.checked_add(8).is_none_or(|end| end > plain.len) {
        return Err(compute(format!(
            "header length {n} does not fit the plaintext"
        )));
    }
    let mut header = vec![0u8; n];
    stream
        .memcpy_dtoh(&plain.buf.slice(8..8 + n), &mut header)
        .map_err(|e| compute(format!("reading the header: {e}")))?;
    stream
        .synchronize()
        .map_err(|e| compute(format!("reading the header: {e}")))?;
    let mut entries: BTreeMap<String, serde_json::Value> = serde_json::from_slice(&header)
        .map_err(|e| compute(format!("the header is not JSON: {e}")))?;
    entries.remove("__metadata__");
    let data_start = 8 + n;
    Mlp::from_loader(config, device, |name, layer| {
        let raw = entries
            .get(name)
            .ok_or_else(|| EngineError::MissingTensor {
                name: name.to_string(),
                layer,
            })?;
        let e: Entry =
            serde_json::from_value(raw.clone()).map_err(|err| compute(format!("{name}: {err}")))?;
        if e.dtype != "F32" {
            return Err(EngineError::Dtype {
                name: name.to_string(),
                dtype: e.dtype,
            });
        }
        let elems = e
            .shape
            .iter()
            .try_fold(1usize, |a, &d| a.checked_mul(d))
            .ok_or_else(|| compute(format!("{name}: shape overflows")))?;
        let [a, b] = e.data_offsets;
        if b < a || b - a != elems * 4 || data_start + b > plain.len {
            return Err(compute(format!(
                "{name}: offsets {a}..{b} do not match shape {:?} or the buffer",
                e.shape
            )));
        }
        let bytes = plain.buf.slice(data_start + a..data_start + b);
        // SAFETY: the view covers exactly elems × 4 bytes of initialised device memory, and
        // every bit pattern is a valid f32 (finiteness is checked by from_loader).
        let view = unsafe { bytes.transmute::<f32>(elems) }
            .ok_or_else(|| compute(format!("{name}: view out of range")))?;
        let owned = stream
            .clone_dtod(&view)
            .map_err(|err| compute(format!("{name}: device copy: {err}")))?;
        let storage = Storage::Cuda(CudaStorage::wrap_cuda_slice(owned, cuda.clone()));
        Ok(Tensor::from_storage(
            storage,
            e.shape.clone(),
            BackpropOp::none(),
            false,
        ))
    })
}

/// The plaintext-free path: the ciphertext region (bodies, then tags) is copied to the
/// device as stored and decrypted there (`kernels/aes_gcm.cu`); on a tag mismatch both
/// device buffers are zeroized before the error returns.
fn load_device_decrypt(
    file: &VerifiedSealedFile,
    key: &DataKey,
    device: &CudaDevice,
) -> Result<DevicePlaintext, GpuError> {
    let layout = super::stream_layout(file.manifest())?;
    let stream = device.cuda_stream();
    let mut ciphertext = stream
        .clone_htod(file.file().ciphertext())
        .map_err(driver)?;
    let key = super::data_key_bytes(key)?;
    let buf =
        crate::gpu::aes_gcm::decrypt_chunks_on_device(device, &key, &mut ciphertext, &layout)?;
    let len = usize::try_from(layout.plaintext_len).map_err(driver)?;
    Ok(DevicePlaintext {
        buf,
        len,
        device: device.clone(),
    })
}

/// Throughput of `decrypt_chunks_on_device` (feature `cuda`) on a synthetic sealed region of about
/// `bytes` plaintext bytes in 1 MiB chunks, in GB/s of plaintext (10^9 bytes per second),
/// over 10 timed repetitions after a warm-up; each repetition includes the key upload and
/// the tag read-back the loader pays.
pub fn bench_decrypt_gbps(dev: &CudaDevice, bytes: usize) -> Result<f64, GpuError> {
    const REPS: u32 = 10;
    let len = bytes.max(16).next_multiple_of(16);
    let layout = crate::gpu::aes_gcm::StreamLayout {
        plaintext_len: len as u64,
        chunk_size: 1 << 20,
        nonce_prefix: [7; 7],
        aad: [9; 32],
    };
    let key = DataKey::generate().map_err(|e| GpuError::Driver(e.to_string()))?;
    let key_bytes = super::data_key_bytes(&key)?;
    let plaintext: Vec<u8> = (0..len).map(|i| (i * 31 % 251) as u8).collect();
    let region = crate::sealed::stream::encrypt(
        &key,
        &layout.nonce_prefix,
        &layout.aad,
        layout.chunk_size as usize,
        &plaintext,
    )
    .map_err(|e| GpuError::Driver(e.to_string()))?;
    let stream = dev.cuda_stream();
    let mut ct = stream.clone_htod(&region[..]).map_err(driver)?;
    drop(crate::gpu::aes_gcm::decrypt_chunks_on_device(
        dev, &key_bytes, &mut ct, &layout,
    )?);
    stream.synchronize().map_err(driver)?;
    let t = Instant::now();
    for _ in 0..REPS {
        drop(crate::gpu::aes_gcm::decrypt_chunks_on_device(
            dev, &key_bytes, &mut ct, &layout,
        )?);
    }
    stream.synchronize().map_err(driver)?;
    Ok(len as f64 * f64::from(REPS) / 1e9 / t.elapsed().as_secs_f64())
}
