#![allow(clippy::unwrap_used)]

use std::time::Duration;

use super::report::{self, Measurement, Series};
use super::stats::{Sample, Window, stable};
use super::{parse_duration, parse_list};

fn window(secs: u64, latencies_ms: &[u64]) -> Window {
    Window::new(
        Duration::from_secs(secs),
        latencies_ms.iter().map(|&l| Sample {
            latency_ns: l * 1_000_000,
            code: None,
        }),
    )
}

#[test]
fn percentiles_use_nearest_rank() {
    let w = window(1, &(1..=100).collect::<Vec<_>>());
    assert_eq!(w.percentile_ms(50.0), 50.0);
    assert_eq!(w.percentile_ms(99.0), 99.0);
    assert_eq!(w.percentile_ms(100.0), 100.0);
    assert_eq!(w.requests_per_s(), 100.0);
    assert_eq!(w.mean_ms(), 50.5);
    assert_eq!(window(1, &[]).percentile_ms(99.0), 0.0);
    assert_eq!(window(1, &[7]).percentile_ms(1.0), 7.0);
}

#[test]
fn errors_are_counted_by_code_name_and_not_as_latencies() {
    let w = Window::new(
        Duration::from_secs(1),
        [
            Sample {
                latency_ns: 5,
                code: Some(tonic::Code::Unavailable),
            },
            Sample {
                latency_ns: 5,
                code: Some(tonic::Code::Unavailable),
            },
            Sample {
                latency_ns: 9,
                code: None,
            },
        ],
    );
    assert_eq!(w.error_count(), 2);
    assert_eq!(w.errors["UNAVAILABLE"], 2);
    assert_eq!(w.latencies_ns, [9]);
}

#[test]
fn three_windows_within_ten_percent_are_stable() {
    let steady = [
        window(1, &[1; 100]),
        window(1, &[1; 105]),
        window(1, &[1; 95]),
    ];
    assert!(stable(&steady, 3, 0.10));
    assert!(!stable(&steady[..2], 3, 0.10), "needs three windows");
    let drifting = [
        window(1, &[1; 100]),
        window(1, &[1; 100]),
        window(1, &[1; 130]),
    ];
    assert!(!stable(&drifting, 3, 0.10));
    let slower = [
        window(1, &[1; 100]),
        window(1, &[1; 100]),
        window(1, &[2; 100]),
    ];
    assert!(!stable(&slower, 3, 0.10), "latency must agree too");
}

#[test]
fn flags_parse() {
    assert_eq!(parse_duration("5s").unwrap(), Duration::from_secs(5));
    assert_eq!(parse_duration("250ms").unwrap(), Duration::from_millis(250));
    assert_eq!(parse_duration("1.5s").unwrap(), Duration::from_millis(1500));
    assert!(parse_duration("fast").is_err());
    assert!(parse_duration("-1s").is_err());
    assert_eq!(parse_list("--batch", "1, 32").unwrap(), [1, 32]);
    assert!(parse_list("--batch", "1,x").is_err());
}

fn measurement(batch: usize, concurrency: usize, rps: f64) -> Measurement {
    Measurement::new(
        super::Protocol::Oip,
        batch,
        concurrency,
        1,
        &window(1, &vec![1; rps as usize]),
        3,
        true,
    )
}

#[test]
fn results_json_has_the_contract_fields_and_round_trips() {
    let m = measurement(32, 8, 1000.0);
    let v = serde_json::to_value([&m]).unwrap();
    for field in [
        "batch",
        "concurrency",
        "requests_per_s",
        "inferences_per_s",
        "p50_ms",
        "p90_ms",
        "p95_ms",
        "p99_ms",
        "errors",
    ] {
        assert!(v[0].get(field).is_some(), "{field}");
    }
    assert_eq!(v[0]["inferences_per_s"], 32000.0);
    let back: Vec<Measurement> = serde_json::from_value(v).unwrap();
    assert_eq!(back, std::slice::from_ref(&m));
    let csv = report::csv(&back);
    assert!(csv.starts_with("batch,concurrency,requests_per_s,"));
    assert_eq!(csv.lines().count(), 2);
    // The tail comes after the contract's columns, and a baseline written before it had
    // them still reads.
    assert!(
        csv.lines()
            .next()
            .unwrap()
            .ends_with(",errors_by_code,p999_ms,max_ms")
    );
    let mut old = serde_json::to_value([&m]).unwrap();
    for field in ["p999_ms", "max_ms"] {
        old[0].as_object_mut().unwrap().remove(field);
    }
    assert_eq!(
        serde_json::from_value::<Vec<Measurement>>(old).unwrap()[0].max_ms,
        0.0
    );
}

