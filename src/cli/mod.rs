//! The commands.

pub mod anonymize;
pub mod args;
pub mod attest;
pub mod bench;
pub mod broker;
pub mod privacy;
pub mod receipt;
pub mod text;
pub mod train;
mod train_text;

mod audit_log;
mod calls;
mod keys;
mod sealing;
mod serving;

use audit_log::*;
use calls::*;
use keys::*;
use sealing::*;
use serving::*;

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use confidant::client::Client;
use confidant::engine::ModelConfig;
use confidant::guard::{KeyStore, NewKey, RevokeSelector, Scope};
use confidant::sealed::{
    self, DataKey, PublisherKey, PublisherSigningKey, SealOptions, SealedFile,
};
use confidant::server::{self, ModelSource, ServeConfig, ServeFile, TlsFiles};
use confidant::storage::Database;
use confidant::unix_now;
use zeroize::Zeroizing;

use args::{Command, LogFormat};

/// Sets up `tracing` on stderr. `RUST_LOG` overrides the default level (info).
pub fn init_logging(format: LogFormat) {
    let _ = LOG_FORMAT.set(format);
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}

/// The log format chosen at start.
static LOG_FORMAT: std::sync::OnceLock<LogFormat> = std::sync::OnceLock::new();

/// Runs one command. `idle_workers`: the park hooks of the runtime it runs on (`serve`
/// gathers receipts with them).
pub async fn run(
    command: Command,
    idle_workers: Option<std::sync::Arc<confidant::audit::IdleWorkers>>,
) -> Result<()> {
    match command {
        Command::Keygen(a) => keygen(&a),
        Command::Seal(a) => seal(&a),
        Command::Inspect(a) => inspect(&a),
        Command::Serve(a) => serve(a, idle_workers).await,
        Command::Predict(a) => predict(a).await,
        Command::Explain(a) => explain(a).await,
        Command::Models(a) => models(a).await,
        Command::Keys(a) => keys(a).await,
        Command::Audit(a) => audit(a).await,
        Command::Broker(a) => broker::run(a, shutdown_signal()).await,
        Command::State(a) => broker::state(a).await,
        Command::Anonymize(a) => anonymize::anonymize(a),
        Command::Attest(a) => match a.command {
            attest::AttestCommand::Fetch(f) => attest::fetch(f).await,
            _ => attest::run(a),
        },
        Command::Privacy(a) => match a.command {
            privacy::PrivacyCommand::Budget(b) => privacy_budget(b).await,
            privacy::PrivacyCommand::Consent(c) => privacy_consent(c).await,
            privacy::PrivacyCommand::Forget(f) => privacy_forget(f).await,
            _ => privacy::run(&a),
        },
        Command::Bench(a) => bench::run(a).await,
        Command::Receipt(a) => receipt::run(a).await,
        Command::Train(a) => train::train(&a),
        Command::Evaluate(a) => train::evaluate(&a),
    }
}

fn resolve_data_dir(flag: Option<PathBuf>, file: Option<PathBuf>) -> PathBuf {
    flag.or(file)
        .unwrap_or_else(|| PathBuf::from(server::DEFAULT_DATA_DIR))
}

fn refuse_overwrite(path: &Path, force: bool) -> Result<()> {
    if path.exists() && !force {
        bail!(
            "{} already exists (pass --force to overwrite)",
            path.display()
        );
    }
    Ok(())
}
