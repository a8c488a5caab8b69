//! `confidant train` and `confidant evaluate`: flags, defaults per architecture, the progress
//! bar, the output files and the optional seal.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::time::Instant;

use anyhow::{Context, Result, bail};
use clap::Args;
use confidant::engine::ModelConfig;
use confidant::privacy::rng::ChaChaDpRng;
use confidant::train::{self, Dataset, ModelInfo, Privacy, Schedule, TrainOptions};
use sha2::{Digest, Sha256};
use zeroize::Zeroizing;

use super::privacy::AccountantArg;
use super::{SealTarget, seal_model};

/// `confidant train`.
///
/// Defaults for --epochs, --batch-size, --clip and --lr depend on the architecture and were
/// tuned on the breast_cancer (logistic regression) and digits (one hidden layer of 32)
/// training splits; see BENCHMARKS.md, "DP-SGD". With --encoder they were tuned on the BBC
/// News split over all-MiniLM-L6-v2 (docs/text-models.md).
#[derive(Debug, Args)]
pub struct TrainArgs {
    /// The training CSV: a header line, numeric feature columns and an integer label column;
    /// with --encoder, a text column and a label column of class names.
    #[arg(long)]
    pub data: PathBuf,
    /// The label column's name. Labels are class indices 0, 1, 2, …; with --encoder, class
    /// names.
    #[arg(long)]
    pub label: String,
    /// Train a text classifier: a head over the embeddings of this sealed text encoder
    /// (task "embedding"), sealed with it as one model by --seal. Its signature is checked
    /// against --publisher-key and it is decrypted with --key-file, as `serve` does.
    #[arg(long, requires_all = ["text_column", "key_file", "publisher_keys", "seal"])]
    pub encoder: Option<PathBuf>,
    /// With --encoder: the column of texts (UTF-8).
    #[arg(long, requires = "encoder")]
    pub text_column: Option<String>,
    /// With --encoder: the encoder's data key. DEVELOPMENT PATH, as `serve --key-file`: the
    /// key is read from a file, not released by a broker.
    #[arg(long, requires = "encoder")]
    pub key_file: Option<PathBuf>,
    /// With --encoder: a trusted publisher public key (repeatable); the encoder's signature
    /// must verify under one of them.
    #[arg(long = "publisher-key", requires = "encoder")]
    pub publisher_keys: Vec<PathBuf>,
    /// With --encoder: held-out labelled texts (same columns); prints their accuracy through
    /// the sealed classifier as "eval_accuracy".
    #[arg(long, requires = "encoder")]
    pub eval_data: Option<PathBuf>,
    /// Hidden layer widths, comma-separated (ReLU after each); '' for logistic regression.
    #[arg(long, default_value = "")]
    pub hidden: String,
    /// Target ε of the DP guarantee (finite, > 0).
    #[arg(
        long,
        required_unless_present = "no_dp",
        conflicts_with = "no_dp",
        allow_negative_numbers = true
    )]
    pub epsilon: Option<f64>,
    /// Target δ, in (0, 1); keep it well below 1 / (training rows).
    #[arg(
        long,
        required_unless_present = "no_dp",
        conflicts_with = "no_dp",
        allow_negative_numbers = true
    )]
    pub delta: Option<f64>,
    /// Train without differential privacy: the same code with no clipping and no noise (the
    /// overhead baseline). The model gets no dp_training guarantee.
    #[arg(long)]
    pub no_dp: bool,
    /// Passes over the data, in expectation [default: 10 (logistic), 20 (MLP); 20 with
    /// --encoder].
    #[arg(long)]
    pub epochs: Option<u32>,
    /// Expected batch size B; each row joins each batch with probability B / rows
    /// [default: 256 (logistic, and with --encoder), 512 (MLP), at most the row count].
    #[arg(long)]
    pub batch_size: Option<usize>,
    /// Per-example gradient clipping norm C [default: 1].
    #[arg(long, allow_negative_numbers = true)]
    pub clip: Option<f64>,
    /// Learning rate (the peak of the schedule) [default: 4 (logistic), 8 (MLP); with
    /// --encoder 8 (linear head), 4 (hidden layers)]. The step
    /// is lr × (clipped, noised gradient sum) / B, so with every gradient clipped its norm is
    /// at most lr × C.
    #[arg(long, allow_negative_numbers = true)]
    pub lr: Option<f64>,
    /// Heavy-ball momentum in [0, 1) (post-processing: no privacy cost) [default: 0].
    #[arg(long, allow_negative_numbers = true)]
    pub momentum: Option<f64>,
    /// The learning-rate schedule (post-processing: no privacy cost).
    #[arg(long, value_enum, default_value_t = ScheduleArg::Cosine)]
    pub lr_schedule: ScheduleArg,
    /// The accountant that calibrates the noise.
    #[arg(long, value_enum, default_value_t = AccountantArg::Pld)]
    pub accountant: AccountantArg,
    /// Seed the DP generator for a reproducible run. DANGEROUS: anyone who knows the seed can
    /// recompute the noise and remove it, so the result has no privacy. For experiments only;
    /// without it the generator is seeded from the OS.
    #[arg(long)]
    pub seed: Option<u64>,
    /// Where to write the weights (safetensors, F32, mode 0600; overwritten); with
    /// --encoder, optional, the head's weights only.
    #[arg(long, required_unless_present = "encoder")]
    pub out: Option<PathBuf>,
    /// Where to write the model config (JSON; overwritten); optional with --encoder.
    #[arg(long, required_unless_present = "encoder")]
    pub config: Option<PathBuf>,
    /// The model id [default: the --out file stem, or with --encoder the --seal file stem].
    #[arg(long)]
    pub id: Option<String>,
    /// The model version.
    #[arg(long, default_value = "0.1.0")]
    pub model_version: String,
    /// Class names, comma-separated, in label order [default: 0, 1, …].
    #[arg(long)]
    pub class_names: Option<String>,
    /// Widen each feature's accepted input range beyond the training min and max by this
    /// fraction of its span.
    #[arg(long, default_value_t = train::DEFAULT_RANGE_MARGIN, allow_negative_numbers = true)]
    pub range_margin: f64,
    /// Also seal the model into this file (as `confidant seal` does); needs --signing-key
    /// and --key-out.
    #[arg(long, requires_all = ["signing_key", "key_out"])]
    pub seal: Option<PathBuf>,
    /// The publisher's private key, for --seal.
    #[arg(long, requires = "seal")]
    pub signing_key: Option<PathBuf>,
    /// Where --seal writes the fresh data key (mode 0600); never ship it beside the model.
    #[arg(long, requires = "seal")]
    pub key_out: Option<PathBuf>,
    /// Key broker resource path of the data key, for --seal [default: default/models/<id>].
    #[arg(long, requires = "seal")]
    pub resource_path: Option<String>,
    /// Overwrite an existing --seal or --key-out file.
    #[arg(long)]
    pub force: bool,
}

