//! The network being trained: dense layers with ReLU between them and softmax cross-entropy
//! on top, in f64, with per-example gradient norms computed without materializing
//! per-example gradients ("ghost clipping").
//!
//! For a dense layer `z = W a + b` and one example `i`, the weight gradient is the outer
//! product `δᵢ aᵢᵀ` (δ the loss gradient at `z`), so its squared Frobenius norm is
//! `‖δᵢ‖²·‖aᵢ‖²`, and the bias gradient's is `‖δᵢ‖²`. Backpropagation is linear in the
//! output δ, so scaling example `i`'s output δ by its clip factor `cᵢ` scales its δ at every
//! layer: the clipped sum `Σᵢ cᵢ δᵢ aᵢᵀ` is one matrix product with δ's rows scaled.

use safetensors::Dtype;
use safetensors::tensor::TensorView;

use super::error::{Result, TrainError};
use crate::engine::config::{Activation, LayerSpec};
use crate::privacy::rng::DpRng;

/// One dense layer: `weight` is `[outputs, inputs]` row-major, as PyTorch stores it.
#[derive(Debug, Clone, PartialEq)]
pub struct Dense {
    weight: Vec<f64>,
    bias: Vec<f64>,
    inputs: usize,
    outputs: usize,
}

impl Dense {
    /// The weight, `[outputs, inputs]` row-major.
    pub fn weight(&self) -> &[f64] {
        &self.weight
    }

    /// The bias, `[outputs]`.
    pub fn bias(&self) -> &[f64] {
        &self.bias
    }

    /// The input width.
    pub fn inputs(&self) -> usize {
        self.inputs
    }

    /// The output width.
    pub fn outputs(&self) -> usize {
        self.outputs
    }
}

/// An MLP: ReLU after every layer but the last, softmax over the last.
#[derive(Debug, Clone, PartialEq)]
pub struct Network {
    layers: Vec<Dense>,
}

/// A gradient (or any vector) with the network's shapes: `(weight, bias)` per layer.
#[derive(Debug, Clone, PartialEq)]
pub struct Gradient {
    layers: Vec<(Vec<f64>, Vec<f64>)>,
}

impl Gradient {
    /// Zeros shaped like `network`.
    pub fn zeros(network: &Network) -> Self {
        Self {
            layers: network
                .layers
                .iter()
                .map(|l| (vec![0.0; l.weight.len()], vec![0.0; l.bias.len()]))
                .collect(),
        }
    }

    /// Every coordinate, layer by layer, weight before bias.
    pub fn values(&self) -> impl Iterator<Item = &f64> {
        self.layers.iter().flat_map(|(w, b)| w.iter().chain(b))
    }

    /// Every coordinate, mutably, in [`Gradient::values`] order.
    pub fn values_mut(&mut self) -> impl Iterator<Item = &mut f64> {
        self.layers
            .iter_mut()
            .flat_map(|(w, b)| w.iter_mut().chain(b.iter_mut()))
    }

    /// The Euclidean norm over all layers.
    pub fn norm(&self) -> f64 {
        self.values().map(|v| v * v).sum::<f64>().sqrt()
    }

    /// Sets every coordinate to 0.
    pub fn clear(&mut self) {
        self.values_mut().for_each(|v| *v = 0.0);
    }

    /// `self += scale · other` (shapes must match).
    pub fn add_scaled(&mut self, other: &Self, scale: f64) {
        for (a, b) in self.values_mut().zip(other.values()) {
            *a += scale * b;
        }
    }
}

/// Buffers for one batch's forward and backward pass, reused across steps.
#[derive(Debug, Default)]
pub struct Workspace {
    /// `acts[l]`: the input of layer `l`, `rows × inputs(l)`.
    acts: Vec<Vec<f64>>,
    /// `deltas[l]`: the loss gradient at layer `l`'s pre-activation, `rows × outputs(l)`.
    deltas: Vec<Vec<f64>>,
    /// The per-example gradient norms of the last batch (before clipping).
    norms: Vec<f64>,
}

impl Workspace {
    /// The per-example gradient norms (over all layers, before clipping) of the last batch
    /// passed to [`Network::gradient_sum`] with clipping on.
    pub fn norms(&self) -> &[f64] {
        &self.norms
    }
}

/// What one batch's pass measured.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct BatchStats {
    /// The summed cross-entropy loss over the batch (before the update).
    pub loss_sum: f64,
    /// The number of examples in the batch.
    pub rows: usize,
    /// How many examples had their gradient scaled down by clipping.
    pub clipped: usize,
}

