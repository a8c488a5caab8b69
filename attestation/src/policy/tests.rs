use super::*;
use crate::error::Error;

const PIN: &str = "measurements = [\"abababababababababababababababababababababababababababababababababababababababababababababababab\"]\n";

#[test]
fn default_policy_forbids_debug_and_simulated_and_pins_nothing() {
    let policy = Policy::default();
    assert!(!policy.allow_debug);
    assert!(!policy.dangerous_allow_simulated);
    assert!(policy.measurements.is_empty());
    assert!(!policy.dangerous_accept_any_measurement);
    assert!(!policy.dangerous_accept_any_tcb && !policy.dangerous_accept_any_os);
    assert_eq!(policy.vmpls, Some(vec![0]));
    assert_eq!(policy.tdx_pinned_rtmrs, [true; 4]);
    assert_eq!(policy.products, Product::ALL.to_vec());
    assert!(policy.is_applied());
}

/// Fails before issue 16: an empty policy file (or one with only `allow_debug = false`) loaded
/// as the default and accepted any genuine guest.
#[test]
fn a_policy_without_measurements_is_refused_when_loaded() {
    for text in [
        "",
        "allow_debug = false",
        "allow_simulated = true\n[min_tcb]\nsnp = 8",
    ] {
        let err = Policy::from_toml(text).expect_err(text);
        assert!(
            matches!(
                err,
                Error::PolicyMissing {
                    key: "measurements",
                    ..
                }
            ),
            "{text:?}: {err}"
        );
        assert!(err.to_string().contains("measurements is missing"), "{err}");
    }
    let err = Policy::from_toml("measurements = []").expect_err("empty list");
    assert!(err.to_string().contains("measurements"), "{err}");
}

/// Fails before issue 16: there was no open form, an empty list meant any.
#[test]
fn the_open_form_must_be_said_in_words() {
    let err = Policy::from_toml("measurements = \"any\"").expect_err("unconfirmed");
    assert!(
        err.to_string()
            .contains("i_understand_this_accepts_any_guest"),
        "{err}"
    );
    let err =
        Policy::from_toml("measurements = \"all\"\ni_understand_this_accepts_any_guest = true")
            .expect_err("not the word");
    assert!(err.to_string().contains("measurements"), "{err}");
    let err = Policy::from_toml(&format!("{PIN}i_understand_this_accepts_any_guest = true"))
        .expect_err("contradiction");
    assert!(
        err.to_string()
            .contains("i_understand_this_accepts_any_guest"),
        "{err}"
    );

    let open =
        Policy::from_toml("measurements = \"any\"\ni_understand_this_accepts_any_guest = true")
            .expect("open policy");
    assert!(open.dangerous_accept_any_measurement && open.measurements.is_empty());
    assert!(open.is_applied());
    assert!(
        open.deliberately_open()
            .iter()
            .any(|w| w.contains("any guest"))
    );
    let pinned = Policy::from_toml(&format!("{PIN}[min_tcb]\nsnp = 8")).expect("pinned");
    assert!(pinned.deliberately_open().is_empty());
}

/// Fails before issue 16: `vmpls` defaulted to any, and no `min_tcb` meant any TCB.
#[test]
fn vmpls_default_to_zero_and_min_tcb_any_is_a_word() {
    let policy = Policy::from_toml(PIN).expect("policy");
    assert_eq!(policy.vmpls, Some(vec![0]));
    assert!(!policy.dangerous_accept_any_tcb && policy.min_tcb.is_empty());
    let any = Policy::from_toml(&format!("{PIN}min_tcb = \"any\"")).expect("policy");
    assert!(any.dangerous_accept_any_tcb);
    assert!(any.deliberately_open().iter().any(|w| w.contains("TCB")));
    for bad in [
        format!("{PIN}min_tcb = \"none\""),
        format!("{PIN}min_tcb = 3"),
        format!("{PIN}[min_tcb]"),
        format!("{PIN}vmpls = []"),
    ] {
        assert!(Policy::from_toml(&bad).is_err(), "accepted: {bad}");
    }
}

