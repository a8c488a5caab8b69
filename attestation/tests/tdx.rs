//! Intel TDX: every genuine vector gets its expected verdict, with reject twins.

mod common;

use common::*;
use confidant_attestation::{
    Check, Claims, Evidence, Policy, TdxClaims, TdxEvidence, TeeKind, Verdict, verify,
};

fn tdx_claims(verdict: &Verdict) -> &TdxClaims {
    match &verdict.claims {
        Some(Claims::Tdx(c)) => c,
        other => panic!("expected TDX claims, got {other:?}"),
    }
}

fn checks(verdict: &Verdict) -> Vec<Check> {
    verdict.failures.iter().map(|f| f.check).collect()
}

#[test]
fn every_vector_gets_its_expected_verdict() {
    for vector in TDX_VECTORS {
        let verdict = verify(&vector.evidence(), None, &Policy::default(), vector.now());
        let expected = &vector.expected()["dcap_qvl_0_7_1"]["quote.bin"]["at_pinned_time"];
        let claims = tdx_claims(&verdict);
        if expected["result"] == "ok" {
            assert!(
                verdict.is_accept(),
                "{}: {:#?}",
                vector.name,
                verdict.failures
            );
            assert_eq!(
                claims.tcb_status.as_deref(),
                expected["tcb_status"].as_str(),
                "{}",
                vector.name
            );
            assert!(claims.advisory_ids.is_empty());
        } else {
            // The only expected error is "Debug mode is enabled", which is our policy rule.
            assert_eq!(expected["error"], "Debug mode is enabled");
            assert_eq!(
                checks(&verdict),
                vec![Check::Debug],
                "{}: {verdict:#?}",
                vector.name
            );
            assert_eq!(claims.tcb_status.as_deref(), Some("UpToDate"));
        }
        assert_eq!(verdict.tee, TeeKind::Tdx);
        assert_eq!(
            hex::encode(claims.mr_td),
            vector.td_field("mr_td"),
            "{}",
            vector.name
        );
        assert_eq!(hex::encode(claims.rtmr0), vector.td_field("rtmr0"));
        assert_eq!(hex::encode(claims.rtmr1), vector.td_field("rtmr1"));
        assert_eq!(hex::encode(claims.rtmr2), vector.td_field("rtmr2"));
        assert_eq!(hex::encode(claims.rtmr3), vector.td_field("rtmr3"));
        assert_eq!(
            hex::encode(claims.mr_config_id),
            vector.td_field("mr_config_id")
        );
        assert_eq!(hex::encode(claims.mr_owner), vector.td_field("mr_owner"));
        assert_eq!(
            hex::encode(claims.report_data),
            vector.td_field("report_data")
        );
        assert_eq!(
            hex::encode(claims.td_attributes),
            vector.td_field("td_attributes")
        );
        assert_eq!(hex::encode(claims.xfam), vector.td_field("xfam"));
        assert_eq!(
            verdict.measurement.as_deref(),
            Some(vector.td_field("mr_td").as_str())
        );
    }
}

#[test]
fn quote_versions_and_bodies() {
    let v4 = verify(
        &DCAPQVL_V4.evidence(),
        None,
        &Policy::default(),
        DCAPQVL_V4.now(),
    );
    assert_eq!(
        (tdx_claims(&v4).quote_version, tdx_claims(&v4).body.as_str()),
        (4, "TD10")
    );
    let v5 = verify(
        &GOTDX_V5.evidence(),
        None,
        &Policy::default(),
        GOTDX_V5.now(),
    );
    let claims = tdx_claims(&v5);
    assert_eq!((claims.quote_version, claims.body.as_str()), (5, "TD15"));
    assert_eq!(
        claims.mr_service_td.as_deref(),
        Some("00".repeat(48).as_str())
    );
}

#[test]
fn the_debug_td_is_accepted_when_debug_is_allowed() {
    let mut policy = Policy::default();
    policy.allow_debug = true;
    let verdict = verify(
        &TRUSTEE_V4_DEBUG.evidence(),
        None,
        &policy,
        TRUSTEE_V4_DEBUG.now(),
    );
    assert!(verdict.is_accept(), "{:#?}", verdict.failures);
    assert_eq!(verdict.debug, Some(true));
}

#[test]
fn twin_outside_collateral_window() {
    for vector in TDX_VECTORS {
        for case in ["before_window", "after_window", "at_2026_11_25"] {
            let Some(time) = vector.time(case) else {
                continue;
            };
            let verdict = verify(&vector.evidence(), None, &Policy::default(), time);
            assert!(
                verdict.failed(Check::QuoteVerification),
                "{} {case}: {verdict:#?}",
                vector.name
            );
        }
    }
}

