//! The attested channel's GPU checks, with the server's own Attestation service producing
//! each answer: a simulated CPU TEE carrying the recorded genuine Hopper H100 evidence (tests
//! only: the source returns it whatever nonce it is asked for), judged by client policies with
//! and without `[gpu]`, each failing check, and the swap test. The recorded report answers a
//! fixed nonce and its RIMs' signers have since expired, so a test passes [`Expected`] with
//! that nonce and a time at which they were valid; every other input is the production path's.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;

use confidant_attestation::nvidia::composite::HeldRim;
use confidant_attestation::nvidia::{GpuEvidenceSet, HeldReferences, gpu_nonce};
use confidant_attestation::{Decision, GpuEvidence, Policy, Timestamp};
use tonic::Request;

use super::{ChannelPolicy, ChannelVerdict, ClientError, Expected, check_evidence};
use crate::proto::confidant::v1 as pb;
use crate::proto::confidant::v1::attestation_server::Attestation as _;
use crate::server::attestation::AttestationService;
use crate::tee::gpu::WithGpus;
use crate::tee::recorded_gpu::{
    AT, CHAIN, DRIVER_RIM, HOPPER_NONCE, REPORT, Recorded, VBIOS_RIM, hopper,
};
use crate::tee::{Attester, Simulated};
use crate::tls::KeyOrigin;

/// The SPKI hash of the test server's TLS key (any: the service binds what it is given).
const SPKI: [u8; 32] = [0x5a; 32];

fn held_rims() -> HeldReferences {
    HeldReferences {
        rims: vec![
            HeldRim::read(DRIVER_RIM.to_vec()).unwrap(),
            HeldRim::read(VBIOS_RIM.to_vec()).unwrap(),
        ],
        ocsp: Vec::new(),
    }
}

struct Fixture {
    _dir: tempfile::TempDir,
    cpu: Arc<Simulated>,
}

impl Fixture {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let bin = dir.path().join("fake-binary");
        std::fs::write(&bin, b"the server binary of the attested-channel GPU tests").unwrap();
        let cpu = Arc::new(Simulated::measuring(&bin).unwrap());
        Self { _dir: dir, cpu }
    }

    /// The client policy: this CPU TEE's measurement, simulated allowed, then `gpu`.
    fn policy(&self, gpu: &str, references: HeldReferences) -> ChannelPolicy {
        let policy = Policy::from_toml(&format!(
            "measurements = [\"{}\"]\nallow_simulated = true\n{gpu}",
            hex::encode(self.cpu.measurement())
        ))
        .unwrap();
        ChannelPolicy::new(policy).with_gpu_references(references)
    }

    /// The simulated TEE serving on `gpus` recorded GPUs (none: on CPU), and its source.
    fn server(&self, gpus: Vec<GpuEvidence>) -> (Arc<dyn Attester>, Option<Arc<Recorded>>) {
        if gpus.is_empty() {
            return (self.cpu.clone(), None);
        }
        let devices = (0..gpus.len() as u32).collect();
        let source = Arc::new(Recorded::new(gpus));
        let attester = Arc::new(WithGpus::new(self.cpu.clone(), devices, source.clone()));
        (attester, Some(source))
    }
}

/// The server's Attestation service's answer to `nonce`.
async fn answer(attester: Arc<dyn Attester>, nonce: &[u8]) -> pb::GetEvidenceResponse {
    AttestationService::new(attester, SPKI, KeyOrigin::InProcess)
        .get_evidence(Request::new(pb::GetEvidenceRequest {
            nonce: nonce.to_vec(),
        }))
        .await
        .unwrap()
        .into_inner()
}

fn now() -> Timestamp {
    Timestamp::from_unix_seconds(crate::unix_now().max(0) as u64)
}

/// What the client expects for `nonce` when the GPUs answered `gpu_nonce`, GPU evidence
/// judged at `gpu_at`.
fn expected(nonce: &[u8], gpu_nonce: [u8; 32], gpu_at: Timestamp) -> Expected<'_> {
    Expected {
        nonce,
        spki_sha256: SPKI,
        gpu_nonce,
        now: now(),
        gpu_now: gpu_at,
    }
}

fn recorded_nonce() -> [u8; 32] {
    hex::decode(HOPPER_NONCE).unwrap().try_into().unwrap()
}

fn at() -> Timestamp {
    Timestamp::parse_rfc3339(AT).unwrap()
}