/// Fails before issue 16: a `[tdx]` table could pin MRTD and leave the OS (RTMRs) open.
#[test]
fn a_tdx_policy_pins_the_rtmrs_or_says_any_os() {
    let r = |i: u8| format!("rtmr{i} = [\"{}\"]\n", format!("{i:02x}").repeat(48));
    let all = format!("{PIN}[tdx]\n{}{}{}{}", r(0), r(1), r(2), r(3));
    let policy = Policy::from_toml(&all).expect("all four");
    assert_eq!(policy.tdx_pinned_rtmrs, [true; 4]);
    assert_eq!(policy.tdx_rtmrs[2], vec![[2u8; 48]]);

    let missing = format!("{PIN}[tdx]\n{}{}{}", r(0), r(1), r(2));
    let err = Policy::from_toml(&missing).expect_err("rtmr3 missing");
    assert!(
        matches!(
            err,
            Error::PolicyMissing {
                key: "tdx.rtmr3",
                ..
            }
        ),
        "{err}"
    );
    let mrtd_only = format!("{PIN}[tdx]\nmin_tcb_evaluation_data_number = 17");
    assert!(Policy::from_toml(&mrtd_only).is_err());
    let none_pinned = format!("{PIN}[tdx]\npinned_rtmrs = []");
    let err = Policy::from_toml(&none_pinned).expect_err("pins nothing");
    assert!(err.to_string().contains("pinned_rtmrs"), "{err}");

    let explicit = format!(
        "{PIN}[tdx]\npinned_rtmrs = [\"rtmr0\", \"rtmr1\", \"rtmr2\"]\n{}{}{}",
        r(0),
        r(1),
        r(2)
    );
    let policy = Policy::from_toml(&explicit).expect("explicit list");
    assert_eq!(policy.tdx_pinned_rtmrs, [true, true, true, false]);
    let unlisted = format!("{PIN}[tdx]\npinned_rtmrs = [\"rtmr0\"]\n{}{}", r(0), r(1));
    assert!(Policy::from_toml(&unlisted).is_err());
    let unknown = format!("{PIN}[tdx]\npinned_rtmrs = [\"rtmr4\"]");
    assert!(Policy::from_toml(&unknown).is_err());

    let any_os = format!(
        "{PIN}[tdx]\ni_understand_this_accepts_any_os = true\nmin_tcb_evaluation_data_number = 17"
    );
    let policy = Policy::from_toml(&any_os).expect("any OS said in words");
    assert!(policy.dangerous_accept_any_os);
    assert_eq!(policy.tdx_min_tcb_evaluation_data_number, Some(17));
    assert!(
        policy
            .deliberately_open()
            .iter()
            .any(|w| w.contains("any OS"))
    );
}

#[test]
fn authenticity_only_is_not_an_applied_policy() {
    let policy = Policy::dangerous_authenticity_only();
    assert!(!policy.is_applied());
    assert_eq!(policy.vmpls, None);
    assert!(!policy.allow_debug && !policy.dangerous_allow_simulated);
    assert!(policy.dangerous_accept_any_measurement && policy.dangerous_accept_any_tcb);
}

#[test]
fn contract_keys_parse() {
    let policy = Policy::from_toml(&format!(
        r#"
        measurements = ["{m}"]
        vmpls = [0, 1]
        allow_debug = true
        allow_simulated = true
        products = ["Milan", "Turin"]
        report_data = "{rd}"
        tdx_statuses = ["UpToDate", "OutOfDate"]

        [min_tcb]
        bootloader = 1
        tee = 2
        snp = 3
        microcode = 4
        fmc = 5
        "#,
        m = "ab".repeat(48),
        rd = "cd".repeat(64)
    ))
    .expect("policy parses");
    assert_eq!(policy.measurements, vec![[0xAB; 48]]);
    assert_eq!(policy.vmpls, Some(vec![0, 1]));
    assert!(policy.allow_debug && policy.dangerous_allow_simulated);
    assert_eq!(policy.products, vec![Product::Milan, Product::Turin]);
    assert_eq!(policy.report_data, Some([0xCD; 64]));
    assert_eq!(policy.tdx_statuses, vec!["UpToDate", "OutOfDate"]);
    let floor = policy.min_tcb;
    assert_eq!(
        (
            floor.bootloader,
            floor.tee,
            floor.snp,
            floor.microcode,
            floor.fmc
        ),
        (Some(1), Some(2), Some(3), Some(4), Some(5))
    );
}

#[test]
fn bad_policies_are_refused() {
    for bad in [
        "measurements = \"any\"\ni_understand_this_accepts_any_guest = true\nallow_debugg = true",
        "allow_debugg = true",
        "measurements = [\"abcd\"]",
        "measurements = [\"zz\"]",
        "products = [\"Naples\"]",
        "report_data = \"\"",
        &format!("report_data = \"{}\"", "00".repeat(65)),
        "vmpls = [4]",
        "tdx_statuses = [\"Fine\"]",
        "[min_tcb]\nsnp = 300",
        "[min_tcb]\nucode = 1",
        "[tdx]\nrtmr4 = []",
        "allow_simulated = \"yes\"",
    ] {
        assert!(Policy::from_toml(bad).is_err(), "accepted: {bad}");
        // Refused for the bad key itself, not only for the missing measurements.
        let pinned = format!("{PIN}{bad}");
        assert!(Policy::from_toml(&pinned).is_err(), "accepted: {pinned}");
    }
}

#[test]
fn report_data_pads_to_64_bytes() {
    let padded = Policy::report_data_from_hex(&"11".repeat(48)).expect("48 bytes");
    assert_eq!(&padded[..48], &[0x11; 48]);
    assert_eq!(&padded[48..], &[0; 16]);
    assert!(Policy::measurement_from_hex(&"11".repeat(47)).is_err());
}
