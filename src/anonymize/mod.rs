//! Anonymization of training tables: keyed pseudonyms for direct identifiers, generalization of
//! quasi-identifiers by strict multidimensional Mondrian to k-anonymity (optionally with
//! distinct or entropy l-diversity enforced while partitioning), t-closeness measured, and a
//! utility report (NCP/GCP, discernibility, average class size).
//!
//! ```no_run
//! use confidant::anonymize::{AnonymizeConfig, Anonymizer, Table};
//! # fn main() -> Result<(), confidant::anonymize::AnonymizeError> {
//! let config = AnonymizeConfig::from_toml_file("anon.toml".as_ref())?;
//! let table = Table::read_csv("adult.csv".as_ref(), config.missing.as_deref())?;
//! let release = Anonymizer::new(config)?.run(&table)?;
//! release.write_csv(std::io::stdout().lock())?;
//! eprintln!("k = {}, NCP = {:.2}%", release.report().stats.k, release.report().ncp_percent);
//! # Ok(()) }
//! ```
//!
//! The config format is documented on [`AnonymizeConfig`]; the command line on
//! `confidant anonymize --help` and in `docs/anonymize.md`.
//!
//! Memory: the table is held in memory, dictionary-encoded (4 bytes per cell plus each
//! distinct value once, and 4 more bytes per quasi-identifier cell while partitioning). There
//! is no streaming mode, because Mondrian needs every record at once.

mod config;
mod error;
mod hierarchy;
mod metrics;
mod mondrian;
mod pseudonym;
mod table;

#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, HashMap};
use std::io::Write;
use std::time::Instant;

use serde::Serialize;

pub use config::{AnonymizeConfig, ColumnRole, Diversity, QuasiKind, diversity};
pub use error::AnonymizeError;
pub use hierarchy::Hierarchy;
pub use metrics::ClassStats;
pub use mondrian::SplitRule;
pub use pseudonym::{MIN_KEY_BYTES, PseudonymKey};
pub use table::{Column, Table};

use hierarchy::Lca;
use metrics::SensitiveColumn;
use mondrian::{Attr, Problem};

/// Label of a suppressed or fully generalized cell.
pub const SUPPRESSED: &str = "*";

/// A config with its hierarchies and keys loaded, ready to run on tables.
pub struct Anonymizer {
    config: AnonymizeConfig,
    hierarchies: HashMap<String, Hierarchy>,
    keys: HashMap<String, PseudonymKey>,
    rule: SplitRule,
}

impl std::fmt::Debug for Anonymizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The keys are deliberately left out.
        f.debug_struct("Anonymizer")
            .field("config", &self.config)
            .field("rule", &self.rule)
            .finish_non_exhaustive()
    }
}

impl Anonymizer {
    /// Validates the config and loads its hierarchy and key files.
    pub fn new(config: AnonymizeConfig) -> Result<Self, AnonymizeError> {
        config.validate()?;
        let mut hierarchies = HashMap::new();
        let mut keys = HashMap::new();
        for (name, role) in &config.columns {
            match role {
                ColumnRole::Quasi(QuasiKind::Hierarchy(path)) => {
                    hierarchies.insert(name.clone(), Hierarchy::from_file(path)?);
                }
                ColumnRole::Identifier { key_file } => {
                    keys.insert(name.clone(), PseudonymKey::from_file(key_file)?);
                }
                _ => {}
            }
        }
        Ok(Self {
            config,
            hierarchies,
            keys,
            rule: SplitRule::Gain,
        })
    }

    /// Chooses the cut-selection rule (default [`SplitRule::Gain`]).
    pub fn with_split_rule(mut self, rule: SplitRule) -> Self {
        self.rule = rule;
        self
    }

    /// The config.
    pub fn config(&self) -> &AnonymizeConfig {
        &self.config
    }

