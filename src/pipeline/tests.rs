//! The pipeline's fail-closed guards (issue 16), over the embedded demo model on the CPU, a
//! real key store, budgets and audit log. Each test names what the code before the change
//! did instead.

use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use tonic::Code;
use tonic::metadata::MetadataValue;

use super::*;
use crate::audit::{AuditConfig, AuditLog};
use crate::engine::{BatchConfig, Mlp, Provenance, ScreeningSpec, ServingOptions};
use crate::guard::{NewKey, RateDefaults};
use crate::privacy::budget::BudgetConfig;
use crate::storage::Database;

struct Harness {
    dir: tempfile::TempDir,
    db: Arc<Database>,
    guard: Arc<Guard>,
    registry: Registry,
    audit: Arc<AuditLog>,
    api_key: String,
}

/// Screening that flags every row: the manifest's noise, a threshold no score stays under.
fn flag_everything(action: ScreenAction) -> ScreeningSpec {
    ScreeningSpec {
        copies: 8,
        noise: 0.005,
        threshold: 1e-12,
        action,
    }
}

fn harness(options: ServingOptions, audit: AuditConfig) -> Harness {
    let dir = tempfile::tempdir().unwrap();
    let db = Arc::new(Database::open_in(dir.path()).unwrap());
    let guard = Arc::new(Guard::new(Arc::clone(&db), RateDefaults::default()));
    let (_, secret) = guard
        .keys()
        .create(
            &NewKey {
                principal: "alice".into(),
                scopes: [Scope::Predict, Scope::Explain].into(),
                purposes: ["research".to_string()].into(),
                rpm: None,
                rpd: None,
            },
            unix_now(),
        )
        .unwrap();
    let config = crate::demo::config().unwrap();
    let mlp =
        Mlp::from_safetensors(&config, crate::demo::WEIGHTS, &candle_core::Device::Cpu).unwrap();
    let registry = Registry::new();
    registry
        .insert_with(
            config,
            Provenance {
                weights_sha256: String::new(),
                publisher_key_id: String::new(),
                manifest_sha256: [0; 32],
            },
            mlp,
            BatchConfig::default(),
            options,
        )
        .unwrap();
    let audit = Arc::new(
        AuditLog::open(
            &dir.path().join("audit"),
            crate::audit::AuditKeys {
                signing: ed25519_dalek::SigningKey::from_bytes(&[7; 32]),
                input_hmac: zeroize::Zeroizing::new([1; 32]),
                records: zeroize::Zeroizing::new([3; 32]),
            },
            audit,
        )
        .unwrap(),
    );
    Harness {
        api_key: secret.secret_str().to_string(),
        dir,
        db,
        guard,
        registry,
        audit,
    }
}

fn quick_audit() -> AuditConfig {
    AuditConfig {
        group_linger: Duration::ZERO,
        ..AuditConfig::default()
    }
}

impl Harness {
    /// A ready pipeline with budgets (and so an OS-seeded noise generator).
    fn pipeline(&self) -> Pipeline {
        self.bare_pipeline()
            .with_privacy(Budgets::new(Arc::clone(&self.db), BudgetConfig::default()))
            .unwrap()
    }

    /// A ready pipeline without budgets or noise generator.
    fn bare_pipeline(&self) -> Pipeline {
        Pipeline::new(
            self.registry.clone(),
            Arc::clone(&self.guard),
            Some(Arc::clone(&self.audit)),
            Arc::new(AtomicBool::new(true)),
            4096,
        )
    }

    fn ctx(&self) -> CallContext {
        let mut ctx = CallContext::default();
        ctx.metadata
            .insert("x-api-key", self.api_key.parse().unwrap());
        ctx
    }

    /// Every audit line written so far.
    /// Every audit record, events decrypted (under the records key `[3; 32]`), one JSON a
    /// line.
    fn audit_text(&self) -> String {
        let mut out = Vec::new();
        let mut opener = crate::audit::seal::Opener::new(zeroize::Zeroizing::new([3; 32]));
        crate::audit::export_dir(&self.dir.path().join("audit"), &[], &mut opener, &mut out)
            .unwrap();
        String::from_utf8(out).unwrap()
    }
}

