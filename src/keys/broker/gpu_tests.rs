//! Composite evidence end to end, over HTTPS in process: a simulated CPU TEE carrying the
//! recorded genuine Hopper H100 evidence (its RIMs in the broker's `--gpu-rims`), judged by
//! release policies with and without `[gpu]`, and the swap test. The recorded evidence
//! answers a fixed nonce, so each test tells the broker, through the `cfg(test)`-only seam
//! ([`super::gpu::TestSeam`]), to expect it for one session's challenge.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;

use confidant_attestation::{GpuEvidence, Timestamp};

use super::{BrokerConfig, RunningBroker, start};
use crate::keys::client::{BrokerEndpoint, Connection, attest_request, fetch_resource};
use crate::keys::error::RcarError;
use crate::keys::gpu_references::GpuReferenceSource;
use crate::keys::jwe::TeeKeyPair;
use crate::keys::protocol::{AttestRequest, GpuEvidenceSet};
use crate::tee::gpu::WithGpus;
use crate::tee::recorded_gpu::{
    AT, CHAIN, DRIVER_RIM, HOPPER_NONCE, REPORT, Recorded, VBIOS_RIM, hopper,
};
use crate::tee::{Attester, Simulated, TeeError};

const PATH: &str = "default/models/gpu-model";
const SECRET: [u8; 32] = [7u8; 32];

struct Fixture {
    _dir: tempfile::TempDir,
    broker: RunningBroker,
    endpoint: BrokerEndpoint,
    cpu: Arc<Simulated>,
}

async fn fixture(with_rims: bool) -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let mut config = BrokerConfig::new("127.0.0.1:0".parse().unwrap(), dir.path().join("broker"));
    if with_rims {
        let rims = dir.path().join("rims");
        std::fs::create_dir(&rims).unwrap();
        std::fs::write(rims.join("driver.swidtag"), DRIVER_RIM).unwrap();
        std::fs::write(rims.join("vbios.swidtag"), VBIOS_RIM).unwrap();
        config.gpu_references = GpuReferenceSource::new(Some(rims), None);
    }
    let broker = start(config.clone()).await.unwrap();
    let ca = std::fs::read(config.cert_path()).unwrap();
    let endpoint = BrokerEndpoint::new(&broker.url, Some(&ca)).unwrap();
    let bin = dir.path().join("fake-binary");
    std::fs::write(&bin, b"the server binary of the GPU tests").unwrap();
    let cpu = Arc::new(Simulated::measuring(&bin).unwrap());
    broker.put_resource(PATH, &SECRET).unwrap();
    Fixture {
        _dir: dir,
        broker,
        endpoint,
        cpu,
    }
}

impl Fixture {
    fn set_policy(&self, gpu: &str) {
        let policy = format!(
            "measurements = [\"{}\"]\nallow_simulated = true\n{gpu}",
            hex::encode(self.cpu.measurement())
        );
        self.broker.set_policy(PATH, &policy).unwrap();
    }

    /// The simulated TEE serving on `gpus` recorded GPUs (none: on CPU).
    fn attester(&self, gpus: Vec<GpuEvidence>) -> Arc<dyn Attester> {
        if gpus.is_empty() {
            return self.cpu.clone();
        }
        let devices = (0..gpus.len() as u32).collect();
        Arc::new(WithGpus::new(
            self.cpu.clone(),
            devices,
            Arc::new(Recorded::new(gpus)),
        ))
    }

    /// Opens a session; with `seam` the broker expects the recorded nonce (at `at`) for it.
    async fn session(&self, seam: Option<&str>) -> (Connection, String) {
        let mut conn = self.endpoint.connect().await.unwrap();
        let challenge = conn.auth("snp").await.unwrap();
        if let Some(at) = seam {
            self.broker.dangerous_test_expect_gpu(
                &challenge.nonce,
                hex::decode(HOPPER_NONCE).unwrap().try_into().unwrap(),
                Timestamp::parse_rfc3339(at).unwrap(),
            );
        }
        (conn, challenge.nonce)
    }

    /// RCAR with `attester`; the key, or the step's refusal.
    async fn fetch(
        &self,
        attester: &dyn Attester,
        seam: Option<&str>,
    ) -> Result<Vec<u8>, (&'static str, RcarError)> {
        let (mut conn, nonce) = self.session(seam).await;
        let key = TeeKeyPair::generate().unwrap();
        let request = attest_request(attester, &nonce, key.public_key()).unwrap();
        conn.attest(&request).await.map_err(|e| ("attest", e))?;
        let jwe = conn.resource(PATH).await.map_err(|e| ("resource", e))?;
        Ok(key.decrypt(&jwe).unwrap().to_vec())
    }
}

fn status(e: &RcarError) -> (u16, String) {
    match e {
        RcarError::Refused { status, detail, .. } => (*status, detail.clone()),
        other => panic!("expected a refusal, got {other}"),
    }
}

