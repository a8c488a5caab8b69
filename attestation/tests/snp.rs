//! SEV-SNP: every genuine vector gets its expected verdict, and every accept has reject twins.

mod common;

use common::*;
use confidant_attestation::{
    CertTableEntry, CertType, Check, Claims, Evidence, Policy, Product, SnpClaims, SnpEvidence,
    Timestamp, Verdict, snp, verify,
};

fn at(text: &str) -> Timestamp {
    Timestamp::parse_rfc3339(text).expect("timestamp")
}

fn snp_claims(verdict: &Verdict) -> &SnpClaims {
    match &verdict.claims {
        Some(Claims::Snp(c)) => c,
        other => panic!("expected SNP claims, got {other:?}"),
    }
}

fn checks(verdict: &Verdict) -> Vec<Check> {
    verdict.failures.iter().map(|f| f.check).collect()
}

/// The vector's expected verdict under the default policy: accept unless DEBUG is set, which
/// the default policy forbids (the vectors' chain and signature are all valid).
#[test]
fn every_vector_gets_its_expected_verdict() {
    for vector in SNP_VECTORS {
        let expected = vector.expected();
        assert_eq!(
            expected["expected_signature_and_chain"], "valid",
            "{}",
            vector.name
        );
        let debug = vector.field("policy_decoded")["debug"]
            .as_bool()
            .expect("debug");
        for evidence in [vector.evidence(), vector.evidence_with_chain()] {
            let verdict = verify(
                &evidence,
                None,
                &Policy::dangerous_authenticity_only(),
                vector.now(),
            );
            if debug {
                assert_eq!(
                    checks(&verdict),
                    vec![Check::Debug],
                    "{}: {verdict:#?}",
                    vector.name
                );
            } else {
                assert!(
                    verdict.is_accept(),
                    "{}: {:#?}",
                    vector.name,
                    verdict.failures
                );
            }
            let claims = snp_claims(&verdict);
            assert_eq!(
                hex::encode(claims.measurement),
                vector.field("measurement"),
                "{}",
                vector.name
            );
            assert_eq!(
                hex::encode(claims.report_data),
                vector.field("report_data"),
                "{}",
                vector.name
            );
            assert_eq!(
                hex::encode(claims.chip_id),
                vector.field("chip_id"),
                "{}",
                vector.name
            );
            assert_eq!(claims.version, vector.field("version"), "{}", vector.name);
            assert_eq!(claims.vmpl, vector.field("vmpl"), "{}", vector.name);
            assert_eq!(claims.policy.debug, debug, "{}", vector.name);
            let tcb = vector.field("reported_tcb");
            assert_eq!(
                claims.reported_tcb.bootloader, tcb["bootloader"],
                "{}",
                vector.name
            );
            assert_eq!(claims.reported_tcb.snp, tcb["snp"], "{}", vector.name);
            assert_eq!(
                claims.reported_tcb.microcode, tcb["microcode"],
                "{}",
                vector.name
            );
            assert_eq!(claims.reported_tcb.raw, tcb["raw"], "{}", vector.name);
            assert_eq!(verdict.debug, Some(debug));
            assert_eq!(
                verdict.measurement.as_deref(),
                vector.field("measurement").as_str()
            );
        }
    }
}

#[test]
fn products_are_resolved() {
    let cases = [
        (VIRTEE_MILAN_V2, Product::Milan),
        (TRUSTEE_GENOA_V3, Product::Genoa),
        (TRUSTEE_MILAN_V3_VLEK, Product::Milan),
        (GCP_MILAN_V5, Product::Milan),
    ];
    for (vector, product) in cases {
        let verdict = verify(
            &vector.evidence(),
            None,
            &Policy::dangerous_authenticity_only(),
            vector.now(),
        );
        assert_eq!(verdict.product, Some(product), "{}", vector.name);
    }
}