    /// Anonymizes a table.
    pub fn run<'t>(&self, table: &'t Table) -> Result<Release<'t>, AnonymizeError> {
        let started = Instant::now();
        let n = table.len();
        let mut roles: Vec<Role> = vec![Role::Keep; table.columns().len()];
        let mut quasi: Vec<(usize, &ColumnRole)> = Vec::new();
        let mut sensitive_cols: Vec<usize> = Vec::new();
        for (name, role) in &self.config.columns {
            let col = table.column_index(name)?;
            roles[col] = match role {
                ColumnRole::Identifier { .. } => {
                    let key = self.keys.get(name).ok_or_else(|| {
                        AnonymizeError::Config(format!("no key loaded for column {name:?}"))
                    })?;
                    let dict = table.columns()[col].dictionary();
                    Role::Pseudonym(dict.iter().map(|v| key.pseudonym(v)).collect())
                }
                ColumnRole::Drop => Role::Drop,
                ColumnRole::Quasi(_) => {
                    quasi.push((col, role));
                    Role::Quasi(quasi.len() - 1)
                }
                ColumnRole::Sensitive => {
                    sensitive_cols.push(col);
                    Role::Keep
                }
                ColumnRole::Keep => Role::Keep,
            };
        }
        let k = self.config.k;
        if k > n {
            return Err(AnonymizeError::KTooLarge { k, rows: n });
        }

        // Encode each quasi-identifier: a map from dictionary code to ordinal code.
        let d = quasi.len();
        let mut attrs: Vec<Attr<'_>> = Vec::with_capacity(d);
        let mut maps: Vec<Vec<u32>> = Vec::with_capacity(d);
        let mut numeric_labels: Vec<Vec<&str>> = Vec::with_capacity(d);
        let mut bad: Vec<AnonymizeError> = Vec::new();
        for &(col, role) in &quasi {
            let column = &table.columns()[col];
            let dict = column.dictionary();
            match role {
                ColumnRole::Quasi(QuasiKind::Hierarchy(_)) => {
                    let h = self.hierarchies.get(column.name()).ok_or_else(|| {
                        AnonymizeError::Config(format!(
                            "no hierarchy loaded for column {:?}",
                            column.name()
                        ))
                    })?;
                    let mut map = Vec::with_capacity(dict.len());
                    for (code, value) in dict.iter().enumerate() {
                        match h.code(value) {
                            Some(leaf) => map.push(leaf),
                            None => {
                                bad.push(AnonymizeError::NotInHierarchy {
                                    line: table.first_line_with(col, code as u32),
                                    column: column.name().to_owned(),
                                    value: value.to_string(),
                                });
                                map.push(0);
                            }
                        }
                    }
                    attrs.push(Attr::Categorical(h));
                    maps.push(map);
                    numeric_labels.push(Vec::new());
                }
                _ => {
                    let mut parsed: Vec<(f64, u32)> = Vec::with_capacity(dict.len());
                    for (code, value) in dict.iter().enumerate() {
                        match value.trim().parse::<f64>().ok().filter(|x| x.is_finite()) {
                            Some(x) => parsed.push((x, code as u32)),
                            None => {
                                bad.push(AnonymizeError::NotNumeric {
                                    line: table.first_line_with(col, code as u32),
                                    column: column.name().to_owned(),
                                    value: value.to_string(),
                                });
                                parsed.push((0.0, code as u32));
                            }
                        }
                    }
                    parsed.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)));
                    let mut values: Vec<f64> = Vec::new();
                    let mut labels: Vec<&str> = Vec::new();
                    let mut map = vec![0u32; dict.len()];
                    for &(x, code) in &parsed {
                        if values.last() != Some(&x) {
                            values.push(x);
                            labels.push(&dict[code as usize]);
                        }
                        map[code as usize] = (values.len() - 1) as u32;
                    }
                    let span = match (values.first(), values.last()) {
                        (Some(lo), Some(hi)) => hi - lo,
                        _ => 0.0,
                    };
                    attrs.push(Attr::Numeric { values, span });
                    maps.push(map);
                    numeric_labels.push(labels);
                }
            }
        }
        // Report the bad value that comes first in the file, whichever column it is in.
        if let Some(first) = bad.into_iter().min_by_key(|e| match e {
            AnonymizeError::NotInHierarchy { line, .. }
            | AnonymizeError::NotNumeric { line, .. } => *line,
            _ => u64::MAX,
        }) {
            return Err(first);
        }
        let mut qi = vec![0u32; n * d];
        for (q, &(col, _)) in quasi.iter().enumerate() {
            let codes = table.columns()[col].codes();
            let map = &maps[q];
            for (r, &c) in codes.iter().enumerate() {
                qi[r * d + q] = map[c as usize];
            }
        }
        let sens_codes: Vec<(&[u32], usize)> = sensitive_cols
            .iter()
            .map(|&c| {
                let col = &table.columns()[c];
                (col.codes(), col.dictionary().len())
            })
            .collect();
        let problem = Problem {
            n,
            d,
            qi: &qi,
            attrs: &attrs,
            sensitive: &sens_codes,
            k,
            diversity: self.config.diversity,
            suppression_budget: (self.config.suppression_limit * n as f64).floor() as usize,
            rule: self.rule,
        };
        if let Some(div) = self.config.diversity {
            for (i, &c) in sensitive_cols.iter().enumerate() {
                let one = Problem {
                    sensitive: &sens_codes[i..=i],
                    ..problem
                };
                let all: Vec<u32> = (0..n as u32).collect();
                if !one.diverse_all(&all) {
                    return Err(AnonymizeError::NotDiverse {
                        l: div.l(),
                        kind: div.kind(),
                        column: table.columns()[c].name().to_owned(),
                    });
                }
            }
        }
        let parts = problem.partition();

        // Release labels and NCP per partition.
        let mut labels: Vec<String> = Vec::with_capacity(parts.parts.len() * d);
        let mut ncp_sum = vec![0.0f64; d];
        let mut part_of = vec![u32::MAX; n];
        for (p, &(start, end)) in parts.parts.iter().enumerate() {
            let records = &parts.order[start..end];
            for &r in records {
                part_of[r as usize] = p as u32;
            }
            for (q, attr) in attrs.iter().enumerate() {
                let (label, cost) = release_cell(attr, &numeric_labels[q], &qi, d, q, records);
                ncp_sum[q] += cost * records.len() as f64;
                labels.push(label);
            }
        }
        let suppressed = parts.suppressed.len();
        // Partitions with the same released tuple form one equivalence class.
        let mut class_ids: HashMap<&[String], u32> = HashMap::with_capacity(parts.parts.len());
        let mut class_of_part = Vec::with_capacity(parts.parts.len());
        for p in 0..parts.parts.len() {
            let key = &labels[p * d..(p + 1) * d];
            let next = class_ids.len() as u32;
            class_of_part.push(*class_ids.entry(key).or_insert(next));
        }
        let class_of: Vec<u32> = part_of
            .iter()
            .map(|&p| class_of_part.get(p as usize).copied().unwrap_or(u32::MAX))
            .collect();
        let sens_measure: Vec<SensitiveColumn<'_>> = sensitive_cols
            .iter()
            .map(|&c| {
                let col = &table.columns()[c];
                SensitiveColumn::new(col.codes(), col.dictionary())
            })
            .collect();
        let stats = metrics::class_stats(&class_of, class_ids.len(), &sens_measure);
        let class_sizes_sq: f64 = {
            let mut sizes = vec![0u64; class_ids.len()];
            for &c in &class_of {
                if let Some(s) = sizes.get_mut(c as usize) {
                    *s += 1;
                }
            }
            sizes.iter().map(|&s| (s * s) as f64).sum()
        };
        let cells = (n * d) as f64;
        let suppressed_cost = suppressed as f64;
        let ncp_percent =
            100.0 * (ncp_sum.iter().sum::<f64>() + suppressed_cost * d as f64) / cells;
        let ncp_per_attribute = quasi
            .iter()
            .zip(&ncp_sum)
            .map(|(&(col, _), &s)| {
                (
                    table.columns()[col].name().to_owned(),
                    100.0 * (s + suppressed_cost) / n as f64,
                )
            })
            .collect();
        let report = Report {
            records: n,
            dropped_missing: table.dropped(),
            released: n - suppressed,
            suppressed,
            k_target: k,
            l_target: self.config.diversity.map(|d| d.l()),
            l_kind: self.config.diversity.map(|d| d.kind()),
            quasi_identifiers: quasi
                .iter()
                .map(|&(c, _)| table.columns()[c].name().to_owned())
                .collect(),
            sensitive: sensitive_cols
                .iter()
                .map(|&c| table.columns()[c].name().to_owned())
                .collect(),
            partitions: parts.parts.len(),
            normalized_average_class_size: stats.average_class_size / k as f64,
            discernibility: class_sizes_sq + (suppressed as f64) * (n as f64),
            ncp_percent,
            ncp_per_attribute_percent: ncp_per_attribute,
            runtime_ms: started.elapsed().as_secs_f64() * 1e3,
            stats,
        };
        Ok(Release {
            table,
            roles,
            d,
            labels,
            part_of,
            report,
        })
    }
}