/// Acceptance: `[gpu] cc_mode = "on"` releases only together with passing GPU evidence.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cc_mode_on_releases_only_with_passing_gpu_evidence() {
    let f = fixture(true).await;
    f.set_policy("[gpu]\nrequire_ocsp = false\ncc_mode = \"on\"\ncount = 1\n");
    let gpu = f.attester(vec![hopper()]);

    // Genuine Hopper evidence answering the session's nonce, RIMs matched: released.
    let key = f.fetch(gpu.as_ref(), Some(AT)).await.unwrap();
    assert_eq!(key, SECRET);

    // No GPU evidence (a server on CPU): attested, but no key.
    let (step, e) = f.fetch(f.cpu.as_ref(), None).await.unwrap_err();
    assert_eq!((step, status(&e).0), ("resource", 403), "{e}");

    // GPU evidence that fails a check:
    // - the nonce: the broker expects the GPU nonce derived from this session's challenge,
    //   and the recorded report answers another;
    let (step, e) = f.fetch(gpu.as_ref(), None).await.unwrap_err();
    assert_eq!(step, "attest");
    let (s, detail) = status(&e);
    assert_eq!(s, 401, "{detail}");
    assert!(
        detail.contains("GPU 0 evidence rejected: nonce"),
        "{detail}"
    );
    // - the signature: one bit of the signed response flipped;
    let mut flipped = REPORT.to_vec();
    let at = flipped.len() - 200;
    flipped[at] ^= 0x01;
    let bad = f.attester(vec![GpuEvidence::new(flipped, CHAIN.to_owned())]);
    let (step, e) = f.fetch(bad.as_ref(), Some(AT)).await.unwrap_err();
    assert_eq!(step, "attest");
    assert!(status(&e).1.contains("report_signature"), "{e}");
    // - the chain: the leaf certificate dropped;
    let rest = CHAIN
        .match_indices("-----BEGIN CERTIFICATE-----")
        .nth(1)
        .map(|(i, _)| &CHAIN[i..])
        .unwrap();
    let short = f.attester(vec![GpuEvidence::new(REPORT.to_vec(), rest.to_owned())]);
    let (step, e) = f.fetch(short.as_ref(), Some(AT)).await.unwrap_err();
    assert_eq!(step, "attest");
    assert!(status(&e).1.contains("cert_chain"), "{e}");
    // - the RIMs: judged at the broker's real clock, their signer certificates have expired
    //   (rim_*_cert_chain fails), so CC mode is not shown: attested, no key;
    let now = crate::keys::broker::http::now_timestamp().to_string();
    let (step, e) = f.fetch(gpu.as_ref(), Some(&now)).await.unwrap_err();
    assert_eq!((step, status(&e).0), ("resource", 403), "{e}");
    // - revocation: without `require_ocsp = false` a missing OCSP response is a failure
    //   (issue 18's default for release policies), and the broker holds none: the same
    //   evidence released above is refused (the broker tells only its log why);
    f.set_policy("[gpu]\ncc_mode = \"on\"\n");
    let (step, e) = f.fetch(gpu.as_ref(), Some(AT)).await.unwrap_err();
    assert_eq!((step, status(&e).0), ("resource", 403), "{e}");
    // - the count: the policy needs two GPUs, and the same GPU twice is one.
    f.set_policy("[gpu]\nrequire_ocsp = false\ncc_mode = \"on\"\ncount = 2\n");
    let (step, e) = f.fetch(gpu.as_ref(), Some(AT)).await.unwrap_err();
    assert_eq!((step, status(&e).0), ("resource", 403), "{e}");
    let twice = f.attester(vec![hopper(), hopper()]);
    let (step, e) = f.fetch(twice.as_ref(), Some(AT)).await.unwrap_err();
    assert_eq!(step, "attest");
    assert!(status(&e).1.contains("GPU 1 is the same device"), "{e}");
}

/// Without the broker's RIMs the measurements are not compared: `cc_mode = "on"` refuses,
/// `cc_mode = "any"` (authenticity only) releases.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_rims_cc_mode_on_refuses_and_any_releases() {
    let f = fixture(false).await;
    let gpu = f.attester(vec![hopper()]);
    f.set_policy("[gpu]\nrequire_ocsp = false\ncc_mode = \"on\"\n");
    let (step, e) = f.fetch(gpu.as_ref(), Some(AT)).await.unwrap_err();
    assert_eq!((step, status(&e).0), ("resource", 403), "{e}");
    f.set_policy("[gpu]\nrequire_ocsp = false\ncc_mode = \"any\"\n");
    assert_eq!(f.fetch(gpu.as_ref(), Some(AT)).await.unwrap(), SECRET);
}

/// Acceptance: a policy without `[gpu]` releases only to servers on CPU.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_policy_without_gpu_refuses_a_session_that_presents_gpu_evidence() {
    let f = fixture(true).await;
    f.set_policy("");
    let gpu = f.attester(vec![hopper()]);
    let (step, e) = f.fetch(gpu.as_ref(), Some(AT)).await.unwrap_err();
    assert_eq!((step, status(&e).0), ("resource", 403), "{e}");
    assert_eq!(f.fetch(f.cpu.as_ref(), None).await.unwrap(), SECRET);
}

