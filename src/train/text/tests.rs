use candle_core::Device;

use super::*;
use crate::engine::bert::{BertEncoder, HEAD_FILE};
use crate::engine::config::Activation;
use crate::privacy::accountant::AccountantKind;
use crate::sealed::bundle::ModelDirectory;
use crate::train::{Privacy, Schedule, Silent};

const EMBEDDING: &str = r#"{"id": "tiny", "version": "1.0.0", "purposes": ["triage"],
  "architecture": {"kind": "bert", "task": "embedding", "pooling": "mean", "normalize": true,
                   "max_tokens": 12, "truncation": "refuse"}}"#;

fn read(csv: &[u8], classes: Option<&[String]>) -> Result<TextDataset> {
    TextDataset::from_csv_reader(csv, "inline", "text", "label", classes)
}

fn names(v: &[&str]) -> Vec<String> {
    v.iter().map(|s| s.to_string()).collect()
}

/// The tiny BERT's files and an encoder over them with `config`.
fn tiny(config: &str) -> (ModelDirectory, BertEncoder) {
    let dir = ModelDirectory::from_files(crate::engine::synthetic::tiny_bert(5, None).unwrap());
    let config = EncoderConfig::from_json(config.as_bytes()).unwrap();
    let encoder = BertEncoder::load(&config, dir.bert_files().unwrap(), &Device::Cpu).unwrap();
    (dir, encoder)
}

/// Texts of two kinds, alternating: routine paperwork and urgent symptoms.
fn triage_csv(rows: usize) -> String {
    let routine = [
        "the claim was approved",
        "the contract is approved",
        "a note",
    ];
    let urgent = [
        "the patient was in pain",
        "fever and pain",
        "the patient with fever",
    ];
    let mut csv = "id,text,label\n".to_string();
    for i in 0..rows {
        let (text, label) = if i % 2 == 0 {
            (routine[i / 2 % 3], "routine")
        } else {
            (urgent[i / 2 % 3], "urgent")
        };
        csv.push_str(&format!("{i},{text},{label}\n"));
    }
    csv
}

fn options(privacy: Privacy) -> TrainOptions {
    TrainOptions {
        hidden: vec![],
        epochs: 5,
        batch_size: 16,
        clip: 1.0,
        learning_rate: 2.0,
        momentum: 0.0,
        schedule: Schedule::Constant,
        privacy,
    }
}

fn info() -> TextModelInfo {
    TextModelInfo {
        id: "triage".into(),
        version: "1.0.0".into(),
        description: None,
    }
}

#[test]
fn a_text_csv_gives_texts_and_class_indices() {
    let csv =
        "label,text,other\nspam,\"buy now, cheap\",1\nham,\"see you\nat noon\",2\n\nspam,,3\n";
    let d = read(csv.as_bytes(), None).unwrap();
    assert_eq!(d.texts(), ["buy now, cheap", "see you\nat noon", ""]);
    assert_eq!(d.classes(), ["ham", "spam"], "sorted when not given");
    assert_eq!(d.labels(), [1, 0, 1]);
    let given = names(&["spam", "ham", "unused"]);
    let d = read(csv.as_bytes(), Some(&given)).unwrap();
    assert_eq!(d.labels(), [0, 1, 0]);
    assert_eq!(d.classes(), given.as_slice());
}

#[test]
fn bad_text_csvs_get_precise_errors() {
    let e = read(b"body,label\nhello,a\n", None).unwrap_err();
    assert!(
        matches!(e, TrainError::MissingColumn { ref column, .. } if column == "text"),
        "{e}"
    );
    assert!(e.to_string().contains("no column \"text\""), "{e}");
    let e = read(b"text,label\nhello,a\nbye,c\n", Some(&names(&["a", "b"]))).unwrap_err();
    assert_eq!(
        e.to_string(),
        "inline: line 3, column \"label\": unknown label \"c\": the classes are \"a\", \"b\""
    );
    let e = read(b"text,label\nhello,a\nbad \xff text,b\n", None).unwrap_err();
    assert_eq!(
        e.to_string(),
        "inline: line 3, column \"text\": the cell is not valid UTF-8"
    );
    let e = read(b"text,label\nhello,\n", None).unwrap_err();
    assert!(
        e.to_string()
            .contains("line 2, column \"label\": the label is empty"),
        "{e}"
    );
    let e = read(b"text,label\nhello,a,extra\n", None).unwrap_err();
    assert!(e.to_string().contains("2 columns"), "{e}");
    let e = read(b"text,label\n", None).unwrap_err();
    assert!(e.to_string().contains("no data rows"), "{e}");
    let e = TextDataset::from_csv_reader(&b"text\nhello\n"[..], "inline", "text", "text", None)
        .unwrap_err();
    assert!(e.to_string().contains("both the text and the label"), "{e}");
}

