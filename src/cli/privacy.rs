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
    /// The smallest noise multiplier on the grid 1.001^j meeting a target ε: {"noise_multiplier"}.
    NoiseMultiplier(NoiseMultiplierArgs),
    /// A principal's differential-privacy budget on a running server (Privacy.GetBudget):
    /// {"principal", "epsilon_budget", "epsilon_spent", "epsilon_remaining", …}.
    Budget(BudgetArgs),
    /// Grant or withdraw a data subject's consent for a purpose (Privacy.SetConsent, admin).
    Consent(ConsentArgs),
    /// Forget a data subject: crypto-shred its pseudonym key and consents (Privacy.Forget,
    /// admin); prints the signed erasure receipt.
    Forget(ForgetArgs),
}

/// Connection flags of the privacy commands that talk to a server.
#[derive(Debug, Args)]
pub struct ConnArgs {
    /// API key (sent as x-api-key).
    #[arg(long, env = "CONFIDANT_API_KEY", hide_env_values = true)]
    pub api_key: Option<String>,
    /// Server URL, https://HOST:PORT.
    #[arg(long, default_value = "https://127.0.0.1:50051")]
    pub addr: String,
    /// CA or server certificate (PEM) to trust [default: <data-dir>/tls/cert.pem].
    #[arg(long)]
    pub tls_ca: Option<std::path::PathBuf>,
    /// Client certificate (PEM) for mutual TLS.
    #[arg(long, requires = "tls_key")]
    pub tls_cert: Option<std::path::PathBuf>,
    /// The client certificate's private key (PEM).
    #[arg(long, requires = "tls_cert")]
    pub tls_key: Option<std::path::PathBuf>,
    /// Data directory, used to find the default --tls-ca.
    #[arg(long, env = "CONFIDANT_DATA_DIR")]
    pub data_dir: Option<std::path::PathBuf>,
}

/// `confidant privacy consent`.
#[derive(Debug, Args)]
pub struct ConsentArgs {
    /// The data subject's id.
    #[arg(long)]
    pub subject: String,
    /// The purpose.
    #[arg(long)]
    pub purpose: String,
    /// Grant consent.
    #[arg(
        long,
        conflicts_with = "withdraw",
        required_unless_present = "withdraw"
    )]
    pub grant: bool,
    /// Withdraw consent.
    #[arg(long)]
    pub withdraw: bool,
    /// Where the consent came from (a form id, a system name).
    #[arg(long, default_value = "cli")]
    pub source: String,
    /// Connection.
    #[command(flatten)]
    pub conn: ConnArgs,
}

/// `confidant privacy forget`.
#[derive(Debug, Args)]
pub struct ForgetArgs {
    /// The data subject's id.
    pub subject: String,
    /// Connection.
    #[command(flatten)]
    pub conn: ConnArgs,
}

/// `confidant privacy budget`.
#[derive(Debug, Args)]
pub struct BudgetArgs {
    /// The principal [default: the caller's own]. Another principal's needs an admin key.
    #[arg(long, default_value = "")]
    pub principal: String,
    /// Connection.
    #[command(flatten)]
    pub conn: ConnArgs,
}

/// Accountants, as named on the command line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum AccountantArg {
    /// Rényi DP, Balle et al. 2020 conversion.
    Rdp,
    /// Pessimistic privacy loss distribution (tight upper bound).
    Pld,
    /// Privacy random variable: an alias of pld (the same pessimistic code, the same ε).
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
        PrivacyCommand::Budget(_) | PrivacyCommand::Consent(_) | PrivacyCommand::Forget(_) => {
            anyhow::bail!("this privacy command runs through the async path")
        }
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