#[test]
fn twin_bit_flip_in_quote() {
    // Header (version area), TD body (report_data at 48 + 520), and the signature.
    for vector in TDX_VECTORS {
        for offset in [10usize, 48 + 520, 48 + 584 + 10] {
            let mut quote = vector.quote.to_vec();
            quote[offset] ^= 0x01;
            let verdict = verify(
                &vector.evidence_from(&quote),
                None,
                &Policy::default(),
                vector.now(),
            );
            assert!(!verdict.is_accept(), "{} flip at {offset}", vector.name);
        }
    }
}

#[test]
fn twin_wrong_measurement_and_report_data_and_rtmr() {
    let vector = DCAPQVL_V4;
    let policy =
        Policy::from_toml(&format!("measurements = [\"{}\"]", "11".repeat(48))).expect("policy");
    assert_eq!(
        checks(&verify(&vector.evidence(), None, &policy, vector.now())),
        vec![Check::Measurement]
    );
    let policy = Policy::from_toml(&format!(
        "measurements = [\"{}\"]",
        vector.td_field("mr_td")
    ))
    .expect("policy");
    assert!(verify(&vector.evidence(), None, &policy, vector.now()).is_accept());

    let policy =
        Policy::from_toml(&format!("report_data = \"{}\"", "22".repeat(64))).expect("policy");
    assert_eq!(
        checks(&verify(&vector.evidence(), None, &policy, vector.now())),
        vec![Check::ReportData]
    );
    let policy = Policy::from_toml(&format!(
        "report_data = \"{}\"",
        vector.td_field("report_data")
    ))
    .expect("policy");
    assert!(verify(&vector.evidence(), None, &policy, vector.now()).is_accept());

    let policy = Policy::from_toml(&format!(
        "[tdx]\nrtmr0 = [\"{}\"]\nrtmr2 = [\"{}\"]",
        vector.td_field("rtmr0"),
        "33".repeat(48)
    ))
    .expect("policy");
    assert_eq!(
        checks(&verify(&vector.evidence(), None, &policy, vector.now())),
        vec![Check::Rtmr]
    );
}

#[test]
fn tcb_status_is_judged_by_policy() {
    let policy = Policy::from_toml("tdx_statuses = [\"OutOfDate\"]").expect("policy");
    let verdict = verify(&DCAPQVL_V4.evidence(), None, &policy, DCAPQVL_V4.now());
    assert_eq!(checks(&verdict), vec![Check::TdxTcbStatus]);
    assert!(Policy::from_toml("tdx_statuses = [\"UpToDat\"]").is_err());
}

#[test]
fn collateral_is_required_and_may_be_passed_separately() {
    let bare = Evidence::Tdx(TdxEvidence::new(DCAPQVL_V4.quote.to_vec()));
    let verdict = verify(&bare, None, &Policy::default(), DCAPQVL_V4.now());
    assert_eq!(checks(&verdict), vec![Check::Collateral]);
    // Claims are still decoded for diagnosis.
    assert_eq!(
        verdict.measurement.as_deref(),
        Some(DCAPQVL_V4.td_field("mr_td").as_str())
    );

    let collateral = DCAPQVL_V4.collateral();
    assert!(
        verify(
            &bare,
            Some(&collateral),
            &Policy::default(),
            DCAPQVL_V4.now()
        )
        .is_accept()
    );

    // The wrong collateral (another FMSPC) does not verify.
    let wrong = GOTDX_V5.collateral();
    assert!(
        verify(&bare, Some(&wrong), &Policy::default(), DCAPQVL_V4.now())
            .failed(Check::QuoteVerification)
    );
}

#[test]
fn tdx_evidence_json_round_trips() {
    let evidence = DCAPQVL_V4.evidence();
    let json = evidence.to_json().expect("serializes");
    let value: serde_json::Value = serde_json::from_str(&json).expect("json");
    assert_eq!(value["tee"], "tdx");
    assert!(value["quote"].is_string(), "quote is base64 as in Trustee");
    assert_eq!(
        Evidence::from_json(json.as_bytes()).expect("parses"),
        evidence
    );
    let verdict = confidant_attestation::verify_json(
        json.as_bytes(),
        None,
        &Policy::default(),
        DCAPQVL_V4.now(),
    );
    assert!(verdict.is_accept());
}

#[test]
fn garbage_quotes_are_rejected_not_panics() {
    for quote in [
        &[][..],
        &[0u8; 48][..],
        &DCAPQVL_V4.quote[..600],
        &[0xFFu8; 5000][..],
    ] {
        let verdict = verify(
            &DCAPQVL_V4.evidence_from(quote),
            None,
            &Policy::default(),
            DCAPQVL_V4.now(),
        );
        assert!(!verdict.is_accept());
    }
}
