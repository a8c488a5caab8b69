//! Generalization hierarchies in the ARX CSV layout: one row per leaf value, column 0 the leaf,
//! then one column per generalization level, most general last (usually `*`). No header row.
//! A `;` delimiter (ARX's default export) is accepted as well as `,`.
//!
//! Leaves are re-ordered depth-first (each subtree contiguous, file order kept inside a group)
//! so that a cut between two adjacent leaf positions is a meaningful split of the domain and
//! the lowest common ancestor of a set can be found from its members in one pass.

use std::collections::HashMap;
use std::io::Read;
use std::path::{Path, PathBuf};

use super::error::AnonymizeError;

/// Label of the implicit root added when the last column of a file has more than one value.
const IMPLICIT_ROOT: &str = "*";

/// A generalization hierarchy over the leaf values of one categorical quasi-identifier.
#[derive(Debug, Clone)]
pub struct Hierarchy {
    /// Leaf labels, in depth-first order; a leaf's position is its code.
    leaves: Vec<String>,
    /// Leaf label to position.
    index: HashMap<String, u32>,
    /// Number of levels, leaves included (level 0 is the leaf itself).
    levels: usize,
    /// `node_of[level * leaves + leaf]`: the node that covers `leaf` at `level`.
    node_of: Vec<u32>,
    /// Label of each node.
    node_label: Vec<String>,
    /// Leaves under each node.
    node_leaves: Vec<u32>,
}

impl Hierarchy {
    /// Reads a hierarchy file.
    pub fn from_file(path: &Path) -> Result<Self, AnonymizeError> {
        let file = std::fs::File::open(path).map_err(|e| AnonymizeError::io(path, e))?;
        Self::from_reader(file, path)
    }

    /// Parses a hierarchy from any reader; `path` only names it in errors.
    pub fn from_reader<R: Read>(mut reader: R, path: &Path) -> Result<Self, AnonymizeError> {
        let mut text = String::new();
        reader
            .read_to_string(&mut text)
            .map_err(|e| AnonymizeError::io(path, e))?;
        let bad = |line: u64, message: String| AnonymizeError::Hierarchy {
            path: PathBuf::from(path),
            line,
            message,
        };
        let first_line = text.lines().next().unwrap_or("");
        let delimiter = if first_line.contains(';') && !first_line.contains(',') {
            b';'
        } else {
            b','
        };
        let mut csv = csv::ReaderBuilder::new()
            .has_headers(false)
            .flexible(true)
            .delimiter(delimiter)
            .from_reader(text.as_bytes());
        let mut rows: Vec<Vec<String>> = Vec::new();
        let mut lines: Vec<u64> = Vec::new();
        for record in csv.records() {
            let record = record.map_err(|e| {
                let line = e.position().map_or(0, csv::Position::line);
                bad(line, e.to_string())
            })?;
            let line = record.position().map_or(0, csv::Position::line);
            if record.iter().all(str::is_empty) {
                continue;
            }
            if let Some(width) = rows.first().map(Vec::len)
                && record.len() != width
            {
                return Err(bad(
                    line,
                    format!(
                        "ragged row: {} levels where the first row has {width}",
                        record.len()
                    ),
                ));
            }
            rows.push(record.iter().map(str::to_owned).collect());
            lines.push(line);
        }
        if rows.is_empty() {
            return Err(bad(0, "no rows".into()));
        }
        // Add an implicit root when the most general level still has more than one value, so
        // that every hierarchy ends in a single node covering the whole domain.
        let needs_root = rows
            .iter()
            .filter_map(|r| r.last())
            .any(|l| Some(l) != rows.first().and_then(|r| r.last()));
        if needs_root {
            for r in &mut rows {
                r.push(IMPLICIT_ROOT.to_owned());
            }
        }
        let levels = rows.first().map_or(0, Vec::len);

        // Intern nodes per level and check that the levels form a tree: two leaves that share
        // a node at one level must share it at every level above.
        let mut node_label: Vec<String> = Vec::new();
        let mut node_leaves: Vec<u32> = Vec::new();
        let mut per_level: Vec<HashMap<&str, u32>> = vec![HashMap::new(); levels];
        let mut parent: HashMap<u32, u32> = HashMap::new();
        let mut file_nodes: Vec<Vec<u32>> = Vec::with_capacity(rows.len());
        for (row, &line) in rows.iter().zip(&lines) {
            let mut ids = Vec::with_capacity(levels);
            for (level, label) in row.iter().enumerate() {
                let map = &mut per_level[level];
                let id = match map.get(label.as_str()) {
                    Some(&id) if level > 0 => id,
                    Some(_) => return Err(bad(line, format!("leaf {label:?} appears twice"))),
                    None => {
                        let id = u32::try_from(node_label.len())
                            .map_err(|_| bad(line, "too many nodes".into()))?;
                        map.insert(label.as_str(), id);
                        node_label.push(label.clone());
                        node_leaves.push(0);
                        id
                    }
                };
                if let Some(&below) = ids.last() {
                    match parent.insert(below, id) {
                        Some(p) if p != id => {
                            return Err(bad(
                                line,
                                format!(
                                    "not a tree: {:?} at level {} has two parents, {:?} and \
                                     {label:?}",
                                    node_label[below as usize],
                                    level - 1,
                                    node_label[p as usize],
                                ),
                            ));
                        }
                        _ => {}
                    }
                }
                node_leaves[id as usize] += 1;
                ids.push(id);
            }
            file_nodes.push(ids);
        }

        // Depth-first order: sort leaves by the first-appearance rank of their ancestors, from
        // the root down; the sort is stable, so file order holds inside a group.
        let mut order: Vec<usize> = (0..rows.len()).collect();
        order.sort_by(|&a, &b| {
            let (na, nb) = (&file_nodes[a], &file_nodes[b]);
            na.iter().skip(1).rev().cmp(nb.iter().skip(1).rev())
        });
        let n = rows.len();
        let mut leaves = Vec::with_capacity(n);
        let mut index = HashMap::with_capacity(n);
        let mut node_of = vec![0u32; n * levels];
        for (pos, &row) in order.iter().enumerate() {
            let label = rows[row][0].clone();
            index.insert(label.clone(), pos as u32);
            leaves.push(label);
            for level in 0..levels {
                node_of[level * n + pos] = file_nodes[row][level];
            }
        }
        Ok(Self {
            leaves,
            index,
            levels,
            node_of,
            node_label,
            node_leaves,
        })
    }

