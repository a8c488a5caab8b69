//! Integrated gradients over the input word embeddings of the tiny BERT: completeness, the
//! `[PAD]` baseline, agreement with a brute-force reference (finite differences of the
//! plain f64 BERT along the same path), padding, packing into passes, and refusals.

use super::*;
use crate::engine::bert::explain::{TextPath, integrated_gradients_in, packed, run_pass};
use crate::engine::explain::TextAttribution;
use crate::engine::text::Tokens;

const TEXTS: &[&str] = &[
    "hello world",
    "the quick brown fox jumps over the lazy dog.",
    "secret data is not ok!",
    "",
];

fn classifier(output: &str) -> EncoderConfig {
    let json = serde_json::json!({"id": "clf", "version": "1", "labels": ["a", "b", "c"],
        "architecture": {"kind": "bert", "task": "classification", "pooling": "cls",
        "max_tokens": 16, "truncation": "truncate", "output": output}});
    EncoderConfig::from_json(&serde_json::to_vec(&json).unwrap()).unwrap()
}

/// What the plain f64 BERT outputs for one text's word embeddings: the classifier's scores
/// (`[CLS]` through the pooler and a tanh), or the normalized mean embedding.
fn reference_outputs(t: &Tensors, words: &[Vec<f64>], head: Option<bool>) -> Vec<f64> {
    let hidden = reference_hidden_from(t, words);
    let Some(softmax) = head else {
        let mut m: Vec<f64> = (0..HIDDEN)
            .map(|j| hidden.iter().map(|r| r[j]).sum::<f64>() / hidden.len() as f64)
            .collect();
        let n = m.iter().map(|v| v * v).sum::<f64>().sqrt();
        m.iter_mut().for_each(|v| *v /= n);
        return m;
    };
    let pooled: Vec<f64> = linear(t, "pooler.dense", &hidden[0])
        .iter()
        .map(|v| v.tanh())
        .collect();
    let logits = linear(t, "classifier", &pooled);
    if !softmax {
        return logits;
    }
    let max = logits.iter().cloned().fold(f64::MIN, f64::max);
    let e: Vec<f64> = logits.iter().map(|v| (v - max).exp()).collect();
    let z: f64 = e.iter().sum();
    e.iter().map(|v| v / z).collect()
}

fn word(t: &Tensors, id: u32) -> Vec<f64> {
    (0..HIDDEN)
        .map(|j| f64::from(t["embeddings.word_embeddings.weight"].1[id as usize * HIDDEN + j]))
        .collect()
}

/// Integrated gradients by brute force: the midpoint rule over `steps` points, each token's
/// directional derivative along its own `x − baseline` by central differences of the f64
/// BERT.
fn reference_attributions(
    t: &Tensors,
    ids: &[u32],
    baseline_ids: &[u32],
    target: usize,
    head: Option<bool>,
    steps: usize,
) -> Vec<f64> {
    let x: Vec<Vec<f64>> = ids.iter().map(|&i| word(t, i)).collect();
    let b: Vec<Vec<f64>> = baseline_ids.iter().map(|&i| word(t, i)).collect();
    let eps = 1e-5;
    let mut out = vec![0f64; ids.len()];
    for k in 0..steps {
        let alpha = (k as f64 + 0.5) / steps as f64;
        let point: Vec<Vec<f64>> = x
            .iter()
            .zip(&b)
            .map(|(xr, br)| {
                xr.iter()
                    .zip(br)
                    .map(|(x, b)| b + alpha * (x - b))
                    .collect()
            })
            .collect();
        for p in 0..ids.len() {
            let moved = |s: f64| {
                let mut q = point.clone();
                for j in 0..HIDDEN {
                    q[p][j] += s * (x[p][j] - b[p][j]);
                }
                reference_outputs(t, &q, head)[target]
            };
            out[p] += (moved(eps) - moved(-eps)) / (2.0 * eps);
        }
    }
    out.iter().map(|v| v / steps as f64).collect()
}

fn assert_complete(a: &TextAttribution) {
    let r = &a.attribution;
    let want = f64::from(r.output_at_input) - f64::from(r.output_at_baseline);
    let sum: f64 = r.attributions.iter().map(|v| f64::from(*v)).sum();
    assert!(
        (sum - want).abs() <= 1e-3 * want.abs().max(1e-3),
        "completeness: sum {sum}, f(x) - f(b) {want}, steps {}",
        r.steps
    );
    assert!(
        ((sum - want).abs() - f64::from(r.completeness_error)).abs() <= 1e-5,
        "reported error {} for a gap of {}",
        r.completeness_error,
        (sum - want).abs()
    );
}