/// The released label of quasi-identifier `q` for a partition, and its NCP.
fn release_cell(
    attr: &Attr<'_>,
    numeric_labels: &[&str],
    qi: &[u32],
    d: usize,
    q: usize,
    records: &[u32],
) -> (String, f64) {
    let mut codes = records.iter().map(|&r| qi[r as usize * d + q]);
    let Some(first) = codes.next() else {
        return (SUPPRESSED.to_owned(), 1.0);
    };
    match attr {
        Attr::Categorical(h) => {
            let mut lca = Lca::new(h, first);
            for c in codes {
                lca.add(h, c);
            }
            (lca.label(h).to_owned(), lca.cost(h))
        }
        Attr::Numeric { values, span } => {
            let (lo, hi) = codes.fold((first, first), |(lo, hi), c| (lo.min(c), hi.max(c)));
            let label_of = |c: u32| numeric_labels.get(c as usize).copied().unwrap_or("");
            if lo == hi {
                (label_of(lo).to_owned(), 0.0)
            } else {
                let cost = if *span > 0.0 {
                    (values[hi as usize] - values[lo as usize]) / span
                } else {
                    0.0
                };
                (format!("{}-{}", label_of(lo), label_of(hi)), cost)
            }
        }
    }
}

#[derive(Debug, Clone)]
enum Role {
    Keep,
    Drop,
    Pseudonym(Vec<String>),
    Quasi(usize),
}

