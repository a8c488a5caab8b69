//! NVIDIA GPU evidence: every genuine vector gets its expected verdict and every check its
//! expected value; hand-made negative cases are refused with the check that should fail.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use confidant_attestation::nvidia::{self, GpuCheck, Outcome, RimKind};
use confidant_attestation::{GpuEvidence, GpuReferences, GpuVerdict, Timestamp, verify_gpu};
use serde_json::Value;

struct Vector {
    name: &'static str,
    report_bin: &'static [u8],
    report_hex: &'static [u8],
    chain: &'static str,
    rims: &'static [&'static [u8]],
    expected: &'static str,
}

const HOPPER_DRIVER_RIM: &[u8] =
    include_bytes!("data/nvidia/hopper-h100-545.00-nvtrust/rim-driver-545.00.swidtag");
const HOPPER_VBIOS_RIM: &[u8] =
    include_bytes!("data/nvidia/hopper-h100-545.00-nvtrust/rim-vbios-96.00.5E.00.01.swidtag");

const HOPPER: Vector = Vector {
    name: "hopper-h100-545.00-nvtrust",
    report_bin: include_bytes!("data/nvidia/hopper-h100-545.00-nvtrust/report.bin"),
    report_hex: include_bytes!("data/nvidia/hopper-h100-545.00-nvtrust/report.hex"),
    chain: include_str!("data/nvidia/hopper-h100-545.00-nvtrust/chain.pem"),
    rims: &[HOPPER_DRIVER_RIM, HOPPER_VBIOS_RIM],
    expected: include_str!("data/nvidia/hopper-h100-545.00-nvtrust/expected.json"),
};

const BLACKWELL: Vector = Vector {
    name: "blackwell-gb100-575.32-asdk",
    report_bin: include_bytes!("data/nvidia/blackwell-gb100-575.32-asdk/report.bin"),
    report_hex: include_bytes!("data/nvidia/blackwell-gb100-575.32-asdk/report.hex"),
    chain: include_str!("data/nvidia/blackwell-gb100-575.32-asdk/chain.pem"),
    rims: &[],
    expected: include_str!("data/nvidia/blackwell-gb100-575.32-asdk/expected.json"),
};

const VECTORS: [Vector; 2] = [HOPPER, BLACKWELL];

impl Vector {
    fn expected(&self) -> Value {
        serde_json::from_str(self.expected).unwrap()
    }

    fn at(&self) -> Timestamp {
        Timestamp::parse_rfc3339(self.expected()["at"].as_str().unwrap()).unwrap()
    }

    fn nonce(&self) -> [u8; 32] {
        hex::decode(self.expected()["nonce"].as_str().unwrap())
            .unwrap()
            .try_into()
            .unwrap()
    }

    fn evidence(&self) -> GpuEvidence {
        GpuEvidence::new(self.report_bin.to_vec(), self.chain.to_owned())
    }

    fn verify(&self) -> GpuVerdict {
        self.verify_with(&self.evidence(), self.rims, self.at())
    }

    fn verify_with(&self, evidence: &GpuEvidence, rims: &[&[u8]], at: Timestamp) -> GpuVerdict {
        verify_gpu(
            evidence,
            &self.nonce(),
            GpuReferences { rims, ocsp: &[] },
            at,
        )
    }
}

fn assert_matches_expected(name: &str, verdict: &GpuVerdict, expected: &Value) {
    let ours = serde_json::to_value(verdict).unwrap();
    assert_eq!(ours["verdict"], expected["verdict"], "{name}: verdict");
    let exp_checks = expected["checks"].as_object().unwrap();
    let our_checks = ours["checks"].as_object().unwrap();
    let exp_names: Vec<&String> = exp_checks.keys().collect();
    let our_names: Vec<&String> = our_checks.keys().collect();
    assert_eq!(our_names, exp_names, "{name}: check names and order");
    for (check, value) in exp_checks {
        let our = &our_checks[check];
        match value {
            Value::String(s) => {
                assert!(s.starts_with("skipped"), "{name}: {check}");
                assert_eq!(our, value, "{name}: {check}");
            }
            _ => assert_eq!(our, value, "{name}: {check}: {:?}", verdict.failures),
        }
    }
    assert_eq!(
        ours["first_failure"], expected["first_failure"],
        "{name}: first_failure"
    );
}

