use std::sync::Arc;

use super::*;
use crate::guard::rate::MAX_LEASE;
use crate::storage::Database;

fn guard(defaults: RateDefaults) -> (tempfile::TempDir, Guard) {
    let dir = tempfile::tempdir().unwrap();
    let db = Arc::new(Database::open_in(dir.path()).unwrap());
    (dir, Guard::new(db, defaults))
}

fn new_key(principal: &str, rpd: Option<u32>, rpm: Option<u32>) -> NewKey {
    NewKey {
        principal: principal.into(),
        scopes: [Scope::Predict].into(),
        purposes: ["fraud-detection".to_string()].into(),
        rpm,
        rpd,
    }
}

const NOW: i64 = 1_780_000_000;

#[test]
fn keys_authenticate_only_while_live_and_are_stored_hashed() {
    let (dir, g) = guard(RateDefaults::default());
    let (rec, secret) = g.keys().create(&new_key("alice", None, None), NOW).unwrap();
    assert!(secret.secret_str().starts_with("cfd_"));
    assert_eq!(secret.secret_str().len(), 4 + 43);
    let creds = Credentials {
        api_key: Some(secret.secret_str()),
        authorization: None,
        client_cert: None,
    };
    assert_eq!(g.authenticate(creds).unwrap().principal, "alice");
    let bearer = format!("Bearer {}", secret.secret_str());
    let creds = Credentials {
        api_key: None,
        authorization: Some(&bearer),
        client_cert: None,
    };
    assert_eq!(g.authenticate(creds).unwrap().key_id, rec.key_id);

    // The database holds no copy of the key.
    let raw = std::fs::read(dir.path().join("confidant.db")).unwrap();
    let needle = secret.secret_str().as_bytes();
    assert!(!raw.windows(needle.len()).any(|w| w == needle));

    g.keys()
        .revoke(&RevokeSelector::Principal("alice".into()), NOW)
        .unwrap();
    let err = g
        .authenticate(Credentials {
            api_key: Some(secret.secret_str()),
            authorization: None,
            client_cert: None,
        })
        .unwrap_err();
    assert!(matches!(err, GuardError::Unauthenticated(_)));
    assert!(
        g.keys()
            .revoke(&RevokeSelector::KeyId(rec.key_id), NOW)
            .is_err()
    );
}

#[test]
fn missing_or_malformed_credentials_are_unauthenticated() {
    let (_d, g) = guard(RateDefaults::default());
    for creds in [
        Credentials::default(),
        Credentials {
            api_key: Some(""),
            authorization: None,
            client_cert: None,
        },
        Credentials {
            api_key: Some("cfd_nope"),
            authorization: None,
            client_cert: None,
        },
        Credentials {
            api_key: None,
            authorization: Some("Basic abc"),
            client_cert: None,
        },
    ] {
        assert!(
            matches!(g.authenticate(creds), Err(GuardError::Unauthenticated(_))),
            "{creds:?}"
        );
    }
}

#[test]
fn scopes_and_purposes() {
    let (_d, g) = guard(RateDefaults::default());
    let (rec, _) = g.keys().create(&new_key("bob", None, None), NOW).unwrap();
    assert!(g.authorize(&rec, Scope::Predict).is_ok());
    assert!(matches!(
        g.authorize(&rec, Scope::Admin),
        Err(GuardError::PermissionDenied(_))
    ));

    let model_purposes = vec!["fraud-detection".to_string(), "credit".to_string()];
    assert_eq!(
        g.check_purpose(&rec, Some("fraud-detection"), "m", &model_purposes)
            .unwrap(),
        Some("fraud-detection")
    );
    let err = g
        .check_purpose(&rec, Some("marketing"), "m", &model_purposes)
        .unwrap_err();
    assert!(
        err.to_string().contains("not allowed for principal bob"),
        "{err}"
    );
    let err = g
        .check_purpose(&rec, None, "m", &model_purposes)
        .unwrap_err();
    assert!(
        err.to_string().contains("requires a declared purpose"),
        "{err}"
    );
    // A model without purposes accepts no declaration, but a declaration must still be
    // one the key holds.
    assert_eq!(g.check_purpose(&rec, None, "m", &[]).unwrap(), None);
    assert!(g.check_purpose(&rec, Some("marketing"), "m", &[]).is_err());
    let only_credit = vec!["credit".to_string()];
    let err = g
        .check_purpose(&rec, Some("fraud-detection"), "m", &only_credit)
        .unwrap_err();
    assert!(err.to_string().contains("not allowed for model m"), "{err}");
}

