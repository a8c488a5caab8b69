//! The client commands: `predict`, `explain`, `models` and `privacy …`, and their input readers.

use super::*;

/// The demo key that a server in demo mode keeps in `<data-dir>/demo/api-key`, if present.
pub(crate) fn demo_api_key(data_dir: Option<&Path>) -> Option<String> {
    let dir = data_dir.map_or_else(
        || PathBuf::from(server::DEFAULT_DATA_DIR),
        Path::to_path_buf,
    );
    let path = dir.join("demo").join("api-key");
    let key = std::fs::read_to_string(&path).ok()?.trim().to_string();
    if key.is_empty() {
        return None;
    }
    eprintln!(
        "note: no --api-key given; using the demo key from {}",
        path.display()
    );
    Some(key)
}

/// The first certificate of a PEM file, as DER.
pub(super) fn read_leaf_cert_der(path: &Path) -> Result<Vec<u8>> {
    use rustls::pki_types::CertificateDer;
    use rustls::pki_types::pem::PemObject;
    let first = CertificateDer::pem_file_iter(path)
        .with_context(|| format!("--client-cert {}: cannot read", path.display()))?
        .next()
        .with_context(|| {
            format!(
                "--client-cert {}: no PEM certificate in the file",
                path.display()
            )
        })?
        .with_context(|| format!("--client-cert {}: malformed PEM", path.display()))?;
    Ok(first.to_vec())
}

pub(super) struct ConnectOpts<'a> {
    pub(super) addr: &'a str,
    /// A client attestation policy: trust from evidence instead of a CA.
    pub(super) policy: Option<PathBuf>,
    /// The GPU references that go with `policy`.
    pub(super) gpu: attest::GpuReferenceArgs,
    pub(super) tls_ca: Option<PathBuf>,
    pub(super) tls_identity: Option<(PathBuf, PathBuf)>,
    pub(super) data_dir: Option<PathBuf>,
    pub(super) api_key: Option<&'a str>,
    pub(super) purpose: Option<&'a str>,
}

pub(super) async fn connect(o: ConnectOpts<'_>) -> Result<Client> {
    let ConnectOpts {
        addr,
        policy,
        gpu,
        tls_ca,
        tls_identity,
        data_dir,
        api_key,
        purpose,
    } = o;
    let data_dir_for_demo = data_dir.clone();
    if let Some(path) = policy {
        let policy = attest::read_channel_policy(&path, &gpu)?;
        let (mut client, verdict) =
            confidant::client::attested::connect_attested(addr, &policy).await?;
        let verdict = verdict.cpu;
        eprintln!(
            "note: server attested ({:?}, measurement {}); the TLS key is bound to the evidence",
            verdict.tee,
            verdict.measurement.as_deref().unwrap_or("-")
        );
        if let Some(k) = api_key {
            client = client.with_api_key(k)?;
        } else if let Some(k) = demo_api_key(data_dir_for_demo.as_deref()) {
            client = client.with_api_key(&k)?;
        }
        if let Some(p) = purpose {
            client = client.with_purpose(p)?;
        }
        return Ok(client);
    }
    let ca_path = tls_ca.unwrap_or_else(|| {
        resolve_data_dir(data_dir, None)
            .join("tls")
            .join("cert.pem")
    });
    let ca = std::fs::read(&ca_path).with_context(|| {
        format!(
            "--tls-ca {}: cannot read the CA certificate",
            ca_path.display()
        )
    })?;
    if !String::from_utf8_lossy(&ca).contains("-----BEGIN CERTIFICATE-----") {
        bail!(
            "--tls-ca {}: no PEM certificate in the file",
            ca_path.display()
        );
    }
    let identity = match &tls_identity {
        Some((cert, key)) => Some((
            std::fs::read(cert)
                .with_context(|| format!("--tls-cert {}: cannot read", cert.display()))?,
            zeroize::Zeroizing::new(
                std::fs::read(key)
                    .with_context(|| format!("--tls-key {}: cannot read", key.display()))?,
            ),
        )),
        None => None,
    };
    let mut client = Client::connect_with_identity(
        addr,
        &ca,
        identity.as_ref().map(|(c, k)| (c.as_slice(), k.as_slice())),
    )
    .await?;
    if let Some(k) = api_key {
        client = client.with_api_key(k)?;
    } else if identity.is_some() {
        // The certificate is the credential.
    } else if let Some(k) = demo_api_key(data_dir_for_demo.as_deref()) {
        client = client.with_api_key(&k)?;
    }
    if let Some(p) = purpose {
        client = client.with_purpose(p)?;
    }
    Ok(client)
}

