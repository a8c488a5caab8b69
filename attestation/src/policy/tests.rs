use super::*;

#[test]
fn default_policy_forbids_debug_and_simulated() {
    let policy = Policy::default();
    assert!(!policy.allow_debug);
    assert!(!policy.dangerous_allow_simulated);
    assert!(policy.measurements.is_empty());
    assert_eq!(policy.products, Product::ALL.to_vec());
    assert_eq!(Policy::from_toml("").expect("empty policy"), policy);
}

#[test]
fn contract_keys_parse() {
    let policy = Policy::from_toml(&format!(
        r#"
        measurements = ["{m}"]
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
    }
}

#[test]
fn report_data_pads_to_64_bytes() {
    let padded = Policy::report_data_from_hex(&"11".repeat(48)).expect("48 bytes");
    assert_eq!(&padded[..48], &[0x11; 48]);
    assert_eq!(&padded[48..], &[0; 16]);
    assert!(Policy::measurement_from_hex(&"11".repeat(47)).is_err());
}
