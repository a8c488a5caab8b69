//! Differential privacy: exact samplers, output mechanisms and the accountant.
//!
//! - [`rng`]: the [`DpRng`](rng::DpRng) trait and a ChaCha20 generator seeded from the OS.
//! - [`sampler`]: exact Bernoulli(exp(−γ)), discrete Laplace and discrete Gaussian samplers
//!   (Canonne, Kamath & Steinke 2020), the power-of-two output [`Grid`](sampler::Grid), and a
//!   fast batched grid-Laplace path with a stated deviation bound.
//! - [`mechanism`]: Laplace and Gaussian noise on score vectors, private argmax
//!   (permute-and-flip) and label-only output, each with its privacy map.
//! - [`accountant`]: the Poisson-subsampled Gaussian (DP-SGD) under RDP and under a
//!   pessimistic privacy-loss-distribution accountant, and noise calibration.
//!
//! ```
//! use confidant::privacy::mechanism::LaplaceScores;
//! use confidant::privacy::rng::ChaChaDpRng;
//!
//! let mut rng = ChaChaDpRng::from_os()?;
//! let mech = LaplaceScores::new(1.0, 1.0, 3)?;
//! let noisy = mech.release(&mut rng, &[0.2, 0.5, 0.3])?;
//! assert_eq!(noisy.len(), 3);
//! assert!(mech.guarantee().epsilon() <= 1.0);
//! # Ok::<(), confidant::privacy::PrivacyError>(())
//! ```

pub mod accountant;
pub mod budget;
pub mod error;
pub mod mechanism;
pub mod policy;
pub mod rng;
pub mod sampler;
pub mod special;
pub mod subjects;

pub use error::PrivacyError;