#[test]
fn v3_and_later_expose_cpuid() {
    let verdict = verify(
        &TRUSTEE_GENOA_V3.evidence(),
        None,
        &Policy::dangerous_authenticity_only(),
        TRUSTEE_GENOA_V3.now(),
    );
    let cpuid = snp_claims(&verdict).cpuid.expect("v3 has CPUID");
    assert_eq!(
        (cpuid.family, cpuid.model, cpuid.stepping),
        (0x19, 0xA0, 0x02)
    );
    let verdict = verify(
        &VIRTEE_MILAN_V2.evidence(),
        None,
        &Policy::dangerous_authenticity_only(),
        VIRTEE_MILAN_V2.now(),
    );
    assert_eq!(snp_claims(&verdict).cpuid, None);
}

#[test]
fn the_debug_vector_is_accepted_when_debug_is_allowed() {
    let mut policy = Policy::dangerous_authenticity_only();
    policy.allow_debug = true;
    let verdict = verify(
        &GOSEV_MILAN_V2_DEBUG.evidence(),
        None,
        &policy,
        GOSEV_MILAN_V2_DEBUG.now(),
    );
    assert!(verdict.is_accept(), "{:#?}", verdict.failures);
}

#[test]
fn trustee_json_evidence_is_accepted() {
    // Trustee's own SnpEvidence shape, wrapped with our `tee` tag.
    let mut value: serde_json::Value = serde_json::from_str(GENOA_TRUSTEE_EVIDENCE).expect("json");
    value["tee"] = "snp".into();
    let evidence = Evidence::from_json(value.to_string().as_bytes()).expect("evidence parses");
    let verdict = verify(
        &evidence,
        None,
        &Policy::dangerous_authenticity_only(),
        TRUSTEE_GENOA_V3.now(),
    );
    assert!(verdict.is_accept(), "{:#?}", verdict.failures);
    // And it round-trips through our serializer to the same bytes.
    let again =
        Evidence::from_json(evidence.to_json().expect("serializes").as_bytes()).expect("parses");
    assert_eq!(again, evidence);
    match &evidence {
        Evidence::Snp(e) => assert_eq!(e.report(), TRUSTEE_GENOA_V3.report),
        other => panic!("{other:?}"),
    }
}

// ---- reject twins ----

#[test]
fn twin_bit_flip_in_signed_region() {
    for vector in SNP_VECTORS {
        // One flip in report_data (0x50), one in the measurement (0x90), one in the TCB (0x180).
        for offset in [0x50usize, 0x90, 0x180] {
            let mut report = vector.report.to_vec();
            report[offset] ^= 0x01;
            let verdict = verify(
                &vector.evidence_from(&report),
                None,
                &Policy::dangerous_authenticity_only(),
                vector.now(),
            );
            assert!(!verdict.is_accept(), "{} flip at {offset:#x}", vector.name);
            assert!(
                verdict.failed(Check::ReportSignature) || verdict.failed(Check::EvidenceFormat),
                "{} flip at {offset:#x}: {:#?}",
                vector.name,
                verdict.failures
            );
        }
    }
}

#[test]
fn twin_wrong_vcek() {
    // The debug vector's VCEK (another Milan chip) presented with the virtee report.
    let evidence = Evidence::Snp(
        SnpEvidence::from_parts(VIRTEE_MILAN_V2.report, GOSEV_MILAN_V2_DEBUG.vek, None)
            .expect("parts"),
    );
    let verdict = verify(
        &evidence,
        None,
        &Policy::dangerous_authenticity_only(),
        VIRTEE_MILAN_V2.now(),
    );
    let failed = checks(&verdict);
    for check in [Check::ReportSignature, Check::TcbExtensions, Check::ChipId] {
        assert!(failed.contains(&check), "{check:?} missing from {failed:?}");
    }
    // The chain itself is fine: the wrong VCEK is a genuine one.
    assert!(!failed.contains(&Check::CertificateChain), "{failed:?}");
}