#[test]
fn every_vector_gets_its_expected_verdict_and_checks() {
    for v in &VECTORS {
        let verdict = v.verify();
        let expected = v.expected();
        assert_matches_expected(v.name, &verdict, &expected);
        let c = &verdict.claims;
        assert_eq!(
            c.driver_version.as_deref(),
            expected["driver_version"].as_str(),
            "{}",
            v.name
        );
        assert_eq!(
            c.vbios_version.as_deref(),
            expected["vbios_version"].as_str(),
            "{}",
            v.name
        );
        assert_eq!(c.project.as_deref(), expected["project"].as_str());
        assert_eq!(c.project_sku.as_deref(), expected["project_sku"].as_str());
        assert_eq!(c.chip_sku.as_deref(), expected["chip_sku"].as_str());
        assert_eq!(c.vbios_rim_id.as_deref(), expected["vbios_rim_id"].as_str());
        assert_eq!(c.hwmodel.as_deref(), expected["hwmodel"].as_str());
        assert_eq!(c.architecture.as_deref(), expected["arch"].as_str());
        assert_eq!(
            c.request_nonce.as_deref(),
            expected["request_nonce"].as_str()
        );
        assert_eq!(
            c.responder_nonce.as_deref(),
            expected["responder_nonce"].as_str()
        );
        assert_eq!(
            c.nvdec0_status.as_deref(),
            expected["nvdec0_status"].as_str()
        );
        assert_eq!(c.fwid.as_deref(), expected["fwid"].as_str());
        assert_eq!(
            c.leaf_cert_fwid.as_deref(),
            expected["leaf_cert_fwid"].as_str()
        );
        let types: Vec<u64> = c
            .opaque
            .as_ref()
            .unwrap()
            .types
            .iter()
            .map(|t| u64::from(*t))
            .collect();
        let exp_types: Vec<u64> = expected["opaque_types_present"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| t.as_u64().unwrap())
            .collect();
        assert_eq!(types, exp_types, "{}", v.name);
        assert_eq!(
            c.measurements.len() as u64,
            expected["number_of_blocks"].as_u64().unwrap()
        );
        assert_eq!(c.carried_root_is_pinned, Some(true));
        assert_eq!(c.revocation.summary, "not_checked");
        let report = nvidia::SpdmReport::parse(v.report_bin).unwrap();
        assert_eq!(
            report.signed_len as u64,
            expected["signed_len"].as_u64().unwrap()
        );
        assert_eq!(
            report.signed_len as u64,
            expected["layout"]["signature"].as_u64().unwrap()
        );
    }
}

#[test]
fn hex_and_raw_reports_are_the_same() {
    for v in &VECTORS {
        assert_eq!(
            nvidia::report_from_file(v.report_hex).unwrap(),
            v.report_bin
        );
        assert_eq!(
            nvidia::report_from_file(v.report_bin).unwrap(),
            v.report_bin
        );
        let mut with_newline = v.report_hex.to_vec();
        with_newline.push(b'\n');
        assert_eq!(
            nvidia::report_from_file(&with_newline).unwrap(),
            v.report_bin
        );
    }
}

#[test]
fn hopper_rims_compare_33_indices_and_report_each_rim() {
    let verdict = HOPPER.verify();
    let expected = HOPPER.expected();
    let c = &verdict.claims;
    assert!(c.measurements_compared);
    assert!(c.measurement_mismatches.is_empty());
    assert_eq!(c.secure_boot, Some(true));
    assert_eq!(c.debug_status.as_deref(), Some("disabled"));
    for (rim, exp) in c.rims.iter().zip(expected["rims"].as_array().unwrap()) {
        assert_eq!(rim.kind.name(), exp["kind"].as_str().unwrap());
        assert_eq!(
            rim.colloquial_version,
            exp["colloquial_version"].as_str().unwrap()
        );
        assert_eq!(rim.product, exp["product"].as_str().unwrap());
        let active: Vec<u64> = rim.active_indices.iter().map(|i| u64::from(*i)).collect();
        let exp_active: Vec<u64> = exp["active_indices"]
            .as_array()
            .unwrap()
            .iter()
            .map(|i| i.as_u64().unwrap())
            .collect();
        assert_eq!(active, exp_active);
    }
    let compared: usize = c.rims.iter().map(|r| r.active_indices.len()).sum();
    assert_eq!(
        compared as u64,
        expected["golden_indices_compared"].as_u64().unwrap()
    );
}