/// Acceptance, the swap test: GPU evidence from one session, bound into another session's
/// CPU report, is refused; and GPU evidence added to (or removed from) a request whose CPU
/// report bound something else is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_swap_test() {
    let f = fixture(true).await;
    f.set_policy("[gpu]\nrequire_ocsp = false\ncc_mode = \"on\"\n");
    let gpu = f.attester(vec![hopper()]);

    // Session A's GPUs answered A's GPU nonce (the seam says the recorded report did).
    let (mut a, nonce_a) = f.session(Some(AT)).await;
    // Session B: a genuine CPU TEE binds A's GPU evidence into its own report.
    let (mut b, nonce_b) = f.session(None).await;
    let key_b = TeeKeyPair::generate().unwrap();
    let request_b = attest_request(gpu.as_ref(), &nonce_b, key_b.public_key()).unwrap();
    let (s, detail) = status(&b.attest(&request_b).await.unwrap_err());
    assert_eq!(s, 401, "{detail}");
    assert!(
        detail.contains("GPU 0 evidence rejected: nonce"),
        "{detail}"
    );

    // A CPU report that bound no GPU evidence, with A's GPU evidence added afterwards.
    let key_a = TeeKeyPair::generate().unwrap();
    let mut swapped: AttestRequest =
        attest_request(f.cpu.as_ref(), &nonce_a, key_a.public_key()).unwrap();
    swapped.tee_evidence.additional_evidence = GpuEvidenceSet {
        nvidia_gpus: vec![hopper()],
    }
    .to_canonical_json()
    .unwrap();
    let (s, detail) = status(&a.attest(&swapped).await.unwrap_err());
    assert_eq!(s, 401, "{detail}");
    assert!(detail.contains("report_data"), "{detail}");

    // The converse: a report binding GPU evidence, sent without it, to pass as a CPU server.
    let (mut c, nonce_c) = f.session(Some(AT)).await;
    let key_c = TeeKeyPair::generate().unwrap();
    let mut stripped = attest_request(gpu.as_ref(), &nonce_c, key_c.public_key()).unwrap();
    stripped.tee_evidence.additional_evidence = String::new();
    let (s, detail) = status(&c.attest(&stripped).await.unwrap_err());
    assert_eq!(s, 401, "{detail}");
    assert!(detail.contains("report_data"), "{detail}");

    // Control: in its own session, with a report that binds it, the same evidence passes.
    let (mut d, nonce_d) = f.session(Some(AT)).await;
    let key_d = TeeKeyPair::generate().unwrap();
    let request_d = attest_request(gpu.as_ref(), &nonce_d, key_d.public_key()).unwrap();
    d.attest(&request_d).await.unwrap();
    let jwe = d.resource(PATH).await.unwrap();
    assert_eq!(key_d.decrypt(&jwe).unwrap().to_vec(), SECRET);
}

/// GPU evidence that is not the one canonical encoding is refused before verification.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn non_canonical_or_empty_gpu_evidence_is_a_bad_request() {
    let f = fixture(true).await;
    for additional in [
        // Pretty-printed: same meaning, other bytes.
        serde_json::to_string_pretty(&GpuEvidenceSet {
            nvidia_gpus: vec![hopper()],
        })
        .unwrap(),
        r#"{"nvidia_gpus":[]}"#.to_owned(),
        r#"{"nvidia_gpus":[],"other":1}"#.to_owned(),
        "x".to_owned(),
    ] {
        let (mut conn, nonce) = f.session(None).await;
        let key = TeeKeyPair::generate().unwrap();
        let mut request = attest_request(f.cpu.as_ref(), &nonce, key.public_key()).unwrap();
        request.tee_evidence.additional_evidence = additional;
        let (s, detail) = status(&conn.attest(&request).await.unwrap_err());
        assert_eq!(s, 400, "{detail}");
    }
}

/// A server on `cuda:0` whose GPU evidence cannot be collected (no NVML here) does not
/// attest as a CPU server: the exchange fails on its side with the reason, so it gets no key.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_on_cuda_without_gpu_evidence_gets_no_key_and_says_why() {
    let f = fixture(true).await;
    f.set_policy("");
    let on_cuda = crate::tee::gpu::for_devices(
        f.cpu.clone(),
        crate::gpu::serving_ordinals(crate::gpu::DeviceSpec::Cuda(0)),
    );
    assert_eq!(on_cuda.gpus(), [0]);
    let e = fetch_resource(&f.endpoint, on_cuda, PATH)
        .await
        .unwrap_err();
    assert!(
        matches!(&e, RcarError::Tee(TeeError::Gpu { device: 0, .. })),
        "{e}"
    );
    assert!(e.to_string().contains("no GPU evidence for cuda:0"), "{e}");
    // The same server on CPU gets its key under this policy.
    let on_cpu = crate::tee::gpu::for_devices(
        f.cpu.clone(),
        crate::gpu::serving_ordinals(crate::gpu::DeviceSpec::Cpu),
    );
    assert_eq!(
        fetch_resource(&f.endpoint, on_cpu, PATH)
            .await
            .unwrap()
            .to_vec(),
        SECRET
    );
}