/// Connects as `predict` and `explain` do: the connection and credential flags, the data
/// subject, and, with `--receipt-out`, a fresh receipt salt (returned too: the request file
/// records it).
async fn connect_call(a: &args::PredictArgs) -> Result<(Client, Option<Vec<u8>>)> {
    let salt = receipt_salt(a)?;
    let mut client = connect(ConnectOpts {
        addr: &a.addr,
        policy: a.policy.clone(),
        gpu: a.gpu.clone(),
        tls_ca: a.tls_ca.clone(),
        tls_identity: a.tls_cert.clone().zip(a.tls_key.clone()),
        data_dir: a.data_dir.clone(),
        api_key: a.api_key.as_deref(),
        purpose: a.purpose.as_deref(),
    })
    .await?;
    if let Some(subject) = &a.subject_id {
        client = client.with_subject(subject)?;
    }
    if let Some(s) = &salt {
        client = client.with_receipt_salt(s)?;
    }
    Ok((client, salt))
}

/// The texts of `--text` and then `--input-jsonl`; none is an error.
fn read_texts(a: &args::PredictArgs) -> Result<Vec<String>> {
    let mut texts = a.text.clone();
    if let Some(path) = &a.input_jsonl {
        texts.extend(read_jsonl_texts(path)?);
    }
    if texts.is_empty() {
        bail!("no texts: give --text or a non-empty --input-jsonl");
    }
    Ok(texts)
}

/// Connects as `predict` and `explain` do ([`connect_call`]), and reads their input rows
/// (inline JSON, parsed before connecting so a typo costs no round trip, or CSV matched to
/// the model's features).
pub(super) async fn connect_with_rows(
    a: &args::PredictArgs,
) -> Result<(Client, Vec<Vec<f32>>, Option<Vec<u8>>)> {
    let inline = a.input.as_deref().map(parse_json_rows).transpose()?;
    let (mut client, salt) = connect_call(a).await?;
    let rows = match (inline, &a.input_csv) {
        (Some(rows), _) => rows,
        (None, Some(path)) => {
            let features = client
                .list_models()
                .await?
                .into_iter()
                .find(|m| m.id == a.model)
                .map(|m| m.features);
            read_csv_rows(path, features.as_deref())?
        }
        (None, None) => bail!("give --input or --input-csv"),
    };
    Ok((client, rows, salt))
}

/// `predict --text … / --input-jsonl FILE`: embeddings (`{"model", "embeddings"}`) or a
/// text classifier's `{"model", "outputs", "labels"}`.
async fn predict_texts(a: args::PredictArgs) -> Result<()> {
    let texts = read_texts(&a)?;
    // The response carries the salt the receipt used (`Prediction::receipt_salt`).
    let (mut client, _) = connect_call(&a).await?;
    let p = client.predict_texts(&a.model, texts.clone()).await?;
    let printed = if p.output_kind == "embedding" {
        serde_json::json!({
            "model": p.model,
            "model_version": p.model_version,
            "request_id": p.request_id,
            "embeddings": p.outputs,
            "tokens": p.tokens,
        })
    } else {
        prediction_json(&p)
    };
    answer(&printed, || {
        let Some(path) = &a.receipt_out else {
            return Ok(());
        };
        let request = confidant::receipt::digest::RequestFile {
            salt: hex::encode(p.receipt_salt.as_deref().unwrap_or_default()),
            inputs: None,
            texts: Some(texts),
        };
        super::receipt::save(path, p.receipt.as_deref(), request, &printed)
    })
}

/// Saves the answer's receipt (when `--receipt-out` asked for one), then prints the answer:
/// neither is lost to the other's failure. A closed standard output (`| head`) ends the
/// command on `SIGPIPE`, and used to before the receipt, the signed record of what the call
/// was charged, reached its file; a receipt that cannot be saved still lets the answer
/// through, and the command then fails, saying why.
fn answer(printed: &serde_json::Value, save_receipt: impl FnOnce() -> Result<()>) -> Result<()> {
    use std::io::Write as _;
    let saved = save_receipt();
    let shown = writeln!(std::io::stdout().lock(), "{printed}")
        .context("writing the answer to standard output");
    saved.and(shown)
}