/// Asserts a rejection whose failed checks are exactly `failed`, in order.
fn assert_rejected(verdict: &GpuVerdict, failed: &[GpuCheck]) {
    assert!(!verdict.is_accept());
    let ours: Vec<GpuCheck> = verdict
        .checks
        .0
        .iter()
        .filter(|(_, o)| *o == Outcome::Failed)
        .map(|(c, _)| *c)
        .collect();
    assert_eq!(ours, failed, "{:#?}", verdict.failures);
    assert_eq!(verdict.first_failure, failed.first().copied());
    for check in failed {
        assert!(
            verdict
                .failures
                .iter()
                .any(|f| f.check == *check && !f.detail.is_empty()),
            "{check} has no reason"
        );
    }
}

fn at(text: &str) -> Timestamp {
    Timestamp::parse_rfc3339(text).unwrap()
}

fn pem_blocks(pem: &str) -> Vec<String> {
    pem.split_inclusive("-----END CERTIFICATE-----")
        .filter(|b| b.contains("BEGIN"))
        .map(|b| b.trim_start().to_owned() + "\n")
        .collect()
}

#[test]
fn wrong_nonce_is_refused_by_the_nonce_check_alone() {
    for v in &VECTORS {
        let mut nonce = v.nonce();
        nonce[31] ^= 1;
        let verdict = verify_gpu(
            &v.evidence(),
            &nonce,
            GpuReferences {
                rims: v.rims,
                ocsp: &[],
            },
            v.at(),
        );
        assert_rejected(&verdict, &[GpuCheck::Nonce]);
    }
}

#[test]
fn trailing_byte_and_truncation_are_refused_as_unparsed() {
    for v in &VECTORS {
        let mut trailing = v.report_bin.to_vec();
        trailing.push(0);
        let verdict = v.verify_with(
            &GpuEvidence::new(trailing, v.chain.to_owned()),
            v.rims,
            v.at(),
        );
        assert_rejected(&verdict, &[GpuCheck::ReportParsed]);
        assert!(
            verdict.failures[0].detail.contains("after the signature"),
            "{:?}",
            verdict.failures
        );
        assert_eq!(
            verdict.check(GpuCheck::ReportSignature),
            Some(&Outcome::Skipped("report not parsed".to_owned()))
        );
        for cut in [
            0,
            1,
            36,
            37,
            44,
            45,
            3000,
            v.report_bin.len() - 97,
            v.report_bin.len() - 1,
        ] {
            let evidence = GpuEvidence::new(v.report_bin[..cut].to_vec(), v.chain.to_owned());
            let verdict = v.verify_with(&evidence, v.rims, v.at());
            assert_eq!(
                verdict.first_failure,
                Some(GpuCheck::ReportParsed),
                "cut {cut}"
            );
            assert!(!verdict.is_accept());
        }
    }
}

#[test]
fn hex_text_given_as_raw_report_is_refused() {
    let evidence = GpuEvidence::new(HOPPER.report_hex.to_vec(), HOPPER.chain.to_owned());
    let verdict = HOPPER.verify_with(&evidence, &[], HOPPER.at());
    assert_eq!(verdict.first_failure, Some(GpuCheck::ReportParsed));
}

