//! `confidant audit verify` and `confidant audit export`.

use super::*;

pub(super) async fn audit(a: args::AuditArgs) -> Result<()> {
    match a.command {
        args::AuditCommand::Verify(v) => audit_verify(&v),
        args::AuditCommand::Export(e) => audit_export(e).await,
    }
}

pub(super) fn audit_verify(v: &args::AuditVerifyArgs) -> Result<()> {
    if !v.dir.is_dir() {
        bail!("{}: not a directory", v.dir.display());
    }
    let trusted = pubkeys(&v.pubkeys)?;
    let report = confidant::audit::verify_dir(&v.dir, &trusted);
    let anchor = match &v.anchor {
        Some(file) if report.is_ok() => Some(check_anchor(&v.dir, file, &trusted, &report)),
        _ => None,
    };
    let mut json = serde_json::to_value(&report)?;
    if let (Some(a), Some(map)) = (&anchor, json.as_object_mut()) {
        map.insert(
            "anchor".into(),
            match a {
                Ok(seq) => serde_json::json!({"covered": true, "audit_seq": seq}),
                Err(e) => serde_json::json!({"covered": false, "problem": e.to_string()}),
            },
        );
    }
    println!("{}", serde_json::to_string_pretty(&json)?);
    if let Some(f) = &report.first_failure {
        bail!(
            "audit log broken at {} line {}: {}",
            f.segment,
            f.line,
            f.problem
        );
    }
    if report.records == 0 {
        bail!("{}: no audit records", v.dir.display());
    }
    if report.uncovered > 0 && !v.allow_uncovered_tail {
        bail!(
            "{}: the last {} records are not covered by a signed checkpoint (a running \
             server's log: pass --allow-uncovered-tail; otherwise they may have been rewritten)",
            v.dir.display(),
            report.uncovered
        );
    }
    if let Some(Err(e)) = anchor {
        bail!("{}: {e:#}", v.dir.display());
    }
    Ok(())
}

/// Checks the log against a freshness anchor: signed by a trusted key (or, without
/// `--pubkey`, by the key the log's checkpoints name), and the log holds the anchored
/// record. Returns the anchored sequence number.
fn check_anchor(
    dir: &Path,
    file: &Path,
    trusted: &[[u8; 32]],
    report: &confidant::audit::VerifyReport,
) -> Result<u64> {
    let text = std::fs::read(file).with_context(|| format!("--anchor {}", file.display()))?;
    let anchor: confidant::state::anchor::Anchor =
        serde_json::from_slice(&text).with_context(|| {
            format!(
                "--anchor {}: not an anchor (`confidant broker anchor`)",
                file.display()
            )
        })?;
    let mut key = [0u8; 32];
    hex::decode_to_slice(&anchor.public_key, &mut key)
        .map_err(|_| anyhow::anyhow!("--anchor: public_key is not 64 hex digits"))?;
    let pinned = if trusted.is_empty() {
        report.signing_key.as_deref() == Some(anchor.public_key.as_str())
    } else {
        trusted.contains(&key)
    };
    if !pinned {
        bail!(
            "the anchor is signed by key {}, which is not the log's checkpoint key{}",
            anchor.public_key,
            if trusted.is_empty() {
                ""
            } else {
                " given with --pubkey"
            }
        );
    }
    let vk = ed25519_dalek::VerifyingKey::from_bytes(&key)
        .map_err(|_| anyhow::anyhow!("--anchor: public_key is not an Ed25519 key"))?;
    anchor
        .verify(&vk)
        .map_err(|e| anyhow::anyhow!("--anchor {}: {e}", file.display()))?;
    let seq = anchor.position.audit_seq;
    if seq == 0 {
        return Ok(0);
    }
    if report.last_seq < seq {
        bail!(
            "the log is truncated: it ends at record {}, and the anchor covers record {seq}",
            report.last_seq
        );
    }
    match confidant::audit::record_at(dir, seq)? {
        Some(r) if r.hash == anchor.position.audit_head => Ok(seq),
        Some(_) => {
            bail!("record {seq} is not the record the anchor covers: the log is another history")
        }
        None => bail!(
            "record {seq}, which the anchor covers, is not in the log (removed by retention, \
             or the log was replaced)"
        ),
    }
}

pub(super) async fn audit_export(e: args::AuditExportArgs) -> Result<()> {
    if !e.dir.is_dir() {
        bail!("{}: not a directory", e.dir.display());
    }
    let mut trusted = pubkeys(&e.pubkeys)?;
    if e.key_from_broker {
        let (records, checkpoint) = super::broker::audit_key(&e).await?;
        if trusted.is_empty() {
            trusted.push(checkpoint);
        } else if !trusted.contains(&checkpoint) {
            bail!(
                "the broker's checkpoint key for this deployment ({}) is not among --pubkey",
                hex::encode(checkpoint)
            );
        }
        let mut opener = confidant::audit::seal::Opener::new(records);
        return export_with(&e, &trusted, &mut opener);
    }
    let state_key = match &e.state_key_file {
        Some(f) => confidant::state::StateKey::from_file(f)?,
        None => {
            let data = e
                .data_dir
                .clone()
                .or_else(|| e.dir.parent().map(Path::to_path_buf))
                .context("--data-dir: the audit directory has no parent")?;
            resolve_state_key(&data, &e.state, false).await?
        }
    };
    let mut opener = confidant::audit::seal::Opener::new(
        state_key.subkey(confidant::state::Subkey::AuditRecords),
    );
    drop(state_key);
    export_with(&e, &trusted, &mut opener)
}

fn export_with(
    e: &args::AuditExportArgs,
    trusted: &[[u8; 32]],
    opener: &mut confidant::audit::seal::Opener,
) -> Result<()> {
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::new(stdout.lock());
    let report = confidant::audit::export_dir(&e.dir, trusted, opener, &mut out)?;
    std::io::Write::flush(&mut out)?;
    if report.uncovered > 0 {
        tracing::warn!(
            records = report.uncovered,
            "the last records are not covered by a signed checkpoint"
        );
    }
    Ok(())
}
