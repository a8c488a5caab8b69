//! Tests of the BERT encoder: a tiny randomly initialised BERT made here, checked against a
//! plain f64 re-implementation of the forward pass; tokenization and truncation; the
//! checks at load time; length grouping; and the acceptance test against
//! sentence-transformers with the real all-MiniLM-L6-v2 (`minilm`).

// The reference implementation is written index by index, as the definitions read.
#![allow(clippy::needless_range_loop)]

use std::collections::BTreeMap;

use candle_core::Device;

use super::*;
use crate::engine::config::EncoderConfig;
use crate::engine::error::EngineError;
use crate::engine::text::TextEncoder;

const VOCAB: &[&str] = &[
    "[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "the", "quick", "brown", "fox", "jumps", "over",
    "lazy", "dog", "hello", "world", "a", "b", "c", "##s", "##ing", ".", ",", "!", "?", "cafe",
    "secret", "data", "model", "text", "is", "not", "ok",
];
const HIDDEN: usize = 8;
const HEADS: usize = 2;
const LAYERS: usize = 2;
const INTER: usize = 16;
const POSITIONS: usize = 16;

/// A deterministic generator of weights in [-0.5, 0.5).
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> f32 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        ((self.0 >> 40) as f32 / (1u64 << 24) as f32) - 0.5
    }
    fn vec(&mut self, n: usize) -> Vec<f32> {
        (0..n).map(|_| self.next()).collect()
    }
}

fn hf_config(max_positions: usize) -> Vec<u8> {
    serde_json::to_vec(&serde_json::json!({
        "architectures": ["BertModel"], "model_type": "bert", "hidden_act": "gelu",
        "vocab_size": VOCAB.len(), "hidden_size": HIDDEN, "num_hidden_layers": LAYERS,
        "num_attention_heads": HEADS, "intermediate_size": INTER,
        "max_position_embeddings": max_positions, "type_vocab_size": 2,
        "layer_norm_eps": 1e-12, "position_embedding_type": "absolute", "pad_token_id": 0
    }))
    .unwrap()
}

fn tokenizer_json(vocab: &[&str]) -> Vec<u8> {
    let vocab: serde_json::Map<String, serde_json::Value> = vocab
        .iter()
        .enumerate()
        .map(|(i, t)| ((*t).to_string(), serde_json::json!(i)))
        .collect();
    let special = |id: usize, content: &str| {
        serde_json::json!({"id": id, "content": content, "single_word": false, "lstrip": false,
                           "rstrip": false, "normalized": false, "special": true})
    };
    serde_json::to_vec(&serde_json::json!({
        "version": "1.0",
        // Stored truncation and padding must be ignored: the model config decides.
        "truncation": {"direction": "Right", "max_length": 3, "strategy": "LongestFirst", "stride": 0},
        "padding": {"strategy": {"Fixed": 12}, "direction": "Right", "pad_to_multiple_of": null,
                    "pad_id": 0, "pad_type_id": 0, "pad_token": "[PAD]"},
        "added_tokens": [special(0, "[PAD]"), special(1, "[UNK]"), special(2, "[CLS]"),
                         special(3, "[SEP]"), special(4, "[MASK]")],
        "normalizer": {"type": "BertNormalizer", "clean_text": true, "handle_chinese_chars": true,
                       "strip_accents": null, "lowercase": true},
        "pre_tokenizer": {"type": "BertPreTokenizer"},
        "post_processor": {"type": "TemplateProcessing",
            "single": [{"SpecialToken": {"id": "[CLS]", "type_id": 0}},
                       {"Sequence": {"id": "A", "type_id": 0}},
                       {"SpecialToken": {"id": "[SEP]", "type_id": 0}}],
            "pair": [{"SpecialToken": {"id": "[CLS]", "type_id": 0}},
                     {"Sequence": {"id": "A", "type_id": 0}},
                     {"SpecialToken": {"id": "[SEP]", "type_id": 0}},
                     {"Sequence": {"id": "B", "type_id": 1}},
                     {"SpecialToken": {"id": "[SEP]", "type_id": 1}}],
            "special_tokens": {"[CLS]": {"id": "[CLS]", "ids": [2], "tokens": ["[CLS]"]},
                               "[SEP]": {"id": "[SEP]", "ids": [3], "tokens": ["[SEP]"]}}},
        "decoder": {"type": "WordPiece", "prefix": "##", "cleanup": true},
        "model": {"type": "WordPiece", "unk_token": "[UNK]", "continuing_subword_prefix": "##",
                  "max_input_chars_per_word": 100, "vocab": vocab}
    }))
    .unwrap()
}

