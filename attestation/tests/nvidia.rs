//! NVIDIA GPU evidence: every genuine vector gets its expected verdict and every check its
//! expected value; hand-made negative cases are refused with the check that should fail.

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

/// The verdict's checks as JSON, to compare with expected.json.
fn checks_json(verdict: &GpuVerdict) -> Value {
    serde_json::to_value(&verdict.checks).unwrap()
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
    assert_eq!(ours["first_failure"], expected["first_failure"], "{name}: first_failure");
}

#[test]
fn every_vector_gets_its_expected_verdict_and_checks() {
    for v in &VECTORS {
        let verdict = v.verify();
        let expected = v.expected();
        assert_matches_expected(v.name, &verdict, &expected);
        let c = &verdict.claims;
        assert_eq!(c.driver_version.as_deref(), expected["driver_version"].as_str(), "{}", v.name);
        assert_eq!(c.vbios_version.as_deref(), expected["vbios_version"].as_str(), "{}", v.name);
        assert_eq!(c.project.as_deref(), expected["project"].as_str());
        assert_eq!(c.project_sku.as_deref(), expected["project_sku"].as_str());
        assert_eq!(c.chip_sku.as_deref(), expected["chip_sku"].as_str());
        assert_eq!(c.vbios_rim_id.as_deref(), expected["vbios_rim_id"].as_str());
        assert_eq!(c.hwmodel.as_deref(), expected["hwmodel"].as_str());
        assert_eq!(c.architecture.as_deref(), expected["arch"].as_str());
        assert_eq!(c.request_nonce.as_deref(), expected["request_nonce"].as_str());
        assert_eq!(c.responder_nonce.as_deref(), expected["responder_nonce"].as_str());
        assert_eq!(c.nvdec0_status.as_deref(), expected["nvdec0_status"].as_str());
        assert_eq!(c.fwid.as_deref(), expected["fwid"].as_str());
        assert_eq!(c.leaf_cert_fwid.as_deref(), expected["leaf_cert_fwid"].as_str());
        let types: Vec<u64> = c.opaque.as_ref().unwrap().types.iter().map(|t| u64::from(*t)).collect();
        let exp_types: Vec<u64> = expected["opaque_types_present"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| t.as_u64().unwrap())
            .collect();
        assert_eq!(types, exp_types, "{}", v.name);
        assert_eq!(c.measurements.len() as u64, expected["number_of_blocks"].as_u64().unwrap());
        assert_eq!(c.carried_root_is_pinned, Some(true));
        assert_eq!(c.revocation.summary, "not_checked");
        let report = nvidia::SpdmReport::parse(v.report_bin).unwrap();
        assert_eq!(report.signed_len as u64, expected["signed_len"].as_u64().unwrap());
        assert_eq!(
            report.signed_len as u64,
            expected["layout"]["signature"].as_u64().unwrap()
        );
    }
}

#[test]
fn hex_and_raw_reports_are_the_same() {
    for v in &VECTORS {
        assert_eq!(nvidia::report_from_file(v.report_hex).unwrap(), v.report_bin);
        assert_eq!(nvidia::report_from_file(v.report_bin).unwrap(), v.report_bin);
        let mut with_newline = v.report_hex.to_vec();
        with_newline.push(b'\n');
        assert_eq!(nvidia::report_from_file(&with_newline).unwrap(), v.report_bin);
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
        assert_eq!(rim.colloquial_version, exp["colloquial_version"].as_str().unwrap());
        assert_eq!(rim.product, exp["product"].as_str().unwrap());
        let active: Vec<u64> = rim.active_indices.iter().map(|i| u64::from(*i)).collect();
        let exp_active: Vec<u64> =
            exp["active_indices"].as_array().unwrap().iter().map(|i| i.as_u64().unwrap()).collect();
        assert_eq!(active, exp_active);
    }
    let compared: usize = c.rims.iter().map(|r| r.active_indices.len()).sum();
    assert_eq!(compared as u64, expected["golden_indices_compared"].as_u64().unwrap());
}