    /// Number of leaves (the size of the domain).
    pub fn len(&self) -> usize {
        self.leaves.len()
    }

    /// Whether the hierarchy has no leaves (never true for a parsed file).
    pub fn is_empty(&self) -> bool {
        self.leaves.is_empty()
    }

    /// Number of levels, the leaves included.
    pub fn levels(&self) -> usize {
        self.levels
    }

    /// The depth-first position of a leaf, or `None` if the value is not a leaf.
    pub fn code(&self, leaf: &str) -> Option<u32> {
        self.index.get(leaf).copied()
    }

    /// The node covering leaf `code` at `level` (level 0 is the leaf itself).
    #[inline]
    pub(crate) fn node(&self, level: usize, code: u32) -> u32 {
        // Invariant: level < self.levels and code < self.len(), both from this hierarchy.
        self.node_of[level * self.leaves.len() + code as usize]
    }

    /// The label of a node.
    pub(crate) fn label(&self, node: u32) -> &str {
        self.node_label
            .get(node as usize)
            .map_or("*", String::as_str)
    }

    /// The NCP of releasing `node` at `level` for a set of leaves: 0 for a leaf, otherwise the
    /// share of the domain's leaves under the node.
    #[inline]
    pub(crate) fn cost(&self, level: usize, node: u32) -> f64 {
        if level == 0 {
            0.0
        } else {
            f64::from(self.node_leaves[node as usize]) / self.leaves.len() as f64
        }
    }

    /// Whether `ancestor` covers leaf `code` (any level, the leaf itself included).
    pub fn covers(&self, ancestor: &str, code: u32) -> bool {
        (0..self.levels).any(|level| self.label(self.node(level, code)) == ancestor)
    }

    /// The labels of a leaf from the leaf up to the root.
    pub fn path(&self, code: u32) -> impl Iterator<Item = &str> {
        (0..self.levels).map(move |level| self.label(self.node(level, code)))
    }
}

/// The lowest common ancestor of a growing set of leaves, updated one leaf at a time.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Lca {
    first: u32,
    level: usize,
    node: u32,
}

impl Lca {
    /// The set `{leaf}`.
    #[inline]
    pub(crate) fn new(h: &Hierarchy, leaf: u32) -> Self {
        Self {
            first: leaf,
            level: 0,
            node: h.node(0, leaf),
        }
    }

    /// Adds a leaf; the ancestor only ever moves up, so a run of additions is amortized O(1).
    #[inline]
    pub(crate) fn add(&mut self, h: &Hierarchy, leaf: u32) {
        while self.level + 1 < h.levels && h.node(self.level, leaf) != self.node {
            self.level += 1;
            self.node = h.node(self.level, self.first);
        }
    }

    /// The NCP of this ancestor.
    #[inline]
    pub(crate) fn cost(&self, h: &Hierarchy) -> f64 {
        h.cost(self.level, self.node)
    }

    /// The label to release.
    pub(crate) fn label<'h>(&self, h: &'h Hierarchy) -> &'h str {
        h.label(self.node)
    }
}