fn call(model: &str, rows: &[Vec<f32>]) -> PredictCall {
    PredictCall {
        model: model.into(),
        version: String::new(),
        shape: vec![rows.len() as u64, rows.first().map_or(0, Vec::len) as u64],
        values: rows.concat(),
        texts: Vec::new(),
        embeddings_only: false,
        api: Default::default(),
    }
}

fn sample() -> Vec<f32> {
    crate::demo::SAMPLE_ROW.to_vec()
}

/// The normalization mean: a row the demo model is not sure about.
fn middle_row() -> Vec<f32> {
    crate::demo::config()
        .unwrap()
        .input
        .normalization
        .unwrap()
        .mean
}

fn flagged_metric(p: &Pipeline, registry: &Registry) -> f64 {
    let text = p.metrics().render(registry);
    text.lines()
        .filter(|l| l.starts_with("confidant_sensitivity_flagged_rows_total{"))
        .map(|l| l.rsplit_once(' ').unwrap().1.parse::<f64>().unwrap())
        .sum()
}

/// Before the change, a 1 MiB model name was answered NOT_FOUND with the name in the
/// message and copied into the audit record (20 calls grew the log by 21 MB). Now every
/// caller-chosen name is refused by its rule with INVALID_ARGUMENT, echoed by length only,
/// and the record holds none of it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_names_are_refused_before_they_are_recorded_or_echoed() {
    let h = harness(ServingOptions::default(), quick_audit());
    let p = h.pipeline();
    let huge = "m".repeat(1 << 20);
    let cases: Vec<(PredictCall, CallContext)> = vec![
        (call(&huge, &[sample()]), h.ctx()),
        (call("demo\n{\"forged\":1}", &[sample()]), h.ctx()),
        (
            PredictCall {
                version: "v".repeat(4096),
                ..call("demo", &[sample()])
            },
            h.ctx(),
        ),
        (call("demo", &[sample()]), {
            let mut ctx = h.ctx();
            ctx.metadata.insert(
                "x-purpose",
                MetadataValue::try_from("p".repeat(8192)).unwrap(),
            );
            ctx
        }),
        (call("demo", &[sample()]), {
            let mut ctx = h.ctx();
            ctx.metadata.insert(
                "x-purpose",
                MetadataValue::from_static("a purpose; with=junk"),
            );
            ctx
        }),
    ];
    for (c, ctx) in cases {
        let err = p.predict(&ctx, c.clone()).await.err().expect("refused");
        assert_eq!(err.code(), Code::InvalidArgument, "{}", err.message());
        assert!(err.message().len() < 200, "{}", err.message());
        assert!(!err.message().contains("mmmm") && !err.message().contains("forged"));
        let err = p.explain(&ctx, c, None).await.err().expect("refused");
        assert_eq!(err.code(), Code::InvalidArgument, "{}", err.message());
    }
    // An unknown model with a lawful name is still NOT_FOUND, and named.
    let err = p
        .predict(&h.ctx(), call("nope", &[sample()]))
        .await
        .err()
        .unwrap();
    assert_eq!(err.code(), Code::NotFound);
    h.audit.close();
    let audit = h.audit_text();
    assert!(
        audit.len() < 16 * 1024,
        "audit log grew to {} bytes",
        audit.len()
    );
    assert!(!audit.contains("mmmm") && !audit.contains("vvvv") && !audit.contains("pppp"));
    assert!(!audit.contains("forged") && !audit.contains("junk"));
    assert!(audit.contains("\"nope\""));
}