#[test]
fn a_head_trained_on_embeddings_serves_as_the_trainer_computed_it() {
    let (dir, encoder) = tiny(EMBEDDING);
    let data = read(triage_csv(64).as_bytes(), None).unwrap();
    let dp = Privacy::Target {
        epsilon: 3.0,
        delta: 1e-5,
        accountant: AccountantKind::Rdp,
    };
    let mut rng = ChaChaDpRng::dangerous_from_seed([3; 32]);
    let model = train_text(
        &encoder,
        &data,
        &options(dp),
        &info(),
        &mut rng,
        &mut Silent,
    )
    .unwrap();
    let c = &model.config;
    assert_eq!(c.architecture.task, TextTask::Classification);
    assert_eq!(c.labels, ["routine", "urgent"]);
    assert_eq!(c.purposes, ["triage"], "the encoder's purposes carry over");
    assert_eq!(c.architecture.max_tokens, 12);
    let head = c.architecture.head.as_ref().unwrap();
    assert_eq!(head.layers.len(), 1);
    assert_eq!(head.layers[0].activation, Activation::None);
    let dp = c.dp_training.as_ref().unwrap();
    assert_eq!((dp.epsilon, dp.delta), (3.0, 1e-5));
    assert!(dp.mechanism.as_ref().unwrap().noise_multiplier > 0.0);
    assert!(c.description.as_ref().unwrap().contains("(3, 0.00001)-DP"));

    // The classifier built from the encoder's files and the head computes
    // softmax(W · embedding + b), with the trainer's own weights.
    let weights = model.weights().unwrap();
    let mut files: Vec<(String, Vec<u8>)> = dir
        .entries()
        .iter()
        .map(|(n, b)| (n.to_string(), b.to_vec()))
        .collect();
    files.push((HEAD_FILE.into(), weights));
    let with_head = ModelDirectory::from_files(files);
    let classifier = BertEncoder::load(c, with_head.bert_files().unwrap(), &Device::Cpu).unwrap();
    let texts = ["the patient was in pain", "the claim was approved"];
    let scores = classifier.classify(&texts).unwrap();
    let embeddings = encoder.embed(&texts).unwrap();
    let x: Vec<f64> = embeddings.iter().flatten().map(|v| f64::from(*v)).collect();
    let want = model.network.probabilities(&x, 2);
    for (got, want) in scores.iter().flatten().zip(&want) {
        assert!((f64::from(*got) - want).abs() < 1e-5, "{got} vs {want}");
    }
    let eval = evaluate_text(
        &classifier,
        &read(triage_csv(8).as_bytes(), Some(&c.labels)).unwrap(),
    )
    .unwrap();
    assert_eq!(eval.rows, 8);

    // The tiny BERT's embeddings are nearly parallel; large non-private steps still
    // separate the two kinds of text, and evaluation through the classifier sees it.
    let separable = TrainOptions {
        epochs: 100,
        batch_size: 64,
        learning_rate: 64.0,
        momentum: 0.5,
        schedule: Schedule::Cosine,
        ..options(Privacy::NonPrivate)
    };
    let model = train_text(&encoder, &data, &separable, &info(), &mut rng, &mut Silent).unwrap();
    let mut files: Vec<(String, Vec<u8>)> = dir
        .entries()
        .iter()
        .map(|(n, b)| (n.to_string(), b.to_vec()))
        .collect();
    files.push((HEAD_FILE.into(), model.weights().unwrap()));
    let with_head = ModelDirectory::from_files(files);
    let classifier =
        BertEncoder::load(&model.config, with_head.bert_files().unwrap(), &Device::Cpu).unwrap();
    let eval = evaluate_text(&classifier, &data).unwrap();
    assert_eq!(eval.accuracy, 1.0, "{eval:?}");
    let wrong_order = read(
        triage_csv(8).as_bytes(),
        Some(&names(&["urgent", "routine"])),
    )
    .unwrap();
    let e = evaluate_text(&classifier, &wrong_order).unwrap_err();
    assert!(
        e.to_string().contains("not the model's labels in order"),
        "{e}"
    );

    // A hidden layer: ReLU between, the last layer one row per label.
    let mlp = TrainOptions {
        hidden: vec![4],
        ..options(Privacy::NonPrivate)
    };
    let model = train_text(&encoder, &data, &mlp, &info(), &mut rng, &mut Silent).unwrap();
    let layers = &model.config.architecture.head.as_ref().unwrap().layers;
    assert_eq!(layers.len(), 2);
    assert_eq!(layers[0].activation, Activation::Relu);
    assert!(model.config.dp_training.is_none());
}

