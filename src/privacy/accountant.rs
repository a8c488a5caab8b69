//! Privacy accounting for DP-SGD: the Poisson-subsampled Gaussian mechanism composed over
//! training steps, and the noise calibration that meets a target ε.
//!
//! - [`rdp`]: Rényi DP at integer and fractional orders (Mironov, Talwar & Zhang 2019),
//!   converted to (ε, δ) by Balle et al. 2020 (or the classic Mironov 2017 bound).
//! - [`pld`]: a privacy loss distribution discretized pessimistically, so the reported ε is
//!   an upper bound; tight to the discretization step.

pub mod pld;
pub mod rdp;

use super::error::{PrivacyError, Result, check_range};

/// Which accountant computes ε.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum AccountantKind {
    /// Rényi DP with the Balle et al. 2020 conversion.
    Rdp,
    /// The pessimistic privacy loss distribution.
    Pld,
    /// The privacy random variable (Gopi, Lee & Wutschitz 2021): the same distribution as
    /// the PLD seen as a random variable; computed here by the pessimistic PLD code.
    Prv,
}

impl AccountantKind {
    /// The name used on the command line and in JSON.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Rdp => "rdp",
            Self::Pld => "pld",
            Self::Prv => "prv",
        }
    }
}

/// DP-SGD's mechanism: each step samples each record with probability `sample_rate`
/// (Poisson), clips per-record gradients to norm C, and adds N(0, (noise_multiplier·C)²).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SubsampledGaussian {
    /// The Poisson sampling probability q, in (0, 1].
    pub sample_rate: f64,
    /// σ / C, positive.
    pub noise_multiplier: f64,
    /// The number of steps composed.
    pub steps: u64,
}

impl SubsampledGaussian {
    fn check(&self) -> Result<()> {
        check_range("sample_rate", self.sample_rate, 0.0, 1.0, true)?;
        if self.sample_rate == 0.0 {
            return Err(PrivacyError::InvalidParameter {
                name: "sample_rate",
                value: 0.0,
                reason: "must be positive",
            });
        }
        check_range("noise_multiplier", self.noise_multiplier, 0.0, 1e6, false)?;
        if self.steps == 0 || self.steps > 1 << 32 {
            return Err(PrivacyError::InvalidParameter {
                name: "steps",
                value: self.steps as f64,
                reason: "must be between 1 and 2^32",
            });
        }
        Ok(())
    }
}

/// The ε at which `mechanism` is (ε, δ)-DP under add-or-remove-one adjacency.
pub fn epsilon(mechanism: &SubsampledGaussian, delta: f64, kind: AccountantKind) -> Result<f64> {
    mechanism.check()?;
    check_range("delta", delta, 0.0, 1.0, false)?;
    match kind {
        AccountantKind::Rdp => {
            let orders = rdp::default_orders();
            let curve = rdp::rdp_curve(mechanism, &orders)?;
            Ok(rdp::epsilon_from_rdp(&orders, &curve, delta, rdp::Conversion::Balle2020)?.0)
        }
        AccountantKind::Pld | AccountantKind::Prv => {
            pld::epsilon(mechanism, delta, &pld::PldOptions::default())
        }
    }
}

/// The smallest noise multiplier (to a relative 1e-4, rounded up) at which `steps` steps at
/// `sample_rate` are (target_epsilon, δ)-DP. The returned value has been checked: its ε is
/// at most the target.
pub fn noise_multiplier(
    target_epsilon: f64,
    delta: f64,
    sample_rate: f64,
    steps: u64,
    kind: AccountantKind,
) -> Result<f64> {
    check_range("epsilon", target_epsilon, 0.0, 1e4, false)?;
    let eps_at = |sigma: f64| {
        epsilon(
            &SubsampledGaussian {
                sample_rate,
                noise_multiplier: sigma,
                steps,
            },
            delta,
            kind,
        )
    };
    let mut hi = 1.0;
    let mut tries = 0;
    while eps_at(hi)? > target_epsilon {
        hi *= 2.0;
        tries += 1;
        if tries > 20 {
            return Err(PrivacyError::Unreachable {
                reason: format!("ε = {target_epsilon} needs a noise multiplier above 1e6"),
            });
        }
    }
    let mut lo = hi / 2.0;
    while lo > 1e-3 && eps_at(lo)? <= target_epsilon {
        hi = lo;
        lo /= 2.0;
    }
    // Invariant: ε(hi) ≤ target. Bisect on a log scale to relative precision 1e-4.
    while hi / lo > 1.0 + 1e-4 {
        let mid = (lo * hi).sqrt();
        if eps_at(mid)? <= target_epsilon {
            hi = mid;
        } else {
            lo = mid;
        }
    }
    Ok(hi)
}

#[cfg(test)]
mod tests;