/// Before the change Explain never screened: a row that Predict refuses under
/// `action = "reject"` was explained. Now it is refused the same way, spending nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn explain_refuses_what_predict_screening_refuses() {
    let h = harness(
        ServingOptions {
            screening: Some(flag_everything(ScreenAction::Reject)),
            privacy: None,
        },
        quick_audit(),
    );
    let p = h.pipeline();
    let rows = [middle_row()];
    let predicted = p.predict(&h.ctx(), call("demo", &rows)).await.err();
    let predicted = predicted.expect("the setup flags the row: Predict refuses it");
    assert_eq!(predicted.code(), Code::InvalidArgument);
    assert!(predicted.message().contains("sensitivity"));
    let explained = p.explain(&h.ctx(), call("demo", &rows), None).await.err();
    let explained = explained.expect("Explain refuses it too");
    assert_eq!(explained.code(), Code::InvalidArgument);
    assert_eq!(explained.message(), predicted.message());
    h.audit.close();
    let audit = h.audit_text();
    let explain_line = audit
        .lines()
        .find(|l| l.contains("\"rpc\":\"explain\""))
        .unwrap();
    assert!(
        explain_line.contains("\"flagged_rows\":[0]"),
        "{explain_line}"
    );
}

/// Before the change a flagged row was explained with no sign of the flag. Now, under
/// `action = "flag"`, the explanation reports the rows Predict would flag.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn explain_reports_flagged_rows_as_predict_does() {
    let h = harness(
        ServingOptions {
            screening: Some(flag_everything(ScreenAction::Flag)),
            privacy: None,
        },
        quick_audit(),
    );
    let p = h.pipeline();
    let rows = [middle_row(), middle_row()];
    let predicted = p.predict(&h.ctx(), call("demo", &rows)).await.unwrap();
    assert_eq!(
        predicted.flagged_rows,
        vec![0, 1],
        "the setup flags both rows"
    );
    let explained = p
        .explain(&h.ctx(), call("demo", &rows), None)
        .await
        .unwrap();
    assert_eq!(explained.flagged_rows, vec![0, 1]);
    assert_eq!(explained.attributions.len(), 2);
}

/// Before the change one request could ask for 4096 rows × 16,320 path points, computed
/// on the unbounded blocking pool. Now rows × the per-row worst case is capped per request
/// (RESOURCE_EXHAUSTED, nothing spent), and explanations run on a bounded pool that refuses
/// a request when every worker is busy.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn explain_work_is_capped_per_request_and_runs_on_a_bounded_pool() {
    let h = harness(ServingOptions::default(), quick_audit());
    let limits = ExplainLimits {
        max_points_per_request: 2 * MAX_POINTS_PER_ROW,
        workers: 1,
    };
    let p = h.pipeline().with_explain_limits(limits);
    let used = |h: &Harness| h.guard.limiter().used_today("alice", unix_now()).unwrap();
    let before = used(&h);
    let err = p
        .explain(&h.ctx(), call("demo", &vec![sample(); 3]), None)
        .await
        .err()
        .expect("three rows exceed a two-row cap");
    assert_eq!(err.code(), Code::ResourceExhausted);
    assert!(
        err.message().contains("max_points_per_request"),
        "{}",
        err.message()
    );
    assert_eq!(used(&h), before, "a refused explanation spends nothing");
    // Two rows fit.
    p.explain(&h.ctx(), call("demo", &vec![sample(); 2]), None)
        .await
        .unwrap();
    // Every worker busy: refused, and refunded.
    let busy = Arc::clone(&p.explain_slots).try_acquire_owned().unwrap();
    let before = used(&h);
    let err = p
        .explain(&h.ctx(), call("demo", &[sample()]), None)
        .await
        .err()
        .expect("no free worker");
    assert_eq!(err.code(), Code::ResourceExhausted);
    assert!(err.message().contains("busy"), "{}", err.message());
    assert_eq!(used(&h), before);
    drop(busy);
    p.explain(&h.ctx(), call("demo", &[sample()]), None)
        .await
        .unwrap();
    // The defaults hold 64 rows, and leave at least half the cores to Predict.
    let d = ExplainLimits::default();
    assert_eq!(d.max_points_per_request, 64 * MAX_POINTS_PER_ROW);
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    assert!(d.workers >= 1 && (cores == 1 || d.workers < cores));
}