#[test]
fn twin_genoa_vcek_on_milan_chain() {
    // A Genoa VCEK with the Milan ASK/ARK carried alongside, for a Milan report.
    let evidence = Evidence::Snp(
        SnpEvidence::from_parts(
            VIRTEE_MILAN_V2.report,
            TRUSTEE_GENOA_V3.vek,
            Some(MILAN_ASK_ARK),
        )
        .expect("parts"),
    );
    let verdict = verify(
        &evidence,
        None,
        &Policy::dangerous_authenticity_only(),
        VIRTEE_MILAN_V2.now(),
    );
    let failed = checks(&verdict);
    assert!(failed.contains(&Check::RootPinning), "{failed:?}");
    assert!(failed.contains(&Check::ReportSignature), "{failed:?}");

    // A Milan VCEK with the Genoa ASK/ARK carried: the carried chain is not Milan's.
    let evidence = Evidence::Snp(
        SnpEvidence::from_parts(
            VIRTEE_MILAN_V2.report,
            VIRTEE_MILAN_V2.vek,
            Some(GENOA_ASK_ARK),
        )
        .expect("parts"),
    );
    let verdict = verify(
        &evidence,
        None,
        &Policy::dangerous_authenticity_only(),
        VIRTEE_MILAN_V2.now(),
    );
    assert_eq!(
        checks(&verdict),
        vec![Check::RootPinning, Check::RootPinning],
        "{verdict:#?}"
    );

    // A Genoa VCEK with a v3 Milan-CPUID report: the product is inconsistent.
    let evidence = Evidence::Snp(
        SnpEvidence::from_parts(TRUSTEE_MILAN_V3_VLEK.report, TRUSTEE_GENOA_V3.vek, None)
            .expect("parts"),
    );
    let verdict = verify(
        &evidence,
        None,
        &Policy::dangerous_authenticity_only(),
        TRUSTEE_GENOA_V3.now(),
    );
    assert!(!verdict.is_accept());
}

#[test]
fn twin_vlek_with_ordinary_ask() {
    // The VLEK report with the ordinary Milan ASK (not the ASVK) carried as its intermediate.
    let evidence = Evidence::Snp(
        SnpEvidence::from_parts(
            TRUSTEE_MILAN_V3_VLEK.report,
            TRUSTEE_MILAN_V3_VLEK.vek,
            Some(MILAN_ASK_ARK),
        )
        .expect("parts"),
    );
    let verdict = verify(
        &evidence,
        None,
        &Policy::dangerous_authenticity_only(),
        TRUSTEE_MILAN_V3_VLEK.now(),
    );
    assert_eq!(checks(&verdict), vec![Check::RootPinning], "{verdict:#?}");

    // The VLEK relabelled as a VCEK: the signed report names a VLEK, so there is no VLEK.
    let evidence = Evidence::Snp(SnpEvidence::new(
        TRUSTEE_MILAN_V3_VLEK.report.to_vec(),
        vec![CertTableEntry::new(
            CertType::Vcek,
            TRUSTEE_MILAN_V3_VLEK.vek.to_vec(),
        )],
    ));
    let verdict = verify(
        &evidence,
        None,
        &Policy::dangerous_authenticity_only(),
        TRUSTEE_MILAN_V3_VLEK.now(),
    );
    assert!(verdict.failed(Check::EndorsementKey), "{verdict:#?}");

    // A VCEK presented for the VLEK-signed report is refused the same way.
    let evidence = Evidence::Snp(SnpEvidence::new(
        TRUSTEE_MILAN_V3_VLEK.report.to_vec(),
        vec![CertTableEntry::new(
            CertType::Vlek,
            VIRTEE_MILAN_V2.vek.to_vec(),
        )],
    ));
    let verdict = verify(
        &evidence,
        None,
        &Policy::dangerous_authenticity_only(),
        TRUSTEE_MILAN_V3_VLEK.now(),
    );
    assert!(verdict.failed(Check::CertificateChain), "{verdict:#?}");
    assert!(verdict.failed(Check::ReportSignature), "{verdict:#?}");
}

#[test]
fn twin_outside_validity_window() {
    let cases = [
        // The VLEK's one-year life ended 2025-12-10.
        (TRUSTEE_MILAN_V3_VLEK, "2026-01-01T00:00:00Z"),
        // The GCP VCEK was issued 2025-12-05.
        (GCP_MILAN_V5, "2025-12-01T00:00:00Z"),
        // The virtee VCEK expires 2030-04-03.
        (VIRTEE_MILAN_V2, "2030-04-04T00:00:00Z"),
        (TRUSTEE_GENOA_V3, "2025-05-01T00:00:00Z"),
    ];
    for (vector, time) in cases {
        let verdict = verify(
            &vector.evidence(),
            None,
            &Policy::dangerous_authenticity_only(),
            at(time),
        );
        assert_eq!(
            checks(&verdict),
            vec![Check::CertificateValidity],
            "{}: {verdict:#?}",
            vector.name
        );
    }
}