/// The tiny model's tensors by Hugging Face name: (shape, values).
type Tensors = BTreeMap<String, (Vec<usize>, Vec<f32>)>;

fn tiny_tensors(seed: u64, labels: Option<usize>, pooler: bool) -> Tensors {
    let mut rng = Rng(seed);
    let mut t = Tensors::new();
    let mut put = |name: String, shape: Vec<usize>, rng: &mut Rng| {
        let n = shape.iter().product();
        t.insert(name, (shape, rng.vec(n)));
    };
    put(
        "embeddings.word_embeddings.weight".into(),
        vec![VOCAB.len(), HIDDEN],
        &mut rng,
    );
    put(
        "embeddings.position_embeddings.weight".into(),
        vec![POSITIONS, HIDDEN],
        &mut rng,
    );
    put(
        "embeddings.token_type_embeddings.weight".into(),
        vec![2, HIDDEN],
        &mut rng,
    );
    let norm = |t: &mut Tensors, name: &str, rng: &mut Rng| {
        let w: Vec<f32> = rng.vec(HIDDEN).iter().map(|v| 1.0 + v).collect();
        t.insert(format!("{name}.weight"), (vec![HIDDEN], w));
        t.insert(format!("{name}.bias"), (vec![HIDDEN], rng.vec(HIDDEN)));
    };
    let lin = |t: &mut Tensors, name: &str, inp: usize, out: usize, rng: &mut Rng| {
        t.insert(
            format!("{name}.weight"),
            (vec![out, inp], rng.vec(out * inp)),
        );
        t.insert(format!("{name}.bias"), (vec![out], rng.vec(out)));
    };
    norm(&mut t, "embeddings.LayerNorm", &mut rng);
    for i in 0..LAYERS {
        let b = format!("encoder.layer.{i}");
        for p in ["query", "key", "value"] {
            lin(
                &mut t,
                &format!("{b}.attention.self.{p}"),
                HIDDEN,
                HIDDEN,
                &mut rng,
            );
        }
        lin(
            &mut t,
            &format!("{b}.attention.output.dense"),
            HIDDEN,
            HIDDEN,
            &mut rng,
        );
        norm(&mut t, &format!("{b}.attention.output.LayerNorm"), &mut rng);
        lin(
            &mut t,
            &format!("{b}.intermediate.dense"),
            HIDDEN,
            INTER,
            &mut rng,
        );
        lin(
            &mut t,
            &format!("{b}.output.dense"),
            INTER,
            HIDDEN,
            &mut rng,
        );
        norm(&mut t, &format!("{b}.output.LayerNorm"), &mut rng);
    }
    if pooler {
        lin(&mut t, "pooler.dense", HIDDEN, HIDDEN, &mut rng);
    }
    if let Some(n) = labels {
        lin(&mut t, "classifier", HIDDEN, n, &mut rng);
    }
    t
}

fn serialize(t: &Tensors) -> Vec<u8> {
    let bytes: Vec<(String, Vec<usize>, Vec<u8>)> = t
        .iter()
        .map(|(n, (s, v))| {
            (
                n.clone(),
                s.clone(),
                v.iter().flat_map(|x| x.to_le_bytes()).collect(),
            )
        })
        .collect();
    let views: Vec<(String, safetensors::tensor::TensorView<'_>)> = bytes
        .iter()
        .map(|(n, s, d)| {
            (
                n.clone(),
                safetensors::tensor::TensorView::new(safetensors::Dtype::F32, s.clone(), d)
                    .unwrap(),
            )
        })
        .collect();
    safetensors::serialize(views, None).unwrap()
}

fn config(extra: serde_json::Value) -> EncoderConfig {
    let mut arch = serde_json::json!({"kind": "bert", "task": "embedding", "pooling": "mean",
        "normalize": true, "max_tokens": 12, "truncation": "truncate"});
    for (k, v) in extra.as_object().unwrap() {
        arch[k] = v.clone();
    }
    let json = serde_json::json!({"id": "tiny", "version": "1", "architecture": arch});
    EncoderConfig::from_json(&serde_json::to_vec(&json).unwrap()).unwrap()
}

struct Tiny {
    weights: Vec<u8>,
    config: Vec<u8>,
    tokenizer: Vec<u8>,
}

impl Tiny {
    fn new(labels: Option<usize>, pooler: bool) -> (Self, Tensors) {
        let t = tiny_tensors(0x9e37_79b9_7f4a_7c15, labels, pooler);
        let tiny = Self {
            weights: serialize(&t),
            config: hf_config(POSITIONS),
            tokenizer: tokenizer_json(VOCAB),
        };
        (tiny, t)
    }

    fn files(&self) -> BertFiles<'_> {
        BertFiles {
            weights: &self.weights,
            config: &self.config,
            tokenizer: &self.tokenizer,
            pooling: None,
            modules: None,
            head: None,
        }
    }

    fn load(&self, config: &EncoderConfig) -> Result<BertEncoder, EngineError> {
        BertEncoder::load(config, self.files(), &Device::Cpu)
    }
}