/// Learning-rate schedules, as named on the command line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ScheduleArg {
    /// The same rate at every step.
    Constant,
    /// Cosine decay from --lr to 0 over the run.
    Cosine,
}

impl From<ScheduleArg> for Schedule {
    fn from(s: ScheduleArg) -> Self {
        match s {
            ScheduleArg::Constant => Self::Constant,
            ScheduleArg::Cosine => Self::Cosine,
        }
    }
}

/// `confidant evaluate`.
#[derive(Debug, Args)]
pub struct EvaluateArgs {
    /// The weights (safetensors).
    #[arg(long)]
    pub weights: PathBuf,
    /// The model config (JSON).
    #[arg(long)]
    pub config: PathBuf,
    /// A labelled CSV with a header; columns are matched to the model's features by name.
    #[arg(long)]
    pub data: PathBuf,
    /// The label column's name (class indices 0, 1, …).
    #[arg(long)]
    pub label: String,
}

/// Tuned defaults: (epochs, batch size, clip, learning rate, momentum).
pub(super) struct Defaults {
    pub(super) epochs: u32,
    pub(super) batch_size: usize,
    pub(super) clip: f64,
    pub(super) lr: f64,
    pub(super) momentum: f64,
}

pub(super) const LOGISTIC_DEFAULTS: Defaults = Defaults {
    epochs: 10,
    batch_size: 256,
    clip: 1.0,
    lr: 4.0,
    momentum: 0.0,
};

pub(super) const MLP_DEFAULTS: Defaults = Defaults {
    epochs: 20,
    batch_size: 512,
    clip: 1.0,
    lr: 8.0,
    momentum: 0.0,
};

