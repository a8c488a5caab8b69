//! The Open Inference Protocol over real loopback gRPC with TLS: the real `confidant` binary,
//! the generated `inference` client, and the confidant.v1 client as the reference.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

mod common;

use common::{Server, confidant, fixtures, stderr};
use confidant::proto::inference as pb;
use pb::grpc_inference_service_client::GrpcInferenceServiceClient;
use pb::model_infer_request::{InferInputTensor, InferRequestedOutputTensor};
use tonic::Code;
use tonic::transport::Channel;

fn tmp() -> tempfile::TempDir {
    tempfile::tempdir().expect("tempdir")
}

async fn oip(server: &Server) -> GrpcInferenceServiceClient<Channel> {
    GrpcInferenceServiceClient::new(server.channel().await)
}

fn authed<T>(message: T, key: &str) -> tonic::Request<T> {
    let mut r = tonic::Request::new(message);
    r.metadata_mut().insert("x-api-key", key.parse().unwrap());
    r
}

fn raw_f32(values: &[f32]) -> Vec<u8> {
    values.iter().flat_map(|v| v.to_le_bytes()).collect()
}

fn input(name: &str, datatype: &str, shape: Vec<i64>) -> InferInputTensor {
    InferInputTensor {
        name: name.into(),
        datatype: datatype.into(),
        shape,
        ..Default::default()
    }
}

/// A raw FP32 request for `rows` of the demo model.
fn raw_request(model: &str, rows: &[Vec<f32>]) -> pb::ModelInferRequest {
    let flat: Vec<f32> = rows.iter().flatten().copied().collect();
    pb::ModelInferRequest {
        model_name: model.into(),
        id: "req-1".into(),
        inputs: vec![input(
            "input__0",
            "FP32",
            vec![rows.len() as i64, rows[0].len() as i64],
        )],
        raw_input_contents: vec![raw_f32(&flat)],
        ..Default::default()
    }
}

fn decode_raw_output(resp: &pb::ModelInferResponse) -> Vec<f32> {
    assert_eq!(resp.raw_output_contents.len(), 1);
    resp.raw_output_contents[0]
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
        .collect()
}

fn demo_rows() -> Vec<Vec<f32>> {
    let text = std::fs::read_to_string(fixtures().join("breast_cancer_test.csv")).unwrap();
    text.lines()
        .skip(1)
        .take(5)
        .map(|l| l.split(',').take(30).map(|c| c.parse().unwrap()).collect())
        .collect()
}