// ---- a plain f64 BERT, written from the definition, as the reference -------------------

fn layer_norm(x: &[f64], w: &[f32], b: &[f32]) -> Vec<f64> {
    let n = x.len() as f64;
    let mean = x.iter().sum::<f64>() / n;
    let var = x.iter().map(|v| (v - mean) * (v - mean)).sum::<f64>() / n;
    x.iter()
        .enumerate()
        .map(|(i, v)| (v - mean) / (var + 1e-12).sqrt() * f64::from(w[i]) + f64::from(b[i]))
        .collect()
}

fn linear(t: &Tensors, name: &str, x: &[f64]) -> Vec<f64> {
    let (shape, w) = &t[&format!("{name}.weight")];
    let (_, b) = &t[&format!("{name}.bias")];
    let (out, inp) = (shape[0], shape[1]);
    (0..out)
        .map(|o| {
            f64::from(b[o])
                + (0..inp)
                    .map(|i| f64::from(w[o * inp + i]) * x[i])
                    .sum::<f64>()
        })
        .collect()
}

fn erf(x: f64) -> f64 {
    libm::erf(x)
}

/// Hidden states of one text (no padding: attention over its own tokens only).
fn reference_hidden(t: &Tensors, ids: &[u32]) -> Vec<Vec<f64>> {
    let words: Vec<Vec<f64>> = ids
        .iter()
        .map(|&id| {
            (0..HIDDEN)
                .map(|j| {
                    f64::from(t["embeddings.word_embeddings.weight"].1[id as usize * HIDDEN + j])
                })
                .collect()
        })
        .collect();
    reference_hidden_from(t, &words)
}

/// Hidden states of one text given its word embeddings (token type 0 throughout).
fn reference_hidden_from(t: &Tensors, words: &[Vec<f64>]) -> Vec<Vec<f64>> {
    let g = |n: &str| &t[n].1;
    let mut x: Vec<Vec<f64>> = words
        .iter()
        .enumerate()
        .map(|(p, word)| {
            let e: Vec<f64> = (0..HIDDEN)
                .map(|j| {
                    word[j]
                        + f64::from(g("embeddings.position_embeddings.weight")[p * HIDDEN + j])
                        + f64::from(g("embeddings.token_type_embeddings.weight")[j])
                })
                .collect();
            layer_norm(
                &e,
                g("embeddings.LayerNorm.weight"),
                g("embeddings.LayerNorm.bias"),
            )
        })
        .collect();
    let hd = HIDDEN / HEADS;
    for l in 0..LAYERS {
        let b = format!("encoder.layer.{l}");
        let q: Vec<_> = x
            .iter()
            .map(|v| linear(t, &format!("{b}.attention.self.query"), v))
            .collect();
        let k: Vec<_> = x
            .iter()
            .map(|v| linear(t, &format!("{b}.attention.self.key"), v))
            .collect();
        let v: Vec<_> = x
            .iter()
            .map(|v| linear(t, &format!("{b}.attention.self.value"), v))
            .collect();
        let n = x.len();
        let mut ctx = vec![vec![0f64; HIDDEN]; n];
        for h in 0..HEADS {
            for i in 0..n {
                let s: Vec<f64> = (0..n)
                    .map(|j| {
                        (0..hd)
                            .map(|d| q[i][h * hd + d] * k[j][h * hd + d])
                            .sum::<f64>()
                            / (hd as f64).sqrt()
                    })
                    .collect();
                let m = s.iter().cloned().fold(f64::MIN, f64::max);
                let e: Vec<f64> = s.iter().map(|v| (v - m).exp()).collect();
                let z: f64 = e.iter().sum();
                for d in 0..hd {
                    ctx[i][h * hd + d] = (0..n).map(|j| e[j] / z * v[j][h * hd + d]).sum();
                }
            }
        }
        x = (0..n)
            .map(|i| {
                let a = linear(t, &format!("{b}.attention.output.dense"), &ctx[i]);
                let r: Vec<f64> = a.iter().zip(&x[i]).map(|(a, b)| a + b).collect();
                let x1 = layer_norm(
                    &r,
                    g(&format!("{b}.attention.output.LayerNorm.weight")),
                    g(&format!("{b}.attention.output.LayerNorm.bias")),
                );
                let inner: Vec<f64> = linear(t, &format!("{b}.intermediate.dense"), &x1)
                    .iter()
                    .map(|v| 0.5 * v * (1.0 + erf(v / std::f64::consts::SQRT_2)))
                    .collect();
                let o = linear(t, &format!("{b}.output.dense"), &inner);
                let r: Vec<f64> = o.iter().zip(&x1).map(|(a, b)| a + b).collect();
                layer_norm(
                    &r,
                    g(&format!("{b}.output.LayerNorm.weight")),
                    g(&format!("{b}.output.LayerNorm.bias")),
                )
            })
            .collect();
    }
    x
}

