//! Intel TDX: every genuine vector gets its expected verdict, with reject twins.

mod common;

use common::*;
use confidant_attestation::{
    Check, Claims, Evidence, Policy, TdxClaims, TdxCollateralSet, TdxEvidence, TeeKind, Verdict,
    verify,
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

/// A `[tdx]` table that pins all four RTMRs of `vector`.
fn pinned_rtmrs(vector: &TdxVector) -> String {
    format!(
        "[tdx]\nrtmr0 = [\"{}\"]\nrtmr1 = [\"{}\"]\nrtmr2 = [\"{}\"]\nrtmr3 = [\"{}\"]\n",
        vector.td_field("rtmr0"),
        vector.td_field("rtmr1"),
        vector.td_field("rtmr2"),
        vector.td_field("rtmr3")
    )
}

#[test]
fn every_vector_gets_its_expected_verdict() {
    for vector in TDX_VECTORS {
        let verdict = verify(
            &vector.evidence(),
            None,
            &Policy::dangerous_authenticity_only(),
            vector.now(),
        );
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
            // The only expected error is "Debug mode is enabled": dcap-qvl's attribute check
            // refuses it (it is no longer turned off), and the policy's debug rule too.
            assert_eq!(expected["error"], "Debug mode is enabled");
            assert_eq!(
                checks(&verdict),
                vec![Check::QuoteVerification, Check::Debug],
                "{}: {verdict:#?}",
                vector.name
            );
            assert!(verdict.failures[0].detail.contains("Debug mode is enabled"));
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
        &Policy::dangerous_authenticity_only(),
        DCAPQVL_V4.now(),
    );
    assert_eq!(
        (tdx_claims(&v4).quote_version, tdx_claims(&v4).body.as_str()),
        (4, "TD10")
    );
    let v5 = verify(
        &GOTDX_V5.evidence(),
        None,
        &Policy::dangerous_authenticity_only(),
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
    let mut policy = Policy::dangerous_authenticity_only();
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
            let verdict = verify(
                &vector.evidence(),
                None,
                &Policy::dangerous_authenticity_only(),
                time,
            );
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
                &Policy::dangerous_authenticity_only(),
                vector.now(),
            );
            assert!(!verdict.is_accept(), "{} flip at {offset}", vector.name);
        }
    }
}

#[test]
fn twin_wrong_measurement_and_report_data_and_rtmr() {
    let vector = DCAPQVL_V4;
    let rtmrs = pinned_rtmrs(&vector);
    let policy = Policy::from_toml(&format!(
        "measurements = [\"{}\"]\n{rtmrs}",
        "11".repeat(48)
    ))
    .expect("policy");
    assert_eq!(
        checks(&verify(&vector.evidence(), None, &policy, vector.now())),
        vec![Check::Measurement]
    );
    let policy = Policy::from_toml(&format!(
        "measurements = [\"{}\"]\n{rtmrs}",
        vector.td_field("mr_td")
    ))
    .expect("policy");
    assert!(verify(&vector.evidence(), None, &policy, vector.now()).is_accept());

    let policy = Policy::from_toml(&format!("{ANY_GUEST}report_data = \"{}\"", "22".repeat(64)))
        .expect("policy");
    assert_eq!(
        checks(&verify(&vector.evidence(), None, &policy, vector.now())),
        vec![Check::ReportData]
    );
    let policy = Policy::from_toml(&format!(
        "{ANY_GUEST}report_data = \"{}\"",
        vector.td_field("report_data")
    ))
    .expect("policy");
    assert!(verify(&vector.evidence(), None, &policy, vector.now()).is_accept());

    let policy = Policy::from_toml(&format!(
        "{ANY_GUEST}[tdx]\nrtmr0 = [\"{}\"]\nrtmr2 = [\"{}\"]",
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
    let policy =
        Policy::from_toml(&format!("{ANY_GUEST}tdx_statuses = [\"OutOfDate\"]")).expect("policy");
    let verdict = verify(&DCAPQVL_V4.evidence(), None, &policy, DCAPQVL_V4.now());
    assert_eq!(checks(&verdict), vec![Check::TdxTcbStatus]);
    assert!(Policy::from_toml("tdx_statuses = [\"UpToDat\"]").is_err());
}

#[test]
fn collateral_is_required_and_may_be_passed_separately() {
    let bare = Evidence::Tdx(TdxEvidence::new(DCAPQVL_V4.quote.to_vec()));
    let verdict = verify(
        &bare,
        None,
        &Policy::dangerous_authenticity_only(),
        DCAPQVL_V4.now(),
    );
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
            &Policy::dangerous_authenticity_only(),
            DCAPQVL_V4.now()
        )
        .is_accept()
    );

    // The wrong collateral (another FMSPC) does not verify.
    let wrong = GOTDX_V5.collateral();
    assert!(
        verify(
            &bare,
            Some(&wrong),
            &Policy::dangerous_authenticity_only(),
            DCAPQVL_V4.now()
        )
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
        &Policy::dangerous_authenticity_only(),
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
            &Policy::dangerous_authenticity_only(),
            DCAPQVL_V4.now(),
        );
        assert!(!verdict.is_accept());
    }
}