#[test]
fn twin_debug_under_default_policy() {
    let verdict = verify(
        &GOSEV_MILAN_V2_DEBUG.evidence(),
        None,
        &Policy::dangerous_authenticity_only(),
        GOSEV_MILAN_V2_DEBUG.now(),
    );
    assert!(!verdict.is_accept());
    assert_eq!(checks(&verdict), vec![Check::Debug]);
    assert_eq!(verdict.debug, Some(true));
}

#[test]
fn twin_wrong_measurement() {
    for vector in SNP_VECTORS {
        let right = vector
            .field("measurement")
            .as_str()
            .expect("hex")
            .to_owned();
        let mut wrong = hex::decode(&right).expect("hex");
        wrong[0] ^= 0xFF;
        let policy = Policy::from_toml(&format!(
            "{ANY_VMPL_ANY_TCB}allow_debug = true\nmeasurements = [\"{}\"]",
            hex::encode(wrong)
        ))
        .expect("policy");
        let verdict = verify(&vector.evidence(), None, &policy, vector.now());
        assert_eq!(
            checks(&verdict),
            vec![Check::Measurement],
            "{}",
            vector.name
        );
        let policy = Policy::from_toml(&format!(
            "{ANY_VMPL_ANY_TCB}allow_debug = true\nmeasurements = [\"{right}\"]"
        ))
        .expect("policy");
        assert!(
            verify(&vector.evidence(), None, &policy, vector.now()).is_accept(),
            "{}",
            vector.name
        );
    }
}

#[test]
fn twin_wrong_report_data() {
    for vector in SNP_VECTORS {
        let right = vector
            .field("report_data")
            .as_str()
            .expect("hex")
            .to_owned();
        let mut wrong = hex::decode(&right).expect("hex");
        wrong[63] ^= 0x01;
        let policy = Policy::from_toml(&format!(
            "{ANY_GUEST}{ANY_VMPL_ANY_TCB}allow_debug = true\nreport_data = \"{}\"",
            hex::encode(wrong)
        ))
        .expect("policy");
        let verdict = verify(&vector.evidence(), None, &policy, vector.now());
        assert_eq!(checks(&verdict), vec![Check::ReportData], "{}", vector.name);
        let policy = Policy::from_toml(&format!(
            "{ANY_GUEST}{ANY_VMPL_ANY_TCB}allow_debug = true\nreport_data = \"{right}\""
        ))
        .expect("policy");
        assert!(
            verify(&vector.evidence(), None, &policy, vector.now()).is_accept(),
            "{}",
            vector.name
        );
    }
}

#[test]
fn short_report_data_is_zero_padded() {
    // The debug vector's report_data is 0102030405 then zeros.
    let mut policy = Policy::from_toml(&format!(
        "{ANY_GUEST}min_tcb = \"any\"\nallow_debug = true\nreport_data = \"0102030405\""
    ))
    .expect("policy");
    assert!(
        verify(
            &GOSEV_MILAN_V2_DEBUG.evidence(),
            None,
            &policy,
            GOSEV_MILAN_V2_DEBUG.now()
        )
        .is_accept()
    );
    policy.report_data = Some(Policy::report_data_from_hex("01020304").expect("hex"));
    assert!(
        !verify(
            &GOSEV_MILAN_V2_DEBUG.evidence(),
            None,
            &policy,
            GOSEV_MILAN_V2_DEBUG.now()
        )
        .is_accept()
    );
}

