use super::*;

struct NoEngines;
impl ModelGauges for NoEngines {
    fn gauges(&self) -> Vec<EngineGauge> {
        vec![EngineGauge {
            model: "m".into(),
            version: "1.2".into(),
            queue_depth: 3,
            exec: Arc::new({
                let e = ExecMetrics::default();
                e.record(4);
                e.record(1);
                e
            }),
        }]
    }
}

fn value(text: &str, series: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(series).and_then(|r| r.strip_prefix(' ')))
        .unwrap_or_else(|| panic!("no series {series} in\n{text}"))
        .parse()
        .unwrap()
}

#[test]
fn histogram_buckets_are_cumulative() {
    let h = Histogram::new(&LATENCY_BUCKETS);
    h.observe(0.000_07);
    h.observe(0.003);
    h.observe(100.0);
    let mut out = String::new();
    h.render(&mut out, "x", "model=\"m\"");
    assert!(
        out.contains("x_bucket{model=\"m\",le=\"0.0001\"} 1\n"),
        "{out}"
    );
    assert!(
        out.contains("x_bucket{model=\"m\",le=\"0.005\"} 2\n"),
        "{out}"
    );
    assert!(out.contains("x_bucket{model=\"m\",le=\"5\"} 2\n"), "{out}");
    assert!(
        out.contains("x_bucket{model=\"m\",le=\"+Inf\"} 3\n"),
        "{out}"
    );
    assert!(out.contains("x_count{model=\"m\"} 3\n"), "{out}");
    assert!((value(&out, "x_sum{model=\"m\"}") - 100.00307).abs() < 1e-9);
}

#[test]
fn requests_render_under_our_names_and_triton_names() {
    let m = Metrics::new();
    let s = m.model("m");
    let ok = RequestSample {
        code: 0,
        latency: Duration::from_micros(300),
        rows: 4,
        engine: Some((Duration::from_micros(20), Duration::from_micros(100))),
        flagged_rows: 1,
        epsilon: 0.5,
        tokens: 0,
        padded_tokens: 0,
    };
    s.record(&ok);
    s.record(&RequestSample { rows: 1, ..ok });
    s.record(&RequestSample {
        code: tonic::Code::ResourceExhausted as i32,
        engine: None,
        rows: 0,
        flagged_rows: 0,
        epsilon: 0.0,
        ..ok
    });
    m.model(UNKNOWN_MODEL).record(&RequestSample {
        code: tonic::Code::NotFound as i32,
        ..Default::default()
    });
    let text = m.render(&NoEngines);
    assert_eq!(
        value(&text, "confidant_requests_total{model=\"m\",code=\"OK\"}"),
        2.0
    );
    assert_eq!(
        value(
            &text,
            "confidant_requests_total{model=\"m\",code=\"RESOURCE_EXHAUSTED\"}"
        ),
        1.0
    );
    assert_eq!(
        value(
            &text,
            "confidant_requests_total{model=\"_unknown\",code=\"NOT_FOUND\"}"
        ),
        1.0
    );
    assert_eq!(
        value(
            &text,
            "nv_inference_request_success{model=\"m\",version=\"1.2\"}"
        ),
        2.0
    );
    assert_eq!(
        value(
            &text,
            "nv_inference_request_failure{model=\"m\",version=\"1.2\"}"
        ),
        1.0
    );
    assert_eq!(
        value(&text, "nv_inference_count{model=\"m\",version=\"1.2\"}"),
        5.0
    );
    assert_eq!(
        value(
            &text,
            "nv_inference_exec_count{model=\"m\",version=\"1.2\"}"
        ),
        2.0
    );
    assert_eq!(
        value(
            &text,
            "nv_inference_queue_duration_us{model=\"m\",version=\"1.2\"}"
        ),
        40.0
    );
    assert_eq!(
        value(
            &text,
            "nv_inference_compute_infer_duration_us{model=\"m\",version=\"1.2\"}"
        ),
        200.0
    );
    assert_eq!(value(&text, "confidant_queue_depth{model=\"m\"}"), 3.0);
    assert_eq!(
        value(
            &text,
            "confidant_sensitivity_flagged_rows_total{model=\"m\"}"
        ),
        2.0
    );
    assert_eq!(
        value(&text, "confidant_privacy_epsilon_spent_total{model=\"m\"}"),
        1.0
    );
    assert_eq!(value(&text, "confidant_batch_rows_count{model=\"m\"}"), 2.0);
    assert!(!text.contains("nv_inference_request_success{model=\"_unknown\""));
    // Every sample line is `name{labels} number`, every family has HELP and TYPE.
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        let (_, v) = line.rsplit_once(' ').unwrap();
        assert!(v.parse::<f64>().is_ok(), "{line}");
    }
}

#[test]
fn label_values_are_escaped() {
    assert_eq!(escape("a\"b\\c\nd"), "a\\\"b\\\\c\\nd");
}

#[test]
fn receipts_render_once_the_server_has_a_signer() {
    let m = Metrics::new();
    let before = m.render(&NoEngines);
    assert!(!before.contains("confidant_receipts_total"), "{before}");
    let n = Arc::new(std::sync::atomic::AtomicU64::new(5));
    let read = Arc::clone(&n);
    m.receipts_from(move || ReceiptSeries {
        receipts: read.load(std::sync::atomic::Ordering::Relaxed),
        signatures_nonce_ahead: 2,
        signatures_whole: 1,
    });
    let text = m.render(&NoEngines);
    assert_eq!(value(&text, "confidant_receipts_total"), 5.0);
    assert_eq!(
        value(&text, "confidant_receipt_signatures_total{nonce=\"ahead\"}"),
        2.0
    );
    assert_eq!(
        value(&text, "confidant_receipt_signatures_total{nonce=\"whole\"}"),
        1.0
    );
    assert!(
        text.contains("# TYPE confidant_receipts_total counter\n"),
        "{text}"
    );
    // Read at each scrape.
    n.store(9, std::sync::atomic::Ordering::Relaxed);
    assert_eq!(
        value(&m.render(&NoEngines), "confidant_receipts_total"),
        9.0
    );
}