/// The client's check of `response` for `nonce`, the GPUs expected to answer the recorded
/// nonce at [`AT`].
fn check(
    response: &pb::GetEvidenceResponse,
    nonce: &[u8],
    policy: &ChannelPolicy,
) -> Result<ChannelVerdict, String> {
    check_evidence(response, &expected(nonce, recorded_nonce(), at()), policy).map_err(
        |e| match e {
            ClientError::Attestation(m) => m,
            other => panic!("expected an attestation refusal, got {other}"),
        },
    )
}

fn refused(result: Result<ChannelVerdict, String>) -> String {
    match result {
        Ok(v) => panic!("accepted: {}", serde_json::to_string(&v).unwrap()),
        Err(m) => m,
    }
}

const NONCE: [u8; 32] = [0x11; 32];

/// A server on a GPU whose genuine evidence passes `[gpu] cc_mode = "on"` (RIMs held): the
/// channel is accepted, the GPU's claims come back, and the server asked its GPU for the
/// nonce derived from the client's.
#[tokio::test]
async fn passing_gpu_evidence_is_accepted_and_its_claims_returned() {
    let f = Fixture::new();
    let (server, source) = f.server(vec![hopper()]);
    let response = answer(server, &NONCE).await;
    assert!(!response.gpu_evidence_json.is_empty());
    assert_eq!(
        source.unwrap().asked.lock().unwrap().as_slice(),
        [gpu_nonce(&NONCE)],
        "the GPU nonce is derived from the client's nonce, as for the broker"
    );
    let policy = f.policy(
        "[gpu]\nrequire_ocsp = false\ncc_mode = \"on\"\ncount = 1\n",
        held_rims(),
    );
    let verdict = check(&response, &NONCE, &policy).unwrap();
    assert_eq!(verdict.cpu.verdict, Decision::Accept);
    assert_eq!(verdict.gpus.len(), 1);
    assert_eq!(verdict.gpus[0].verdict, Decision::Accept);
    assert_eq!(verdict.gpus[0].debug, Some(false));
    let json = serde_json::to_value(&verdict).unwrap();
    assert_eq!(json["verdict"], "accept");
    assert_eq!(json["gpus"][0]["tee"], "nvidia_gpu");
    assert_eq!(json["gpus"][0]["claims"]["gpu"]["driver_version"], "545.00");
}

