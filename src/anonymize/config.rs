//! The anonymization config: the TOML file format (documented on [`AnonymizeConfig`]) and the
//! validated form the pipeline runs on.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use super::error::AnonymizeError;

/// What to do with one column.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum ColumnRole {
    /// A direct identifier, replaced by its HMAC-SHA256 pseudonym under the key in `key_file`.
    Identifier {
        /// The key file (its bytes are the key; at least 32).
        key_file: PathBuf,
    },
    /// Removed from the output (data minimization).
    Drop,
    /// A quasi-identifier, generalized.
    Quasi(QuasiKind),
    /// A sensitive attribute: released unchanged, protected by l-diversity and measured by t.
    Sensitive,
    /// Released unchanged (also the role of every column the config does not name).
    Keep,
}

/// How a quasi-identifier is generalized.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum QuasiKind {
    /// Categorical, through an ARX-style hierarchy file.
    Hierarchy(PathBuf),
    /// Numeric, released as the partition's `lo-hi` range, or the exact value.
    Numeric,
}

/// Which l-diversity to enforce while partitioning.
#[derive(Debug, Clone, Copy, PartialEq)]
#[non_exhaustive]
pub enum Diversity {
    /// Every class holds at least `l` distinct sensitive values.
    Distinct(usize),
    /// Every class's sensitive-value entropy is at least `ln(l)`.
    Entropy(f64),
}

impl Diversity {
    /// The `l`.
    pub fn l(&self) -> f64 {
        match *self {
            Self::Distinct(l) => l as f64,
            Self::Entropy(l) => l,
        }
    }

    /// "distinct" or "entropy".
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Distinct(_) => "distinct",
            Self::Entropy(_) => "entropy",
        }
    }
}

/// A validated anonymization config.
///
/// # TOML format
///
/// ```toml
/// k = 10                      # required: every released class has at least k records
/// l = 2                       # optional: l-diversity of the sensitive column(s)
/// l_kind = "distinct"         # "distinct" (default) or "entropy"
/// suppression_limit = 0.01    # optional: share of records that may be suppressed (default 0)
/// missing = "?"               # optional: drop rows where any field equals this token
/// key_file = "pseudonym.key"  # optional: default key for identifier columns
///
/// [columns.name]
/// role = "identifier"         # HMAC-SHA256 pseudonym; the key file is never logged
/// key_file = "name.key"       # overrides the top-level key_file
///
/// [columns.fnlwgt]
/// role = "drop"               # removed from the output
///
/// [columns.age]
/// role = "quasi"
/// numeric = true              # released as lo-hi, or the exact value
///
/// [columns.education]
/// role = "quasi"
/// hierarchy = "hierarchies/education.csv"   # ARX layout: one row per leaf, one column per level
///
/// [columns.income]
/// role = "sensitive"
///
/// [columns.hours-per-week]
/// role = "keep"               # the default for any column not named
/// ```
///
/// Relative paths are resolved against the config file's directory.
#[derive(Debug, Clone, PartialEq)]
pub struct AnonymizeConfig {
    /// The k of k-anonymity (at least 1).
    pub k: usize,
    /// Optional l-diversity.
    pub diversity: Option<Diversity>,
    /// Share of records that may be suppressed, in `[0, 1)`.
    pub suppression_limit: f64,
    /// Drop rows where any field equals this token.
    pub missing: Option<String>,
    /// The roles of the named columns, in config order.
    pub columns: Vec<(String, ColumnRole)>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    k: usize,
    l: Option<f64>,
    l_kind: Option<String>,
    #[serde(default)]
    suppression_limit: f64,
    missing: Option<String>,
    key_file: Option<PathBuf>,
    #[serde(default)]
    columns: BTreeMap<String, FileColumn>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileColumn {
    role: String,
    key_file: Option<PathBuf>,
    hierarchy: Option<PathBuf>,
    #[serde(default)]
    numeric: bool,
}

impl AnonymizeConfig {
    /// Reads and validates a TOML config file.
    pub fn from_toml_file(path: &Path) -> Result<Self, AnonymizeError> {
        let text = std::fs::read_to_string(path).map_err(|e| AnonymizeError::io(path, e))?;
        let base = path.parent().unwrap_or(Path::new("."));
        Self::from_toml_str(&text, base)
    }