fn reference_mean(t: &Tensors, ids: &[u32], normalize: bool) -> Vec<f64> {
    let h = reference_hidden(t, ids);
    let mut m: Vec<f64> = (0..HIDDEN)
        .map(|j| h.iter().map(|r| r[j]).sum::<f64>() / h.len() as f64)
        .collect();
    if normalize {
        let n = m.iter().map(|v| v * v).sum::<f64>().sqrt();
        m.iter_mut().for_each(|v| *v /= n);
    }
    m
}

fn assert_close(got: &[f32], want: &[f64], tol: f64) {
    assert_eq!(got.len(), want.len());
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        assert!((f64::from(*g) - w).abs() <= tol, "value {i}: {g} vs {w}");
    }
}

// ---- tests -------------------------------------------------------------------------------

#[test]
fn forward_matches_a_plain_reference_implementation() {
    let (tiny, tensors) = Tiny::new(None, true);
    let enc = tiny.load(&config(serde_json::json!({}))).unwrap();
    let texts = [
        "the quick brown fox jumps over the lazy dog.",
        "hello world",
        "",
    ];
    let tokens = enc.tokenize(&texts).unwrap();
    let out = enc.embed(&texts).unwrap();
    for (tok, got) in tokens.iter().zip(&out) {
        assert_close(got, &reference_mean(&tensors, &tok.ids, true), 2e-5);
    }
    // Unnormalized mean pooling too.
    let raw = tiny
        .load(&config(serde_json::json!({"normalize": false})))
        .unwrap();
    let got = raw.embed(&["hello world"]).unwrap();
    assert_close(
        &got[0],
        &reference_mean(&tensors, &[2, 13, 14, 3], false),
        2e-5,
    );
}

#[test]
fn padding_does_not_change_an_embedding() {
    let (tiny, _) = Tiny::new(None, true);
    let enc = tiny.load(&config(serde_json::json!({}))).unwrap();
    let short = enc.tokenize(&["hello"]).unwrap();
    let long = enc
        .tokenize(&["the quick brown fox jumps over the lazy dog"])
        .unwrap();
    let alone = enc.embed_tokens(&[&short[0]]).unwrap();
    let padded = enc.embed_tokens(&[&long[0], &short[0]]).unwrap();
    assert_eq!(padded.len(), 2 * HIDDEN);
    for (a, b) in alone.iter().zip(&padded[HIDDEN..]) {
        assert!((a - b).abs() < 1e-5, "{a} vs {b}");
    }
}

