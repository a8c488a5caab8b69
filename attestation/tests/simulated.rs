//! The simulated TEE: rejected by default, accepted only with `allow_simulated = true`, and
//! held to the same checks as genuine SNP evidence otherwise.

use confidant_attestation::{
    CertType, Check, Claims, Evidence, Policy, SimulatedTee, SnpEvidence, TeeKind, Timestamp,
    verify,
};

const REPORT_DATA: [u8; 64] = [0xAB; 64];
const MEASUREMENT: [u8; 48] = [0x5A; 48];

fn now() -> Timestamp {
    Timestamp::parse_rfc3339("2026-01-01T00:00:00Z").expect("time")
}

fn tee() -> &'static SimulatedTee {
    SimulatedTee::shared().expect("simulated TEE generates")
}

/// `measurements = [MEASUREMENT]`, the line every policy here starts with.
fn pin() -> String {
    format!("measurements = [\"{}\"]\n", hex::encode(MEASUREMENT))
}

/// Pins the measurement and allows simulated evidence; no `min_tcb`, which simulated
/// evidence does not need (it has no TCB worth judging).
fn allow_simulated() -> Policy {
    Policy::from_toml(&format!("{}allow_simulated = true", pin())).expect("policy")
}

#[test]
fn simulated_is_rejected_by_the_default_policy() {
    let evidence = tee().attest(&REPORT_DATA, &MEASUREMENT).expect("attest");
    let mut pinned = Policy::default();
    pinned.measurements = vec![MEASUREMENT];
    let verdict = verify(&evidence, None, &pinned, now());
    assert!(!verdict.is_accept());
    assert_eq!(verdict.failures.len(), 1, "{:#?}", verdict.failures);
    assert_eq!(verdict.failures[0].check, Check::Simulated);
    assert_eq!(verdict.tee, TeeKind::Simulated);
    // A policy file that leaves the key unset is the default.
    let verdict = verify(
        &evidence,
        None,
        &Policy::from_toml(&format!("{}allow_debug = false", pin())).expect("policy"),
        now(),
    );
    assert!(verdict.failed(Check::Simulated));
}

#[test]
fn simulated_is_accepted_only_when_allowed() {
    let evidence = tee().attest(&REPORT_DATA, &MEASUREMENT).expect("attest");
    let verdict = verify(&evidence, None, &allow_simulated(), now());
    assert!(verdict.is_accept(), "{:#?}", verdict.failures);
    let json: serde_json::Value = serde_json::from_str(&verdict.to_json_pretty()).expect("json");
    assert_eq!(json["tee"], "simulated");
    assert_eq!(json["verdict"], "accept");
    assert_eq!(verdict.measurement, Some(hex::encode(MEASUREMENT)));
    assert_eq!(verdict.report_data, Some(hex::encode(REPORT_DATA)));
    match &verdict.claims {
        Some(Claims::Snp(c)) => assert_eq!(c.product, None),
        other => panic!("{other:?}"),
    }
}

#[test]
fn simulated_binds_measurement_and_report_data() {
    let evidence = tee().attest(&REPORT_DATA, &MEASUREMENT).expect("attest");
    let policy = Policy::from_toml(&format!(
        "allow_simulated = true\nmeasurements = [\"{}\"]\nreport_data = \"{}\"",
        hex::encode(MEASUREMENT),
        hex::encode(REPORT_DATA)
    ))
    .expect("policy");
    assert!(verify(&evidence, None, &policy, now()).is_accept());
    let other = tee().attest(&[0u8; 64], &[1u8; 48]).expect("attest");
    let verdict = verify(&other, None, &policy, now());
    let failed: Vec<Check> = verdict.failures.iter().map(|f| f.check).collect();
    assert_eq!(failed, vec![Check::Measurement, Check::ReportData]);
}

#[test]
fn simulated_round_trips_through_json() {
    let evidence = tee().attest(&REPORT_DATA, &MEASUREMENT).expect("attest");
    let json = evidence.to_json().expect("serializes");
    let value: serde_json::Value = serde_json::from_str(&json).expect("json");
    assert_eq!(value["tee"], "simulated");
    assert_eq!(value["attestation_report"]["version"], 3);
    let parsed = Evidence::from_json(json.as_bytes()).expect("parses");
    assert_eq!(parsed, evidence);
    assert!(verify(&parsed, None, &allow_simulated(), now()).is_accept());
}

#[test]
fn simulated_relabelled_as_snp_is_rejected() {
    // Claiming the simulated chain is genuine SNP: its ARK is not a pinned AMD root.
    let Evidence::Simulated(inner) = tee().attest(&REPORT_DATA, &MEASUREMENT).expect("attest")
    else {
        panic!("simulated evidence");
    };
    let verdict = verify(&Evidence::Snp(inner), None, &allow_simulated(), now());
    assert!(!verdict.is_accept());
    assert!(verdict.failed(Check::Product), "{:#?}", verdict.failures);
}

#[test]
fn tampered_simulated_report_is_rejected() {
    let report = tee().sign_report(&REPORT_DATA, &MEASUREMENT).expect("sign");
    let Evidence::Simulated(genuine) = tee().attest(&REPORT_DATA, &MEASUREMENT).expect("attest")
    else {
        panic!("simulated evidence");
    };
    let mut flipped = report.clone();
    flipped[0x90] ^= 0x80;
    let evidence = Evidence::Simulated(SnpEvidence::new(flipped, genuine.cert_chain().to_vec()));
    let verdict = verify(&evidence, None, &allow_simulated(), now());
    assert!(
        verdict.failed(Check::ReportSignature),
        "{:#?}",
        verdict.failures
    );

    // Without its carried ARK the simulated chain has no anchor at all.
    let chain: Vec<_> = genuine
        .cert_chain()
        .iter()
        .filter(|e| e.cert_type != CertType::Ark)
        .cloned()
        .collect();
    let evidence = Evidence::Simulated(SnpEvidence::new(report, chain));
    assert!(verify(&evidence, None, &allow_simulated(), now()).failed(Check::CertificateChain));
}

