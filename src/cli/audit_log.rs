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
    println!("{}", serde_json::to_string_pretty(&report)?);
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
    Ok(())
}

pub(super) async fn audit_export(e: args::AuditExportArgs) -> Result<()> {
    if !e.dir.is_dir() {
        bail!("{}: not a directory", e.dir.display());
    }
    let trusted = pubkeys(&e.pubkeys)?;
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
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::new(stdout.lock());
    let report = confidant::audit::export_dir(&e.dir, &trusted, &mut opener, &mut out)?;
    std::io::Write::flush(&mut out)?;
    if report.uncovered > 0 {
        tracing::warn!(
            records = report.uncovered,
            "the last records are not covered by a signed checkpoint"
        );
    }
    Ok(())
}
