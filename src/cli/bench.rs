//! `confidant bench`: flags to a validated [`BenchConfig`], then the run and its reports.

use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use confidant::loadgen::{self, BenchConfig, Protocol, Target, report};

use super::args::{BenchArgs, BenchProtocol};

fn config(a: BenchArgs) -> Result<(BenchConfig, BenchArgs)> {
    let policy = match &a.policy {
        Some(p) => Some(std::sync::Arc::new(super::attest::read_channel_policy(
            p, &a.gpu,
        )?)),
        None => None,
    };
    let ca_pem = if a.addr.starts_with("https://") && policy.is_none() {
        let path = a.tls_ca.clone().unwrap_or_else(|| {
            a.data_dir
                .clone()
                .unwrap_or_else(|| PathBuf::from(confidant::server::DEFAULT_DATA_DIR))
                .join("tls")
                .join("cert.pem")
        });
        Some(std::fs::read(&path).with_context(|| {
            format!(
                "--tls-ca {}: cannot read the CA certificate",
                path.display()
            )
        })?)
    } else {
        None
    };
    let api_key = match &a.api_key {
        Some(k) => Some(k.clone()),
        None if ca_pem.is_some() => super::demo_api_key(a.data_dir.as_deref()),
        None => None,
    };
    let fallback_range = {
        let parts = loadgen::parse_list_f32(&a.input_range)?;
        let &[lo, hi] = parts.as_slice() else {
            bail!("--input-range {:?}: expected LO,HI", a.input_range);
        };
        if !(lo.is_finite() && hi.is_finite() && lo <= hi) {
            bail!(
                "--input-range {:?}: expected finite LO <= HI",
                a.input_range
            );
        }
        (lo, hi)
    };
    let mut texts = a.text.clone();
    if let Some(path) = &a.input_jsonl {
        let from_file = super::calls::read_jsonl_texts(path)?;
        if from_file.is_empty() {
            bail!("--input-jsonl {}: no texts in the file", path.display());
        }
        texts.extend(from_file);
    }
    let config = BenchConfig {
        target: Target {
            addr: a.addr.clone(),
            ca_pem,
            policy,
            api_key,
            purpose: a.purpose.clone(),
            protocol: match a.protocol {
                BenchProtocol::Oip => Protocol::Oip,
                BenchProtocol::Confidant => Protocol::Confidant,
            },
            model: a.model.clone(),
            fallback_range,
            receipts: a.receipts,
        },
        batches: loadgen::parse_list("--batch", &a.batch)?,
        concurrencies: loadgen::parse_list("--concurrency", &a.concurrency)?,
        window: loadgen::parse_duration(&a.window).context("--window")?,
        warmup: loadgen::parse_duration(&a.warmup).context("--warmup")?,
        max_trials: a.max_trials,
        connections: a.connections,
        seed: a.seed,
        texts,
    };
    config.validate()?;
    Ok((config, a))
}

/// Runs the benchmark and writes its reports.
pub async fn run(a: BenchArgs) -> Result<()> {
    let (config, a) = config(a)?;
    // Read the baseline first: a typo should not cost a whole run.
    let baseline = a
        .baseline
        .as_deref()
        .map(report::read_results)
        .transpose()?;
    println!(
        "confidant bench: {} {} model {} (window {:?}, up to {} windows, at most {:?} in all)",
        config.target.protocol.as_str(),
        config.target.addr,
        config.target.model,
        config.window,
        config.max_trials,
        config.time_bound()
    );
    if !config.texts.is_empty() {
        println!(
            "texts: {} (--batch texts per request, taken in turn)",
            config.texts.len()
        );
    }
    println!("{}", report::table_header());
    let results = loadgen::run(&config, |m| println!("{}", report::table_row(m))).await?;
    let mut series = vec![report::Series {
        label: &a.label,
        points: &results,
    }];
    if let Some(b) = &baseline {
        println!();
        print!(
            "{}",
            report::comparison(&a.label, &results, &a.baseline_label, b)
        );
        series.push(report::Series {
            label: &a.baseline_label,
            points: b,
        });
    }
    if let Some(dir) = &a.out {
        let title = format!(
            "{} latency vs throughput ({})",
            config.target.model,
            config.target.protocol.as_str()
        );
        report::write_dir(dir, &title, &series, &results)?;
        println!(
            "wrote {0}/results.json, {0}/results.csv, {0}/latency_throughput.svg",
            dir.display()
        );
    }
    Ok(())
}