impl Network {
    /// A network with layer widths `widths` = `[inputs, hidden…, outputs]`, initialized as
    /// PyTorch initializes `nn.Linear`: weights and biases uniform in ±1/√inputs.
    pub fn new<R: DpRng + ?Sized>(widths: &[usize], rng: &mut R) -> Self {
        let layers = widths
            .windows(2)
            .map(|w| {
                let (inputs, outputs) = (w[0], w[1]);
                let bound = 1.0 / (inputs.max(1) as f64).sqrt();
                let mut uniform = || bound * (2.0 * unit_interval(rng) - 1.0);
                let weight = (0..inputs * outputs).map(|_| uniform()).collect();
                let bias = (0..outputs).map(|_| uniform()).collect();
                Dense {
                    weight,
                    bias,
                    inputs,
                    outputs,
                }
            })
            .collect();
        Self { layers }
    }

    /// The layers, input first.
    pub fn layers(&self) -> &[Dense] {
        &self.layers
    }

    /// The input width.
    pub fn inputs(&self) -> usize {
        self.layers.first().map_or(0, |l| l.inputs)
    }

    /// The output width (the number of classes).
    pub fn outputs(&self) -> usize {
        self.layers.last().map_or(0, |l| l.outputs)
    }

    /// The number of trainable parameters.
    pub fn parameter_count(&self) -> usize {
        self.layers
            .iter()
            .map(|l| l.weight.len() + l.bias.len())
            .sum()
    }

    /// Whether every parameter is finite.
    pub fn is_finite(&self) -> bool {
        self.layers
            .iter()
            .all(|l| l.weight.iter().chain(&l.bias).all(|v| v.is_finite()))
    }

    /// Every parameter, mutably, in [`Gradient::values`] order (for tests and tools that
    /// perturb weights).
    pub fn parameters_mut(&mut self) -> impl Iterator<Item = &mut f64> {
        self.layers
            .iter_mut()
            .flat_map(|l| l.weight.iter_mut().chain(l.bias.iter_mut()))
    }

    /// `θ ← θ − scale · g`.
    pub fn descend(&mut self, gradient: &Gradient, scale: f64) {
        for (layer, (gw, gb)) in self.layers.iter_mut().zip(&gradient.layers) {
            for (w, g) in layer.weight.iter_mut().zip(gw) {
                *w -= scale * g;
            }
            for (b, g) in layer.bias.iter_mut().zip(gb) {
                *b -= scale * g;
            }
        }
    }

    /// The logits of `rows` examples (`x` row-major, already standardized).
    pub fn logits(&self, x: &[f64], rows: usize) -> Vec<f64> {
        let mut h = x.to_vec();
        let last = self.layers.len().saturating_sub(1);
        for (l, layer) in self.layers.iter().enumerate() {
            let mut z = Vec::new();
            affine(layer, &h, rows, &mut z);
            if l < last {
                relu(&mut z);
            }
            h = z;
        }
        h
    }

    /// The softmax probabilities of `rows` examples, as the engine's `softmax` output.
    pub fn probabilities(&self, x: &[f64], rows: usize) -> Vec<f64> {
        let mut z = self.logits(x, rows);
        for row in z.chunks_exact_mut(self.outputs().max(1)) {
            softmax_in_place(row);
        }
        z
    }