#[test]
fn an_encoder_that_classifies_or_refuses_a_text_is_named() {
    let (_, encoder) = tiny(EMBEDDING);
    // 12 tokens at most, refused: the error names the CSV line.
    let long = "the patient was in pain and the patient was in pain and fever";
    let csv = format!("text,label\nhello,a\n{long},b\n");
    let data = read(csv.as_bytes(), None).unwrap();
    let mut rng = ChaChaDpRng::dangerous_from_seed([3; 32]);
    let small = TrainOptions {
        batch_size: 2,
        ..options(Privacy::NonPrivate)
    };
    let e = train_text(&encoder, &data, &small, &info(), &mut rng, &mut Silent).unwrap_err();
    let msg = e.to_string();
    assert!(msg.starts_with("inline: line 3: "), "{msg}");
    assert!(msg.contains("tokens"), "{msg}");

    let one = read(b"text,label\nhello,a\nworld,a\n", None).unwrap();
    let e = train_text(&encoder, &one, &small, &info(), &mut rng, &mut Silent).unwrap_err();
    assert!(e.to_string().contains("at least two"), "{e}");

    let files = crate::engine::synthetic::tiny_bert(5, Some(2)).unwrap();
    let dir = ModelDirectory::from_files(files);
    let config = EncoderConfig::from_json(
        br#"{"id": "cls", "version": "1", "labels": ["a", "b"],
             "architecture": {"kind": "bert", "task": "classification", "pooling": "cls",
                              "max_tokens": 12, "truncation": "truncate"}}"#,
    )
    .unwrap();
    let classifier = BertEncoder::load(&config, dir.bert_files().unwrap(), &Device::Cpu).unwrap();
    let data = read(triage_csv(8).as_bytes(), None).unwrap();
    let e = train_text(
        &classifier,
        &data,
        &options(Privacy::NonPrivate),
        &info(),
        &mut rng,
        &mut Silent,
    )
    .unwrap_err();
    assert!(
        e.to_string().contains(
            "model cls is a classification model: a head is trained on an embedding model"
        ),
        "{e}"
    );
}

#[test]
fn a_head_must_match_its_config_and_the_config_its_head() {
    let (dir, encoder) = tiny(EMBEDDING);
    let data = read(triage_csv(32).as_bytes(), None).unwrap();
    let mut rng = ChaChaDpRng::dangerous_from_seed([4; 32]);
    let model = train_text(
        &encoder,
        &data,
        &options(Privacy::NonPrivate),
        &info(),
        &mut rng,
        &mut Silent,
    )
    .unwrap();
    let head = model.weights().unwrap();
    let load = |config: &EncoderConfig, head: Option<&[u8]>| {
        let files = crate::engine::bert::BertFiles {
            head,
            ..dir.bert_files().unwrap()
        };
        BertEncoder::load(config, files, &Device::Cpu).err()
    };
    assert!(load(&model.config, Some(&head)).is_none());
    let e = load(&model.config, None).unwrap();
    assert!(e.to_string().contains("head.safetensors"), "{e}");
    let e = load(encoder.config(), Some(&head)).unwrap();
    assert!(
        e.to_string().contains("declares no architecture.head"),
        "{e}"
    );
    // Three labels for a two-row head.
    let mut three = model.config.clone();
    three.labels.push("spam".into());
    let e = load(&three, Some(&head)).unwrap();
    assert!(e.to_string().contains("0.weight"), "{e}");
    // A tensor the head does not name.
    let st = safetensors::SafeTensors::deserialize(&head).unwrap();
    let zeros = [0u8; 8];
    let mut views: Vec<(String, safetensors::tensor::TensorView<'_>)> =
        st.tensors().into_iter().collect();
    views.push((
        "extra".into(),
        safetensors::tensor::TensorView::new(safetensors::Dtype::F32, vec![2], &zeros).unwrap(),
    ));
    let extra = safetensors::serialize(views, None).unwrap();
    let e = load(&model.config, Some(&extra)).unwrap();
    assert!(
        e.to_string()
            .contains("tensor \"extra\" is not a layer of architecture.head"),
        "{e}"
    );
    // A head on an embedding model is refused by the config itself.
    let mut bad = encoder.config().clone();
    bad.architecture.head = model.config.architecture.head.clone();
    assert!(
        bad.validate()
            .unwrap_err()
            .to_string()
            .contains("classifiers only")
    );
}
