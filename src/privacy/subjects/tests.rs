use std::sync::Arc;

use super::*;

fn store() -> (tempfile::TempDir, Subjects, Arc<Database>) {
    let dir = tempfile::tempdir().unwrap();
    let db = Arc::new(Database::open_in(dir.path()).unwrap());
    let s = Subjects::new(Arc::clone(&db), Zeroizing::new([5; 32]));
    (dir, s, db)
}

#[test]
fn consent_is_per_purpose_and_can_be_withdrawn() {
    let (_d, s, _) = store();
    assert!(matches!(
        s.check_consent("patient-1", "care"),
        Err(SubjectError::NoConsent { .. })
    ));
    let rec = s
        .set_consent("patient-1", "care", true, "form-17", 100)
        .unwrap();
    let p = s.check_consent("patient-1", "care").unwrap();
    assert_eq!(p, rec.subject_pseudonym);
    assert!(s.check_consent("patient-1", "research").is_err());
    s.set_consent("patient-1", "care", false, "phone", 200)
        .unwrap();
    let err = s
        .check_consent("patient-1", "care")
        .unwrap_err()
        .to_string();
    assert_eq!(err, "no consent for purpose care");
}

#[test]
fn the_raw_subject_id_is_never_stored_and_pseudonyms_are_stable() {
    let (dir, s, _) = store();
    let a = s
        .set_consent("alice@example.org", "care", true, "f", 1)
        .unwrap();
    let b = s
        .set_consent("alice@example.org", "billing", true, "f", 2)
        .unwrap();
    assert_eq!(
        a.subject_pseudonym, b.subject_pseudonym,
        "one key per subject"
    );
    let other = s
        .set_consent("bob@example.org", "care", true, "f", 3)
        .unwrap();
    assert_ne!(a.subject_pseudonym, other.subject_pseudonym);
    drop(s);
    for entry in std::fs::read_dir(dir.path()).unwrap() {
        let bytes = std::fs::read(entry.unwrap().path()).unwrap();
        assert!(
            !bytes.windows(17).any(|w| w == b"alice@example.org"),
            "the subject id reached the disk"
        );
    }
}

#[test]
fn forgetting_shreds_the_key_and_is_idempotent() {
    let (_d, s, db) = store();
    let rec = s.set_consent("patient-2", "care", true, "f", 1).unwrap();
    let erased = s.forget("patient-2", 5).unwrap();
    assert!(erased.existed);
    assert_eq!(
        erased.subject_pseudonym.as_deref(),
        Some(rec.subject_pseudonym.as_str())
    );
    assert_eq!(erased.consents_deleted, 1);
    assert_eq!(s.pseudonym("patient-2").unwrap(), None, "the key is gone");
    assert!(s.check_consent("patient-2", "care").is_err());
    let n: i64 = db
        .read(|c| c.query_row("SELECT COUNT(*) FROM subjects", [], |r| r.get(0)))
        .unwrap();
    assert_eq!(n, 0);
    let again = s.forget("patient-2", 6).unwrap();
    assert!(!again.existed);
    assert_eq!(again.consents_deleted, 0);
    // Consent given again later makes a new, unrelated pseudonym.
    let fresh = s.set_consent("patient-2", "care", true, "f", 7).unwrap();
    assert_ne!(fresh.subject_pseudonym, rec.subject_pseudonym);
}

#[test]
fn malformed_ids_purposes_and_sources_are_refused() {
    let (_d, s, _) = store();
    for bad in ["", "has space", "tab\there", &"x".repeat(257)] {
        assert!(
            matches!(s.check_consent(bad, "care"), Err(SubjectError::Invalid(_))),
            "{bad:?}"
        );
    }
    assert!(s.set_consent("p", "bad purpose", true, "f", 1).is_err());
    assert!(s.set_consent("p", "care", true, "line\nbreak", 1).is_err());
}

/// Issue 16 item 7. Before this change the per-subject budget was kept under the subject's
/// pseudonym, which `forget` deleted with its rows: a new consent made a new pseudonym and
/// the subject's budget started again from zero in the same window. It is now kept under
/// `budget_key`, which survives erasure.
#[test]
fn the_budget_spent_on_a_subject_survives_forget_and_a_new_consent() {
    let (_d, s, db) = store();
    let now = 1_790_000_000;
    let budgets = crate::privacy::budget::Budgets::new(
        Arc::clone(&db),
        crate::privacy::budget::BudgetConfig {
            subject_epsilon: Some(1.0),
            ..Default::default()
        },
    );
    let charge = crate::privacy::policy::Charge {
        epsilon: 0.75,
        rho: 0.0,
    };
    // As the pipeline does: consent gives the pseudonym, the budget key names the spend.
    let before = s.set_consent("patient-9", "care", true, "f", 1).unwrap();
    let key = s.budget_key("patient-9").unwrap();
    assert_ne!(key, before.subject_pseudonym);
    let _ = budgets
        .reserve_for("bank", Some(&key), charge, now)
        .unwrap();
    let erased = s.forget("patient-9", 2).unwrap();
    assert!(erased.existed);
    let after = s.set_consent("patient-9", "care", true, "f", 3).unwrap();
    assert_ne!(
        after.subject_pseudonym, before.subject_pseudonym,
        "erasure shredded the old pseudonym"
    );
    let again = s.budget_key("patient-9").unwrap();
    assert_eq!(again, key, "the budget key survives erasure");
    // 0.75 of 1.0 is spent: another 0.75 does not fit, for any principal.
    let err = budgets
        .reserve_for("insurer", Some(&again), charge, now)
        .unwrap_err();
    assert!(
        matches!(err, crate::privacy::budget::BudgetError::SubjectExhausted { remaining, .. } if (remaining - 0.25).abs() < 1e-9),
        "{err}"
    );
    // The budget key is neither the id nor the consent index, and differs per subject.
    assert_ne!(s.budget_key("patient-10").unwrap(), key);
    assert_ne!(key, hex::encode(s.index("patient-9")));
    assert!(!key.contains("patient"));
}