/// A fresh salt when `--receipt-out` asks for a receipt.
fn receipt_salt(a: &args::PredictArgs) -> Result<Option<Vec<u8>>> {
    a.receipt_out
        .as_ref()
        .map(|_| confidant::receipt::new_salt().map_err(anyhow::Error::from))
        .transpose()
}

/// The texts of a JSON Lines file: one object per line with a string `text` field (blank
/// lines skipped). Errors name the line.
pub(super) fn read_jsonl_texts(path: &Path) -> Result<Vec<String>> {
    let body =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let mut texts = Vec::new();
    for (i, line) in body.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let v: serde_json::Value = serde_json::from_str(line)
            .with_context(|| format!("{} line {}: not JSON", path.display(), i + 1))?;
        let Some(text) = v.get("text").and_then(serde_json::Value::as_str) else {
            bail!(
                "{} line {}: expected an object with a string \"text\" field",
                path.display(),
                i + 1
            );
        };
        texts.push(text.to_string());
    }
    Ok(texts)
}

pub(super) async fn predict(a: args::PredictArgs) -> Result<()> {
    if !a.text.is_empty() || a.input_jsonl.is_some() {
        return predict_texts(a).await;
    }
    let (mut client, rows, _) = connect_with_rows(&a).await?;
    let p = client.predict(&a.model, &rows).await?;
    let printed = prediction_json(&p);
    answer(&printed, || {
        let Some(path) = &a.receipt_out else {
            return Ok(());
        };
        let request = confidant::receipt::digest::RequestFile {
            salt: hex::encode(p.receipt_salt.as_deref().unwrap_or_default()),
            inputs: Some(rows),
            texts: None,
        };
        super::receipt::save(path, p.receipt.as_deref(), request, &printed)
    })
}

fn prediction_json(p: &confidant::client::Prediction) -> serde_json::Value {
    serde_json::json!({
            "model": p.model,
            "model_version": p.model_version,
            "request_id": p.request_id,
            "outputs": p.outputs,
            "labels": p.labels,
            "flagged_rows": p.flagged_rows,
            "privacy": p.privacy.as_ref().map(|r| serde_json::json!({
                "mechanism": r.mechanism,
                "epsilon_charged": r.epsilon_charged,
                "rho_charged": r.rho_charged,
                "epsilon_spent": r.epsilon_spent,
                "epsilon_remaining": r.epsilon_remaining,
                "epsilon_budget": r.epsilon_budget,
                "delta": r.delta,
                "window_end": r.window_end,
            })),
    })
}

pub(super) async fn privacy_budget(a: privacy::BudgetArgs) -> Result<()> {
    let mut client = connect_args(a.conn).await?;
    let b = client.get_budget(&a.principal).await?;
    println!(
        "{}",
        serde_json::json!({
            "principal": b.principal,
            "epsilon_budget": b.epsilon_budget,
            "epsilon_spent": b.epsilon_spent,
            "epsilon_remaining": b.epsilon_remaining,
            "delta": b.delta,
            "window_start": b.window_start,
            "window_end": b.window_end,
        })
    );
    Ok(())
}

pub(super) async fn connect_args(c: privacy::ConnArgs) -> Result<Client> {
    connect(ConnectOpts {
        addr: &c.addr,
        policy: None,
        gpu: Default::default(),
        tls_ca: c.tls_ca,
        tls_identity: c.tls_cert.zip(c.tls_key),
        data_dir: c.data_dir,
        api_key: c.api_key.as_deref(),
        purpose: None,
    })
    .await
}

pub(super) async fn privacy_consent(a: privacy::ConsentArgs) -> Result<()> {
    let mut client = connect_args(a.conn).await?;
    let r = client
        .set_consent(&a.subject, &a.purpose, a.grant && !a.withdraw, &a.source)
        .await?;
    println!(
        "{}",
        serde_json::json!({
            "subject_pseudonym": r.subject_pseudonym,
            "purpose": r.purpose,
            "granted": r.granted,
            "at": r.at,
            "source": r.source,
        })
    );
    Ok(())
}

