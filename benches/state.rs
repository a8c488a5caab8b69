//! The cost of encrypting the database: one write transaction (a quota-style upsert) and one
//! point read on the same schema, plain SQLite against SQLCipher under a raw 256-bit key
//! (`storage::Database::open_encrypted`, what the server uses).
// criterion_group! generates an undocumented function.
#![allow(missing_docs)]

use confidant::storage::Database;
use criterion::{Criterion, criterion_group, criterion_main};

fn bench(c: &mut Criterion) {
    let dir = tempfile::tempdir().expect("tempdir");
    let plain = Database::open(&dir.path().join("plain.db")).expect("plain");
    let encrypted =
        Database::open_encrypted(&dir.path().join("encrypted.db"), &[7u8; 32]).expect("sqlcipher");
    let mut group = c.benchmark_group("database");
    for (name, db) in [("plain", &plain), ("sqlcipher", &encrypted)] {
        // A few hundred rows, so that reads walk a real B-tree.
        db.transaction(|tx| {
            for p in 0..500 {
                tx.execute(
                    "INSERT INTO daily_usage (principal, day, count) VALUES (?1, 1, 1)",
                    [format!("principal-{p}")],
                )?;
            }
            Ok(())
        })
        .expect("fill");
        group.bench_function(format!("{name}/upsert"), |b| {
            b.iter(|| {
                db.transaction(|tx| {
                    tx.execute(
                        "INSERT INTO daily_usage (principal, day, count) VALUES ('principal-7', 1, 1)
                         ON CONFLICT(principal, day) DO UPDATE SET count = count + 1",
                        [],
                    )
                })
                .expect("upsert")
            });
        });
        group.bench_function(format!("{name}/read"), |b| {
            b.iter(|| {
                db.read(|c| {
                    c.query_row(
                        "SELECT count FROM daily_usage WHERE principal = 'principal-300' AND day = 1",
                        [],
                        |r| r.get::<_, i64>(0),
                    )
                })
                .expect("read")
            });
        });
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