/// Each check the GPU evidence can fail refuses the channel, naming it.
#[tokio::test]
async fn gpu_evidence_failing_any_check_is_refused() {
    let f = Fixture::new();
    let on = f.policy(
        "[gpu]\nrequire_ocsp = false\ncc_mode = \"on\"\n",
        held_rims(),
    );
    let (server, _) = f.server(vec![hopper()]);
    let response = answer(server, &NONCE).await;

    // The nonce: the client expects the GPU nonce derived from its own, as production does,
    // and the recorded report answers another.
    let msg = refused(
        check_evidence(&response, &expected(&NONCE, gpu_nonce(&NONCE), at()), &on).map_err(|e| {
            match e {
                ClientError::Attestation(m) => m,
                other => panic!("{other}"),
            }
        }),
    );
    assert!(msg.contains("GPU 0 evidence rejected: nonce"), "{msg}");

    // The signature: one bit of the signed response flipped.
    let mut flipped = REPORT.to_vec();
    let i = flipped.len() - 200;
    flipped[i] ^= 0x01;
    let (server, _) = f.server(vec![GpuEvidence::new(flipped, CHAIN.to_owned())]);
    let msg = refused(check(&answer(server, &NONCE).await, &NONCE, &on));
    assert!(msg.contains("report_signature"), "{msg}");

    // The chain: the leaf certificate dropped.
    let rest = CHAIN
        .match_indices("-----BEGIN CERTIFICATE-----")
        .nth(1)
        .map(|(i, _)| &CHAIN[i..])
        .unwrap();
    let (server, _) = f.server(vec![GpuEvidence::new(REPORT.to_vec(), rest.to_owned())]);
    let msg = refused(check(&answer(server, &NONCE).await, &NONCE, &on));
    assert!(msg.contains("cert_chain"), "{msg}");

    // The RIMs: judged at the real clock their signers' certificates have expired.
    let msg = refused(
        check_evidence(&response, &expected(&NONCE, recorded_nonce(), now()), &on).map_err(|e| {
            match e {
                ClientError::Attestation(m) => m,
                other => panic!("{other}"),
            }
        }),
    );
    assert!(
        msg.contains("rim_driver_cert_chain") && msg.contains("rim_vbios_cert_chain"),
        "{msg}"
    );

    // No RIMs held: the measurements are not compared, so `cc_mode = "on"` refuses and says
    // which RIMs are missing; `cc_mode = "any"` (authenticity only) accepts.
    let msg = refused(check(
        &response,
        &NONCE,
        &f.policy(
            "[gpu]\nrequire_ocsp = false\ncc_mode = \"on\"\n",
            HeldReferences::default(),
        ),
    ));
    assert!(
        msg.contains("gpu_cc_mode") && msg.contains("no RIMs held"),
        "{msg}"
    );
    let any = f.policy(
        "[gpu]\nrequire_ocsp = false\ncc_mode = \"any\"\n",
        HeldReferences::default(),
    );
    check(&response, &NONCE, &any).unwrap();

    // OCSP: required unless the policy says otherwise, and none held.
    let msg = refused(check(
        &response,
        &NONCE,
        &f.policy("[gpu]\ncc_mode = \"on\"\n", held_rims()),
    ));
    assert!(msg.contains("ocsp"), "{msg}");

    // A driver version the policy does not list.
    let msg = refused(check(
        &response,
        &NONCE,
        &f.policy(
            "[gpu]\nrequire_ocsp = false\ndriver_versions = [\"550.54\"]\n",
            held_rims(),
        ),
    ));
    assert!(msg.contains("gpu_driver_version"), "{msg}");

    // The count: two GPUs needed, one presented; the same GPU twice is one.
    let msg = refused(check(
        &response,
        &NONCE,
        &f.policy("[gpu]\nrequire_ocsp = false\ncount = 2\n", held_rims()),
    ));
    assert!(msg.contains("gpu_count"), "{msg}");
    let (twice, _) = f.server(vec![hopper(), hopper()]);
    let msg = refused(check(&answer(twice, &NONCE).await, &NONCE, &on));
    assert!(msg.contains("GPU 1 is the same device"), "{msg}");

    // The CPU evidence still counts: another measurement refuses before any GPU is looked at.
    let other = ChannelPolicy::new(
        Policy::from_toml(&format!(
            "measurements = [\"{}\"]\nallow_simulated = true\n[gpu]\n",
            "ab".repeat(48)
        ))
        .unwrap(),
    )
    .with_gpu_references(held_rims());
    let msg = refused(check(&response, &NONCE, &other));
    assert!(msg.contains("measurement"), "{msg}");
}

/// A policy with `[gpu]` refuses a server that presents no GPU evidence (on CPU); a server on
/// CUDA that cannot collect its GPUs' evidence gives no evidence at all, not a CPU server's.
#[tokio::test]
async fn no_gpu_evidence_is_refused_under_a_gpu_policy() {
    let f = Fixture::new();
    let (cpu, _) = f.server(Vec::new());
    let response = answer(cpu, &NONCE).await;
    assert!(response.gpu_evidence_json.is_empty());
    let msg = refused(check(
        &response,
        &NONCE,
        &f.policy(
            "[gpu]\nrequire_ocsp = false\ncc_mode = \"any\"\n",
            held_rims(),
        ),
    ));
    assert!(
        msg.contains("gpu_count") && msg.contains("none was presented"),
        "{msg}"
    );

    // On cuda:0 without NVML (this machine): the service refuses, saying why.
    let on_cuda = crate::tee::gpu::for_devices(f.cpu.clone(), vec![0]);
    let status = AttestationService::new(on_cuda, SPKI, KeyOrigin::InProcess)
        .get_evidence(Request::new(pb::GetEvidenceRequest {
            nonce: NONCE.to_vec(),
        }))
        .await
        .unwrap_err();
    assert_eq!(status.code(), tonic::Code::Unavailable, "{status:?}");
    assert!(
        status.message().contains("no GPU evidence for cuda:0"),
        "{status:?}"
    );
}

