//! Composite evidence: the GPU nonce derivation and the fail-closed judgement of a CPU TEE's
//! GPUs under a policy's `[gpu]` section, with the genuine Hopper vector.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use confidant_attestation::nvidia::composite::{
    device_identity, gpu_nonce, integrity_failures, is_intact, judge_gpus,
};
use confidant_attestation::{
    Check, GpuEvidence, GpuReferences, GpuVerdict, Policy, Timestamp, verify_gpu,
};

const DIR: &str = "hopper-h100-545.00-nvtrust";
const REPORT: &[u8] = include_bytes!("data/nvidia/hopper-h100-545.00-nvtrust/report.bin");
const CHAIN: &str = include_str!("data/nvidia/hopper-h100-545.00-nvtrust/chain.pem");
const DRIVER_RIM: &[u8] =
    include_bytes!("data/nvidia/hopper-h100-545.00-nvtrust/rim-driver-545.00.swidtag");
const VBIOS_RIM: &[u8] =
    include_bytes!("data/nvidia/hopper-h100-545.00-nvtrust/rim-vbios-96.00.5E.00.01.swidtag");
const NONCE: &str = "4cff7f5380ead8fad8ec2c531c110aca4302a88f603792801a8ca29ee151af2e";
const AT: &str = "2025-01-01T00:00:00Z";

fn nonce() -> [u8; 32] {
    hex::decode(NONCE).unwrap().try_into().unwrap()
}

fn hopper(rims: &[&[u8]], nonce: &[u8; 32]) -> GpuVerdict {
    verify_gpu(
        &GpuEvidence::new(REPORT.to_vec(), CHAIN.to_owned()),
        nonce,
        GpuReferences { rims, ocsp: &[] },
        Timestamp::parse_rfc3339(AT).unwrap(),
    )
}

fn policy(gpu: &str) -> Policy {
    Policy::from_toml(&format!(
        "measurements = \"any\"\ni_understand_this_accepts_any_guest = true\n{gpu}"
    ))
    .unwrap()
}

fn checks(failures: &[confidant_attestation::Failure]) -> Vec<Check> {
    failures.iter().map(|f| f.check).collect()
}

#[test]
fn gpu_nonce_is_sha256_of_the_domain_tag_and_the_challenge() {
    // Computed independently: python3 -c "import hashlib; print(hashlib.sha256(
    //   b'confidant/v1/nvidia-gpu-nonce\x00' + b'AAAA').hexdigest())"
    assert_eq!(
        hex::encode(gpu_nonce(b"AAAA")),
        "9c7ad7477a826c22dad64b3f3e9a9026af6ba4c9b8f83f9a61bfe7361c3d3881"
    );
    assert_ne!(gpu_nonce(b"AAAA"), gpu_nonce(b"AAAB"));
}

#[test]
fn hopper_with_its_rims_passes_cc_mode_on() {
    let v = hopper(&[DRIVER_RIM, VBIOS_RIM], &nonce());
    assert!(is_intact(&v), "{DIR}: {:?}", v.failures);
    assert!(integrity_failures(&v).is_empty());
    assert!(device_identity(&v).unwrap().contains("GH100 A01 GSP BROM"));
    for gpu in [
        "[gpu]\nrequire_ocsp = false\ncc_mode = \"on\"\n",
        "[gpu]\nrequire_ocsp = false\ncc_mode = \"on\"\ncount = 1\n",
        "[gpu]\nrequire_ocsp = false\ndriver_versions = \"rim\"\nvbios_versions = \"rim\"\n",
        "[gpu]\nrequire_ocsp = false\ndriver_versions = [\"545.00\"]\nvbios_versions = [\"96.00.5E.00.01\"]\n",
    ] {
        let failures = judge_gpus(&policy(gpu), std::slice::from_ref(&v));
        assert!(failures.is_empty(), "{gpu}: {failures:?}");
    }
}

#[test]
fn a_policy_without_gpu_refuses_any_gpu_evidence_and_accepts_none() {
    let v = hopper(&[DRIVER_RIM, VBIOS_RIM], &nonce());
    let p = policy("");
    assert_eq!(checks(&judge_gpus(&p, &[v])), [Check::GpuCount]);
    assert!(judge_gpus(&p, &[]).is_empty());
}

#[test]
fn a_policy_with_gpu_refuses_no_evidence_the_wrong_count_and_the_same_gpu_twice() {
    let v = hopper(&[DRIVER_RIM, VBIOS_RIM], &nonce());
    assert_eq!(
        checks(&judge_gpus(
            &policy("[gpu]\nrequire_ocsp = false\ncc_mode = \"on\"\n"),
            &[]
        )),
        [Check::GpuCount]
    );
    let two = policy("[gpu]\nrequire_ocsp = false\ncount = 2\n");
    assert!(checks(&judge_gpus(&two, std::slice::from_ref(&v))).contains(&Check::GpuCount));
    let twice = judge_gpus(&two, &[v.clone(), v.clone()]);
    assert_eq!(checks(&twice), [Check::GpuCount], "{twice:?}");
    assert!(twice[0].detail.contains("same device"));
    assert!(
        Policy::from_toml(
            "measurements = \"any\"\ni_understand_this_accepts_any_guest = true\n[gpu]\ncount = 0\n"
        )
        .is_err()
    );
    assert!(Policy::from_toml("measurements = \"any\"\ni_understand_this_accepts_any_guest = true\n[gpu]\ndriver_versions = \"latest\"\n").is_err());
}

