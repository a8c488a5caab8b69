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

async fn channel(server: &Server) -> Channel {
    let tls = tonic::transport::ClientTlsConfig::new()
        .ca_certificate(tonic::transport::Certificate::from_pem(server.ca()));
    tonic::transport::Endpoint::from_shared(server.addr.clone())
        .unwrap()
        .tls_config(tls)
        .unwrap()
        .connect()
        .await
        .unwrap()
}

async fn oip(server: &Server) -> GrpcInferenceServiceClient<Channel> {
    GrpcInferenceServiceClient::new(channel(server).await)
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
    let mut health = tonic_health::pb::health_client::HealthClient::new(channel(&server).await);
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
    let segment =
        std::fs::read_to_string(dir.path().join("data/audit/segment-000001.jsonl")).unwrap();
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
    let audit: u64 = std::fs::read_dir(data.join("audit"))
        .unwrap()
        .map(|e| e.unwrap().metadata().unwrap().len())
        .sum();
    assert!(audit < 64 * 1024, "the audit log grew to {audit} bytes");
}