#[test]
fn twin_vmpl_and_product_and_tcb_policies() {
    let vmpl0 =
        Policy::from_toml(&format!("{ANY_GUEST}vmpls = [0]\nmin_tcb = \"any\"")).expect("policy");
    let verdict = verify(
        &GCP_MILAN_V5_REPORTDATA.evidence(),
        None,
        &vmpl0,
        GCP_MILAN_V5_REPORTDATA.now(),
    );
    assert_eq!(checks(&verdict), vec![Check::Vmpl]);
    assert!(verify(&GCP_MILAN_V5.evidence(), None, &vmpl0, GCP_MILAN_V5.now()).is_accept());

    let genoa_only = Policy::from_toml(&format!(
        "{ANY_GUEST}{ANY_VMPL_ANY_TCB}products = [\"Genoa\"]"
    ))
    .expect("policy");
    let verdict = verify(
        &VIRTEE_MILAN_V2.evidence(),
        None,
        &genoa_only,
        VIRTEE_MILAN_V2.now(),
    );
    assert_eq!(checks(&verdict), vec![Check::AllowedProduct]);
    assert!(
        verify(
            &TRUSTEE_GENOA_V3.evidence(),
            None,
            &genoa_only,
            TRUSTEE_GENOA_V3.now()
        )
        .is_accept()
    );

    // virtee reports bootloader 3, snp 8, microcode 115.
    let floor = Policy::from_toml(&format!(
        "{ANY_GUEST}[min_tcb]\nbootloader = 3\nsnp = 8\nmicrocode = 115"
    ))
    .expect("policy");
    assert!(
        verify(
            &VIRTEE_MILAN_V2.evidence(),
            None,
            &floor,
            VIRTEE_MILAN_V2.now()
        )
        .is_accept()
    );
    let stale = Policy::from_toml(&format!("{ANY_GUEST}[min_tcb]\nsnp = 9\nmicrocode = 116"))
        .expect("policy");
    let verdict = verify(
        &VIRTEE_MILAN_V2.evidence(),
        None,
        &stale,
        VIRTEE_MILAN_V2.now(),
    );
    assert_eq!(checks(&verdict), vec![Check::MinTcb, Check::MinTcb]);
}

#[test]
fn every_failure_is_listed() {
    // Wrong VCEK, debug, a wrong measurement and an expired chain, all at once.
    let evidence = Evidence::Snp(
        SnpEvidence::from_parts(GOSEV_MILAN_V2_DEBUG.report, VIRTEE_MILAN_V2.vek, None)
            .expect("parts"),
    );
    let policy =
        Policy::from_toml(&format!("measurements = [\"{}\"]", "00".repeat(48))).expect("policy");
    let verdict = verify(&evidence, None, &policy, at("2031-01-01T00:00:00Z"));
    let failed = checks(&verdict);
    for check in [
        Check::CertificateValidity,
        Check::ReportSignature,
        Check::TcbExtensions,
        Check::ChipId,
        Check::Debug,
        Check::Measurement,
    ] {
        assert!(failed.contains(&check), "{check:?} missing from {failed:?}");
    }
    let json: serde_json::Value = serde_json::from_str(&verdict.to_json_pretty()).expect("json");
    assert_eq!(json["verdict"], "reject");
    assert!(json["failures"].as_array().expect("list").len() >= 6);
    for key in [
        "tee",
        "product",
        "measurement",
        "report_data",
        "debug",
        "tcb",
    ] {
        assert!(json.get(key).is_some(), "verdict JSON lacks {key}");
    }
}

#[test]
fn missing_or_garbage_reports_are_rejected_not_panics() {
    for report in [
        &[][..],
        &[0u8; 100][..],
        &[0xFF; 1184][..],
        &[0u8; 1184][..],
    ] {
        let verdict = verify(
            &VIRTEE_MILAN_V2.evidence_from(report),
            None,
            &Policy::dangerous_authenticity_only(),
            VIRTEE_MILAN_V2.now(),
        );
        assert!(verdict.failed(Check::EvidenceFormat), "{verdict:#?}");
    }
    let no_vek = Evidence::Snp(SnpEvidence::new(
        VIRTEE_MILAN_V2.report.to_vec(),
        Vec::new(),
    ));
    let verdict = verify(
        &no_vek,
        None,
        &Policy::dangerous_authenticity_only(),
        VIRTEE_MILAN_V2.now(),
    );
    assert!(verdict.failed(Check::EndorsementKey));
    let garbage_vek = Evidence::Snp(SnpEvidence::new(
        VIRTEE_MILAN_V2.report.to_vec(),
        vec![CertTableEntry::new(
            CertType::Vcek,
            vec![0x30, 0x03, 0x02, 0x01, 0x00],
        )],
    ));
    assert!(
        verify(
            &garbage_vek,
            None,
            &Policy::dangerous_authenticity_only(),
            VIRTEE_MILAN_V2.now()
        )
        .failed(Check::EndorsementKey)
    );
}