/// The CPU forward pass on slices (`model/cpu.rs`, what `embed` runs on the CPU) against
/// the candle one (what runs on a GPU), over a padded batch; and its refusals.
#[test]
fn the_cpu_forward_pass_matches_the_candle_one() {
    let (tiny, _) = Tiny::new(None, true);
    let enc = tiny.load(&config(serde_json::json!({}))).unwrap();
    let tokens = enc
        .tokenize(&[
            "the quick brown fox jumps over the lazy dog.",
            "hello",
            "a b c !",
        ])
        .unwrap();
    let refs: Vec<_> = tokens.iter().collect();
    let p = PaddedBatch::pad(&refs);
    let (rows, seq) = (p.rows, p.seq_len);
    let dev = Device::Cpu;
    let t = |v: &[u32]| candle_core::Tensor::from_vec(v.to_vec(), (rows, seq), &dev).unwrap();
    let mask = candle_core::Tensor::from_vec(p.mask.clone(), (rows, seq), &dev).unwrap();
    let want = enc
        .weights
        .forward(&t(&p.ids), &t(&p.type_ids), &mask)
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1::<f32>()
        .unwrap();
    let got = enc
        .weights
        .forward_cpu(&p.ids, &p.type_ids, &p.mask, rows, seq)
        .unwrap();
    assert_eq!(got.len(), rows * seq * HIDDEN);
    // Real tokens agree; the padding (which the slices skip) is zero.
    let mut padding = 0;
    for (i, (g, w)) in got.iter().zip(&want).enumerate() {
        if p.mask[i / HIDDEN] == 0.0 {
            assert_eq!(*g, 0.0, "value {i} is padding");
            padding += 1;
        } else {
            assert!((g - w).abs() <= 1e-5, "value {i}: {g} vs {w}");
        }
    }
    assert!(padding > 0, "the batch has padding");
    // Padding before a real token is refused.
    let mut holed = p.mask.clone();
    holed[seq + 1] = 0.0;
    assert!(
        enc.weights
            .forward_cpu(&p.ids, &p.type_ids, &holed, rows, seq)
            .is_err()
    );
    let w = &enc.weights;
    assert!(
        w.forward_cpu(&p.ids[1..], &p.type_ids, &p.mask, rows, seq)
            .is_err()
    );
    assert!(
        w.forward_cpu(&p.ids, &p.type_ids, &p.mask, rows, seq + 1)
            .is_err()
    );
    let mut bad = p.ids.clone();
    bad[1] = VOCAB.len() as u32;
    assert!(
        w.forward_cpu(&bad, &p.type_ids, &p.mask, rows, seq)
            .is_err()
    );
    let mut bad = p.type_ids.clone();
    bad[0] = 2;
    assert!(w.forward_cpu(&p.ids, &bad, &p.mask, rows, seq).is_err());
    let long = vec![2; POSITIONS + 1];
    let ones = vec![1.0; POSITIONS + 1];
    assert!(
        w.forward_cpu(&long, &long, &ones, 1, POSITIONS + 1)
            .is_err()
    );
}

#[test]
fn cls_pooling_reads_the_first_token() {
    let (tiny, tensors) = Tiny::new(None, true);
    let enc = tiny
        .load(&config(
            serde_json::json!({"pooling": "cls", "normalize": false}),
        ))
        .unwrap();
    let got = enc.embed(&["secret data", "a"]).unwrap();
    let want = reference_hidden(&tensors, &[2, 25, 26, 3]);
    assert_close(&got[0], &want[0], 2e-5);
}

#[test]
fn tokenization_ignores_the_stored_limits_and_adds_special_tokens() {
    let (tiny, _) = Tiny::new(None, true);
    let enc = tiny.load(&config(serde_json::json!({}))).unwrap();
    let t = enc
        .tokenize(&["", "Hello, World!", "unknownword foxs"])
        .unwrap();
    assert_eq!(t[0].ids, [2, 3]);
    assert_eq!(t[1].ids, [2, 13, 21, 14, 22, 3]);
    assert_eq!(t[2].ids, [2, 1, 8, 18, 3]);
    assert!(
        t.iter()
            .all(|t| !t.truncated() && t.type_ids.iter().all(|&x| x == 0))
    );
}

#[test]
fn truncate_keeps_max_tokens_and_the_final_sep() {
    let (tiny, tensors) = Tiny::new(None, true);
    let enc = tiny
        .load(&config(serde_json::json!({"max_tokens": 6})))
        .unwrap();
    let text = "the quick brown fox jumps over the lazy dog";
    let t = &enc.tokenize(&[text]).unwrap()[0];
    assert_eq!(t.ids, [2, 5, 6, 7, 8, 3]);
    assert_eq!(t.original_len, 11);
    assert!(t.truncated());
    let got = enc.embed(&[text]).unwrap();
    assert_close(&got[0], &reference_mean(&tensors, &t.ids, true), 2e-5);
}

#[test]
fn refuse_names_the_text_its_tokens_and_the_limit() {
    let (tiny, _) = Tiny::new(None, true);
    let enc = tiny
        .load(&config(
            serde_json::json!({"max_tokens": 6, "truncation": "refuse"}),
        ))
        .unwrap();
    // Exactly at the limit is accepted.
    assert_eq!(enc.tokenize(&["a b c d"]).unwrap()[0].len(), 6);
    let err = enc.embed(&["ok", "a b c d e"]).err().unwrap();
    match &err {
        EngineError::TooManyTokens {
            model,
            index,
            tokens,
            limit,
        } => {
            assert_eq!((model.as_str(), *index, *tokens, *limit), ("tiny", 1, 7, 6));
        }
        other => panic!("expected TooManyTokens, got {other:?}"),
    }
    assert!(err.to_string().contains("text 1 has 7 tokens"), "{err}");
}