/// Fails before issue 16: a policy pinning only MRTD accepted any OS (RTMRs unchecked).
#[test]
fn a_policy_pinning_only_mrtd_rejects_unless_it_accepts_any_os() {
    let vector = DCAPQVL_V4;
    let mrtd = vector.td_field("mr_td");
    // Loaded from a file without [tdx] (it could be an SNP policy), judged on TDX evidence.
    let mrtd_only = Policy::from_toml(&format!("measurements = [\"{mrtd}\"]")).expect("policy");
    let verdict = verify(&vector.evidence(), None, &mrtd_only, vector.now());
    assert_eq!(checks(&verdict), vec![Check::Rtmr; 4], "{verdict:#?}");
    assert!(
        verdict.failures[0]
            .detail
            .contains("MRTD identifies only the firmware")
    );

    let any_os = Policy::from_toml(&format!(
        "measurements = [\"{mrtd}\"]\n[tdx]\ni_understand_this_accepts_any_os = true"
    ))
    .expect("policy");
    assert!(verify(&vector.evidence(), None, &any_os, vector.now()).is_accept());

    // An explicit list: RTMR3 left out on purpose, the others pinned.
    let explicit = Policy::from_toml(&format!(
        "measurements = [\"{mrtd}\"]\n[tdx]\npinned_rtmrs = [\"rtmr0\", \"rtmr1\", \"rtmr2\"]\n\
         rtmr0 = [\"{}\"]\nrtmr1 = [\"{}\"]\nrtmr2 = [\"{}\"]",
        vector.td_field("rtmr0"),
        vector.td_field("rtmr1"),
        vector.td_field("rtmr2")
    ))
    .expect("policy");
    assert!(verify(&vector.evidence(), None, &explicit, vector.now()).is_accept());

    // Programmatic policies follow the same rule.
    let mut policy = Policy::default();
    policy.measurements = vec![Policy::measurement_from_hex(&mrtd).expect("hex")];
    assert!(verify(&vector.evidence(), None, &policy, vector.now()).failed(Check::Rtmr));
}

/// Fails before issue 16: dcap-qvl's attribute check was turned off (`allow_debug(true)`),
/// so only the policy's own DEBUG-bit rule stood between a debug TD and an accept.
#[test]
fn dcap_qvl_refuses_the_debug_td_unless_debug_is_allowed() {
    let vector = TRUSTEE_V4_DEBUG;
    let verdict = verify(
        &vector.evidence(),
        None,
        &Policy::dangerous_authenticity_only(),
        vector.now(),
    );
    let quote = verdict
        .failures
        .iter()
        .find(|f| f.check == Check::QuoteVerification)
        .expect("dcap-qvl refuses the debug TD");
    assert!(quote.detail.contains("Debug mode is enabled"), "{quote}");
    assert_eq!(tdx_claims(&verdict).tcb_status, None);
}

/// Fails before issue 16: the policy had no collateral floor.
#[test]
fn min_tcb_evaluation_data_number_judges_the_collateral() {
    let vector = DCAPQVL_V4; // collateral tcbEvaluationDataNumber 17
    let policy = |n: u32| {
        Policy::from_toml(&format!(
            "{ANY_GUEST}[tdx]\nmin_tcb_evaluation_data_number = {n}"
        ))
        .expect("policy")
    };
    let verdict = verify(&vector.evidence(), None, &policy(17), vector.now());
    assert!(verdict.is_accept(), "{verdict:#?}");
    assert_eq!(tdx_claims(&verdict).tcb_evaluation_data_number, Some(17));
    let verdict = verify(&vector.evidence(), None, &policy(18), vector.now());
    assert_eq!(checks(&verdict), vec![Check::TcbEvaluationDataNumber]);
    // Without verified collateral there is no number, and the floor fails too.
    let bare = Evidence::Tdx(TdxEvidence::new(vector.quote.to_vec()));
    let verdict = verify(&bare, None, &policy(1), vector.now());
    assert!(verdict.failed(Check::TcbEvaluationDataNumber));
}

/// The verifier's own collateral, selected by FMSPC; the attester's is dropped.
#[test]
fn a_collateral_set_selects_by_fmspc_and_the_attesters_is_dropped() {
    let set =
        TdxCollateralSet::new(vec![DCAPQVL_V4.collateral(), GOTDX_V5.collateral()]).expect("set");
    assert_eq!(set.len(), 2);
    for vector in [DCAPQVL_V4, GOTDX_V5] {
        let chosen = set.for_quote(vector.quote).expect("fmspc").expect("held");
        assert_eq!(chosen, &vector.collateral(), "{}", vector.name);
    }
    assert!(
        set.for_quote(TRUSTEE_V4_DEBUG.quote)
            .expect("fmspc")
            .is_none()
    );
    assert!(TdxCollateralSet::new(vec![DCAPQVL_V4.collateral(), DCAPQVL_V4.collateral()]).is_err());
    assert_eq!(
        hex::encode(confidant_attestation::tdx::quote_fmspc(DCAPQVL_V4.quote).expect("fmspc")),
        "b0c06f000000"
    );

    let stripped = DCAPQVL_V4.evidence().without_tdx_collateral();
    let verdict = verify(
        &stripped,
        None,
        &Policy::dangerous_authenticity_only(),
        DCAPQVL_V4.now(),
    );
    assert_eq!(checks(&verdict), vec![Check::Collateral]);
}
