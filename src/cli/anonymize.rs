//! `confidant anonymize`: flags, and the commands that run the library's anonymizer.
//!
//! Two forms take the same settings: `--config anon.toml`, or flags for quick runs
//! (`--qi a,b,c --hierarchy a=a.csv --numeric age --sensitive s --k 10 [--l 2]`). Flags are
//! parsed here, then turned into one validated [`AnonymizeConfig`] before anything is read.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use clap::{Args, Subcommand};
use confidant::anonymize::{
    self, AnonymizeConfig, Anonymizer, ColumnRole, QuasiKind, SplitRule, Table,
};

/// `confidant anonymize`.
#[derive(Debug, Args)]
#[command(args_conflicts_with_subcommands = true)]
pub struct AnonymizeArgs {
    /// `check` instead of anonymizing.
    #[command(subcommand)]
    pub command: Option<AnonymizeCommand>,
    /// The settings of a run.
    #[command(flatten)]
    pub run: AnonymizeRunArgs,
}

/// Subcommands of `confidant anonymize`.
#[derive(Debug, Subcommand)]
pub enum AnonymizeCommand {
    /// Report k, l and t of any table (as pyCANON does), without changing it.
    Check(AnonymizeCheckArgs),
}

/// The flags of an anonymization run.
#[derive(Debug, Args)]
pub struct AnonymizeRunArgs {
    /// The input table (CSV with a header row).
    #[arg(long)]
    pub input: Option<PathBuf>,
    /// Where to write the anonymized table (CSV).
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// A TOML config (see docs/anonymize.md); excludes the column flags below.
    #[arg(long, conflicts_with_all = ["qi", "hierarchy", "numeric", "sensitive", "identifier", "drop", "k"])]
    pub config: Option<PathBuf>,
    /// Where to write the report (JSON); it is printed on stdout too.
    #[arg(long)]
    pub report: Option<PathBuf>,
    /// Quasi-identifier columns, comma-separated.
    #[arg(long, value_delimiter = ',')]
    pub qi: Vec<String>,
    /// A quasi-identifier's hierarchy file, COLUMN=FILE (repeatable).
    #[arg(long, value_name = "COLUMN=FILE")]
    pub hierarchy: Vec<String>,
    /// Numeric quasi-identifiers, released as lo-hi ranges (comma-separated or repeated).
    #[arg(long, value_delimiter = ',')]
    pub numeric: Vec<String>,
    /// Sensitive columns (comma-separated or repeated).
    #[arg(long, value_delimiter = ',')]
    pub sensitive: Vec<String>,
    /// Identifier columns to replace by HMAC-SHA256 pseudonyms (needs --key-file).
    #[arg(long, value_delimiter = ',', requires = "key_file")]
    pub identifier: Vec<String>,
    /// The pseudonym key file (its bytes are the key; at least 32). Never logged.
    #[arg(long)]
    pub key_file: Option<PathBuf>,
    /// Columns to leave out of the output (comma-separated or repeated).
    #[arg(long, value_delimiter = ',')]
    pub drop: Vec<String>,
    /// The k of k-anonymity.
    #[arg(long)]
    pub k: Option<usize>,
    /// Enforce l-diversity of the sensitive column(s).
    #[arg(long)]
    pub l: Option<f64>,
    /// Which l-diversity: distinct or entropy [default: distinct].
    #[arg(long)]
    pub l_kind: Option<String>,
    /// Share of records that may be suppressed, in [0, 1) [default: 0].
    #[arg(long)]
    pub suppression_limit: Option<f64>,
    /// Drop input rows where any field equals this token (e.g. `?`).
    #[arg(long)]
    pub missing: Option<String>,
    /// Cut selection: gain (default) or median (LeFevre's widest-attribute median).
    #[arg(long, default_value = "gain")]
    pub split_rule: String,
}

/// `confidant anonymize check`.
#[derive(Debug, Args)]
pub struct AnonymizeCheckArgs {
    /// The table (CSV with a header row).
    #[arg(long)]
    pub input: PathBuf,
    /// Quasi-identifier columns, comma-separated.
    #[arg(long, value_delimiter = ',', required = true)]
    pub qi: Vec<String>,
    /// Sensitive columns (comma-separated or repeated).
    #[arg(long, value_delimiter = ',')]
    pub sensitive: Vec<String>,
    /// Drop rows where any field equals this token before measuring.
    #[arg(long)]
    pub missing: Option<String>,
}

/// Runs `confidant anonymize` or `confidant anonymize check`.
pub fn anonymize(a: AnonymizeArgs) -> Result<()> {
    match a.command {
        Some(AnonymizeCommand::Check(c)) => check(&c),
        None => run(&a.run),
    }
}

fn check(a: &AnonymizeCheckArgs) -> Result<()> {
    let table = read_with_progress(&a.input, a.missing.as_deref())?;
    let stats = anonymize::check(&table, &a.qi, &a.sensitive)?;
    println!("{}", serde_json::to_string_pretty(&stats)?);
    Ok(())
}

/// Inputs at least this large (bytes, rows) get a progress bar on a terminal.
const PROGRESS_MIN_BYTES: u64 = 8 << 20;
const PROGRESS_MIN_ROWS: usize = 200_000;