pub(super) fn parse_hidden(text: &str) -> Result<Vec<usize>> {
    text.split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| {
            s.parse::<usize>()
                .ok()
                .filter(|&w| w > 0)
                .with_context(|| format!("--hidden {text:?}: {s:?} is not a positive width"))
        })
        .collect()
}

pub(super) fn default_id(out: &std::path::Path) -> String {
    let stem = out
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default();
    let clean: String = stem
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-') {
                c
            } else {
                '-'
            }
        })
        .take(confidant::engine::config::MAX_ID_LEN)
        .collect();
    let clean = clean.trim_start_matches('.').to_string();
    if clean.is_empty() {
        "model".into()
    } else {
        clean
    }
}

/// The DP generator: from the OS, or from `--seed` hashed to a ChaCha20 key.
pub(super) fn generator(seed: Option<u64>) -> Result<ChaChaDpRng> {
    match seed {
        Some(s) => {
            eprintln!(
                "warning: --seed makes the DP noise reproducible; anyone who knows the seed can \
                 remove it. Use the model for experiments only."
            );
            let mut h = Sha256::new();
            h.update(b"confidant train seed v1");
            h.update(s.to_le_bytes());
            Ok(ChaChaDpRng::dangerous_from_seed(h.finalize().into()))
        }
        None => Ok(ChaChaDpRng::from_os()?),
    }
}

/// An indicatif bar on stderr, drawn only when stderr is a terminal.
pub(super) struct Bar {
    bar: indicatif::ProgressBar,
    steps_per_epoch: u64,
}

impl Bar {
    pub(super) fn new() -> Self {
        let bar = if std::io::stderr().is_terminal() {
            indicatif::ProgressBar::new(0)
        } else {
            indicatif::ProgressBar::hidden()
        };
        Self {
            bar,
            steps_per_epoch: 1,
        }
    }
}

impl train::Progress for Bar {
    fn start(&mut self, steps: u64, steps_per_epoch: u64) {
        self.steps_per_epoch = steps_per_epoch.max(1);
        self.bar.set_length(steps);
        if let Ok(style) = indicatif::ProgressStyle::with_template(
            "{prefix} [{bar:30}] {pos}/{len} steps, {msg}, ETA {eta}",
        ) {
            self.bar.set_style(style.progress_chars("=> "));
        }
    }

    fn update(&mut self, step: u64, loss: f64) {
        if step.is_multiple_of(16) || step == self.bar.length().unwrap_or(0) {
            self.bar
                .set_prefix(format!("epoch {}", step.div_ceil(self.steps_per_epoch)));
            self.bar.set_message(format!("loss {loss:.4}"));
            self.bar.set_position(step);
        }
    }

    fn finish(&mut self) {
        self.bar.finish_and_clear();
    }
}