#[test]
fn turin_vcek_chains_to_the_pinned_turin_roots() {
    assert_eq!(
        snp::verify_vek(TURIN_VCEK, at("2026-01-01T00:00:00Z")),
        Ok(Product::Turin)
    );
    let expired = snp::verify_vek(TURIN_VCEK, at("2032-01-01T00:00:00Z")).expect_err("expired");
    assert!(
        expired
            .iter()
            .all(|f| f.check == Check::CertificateValidity)
    );
    assert_eq!(
        snp::verify_vek(TRUSTEE_GENOA_V3.vek, TRUSTEE_GENOA_V3.now()),
        Ok(Product::Genoa)
    );
    assert_eq!(
        snp::verify_vek(TRUSTEE_MILAN_V3_VLEK.vek, TRUSTEE_MILAN_V3_VLEK.now()),
        Ok(Product::Milan)
    );
}

#[test]
fn pinned_ark_fingerprints_are_published() {
    assert_eq!(
        snp::ark_sha256(Product::Milan),
        "69d063b45344d26a2e94e1f4210de49ef555308287d4c174445c95639a540bcd"
    );
}

/// Fails before issue 16: a policy with a pinned measurement and nothing else accepted the
/// genuine report at any VMPL with any TCB, and an unpinned policy accepted any guest.
#[test]
fn a_genuine_report_needs_a_pinned_measurement_vmpl_zero_and_a_tcb_floor() {
    let vector = GCP_MILAN_V5_REPORTDATA; // VMPL 1
    let measurement = vector
        .field("measurement")
        .as_str()
        .expect("hex")
        .to_owned();
    let verdict = verify(&vector.evidence(), None, &Policy::default(), vector.now());
    assert!(verdict.failed(Check::Measurement), "{verdict:#?}");

    let pinned = Policy::from_toml(&format!("measurements = [\"{measurement}\"]")).expect("policy");
    let verdict = verify(&vector.evidence(), None, &pinned, vector.now());
    assert_eq!(
        checks(&verdict),
        vec![Check::Vmpl, Check::MinTcb],
        "{verdict:#?}"
    );
    assert!(verdict.failures[1].detail.contains("min_tcb"));

    let at_vmpl1 = Policy::from_toml(&format!(
        "measurements = [\"{measurement}\"]\nvmpls = [1]\nmin_tcb = \"any\""
    ))
    .expect("policy");
    assert!(verify(&vector.evidence(), None, &at_vmpl1, vector.now()).is_accept());

    // The VMPL 0 report of the same guest passes with the defaults and a floor.
    let vmpl0 = GCP_MILAN_V5;
    let floor = Policy::from_toml(&format!(
        "measurements = [\"{}\"]\n[min_tcb]\nsnp = 1",
        vmpl0.field("measurement").as_str().expect("hex")
    ))
    .expect("policy");
    let verdict = verify(&vmpl0.evidence(), None, &floor, vmpl0.now());
    assert!(verdict.is_accept(), "{verdict:#?}");
    assert!(verdict.policy_applied);
}

/// Without a policy the verdict says so: authenticity only.
#[test]
fn authenticity_only_verdicts_say_no_policy_was_applied() {
    let verdict = verify(
        &VIRTEE_MILAN_V2.evidence(),
        None,
        &Policy::dangerous_authenticity_only(),
        VIRTEE_MILAN_V2.now(),
    );
    assert!(verdict.is_accept());
    assert!(!verdict.policy_applied);
    let json: serde_json::Value = serde_json::from_str(&verdict.to_json_pretty()).expect("json");
    assert_eq!(json["policy_applied"], false);
}