/// Before the change a failed audit write was logged and Predict went on answering with a
/// broken chain. Now Predict is refused (UNAVAILABLE) while the log cannot be written, and
/// answers again once the writer's retry succeeds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn predict_stops_while_the_audit_log_cannot_be_written() {
    let h = harness(
        ServingOptions::default(),
        AuditConfig {
            segment_records: 2,
            ..quick_audit()
        },
    );
    let p = h.pipeline();
    let audit_dir = h.dir.path().join("audit");
    // The next segment is a device on which every write fails (ENOSPC).
    let next = crate::audit::segment_path(&audit_dir, 2);
    std::os::unix::fs::symlink("/dev/full", &next).unwrap();
    let row = [sample()];
    let mut refused = false;
    for _ in 0..50 {
        match p.predict(&h.ctx(), call("demo", &row)).await {
            Ok(_) => tokio::time::sleep(Duration::from_millis(20)).await,
            Err(s) => {
                assert_eq!(s.code(), Code::Unavailable, "{}", s.message());
                assert!(s.message().contains("audit log"), "{}", s.message());
                refused = true;
                break;
            }
        }
    }
    assert!(
        refused,
        "Predict kept answering while the audit log could not be written"
    );
    assert!(!h.audit.is_writable());
    // The disk is back: the writer's retry reopens the segment and writes what it kept.
    std::fs::remove_file(&next).unwrap();
    let mut served = false;
    for _ in 0..100 {
        tokio::time::sleep(Duration::from_millis(50)).await;
        if p.predict(&h.ctx(), call("demo", &row)).await.is_ok() {
            served = true;
            break;
        }
    }
    assert!(
        served,
        "Predict did not resume once the audit log was writable"
    );
    h.audit.close();
    let report = crate::audit::verify_dir(&audit_dir, &[]);
    assert!(report.first_failure.is_none(), "{:?}", report.first_failure);
    assert!(report.records >= 3, "{}", report.records);
}

/// Before the change the pipeline held a generator seeded with zeros until `with_privacy`
/// replaced it; a pipeline without one now refuses to release noise, naming the missing
/// generator.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pipeline_without_a_seeded_generator_releases_no_noise() {
    let h = harness(
        ServingOptions {
            screening: None,
            privacy: Some(PrivacyPolicy::NoisyArgmax {
                epsilon: 1.0,
                sensitivity: None,
            }),
        },
        quick_audit(),
    );
    assert!(h.bare_pipeline().dp_rng.is_none());
    let err = h
        .bare_pipeline()
        .predict(&h.ctx(), call("demo", &[sample()]))
        .await
        .err()
        .expect("no noise without a seeded generator");
    assert_eq!(err.code(), Code::Internal);
    assert!(h.pipeline().dp_rng.is_some());
    h.pipeline()
        .predict(&h.ctx(), call("demo", &[sample()]))
        .await
        .unwrap();
}

/// Before the change `/metrics` counted every flagged row, even for a model whose private
/// output policy keeps flags out of the response. Now only models whose policy shows flags
/// count them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_do_not_count_flags_that_a_private_policy_hides() {
    let rows = [middle_row(), middle_row()];
    // Control: without a policy, flags are public and counted.
    let open = harness(
        ServingOptions {
            screening: Some(flag_everything(ScreenAction::Flag)),
            privacy: None,
        },
        quick_audit(),
    );
    let p = open.pipeline();
    let out = p.predict(&open.ctx(), call("demo", &rows)).await.unwrap();
    assert_eq!(out.flagged_rows.len(), 2);
    assert_eq!(flagged_metric(&p, &open.registry), 2.0);

    let private = harness(
        ServingOptions {
            screening: Some(flag_everything(ScreenAction::Flag)),
            privacy: Some(PrivacyPolicy::NoisyArgmax {
                epsilon: 1.0,
                sensitivity: None,
            }),
        },
        quick_audit(),
    );
    let p = private.pipeline();
    let out = p
        .predict(&private.ctx(), call("demo", &rows))
        .await
        .unwrap();
    assert!(out.flagged_rows.is_empty(), "the response hides the flags");
    assert_eq!(flagged_metric(&p, &private.registry), 0.0);
    // The audit record keeps them.
    private.audit.close();
    assert!(private.audit_text().contains("\"flagged_rows\":[0,1]"));
}