#[test]
fn bad_key_settings_are_refused() {
    let (_d, g) = guard(RateDefaults::default());
    let mut k = new_key("bad name!", None, None);
    assert!(g.keys().create(&k, NOW).is_err());
    k.principal = "ok".into();
    k.scopes.clear();
    assert!(g.keys().create(&k, NOW).is_err());
    let k = new_key("ok", Some(0), None);
    assert!(g.keys().create(&k, NOW).is_err());
}

#[test]
fn the_daily_quota_is_exact_under_concurrency_and_survives_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let db = Arc::new(Database::open_in(dir.path()).unwrap());
    let g = Arc::new(Guard::new(Arc::clone(&db), RateDefaults::default()));
    let (rec, _) = g
        .keys()
        .create(&new_key("carol", Some(20), None), NOW)
        .unwrap();
    let threads: Vec<_> = (0..50)
        .map(|_| {
            let g = Arc::clone(&g);
            let rec = rec.clone();
            std::thread::spawn(move || g.admit(&rec, NOW).map(Admission::commit).is_ok())
        })
        .collect();
    let ok = threads
        .into_iter()
        .filter(|_| true)
        .map(|t| t.join().unwrap())
        .filter(|x| *x)
        .count();
    assert_eq!(ok, 20);
    match g.admit(&rec, NOW) {
        Err(GuardError::RateLimited { retry_after, what }) => {
            assert!(what.contains("daily quota of 20"), "{what}");
            assert!(retry_after.as_secs() > 0 && retry_after.as_secs() <= 86_400);
        }
        other => panic!("expected RateLimited, got {other:?}"),
    }
    // A restart (a new handle on the same file) keeps the count; the next UTC day resets it.
    drop(g);
    drop(db);
    let g = Guard::new(
        Arc::new(Database::open_in(dir.path()).unwrap()),
        RateDefaults::default(),
    );
    assert!(g.admit(&rec, NOW).is_err());
    assert_eq!(g.limiter().used_today("carol", NOW).unwrap(), 20);
    assert!(g.admit(&rec, NOW + 86_400).map(Admission::commit).is_ok());
}

#[test]
fn refusals_and_refunds_leave_no_count_behind() {
    let (_d, g) = guard(RateDefaults {
        rpm: Some(2),
        rpd: Some(100),
        ..RateDefaults::default()
    });
    let (rec, _) = g.keys().create(&new_key("dave", None, None), NOW).unwrap();
    let a = g.admit(&rec, NOW).unwrap();
    let _b = g.admit(&rec, NOW).unwrap();
    assert_eq!(g.limiter().used_today("dave", NOW).unwrap(), 2);
    // The minute limit refuses the third, and its day unit is handed back.
    match g.admit(&rec, NOW) {
        Err(GuardError::RateLimited { what, .. }) => assert!(what.contains("per minute"), "{what}"),
        other => panic!("expected a minute refusal, got {other:?}"),
    }
    assert_eq!(g.limiter().used_today("dave", NOW).unwrap(), 2);
    drop(a);
    assert_eq!(g.limiter().used_today("dave", NOW).unwrap(), 1);
}

#[test]
fn large_quotas_lease_units_but_never_serve_more_than_the_quota() {
    let (dir, g) = guard(RateDefaults {
        rpm: None,
        rpd: Some(1000),
        ..RateDefaults::default()
    });
    let (rec, _) = g.keys().create(&new_key("erin", None, None), NOW).unwrap();
    for _ in 0..100 {
        g.admit(&rec, NOW).unwrap().commit();
    }
    // In process, usage is exact; the database holds at least that (the unused lease).
    assert_eq!(g.limiter().used_today("erin", NOW).unwrap(), 100);
    let other = Guard::new(
        Arc::new(Database::open_in(dir.path()).unwrap()),
        RateDefaults::default(),
    );
    let stored = other.limiter().used_today("erin", NOW).unwrap();
    // One lease is at most a sixteenth of what was left.
    assert!(
        (100..100 + MAX_LEASE.min(1000 / 16)).contains(&stored),
        "{stored}"
    );
    // A graceful stop returns the unused lease: the database is exact again.
    g.limiter().release_leases();
    assert_eq!(other.limiter().used_today("erin", NOW).unwrap(), 100);
    // A crash (no release) never resets the quota: a new limiter starts from the stored count.
    for _ in 0..10 {
        g.admit(&rec, NOW).unwrap().commit();
    }
    drop(g);
    let restarted = Guard::new(
        Arc::new(Database::open_in(dir.path()).unwrap()),
        RateDefaults {
            rpm: None,
            rpd: Some(1000),
            ..RateDefaults::default()
        },
    );
    let mut served = 110;
    while restarted.admit(&rec, NOW).map(Admission::commit).is_ok() {
        served += 1;
    }
    assert!(served <= 1000, "{served} served against a quota of 1000");
    assert!(
        served > 1000 - MAX_LEASE.min(1000 / 16),
        "a crash loses at most one lease: {served}"
    );
}