/// Reads the input table, with a progress bar by bytes on stderr when it is a terminal and
/// the file is large. The table is held in memory dictionary-encoded: 4 bytes per cell plus
/// each distinct value once (see docs/anonymize.md for the bound).
fn read_with_progress(path: &Path, missing: Option<&str>) -> Result<Table> {
    let file = std::fs::File::open(path).with_context(|| format!("{}", path.display()))?;
    let len = file.metadata().map(|m| m.len()).unwrap_or(0);
    let bar = if len >= PROGRESS_MIN_BYTES {
        indicatif::ProgressBar::new(len)
    } else {
        indicatif::ProgressBar::hidden()
    };
    bar.set_style(
        indicatif::ProgressStyle::with_template(
            "reading {msg} {bar:30} {bytes}/{total_bytes} ({bytes_per_sec}, {eta})",
        )
        .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    bar.set_message(path.display().to_string());
    let reader = bar.wrap_read(std::io::BufReader::with_capacity(1 << 16, file));
    let table = Table::from_reader(reader, path, missing);
    bar.finish_and_clear();
    Ok(table?)
}

fn run(a: &AnonymizeRunArgs) -> Result<()> {
    let (Some(input), Some(out)) = (&a.input, &a.out) else {
        bail!("anonymize needs --input and --out (or the `check` subcommand)");
    };
    let config = build_config(a)?;
    let rule = match a.split_rule.as_str() {
        "gain" => SplitRule::Gain,
        "median" => SplitRule::Median,
        other => bail!("unknown --split-rule {other:?} (gain, median)"),
    };
    let table = read_with_progress(input, config.missing.as_deref())?;
    let spinner = indicatif::ProgressBar::new_spinner()
        .with_message(format!("partitioning {} rows (Mondrian)", table.len()));
    if table.len() >= PROGRESS_MIN_ROWS {
        spinner.enable_steady_tick(std::time::Duration::from_millis(120));
    }
    let release = Anonymizer::new(config)?.with_split_rule(rule).run(&table);
    spinner.finish_and_clear();
    let release = release?;
    let file = std::fs::File::create(out).with_context(|| format!("{}", out.display()))?;
    release.write_csv(std::io::BufWriter::new(file))?;
    let report = serde_json::to_string_pretty(release.report())?;
    if let Some(path) = &a.report {
        std::fs::write(path, &report).with_context(|| format!("{}", path.display()))?;
    }
    println!("{report}");
    Ok(())
}

/// The config from `--config`, or from the column flags.
fn build_config(a: &AnonymizeRunArgs) -> Result<AnonymizeConfig> {
    let mut config = match &a.config {
        Some(path) => AnonymizeConfig::from_toml_file(path)?,
        None => flags_config(a)?,
    };
    // These apply on top of either form.
    if let Some(l) = a.l {
        config.diversity = anonymize::diversity(Some(l), a.l_kind.as_deref())?;
    } else if a.l_kind.is_some() {
        bail!("--l-kind needs --l");
    }
    if let Some(s) = a.suppression_limit {
        config.suppression_limit = s;
    }
    if a.missing.is_some() {
        config.missing.clone_from(&a.missing);
    }
    config.validate()?;
    Ok(config)
}

fn flags_config(a: &AnonymizeRunArgs) -> Result<AnonymizeConfig> {
    let Some(k) = a.k else {
        bail!("anonymize needs --k (or --config)");
    };
    let mut hierarchies: Vec<(String, PathBuf)> = Vec::new();
    for h in &a.hierarchy {
        let Some((column, file)) = h.split_once('=') else {
            bail!("--hierarchy {h:?}: expected COLUMN=FILE");
        };
        if !a.qi.iter().any(|q| q == column) {
            bail!("--hierarchy {column}: the column is not in --qi");
        }
        hierarchies.push((column.to_owned(), Path::new(file).to_path_buf()));
    }
    let mut columns = Vec::new();
    for q in &a.qi {
        let hierarchy = hierarchies.iter().find(|(c, _)| c == q).map(|(_, f)| f);
        let numeric = a.numeric.iter().any(|n| n == q);
        let kind = match (hierarchy, numeric) {
            (Some(h), false) => QuasiKind::Hierarchy(h.clone()),
            (None, true) => QuasiKind::Numeric,
            (Some(_), true) => bail!("--qi {q}: give either --hierarchy or --numeric, not both"),
            (None, false) => bail!("--qi {q}: needs --hierarchy {q}=FILE or --numeric {q}"),
        };
        columns.push((q.clone(), ColumnRole::Quasi(kind)));
    }
    if let Some(n) = a.numeric.iter().find(|n| !a.qi.contains(n)) {
        bail!("--numeric {n}: the column is not in --qi");
    }
    for s in &a.sensitive {
        columns.push((s.clone(), ColumnRole::Sensitive));
    }
    for d in &a.drop {
        columns.push((d.clone(), ColumnRole::Drop));
    }
    for i in &a.identifier {
        let Some(key_file) = &a.key_file else {
            bail!("--identifier needs --key-file");
        };
        columns.push((
            i.clone(),
            ColumnRole::Identifier {
                key_file: key_file.clone(),
            },
        ));
    }
    Ok(AnonymizeConfig {
        k,
        diversity: None,
        suppression_limit: 0.0,
        missing: None,
        columns,
    })
}