/// What an anonymization run achieved. Serialized as the `--report` JSON.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// Records in the input (after dropping rows with missing values).
    pub records: usize,
    /// Rows dropped because they held the missing-value token.
    pub dropped_missing: usize,
    /// Records written to the output.
    pub released: usize,
    /// Records suppressed (left out of the output).
    pub suppressed: usize,
    /// The k asked for.
    pub k_target: usize,
    /// The l asked for, if any.
    pub l_target: Option<f64>,
    /// "distinct" or "entropy", if l was asked for.
    pub l_kind: Option<&'static str>,
    /// The quasi-identifier columns.
    pub quasi_identifiers: Vec<String>,
    /// The sensitive columns.
    pub sensitive: Vec<String>,
    /// Achieved k, l and t, measured on the released classes.
    #[serde(flatten)]
    pub stats: ClassStats,
    /// Mondrian partitions (classes with the same released tuple merge).
    pub partitions: usize,
    /// Average class size divided by k (1 is ideal).
    pub normalized_average_class_size: f64,
    /// Discernibility: Σ|E|² + suppressed·N.
    pub discernibility: f64,
    /// NCP (GCP) over all quasi-identifier cells, in percent; a suppressed record costs 1 per
    /// cell.
    pub ncp_percent: f64,
    /// NCP per quasi-identifier, in percent.
    pub ncp_per_attribute_percent: BTreeMap<String, f64>,
    /// Wall time of the run, in milliseconds (reading and writing files excluded).
    pub runtime_ms: f64,
}