#[test]
fn a_revocation_by_another_connection_is_seen_at_once_despite_the_cache() {
    let (dir, g) = guard(RateDefaults::default());
    let (rec, secret) = g.keys().create(&new_key("frank", None, None), NOW).unwrap();
    let key = secret.secret_str().to_string();
    for _ in 0..3 {
        assert!(
            g.keys().authenticate(&key).unwrap().is_some(),
            "cached and live"
        );
    }
    let cli = KeyStore::new(Arc::new(Database::open_in(dir.path()).unwrap()));
    cli.revoke(&RevokeSelector::KeyId(rec.key_id), NOW).unwrap();
    assert!(
        g.keys().authenticate(&key).unwrap().is_none(),
        "revoked elsewhere"
    );
}

#[test]
fn two_keys_of_one_principal_with_different_minute_limits_keep_separate_states() {
    let (_dir, g) = guard(RateDefaults::default());
    let (slow, _) = g
        .keys()
        .create(&new_key("gina", None, Some(2)), NOW)
        .unwrap();
    let (fast, _) = g
        .keys()
        .create(&new_key("gina", None, Some(100)), NOW)
        .unwrap();
    g.admit(&slow, NOW).unwrap().commit();
    g.admit(&slow, NOW).unwrap().commit();
    // Interleaving the other key must not reset the slow key's state.
    for _ in 0..5 {
        g.admit(&fast, NOW).unwrap().commit();
    }
    assert!(g.admit(&slow, NOW).is_err(), "the 2/minute key is spent");
}

#[test]
fn the_commit_marker_moves_with_every_commit_of_any_connection() {
    let dir = tempfile::tempdir().unwrap();
    let server = Database::open_in(dir.path()).unwrap();
    let cli = Database::open_in(dir.path()).unwrap();
    let m0 = server.commit_marker().expect("a WAL index");
    assert_eq!(
        server.commit_marker(),
        Some(m0),
        "stable while nothing commits"
    );
    let bump = |db: &Database, day: i64| {
        db.transaction(|tx| {
            tx.execute(
                "INSERT INTO daily_usage (principal, day, count) VALUES ('p', ?1, 1)",
                [day],
            )
        })
        .unwrap();
    };
    let mut seen = vec![m0];
    for day in 0..50 {
        bump(if day % 2 == 0 { &cli } else { &server }, day);
        let m = server.commit_marker().expect("a WAL index");
        assert!(!seen.contains(&m), "commit {day} left the marker as it was");
        seen.push(m);
    }
    // A checkpoint that restarts the WAL still leaves a marker no earlier state had.
    cli.read(|c| c.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(())))
        .unwrap();
    bump(&cli, 1000);
    let m = server.commit_marker().expect("a WAL index");
    assert!(!seen.contains(&m));
}

#[test]
fn revocations_by_another_connection_between_cached_requests_are_never_missed() {
    let (dir, g) = guard(RateDefaults::default());
    let cli = KeyStore::new(Arc::new(Database::open_in(dir.path()).unwrap()));
    for i in 0..20 {
        let (rec, secret) = g
            .keys()
            .create(&new_key(&format!("p{i}"), None, None), NOW)
            .unwrap();
        let key = secret.secret_str().to_string();
        for _ in 0..3 {
            assert!(g.keys().authenticate(&key).unwrap().is_some());
        }
        // Leases and other commits of the server's own connection in between.
        g.admit(&rec, NOW).unwrap().commit();
        assert!(g.keys().authenticate(&key).unwrap().is_some());
        cli.revoke(&RevokeSelector::KeyId(rec.key_id), NOW).unwrap();
        assert!(g.keys().authenticate(&key).unwrap().is_none(), "round {i}");
    }
}