#[test]
fn chains_that_do_not_reach_the_pinned_root_are_refused() {
    let hopper = pem_blocks(HOPPER.chain);
    let blackwell = pem_blocks(BLACKWELL.chain);
    assert_eq!((hopper.len(), blackwell.len()), (5, 5));
    // GB100 Identity in place of GH100 Identity: the ICA's issuer does not verify.
    let mut swapped = hopper.clone();
    swapped[3] = blackwell[3].clone();
    let verdict = HOPPER.verify_with(
        &GpuEvidence::new(HOPPER.report_bin.to_vec(), swapped.concat()),
        HOPPER.rims,
        HOPPER.at(),
    );
    assert_rejected(&verdict, &[GpuCheck::CertChain]);
    // Without the root: nvtrust needs all five.
    let verdict = HOPPER.verify_with(
        &GpuEvidence::new(HOPPER.report_bin.to_vec(), hopper[..4].concat()),
        &[],
        HOPPER.at(),
    );
    assert_rejected(&verdict, &[GpuCheck::CertChain]);
    // A chain anchored in another root: the RIM root in place of the Identity CA's issuer.
    let rim_root = include_str!("data/nvidia/roots/verifier_RIM_root.pem");
    let mut other_root = hopper.clone();
    other_root[3] = rim_root.to_owned();
    let verdict = HOPPER.verify_with(
        &GpuEvidence::new(HOPPER.report_bin.to_vec(), other_root.concat()),
        &[],
        HOPPER.at(),
    );
    assert_rejected(&verdict, &[GpuCheck::CertChain]);
    // The carried root is never trusted: a different last certificate is replaced by the
    // pinned root, so the chain still verifies, and the verdict says the carried one differs.
    let mut carried = hopper.clone();
    carried[4] = rim_root.to_owned();
    let verdict = HOPPER.verify_with(
        &GpuEvidence::new(HOPPER.report_bin.to_vec(), carried.concat()),
        &[],
        HOPPER.at(),
    );
    assert!(verdict.is_accept(), "{:?}", verdict.failures);
    assert_eq!(verdict.claims.carried_root_is_pinned, Some(false));
    // Not PEM at all.
    let verdict = HOPPER.verify_with(
        &GpuEvidence::new(HOPPER.report_bin.to_vec(), "junk".to_owned()),
        &[],
        HOPPER.at(),
    );
    assert_rejected(&verdict, &[GpuCheck::CertChain, GpuCheck::ReportSignature]);
}

#[test]
fn evidence_signed_by_another_gpu_is_refused() {
    // The Blackwell report under the Hopper chain: FWID and signature both fail.
    let verdict = BLACKWELL.verify_with(
        &GpuEvidence::new(BLACKWELL.report_bin.to_vec(), HOPPER.chain.to_owned()),
        &[],
        BLACKWELL.at(),
    );
    assert_rejected(
        &verdict,
        &[GpuCheck::FwidMatchesLeafCert, GpuCheck::ReportSignature],
    );
    // The Hopper report (no FWID) under the Blackwell chain: the signature fails.
    let verdict = HOPPER.verify_with(
        &GpuEvidence::new(HOPPER.report_bin.to_vec(), BLACKWELL.chain.to_owned()),
        &[],
        HOPPER.at(),
    );
    assert_rejected(&verdict, &[GpuCheck::ReportSignature]);
}

#[test]
fn certificates_are_judged_at_the_given_time() {
    // Before the Hopper Provisioner ICA (2022-03-01).
    let verdict = HOPPER.verify_with(&HOPPER.evidence(), &[], at("2022-02-01T00:00:00Z"));
    assert_rejected(&verdict, &[GpuCheck::CertChain]);
    // The device chain alone is valid long after; the RIM signers expire in June 2025.
    assert!(
        HOPPER
            .verify_with(&HOPPER.evidence(), &[], at("2030-01-01T00:00:00Z"))
            .is_accept()
    );
    let verdict = HOPPER.verify_with(&HOPPER.evidence(), HOPPER.rims, at("2025-06-23T00:00:00Z"));
    assert_rejected(&verdict, &[GpuCheck::RimCertChain(RimKind::Vbios)]);
    let verdict = HOPPER.verify_with(&HOPPER.evidence(), HOPPER.rims, at("2025-06-27T00:00:00Z"));
    assert_rejected(
        &verdict,
        &[
            GpuCheck::RimCertChain(RimKind::Driver),
            GpuCheck::RimCertChain(RimKind::Vbios),
        ],
    );
    // The window README gives for an accept with RIMs.
    for ok in ["2023-06-27T06:10:12Z", "2025-06-22T09:30:33Z"] {
        assert!(
            HOPPER
                .verify_with(&HOPPER.evidence(), HOPPER.rims, at(ok))
                .is_accept(),
            "{ok}"
        );
    }
    assert!(
        !HOPPER
            .verify_with(&HOPPER.evidence(), HOPPER.rims, at("2023-06-27T06:10:11Z"))
            .is_accept()
    );
    // Blackwell: from 2023-06-20.
    assert!(
        !BLACKWELL
            .verify_with(&BLACKWELL.evidence(), &[], at("2023-06-19T23:59:59Z"))
            .is_accept()
    );
    assert!(
        BLACKWELL
            .verify_with(&BLACKWELL.evidence(), &[], at("2023-06-20T00:00:00Z"))
            .is_accept()
    );
}