#[test]
fn the_tail_percentiles_are_the_slowest_requests() {
    // 1,000 requests of 1..=1000 ms: the 99.9th percentile is the 999th, the max the 1000th.
    let latencies: Vec<u64> = (1..=1000).collect();
    let m = Measurement::new(
        super::Protocol::Oip,
        1,
        1,
        1,
        &window(1, &latencies),
        3,
        true,
    );
    assert_eq!((m.p99_ms, m.p999_ms, m.max_ms), (990.0, 999.0, 1000.0));
}

#[test]
fn comparison_and_plot_cover_both_runs() {
    let ours = [measurement(1, 32, 2000.0), measurement(1, 8, 1000.0)];
    let peer = [measurement(1, 32, 100.0)];
    let table = report::comparison("confidant", &ours, "peer", &peer);
    assert!(
        table.contains("| 1 | 32 | 2000 | 100 | **20.0×**"),
        "{table}"
    );
    assert_eq!(table.lines().count(), 3, "only points both measured");
    let svg = report::plot_svg(
        "t<1>",
        &[
            Series {
                label: "confidant",
                points: &ours,
            },
            Series {
                label: "peer",
                points: &peer,
            },
        ],
    );
    assert!(svg.starts_with("<svg") && svg.trim_end().ends_with("</svg>"));
    assert!(svg.contains("t&lt;1&gt;") && svg.contains("peer batch 1"));
    assert!(!svg.contains("NaN") && !svg.contains("\"inf"), "{svg}");
}

fn target(protocol: super::Protocol) -> super::Target {
    super::Target {
        addr: "https://127.0.0.1:1".into(),
        ca_pem: None,
        policy: None,
        api_key: None,
        purpose: None,
        protocol,
        model: "minilm".into(),
        fallback_range: (0.0, 1.0),
        receipts: false,
    }
}

fn text_shape() -> super::target::ModelShape {
    super::target::ModelShape {
        input_name: "text".into(),
        takes_texts: true,
        min: Vec::new(),
        max: Vec::new(),
        ranges_from: "ListModels",
    }
}

fn texts(v: &[&str]) -> Vec<String> {
    v.iter().map(|t| (*t).to_string()).collect()
}

#[test]
fn text_requests_take_the_texts_in_turn_batch_per_request() {
    use super::target::Requests;
    let t = texts(&["a", "", "日本語", "d", "e"]);
    let shape = text_shape();
    let Requests::Confidant(pool) =
        Requests::of_texts(&target(super::Protocol::Confidant), &shape, 2, &t).unwrap()
    else {
        panic!("confidant.v1 requests expected");
    };
    // Every text equally often: lcm(5, 2) = 10 texts in 5 requests.
    let sent: Vec<Vec<String>> = pool.iter().map(|r| r.texts.clone()).collect();
    assert_eq!(
        sent,
        [
            texts(&["a", ""]),
            texts(&["日本語", "d"]),
            texts(&["e", "a"]),
            texts(&["", "日本語"]),
            texts(&["d", "e"])
        ]
    );
    // 6 texts at 4 per request: lcm 12, 3 requests.
    let six = texts(&["1", "2", "3", "4", "5", "6"]);
    let Requests::Confidant(pool) =
        Requests::of_texts(&target(super::Protocol::Confidant), &shape, 4, &six).unwrap()
    else {
        panic!("confidant.v1 requests expected");
    };
    assert_eq!(pool.len(), 3);
    assert_eq!(pool[2].texts, texts(&["3", "4", "5", "6"]));
    // Where equal counts would take too many slots, every text once.
    let many: Vec<String> = (0..10_007).map(|i| i.to_string()).collect();
    let Requests::Confidant(pool) =
        Requests::of_texts(&target(super::Protocol::Confidant), &shape, 64, &many).unwrap()
    else {
        panic!("confidant.v1 requests expected");
    };
    assert_eq!(pool.len(), 10_007usize.div_ceil(64));
    assert!(
        pool.iter()
            .all(|r| r.input.is_none() && r.model == "minilm")
    );
    // A batch larger than the list repeats the texts within one request.
    let Requests::Confidant(pool) =
        Requests::of_texts(&target(super::Protocol::Confidant), &shape, 7, &t[..2]).unwrap()
    else {
        panic!("confidant.v1 requests expected");
    };
    assert_eq!(pool.len(), 2);
    assert_eq!(pool[0].texts, texts(&["a", "", "a", "", "a", "", "a"]));
    assert_eq!(pool[1].texts, texts(&["", "a", "", "a", "", "a", ""]));
    assert!(Requests::of_texts(&target(super::Protocol::Oip), &shape, 1, &[]).is_err());
}

