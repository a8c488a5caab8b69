//! # Confidant
//!
//! A confidential inference server. Publishers seal models (encrypted and signed); the
//! server unseals them only inside a TEE, serves predictions over gRPC behind guards, and
//! keeps plaintext weights and keys out of disks, logs, core dumps and swap.
//!
//! Modules, by domain (see DESIGN.md in the repository):
//! - [`anonymize`]: pseudonyms, generalization hierarchies, Mondrian k-anonymity, metrics.
//! - [`sealed`]: the sealed-model format.
//! - [`engine`]: model configs, the candle MLP, the dynamic batcher, the registry.
//! - [`server`]: the tonic services and their wiring.
//! - [`oip`]: the Open Inference Protocol front end (Triton's and KServe's gRPC API).
//! - [`client`]: the Rust client.
//! - [`bench`](mod@bench): `confidant bench`, the gRPC load generator (confidant.v1 and OIP).
//! - [`privacy`]: DP samplers, mechanisms and the accountant.
//! - [`secure`]: process hardening and locked memory.
//! - [`demo`]: the embedded demo model.
//! - [`keys`]: attested key release: the KBS (RCAR) broker and its client.
//! - [`tee`]: attesters (configfs-tsm, `/dev/sev-guest`, the simulated TEE).
//! - [`train`]: DP-SGD training of servable MLPs, and evaluation through the engine.
//!
//! ## Feature flags
//! - `cuda`: build the CUDA kernels and the GPU weight loader (needs nvcc). Off by default.
#![deny(unsafe_code)]

pub mod anonymize;
pub mod audit;
pub mod bench;
pub mod canonical;
pub mod client;
pub mod demo;
pub mod engine;
pub mod gpu;
pub mod guard;
pub mod keys;
pub mod metrics;
pub mod oip;
pub mod privacy;
pub mod proto;
pub mod sealed;
pub mod secure;
pub mod server;
pub mod storage;
pub mod tee;
pub mod train;

/// Seconds since the Unix epoch (0 if the clock reads earlier).
pub fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}
