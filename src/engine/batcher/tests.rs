use std::sync::Arc;

use super::*;
use crate::engine::{Mlp, ModelConfig};

const WEIGHTS: &[u8] = include_bytes!("../../../tests/fixtures/mlp/weights.safetensors");
const CONFIG: &[u8] = include_bytes!("../../../tests/fixtures/mlp/logits.json");

fn model() -> Arc<Mlp> {
    let config = ModelConfig::from_json(CONFIG).unwrap();
    Arc::new(Mlp::from_safetensors(&config, WEIGHTS, &candle_core::Device::Cpu).unwrap())
}

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

#[test]
fn concurrent_requests_are_coalesced_and_answers_match_single_runs() {
    let mlp = model();
    let batcher = Batcher::spawn(
        Arc::clone(&mlp),
        "fixture",
        BatchConfig {
            max_batch: 64,
            max_wait_us: 50_000,
            queue_capacity: 64,
            ..BatchConfig::default()
        },
    )
    .unwrap();
    let rows: Vec<Vec<f32>> = (0..16)
        .map(|r| (0..8).map(|c| ((r * 8 + c) as f32).sin()).collect())
        .collect();
    let outputs = rt().block_on(async {
        let futs = rows.iter().map(|r| batcher.infer(r.clone(), 1));
        futures_join_all(futs).await
    });
    let mut max_batch_seen = 0;
    for (row, out) in rows.iter().zip(outputs) {
        let out = out.unwrap();
        max_batch_seen = max_batch_seen.max(out.batch_rows);
        let alone = mlp.forward_rows(row, 1).unwrap();
        for (a, b) in out.values.iter().zip(&alone) {
            assert!((a - b).abs() <= 1e-6 * b.abs().max(1.0), "{a} vs {b}");
        }
    }
    assert!(
        max_batch_seen > 1,
        "no coalescing happened (max batch {max_batch_seen})"
    );
    assert!(max_batch_seen <= 64);
}

#[test]
fn a_full_queue_refuses_instead_of_growing() {
    let batcher = Batcher::spawn(
        model(),
        "fixture",
        BatchConfig {
            max_batch: 1,
            max_wait_us: 0,
            queue_capacity: 1,
            ..BatchConfig::default()
        },
    )
    .unwrap();
    let row = vec![0.5f32; 8 * 2048];
    let results = rt().block_on(async {
        let futs = (0..64).map(|_| batcher.infer(row.clone(), 2048));
        futures_join_all(futs).await
    });
    let full = results
        .iter()
        .filter(|r| matches!(r, Err(EngineError::QueueFull { .. })))
        .count();
    let ok = results.iter().filter(|r| r.is_ok()).count();
    assert!(full > 0, "queue never filled");
    assert!(ok > 0, "nothing was served");
    assert_eq!(full + ok, 64);
}

#[test]
fn a_small_request_that_finds_the_model_idle_runs_on_its_own_thread() {
    let mlp = model();
    let batcher = Batcher::spawn(Arc::clone(&mlp), "fixture", BatchConfig::default()).unwrap();
    let row: Vec<f32> = (0..8).map(|c| (c as f32).cos()).collect();
    let mut pending = batcher.enqueue(row.clone(), 1).unwrap();
    // Answered before enqueue returned: nothing waits for the worker thread.
    let out = pending.rx.try_recv().expect("answered inline").unwrap();
    assert_eq!(out.values, mlp.forward_rows(&row, 1).unwrap());
    assert_eq!(out.batch_rows, 1);
    // It counts as an execution like any batch.
    assert_eq!(batcher.stats().snapshot().execution_count, 1);

    // Not while a batch runs: the request queues (and the worker answers it).
    let running = batcher.shared.running.lock().unwrap();
    let mut queued = batcher.enqueue(row.clone(), 1).unwrap();
    assert!(queued.rx.try_recv().is_err(), "it must wait for the batch");
    drop(running);
    let out = rt().block_on(queued.outcome()).unwrap();
    assert_eq!(out.values, mlp.forward_rows(&row, 1).unwrap());

    // Nor a request too large to run inline.
    let rows = batcher.inline_rows + 1;
    let big = vec![0.25f32; 8 * rows];
    let mut queued = batcher.enqueue(big.clone(), rows).unwrap();
    let out = match queued.rx.try_recv() {
        Ok(_) => panic!("a {rows}-row request ran inline"),
        Err(_) => rt().block_on(queued.outcome()).unwrap(),
    };
    assert_eq!(out.values, mlp.forward_rows(&big, rows).unwrap());
}

#[test]
fn batches_that_wait_for_more_requests_never_run_inline() {
    let batcher = Batcher::spawn(
        model(),
        "fixture",
        BatchConfig {
            max_wait_us: 20_000,
            ..BatchConfig::default()
        },
    )
    .unwrap();
    assert_eq!(batcher.inline_rows, 0);
    let mut pending = batcher.enqueue(vec![0.5; 8], 1).unwrap();
    assert!(pending.rx.try_recv().is_err());
    assert_eq!(rt().block_on(pending.outcome()).unwrap().batch_rows, 1);
}

#[test]
fn oversized_request_runs_alone_and_batches_respect_max_batch() {
    let batcher = Batcher::spawn(
        model(),
        "fixture",
        BatchConfig {
            max_batch: 4,
            max_wait_us: 1000,
            queue_capacity: 16,
            ..BatchConfig::default()
        },
    )
    .unwrap();
    let out = rt().block_on(batcher.infer(vec![0.1; 8 * 10], 10)).unwrap();
    assert_eq!(out.batch_rows, 10);
    assert_eq!(out.values.len(), 30);
}

#[test]
fn batch_config_ranges() {
    assert!(BatchConfig::default().validate().is_ok());
    for bad in [
        BatchConfig {
            max_batch: 0,
            ..BatchConfig::default()
        },
        BatchConfig {
            queue_capacity: 0,
            ..BatchConfig::default()
        },
        BatchConfig {
            max_wait_us: 2_000_000,
            ..BatchConfig::default()
        },
        BatchConfig {
            max_padded_tokens: 0,
            ..BatchConfig::default()
        },
    ] {
        assert!(bad.validate().is_err());
    }
}

/// join_all without the futures crate: polls every future to completion on one task.
async fn futures_join_all<F: std::future::Future>(
    futs: impl IntoIterator<Item = F>,
) -> Vec<F::Output> {
    let mut set = Vec::new();
    for f in futs {
        set.push(Box::pin(f));
    }
    let mut out: Vec<Option<F::Output>> = (0..set.len()).map(|_| None).collect();
    std::future::poll_fn(|cx| {
        let mut pending = false;
        for (i, f) in set.iter_mut().enumerate() {
            if out[i].is_none() {
                match f.as_mut().poll(cx) {
                    std::task::Poll::Ready(v) => out[i] = Some(v),
                    std::task::Poll::Pending => pending = true,
                }
            }
        }
        if pending {
            std::task::Poll::Pending
        } else {
            std::task::Poll::Ready(())
        }
    })
    .await;
    out.into_iter().map(|o| o.expect("completed")).collect()
}