#[test]
fn texts_are_checked_for_count_size_and_utf8_naming_the_text() {
    let limits = TextLimits {
        max_text_bytes: 8,
        max_request_bytes: 12,
    };
    let ok = vec![b"hello".to_vec(), "日本".as_bytes().to_vec()];
    assert_eq!(
        validate_texts(&ok, &limits, 4).unwrap(),
        vec!["hello", "日本"]
    );
    // An empty text is a text (it embeds as [CLS] [SEP]).
    assert_eq!(validate_texts(&[Vec::new()], &limits, 4).unwrap(), vec![""]);
    assert_eq!(validate_texts(&[], &limits, 4), Err(InputError::NoTexts));
    assert_eq!(
        validate_texts(&vec![b"a".to_vec(); 5], &limits, 4),
        Err(InputError::TooManyRows { rows: 5, max: 4 })
    );
    assert_eq!(
        validate_texts(&[b"a".to_vec(), b"123456789".to_vec()], &limits, 4),
        Err(InputError::TextTooLong {
            index: 1,
            bytes: 9,
            max: 8
        })
    );
    assert_eq!(
        validate_texts(&[b"12345678".to_vec(), b"12345".to_vec()], &limits, 4),
        Err(InputError::RequestTooLarge { bytes: 13, max: 12 })
    );
    let e = validate_texts(&[b"ok".to_vec(), vec![b'a', 0xc3, 0x28]], &limits, 4).unwrap_err();
    assert_eq!(
        e,
        InputError::NotUtf8 {
            index: 1,
            offset: 1
        }
    );
    assert!(e.to_string().contains("text 1 is not valid UTF-8"), "{e}");
    // The limits' own ranges.
    assert_eq!(TextLimits::default().validate(), Ok(()));
    assert_eq!(
        TextLimits {
            max_text_bytes: 0,
            ..TextLimits::default()
        }
        .validate(),
        Err(TextLimitsError::MaxTextBytes(0))
    );
    assert_eq!(
        TextLimits {
            max_text_bytes: 100,
            max_request_bytes: 99
        }
        .validate(),
        Err(TextLimitsError::MaxRequestBytes(99))
    );
}

#[test]
fn a_token_quota_counts_a_text_requests_tokens_and_refuses_whole() {
    let (_d, g) = guard(RateDefaults {
        rpm: Some(50),
        rpd: Some(30),
        unit: QuotaUnit::Tokens,
    });
    let (rec, _) = g.keys().create(&new_key("frank", None, None), NOW).unwrap();
    g.admit_text(&rec, NOW, 12).unwrap().commit();
    assert_eq!(g.limiter().used_today("frank", NOW).unwrap(), 12);
    // 12 + 20 > 30: refused whole, naming the unit and the need; nothing spent.
    match g.admit_text(&rec, NOW, 20) {
        Err(GuardError::RateLimited { what, .. }) => {
            assert!(
                what.contains("30 tokens") && what.contains("needs 20"),
                "{what}"
            )
        }
        other => panic!("expected a day refusal, got {other:?}"),
    }
    assert_eq!(g.limiter().used_today("frank", NOW).unwrap(), 12);
    // A refunded admission hands every token back.
    drop(g.admit_text(&rec, NOW, 18).unwrap());
    assert_eq!(g.limiter().used_today("frank", NOW).unwrap(), 12);
    g.admit_text(&rec, NOW, 18).unwrap().commit();
    assert_eq!(g.limiter().used_today("frank", NOW).unwrap(), 30);
    // An MLP request costs one unit; none is left.
    assert!(g.admit(&rec, NOW).is_err());
    // More than a minute's limit at once can never pass: refused, nothing spent.
    let (_d, g) = guard(RateDefaults {
        rpm: Some(10),
        rpd: None,
        unit: QuotaUnit::Tokens,
    });
    let (rec, _) = g.keys().create(&new_key("gina", None, None), NOW).unwrap();
    match g.admit_text(&rec, NOW, 11) {
        Err(GuardError::RateLimited { what, .. }) => {
            assert!(what.contains("more than a minute allows"), "{what}")
        }
        other => panic!("expected a minute refusal, got {other:?}"),
    }
    g.admit_text(&rec, NOW, 10).unwrap().commit();
    // Counting requests, a text request costs one whatever its tokens.
    let (_d, g) = guard(RateDefaults {
        rpm: None,
        rpd: Some(2),
        ..RateDefaults::default()
    });
    let (rec, _) = g.keys().create(&new_key("hal", None, None), NOW).unwrap();
    g.admit_text(&rec, NOW, 500).unwrap().commit();
    assert_eq!(g.limiter().used_today("hal", NOW).unwrap(), 1);
}