/// An anonymized table, ready to write.
#[derive(Debug)]
pub struct Release<'t> {
    table: &'t Table,
    roles: Vec<Role>,
    d: usize,
    /// `labels[p * d + q]`: the released value of quasi-identifier q in partition p.
    labels: Vec<String>,
    /// Partition of each record; `u32::MAX` when suppressed.
    part_of: Vec<u32>,
    report: Report,
}

impl Release<'_> {
    /// The report.
    pub fn report(&self) -> &Report {
        &self.report
    }

    /// Writes the released table as CSV: the input's columns in order, less dropped ones;
    /// suppressed records are left out; other rows keep their input order.
    pub fn write_csv<W: Write>(&self, writer: W) -> Result<(), AnonymizeError> {
        let to_err = |e: csv::Error| AnonymizeError::Io {
            path: "<output>".into(),
            source: std::io::Error::other(e.to_string()),
        };
        let mut w = csv::Writer::from_writer(writer);
        let columns = self.table.columns();
        let keep = |i: usize| !matches!(self.roles[i], Role::Drop);
        w.write_record(
            columns
                .iter()
                .enumerate()
                .filter(|&(i, _)| keep(i))
                .map(|(_, c)| c.name()),
        )
        .map_err(to_err)?;
        let mut fields: Vec<&str> = Vec::with_capacity(columns.len());
        for (r, &p) in self.part_of.iter().enumerate() {
            if p == u32::MAX {
                continue;
            }
            fields.clear();
            for (i, column) in columns.iter().enumerate() {
                let code = column.codes()[r] as usize;
                match &self.roles[i] {
                    Role::Drop => {}
                    Role::Keep => fields.push(&column.dictionary()[code]),
                    Role::Pseudonym(names) => fields.push(&names[code]),
                    Role::Quasi(q) => fields.push(&self.labels[p as usize * self.d + q]),
                }
            }
            w.write_record(&fields).map_err(to_err)?;
        }
        w.flush().map_err(|e| AnonymizeError::io("<output>", e))
    }
}

/// What `check` measures on any table, as pyCANON does: classes are the records with equal
/// quasi-identifier values, compared as text.
pub fn check(
    table: &Table,
    quasi: &[String],
    sensitive: &[String],
) -> Result<ClassStats, AnonymizeError> {
    let cols: Vec<usize> = quasi
        .iter()
        .map(|q| table.column_index(q))
        .collect::<Result<_, _>>()?;
    let sens: Vec<usize> = sensitive
        .iter()
        .map(|s| table.column_index(s))
        .collect::<Result<_, _>>()?;
    let d = cols.len();
    let n = table.len();
    let mut keys = vec![0u32; n * d];
    for (q, &c) in cols.iter().enumerate() {
        for (r, &code) in table.columns()[c].codes().iter().enumerate() {
            keys[r * d + q] = code;
        }
    }
    let mut ids: HashMap<&[u32], u32> = HashMap::new();
    let mut class_of = Vec::with_capacity(n);
    for r in 0..n {
        let key = &keys[r * d..(r + 1) * d];
        let next = ids.len() as u32;
        class_of.push(*ids.entry(key).or_insert(next));
    }
    let sens_measure: Vec<SensitiveColumn<'_>> = sens
        .iter()
        .map(|&c| {
            let col = &table.columns()[c];
            SensitiveColumn::new(col.codes(), col.dictionary())
        })
        .collect();
    Ok(metrics::class_stats(&class_of, ids.len(), &sens_measure))
}