#[test]
fn classifier_head_follows_bert_for_sequence_classification() {
    let (tiny, tensors) = Tiny::new(Some(3), true);
    let cfg = |output: &str| {
        let json = serde_json::json!({"id": "clf", "version": "1", "labels": ["a", "b", "c"],
            "architecture": {"kind": "bert", "task": "classification", "pooling": "cls",
            "max_tokens": 12, "truncation": "truncate", "output": output}});
        EncoderConfig::from_json(&serde_json::to_vec(&json).unwrap()).unwrap()
    };
    let enc = tiny.load(&cfg("logits")).unwrap();
    let logits = enc.classify(&["hello world"]).unwrap();
    let cls = &reference_hidden(&tensors, &[2, 13, 14, 3])[0];
    let pooled: Vec<f64> = linear(&tensors, "pooler.dense", cls)
        .iter()
        .map(|v| v.tanh())
        .collect();
    assert_close(&logits[0], &linear(&tensors, "classifier", &pooled), 2e-5);
    let probs = tiny
        .load(&cfg("softmax"))
        .unwrap()
        .classify(&["hello world"])
        .unwrap();
    assert!((probs[0].iter().sum::<f32>() - 1.0).abs() < 1e-5);
    // An embedding model has no scores to give.
    let emb = tiny.load(&config(serde_json::json!({}))).unwrap();
    assert!(matches!(
        emb.classify(&["x"]),
        Err(EngineError::WrongTask { .. })
    ));
    // A classifier whose checkpoint has no head is refused at load time.
    let (headless, _) = Tiny::new(None, true);
    match headless.load(&cfg("logits")) {
        Err(EngineError::MissingTensor { name, .. }) => assert_eq!(name, "classifier.weight"),
        other => panic!("expected MissingTensor, got {:?}", other.err()),
    }
}

#[test]
fn load_refuses_weights_that_do_not_fit() {
    let (tiny, tensors) = Tiny::new(None, true);
    let cfg = config(serde_json::json!({}));
    let with = |f: &dyn Fn(&mut Tensors)| {
        let mut t = tensors.clone();
        f(&mut t);
        Tiny {
            weights: serialize(&t),
            config: tiny.config.clone(),
            tokenizer: tiny.tokenizer.clone(),
        }
        .load(&cfg)
        .err()
        .unwrap_or_else(|| panic!("must be refused"))
    };
    let e = with(&|t| {
        t.remove("encoder.layer.1.output.dense.bias");
    });
    assert!(
        matches!(e, EngineError::MissingTensor { layer: 1, .. }),
        "{e}"
    );
    let e = with(&|t| {
        t.insert(
            "encoder.layer.0.attention.self.key.weight".into(),
            (vec![HIDDEN, 4], vec![0.0; HIDDEN * 4]),
        );
    });
    assert!(matches!(e, EngineError::Shape { .. }), "{e}");
    let e = with(&|t| {
        t.get_mut("embeddings.word_embeddings.weight").unwrap().1[7] = f32::NAN;
    });
    assert!(matches!(e, EngineError::NonFinite { .. }), "{e}");
}

#[test]
fn load_refuses_configs_that_do_not_fit_the_model() {
    let (tiny, _) = Tiny::new(None, true);
    // max_tokens above the position embeddings.
    let e = tiny
        .load(&config(serde_json::json!({"max_tokens": 17})))
        .err()
        .unwrap();
    assert!(
        e.to_string().contains("max_position_embeddings is 16"),
        "{e}"
    );
    // A tokenizer with more tokens than the embedding table.
    let mut big: Vec<&str> = VOCAB.to_vec();
    big.push("extra");
    let t = Tiny {
        weights: tiny.weights.clone(),
        config: tiny.config.clone(),
        tokenizer: tokenizer_json(&big),
    };
    let e = t.load(&config(serde_json::json!({}))).err().unwrap();
    assert!(matches!(e, EngineError::Tokenizer(_)), "{e}");
    // Not a tokenizer at all.
    let t = Tiny {
        tokenizer: b"{\"model\": 1}".to_vec(),
        ..Tiny {
            weights: tiny.weights.clone(),
            config: tiny.config.clone(),
            tokenizer: Vec::new(),
        }
    };
    assert!(matches!(
        t.load(&config(serde_json::json!({}))),
        Err(EngineError::Tokenizer(_))
    ));
    // An activation this engine does not compute.
    let mut hf: serde_json::Value = serde_json::from_slice(&tiny.config).unwrap();
    hf["hidden_act"] = "relu".into();
    let t = Tiny {
        weights: tiny.weights.clone(),
        config: serde_json::to_vec(&hf).unwrap(),
        tokenizer: tiny.tokenizer.clone(),
    };
    assert!(matches!(
        t.load(&config(serde_json::json!({}))),
        Err(EngineError::ModelFile { .. })
    ));
    // sentence-transformers files that disagree with the config.
    let pooling = br#"{"word_embedding_dimension": 8, "pooling_mode_cls_token": true,
        "pooling_mode_mean_tokens": false}"#;
    let modules = br#"[{"type": "sentence_transformers.models.Transformer"},
        {"type": "sentence_transformers.models.Normalize"}]"#;
    let cfg = config(serde_json::json!({}));
    let files = BertFiles {
        pooling: Some(pooling),
        ..tiny.files()
    };
    let e = BertEncoder::load(&cfg, files, &Device::Cpu).err().unwrap();
    assert!(e.to_string().contains("pools by [\"cls\"]"), "{e}");
    let files = BertFiles {
        modules: Some(modules),
        ..tiny.files()
    };
    assert!(BertEncoder::load(&cfg, files, &Device::Cpu).is_ok());
    let unnormalized = config(serde_json::json!({"normalize": false}));
    let e = BertEncoder::load(&unnormalized, files, &Device::Cpu)
        .err()
        .unwrap();
    assert!(e.to_string().contains("normalizes"), "{e}");
}

