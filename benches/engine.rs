//! MLP forward pass against the raw matrix multiplies of the same layers.
//!
//! The model is 64 → 256 → 256 → 2 (relu, relu, none; softmax) with input standardization,
//! built in memory as PyTorch-named safetensors and loaded through the public
//! [`Mlp::from_safetensors`]. For batch 1, 32 and 1024 the group `mlp_forward` times:
//!
//! - `forward/B`: the full [`Mlp::forward`] (normalization, matmul, bias, activation, softmax);
//! - `forward_rows/B`: [`Mlp::forward_rows`], what the batcher runs (the fused CPU loop for
//!   small models, in passes of at most `FUSED_MAX_MACS`; candle for larger models);
//! - `matmuls_only/B`: [`Mlp::matmuls_only`], the three matmuls alone on the same weights and
//!   the same input tensor: the floor that the acceptance target (`forward` ≤ 2× at batch 1)
//!   is measured against.
//!
//! The group `batcher` times one `Batcher::infer` round trip at batch 1 (enqueue, worker
//! wake-up, forward pass, oneshot reply) from a current-thread tokio runtime, so that the
//! queue overhead shows beside `forward/1`.
//!
//! Run: `cargo bench --bench engine -- --warm-up-time 1 --measurement-time 5`.

use std::collections::HashMap;
use std::hint::black_box;
use std::sync::Arc;

use candle_core::{Device, Tensor};
use confidant::engine::{BatchConfig, Batcher, Mlp, ModelConfig};
// Deterministic values in [-scale/2, scale/2).
use confidant::engine::synthetic::values;
use criterion::{BenchmarkId, Criterion, Throughput};
use safetensors::tensor::TensorView;

const IN: usize = 64;
const HIDDEN: usize = 256;
const OUT: usize = 2;

fn bytes(v: &[f32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

#[allow(clippy::expect_used)]
fn view(shape: Vec<usize>, data: &[u8]) -> TensorView<'_> {
    TensorView::new(safetensors::Dtype::F32, shape, data).expect("tensor view")
}

#[allow(clippy::expect_used)]
fn model() -> Mlp {
    let dims = [(HIDDEN, IN), (HIDDEN, HIDDEN), (OUT, HIDDEN)];
    let mut data = Vec::new();
    for (i, (out, inp)) in dims.iter().enumerate() {
        let scale = 2.0 / (*inp as f32).sqrt();
        data.push((
            format!("{}.weight", 2 * i),
            vec![*out, *inp],
            bytes(&values(out * inp, 10 + i as u64, scale)),
        ));
        data.push((
            format!("{}.bias", 2 * i),
            vec![*out],
            bytes(&values(*out, 20 + i as u64, 0.1)),
        ));
    }
    let tensors: Vec<(String, TensorView<'_>)> = data
        .iter()
        .map(|(name, shape, b)| (name.clone(), view(shape.clone(), b)))
        .collect();
    let weights = safetensors::serialize(tensors, None::<HashMap<String, String>>)
        .expect("serialize safetensors");
    let features: Vec<String> = (0..IN).map(|i| format!("f{i}")).collect();
    let mean = values(IN, 30, 1.0);
    let std: Vec<f32> = values(IN, 31, 1.0).iter().map(|v| 1.0 + v).collect();
    let config = serde_json::json!({
        "id": "bench-mlp", "version": "1.0.0",
        "architecture": {"kind": "mlp", "output": "softmax", "layers": [
            {"weight": "0.weight", "bias": "0.bias", "activation": "relu"},
            {"weight": "2.weight", "bias": "2.bias", "activation": "relu"},
            {"weight": "4.weight", "bias": "4.bias", "activation": "none"}]},
        "input": {"features": features, "min": vec![-10.0; IN], "max": vec![10.0; IN],
                  "normalization": {"mean": mean, "std": std}},
        "labels": ["a", "b"]
    });
    let config = ModelConfig::from_json(config.to_string().as_bytes()).expect("model config");
    Mlp::from_safetensors(&config, &weights, &Device::Cpu).expect("load MLP")
}

#[allow(clippy::expect_used)]
fn bench_forward(c: &mut Criterion) {
    let mlp = model();
    let mut group = c.benchmark_group("mlp_forward");
    for batch in [1usize, 32, 1024] {
        let x = Tensor::from_vec(values(batch * IN, 40, 4.0), (batch, IN), &Device::Cpu)
            .expect("input tensor");
        group.throughput(Throughput::Elements(batch as u64));
        group.bench_with_input(BenchmarkId::new("forward", batch), &x, |b, x| {
            b.iter(|| mlp.forward(black_box(x)).expect("forward"));
        });
        group.bench_with_input(BenchmarkId::new("matmuls_only", batch), &x, |b, x| {
            b.iter(|| mlp.matmuls_only(black_box(x)).expect("matmuls"));
        });
        // What the batcher runs: the fused CPU loop for small models (in passes of at most
        // 2^20 multiply-adds), candle for larger ones.
        let rows = values(batch * IN, 40, 4.0);
        group.bench_with_input(BenchmarkId::new("forward_rows", batch), &rows, |b, r| {
            b.iter(|| mlp.forward_rows(black_box(r), batch).expect("forward_rows"));
        });
    }
    group.finish();
}

#[allow(clippy::expect_used)]
fn bench_batcher(c: &mut Criterion) {
    let mlp = Arc::new(model());
    let batcher = Batcher::spawn(mlp, "bench-mlp", BatchConfig::default()).expect("batcher");
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    let row = values(IN, 40, 4.0);
    let mut group = c.benchmark_group("batcher");
    group.throughput(Throughput::Elements(1));
    group.bench_function("infer/1", |b| {
        b.iter(|| {
            rt.block_on(batcher.infer(row.clone(), 1))
                .expect("infer")
                .values
        });
    });
    group.finish();
}

fn main() {
    // Before any thread exists (criterion, rayon, candle, the batcher): fixes
    // RAYON_NUM_THREADS so that candle does not re-read /proc on every matmul.
    // SAFETY: the first statement of `main`: no other thread exists yet.
    #[allow(unsafe_code)]
    let threads = unsafe { confidant::secure::pin_thread_count() };
    eprintln!("engine bench: {threads} rayon threads");
    let mut c = Criterion::default().configure_from_args();
    bench_forward(&mut c);
    bench_batcher(&mut c);
    c.final_summary();
}