async fn expect_code<T: std::fmt::Debug>(
    result: Result<tonic::Response<T>, tonic::Status>,
    code: Code,
    needles: &[&str],
) {
    let status = result.expect_err("expected a refusal");
    assert_eq!(status.code(), code, "{status:?}");
    for n in needles {
        assert!(status.message().contains(n), "{n:?} not in {status:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_rpc_answers_and_infer_matches_confidant_v1() {
    let dir = tmp();
    let server = Server::start(&["--data-dir", dir.path().join("data").to_str().unwrap()]);
    let key = server.api_key.clone().unwrap();
    let mut c = oip(&server).await;

    // Live and ready need no key (as gRPC health); metadata does.
    let live = c.server_live(pb::ServerLiveRequest {}).await.unwrap();
    assert!(live.into_inner().live);
    let ready = c.server_ready(pb::ServerReadyRequest {}).await.unwrap();
    assert!(ready.into_inner().ready);
    expect_code(
        c.server_metadata(pb::ServerMetadataRequest {}).await,
        Code::Unauthenticated,
        &[],
    )
    .await;
    let meta = c
        .server_metadata(authed(pb::ServerMetadataRequest {}, &key))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(meta.name, "confidant");
    assert_eq!(meta.version, env!("CARGO_PKG_VERSION"));

    // Model readiness and metadata.
    let ready = |name: &str, version: &str| pb::ModelReadyRequest {
        name: name.into(),
        version: version.into(),
    };
    expect_code(
        c.model_ready(ready("demo", "")).await,
        Code::Unauthenticated,
        &[],
    )
    .await;
    for (name, version, want) in [
        ("demo", "", true),
        ("demo", "1.0.0", true),
        ("demo", "9.9.9", false),
        ("nope", "", false),
    ] {
        let r = c
            .model_ready(authed(ready(name, version), &key))
            .await
            .unwrap();
        assert_eq!(r.into_inner().ready, want, "{name}@{version}");
    }
    let md = c
        .model_metadata(authed(
            pb::ModelMetadataRequest {
                name: "demo".into(),
                version: String::new(),
            },
            &key,
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(md.name, "demo");
    assert_eq!(md.versions, ["1.0.0"]);
    assert_eq!(md.platform, "confidant_mlp");
    assert_eq!(md.inputs.len(), 1);
    assert_eq!(
        (md.inputs[0].name.as_str(), md.inputs[0].datatype.as_str()),
        ("input__0", "FP32")
    );
    assert_eq!(md.inputs[0].shape, [-1, 30]);
    assert_eq!(md.outputs[0].name, "output__0");
    assert_eq!(md.outputs[0].shape, [-1, 2]);
    expect_code(
        c.model_metadata(authed(
            pb::ModelMetadataRequest {
                name: "nope".into(),
                version: String::new(),
            },
            &key,
        ))
        .await,
        Code::NotFound,
        &[],
    )
    .await;

    // Raw in, raw out; the same numbers as confidant.v1 Predict for the same rows.
    let rows = demo_rows();
    let mut reference = server.client().await;
    let want: Vec<f32> = reference
        .predict("demo", &rows)
        .await
        .unwrap()
        .outputs
        .concat();
    let mut req = raw_request("demo", &rows);
    req.outputs = vec![InferRequestedOutputTensor {
        name: "output__0".into(),
        ..Default::default()
    }];
    let resp = c.model_infer(authed(req, &key)).await.unwrap().into_inner();
    assert_eq!(resp.model_name, "demo");
    assert_eq!(resp.model_version, "1.0.0");
    assert_eq!(resp.id, "req-1", "the request id is echoed");
    assert_eq!(resp.outputs.len(), 1);
    assert_eq!(resp.outputs[0].name, "output__0");
    assert_eq!(resp.outputs[0].datatype, "FP32");
    assert_eq!(resp.outputs[0].shape, [rows.len() as i64, 2]);
    assert_eq!(decode_raw_output(&resp), want);
    assert!(resp.parameters.contains_key("confidant_request_id"));

    // Typed in, typed out.
    let flat: Vec<f32> = rows.iter().flatten().copied().collect();
    let mut typed = input("input__0", "FP32", vec![rows.len() as i64, 30]);
    typed.contents = Some(pb::InferTensorContents {
        fp32_contents: flat.clone(),
        ..Default::default()
    });
    let req = pb::ModelInferRequest {
        model_name: "demo".into(),
        inputs: vec![typed],
        ..Default::default()
    };
    let resp = c.model_infer(authed(req, &key)).await.unwrap().into_inner();
    assert!(resp.raw_output_contents.is_empty());
    assert_eq!(
        resp.outputs[0].contents.as_ref().unwrap().fp32_contents,
        want
    );

    // FP64 holding exact f32 values converts; the outputs are the same.
    let mut fp64 = raw_request("demo", &rows);
    fp64.inputs[0].datatype = "FP64".into();
    fp64.raw_input_contents = vec![
        flat.iter()
            .flat_map(|&v| f64::from(v).to_le_bytes())
            .collect(),
    ];
    let resp = c
        .model_infer(authed(fp64.clone(), &key))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(decode_raw_output(&resp), want);
    // One value that f32 cannot hold makes the whole request fail, naming tensor and type.
    let mut bytes = fp64.raw_input_contents[0].clone();
    bytes[8..16].copy_from_slice(&0.1f64.to_le_bytes());
    fp64.raw_input_contents = vec![bytes];
    expect_code(
        c.model_infer(authed(fp64, &key)).await,
        Code::InvalidArgument,
        &["input__0", "FP64", "element 1"],
    )
    .await;

    // Health knows the service by its protocol name.
    let mut health = tonic_health::pb::health_client::HealthClient::new(server.channel().await);
    let status = health
        .check(tonic_health::pb::HealthCheckRequest {
            service: "inference.GRPCInferenceService".into(),
        })
        .await
        .unwrap()
        .into_inner()
        .status;
    assert_eq!(
        status,
        tonic_health::pb::health_check_response::ServingStatus::Serving as i32
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_requests_get_the_pipelines_codes() {
    let dir = tmp();
    let server = Server::start(&["--data-dir", dir.path().join("data").to_str().unwrap()]);
    let key = server.api_key.clone().unwrap();
    let mut c = oip(&server).await;
    let rows = vec![confidant::demo::SAMPLE_ROW.to_vec()];

    // No key: UNAUTHENTICATED, even when the tensors are also wrong; a wrong key too.
    expect_code(
        c.model_infer(raw_request("demo", &rows)).await,
        Code::Unauthenticated,
        &[],
    )
    .await;
    let mut bad = raw_request("demo", &rows);
    bad.raw_input_contents = vec![vec![0; 3]];
    expect_code(c.model_infer(bad).await, Code::Unauthenticated, &[]).await;
    expect_code(
        c.model_infer(authed(raw_request("demo", &rows), "ck_wrong"))
            .await,
        Code::Unauthenticated,
        &[],
    )
    .await;

    // The `authorization: Bearer` form works as on confidant.v1.
    let mut bearer = tonic::Request::new(raw_request("demo", &rows));
    bearer
        .metadata_mut()
        .insert("authorization", format!("Bearer {key}").parse().unwrap());
    c.model_infer(bearer).await.unwrap();

    // Wrong byte length.
    let mut req = raw_request("demo", &rows);
    req.raw_input_contents[0].pop();
    expect_code(
        c.model_infer(authed(req, &key)).await,
        Code::InvalidArgument,
        &["input__0", "FP32", "needs 120 bytes", "got 119"],
    )
    .await;
    // Shape and bytes agree, but the width is not the model's.
    let mut req = raw_request("demo", &[rows[0][..29].to_vec()]);
    req.inputs[0].shape = vec![1, 29];
    expect_code(
        c.model_infer(authed(req, &key)).await,
        Code::InvalidArgument,
        &["29 features", "expects 30"],
    )
    .await;
    // Wrong input name, wrong output name, two inputs, unsupported datatype.
    let mut req = raw_request("demo", &rows);
    req.inputs[0].name = "INPUT0".into();
    expect_code(
        c.model_infer(authed(req, &key)).await,
        Code::InvalidArgument,
        &["\"INPUT0\"", "\"input__0\""],
    )
    .await;
    let mut req = raw_request("demo", &rows);
    req.outputs = vec![InferRequestedOutputTensor {
        name: "OUTPUT0".into(),
        ..Default::default()
    }];
    expect_code(
        c.model_infer(authed(req, &key)).await,
        Code::InvalidArgument,
        &["\"OUTPUT0\"", "\"output__0\""],
    )
    .await;
    let mut req = raw_request("demo", &rows);
    req.inputs.push(req.inputs[0].clone());
    req.raw_input_contents
        .push(req.raw_input_contents[0].clone());
    expect_code(
        c.model_infer(authed(req, &key)).await,
        Code::InvalidArgument,
        &["exactly one input"],
    )
    .await;
    let mut req = raw_request("demo", &rows);
    req.inputs[0].datatype = "BYTES".into();
    expect_code(
        c.model_infer(authed(req, &key)).await,
        Code::InvalidArgument,
        &["input__0", "BYTES"],
    )
    .await;
    // Out-of-range values are refused by the same validation as confidant.v1.
    let mut out_of_range = rows.clone();
    out_of_range[0][0] = 1e9;
    expect_code(
        c.model_infer(authed(raw_request("demo", &out_of_range), &key))
            .await,
        Code::InvalidArgument,
        &["outside"],
    )
    .await;
    // Unknown model; wrong version.
    expect_code(
        c.model_infer(authed(raw_request("nope", &rows), &key))
            .await,
        Code::NotFound,
        &[],
    )
    .await;
    let mut req = raw_request("demo", &rows);
    req.model_version = "2".into();
    expect_code(
        c.model_infer(authed(req, &key)).await,
        Code::FailedPrecondition,
        &[],
    )
    .await;

    // Every refusal is audited, the tensor errors caught before the pipeline included: five
    // of those above and two from input validation.
    drop(c);
    server.stop();
    let segment = common::audit_export(&dir.path().join("data"));
    let invalid = segment
        .lines()
        .filter(|l| l.contains("INVALID_ARGUMENT"))
        .count();
    assert_eq!(invalid, 7, "{segment}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tensor_names_come_from_the_signed_config() {
    let dir = tmp();
    let d = dir.path();
    let p = |name: &str| d.join(name).to_str().unwrap().to_string();
    let fx = fixtures().join("mlp");
    let mut config: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(fx.join("softmax.json")).unwrap()).unwrap();
    config["input"]["tensor_name"] = "features".into();
    config["output_tensor_name"] = "scores".into();
    std::fs::write(d.join("named.json"), config.to_string()).unwrap();
    assert!(confidant(&["keygen", "--out", &p("keys")]).status.success());
    let out = confidant(&[
        "seal",
        "--weights",
        fx.join("weights.safetensors").to_str().unwrap(),
        "--config",
        &p("named.json"),
        "--signing-key",
        &p("keys/publisher.key"),
        "--out",
        &p("named.sealed"),
        "--key-out",
        &p("named.dek"),
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let key = common::create_key(&d.join("data"), "named", &[]);
    let server = Server::start(&[
        "--data-dir",
        &p("data"),
        "--model",
        &p("named.sealed"),
        "--key-file",
        &p("named.dek"),
        "--publisher-key",
        &p("keys/publisher.pub"),
    ]);
    let id = config["id"].as_str().unwrap();
    let mut c = oip(&server).await;
    let md = c
        .model_metadata(authed(
            pb::ModelMetadataRequest {
                name: id.into(),
                version: String::new(),
            },
            &key,
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(md.inputs[0].name, "features");
    assert_eq!(md.outputs[0].name, "scores");

    let reference: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(fx.join("reference.json")).unwrap()).unwrap();
    let rows: Vec<Vec<f32>> = serde_json::from_value(reference["inputs"].clone()).unwrap();
    let mut req = raw_request(id, &rows);
    expect_code(
        c.model_infer(authed(req.clone(), &key)).await,
        Code::InvalidArgument,
        &["\"input__0\"", "\"features\""],
    )
    .await;
    req.inputs[0].name = "features".into();
    req.outputs = vec![InferRequestedOutputTensor {
        name: "scores".into(),
        ..Default::default()
    }];
    let resp = c.model_infer(authed(req, &key)).await.unwrap().into_inner();
    assert_eq!(resp.outputs[0].name, "scores");
    let mut reference_client = server.client().await.with_api_key(&key).unwrap();
    let want = reference_client
        .predict(id, &rows)
        .await
        .unwrap()
        .outputs
        .concat();
    assert_eq!(decode_raw_output(&resp), want);
}

/// Before the change, the model name of a request was copied into the audit record and the
/// NOT_FOUND message before any rate limit, and tensor names, datatypes, shapes and the
/// request id went back in messages (or the response) at whatever length they came. Now
/// each is checked against its bound first and refused with INVALID_ARGUMENT, echoed by
/// length only, and the audit log does not grow with them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn caller_chosen_names_are_bounded_before_they_are_echoed_or_audited() {
    let dir = tmp();
    let data = dir.path().join("data");
    let server = Server::start(&["--data-dir", data.to_str().unwrap(), "--rpm", "1"]);
    let key = server.api_key.clone().unwrap();
    let mut c = oip(&server).await;
    let rows = vec![confidant::demo::SAMPLE_ROW.to_vec()];
    let huge = "x".repeat(512 * 1024);
    let short = |s: tonic::Status| {
        assert_eq!(
            s.code(),
            Code::InvalidArgument,
            "{}",
            &s.message()[..200.min(s.message().len())]
        );
        assert!(
            s.message().len() < 300,
            "{} bytes echoed",
            s.message().len()
        );
        assert!(!s.message().contains("xxxx"));
    };
    for _ in 0..5 {
        short(
            c.model_infer(authed(raw_request(&huge, &rows), &key))
                .await
                .unwrap_err(),
        );
    }
    let mut r = raw_request("demo", &rows);
    r.model_version = huge.clone();
    short(c.model_infer(authed(r, &key)).await.unwrap_err());
    let mut r = raw_request("demo", &rows);
    r.id = huge.clone();
    short(c.model_infer(authed(r, &key)).await.unwrap_err());
    let mut r = raw_request("demo", &rows);
    r.inputs[0].name = huge.clone();
    short(c.model_infer(authed(r, &key)).await.unwrap_err());
    let mut r = raw_request("demo", &rows);
    r.inputs[0].datatype = huge.clone();
    short(c.model_infer(authed(r, &key)).await.unwrap_err());
    let mut r = raw_request("demo", &rows);
    r.outputs = vec![pb::model_infer_request::InferRequestedOutputTensor {
        name: huge.clone(),
        ..Default::default()
    }];
    short(c.model_infer(authed(r, &key)).await.unwrap_err());
    let mut r = raw_request("demo", &rows);
    r.inputs[0].shape = vec![1; 100_000];
    short(c.model_infer(authed(r, &key)).await.unwrap_err());
    short(
        c.model_metadata(authed(
            pb::ModelMetadataRequest {
                name: huge.clone(),
                version: String::new(),
            },
            &key,
        ))
        .await
        .unwrap_err(),
    );
    // A lawful request still passes (the refusals above spent no rate unit).
    c.model_infer(authed(raw_request("demo", &rows), &key))
        .await
        .unwrap();
    assert!(server.stop().success());
    // The log's segments: the journal beside them is a ring of fixed size.
    let audit: u64 = std::fs::read_dir(data.join("audit"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "jsonl"))
        .map(|p| std::fs::metadata(p).unwrap().len())
        .sum();
    assert!(audit < 64 * 1024, "the audit log grew to {audit} bytes");
}

/// The statistics of `demo`, as `ModelStatistics` reports them for the model named.
async fn demo_stats(c: &mut GrpcInferenceServiceClient<Channel>, key: &str) -> pb::ModelStatistics {
    let resp = c
        .model_statistics(authed(
            pb::ModelStatisticsRequest {
                name: "demo".into(),
                version: String::new(),
            },
            key,
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(resp.model_stats.len(), 1, "{resp:?}");
    resp.model_stats.into_iter().next().unwrap()
}

fn pair(d: &Option<pb::StatisticDuration>) -> (u64, u64) {
    let d = d.as_ref().expect("duration present");
    (d.count, d.ns)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn triton_config_statistics_and_index_tell_what_happened() {
    let dir = tmp();
    let server = Server::start(&["--data-dir", dir.path().join("data").to_str().unwrap()]);
    let key = server.api_key.clone().unwrap();
    let mut c = oip(&server).await;

    // All three need a key, as the model metadata does.
    let config_req = |name: &str, version: &str| pb::ModelConfigRequest {
        name: name.into(),
        version: version.into(),
    };
    expect_code(
        c.model_config(config_req("demo", "")).await,
        Code::Unauthenticated,
        &[],
    )
    .await;
    expect_code(
        c.model_statistics(pb::ModelStatisticsRequest::default())
            .await,
        Code::Unauthenticated,
        &[],
    )
    .await;
    expect_code(
        c.repository_index(pb::RepositoryIndexRequest::default())
            .await,
        Code::Unauthenticated,
        &[],
    )
    .await;
    let meta = c
        .server_metadata(authed(pb::ServerMetadataRequest {}, &key))
        .await
        .unwrap()
        .into_inner();
    for ext in ["model_configuration", "statistics"] {
        assert!(meta.extensions.iter().any(|e| e == ext), "{meta:?}");
    }

    // ModelConfig: batched (dims without the batch dimension), FP32, the signed names.
    let config = c
        .model_config(authed(config_req("demo", "1.0.0"), &key))
        .await
        .unwrap()
        .into_inner()
        .config
        .unwrap();
    assert_eq!(config.name, "demo");
    assert_eq!(config.platform, "confidant_mlp");
    assert!(config.max_batch_size >= 1, "{config:?}");
    assert_eq!(config.input.len(), 1);
    assert_eq!(config.input[0].name, "input__0");
    assert_eq!(config.input[0].data_type, pb::DataType::TypeFp32 as i32);
    assert_eq!(config.input[0].dims, [30]);
    assert_eq!(config.output[0].name, "output__0");
    assert_eq!(config.output[0].dims, [2]);
    assert!(matches!(
        config.scheduling_choice,
        Some(pb::model_config::SchedulingChoice::DynamicBatching(_))
    ));
    assert_eq!(config.instance_group.len(), 1);
    expect_code(
        c.model_config(authed(config_req("demo", "9.9.9"), &key))
            .await,
        Code::FailedPrecondition,
        &["9.9.9"],
    )
    .await;
    expect_code(
        c.model_config(authed(config_req("nope", ""), &key)).await,
        Code::NotFound,
        &[],
    )
    .await;

    // RepositoryIndex: the one model, ready; no other repository.
    let index = c
        .repository_index(authed(
            pb::RepositoryIndexRequest {
                repository_name: String::new(),
                ready: true,
            },
            &key,
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(index.models.len(), 1, "{index:?}");
    assert_eq!(
        (
            index.models[0].name.as_str(),
            index.models[0].version.as_str(),
            index.models[0].state.as_str()
        ),
        ("demo", "1.0.0", "READY")
    );
    expect_code(
        c.repository_index(authed(
            pb::RepositoryIndexRequest {
                repository_name: "elsewhere".into(),
                ready: false,
            },
            &key,
        ))
        .await,
        Code::NotFound,
        &["elsewhere"],
    )
    .await;

    // Statistics: nothing yet.
    let s0 = demo_stats(&mut c, &key).await;
    // Triton numbers versions: "1.0.0" is reported by its major number.
    assert_eq!((s0.name.as_str(), s0.version.as_str()), ("demo", "1"));
    assert_eq!((s0.inference_count, s0.execution_count), (0, 0));
    assert_eq!(s0.last_inference, 0);
    let st0 = s0.inference_stats.unwrap();
    assert_eq!(pair(&st0.success), (0, 0));
    assert!(s0.batch_stats.is_empty());
    expect_code(
        c.model_statistics(authed(
            pb::ModelStatisticsRequest {
                name: String::new(),
                version: "1.0.0".into(),
            },
            &key,
        ))
        .await,
        Code::InvalidArgument,
        &[],
    )
    .await;

    // Three requests one after another: 1, 2 and 5 rows.
    let before_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64;
    let rows = demo_rows();
    for n in [1, 2, 5] {
        c.model_infer(authed(raw_request("demo", &rows[..n]), &key))
            .await
            .unwrap();
    }
    // Refusals: a stranger's and a wrong version move nothing; a bad tensor is a failure.
    let _ = c
        .model_infer(raw_request("demo", &rows[..1]))
        .await
        .unwrap_err();
    let mut wrong_version = raw_request("demo", &rows[..1]);
    wrong_version.model_version = "9.9.9".into();
    let _ = c
        .model_infer(authed(wrong_version, &key))
        .await
        .unwrap_err();
    let mut bad = raw_request("demo", &rows[..1]);
    bad.raw_input_contents = vec![vec![0; 3]];
    let _ = c.model_infer(authed(bad, &key)).await.unwrap_err();

    let s1 = demo_stats(&mut c, &key).await;
    let st = s1.inference_stats.unwrap();
    assert_eq!(s1.inference_count, 8, "{s1:?}");
    assert_eq!(s1.execution_count, 3, "{s1:?}");
    let (success, success_ns) = pair(&st.success);
    assert_eq!(success, 3);
    assert_eq!(pair(&st.fail).0, 1, "{st:?}");
    assert!(pair(&st.fail).1 > 0);
    let mut engine_ns = 0;
    for d in [
        &st.queue,
        &st.compute_input,
        &st.compute_infer,
        &st.compute_output,
    ] {
        assert_eq!(pair(d).0, 3, "{st:?}");
        engine_ns += pair(d).1;
    }
    assert!(pair(&st.compute_infer).1 > 0);
    // A request's time in the server holds its queue and compute time.
    assert!(success_ns >= engine_ns, "{st:?}");
    assert_eq!(pair(&st.cache_hit), (0, 0));
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64;
    assert!((before_ms..=now_ms).contains(&s1.last_inference), "{s1:?}");
    let sizes: Vec<(u64, u64)> = s1
        .batch_stats
        .iter()
        .map(|b| (b.batch_size, pair(&b.compute_infer).0))
        .collect();
    assert_eq!(sizes, [(1, 1), (2, 1), (5, 1)]);
    let batch_infer_ns: u64 = s1
        .batch_stats
        .iter()
        .map(|b| pair(&b.compute_infer).1)
        .sum();
    assert_eq!(batch_infer_ns, pair(&st.compute_infer).1);

    // Concurrent requests: whatever the batcher made of them, the rows add up.
    let mut tasks = Vec::new();
    for i in 0..24 {
        let mut c = c.clone();
        let (key, row) = (key.clone(), rows[i % rows.len()].clone());
        tasks.push(tokio::spawn(async move {
            c.model_infer(authed(raw_request("demo", &[row]), &key))
                .await
                .unwrap();
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let s2 = demo_stats(&mut c, &key).await;
    let st2 = s2.inference_stats.unwrap();
    assert_eq!(pair(&st2.success).0, 27);
    assert_eq!(pair(&st2.queue).0, 27);
    assert_eq!(s2.inference_count, 32);
    let executed_rows: u64 = s2
        .batch_stats
        .iter()
        .map(|b| b.batch_size * pair(&b.compute_infer).0)
        .sum();
    let executions: u64 = s2
        .batch_stats
        .iter()
        .map(|b| pair(&b.compute_input).0)
        .sum();
    assert_eq!(executed_rows, 32, "{:?}", s2.batch_stats);
    assert_eq!(executions, s2.execution_count);
    assert!((4..=27).contains(&s2.execution_count), "{s2:?}");

    // Every model at once: the same figures.
    let all = c
        .model_statistics(authed(pb::ModelStatisticsRequest::default(), &key))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(all.model_stats.len(), 1);
    assert_eq!(all.model_stats[0].inference_count, 32);
}