#[test]
fn config_validation_names_the_problem() {
    let bad = [
        (
            r#"{"kind":"bert","task":"embedding","pooling":"mean","max_tokens":1,"truncation":"truncate"}"#,
            "max_tokens",
        ),
        (
            r#"{"kind":"bert","task":"embedding","pooling":"max","max_tokens":8,"truncation":"truncate"}"#,
            "unknown variant",
        ),
        (
            r#"{"kind":"bert","task":"embedding","pooling":"mean","max_tokens":8,"truncation":"cut"}"#,
            "unknown variant",
        ),
        (
            r#"{"kind":"bert","task":"embedding","pooling":"mean","max_tokens":8,"truncation":"truncate","extra":1}"#,
            "unknown field",
        ),
        (
            r#"{"kind":"bert","task":"classification","pooling":"cls","max_tokens":8,"truncation":"truncate"}"#,
            "labels",
        ),
        (
            r#"{"kind":"bert","task":"embedding","pooling":"mean","max_tokens":8,"truncation":"truncate","labels":["x"]}"#,
            "no labels",
        ),
        (
            r#"{"kind":"mlp","task":"embedding","pooling":"mean","max_tokens":8,"truncation":"truncate"}"#,
            "not a text encoder",
        ),
    ];
    for (arch, want) in bad {
        let json = format!(r#"{{"id":"m","version":"1","architecture":{arch}}}"#);
        let e = EncoderConfig::from_json(json.as_bytes()).err().unwrap();
        assert!(e.to_string().contains(want), "{arch}: {e}");
    }
    // The contract's example parses, as an encoder and as a model of any kind.
    let contract = br#"{"id": "minilm", "version": "1.0.0", "architecture": {"kind": "bert",
        "task": "embedding", "pooling": "mean", "normalize": true, "max_tokens": 256,
        "truncation": "truncate"}}"#;
    let c = EncoderConfig::from_json(contract).unwrap();
    assert_eq!(c.output_tensor_name(), "embedding");
    let spec = crate::engine::ModelSpec::from_json(contract).unwrap();
    assert_eq!(spec.kind(), crate::engine::config::ArchitectureKind::Bert);
    assert_eq!(
        serde_json::to_value(&spec).unwrap(),
        serde_json::to_value(&c).unwrap()
    );
    // Labels inside architecture, as a classifier may give them.
    let clf = br#"{"id": "c", "version": "1", "architecture": {"kind": "bert",
        "task": "classification", "labels": ["neg", "pos"], "pooling": "cls",
        "max_tokens": 128, "truncation": "refuse"}}"#;
    assert_eq!(
        EncoderConfig::from_json(clf).unwrap().labels(),
        ["neg", "pos"]
    );
    // An MLP config saying kind bert is refused by the MLP schema.
    let e = crate::engine::ModelConfig::from_json(
        br#"{"id":"m","version":"1","architecture":{"kind":"bert","output":"logits",
        "layers":[{"weight":"0.weight","activation":"none"}]},
        "input":{"features":["a"],"min":[0],"max":[1]},"labels":["y"]}"#,
    )
    .err()
    .unwrap();
    assert!(e.to_string().contains("is not an MLP"), "{e}");
}