    /// The forward and backward pass of one batch (`x`: `rows × inputs`, standardized).
    ///
    /// Fills `sum` with `Σᵢ cᵢ ∇ℓᵢ`, the per-example cross-entropy gradients each scaled by
    /// `cᵢ = min(1, C / ‖∇ℓᵢ‖)` when `clip` is `Some(C)`, and by 1 when it is `None` (the
    /// non-private baseline, which skips the norms).
    pub fn gradient_sum(
        &self,
        x: &[f64],
        labels: &[usize],
        clip: Option<f64>,
        ws: &mut Workspace,
        sum: &mut Gradient,
    ) -> BatchStats {
        let rows = labels.len();
        let n_layers = self.layers.len();
        ws.acts.resize_with(n_layers, Vec::new);
        ws.deltas.resize_with(n_layers, Vec::new);
        sum.clear();
        if rows == 0 || n_layers == 0 {
            ws.norms.clear();
            return BatchStats::default();
        }
        // Forward: acts[l] is layer l's input; the last affine output goes to deltas[last].
        ws.acts[0].clear();
        ws.acts[0].extend_from_slice(x);
        let last = n_layers - 1;
        for l in 0..n_layers {
            let (before, after) = ws.acts.split_at_mut(l + 1);
            let input = &before[l];
            let out = match after.first_mut() {
                Some(next) => next,
                None => &mut ws.deltas[last],
            };
            affine(&self.layers[l], input, rows, out);
            if l < last {
                relu(out);
            }
        }
        // Output δ = softmax(z) − onehot(y); loss = logsumexp(z) − z_y.
        let classes = self.layers[last].outputs;
        let mut loss_sum = 0.0;
        for (row, &y) in ws.deltas[last].chunks_exact_mut(classes).zip(labels) {
            let zy = row.get(y).copied().unwrap_or(0.0);
            let lse = log_sum_exp(row);
            loss_sum += lse - zy;
            for v in row.iter_mut() {
                *v = (*v - lse).exp();
            }
            if let Some(p) = row.get_mut(y) {
                *p -= 1.0;
            }
        }
        // Backward: δ[l−1] = (δ[l] W[l]) ⊙ 1[a[l] > 0].
        for l in (1..n_layers).rev() {
            let (lower, upper) = ws.deltas.split_at_mut(l);
            let below = &mut lower[l - 1];
            back_through(&self.layers[l], &upper[0], rows, below);
            for (d, a) in below.iter_mut().zip(&ws.acts[l]) {
                if *a <= 0.0 {
                    *d = 0.0;
                }
            }
        }
        // Ghost norms and clipping: scale each example's δ rows at every layer.
        let mut clipped = 0;
        ws.norms.clear();
        if let Some(c) = clip {
            ws.norms.resize(rows, 0.0);
            for (layer, (acts, deltas)) in self.layers.iter().zip(ws.acts.iter().zip(&ws.deltas)) {
                let rows_a = acts.chunks_exact(layer.inputs.max(1));
                let rows_d = deltas.chunks_exact(layer.outputs.max(1));
                for ((n, a), d) in ws.norms.iter_mut().zip(rows_a).zip(rows_d) {
                    *n += squared_norm(d) * (squared_norm(a) + 1.0);
                }
            }
            for n in &mut ws.norms {
                *n = n.sqrt();
            }
            for (i, n) in ws.norms.iter().enumerate() {
                let factor = clip_factor(*n, c);
                if factor < 1.0 {
                    clipped += 1;
                    for (layer, deltas) in self.layers.iter().zip(ws.deltas.iter_mut()) {
                        let w = layer.outputs;
                        if let Some(row) = deltas.get_mut(i * w..(i + 1) * w) {
                            row.iter_mut().for_each(|v| *v *= factor);
                        }
                    }
                }
            }
        }
        // The clipped sum: one δᵀ·a product per layer, and the column sums of δ.
        for ((layer, (gw, gb)), (acts, deltas)) in self
            .layers
            .iter()
            .zip(sum.layers.iter_mut())
            .zip(ws.acts.iter().zip(&ws.deltas))
        {
            let (inputs, outputs) = (layer.inputs, layer.outputs);
            for (a, d) in acts.chunks_exact(inputs).zip(deltas.chunks_exact(outputs)) {
                for ((g_row, bias), dv) in gw.chunks_exact_mut(inputs).zip(gb.iter_mut()).zip(d) {
                    *bias += dv;
                    axpy(g_row, *dv, a);
                }
            }
        }
        BatchStats {
            loss_sum,
            rows,
            clipped,
        }
    }

    /// The engine's layer specs for this network, with PyTorch `nn.Sequential` names: the
    /// dense layers sit at even indices (`0.weight`, `2.weight`, …) with a ReLU between.
    pub fn layer_specs(&self) -> Vec<LayerSpec> {
        let last = self.layers.len().saturating_sub(1);
        (0..self.layers.len())
            .map(|l| LayerSpec {
                weight: format!("{}.weight", 2 * l),
                bias: Some(format!("{}.bias", 2 * l)),
                activation: if l < last {
                    Activation::Relu
                } else {
                    Activation::None
                },
            })
            .collect()
    }