#[test]
fn a_classifiers_attributions_are_complete_and_the_baseline_is_pad() {
    let (tiny, tensors) = Tiny::new(Some(3), true);
    for (output, softmax) in [("softmax", true), ("logits", false)] {
        let enc = tiny.load(&classifier(output)).unwrap();
        let tokens = enc.tokenize(TEXTS).unwrap();
        let scores = enc.classify(TEXTS).unwrap();
        let explained = enc.explain_tokens(&tokens, None).unwrap();
        assert_eq!(explained.len(), TEXTS.len());
        for ((a, tok), score) in explained.iter().zip(&tokens).zip(&scores) {
            assert_complete(a);
            let r = &a.attribution;
            assert_eq!(r.attributions.len(), tok.len());
            // The default target is the predicted label, and f(x) is the served score.
            let argmax = crate::engine::argmax_rows(score, 3)[0];
            assert_eq!(r.target, argmax);
            assert!((r.output_at_input - score[argmax]).abs() < 1e-5);
            // The baseline: every text token replaced by [PAD] (id 0), [CLS] and [SEP] kept,
            // positions and token types unchanged.
            let baseline_ids: Vec<u32> = tok
                .ids
                .iter()
                .enumerate()
                .map(|(i, &id)| if i == 0 || i + 1 == tok.len() { id } else { 0 })
                .collect();
            let words: Vec<Vec<f64>> = baseline_ids.iter().map(|&i| word(&tensors, i)).collect();
            let fb = reference_outputs(&tensors, &words, Some(softmax))[argmax];
            assert!(
                (f64::from(r.output_at_baseline) - fb).abs() < 1e-5,
                "f(baseline) {} vs {fb}",
                r.output_at_baseline
            );
            // The template's tokens are marked and keep their embedding: attribution 0.
            assert_eq!(a.tokens.first().map(String::as_str), Some("[CLS]"));
            assert_eq!(a.tokens.last().map(String::as_str), Some("[SEP]"));
            for (i, s) in a.special.iter().enumerate() {
                assert_eq!(*s, i == 0 || i + 1 == tok.len());
                if *s {
                    assert_eq!(r.attributions[i], 0.0);
                }
            }
        }
    }
    let enc = tiny.load(&classifier("softmax")).unwrap();
    let tokens = enc.tokenize(&["hello world"]).unwrap();
    let a = &enc.explain_tokens(&tokens, Some(2)).unwrap()[0];
    assert_eq!(a.tokens, ["[CLS]", "hello", "world", "[SEP]"]);
    assert_eq!(a.attribution.target, 2);
}

#[test]
fn attributions_match_a_brute_force_reference() {
    let (tiny, tensors) = Tiny::new(Some(3), true);
    let check = |got: &TextAttribution, want: &[f64]| {
        for (i, (g, w)) in got.attribution.attributions.iter().zip(want).enumerate() {
            assert!(
                (f64::from(*g) - w).abs() <= 2e-4 + 1e-3 * w.abs(),
                "token {i} ({}): {g} vs reference {w}",
                got.tokens[i]
            );
        }
    };
    let enc = tiny.load(&classifier("softmax")).unwrap();
    let tokens = enc.tokenize(&["the lazy dog is not ok"]).unwrap();
    for target in [0, 1] {
        let a = &enc.explain_tokens(&tokens, Some(target)).unwrap()[0];
        let ids = &tokens[0].ids;
        let mut baseline = vec![0u32; ids.len()];
        baseline[0] = ids[0];
        baseline[ids.len() - 1] = ids[ids.len() - 1];
        let want = reference_attributions(
            &tensors,
            ids,
            &baseline,
            target,
            Some(true),
            a.attribution.steps,
        );
        check(a, &want);
    }
    // An embedding model, one named dimension of its normalized mean embedding.
    let enc = tiny.load(&config(serde_json::json!({}))).unwrap();
    let tokens = enc.tokenize(&["hello world"]).unwrap();
    let a = &enc.explain_tokens(&tokens, Some(5)).unwrap()[0];
    assert_complete(a);
    let want = reference_attributions(
        &tensors,
        &tokens[0].ids,
        &[2, 0, 0, 3],
        5,
        None,
        a.attribution.steps,
    );
    check(a, &want);
}