/// The driver RIM with the golden value of index 7 replaced (still valid hex of 48 bytes).
fn driver_rim_with_index_7(value: &str) -> Vec<u8> {
    let text = std::str::from_utf8(HOPPER_DRIVER_RIM).unwrap();
    let golden = "0e0ee161b59bf124ce6b6dca6efa7616d28077862c0e57dca7d5efd63d00eeed4851922941e846a38c464cbedbc168d9";
    assert_eq!(text.matches(golden).count(), 1);
    text.replace(golden, value).into_bytes()
}

#[test]
fn tampered_rims_are_refused() {
    // A changed golden value: the digest no longer matches, and neither does index 7.
    let tampered = driver_rim_with_index_7(&"ab".repeat(48));
    let verdict = HOPPER.verify_with(
        &HOPPER.evidence(),
        &[&tampered, HOPPER_VBIOS_RIM],
        HOPPER.at(),
    );
    assert_rejected(
        &verdict,
        &[
            GpuCheck::RimSignature(RimKind::Driver),
            GpuCheck::MeasurementsMatch,
        ],
    );
    let mismatch = &verdict.claims.measurement_mismatches;
    assert_eq!(mismatch.len(), 1);
    assert_eq!((mismatch[0].index, mismatch[0].rim), (7, RimKind::Driver));
    assert_eq!(mismatch[0].expected, vec!["ab".repeat(48)]);
    assert_eq!(verdict.claims.secure_boot, None);
    assert_eq!(verdict.claims.debug_status, None);

    // A second alternative that the report does match makes the measurements pass; the
    // signature still fails, since the RIM is not NVIDIA's any more.
    let text = std::str::from_utf8(HOPPER_DRIVER_RIM).unwrap().replacen(
        "index=\"7\" active=\"True\" alternatives=\"1\"",
        &format!(
            "index=\"7\" active=\"True\" alternatives=\"2\" ns2:Hash1=\"{}\"",
            "cd".repeat(48)
        ),
        1,
    );
    let verdict = HOPPER.verify_with(
        &HOPPER.evidence(),
        &[text.as_bytes(), HOPPER_VBIOS_RIM],
        HOPPER.at(),
    );
    assert_rejected(&verdict, &[GpuCheck::RimSignature(RimKind::Driver)]);

    // Whitespace is signed too.
    let text = std::str::from_utf8(HOPPER_VBIOS_RIM).unwrap().replacen(
        "\n    <ns0:Entity",
        "\n     <ns0:Entity",
        1,
    );
    let verdict = HOPPER.verify_with(
        &HOPPER.evidence(),
        &[HOPPER_DRIVER_RIM, text.as_bytes()],
        HOPPER.at(),
    );
    assert_rejected(&verdict, &[GpuCheck::RimSignature(RimKind::Vbios)]);

    // The signature value itself.
    let text = std::str::from_utf8(HOPPER_DRIVER_RIM).unwrap().replacen(
        "<ds:SignatureValue>/BgnH",
        "<ds:SignatureValue>/BgnI",
        1,
    );
    let verdict = HOPPER.verify_with(
        &HOPPER.evidence(),
        &[text.as_bytes(), HOPPER_VBIOS_RIM],
        HOPPER.at(),
    );
    assert_rejected(&verdict, &[GpuCheck::RimSignature(RimKind::Driver)]);

    // A second, unsigned Payload would be read instead of the signed one: refused.
    let text = std::str::from_utf8(HOPPER_DRIVER_RIM).unwrap().replacen(
        "<ds:Signature ",
        "<ns0:Payload/><ds:Signature ",
        1,
    );
    let verdict = HOPPER.verify_with(
        &HOPPER.evidence(),
        &[text.as_bytes(), HOPPER_VBIOS_RIM],
        HOPPER.at(),
    );
    assert_eq!(
        verdict.first_failure,
        Some(GpuCheck::RimSignature(RimKind::Driver))
    );

    // Not XML.
    let verdict = HOPPER.verify_with(
        &HOPPER.evidence(),
        &[b"not xml", HOPPER_VBIOS_RIM],
        HOPPER.at(),
    );
    assert_eq!(
        verdict.first_failure,
        Some(GpuCheck::RimSignature(RimKind::Driver))
    );
    assert!(!verdict.is_accept());
}