/// A policy without `[gpu]` accepts only a server on CPU.
#[tokio::test]
async fn a_policy_without_gpu_accepts_only_a_server_on_cpu() {
    let f = Fixture::new();
    let policy = f.policy("", held_rims());
    let (gpu, _) = f.server(vec![hopper()]);
    let msg = refused(check(&answer(gpu, &NONCE).await, &NONCE, &policy));
    assert!(
        msg.contains("gpu_count") && msg.contains("no [gpu] section"),
        "{msg}"
    );
    let (cpu, _) = f.server(Vec::new());
    let verdict = check(&answer(cpu, &NONCE).await, &NONCE, &policy).unwrap();
    assert!(verdict.gpus.is_empty());
}

/// The swap test: GPU evidence from another session is refused, whether bound into this
/// session's CPU report (it does not answer this session's GPU nonce) or sent next to a CPU
/// report that bound other GPU evidence, or none; and a report that bound GPU evidence does
/// not pass as a CPU server's with the evidence removed.
#[tokio::test]
async fn the_swap_test() {
    let f = Fixture::new();
    let policy = f.policy(
        "[gpu]\nrequire_ocsp = false\ncc_mode = \"on\"\n",
        held_rims(),
    );
    let (gpu, _) = f.server(vec![hopper()]);
    let (cpu, _) = f.server(Vec::new());
    let session_a = [0xaa; 32];
    let session_b = [0xbb; 32];

    // Session A's GPU answered A's GPU nonce (the recorded one); a genuine CPU TEE binds it
    // into session B's report. B's client expects the GPU nonce derived from B's nonce.
    let b = answer(gpu.clone(), &session_b).await;
    let msg = refused(
        check_evidence(
            &b,
            &expected(&session_b, gpu_nonce(&session_b), at()),
            &policy,
        )
        .map_err(|e| e.to_string()),
    );
    assert!(msg.contains("GPU 0 evidence rejected: nonce"), "{msg}");

    // A's GPU evidence sent next to B's report of a server on CPU (which bound none).
    let a = answer(gpu.clone(), &session_a).await;
    let mut swapped = answer(cpu.clone(), &session_b).await;
    swapped.gpu_evidence_json = a.gpu_evidence_json.clone();
    let msg = refused(check(&swapped, &session_b, &policy));
    assert!(msg.contains("does not bind"), "{msg}");

    // A's GPU evidence sent next to B's report that bound other GPU evidence (the same GPU
    // with a certificate chain written differently: other bytes, other digest).
    let other_chain = format!("{CHAIN}\n");
    let (gpu_other, _) = f.server(vec![GpuEvidence::new(REPORT.to_vec(), other_chain)]);
    let mut swapped = answer(gpu_other, &session_b).await;
    check(&swapped, &session_b, &policy).unwrap();
    assert_ne!(swapped.gpu_evidence_json, a.gpu_evidence_json);
    swapped.gpu_evidence_json = a.gpu_evidence_json.clone();
    let msg = refused(check(&swapped, &session_b, &policy));
    assert!(msg.contains("does not bind"), "{msg}");

    // A report that bound GPU evidence, sent without it, to pass as a server on CPU (under a
    // policy without [gpu]).
    let mut stripped = answer(gpu.clone(), &session_b).await;
    stripped.gpu_evidence_json.clear();
    let msg = refused(check(&stripped, &session_b, &f.policy("", held_rims())));
    assert!(msg.contains("does not bind"), "{msg}");

    // Session A's whole answer replayed to session B's client.
    let msg = refused(check(&a, &session_b, &policy));
    assert!(msg.contains("does not bind"), "{msg}");

    // Control: in its own session the same evidence passes.
    check(&a, &session_a, &policy).unwrap();
}

/// GPU evidence that is not the one canonical encoding is refused before anything else.
#[tokio::test]
async fn non_canonical_gpu_evidence_is_refused() {
    let f = Fixture::new();
    let policy = f.policy(
        "[gpu]\nrequire_ocsp = false\ncc_mode = \"any\"\n",
        held_rims(),
    );
    let (gpu, _) = f.server(vec![hopper()]);
    let response = answer(gpu, &NONCE).await;
    let set = GpuEvidenceSet::from_canonical_json(&response.gpu_evidence_json)
        .unwrap()
        .unwrap();
    for text in [
        serde_json::to_string_pretty(&set).unwrap(),
        r#"{"nvidia_gpus":[]}"#.to_owned(),
        "x".to_owned(),
    ] {
        let mut bad = response.clone();
        bad.gpu_evidence_json = text;
        let msg = refused(check(&bad, &NONCE, &policy));
        assert!(msg.contains("the GPU evidence does not parse"), "{msg}");
    }
}