#[test]
fn grouping_by_length_respects_the_budget_and_keeps_every_text() {
    let lengths = [5, 120, 7, 128, 3, 64, 64, 2, 300];
    let groups = group_by_length(&lengths, 256, 3);
    let mut seen: Vec<usize> = groups.iter().flatten().copied().collect();
    seen.sort_unstable();
    assert_eq!(seen, (0..lengths.len()).collect::<Vec<_>>());
    for g in &groups {
        let longest = g.iter().map(|&i| lengths[i]).max().unwrap();
        assert!(g.len() <= 3);
        assert!(g.len() == 1 || g.len() * longest <= 256, "{g:?}");
    }
    // The over-budget text is alone; similar lengths share a batch.
    assert!(groups.contains(&vec![8]));
    assert!(groups.contains(&vec![3, 1]));
    assert!(group_by_length(&[], 256, 8).is_empty());
    let padded = PaddedBatch::pad(&[
        &crate::engine::text::Tokens {
            ids: vec![2, 5, 3],
            type_ids: vec![0; 3],
            original_len: 3,
        },
        &crate::engine::text::Tokens {
            ids: vec![2, 3],
            type_ids: vec![0; 2],
            original_len: 2,
        },
    ]);
    assert_eq!(padded.ids, [2, 5, 3, 2, 3, 0]);
    assert_eq!(padded.mask, [1.0, 1.0, 1.0, 1.0, 1.0, 0.0]);
    assert_eq!((padded.padded_tokens(), padded.real_tokens()), (6, 5));
}

#[test]
fn seal_and_unseal_a_model_directory() {
    use crate::engine::ModelSpec;
    use crate::sealed::bundle::{ModelDirectory, load_encoder, seal_encoder};
    use crate::sealed::{PublisherSigningKey, SealOptions, SealedError, SealedFile};

    let (tiny, _) = Tiny::new(None, true);
    let modules = br#"[{"type": "sentence_transformers.models.Normalize"}]"#.to_vec();
    let dir = ModelDirectory::from_files(vec![
        ("model.safetensors".into(), tiny.weights.clone()),
        ("config.json".into(), tiny.config.clone()),
        ("tokenizer.json".into(), tiny.tokenizer.clone()),
        ("modules.json".into(), modules),
    ]);
    let cfg = config(serde_json::json!({}));
    let signing = PublisherSigningKey::generate().unwrap();
    let options = SealOptions {
        chunk_size: 4096,
        ..SealOptions::default()
    };
    let sealed = seal_encoder(&cfg, &dir, &signing, &options).unwrap();
    assert_eq!(sealed.manifest.format, crate::sealed::BUNDLE_VERSION);
    assert_eq!(sealed.manifest.entries.len(), 4);
    assert_eq!(&sealed.file[8..10], &2u16.to_be_bytes());

    let trusted = [signing.public_key()];
    let unsealed = crate::sealed::unseal_as::<ModelSpec>(
        sealed.file.clone(),
        &trusted,
        &sealed.data_key,
        true,
    )
    .unwrap();
    assert_eq!(
        unsealed.entry("tokenizer.json").unwrap(),
        tiny.tokenizer.as_slice()
    );
    let from_sealed = load_encoder(&unsealed, &Device::Cpu).unwrap();
    let direct = tiny.load(&cfg).unwrap();
    let texts = ["hello world", "the lazy dog"];
    assert_eq!(
        from_sealed.embed(&texts).unwrap(),
        direct.embed(&texts).unwrap()
    );

    // The MLP reader refuses a bundle instead of misreading it.
    assert!(matches!(
        SealedFile::parse(sealed.file.clone()),
        Err(SealedError::BundleNotReadHere { found: 2 })
    ));
    // Any flipped ciphertext byte fails authentication.
    let mut bad = sealed.file.clone();
    let last = bad.len() - 40;
    bad[last] ^= 1;
    assert!(crate::sealed::unseal_as::<ModelSpec>(bad, &trusted, &sealed.data_key, false).is_err());
    // The header's format must be the manifest's.
    let mut bad = sealed.file.clone();
    bad[9] = 1;
    assert!(SealedFile::<ModelSpec>::parse_as(bad).is_err());
    // A model that cannot be served is not sealed.
    let broken = ModelDirectory::from_files(vec![
        ("model.safetensors".into(), tiny.weights.clone()),
        ("config.json".into(), hf_config(8)),
        ("tokenizer.json".into(), tiny.tokenizer.clone()),
    ]);
    assert!(seal_encoder(&cfg, &broken, &signing, &options).is_err());
    let missing = ModelDirectory::from_files(vec![("config.json".into(), tiny.config.clone())]);
    let e = seal_encoder(&cfg, &missing, &signing, &options)
        .err()
        .unwrap();
    assert!(e.to_string().contains("model.safetensors"), "{e}");
}

/// The acceptance test: all-MiniLM-L6-v2 against sentence-transformers.
mod explain;
mod minilm;
