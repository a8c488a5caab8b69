//! `confidant seal --hf-dir`: sealing a text encoder from a Hugging Face model directory.

use std::path::Path;

use anyhow::{Context, Result, bail};
use confidant::engine::ModelSpec;
use confidant::sealed::bundle::{ModelDirectory, seal_encoder};
use confidant::sealed::{PublisherSigningKey, SealOptions};

use super::args::SealArgs;

/// Seals the model directory `dir` with the text-encoder config in `config_bytes`, and
/// prints the same summary as `seal` does for an MLP, with the bundle's entries.
pub fn seal_hf_dir(a: &SealArgs, dir: &Path, config_bytes: &[u8]) -> Result<()> {
    let spec =
        ModelSpec::from_json(config_bytes).with_context(|| format!("{}", a.config.display()))?;
    let ModelSpec::Bert(config) = spec else {
        bail!(
            "{}: --hf-dir seals text encoders (architecture.kind \"bert\"); an MLP config \
             takes --weights",
            a.config.display()
        );
    };
    super::refuse_overwrite(&a.out, a.force)?;
    super::refuse_overwrite(&a.key_out, a.force)?;
    let signing = PublisherSigningKey::from_pem_file(&a.signing_key)?;
    let directory = ModelDirectory::read(dir).with_context(|| format!("{}", dir.display()))?;
    let options = SealOptions {
        chunk_size: a.chunk_size,
        key_resource: a.resource_path.clone(),
        ..SealOptions::default()
    };
    let sealed = seal_encoder(&config, &directory, &signing, &options)
        .with_context(|| format!("sealing {} with {}", dir.display(), a.config.display()))?;
    confidant::files::write_file(&a.key_out, sealed.data_key.secret_bytes(), 0o600)?;
    confidant::files::write_file(&a.out, &sealed.file, 0o644)?;
    let m = &sealed.manifest;
    println!(
        "{}",
        serde_json::json!({
            "model": m.model.id(),
            "version": m.model.version(),
            "kind": m.model.kind().as_str(),
            "sealed": a.out,
            "key_out": a.key_out,
            "key_resource": m.encryption.key_resource,
            "bundle_sha256": m.weights.sha256,
            "entries": m.entries,
            "publisher_key_id": m.publisher.key_id,
        })
    );
    Ok(())
}
