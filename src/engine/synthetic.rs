//! Synthetic models with deterministic weights: MLPs for the kernel tests and the GPU benchmarks
//! (the shapes of the tabular models Confidant serves, at any width), and a tiny BERT.

use std::collections::HashMap;

use safetensors::tensor::TensorView;

use super::{EngineError, ModelConfig};

/// Deterministic values in `[-scale/2, scale/2)` (xorshift; not random, only spread).
pub fn values(n: usize, seed: u64, scale: f32) -> Vec<f32> {
    let mut s = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..n)
        .map(|_| {
            s ^= s >> 12;
            s ^= s << 25;
            s ^= s >> 27;
            let r = s.wrapping_mul(0x2545_F491_4F6C_DD1D);
            ((r >> 40) as f32 / (1u64 << 24) as f32 - 0.5) * scale
        })
        .collect()
}

/// A `widths[0] → … → widths[n]` MLP (relu between layers, softmax output, input
/// standardization, biases) as a model config and PyTorch-named safetensors bytes.
pub fn mlp(widths: &[usize], seed: u64) -> Result<(ModelConfig, Vec<u8>), EngineError> {
    let bad = |m: String| EngineError::Safetensors(m);
    if widths.len() < 2 {
        return Err(bad(
            "an MLP needs at least an input and an output width".into()
        ));
    }
    let mut data: Vec<(String, Vec<usize>, Vec<u8>)> = Vec::new();
    let mut layers = Vec::new();
    let last = widths.len() - 2;
    for (i, pair) in widths.windows(2).enumerate() {
        let (inp, out) = (pair[0], pair[1]);
        let scale = 2.0 / (inp as f32).sqrt();
        let bytes = |v: Vec<f32>| v.iter().flat_map(|x| x.to_le_bytes()).collect::<Vec<u8>>();
        data.push((
            format!("{}.weight", 2 * i),
            vec![out, inp],
            bytes(values(out * inp, seed + 10 + i as u64, scale)),
        ));
        data.push((
            format!("{}.bias", 2 * i),
            vec![out],
            bytes(values(out, seed + 100 + i as u64, 0.2)),
        ));
        layers.push(serde_json::json!({
            "weight": format!("{}.weight", 2 * i),
            "bias": format!("{}.bias", 2 * i),
            "activation": if i == last { "none" } else { "relu" },
        }));
    }
    let views = data
        .iter()
        .map(|(name, shape, b)| {
            TensorView::new(safetensors::Dtype::F32, shape.clone(), b)
                .map(|v| (name.clone(), v))
                .map_err(|e| bad(e.to_string()))
        })
        .collect::<Result<Vec<_>, _>>()?;
    let weights = safetensors::serialize(views, None::<HashMap<String, String>>)
        .map_err(|e| bad(e.to_string()))?;
    let inp = widths[0];
    let out = widths[widths.len() - 1];
    let features: Vec<String> = (0..inp).map(|i| format!("f{i}")).collect();
    let mean = values(inp, seed + 30, 1.0);
    let std: Vec<f32> = values(inp, seed + 31, 1.0)
        .iter()
        .map(|v| 1.0 + v)
        .collect();
    let labels: Vec<String> = (0..out).map(|i| format!("c{i}")).collect();
    let config = serde_json::json!({
        "id": format!("synthetic-{}", widths.iter().map(usize::to_string).collect::<Vec<_>>().join("-")),
        "version": "1.0.0",
        "architecture": {"kind": "mlp", "output": "softmax", "layers": layers},
        "input": {"features": features, "min": vec![-10.0; inp], "max": vec![10.0; inp],
                  "normalization": {"mean": mean, "std": std}},
        "labels": labels,
    });
    let config = ModelConfig::from_json(config.to_string().as_bytes())
        .map_err(|e| bad(format!("synthetic config: {e}")))?;
    Ok((config, weights))
}

/// The word pieces of [`tiny_bert`]'s vocabulary after its five special tokens (`[PAD]`,
/// `[UNK]`, `[CLS]`, `[SEP]`, `[MASK]`, ids 0 to 4).
pub const TINY_BERT_WORDS: &[&str] = &[
    "the", "a", "patient", "note", "claim", "contract", "is", "was", "not", "and", "with", "pain",
    "fever", "denied", "approved", "hello", "world", "##s", "##ed", "##ing", ".", ",", "é", "日",
    "本",
];