pub(super) async fn privacy_forget(a: privacy::ForgetArgs) -> Result<()> {
    let mut client = connect_args(a.conn).await?;
    let r = client.forget(&a.subject).await?;
    println!(
        "{}",
        serde_json::json!({
            "existed": r.existed,
            "subject_pseudonym": r.subject_pseudonym,
            "consents_deleted": r.consents_deleted,
            "at": r.at,
            "statement": r.statement,
            "signature": r.signature,
            "public_key": r.public_key,
        })
    );
    Ok(())
}

pub(super) async fn explain(e: args::ExplainArgs) -> Result<()> {
    if !e.predict.text.is_empty() || e.predict.input_jsonl.is_some() {
        return explain_texts(e).await;
    }
    let (mut client, rows, salt) = connect_with_rows(&e.predict).await?;
    let r = client.explain(&e.predict.model, &rows, e.target).await?;
    let features = rows.first().map_or(0, Vec::len);
    let attributions: Vec<Vec<f32>> = r
        .attributions
        .as_ref()
        .map(|t| {
            t.values
                .chunks(features.max(1))
                .map(<[f32]>::to_vec)
                .collect()
        })
        .unwrap_or_default();
    let printed = serde_json::json!({
        "model": r.model,
        "model_version": r.model_version,
        "request_id": r.request_id,
        "attributions": attributions,
        "targets": r.targets,
        "output_at_input": r.output_at_input,
        "output_at_baseline": r.output_at_baseline,
        "completeness_error": r.completeness_error,
        "baseline": r.baseline,
        "steps": r.steps,
        "flagged_rows": r.flagged_rows,
    });
    answer(&printed, || {
        let Some(path) = &e.predict.receipt_out else {
            return Ok(());
        };
        let request = confidant::receipt::digest::RequestFile {
            salt: hex::encode(explain_salt(&r, salt.as_deref())),
            inputs: Some(rows),
            texts: None,
        };
        super::receipt::save(
            path,
            (!r.receipt.is_empty()).then_some(&r.receipt[..]),
            request,
            &printed,
        )
    })
}

/// The salt that keys an explanation's receipt: the one the server drew, else ours.
fn explain_salt<'a>(
    r: &'a confidant::proto::confidant::v1::ExplainResponse,
    ours: Option<&'a [u8]>,
) -> &'a [u8] {
    if r.receipt_salt.is_empty() {
        ours.unwrap_or_default()
    } else {
        &r.receipt_salt
    }
}

/// `explain --text … / --input-jsonl FILE`: per-token attributions of a text model, one
/// entry of `texts` per text.
async fn explain_texts(e: args::ExplainArgs) -> Result<()> {
    let a = &e.predict;
    let texts = read_texts(a)?;
    let (mut client, salt) = connect_call(a).await?;
    let r = client
        .explain_texts(&a.model, texts.clone(), e.target)
        .await?;
    let per_text: Vec<serde_json::Value> = r
        .text_attributions
        .iter()
        .map(|t| {
            serde_json::json!({
                "tokens": t.tokens,
                "attributions": t.attributions,
                "special": t.special,
                "truncated": t.truncated,
            })
        })
        .collect();
    let printed = serde_json::json!({
        "model": r.model,
        "model_version": r.model_version,
        "request_id": r.request_id,
        "texts": per_text,
        "targets": r.targets,
        "output_at_input": r.output_at_input,
        "output_at_baseline": r.output_at_baseline,
        "completeness_error": r.completeness_error,
        "baseline_token": r.baseline_token,
        "steps": r.steps,
    });
    answer(&printed, || {
        let Some(path) = &a.receipt_out else {
            return Ok(());
        };
        let request = confidant::receipt::digest::RequestFile {
            salt: hex::encode(explain_salt(&r, salt.as_deref())),
            inputs: None,
            texts: Some(texts),
        };
        super::receipt::save(
            path,
            (!r.receipt.is_empty()).then_some(&r.receipt[..]),
            request,
            &printed,
        )
    })
}