#[test]
fn without_rims_cc_mode_on_and_rim_versions_fail() {
    let v = hopper(&[], &nonce());
    assert!(is_intact(&v));
    assert_eq!(
        checks(&judge_gpus(
            &policy("[gpu]\nrequire_ocsp = false\ncc_mode = \"on\"\n"),
            std::slice::from_ref(&v)
        )),
        [Check::GpuCcMode]
    );
    assert_eq!(
        checks(&judge_gpus(
            &policy("[gpu]\nrequire_ocsp = false\ncc_mode = \"any\"\ndriver_versions = \"rim\"\n"),
            std::slice::from_ref(&v)
        )),
        [Check::GpuDriverVersion]
    );
    assert!(
        judge_gpus(
            &policy("[gpu]\nrequire_ocsp = false\ncc_mode = \"any\"\n"),
            &[v]
        )
        .is_empty()
    );
    let wrong = hopper(&[], &nonce());
    assert_eq!(
        checks(&judge_gpus(
            &policy(
                "[gpu]\nrequire_ocsp = false\ncc_mode = \"any\"\ndriver_versions = [\"550.54\"]\n"
            ),
            &[wrong]
        )),
        [Check::GpuDriverVersion]
    );
}

/// Issue 18: a missing OCSP response is a failure unless the policy says otherwise.
#[test]
fn ocsp_is_required_unless_the_policy_says_otherwise() {
    let v = hopper(&[DRIVER_RIM, VBIOS_RIM], &nonce());
    let default = policy("[gpu]\ncc_mode = \"on\"\n");
    assert!(default.gpu.as_ref().unwrap().require_ocsp);
    assert_eq!(
        checks(&judge_gpus(&default, std::slice::from_ref(&v))),
        [Check::Ocsp]
    );
    assert!(
        !default
            .deliberately_open()
            .iter()
            .any(|o| o.contains("require_ocsp"))
    );
    let unchecked = policy("[gpu]\ncc_mode = \"on\"\nrequire_ocsp = false\n");
    assert!(judge_gpus(&unchecked, &[v]).is_empty());
    assert!(
        unchecked
            .deliberately_open()
            .iter()
            .any(|o| o.contains("require_ocsp = false")),
        "{:?}",
        unchecked.deliberately_open()
    );
}

#[test]
fn a_wrong_nonce_is_an_integrity_failure() {
    let v = hopper(&[DRIVER_RIM, VBIOS_RIM], &gpu_nonce(b"another session"));
    assert!(!is_intact(&v));
    let failed: Vec<_> = integrity_failures(&v).iter().map(|f| f.check).collect();
    assert_eq!(failed, [confidant_attestation::GpuCheck::Nonce]);
    assert!(
        !judge_gpus(
            &policy("[gpu]\nrequire_ocsp = false\ncc_mode = \"any\"\n"),
            &[v]
        )
        .is_empty()
    );
}

#[test]
fn a_rim_for_another_version_fails_the_judgement_but_not_integrity() {
    // The VBIOS RIM given twice: no driver RIM, so the driver RIM checks fail.
    let v = hopper(&[VBIOS_RIM], &nonce());
    assert!(is_intact(&v));
    assert!(
        !judge_gpus(
            &policy("[gpu]\nrequire_ocsp = false\ncc_mode = \"on\"\n"),
            &[v]
        )
        .is_empty()
    );
}

#[test]
fn rims_for_picks_the_reports_driver_and_vbios_rims_or_says_which_is_missing() {
    use confidant_attestation::nvidia::composite::{HeldRim, RimsForError, rims_for};
    use confidant_attestation::nvidia::rim::RimKind;
    let evidence = GpuEvidence::new(REPORT.to_vec(), CHAIN.to_owned());
    let held = [
        HeldRim::read(VBIOS_RIM.to_vec()).unwrap(),
        HeldRim::read(DRIVER_RIM.to_vec()).unwrap(),
    ];
    let [driver, vbios] = rims_for(&evidence, &held).unwrap();
    assert_eq!(driver, DRIVER_RIM);
    assert_eq!(vbios, VBIOS_RIM);
    let err = rims_for(&evidence, &held[..1]).unwrap_err();
    assert!(
        matches!(&err, RimsForError::NotHeld { kind: RimKind::Driver, version, chip }
            if version == "545.00" && chip == "GH100"),
        "{err:?}"
    );
    assert!(
        err.to_string()
            .contains("no driver RIM for version 545.00 on GH100"),
        "{err}"
    );
    let twice = [held[0].clone(), held[1].clone(), held[1].clone()];
    assert!(matches!(
        rims_for(&evidence, &twice),
        Err(RimsForError::Ambiguous {
            kind: RimKind::Driver,
            ..
        })
    ));
    let err = rims_for(&evidence, &[]).unwrap_err();
    assert!(
        matches!(&err, RimsForError::Both(driver, vbios)
            if matches!(**driver, RimsForError::NotHeld { kind: RimKind::Driver, .. })
                && matches!(**vbios, RimsForError::NotHeld { kind: RimKind::Vbios, .. })),
        "{err:?}"
    );
}