/// A tiny, randomly initialised BERT as the files of a Hugging Face model directory
/// (`config.json`, `tokenizer.json` with a WordPiece vocabulary of [`TINY_BERT_WORDS`],
/// `model.safetensors`): hidden size 16, 2 heads, 2 layers, 64 positions, and with
/// `labels`, a `BertForSequenceClassification` head (`pooler.dense`, `classifier`) of that
/// many rows. Deterministic for a seed; for tests of serving and sealing that need a real
/// encoder but not a real model.
pub fn tiny_bert(seed: u64, labels: Option<usize>) -> Result<Vec<(String, Vec<u8>)>, EngineError> {
    const HIDDEN: usize = 16;
    const INTER: usize = 32;
    const LAYERS: usize = 2;
    const POSITIONS: usize = 64;
    let bad = |m: String| EngineError::Safetensors(m);
    let specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"];
    let vocab: Vec<&str> = specials
        .iter()
        .chain(TINY_BERT_WORDS.iter())
        .copied()
        .collect();
    let mut tensors: Vec<(String, Vec<usize>, Vec<f32>)> = Vec::new();
    let mut next = seed;
    let mut put = |name: String, shape: Vec<usize>, offset: f32| {
        next += 1;
        let n = shape.iter().product();
        let v = values(n, next, 0.8).iter().map(|x| x + offset).collect();
        tensors.push((name, shape, v));
    };
    put(
        "embeddings.word_embeddings.weight".into(),
        vec![vocab.len(), HIDDEN],
        0.0,
    );
    put(
        "embeddings.position_embeddings.weight".into(),
        vec![POSITIONS, HIDDEN],
        0.0,
    );
    put(
        "embeddings.token_type_embeddings.weight".into(),
        vec![2, HIDDEN],
        0.0,
    );
    let norm = |put: &mut dyn FnMut(String, Vec<usize>, f32), name: &str| {
        put(format!("{name}.weight"), vec![HIDDEN], 1.0);
        put(format!("{name}.bias"), vec![HIDDEN], 0.0);
    };
    let linear = |put: &mut dyn FnMut(String, Vec<usize>, f32), name: &str, i: usize, o: usize| {
        put(format!("{name}.weight"), vec![o, i], 0.0);
        put(format!("{name}.bias"), vec![o], 0.0);
    };
    norm(&mut put, "embeddings.LayerNorm");
    for l in 0..LAYERS {
        let b = format!("encoder.layer.{l}");
        for p in ["query", "key", "value"] {
            linear(&mut put, &format!("{b}.attention.self.{p}"), HIDDEN, HIDDEN);
        }
        linear(
            &mut put,
            &format!("{b}.attention.output.dense"),
            HIDDEN,
            HIDDEN,
        );
        norm(&mut put, &format!("{b}.attention.output.LayerNorm"));
        linear(&mut put, &format!("{b}.intermediate.dense"), HIDDEN, INTER);
        linear(&mut put, &format!("{b}.output.dense"), INTER, HIDDEN);
        norm(&mut put, &format!("{b}.output.LayerNorm"));
    }
    if let Some(n) = labels {
        linear(&mut put, "pooler.dense", HIDDEN, HIDDEN);
        linear(&mut put, "classifier", HIDDEN, n);
    }
    let bytes: Vec<(String, Vec<usize>, Vec<u8>)> = tensors
        .into_iter()
        .map(|(n, s, v)| (n, s, v.iter().flat_map(|x| x.to_le_bytes()).collect()))
        .collect();
    let views = bytes
        .iter()
        .map(|(name, shape, b)| {
            TensorView::new(safetensors::Dtype::F32, shape.clone(), b)
                .map(|v| (name.clone(), v))
                .map_err(|e| bad(e.to_string()))
        })
        .collect::<Result<Vec<_>, _>>()?;
    let weights = safetensors::serialize(views, None::<HashMap<String, String>>)
        .map_err(|e| bad(e.to_string()))?;
    let config = serde_json::json!({
        "architectures": ["BertModel"], "model_type": "bert", "hidden_act": "gelu",
        "vocab_size": vocab.len(), "hidden_size": HIDDEN, "num_hidden_layers": LAYERS,
        "num_attention_heads": 2, "intermediate_size": INTER,
        "max_position_embeddings": POSITIONS, "type_vocab_size": 2,
        "layer_norm_eps": 1e-12, "position_embedding_type": "absolute", "pad_token_id": 0
    });
    let special = |id: usize, content: &str| {
        serde_json::json!({"id": id, "content": content, "single_word": false,
            "lstrip": false, "rstrip": false, "normalized": false, "special": true})
    };
    let vocab_map: serde_json::Map<String, serde_json::Value> = vocab
        .iter()
        .enumerate()
        .map(|(i, t)| ((*t).to_string(), serde_json::json!(i)))
        .collect();
    let tokenizer = serde_json::json!({
        "version": "1.0", "truncation": null, "padding": null,
        "added_tokens": specials.iter().enumerate().map(|(i, s)| special(i, s)).collect::<Vec<_>>(),
        "normalizer": {"type": "BertNormalizer", "clean_text": true,
            "handle_chinese_chars": true, "strip_accents": null, "lowercase": true},
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
                  "max_input_chars_per_word": 100, "vocab": vocab_map}
    });
    let json = |v: &serde_json::Value| serde_json::to_vec(v).map_err(|e| bad(e.to_string()));
    Ok(vec![
        ("config.json".into(), json(&config)?),
        ("tokenizer.json".into(), json(&tokenizer)?),
        ("model.safetensors".into(), weights),
    ])
}