#[test]
fn oip_text_requests_are_bytes_tensors_the_server_decodes() {
    use super::target::Requests;
    let t = texts(&["hello", "", "Schöne Grüße"]);
    let Requests::Oip(pool) =
        Requests::of_texts(&target(super::Protocol::Oip), &text_shape(), 3, &t).unwrap()
    else {
        panic!("OIP requests expected");
    };
    assert_eq!(pool.len(), 1);
    let r = &pool[0];
    let [input] = r.inputs.as_slice() else {
        panic!("one input expected")
    };
    assert_eq!(
        (input.name.as_str(), input.datatype.as_str()),
        ("text", "BYTES")
    );
    assert_eq!(input.shape, [3, 1]);
    // What the server's decoder (the one tritonclient's requests go through) reads back.
    let decoded = crate::oip::tensor::decode_bytes(&crate::oip::tensor::InputTensor {
        name: &input.name,
        datatype: &input.datatype,
        shape: &input.shape,
        contents: None,
        raw: Some(&r.raw_input_contents[0]),
    })
    .unwrap();
    let want: Vec<Vec<u8>> = t.iter().map(|s| s.as_bytes().to_vec()).collect();
    assert_eq!(decoded, want);
}

#[test]
fn texts_for_a_numeric_model_and_no_texts_for_a_text_model_are_refused() {
    let config = |texts: Vec<String>| super::BenchConfig {
        target: target(super::Protocol::Oip),
        batches: vec![1],
        concurrencies: vec![1],
        window: Duration::from_secs(1),
        warmup: Duration::from_secs(1),
        max_trials: 3,
        connections: None,
        seed: 0,
        texts,
    };
    let numeric = super::target::ModelShape {
        input_name: "input__0".into(),
        takes_texts: false,
        min: vec![0.0; 30],
        max: vec![1.0; 30],
        ranges_from: "ListModels",
    };
    let e = super::check_inputs(&config(texts(&["x"])), &numeric).unwrap_err();
    assert!(
        e.to_string()
            .contains("takes numeric rows (30 features), not texts"),
        "{e}"
    );
    let e = super::check_inputs(&config(Vec::new()), &text_shape()).unwrap_err();
    assert!(
        e.to_string()
            .contains("is a text model: give the texts to send with --text or --input-jsonl"),
        "{e}"
    );
    super::check_inputs(&config(texts(&["x"])), &text_shape()).unwrap();
    super::check_inputs(&config(Vec::new()), &numeric).unwrap();
}

#[test]
fn with_receipts_every_request_asks_for_one_and_an_answer_without_is_an_error() {
    let mut t = target(super::Protocol::Oip);
    let plain = super::target::Headers::of(&t).unwrap();
    t.receipts = true;
    let asking = super::target::Headers::of(&t).unwrap();
    let r = asking.request(());
    let salt = r
        .metadata()
        .get(crate::receipt::SALT_HEADER)
        .expect("the receipt header")
        .to_str()
        .unwrap();
    assert_eq!(crate::receipt::parse_salt(salt).unwrap().len(), 32);
    assert!(
        plain
            .request(())
            .metadata()
            .get(crate::receipt::SALT_HEADER)
            .is_none()
    );
    let e = super::target::receipt_check(&asking, false).unwrap_err();
    assert_eq!(e.code(), tonic::Code::Internal);
    assert!(e.message().contains("no receipt"), "{e}");
    assert!(super::target::receipt_check(&asking, true).is_ok());
    assert!(super::target::receipt_check(&plain, false).is_ok());
}
