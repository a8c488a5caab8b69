//! Privacy measures of a set of equivalence classes: k, distinct and entropy l, and t
//! (t-closeness by the Earth Mover's Distance of Li, Li and Venkatasubramanian, ICDE 2007:
//! ordered distance for numeric sensitive values, equal distance for categorical ones, as
//! pyCANON computes them).

use serde::Serialize;

/// One sensitive column, prepared for measuring.
#[derive(Debug)]
pub(crate) struct SensitiveColumn<'a> {
    /// Dictionary code per record.
    pub codes: &'a [u32],
    /// Dictionary size.
    pub size: usize,
    /// For a numeric column, the rank of each dictionary code among the distinct values
    /// (ordered distance); `None` for a categorical one (equal distance).
    pub ranks: Option<Vec<u32>>,
}

impl<'a> SensitiveColumn<'a> {
    /// Prepares a column; it is numeric when every distinct value parses as a finite number.
    pub(crate) fn new(codes: &'a [u32], dictionary: &[Box<str>]) -> Self {
        let parsed: Option<Vec<f64>> = dictionary
            .iter()
            .map(|v| v.trim().parse::<f64>().ok().filter(|x| x.is_finite()))
            .collect();
        let ranks = parsed.map(|values| {
            let mut sorted: Vec<f64> = values.clone();
            sorted.sort_by(f64::total_cmp);
            sorted.dedup();
            values
                .iter()
                .map(|v| sorted.partition_point(|s| s < v) as u32)
                .collect()
        });
        Self {
            codes,
            size: dictionary.len(),
            ranks,
        }
    }
}

/// k, l and t of a table's equivalence classes.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct ClassStats {
    /// Equivalence classes.
    pub classes: usize,
    /// Records in classes (suppressed records excluded).
    pub records: usize,
    /// The smallest class: the table is k-anonymous for this k.
    pub k: usize,
    /// The fewest distinct sensitive values in a class (over all sensitive columns).
    pub l_distinct: Option<usize>,
    /// The smallest `exp(entropy)` of a class's sensitive values: the entropy l.
    pub l_entropy: Option<f64>,
    /// The largest EMD between a class's sensitive distribution and the table's.
    pub t: Option<f64>,
    /// Mean class size.
    pub average_class_size: f64,
}

/// Measures classes. `class_of[r]` is record r's class, or `u32::MAX` when it is suppressed.
pub(crate) fn class_stats(
    class_of: &[u32],
    classes: usize,
    sensitive: &[SensitiveColumn<'_>],
) -> ClassStats {
    // Counting sort of the records by class, so that each class is one contiguous slice.
    let mut start = vec![0usize; classes + 1];
    for &c in class_of {
        if (c as usize) < classes {
            start[c as usize + 1] += 1;
        }
    }
    for i in 0..classes {
        start[i + 1] += start[i];
    }
    let records = start[classes];
    let mut fill = start.clone();
    let mut members = vec![0u32; records];
    for (r, &c) in class_of.iter().enumerate() {
        if (c as usize) < classes {
            members[fill[c as usize]] = r as u32;
            fill[c as usize] += 1;
        }
    }
    let k = (0..classes)
        .map(|c| start[c + 1] - start[c])
        .min()
        .unwrap_or(0);

    let mut l_distinct: Option<usize> = None;
    let mut l_entropy: Option<f64> = None;
    let mut t: Option<f64> = None;
    for col in sensitive {
        let mut global = vec![0u32; col.size];
        for &r in &members {
            global[col.codes[r as usize] as usize] += 1;
        }
        let total = records as f64;
        let q: Vec<f64> = global.iter().map(|&g| f64::from(g) / total).collect();
        // Numeric: the table's distribution over ranks, for the ordered distance.
        let ranked_q = col.ranks.as_ref().map(|ranks| {
            let m = ranks.iter().max().map_or(0, |&x| x as usize + 1);
            let mut v = vec![0.0; m];
            for (code, &rank) in ranks.iter().enumerate() {
                v[rank as usize] += q[code];
            }
            v
        });
        let mut counts = vec![0u32; col.size];
        let mut touched: Vec<u32> = Vec::new();
        let mut ranked_p: Vec<f64> = Vec::new();
        for c in 0..classes {
            let class = &members[start[c]..start[c + 1]];
            if class.is_empty() {
                continue;
            }
            touched.clear();
            for &r in class {
                let v = col.codes[r as usize];
                if counts[v as usize] == 0 {
                    touched.push(v);
                }
                counts[v as usize] += 1;
            }
            let n = class.len() as f64;
            let entropy: f64 = touched
                .iter()
                .map(|&v| {
                    let p = f64::from(counts[v as usize]) / n;
                    -p * p.ln()
                })
                .sum();
            let emd = match (&col.ranks, &ranked_q) {
                (Some(ranks), Some(rq)) => {
                    ranked_p.clear();
                    ranked_p.resize(rq.len(), 0.0);
                    for &v in &touched {
                        ranked_p[ranks[v as usize] as usize] += f64::from(counts[v as usize]) / n;
                    }
                    let m = rq.len();
                    if m < 2 {
                        0.0
                    } else {
                        let mut cum = 0.0;
                        let mut sum = 0.0;
                        for i in 0..m - 1 {
                            cum += ranked_p[i] - rq[i];
                            sum += f64::abs(cum);
                        }
                        sum / (m - 1) as f64
                    }
                }
                _ => {
                    // Equal distance: half the L1 distance, summed over the class's values only
                    // (a value absent from the class contributes its table share).
                    let inside: f64 = touched
                        .iter()
                        .map(|&v| {
                            let p = f64::from(counts[v as usize]) / n;
                            (p - q[v as usize]).abs() - q[v as usize]
                        })
                        .sum();
                    0.5 * (inside + 1.0)
                }
            };
            l_distinct = Some(l_distinct.map_or(touched.len(), |l| l.min(touched.len())));
            let le = entropy.exp();
            l_entropy = Some(l_entropy.map_or(le, |l| l.min(le)));
            t = Some(t.map_or(emd, |x| x.max(emd)));
            for &v in &touched {
                counts[v as usize] = 0;
            }
        }
    }
    ClassStats {
        classes,
        records,
        k,
        l_distinct,
        l_entropy,
        t,
        average_class_size: if classes == 0 {
            0.0
        } else {
            records as f64 / classes as f64
        },
    }
}