#[test]
fn padding_gets_no_gradient_and_passes_do_not_change_attributions() {
    let (tiny, _) = Tiny::new(Some(3), true);
    let enc = tiny.load(&classifier("logits")).unwrap();
    let tokens = enc
        .tokenize(&["hello", "the quick brown fox jumps"])
        .unwrap();
    let (short, long) = (tokens[0].len(), tokens[1].len());
    assert!(short < long);
    // One pass holding both texts: the short one's padding positions get exactly 0.
    let paths: Vec<TextPath> = tokens
        .iter()
        .map(|t| TextPath::for_test(&enc, t, 1))
        .collect();
    let items = [(1, 0.5), (0, 0.5), (0, 0.25)];
    let pass = run_pass(&enc, &paths, &items, true).unwrap();
    assert_eq!(pass.seq, long);
    let grads = pass.gradients.unwrap();
    for row in [1, 2] {
        let g = &grads[row * long * HIDDEN..(row + 1) * long * HIDDEN];
        assert!(g[..short * HIDDEN].iter().any(|v| *v != 0.0));
        assert!(g[short * HIDDEN..].iter().all(|v| *v == 0.0), "{g:?}");
    }
    // The short text alone gives the same gradient as next to the long one.
    let alone = run_pass(&enc, &paths, &items[1..], true).unwrap();
    assert_eq!(alone.seq, short);
    let alone = alone.gradients.unwrap();
    for row in 0..2 {
        let shared = &grads[(row + 1) * long * HIDDEN..][..short * HIDDEN];
        let own = &alone[row * short * HIDDEN..][..short * HIDDEN];
        for (a, b) in shared.iter().zip(own) {
            // Only the rounding of differently shaped matmuls differs.
            assert!((a - b).abs() <= 1e-4 * a.abs().max(1e-2), "{a} vs {b}");
        }
    }
    // Explanations are the same whatever the pass size: one point per pass, or all texts'
    // points together.
    let small = integrated_gradients_in(&enc, &tokens, None, 1).unwrap();
    let large = integrated_gradients_in(&enc, &tokens, None, 1 << 20).unwrap();
    for (s, l) in small.iter().zip(&large) {
        assert_eq!(s.attribution.steps, l.attribution.steps);
        for (a, b) in s
            .attribution
            .attributions
            .iter()
            .zip(&l.attribution.attributions)
        {
            assert!((a - b).abs() <= 1e-4 * a.abs().max(1e-2), "{a} vs {b}");
        }
    }
}

#[test]
fn passes_stay_within_their_budget_of_padded_positions() {
    let (tiny, _) = Tiny::new(Some(3), true);
    let enc = tiny.load(&classifier("logits")).unwrap();
    let tokens: Vec<Tokens> = enc.tokenize(TEXTS).unwrap();
    let mut paths: Vec<TextPath> = tokens
        .iter()
        .map(|t| TextPath::for_test(&enc, t, 0))
        .collect();
    paths.sort_by_key(|p| std::cmp::Reverse(p.len()));
    let items: Vec<(usize, f64)> = (0..paths.len())
        .flat_map(|i| (0..5).map(move |k| (i, k as f64 / 5.0)))
        .collect();
    for budget in [1, 12, 40, 1000] {
        let ranges = packed(&paths, &items, budget);
        let mut next = 0;
        for r in &ranges {
            assert_eq!(r.start, next, "ranges cover every item in order");
            next = r.end;
            let longest = items[r.clone()]
                .iter()
                .map(|(i, _)| paths[*i].len())
                .max()
                .unwrap();
            assert!(
                r.len() == 1 || r.len() * longest <= budget,
                "{r:?} at {budget}"
            );
        }
        assert_eq!(next, items.len());
    }
    assert_eq!(packed(&paths, &items, 1000).len(), 1);
}

#[test]
fn bad_targets_are_refused_with_the_reason() {
    let (tiny, _) = Tiny::new(Some(3), true);
    let enc = tiny.load(&classifier("softmax")).unwrap();
    let tokens = enc.tokenize(&["hello"]).unwrap();
    let e = enc.explain_tokens(&tokens, Some(3)).unwrap_err();
    assert!(matches!(e, EngineError::ExplainTarget { .. }), "{e}");
    assert!(e.to_string().contains("target 3 does not exist"), "{e}");
    let emb = tiny.load(&config(serde_json::json!({}))).unwrap();
    let e = emb.explain_tokens(&tokens, None).unwrap_err();
    assert!(
        e.to_string()
            .contains("name the embedding dimension to explain as the target (0 to 7)"),
        "{e}"
    );
    let e = emb.explain_tokens(&tokens, Some(HIDDEN)).unwrap_err();
    assert!(matches!(e, EngineError::ExplainTarget { .. }), "{e}");
}

#[test]
fn the_differentiable_forward_is_the_served_forward() {
    let (tiny, _) = Tiny::new(Some(3), true);
    for config in [
        classifier("softmax"),
        classifier("logits"),
        config(serde_json::json!({})),
        config(serde_json::json!({"pooling": "cls", "normalize": false})),
    ] {
        let enc = tiny.load(&config).unwrap();
        let tokens = enc.tokenize(TEXTS).unwrap();
        let served = enc.infer_tokenized(&tokens, 1 << 20, 64).unwrap().to_rows();
        let paths: Vec<TextPath> = tokens
            .iter()
            .map(|t| TextPath::for_test(&enc, t, 0))
            .collect();
        let items: Vec<(usize, f64)> = (0..paths.len()).map(|i| (i, 1.0)).collect();
        let pass = run_pass(&enc, &paths, &items, false).unwrap();
        let width = served[0].len();
        for (row, want) in pass.outputs.chunks_exact(width).zip(&served) {
            for (a, b) in row.iter().zip(want) {
                assert!((a - b).abs() <= 1e-5 * b.abs().max(1.0), "{a} vs {b}");
            }
        }
    }
}
