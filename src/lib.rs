//! # Confidant
//!
//! A confidential inference server. Publishers seal models (encrypted and signed); the
//! server unseals them only inside a TEE, serves predictions over gRPC behind guards, and
//! keeps plaintext weights and keys out of disks, logs, core dumps and swap.
//!
//! The modules, their jobs and the dependency rules between them are in
//! `docs/architecture.md` (checked by `tests/architecture.rs`). In short, from the leaves up:
//! - leaves: [`files`], [`tls`], [`names`], [`canonical`], [`storage`], [`secure`],
//!   [`metrics`], [`proto`], [`tee`], [`anonymize`];
//! - [`audit`] (the tamper-evident log), [`privacy`] (DP mechanisms, budgets, accountant),
//!   [`gpu`] (CUDA kernels and their CPU references);
//! - [`engine`] (model configs, the MLP, batcher, registry), [`sealed`] (the sealed-model
//!   format), [`loading`] (a sealed file to a served model), [`guard`] (keys, limits,
//!   validation), [`train`] (DP-SGD);
//! - [`keys`] (attested key release: the KBS broker and its client), [`client`],
//!   [`loadgen`] (`confidant bench`), [`demo`] (the embedded demo and its key-release chain);
//! - [`pipeline`] (the one way through for every request), [`oip`] and [`server`] (the front
//!   doors).
//!
//! ## Feature flags
//! - `cuda`: build the CUDA kernels and the GPU weight loader (needs nvcc). Off by default.
#![deny(unsafe_code)]

pub mod anonymize;
pub mod audit;
pub mod canonical;
pub mod client;
pub mod demo;
pub mod engine;
pub mod files;
pub mod gpu;
pub mod guard;
pub mod keys;
pub mod loadgen;
pub mod loading;
pub(crate) mod metrics;
pub(crate) mod names;
pub mod oip;
pub(crate) mod openai;
pub mod pipeline;
pub mod privacy;
pub mod proto;
pub mod receipt;
pub mod sealed;
pub mod secure;
pub mod server;
pub mod state;
pub mod storage;
pub mod tee;
pub(crate) mod tls;
pub mod train;

/// Seconds since the Unix epoch (0 if the clock reads earlier).
pub fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}
