//! Screening in the first layer's pre-activation space: the factor whose normals reproduce
//! the distribution of input perturbations with fewer draws.

/// Screening perturbations drawn in the first layer's pre-activation space.
///
/// A copy `x + δ` with `δᵢ = σᵢ zᵢ`, `z ~ N(0, I)`, reaches the rest of the network only
/// through the first layer's pre-activation, which moves by `Mᵀ z` where `M = diag(s) W₁`
/// (`s` is `σ` after standardization). That move is Gaussian with covariance `Mᵀ M`, so it
/// has exactly the distribution of `Fᵀ u`, `u ~ N(0, I_r)`, for any `F` with `Fᵀ F = Mᵀ M`.
/// When the first layer is narrower than the input (the demo: 30 features, 16 hidden), `F`
/// comes from a pivoted Cholesky factorization of `Mᵀ M` and `r ≤ hidden`: fewer normals per
/// copy and a smaller matrix product than perturbing the inputs, for scores with the same
/// distribution. Otherwise `F = M`.
#[derive(Debug, Clone)]
pub struct PreactFactor {
    /// `F`, `[rank, hidden]` row-major.
    pub(super) f: Vec<f32>,
    pub(super) rank: usize,
    pub(super) hidden: usize,
}

impl PreactFactor {
    /// The factor for the input map `m` (`[inp, hidden]` row-major, f64).
    pub(super) fn from_input_map(m: &[f64], inp: usize, hidden: usize) -> Self {
        if inp <= hidden {
            return Self {
                f: m.iter().map(|&v| v as f32).collect(),
                rank: inp,
                hidden,
            };
        }
        // C = Mᵀ M, `[hidden, hidden]`.
        let mut c = vec![0f64; hidden * hidden];
        for row in m.chunks_exact(hidden) {
            for (a, &ra) in row.iter().enumerate() {
                for (b, &rb) in row.iter().enumerate().skip(a) {
                    c[a * hidden + b] += ra * rb;
                }
            }
        }
        for a in 0..hidden {
            for b in 0..a {
                c[a * hidden + b] = c[b * hidden + a];
            }
        }
        let l = pivoted_cholesky(&c, hidden);
        let rank = l.len();
        let mut f = Vec::with_capacity(rank * hidden);
        for col in &l {
            f.extend(col.iter().map(|&v| v as f32));
        }
        Self { f, rank, hidden }
    }

    /// Standard normals each copy needs.
    pub fn rank(&self) -> usize {
        self.rank
    }

    /// `F`, `[rank, hidden]` row-major.
    pub fn matrix(&self) -> &[f32] {
        &self.f
    }
}

/// Pivoted Cholesky of the positive semi-definite `n × n` matrix `c`: columns `l_k` (each of
/// length `n`, in the original index order) with `Σ_k l_k l_kᵀ = c` up to a relative
/// tolerance; it stops at the numerical rank.
pub(super) fn pivoted_cholesky(c: &[f64], n: usize) -> Vec<Vec<f64>> {
    let mut d: Vec<f64> = (0..n).map(|i| c[i * n + i].max(0.0)).collect();
    let tol = d.iter().copied().fold(0.0, f64::max) * 1e-12;
    let mut piv: Vec<usize> = (0..n).collect();
    let mut cols: Vec<Vec<f64>> = Vec::new();
    for k in 0..n {
        let Some(p) = (k..n).max_by(|&a, &b| d[piv[a]].total_cmp(&d[piv[b]])) else {
            break;
        };
        piv.swap(k, p);
        let pk = piv[k];
        let dk = d[pk];
        // A NaN pivot (a model with non-finite weights never loads) also stops here.
        if dk.is_nan() || dk <= tol {
            break;
        }
        let root = dk.sqrt();
        let mut col = vec![0f64; n];
        col[pk] = root;
        for &pi in &piv[k + 1..] {
            let dot: f64 = cols.iter().map(|l| l[pi] * l[pk]).sum();
            let v = (c[pi * n + pk] - dot) / root;
            col[pi] = v;
            d[pi] -= v * v;
        }
        d[pk] = 0.0;
        cols.push(col);
    }
    cols
}
