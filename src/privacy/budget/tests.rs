use std::sync::Arc;

use super::*;

fn budgets(epsilon: f64) -> (tempfile::TempDir, Budgets) {
    let dir = tempfile::tempdir().unwrap();
    let db = Arc::new(Database::open_in(dir.path()).unwrap());
    let b = Budgets::new(
        db,
        BudgetConfig {
            epsilon,
            ..Default::default()
        },
    );
    (dir, b)
}

const NOW: i64 = 1_790_000_000;

fn eps(e: f64) -> Charge {
    Charge {
        epsilon: e,
        rho: 0.0,
    }
}

#[test]
fn reserve_until_exhausted_then_refuse_without_writing() {
    let (_d, b) = budgets(1.0);
    for _ in 0..4 {
        let _ = b.reserve("alice", eps(0.25), NOW).unwrap();
    }
    let err = b.reserve("alice", eps(0.25), NOW).unwrap_err();
    let msg = err.to_string();
    assert!(
        matches!(err, BudgetError::Exhausted { remaining, .. } if remaining == 0.0),
        "{msg}"
    );
    assert!(msg.contains("exhausted for alice"), "{msg}");
    let s = b.status("alice", NOW).unwrap();
    assert_eq!(s.epsilon_spent, 1.0);
    assert_eq!(s.epsilon_remaining, 0.0);
    // Other principals and the next window are untouched.
    assert_eq!(b.status("bob", NOW).unwrap().epsilon_spent, 0.0);
    let next = NOW + 86_400;
    assert_eq!(b.status("alice", next).unwrap().epsilon_spent, 0.0);
    let _ = b.reserve("alice", eps(0.25), next).unwrap();
}

#[test]
fn a_refund_hands_the_charge_back() {
    let (_d, b) = budgets(1.0);
    let r = b.reserve("alice", eps(0.75), NOW).unwrap();
    assert!(b.reserve("alice", eps(0.5), NOW).is_err());
    b.refund(r);
    assert_eq!(b.status("alice", NOW).unwrap().epsilon_spent, 0.0);
    let _ = b.reserve("alice", eps(0.5), NOW).unwrap();
}

#[test]
fn a_hundred_concurrent_requests_never_overspend() {
    let (_d, b) = budgets(2.0);
    let granted: usize = std::thread::scope(|s| {
        let handles: Vec<_> = (0..100)
            .map(|_| s.spawn(|| b.reserve("alice", eps(0.1), NOW).is_ok()))
            .collect();
        handles
            .into_iter()
            .map(|h| usize::from(h.join().unwrap()))
            .sum()
    });
    let spent = b.status("alice", NOW).unwrap().epsilon_spent;
    assert!(spent <= 2.0, "{spent}");
    assert!(
        (spent - granted as f64 * 0.1).abs() < 1e-9,
        "{granted} granted, {spent} spent"
    );
    assert!((19..=20).contains(&granted), "{granted}");
}

#[test]
fn gaussian_spending_counts_through_zcdp() {
    let (_d, b) = budgets(1.0);
    let c = Charge {
        epsilon: 0.0,
        rho: 0.001,
    };
    let _ = b.reserve("alice", c, NOW).unwrap();
    let s = b.status("alice", NOW).unwrap();
    assert!((s.epsilon_spent - c.epsilon_at(1e-6)).abs() < 1e-12);
}

#[test]
fn config_ranges() {
    assert!(BudgetConfig::default().validate().is_ok());
    for bad in [
        BudgetConfig {
            epsilon: 0.0,
            ..Default::default()
        },
        BudgetConfig {
            epsilon: f64::INFINITY,
            ..Default::default()
        },
        BudgetConfig {
            delta: 0.0,
            ..Default::default()
        },
        BudgetConfig {
            delta: 1.0,
            ..Default::default()
        },
        BudgetConfig {
            window_seconds: 1,
            ..Default::default()
        },
    ] {
        assert!(bad.validate().is_err(), "{bad:?}");
    }
}

#[test]
fn a_data_subject_budget_binds_across_principals_and_refuses_atomically() {
    let dir = tempfile::tempdir().unwrap();
    let db = Arc::new(Database::open_in(dir.path()).unwrap());
    let b = Budgets::new(
        Arc::clone(&db),
        BudgetConfig {
            epsilon: 10.0,
            subject_epsilon: Some(1.0),
            ..Default::default()
        },
    );
    let _ = b
        .reserve_for("bank", Some("subj-a"), eps(0.5), NOW)
        .unwrap();
    let _ = b
        .reserve_for("insurer", Some("subj-a"), eps(0.5), NOW)
        .unwrap();
    // The subject's 1.0 is spent, whoever asks; the refusal writes nothing, not even the
    // principal's share.
    let err = b
        .reserve_for("clinic", Some("subj-a"), eps(0.5), NOW)
        .unwrap_err();
    assert!(matches!(err, BudgetError::SubjectExhausted { .. }), "{err}");
    assert!(err.to_string().contains("data subject"), "{err}");
    assert_eq!(b.status("clinic", NOW).unwrap().epsilon_spent, 0.0);
    // Another subject, and requests naming none, are unaffected.
    let _ = b
        .reserve_for("clinic", Some("subj-b"), eps(0.5), NOW)
        .unwrap();
    let r = b.reserve_for("clinic", None, eps(0.5), NOW).unwrap();
    // A refund hands back both shares.
    let r2 = b
        .reserve_for("clinic", Some("subj-b"), eps(0.5), NOW)
        .unwrap();
    b.refund(r2);
    let _ = b
        .reserve_for("clinic", Some("subj-b"), eps(0.5), NOW)
        .unwrap();
    b.refund(r);
    assert!((b.status("clinic", NOW).unwrap().epsilon_spent - 1.0).abs() < 1e-12);
}

/// A subject's spend is kept only while it limits anything: the first reservation of a new
/// window deletes the per-subject rows of ended windows (principals' rows stay).
#[test]
fn per_subject_spend_of_ended_windows_is_deleted() {
    let dir = tempfile::tempdir().unwrap();
    let db = Arc::new(Database::open_in(dir.path()).unwrap());
    let b = Budgets::new(
        Arc::clone(&db),
        BudgetConfig {
            subject_epsilon: Some(5.0),
            ..Default::default()
        },
    );
    let rows = |scope: &str| -> i64 {
        db.read(|c| {
            c.query_row(
                "SELECT COUNT(*) FROM privacy_spend WHERE scope = ?1",
                [scope],
                |r| r.get(0),
            )
        })
        .unwrap()
    };
    let _ = b
        .reserve_for("bank", Some("subj-a"), eps(0.5), NOW)
        .unwrap();
    let _ = b
        .reserve_for("bank", Some("subj-b"), eps(0.5), NOW)
        .unwrap();
    assert_eq!((rows("subject"), rows("principal")), (2, 1));
    // The next window: subj-a and subj-b no longer limit anything.
    let next_window = NOW + 86_400;
    let _ = b
        .reserve_for("bank", Some("subj-c"), eps(0.5), next_window)
        .unwrap();
    assert_eq!((rows("subject"), rows("principal")), (1, 2));
}
