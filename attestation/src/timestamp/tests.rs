use super::*;

#[test]
fn rfc3339_round_trips() {
    let t = Timestamp::parse_rfc3339("2025-06-01T00:00:00Z").expect("parses");
    assert_eq!(t.unix_seconds(), 1_748_736_000);
    assert_eq!(t.to_rfc3339(), "2025-06-01T00:00:00Z");
    let offset = Timestamp::parse_rfc3339("2025-06-01T02:00:00+02:00").expect("parses");
    assert_eq!(offset, t);
    assert_eq!(
        serde_json::to_string(&t).expect("json"),
        "\"2025-06-01T00:00:00Z\""
    );
}

#[test]
fn bad_timestamps_are_refused() {
    for bad in [
        "",
        "2025-06-01",
        "yesterday",
        "1969-12-31T23:59:59Z",
        "2025-13-01T00:00:00Z",
    ] {
        assert!(Timestamp::parse_rfc3339(bad).is_err(), "accepted {bad:?}");
    }
}