pub(super) async fn models(a: args::ModelsArgs) -> Result<()> {
    let mut client = connect(ConnectOpts {
        addr: &a.addr,
        policy: a.policy.clone(),
        gpu: a.gpu.clone(),
        tls_ca: a.tls_ca,
        tls_identity: a.tls_cert.zip(a.tls_key),
        data_dir: a.data_dir,
        api_key: a.api_key.as_deref(),
        purpose: a.purpose.as_deref(),
    })
    .await?;
    let list: Vec<serde_json::Value> = client
        .list_models()
        .await?
        .into_iter()
        .map(|m| {
            let mut v = serde_json::json!({
                "id": m.id, "version": m.version, "features": m.features,
                "feature_min": m.feature_min, "feature_max": m.feature_max,
                "labels": m.labels, "output": m.output,
                "weights_sha256": m.weights_sha256, "publisher_key_id": m.publisher_key_id,
                "kind": m.kind, "output_width": m.output_width,
            });
            // A text model says what it is for and how it treats long texts.
            if !m.task.is_empty() {
                v["task"] = m.task.into();
                v["max_tokens"] = m.max_tokens.into();
                v["truncation"] = m.truncation.into();
            }
            v
        })
        .collect();
    println!("{}", serde_json::to_string_pretty(&list)?);
    Ok(())
}

/// Parses `[[f, ...], ...]` or a single row `[f, ...]`.
pub(super) fn parse_json_rows(text: &str) -> Result<Vec<Vec<f32>>> {
    let value: serde_json::Value = serde_json::from_str(text)
        .context("--input: not valid JSON (expected [[f, f, ...], ...])")?;
    let serde_json::Value::Array(items) = value else {
        bail!("--input: expected a JSON array of rows");
    };
    let to_row = |r: usize, v: &serde_json::Value| -> Result<Vec<f32>> {
        let serde_json::Value::Array(cells) = v else {
            bail!("--input: row {r} is not an array");
        };
        cells
            .iter()
            .enumerate()
            .map(|(c, x)| {
                x.as_f64()
                    .map(|f| f as f32)
                    .with_context(|| format!("--input: row {r}, column {c} is not a number"))
            })
            .collect()
    };
    if items.iter().all(serde_json::Value::is_number) && !items.is_empty() {
        return Ok(vec![to_row(0, &serde_json::Value::Array(items))?]);
    }
    items
        .iter()
        .enumerate()
        .map(|(r, v)| to_row(r, v))
        .collect()
}

/// Reads CSV rows. A first line that does not parse as numbers is a header: its columns are
/// matched to `features` by name when known.
pub(super) fn read_csv_rows(path: &Path, features: Option<&[String]>) -> Result<Vec<Vec<f32>>> {
    let text = std::fs::read_to_string(path).with_context(|| format!("{}", path.display()))?;
    let mut lines = text
        .lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
        .peekable();
    let split = |l: &str| -> Vec<String> {
        l.split(',')
            .map(|c| c.trim().trim_matches('"').to_string())
            .collect()
    };
    let mut columns: Option<Vec<usize>> = None;
    if let Some((_, first)) = lines.peek() {
        let cells = split(first);
        if cells.iter().any(|c| c.parse::<f32>().is_err()) {
            if let Some(features) = features {
                let idx = features
                    .iter()
                    .map(|f| {
                        cells.iter().position(|c| c == f).with_context(|| {
                            format!(
                                "{}: header has no column {f:?} (a model feature)",
                                path.display()
                            )
                        })
                    })
                    .collect::<Result<Vec<_>>>()?;
                columns = Some(idx);
            }
            lines.next();
        }
    }
    let mut rows = Vec::new();
    for (n, line) in lines {
        let cells = split(line);
        let pick: Vec<&String> = match &columns {
            Some(idx) => idx.iter().filter_map(|&i| cells.get(i)).collect(),
            None => cells.iter().collect(),
        };
        if let Some(idx) = &columns
            && pick.len() != idx.len()
        {
            bail!(
                "{}:{}: row has {} columns, fewer than the header",
                path.display(),
                n + 1,
                cells.len()
            );
        }
        let row = pick
            .iter()
            .enumerate()
            .map(|(c, s)| {
                s.parse::<f32>().with_context(|| {
                    format!(
                        "{}:{}: column {} ({s:?}) is not a number",
                        path.display(),
                        n + 1,
                        c + 1
                    )
                })
            })
            .collect::<Result<Vec<f32>>>()?;
        rows.push(row);
    }
    if rows.is_empty() {
        bail!("{}: no data rows", path.display());
    }
    Ok(rows)
}