#[test]
fn simulated_root_can_be_pinned() {
    let evidence = tee().attest(&REPORT_DATA, &MEASUREMENT).expect("attest");
    let pinned = Policy::from_toml(&format!(
        "{}allow_simulated = true\nsimulated_ark_sha256 = [\"{}\"]",
        pin(),
        hex::encode(tee().ark_sha256())
    ))
    .expect("policy");
    assert!(verify(&evidence, None, &pinned, now()).is_accept());
    let other = Policy::from_toml(&format!(
        "{}allow_simulated = true\nsimulated_ark_sha256 = [\"{}\"]",
        pin(),
        "00".repeat(32)
    ))
    .expect("policy");
    assert!(verify(&evidence, None, &other, now()).failed(Check::SimulatedRoot));
}

#[test]
fn evidence_age_is_enforced_when_asked() {
    let Evidence::Simulated(inner) = tee().attest(&REPORT_DATA, &MEASUREMENT).expect("attest")
    else {
        panic!("simulated evidence");
    };
    let policy = Policy::from_toml(&format!(
        "{}allow_simulated = true\nmax_evidence_age_secs = 600",
        pin()
    ))
    .expect("policy");
    let undated = Evidence::Simulated(inner.clone());
    assert!(verify(&undated, None, &policy, now()).failed(Check::EvidenceAge));
    let fresh = Evidence::Simulated(inner.clone().with_generated_at(now()));
    assert!(verify(&fresh, None, &policy, now().saturating_add(60)).is_accept());
    assert!(verify(&fresh, None, &policy, now().saturating_add(601)).failed(Check::EvidenceAge));
    let future = Evidence::Simulated(inner.with_generated_at(now().saturating_add(3600)));
    assert!(verify(&future, None, &policy, now()).failed(Check::EvidenceAge));
}

/// Fails before issue 16: a policy without measurements accepted any simulated guest.
#[test]
fn simulated_evidence_needs_a_pinned_measurement_but_no_tcb() {
    let evidence = tee().attest(&REPORT_DATA, &MEASUREMENT).expect("attest");
    let mut unpinned = Policy::default();
    unpinned.dangerous_allow_simulated = true;
    let verdict = verify(&evidence, None, &unpinned, now());
    let failed: Vec<Check> = verdict.failures.iter().map(|f| f.check).collect();
    assert_eq!(failed, vec![Check::Measurement], "{verdict:#?}");
    assert!(Policy::from_toml("allow_simulated = true").is_err());
    // Pinned, with no min_tcb: simulated evidence has no TCB to judge.
    assert!(verify(&evidence, None, &allow_simulated(), now()).is_accept());
}

/// The broker keeps `Appraised` claims instead of the evidence and judges each resource's
/// release policy on them: that must give the verdict re-verifying the evidence gives.
#[test]
fn judging_kept_claims_equals_verifying_the_evidence() {
    let evidence = tee().attest(&REPORT_DATA, &MEASUREMENT).expect("attest");
    let mut base = Policy::dangerous_authenticity_only();
    base.dangerous_allow_simulated = true;
    let (verdict, kept) = confidant_attestation::verify_and_keep(&evidence, None, &base, now());
    assert!(verdict.is_accept(), "{:#?}", verdict.failures);
    let kept = kept.expect("accepted evidence is kept");
    assert_eq!(kept.tee(), TeeKind::Simulated);
    assert_eq!(kept.verified_at(), now());
    let later = Timestamp::parse_rfc3339("2026-01-01T00:04:00Z").expect("time");
    for policy in [
        allow_simulated(),
        Policy::from_toml(&pin()).expect("policy"),
        Policy::from_toml(&format!(
            "measurements = [\"{}\"]\nallow_simulated = true",
            "11".repeat(48)
        ))
        .expect("policy"),
        Policy::from_toml(&format!(
            "{}allow_simulated = true\nreport_data = \"00\"",
            pin()
        ))
        .expect("policy"),
    ] {
        let judged = kept.judge(&policy, later);
        let verified = verify(&evidence, None, &policy, later);
        assert_eq!(judged.verdict, verified.verdict, "{policy:?}");
        assert_eq!(judged.failures, verified.failures, "{policy:?}");
        assert_eq!(judged.claims, verified.claims);
    }
    // Rejected evidence is not kept.
    let (verdict, kept) =
        confidant_attestation::verify_and_keep(&evidence, None, &allow_simulated(), now());
    assert!(verdict.is_accept());
    assert!(kept.is_some());
    let mut tampered = match evidence {
        Evidence::Simulated(e) => e,
        _ => unreachable!("simulated"),
    }
    .report()
    .to_vec();
    tampered[0x90] ^= 1;
    let tampered = Evidence::Simulated(SnpEvidence::new(
        tampered,
        match tee().attest(&REPORT_DATA, &MEASUREMENT).expect("attest") {
            Evidence::Simulated(e) => e.cert_chain().to_vec(),
            _ => unreachable!("simulated"),
        },
    ));
    let (verdict, kept) = confidant_attestation::verify_and_keep(&tampered, None, &base, now());
    assert!(!verdict.is_accept());
    assert!(kept.is_none());
}