/// Runs `confidant train`.
pub fn train(a: &TrainArgs) -> Result<()> {
    if a.encoder.is_some() {
        return super::train_text::train_text(a);
    }
    let (Some(out), Some(config_path)) = (&a.out, &a.config) else {
        bail!("give --out and --config (or --encoder to train a text classifier)");
    };
    let started = Instant::now();
    let hidden = parse_hidden(&a.hidden)?;
    let data = Dataset::read_csv(&a.data, &a.label, None)?;
    let defaults = if hidden.is_empty() {
        LOGISTIC_DEFAULTS
    } else {
        MLP_DEFAULTS
    };
    let privacy = match (a.no_dp, a.epsilon, a.delta) {
        (true, _, _) => Privacy::NonPrivate,
        (false, Some(epsilon), Some(delta)) => Privacy::Target {
            epsilon,
            delta,
            accountant: a.accountant.into(),
        },
        _ => bail!("give --epsilon and --delta, or --no-dp"),
    };
    let options = TrainOptions {
        hidden,
        epochs: a.epochs.unwrap_or(defaults.epochs),
        batch_size: a
            .batch_size
            .unwrap_or_else(|| defaults.batch_size.min(data.rows())),
        clip: a.clip.unwrap_or(defaults.clip),
        learning_rate: a.lr.unwrap_or(defaults.lr),
        momentum: a.momentum.unwrap_or(defaults.momentum),
        schedule: a.lr_schedule.into(),
        privacy,
    };
    let info = ModelInfo {
        id: a.id.clone().unwrap_or_else(|| default_id(out)),
        version: a.model_version.clone(),
        description: None,
        labels: a.class_names.as_ref().map(|names| {
            names
                .split(',')
                .map(|n| n.trim().to_string())
                .collect::<Vec<_>>()
        }),
        range_margin: a.range_margin,
    };
    confidant::engine::config::validate_id(&info.id).context("--id")?;
    // Check the cheap things before the accountant runs.
    options.validate(data.rows())?;
    if let Privacy::Target { delta, .. } = options.privacy
        && delta * data.rows() as f64 > 1.0
    {
        eprintln!(
            "warning: --delta {delta} is above 1 / rows (1 / {}): a mechanism that publishes \
             one whole row at random meets it",
            data.rows()
        );
    }
    let mut rng = generator(a.seed)?;
    let mut bar = Bar::new();
    let model = train::train(&data, &options, &info, &mut rng, &mut bar)?;
    let weights = Zeroizing::new(model.weights()?);
    let mut config_bytes = serde_json::to_vec_pretty(&model.config)?;
    config_bytes.push(b'\n');
    confidant::files::write_file(out, &weights, 0o600)?;
    confidant::files::write_file(config_path, &config_bytes, 0o644)?;
    let sealed = match (&a.seal, &a.signing_key, &a.key_out) {
        (Some(out), Some(signing_key), Some(key_out)) => {
            // Seal what was written, parsed back, exactly as `confidant seal` would.
            let config = ModelConfig::from_json(&config_bytes)?;
            Some(
                seal_model(
                    &config,
                    &weights,
                    &SealTarget {
                        signing_key,
                        out,
                        key_out,
                        resource_path: a.resource_path.clone(),
                        chunk_size: confidant::sealed::manifest::DEFAULT_CHUNK_SIZE,
                        force: a.force,
                    },
                )
                .with_context(|| format!("--seal {}", out.display()))?,
            )
        }
        _ => None,
    };
    let mut printed = serde_json::json!({
        "model": model.config.id,
        "weights": out,
        "config": config_path,
        "rows": data.rows(),
        "features": data.width(),
        "classes": model.config.labels.len(),
        "seconds": started.elapsed().as_secs_f64(),
        "sealed": sealed,
    });
    add_run_fields(
        &mut printed,
        &options,
        &model.plan,
        model.config.dp_training.as_ref(),
        model.final_loss,
    );
    println!("{printed}");
    Ok(())
}

/// Runs `confidant evaluate`: prints `{"accuracy", "rows"}`.
pub fn evaluate(a: &EvaluateArgs) -> Result<()> {
    let config_bytes =
        std::fs::read(&a.config).with_context(|| format!("{}", a.config.display()))?;
    let config =
        ModelConfig::from_json(&config_bytes).with_context(|| format!("{}", a.config.display()))?;
    let weights = Zeroizing::new(
        std::fs::read(&a.weights).with_context(|| format!("{}", a.weights.display()))?,
    );
    let data = Dataset::read_csv(&a.data, &a.label, Some(&config.input.features))?;
    let result = train::evaluate(&config, &weights, &data)?;
    println!("{}", serde_json::to_string(&result)?);
    Ok(())
}

/// Adds what `train` prints of the run itself, for MLPs and text heads alike, to `printed`:
/// the options, the plan, the DP guarantee and the final loss.
pub(super) fn add_run_fields(
    printed: &mut serde_json::Value,
    options: &TrainOptions,
    plan: &train::Plan,
    dp: Option<&confidant::engine::config::DpGuarantee>,
    final_loss: f64,
) {
    let mechanism = dp.and_then(|d| d.mechanism.as_ref());
    let run = serde_json::json!({
        "hidden": options.hidden,
        "epochs": options.epochs,
        "batch_size": options.batch_size,
        "clip": options.clip,
        "lr": options.learning_rate,
        "momentum": options.momentum,
        "lr_schedule": format!("{:?}", options.schedule).to_lowercase(),
        "sample_rate": plan.sample_rate,
        "steps": plan.steps,
        "noise_multiplier": mechanism.map(|m| m.noise_multiplier),
        "epsilon": dp.map(|d| d.epsilon),
        "delta": dp.map(|d| d.delta),
        "accountant": mechanism.map(|m| m.accountant.clone()),
        "train_loss": final_loss,
    });
    if let (Some(out), serde_json::Value::Object(run)) = (printed.as_object_mut(), run) {
        out.extend(run);
    }
}
