//! `confidant train --encoder`: a DP-SGD classifier head over a sealed text encoder, sealed
//! with the encoder as one model.

use std::time::Instant;

use anyhow::{Context, Result, bail};
use confidant::engine::ModelSpec;
use confidant::engine::TextEncoder;
use confidant::engine::config::TextTask;
use confidant::sealed::bundle::{load_encoder, seal_text_classifier};
use confidant::sealed::{DataKey, PublisherKey, PublisherSigningKey, SealOptions};
use confidant::train::{self, Privacy, TextDataset, TextModelInfo, TrainOptions};
use zeroize::Zeroizing;

use super::train::{Bar, Defaults, TrainArgs, default_id, generator, parse_hidden};

/// Defaults for a linear head over unit-norm sentence embeddings, tuned on the BBC News
/// training split over all-MiniLM-L6-v2 at ε = 3 (docs/text-models.md).
const TEXT_LINEAR_DEFAULTS: Defaults = Defaults {
    epochs: 20,
    batch_size: 256,
    clip: 1.0,
    lr: 8.0,
    momentum: 0.0,
};

/// Defaults for a head with hidden layers.
const TEXT_MLP_DEFAULTS: Defaults = Defaults {
    epochs: 20,
    batch_size: 256,
    clip: 1.0,
    lr: 4.0,
    momentum: 0.0,
};

/// Runs `confidant train --encoder`.
pub fn train_text(a: &TrainArgs) -> Result<()> {
    let started = Instant::now();
    let (Some(encoder_path), Some(text_column), Some(key_file), Some(seal_path)) =
        (&a.encoder, &a.text_column, &a.key_file, &a.seal)
    else {
        bail!("--encoder needs --text-column, --key-file, --publisher-key and --seal");
    };
    let (Some(signing_key), Some(key_out)) = (&a.signing_key, &a.key_out) else {
        bail!("--seal needs --signing-key and --key-out");
    };
    if a.publisher_keys.is_empty() {
        bail!(
            "--encoder needs --publisher-key: never decrypt a model whose signature is unchecked"
        );
    }
    let hidden = parse_hidden(&a.hidden)?;
    let defaults = if hidden.is_empty() {
        TEXT_LINEAR_DEFAULTS
    } else {
        TEXT_MLP_DEFAULTS
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
    let id = a.id.clone().unwrap_or_else(|| default_id(seal_path));
    confidant::engine::config::validate_id(&id).context("--id")?;
    super::refuse_overwrite(seal_path, a.force)?;
    super::refuse_overwrite(key_out, a.force)?;
    let signing = PublisherSigningKey::from_pem_file(signing_key)
        .with_context(|| format!("--signing-key {}", signing_key.display()))?;

    // The encoder, as the server loads it: signature first, then decryption and digests.
    let trusted = a
        .publisher_keys
        .iter()
        .map(|p| {
            PublisherKey::from_pem_file(p)
                .with_context(|| format!("--publisher-key {}", p.display()))
        })
        .collect::<Result<Vec<_>>>()?;
    let dek = DataKey::from_file(key_file)
        .with_context(|| format!("--key-file {}", key_file.display()))?;
    let unsealed =
        confidant::sealed::unseal_file_as::<ModelSpec>(encoder_path, &trusted, &dek, true)
            .with_context(|| format!("--encoder {}", encoder_path.display()))?;
    match &unsealed.manifest.model {
        ModelSpec::Bert(c) if c.architecture.task == TextTask::Embedding => {}
        ModelSpec::Bert(c) => bail!(
            "--encoder {}: model {} is a {} model; a head is trained on an embedding model \
             (task \"embedding\"), not on one that already classifies",
            encoder_path.display(),
            c.id,
            c.architecture.task.as_str()
        ),
        other => bail!(
            "--encoder {}: model {} is an {} model, not a text encoder",
            encoder_path.display(),
            other.id(),
            other.kind().as_str()
        ),
    }
    let encoder = load_encoder(&unsealed, &candle_core::Device::Cpu)
        .with_context(|| format!("--encoder {}", encoder_path.display()))?;

    let classes = a.class_names.as_ref().map(|names| {
        names
            .split(',')
            .map(|n| n.trim().to_string())
            .collect::<Vec<_>>()
    });
    let data = TextDataset::read_csv(&a.data, text_column, &a.label, classes.as_deref())?;
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
    let info = TextModelInfo {
        id,
        version: a.model_version.clone(),
        description: None,
    };
    let mut rng = generator(a.seed)?;
    let mut bar = Bar::new();
    let model = train::train_text(&encoder, &data, &options, &info, &mut rng, &mut bar)?;
    let head = Zeroizing::new(model.weights()?);
    let mut config_bytes = serde_json::to_vec_pretty(&model.config)?;
    config_bytes.push(b'\n');
    if let Some(out) = &a.out {
        confidant::files::write_file(out, &head, 0o600)?;
    }
    if let Some(path) = &a.config {
        confidant::files::write_file(path, &config_bytes, 0o644)?;
    }

    // Encoder + head as one model, sealed from the config as written.
    let config = match ModelSpec::from_json(&config_bytes)? {
        ModelSpec::Bert(c) => c,
        _ => bail!("the classifier config is not a text model's"),
    };
    let options_seal = SealOptions {
        chunk_size: confidant::sealed::manifest::DEFAULT_CHUNK_SIZE,
        key_resource: a.resource_path.clone(),
        ..SealOptions::default()
    };
    let sealed = seal_text_classifier(&unsealed, &config, &head, &signing, &options_seal)
        .with_context(|| format!("--seal {}", seal_path.display()))?;
    drop(encoder);
    drop(unsealed);
    confidant::files::write_file(key_out, sealed.data_key.secret_bytes(), 0o600)?;
    confidant::files::write_file(seal_path, &sealed.file, 0o644)?;

    // Held-out accuracy through the sealed file, as the server will load it.
    let eval = match &a.eval_data {
        Some(path) => {
            let served = confidant::sealed::unseal_as::<ModelSpec>(
                sealed.file.clone(),
                &[signing.public_key()],
                &sealed.data_key,
                true,
            )?;
            let classifier = load_encoder(&served, &candle_core::Device::Cpu)?;
            let held_out = TextDataset::read_csv(
                path,
                text_column,
                &a.label,
                Some(classifier.config().labels()),
            )?;
            Some(train::evaluate_text(&classifier, &held_out)?)
        }
        None => None,
    };
    let m = &sealed.manifest;
    let mut printed = serde_json::json!({
        "model": model.config.id,
        "encoder": encoder_path,
        "weights": a.out,
        "config": a.config,
        "rows": data.rows(),
        "tokens": model.tokens,
        "truncated_texts": model.truncated,
        "classes": model.config.labels,
        "eval_accuracy": eval.map(|e| e.accuracy),
        "eval_rows": eval.map(|e| e.rows),
        "seconds": started.elapsed().as_secs_f64(),
        "sealed": {
            "model": m.model.id(),
            "version": m.model.version(),
            "sealed": seal_path,
            "key_out": key_out,
            "key_resource": m.encryption.key_resource,
            "bundle_sha256": m.weights.sha256,
            "entries": m.entries,
            "publisher_key_id": m.publisher.key_id,
        },
    });
    super::train::add_run_fields(
        &mut printed,
        &options,
        &model.plan,
        model.config.dp_training.as_ref(),
        model.final_loss,
    );
    println!("{printed}");
    Ok(())
}