    /// Parses and validates TOML; relative paths are resolved against `base`.
    pub fn from_toml_str(text: &str, base: &Path) -> Result<Self, AnonymizeError> {
        let file: FileConfig =
            toml::from_str(text).map_err(|e| AnonymizeError::Config(e.to_string()))?;
        let resolve = |p: PathBuf| if p.is_relative() { base.join(p) } else { p };
        let mut columns = Vec::with_capacity(file.columns.len());
        for (name, c) in file.columns {
            let role = match c.role.as_str() {
                "identifier" => {
                    let key_file =
                        c.key_file
                            .or_else(|| file.key_file.clone())
                            .ok_or_else(|| {
                                AnonymizeError::Config(format!(
                                    "column {name:?}: an identifier needs a key_file"
                                ))
                            })?;
                    ColumnRole::Identifier {
                        key_file: resolve(key_file),
                    }
                }
                "drop" => ColumnRole::Drop,
                "quasi" => match (c.hierarchy, c.numeric) {
                    (Some(h), false) => ColumnRole::Quasi(QuasiKind::Hierarchy(resolve(h))),
                    (None, true) => ColumnRole::Quasi(QuasiKind::Numeric),
                    _ => {
                        return Err(AnonymizeError::Config(format!(
                            "column {name:?}: a quasi-identifier needs either a hierarchy or \
                             numeric = true"
                        )));
                    }
                },
                "sensitive" => ColumnRole::Sensitive,
                "keep" => ColumnRole::Keep,
                other => {
                    return Err(AnonymizeError::Config(format!(
                        "column {name:?}: unknown role {other:?} (identifier, drop, quasi, \
                         sensitive, keep)"
                    )));
                }
            };
            columns.push((name, role));
        }
        let diversity = diversity(file.l, file.l_kind.as_deref())?;
        let config = Self {
            k: file.k,
            diversity,
            suppression_limit: file.suppression_limit,
            missing: file.missing,
            columns,
        };
        config.validate()?;
        Ok(config)
    }

    /// Checks the values that do not depend on the data.
    pub fn validate(&self) -> Result<(), AnonymizeError> {
        if self.k == 0 {
            return Err(AnonymizeError::Config("k must be at least 1".into()));
        }
        if !(0.0..1.0).contains(&self.suppression_limit) {
            return Err(AnonymizeError::Config(
                "suppression_limit must be in [0, 1)".into(),
            ));
        }
        if !self
            .columns
            .iter()
            .any(|(_, r)| matches!(r, ColumnRole::Quasi(_)))
        {
            return Err(AnonymizeError::Config("no quasi-identifier column".into()));
        }
        if let Some(d) = self.diversity {
            if !self
                .columns
                .iter()
                .any(|(_, r)| matches!(r, ColumnRole::Sensitive))
            {
                return Err(AnonymizeError::Config(
                    "l-diversity needs a sensitive column".into(),
                ));
            }
            if d.l().is_nan() || d.l() < 1.0 {
                return Err(AnonymizeError::Config("l must be at least 1".into()));
            }
        }
        for (i, (name, _)) in self.columns.iter().enumerate() {
            if self.columns[..i].iter().any(|(n, _)| n == name) {
                return Err(AnonymizeError::Config(format!(
                    "column {name:?} is named twice"
                )));
            }
        }
        Ok(())
    }
}

/// Builds the l-diversity setting from `l` and its kind.
pub fn diversity(l: Option<f64>, kind: Option<&str>) -> Result<Option<Diversity>, AnonymizeError> {
    let Some(l) = l else {
        return match kind {
            None => Ok(None),
            Some(_) => Err(AnonymizeError::Config("l_kind without l".into())),
        };
    };
    match kind.unwrap_or("distinct") {
        "distinct" => {
            if l.fract() != 0.0 || l < 1.0 {
                return Err(AnonymizeError::Config(
                    "distinct l-diversity needs a whole l of at least 1".into(),
                ));
            }
            Ok(Some(Diversity::Distinct(l as usize)))
        }
        "entropy" => Ok(Some(Diversity::Entropy(l))),
        other => Err(AnonymizeError::Config(format!(
            "unknown l_kind {other:?} (distinct, entropy)"
        ))),
    }
}