    /// The weights as F32 safetensors, named as [`Network::layer_specs`] says.
    pub fn to_safetensors(&self) -> Result<Vec<u8>> {
        let bytes: Vec<(String, Vec<usize>, Vec<u8>)> = self
            .layers
            .iter()
            .enumerate()
            .flat_map(|(l, layer)| {
                [
                    (
                        format!("{}.weight", 2 * l),
                        vec![layer.outputs, layer.inputs],
                        f32_bytes(&layer.weight),
                    ),
                    (
                        format!("{}.bias", 2 * l),
                        vec![layer.outputs],
                        f32_bytes(&layer.bias),
                    ),
                ]
            })
            .collect();
        let views = bytes
            .iter()
            .map(|(name, shape, data)| {
                TensorView::new(Dtype::F32, shape.clone(), data)
                    .map(|v| (name.clone(), v))
                    .map_err(|e| TrainError::Safetensors(e.to_string()))
            })
            .collect::<Result<Vec<_>>>()?;
        safetensors::serialize(views, None).map_err(|e| TrainError::Safetensors(e.to_string()))
    }
}

/// `min(1, C / n)`; an example with a zero gradient keeps factor 1.
pub fn clip_factor(norm: f64, clip: f64) -> f64 {
    if norm > clip { clip / norm } else { 1.0 }
}

/// A uniform double in [0, 1) from the top 53 bits of one word.
pub(crate) fn unit_interval<R: DpRng + ?Sized>(rng: &mut R) -> f64 {
    (rng.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
}

fn f32_bytes(values: &[f64]) -> Vec<u8> {
    values
        .iter()
        .flat_map(|v| (*v as f32).to_le_bytes())
        .collect()
}

/// `out = x Wᵀ + b` for `rows` rows.
fn affine(layer: &Dense, x: &[f64], rows: usize, out: &mut Vec<f64>) {
    let (inputs, outputs) = (layer.inputs, layer.outputs);
    out.clear();
    out.resize(rows * outputs, 0.0);
    for (x_row, o_row) in x.chunks_exact(inputs).zip(out.chunks_exact_mut(outputs)) {
        for ((o, w_row), b) in o_row
            .iter_mut()
            .zip(layer.weight.chunks_exact(inputs))
            .zip(&layer.bias)
        {
            *o = dot(x_row, w_row) + b;
        }
    }
}

/// `out = δ W` for `rows` rows: the gradient at this layer's input.
fn back_through(layer: &Dense, delta: &[f64], rows: usize, out: &mut Vec<f64>) {
    let (inputs, outputs) = (layer.inputs, layer.outputs);
    out.clear();
    out.resize(rows * inputs, 0.0);
    for (d_row, o_row) in delta
        .chunks_exact(outputs)
        .zip(out.chunks_exact_mut(inputs))
    {
        // No skipping of zero δ (dead ReLUs): the cost of a step stays independent of the
        // data, so private and non-private steps compare like for like.
        for (dv, w_row) in d_row.iter().zip(layer.weight.chunks_exact(inputs)) {
            axpy(o_row, *dv, w_row);
        }
    }
}

fn relu(v: &mut [f64]) {
    for x in v {
        if *x < 0.0 {
            *x = 0.0;
        }
    }
}

#[inline]
fn dot(a: &[f64], b: &[f64]) -> f64 {
    // Four accumulators let the compiler vectorize without reassociating one sum.
    let mut acc = [0.0f64; 4];
    let (ca, cb) = (a.chunks_exact(4), b.chunks_exact(4));
    let (ra, rb) = (ca.remainder(), cb.remainder());
    for (x, y) in ca.zip(cb) {
        for ((s, xv), yv) in acc.iter_mut().zip(x).zip(y) {
            *s += xv * yv;
        }
    }
    let tail: f64 = ra.iter().zip(rb).map(|(x, y)| x * y).sum();
    (acc[0] + acc[1]) + (acc[2] + acc[3]) + tail
}

#[inline]
fn axpy(y: &mut [f64], a: f64, x: &[f64]) {
    for (yv, xv) in y.iter_mut().zip(x) {
        *yv += a * xv;
    }
}

fn squared_norm(v: &[f64]) -> f64 {
    dot(v, v)
}

fn log_sum_exp(row: &[f64]) -> f64 {
    let m = row.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    if !m.is_finite() {
        return m;
    }
    m + row.iter().map(|v| (v - m).exp()).sum::<f64>().ln()
}

fn softmax_in_place(row: &mut [f64]) {
    let lse = log_sum_exp(row);
    for v in row {
        *v = (*v - lse).exp();
    }
}
