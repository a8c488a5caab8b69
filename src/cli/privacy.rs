//! `confidant privacy …`: the accountant on the command line. Output is one JSON object.

use anyhow::Result;
use clap::{Args, Subcommand, ValueEnum};
use confidant::privacy::accountant::{self, AccountantKind, SubsampledGaussian};

/// `confidant privacy`.
#[derive(Debug, Args)]
pub struct PrivacyArgs {
    /// The subcommand.
    #[command(subcommand)]
    pub command: PrivacyCommand,
}

/// The privacy subcommands.
#[derive(Debug, Subcommand)]
pub enum PrivacyCommand {
    /// The ε of DP-SGD (Poisson-subsampled Gaussian) after some steps: {"epsilon", "accountant"}.
    Epsilon(EpsilonArgs),
    /// The smallest noise multiplier meeting a target ε: {"noise_multiplier"}.
    NoiseMultiplier(NoiseMultiplierArgs),
}

/// Accountants, as named on the command line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum AccountantArg {
    /// Rényi DP, Balle et al. 2020 conversion.
    Rdp,
    /// Pessimistic privacy loss distribution (tight upper bound).
    Pld,
    /// Privacy random variable (same pessimistic distribution as pld).
    Prv,
}

impl From<AccountantArg> for AccountantKind {
    fn from(a: AccountantArg) -> Self {
        match a {
            AccountantArg::Rdp => Self::Rdp,
            AccountantArg::Pld => Self::Pld,
            AccountantArg::Prv => Self::Prv,
        }
    }
}

/// `confidant privacy epsilon`.
#[derive(Debug, Args)]
pub struct EpsilonArgs {
    /// Poisson sampling rate q (expected batch size / dataset size).
    #[arg(long)]
    pub sample_rate: f64,
    /// Noise multiplier σ (noise std / clipping norm).
    #[arg(long)]
    pub noise_multiplier: f64,
    /// Number of steps.
    #[arg(long)]
    pub steps: u64,
    /// Target δ.
    #[arg(long)]
    pub delta: f64,
    /// The accountant.
    #[arg(long, value_enum, default_value_t = AccountantArg::Pld)]
    pub accountant: AccountantArg,
}

/// `confidant privacy noise-multiplier`.
#[derive(Debug, Args)]
pub struct NoiseMultiplierArgs {
    /// Target ε.
    #[arg(long)]
    pub epsilon: f64,
    /// Poisson sampling rate q.
    #[arg(long)]
    pub sample_rate: f64,
    /// Number of steps.
    #[arg(long)]
    pub steps: u64,
    /// Target δ.
    #[arg(long)]
    pub delta: f64,
    /// The accountant.
    #[arg(long, value_enum, default_value_t = AccountantArg::Pld)]
    pub accountant: AccountantArg,
}

/// Runs one privacy subcommand.
pub fn run(a: &PrivacyArgs) -> Result<()> {
    match &a.command {
        PrivacyCommand::Epsilon(e) => {
            let kind = AccountantKind::from(e.accountant);
            let mechanism = SubsampledGaussian {
                sample_rate: e.sample_rate,
                noise_multiplier: e.noise_multiplier,
                steps: e.steps,
            };
            let epsilon = accountant::epsilon(&mechanism, e.delta, kind)?;
            println!(
                "{}",
                serde_json::json!({ "epsilon": epsilon, "accountant": kind.as_str() })
            );
        }
        PrivacyCommand::NoiseMultiplier(n) => {
            let sigma = accountant::noise_multiplier(
                n.epsilon,
                n.delta,
                n.sample_rate,
                n.steps,
                n.accountant.into(),
            )?;
            println!("{}", serde_json::json!({ "noise_multiplier": sigma }));
        }
    }
    Ok(())
}
