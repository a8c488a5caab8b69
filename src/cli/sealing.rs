//! `confidant keygen`, `seal` and `inspect`.

use super::*;

pub(super) fn keygen(a: &args::KeygenArgs) -> Result<()> {
    confidant::files::create_private_dir(&a.out)?;
    let key_path = a.out.join("publisher.key");
    let pub_path = a.out.join("publisher.pub");
    for p in [&key_path, &pub_path] {
        refuse_overwrite(p, a.force)?;
    }
    let key = PublisherSigningKey::generate()?;
    confidant::files::write_file(&key_path, key.to_pem()?.as_bytes(), 0o600)?;
    confidant::files::write_file(&pub_path, key.public_key().to_pem().as_bytes(), 0o644)?;
    println!(
        "{}",
        serde_json::json!({
            "private_key": key_path,
            "public_key": pub_path,
            "key_id": key.public_key().key_id(),
        })
    );
    Ok(())
}

pub(super) fn seal(a: &args::SealArgs) -> Result<()> {
    let config_bytes =
        std::fs::read(&a.config).with_context(|| format!("{}", a.config.display()))?;
    let weights_path = match (&a.weights, &a.hf_dir) {
        (Some(w), None) => w,
        (None, Some(dir)) => return text::seal_hf_dir(a, dir, &config_bytes),
        _ => bail!("give exactly one of --weights and --hf-dir"),
    };
    let config =
        ModelConfig::from_json(&config_bytes).with_context(|| format!("{}", a.config.display()))?;
    let weights = Zeroizing::new(
        std::fs::read(weights_path).with_context(|| format!("{}", weights_path.display()))?,
    );
    let summary = seal_model(
        &config,
        &weights,
        &SealTarget {
            signing_key: &a.signing_key,
            out: &a.out,
            key_out: &a.key_out,
            resource_path: a.resource_path.clone(),
            chunk_size: a.chunk_size,
            force: a.force,
        },
    )
    .with_context(|| {
        format!(
            "sealing {} with {}",
            weights_path.display(),
            a.config.display()
        )
    })?;
    println!("{summary}");
    Ok(())
}

/// Where and how [`seal_model`] writes a sealed model.
pub(crate) struct SealTarget<'a> {
    /// The publisher's private key (PEM).
    pub signing_key: &'a Path,
    /// The sealed file.
    pub out: &'a Path,
    /// The fresh data key (mode 0600).
    pub key_out: &'a Path,
    /// The key broker resource path, if not the default.
    pub resource_path: Option<String>,
    /// Plaintext bytes per chunk.
    pub chunk_size: u32,
    /// Overwrite existing files.
    pub force: bool,
}

/// Seals `weights` with `config` (the `confidant seal` path, shared with `train --seal`) and
/// returns the JSON summary that `seal` prints.
pub(crate) fn seal_model(
    config: &ModelConfig,
    weights: &[u8],
    target: &SealTarget<'_>,
) -> Result<serde_json::Value> {
    refuse_overwrite(target.out, target.force)?;
    refuse_overwrite(target.key_out, target.force)?;
    let signing = PublisherSigningKey::from_pem_file(target.signing_key)?;
    let options = SealOptions {
        chunk_size: target.chunk_size,
        key_resource: target.resource_path.clone(),
        ..SealOptions::default()
    };
    let sealed = sealed::seal(config, weights, &signing, &options)?;
    confidant::files::write_file(target.key_out, sealed.data_key.secret_bytes(), 0o600)?;
    confidant::files::write_file(target.out, &sealed.file, 0o644)?;
    Ok(serde_json::json!({
        "model": sealed.manifest.model.id,
        "version": sealed.manifest.model.version,
        "sealed": target.out,
        "key_out": target.key_out,
        "key_resource": sealed.manifest.encryption.key_resource,
        "weights_sha256": sealed.manifest.weights.sha256,
        "publisher_key_id": sealed.manifest.publisher.key_id,
    }))
}

pub(super) fn inspect(a: &args::InspectArgs) -> Result<()> {
    // Any kind of model: an MLP (format 1) or a bundle such as a text encoder (format 2).
    let file = SealedFile::<confidant::engine::ModelSpec>::read_as(&a.sealed)
        .with_context(|| format!("{}", a.sealed.display()))?;
    let manifest: serde_json::Value = serde_json::from_slice(file.manifest_bytes())?;
    file.verify_ciphertext_digest()
        .with_context(|| format!("{}", a.sealed.display()))?;
    let mut checks = vec!["format", "manifest", "ciphertext_sha256"];
    let mut verdict = "signature not checked (pass --publisher-key)";
    if let Some(pk) = &a.publisher_key {
        let key = PublisherKey::from_pem_file(pk)?;
        let verified = file
            .verify(std::slice::from_ref(&key))
            .with_context(|| format!("{}", a.sealed.display()))?;
        checks.push("signature");
        verdict = "ok";
        if let Some(kf) = &a.key_file {
            let dek = DataKey::from_file(kf)?;
            let plain = verified
                .decrypt(&dek)
                .with_context(|| format!("{}", a.sealed.display()))?;
            verified
                .verify_plaintext_digest(&plain)
                .with_context(|| format!("{}", a.sealed.display()))?;
            checks.extend(["chunks_aead", "plaintext_sha256"]);
        }
    } else if a.key_file.is_some() {
        bail!(
            "--key-file needs --publisher-key: never decrypt a model whose signature is unchecked"
        );
    }
    println!(
        "{}",
        serde_json::to_string_pretty(&serde_json::json!({
            "manifest": manifest,
            "checks_passed": checks,
            "verdict": verdict,
        }))?
    );
    Ok(())
}