#[test]
fn rims_for_another_gpu_or_version_are_refused() {
    // Hopper's RIMs against the Blackwell report: wrong versions and product, and the
    // golden values do not match.
    let verdict = BLACKWELL.verify_with(&BLACKWELL.evidence(), HOPPER.rims, BLACKWELL.at());
    assert_rejected(
        &verdict,
        &[
            GpuCheck::RimVersionMatch(RimKind::Driver),
            GpuCheck::RimProductMatch(RimKind::Driver),
            GpuCheck::RimVersionMatch(RimKind::Vbios),
            GpuCheck::RimProductMatch(RimKind::Vbios),
            GpuCheck::MeasurementsMatch,
        ],
    );
    // Only one RIM: the other kind's checks fail, and nothing is compared half-way.
    let verdict = HOPPER.verify_with(&HOPPER.evidence(), &[HOPPER_DRIVER_RIM], HOPPER.at());
    assert_rejected(
        &verdict,
        &[
            GpuCheck::RimSignature(RimKind::Vbios),
            GpuCheck::RimCertChain(RimKind::Vbios),
            GpuCheck::RimVersionMatch(RimKind::Vbios),
            GpuCheck::RimProductMatch(RimKind::Vbios),
            GpuCheck::MeasurementsMatch,
        ],
    );
    // The same RIM twice: refused, and every index conflicts.
    let verdict = HOPPER.verify_with(
        &HOPPER.evidence(),
        &[HOPPER_DRIVER_RIM, HOPPER_DRIVER_RIM, HOPPER_VBIOS_RIM],
        HOPPER.at(),
    );
    assert!(verdict.failed(GpuCheck::RimSignature(RimKind::Driver)));
    assert!(verdict.failed(GpuCheck::RimIndexConflictFree));
    // Order does not matter: the kind is read from each RIM.
    let verdict = HOPPER.verify_with(
        &HOPPER.evidence(),
        &[HOPPER_VBIOS_RIM, HOPPER_DRIVER_RIM],
        HOPPER.at(),
    );
    assert!(verdict.is_accept(), "{:?}", verdict.failures);
}

#[test]
fn verdict_json_names_every_check_and_the_first_failure() {
    let mut nonce = HOPPER.nonce();
    nonce[0] ^= 0x80;
    let verdict = verify_gpu(
        &HOPPER.evidence(),
        &nonce,
        GpuReferences {
            rims: HOPPER.rims,
            ocsp: &[],
        },
        HOPPER.at(),
    );
    let json = serde_json::to_value(&verdict).unwrap();
    assert_eq!(json["verdict"], "reject");
    assert_eq!(json["first_failure"], "nonce");
    assert_eq!(json["checks"]["nonce"], false);
    assert_eq!(
        json["checks"]["fwid_matches_leaf_cert"],
        "skipped: no FWID opaque field"
    );
    assert_eq!(json["failures"][0]["check"], "nonce");
    assert_eq!(json["claims"]["revocation"]["summary"], "not_checked");
}

#[test]
fn tee_wide_verdicts_round_trip_through_json() {
    for v in &VECTORS {
        let verdict = v.verify().to_verdict();
        assert!(verdict.is_accept());
        assert!(!verdict.policy_applied);
        let json = verdict.to_json_pretty();
        let back: confidant_attestation::Verdict = serde_json::from_str(&json).unwrap();
        assert_eq!(back, verdict, "{}", v.name);
    }
    let mut nonce = HOPPER.nonce();
    nonce[5] ^= 4;
    let verdict = verify_gpu(
        &HOPPER.evidence(),
        &nonce,
        GpuReferences {
            rims: HOPPER.rims,
            ocsp: &[],
        },
        HOPPER.at(),
    )
    .to_verdict();
    assert!(!verdict.is_accept());
    assert_eq!(verdict.failures.len(), 1);
    assert_eq!(
        verdict.failures[0].check,
        confidant_attestation::Check::Nonce
    );
    let back: confidant_attestation::Verdict =
        serde_json::from_str(&verdict.to_json_pretty()).unwrap();
    assert_eq!(back, verdict);
}
