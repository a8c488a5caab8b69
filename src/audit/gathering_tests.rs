//! Gathering receipts while the runtime is busy ([`IdleWorkers`], [`Load::may_sign`]): a
//! group is held while other calls are in flight and no worker waits for work, and signed
//! as soon as one is about to.

use super::tests::{
    append_receipt, assert_none_expected, close_and_check_receipts, concurrent_receipts,
    group_size, open_log, receipt_of,
};
use super::*;

/// A log whose receipts' task knows `idle`, with nothing else that ends a gathering early: a
/// 600 s linger, and a writer thread that wakes on its own only every 600 s (it would take
/// the queued receipts in a turn of its own).
fn gathering_log(
    dir: &Path,
    idle: &Arc<IdleWorkers>,
) -> (AuditLog, Arc<crate::receipt::ReceiptSigner>) {
    let log = open_log(
        dir,
        AuditConfig {
            receipt_linger: Duration::from_secs(600),
            checkpoint_interval: Duration::from_secs(600),
            group_linger: Duration::from_millis(1),
            ..AuditConfig::default()
        },
    );
    log.write_receipts_on_runtime(Some(idle));
    assert!(log.queue.load.get().is_some(), "the task has the hooks");
    let key = ed25519_dalek::SigningKey::from_bytes(&[5; 32]);
    let signer = Arc::new(
        crate::receipt::ReceiptSigner::from_parts(key, b"{}".to_vec()).expect("the signer"),
    );
    (log, signer)
}

/// `n` tasks that stand for calls in flight (the runtime counts them) until the sender drops.
fn calls_in_flight(n: usize) -> tokio::sync::watch::Sender<()> {
    let (done, _) = tokio::sync::watch::channel(());
    for _ in 0..n {
        let mut rx = done.subscribe();
        tokio::spawn(async move {
            let _ = rx.changed().await;
        });
    }
    done
}

/// Appends `id` with a receipt (its call the last one expected) and waits for it: signed
/// at once, in a group of its own.
async fn signed_alone(
    log: &AuditLog,
    signer: &Arc<crate::receipt::ReceiptSigner>,
    id: &str,
) -> (String, Vec<u8>) {
    let r = receipt_of(append_receipt(log, signer, id, Some(log.expect_receipt()))).await;
    assert_eq!(group_size(&r), 1, "{id}");
    (id.to_string(), r)
}

/// Waits until the writer thread's fsync of the receipts signed so far is over (it is then
/// not due for 600 s): a receipt queued while it runs would be taken in its turn, not
/// gathered.
async fn after_the_writers_fsync() {
    tokio::time::sleep(Duration::from_millis(50)).await;
}

/// The receipt that `wait` awaits does not come within 200 ms.
async fn assert_held<F: std::future::Future>(wait: std::pin::Pin<&mut F>, why: &str) {
    assert!(
        tokio::time::timeout(Duration::from_millis(200), wait)
            .await
            .is_err(),
        "{why}"
    );
}

#[tokio::test]
async fn a_receipt_is_held_while_other_calls_are_in_flight_and_signed_once_a_worker_parks() {
    let d = tempfile::tempdir().unwrap();
    // The hooks are driven by hand here: no worker of this runtime reports.
    let idle = IdleWorkers::new();
    let (log, signer) = gathering_log(d.path(), &idle);
    let mut receipts = Vec::new();
    // Nothing else in flight: signed at once, alone.
    receipts.push(signed_alone(&log, &signer, "alone").await);
    after_the_writers_fsync().await;

    // 40 calls in flight, none of them expected to bring a receipt yet, no worker parked:
    // the receipt waits for them (its call is the last one expected, which alone would
    // have ended the gathering).
    let calls = calls_in_flight(40);
    let a = append_receipt(&log, &signer, "a", Some(log.expect_receipt()));
    let mut a = std::pin::pin!(a.wait_for_receipt());
    assert_held(a.as_mut(), "held while the runtime is busy").await;
    // (Without saying so beforehand: its arrival wakes nobody.)
    let b = append_receipt(&log, &signer, "b", None);
    // A worker about to wait for work ends the gathering: one signature covers both.
    idle.parking();
    let ra = tokio::time::timeout(Duration::from_secs(60), a)
        .await
        .expect("signed once a worker parked")
        .unwrap()
        .expect("a receipt");
    let rb = receipt_of(b).await;
    assert_eq!((group_size(&ra), group_size(&rb)), (2, 2));
    receipts.extend([("a".to_string(), ra), ("b".to_string(), rb)]);

    // While a worker waits for work, nothing is held.
    receipts.push(signed_alone(&log, &signer, "c").await);
    idle.unparked();

    // Nor once the calls have ended, with every worker busy.
    drop(calls);
    for _ in 0..100 {
        tokio::task::yield_now().await;
    }
    receipts.push(signed_alone(&log, &signer, "e").await);

    assert_none_expected(&log);
    close_and_check_receipts(log, d.path(), &receipts);
}

#[tokio::test]
async fn parks_wake_a_gathering_only_while_a_park_could_end_it() {
    let d = tempfile::tempdir().unwrap();
    let idle = IdleWorkers::new();
    let (log, signer) = gathering_log(d.path(), &idle);
    let mut receipts = vec![signed_alone(&log, &signer, "alone").await];
    after_the_writers_fsync().await;
    let calls = calls_in_flight(40);

    // A receipt queued while another call that will bring one is still inside the pipeline
    // (a large batch in the engine's threads, say): the gathering waits for that call, and
    // workers that park meanwhile do not wake it, again and again, for nothing.
    let other = log.expect_receipt();
    let a = append_receipt(&log, &signer, "a", Some(log.expect_receipt()));
    let mut a = std::pin::pin!(a.wait_for_receipt());
    assert_held(a.as_mut(), "held for the call inside the pipeline").await;
    assert_eq!(idle.gatherings_woken_on_parks(), 0);
    idle.parking();
    idle.unparked();
    assert_held(
        a.as_mut(),
        "a park does not end it while the call is under way",
    )
    .await;
    // That park still counts: once the call's receipt is queued, the group is signed at
    // once, although the runtime is busy again.
    let b = append_receipt(&log, &signer, "b", Some(other));
    let rb = receipt_of(b).await;
    let ra = a.await.unwrap().expect("a receipt");
    assert_eq!((group_size(&ra), group_size(&rb)), (2, 2));
    receipts.extend([("a".to_string(), ra), ("b".to_string(), rb)]);
    after_the_writers_fsync().await;

    // With no call inside the pipeline, a gathering on a busy runtime waits for a park, and
    // a park wakes it.
    let c = append_receipt(&log, &signer, "c", Some(log.expect_receipt()));
    let mut c = std::pin::pin!(c.wait_for_receipt());
    assert_held(c.as_mut(), "held while the runtime is busy").await;
    assert_eq!(idle.gatherings_woken_on_parks(), 1);
    idle.parking();
    let rc = tokio::time::timeout(Duration::from_secs(60), c)
        .await
        .expect("signed once a worker parked")
        .unwrap()
        .expect("a receipt");
    assert_eq!(group_size(&rc), 1);
    receipts.push(("c".to_string(), rc));
    idle.unparked();
    assert_eq!(idle.gatherings_woken_on_parks(), 0, "the gathering is over");

    drop(calls);
    assert_none_expected(&log);
    close_and_check_receipts(log, d.path(), &receipts);
}

#[tokio::test]
async fn a_group_that_is_a_fair_share_of_the_calls_in_flight_is_not_held() {
    let d = tempfile::tempdir().unwrap();
    let idle = IdleWorkers::new();
    let (log, signer) = gathering_log(d.path(), &idle);
    // No more calls in flight than one receipt is a fair share of: nothing is held.
    let calls = calls_in_flight(HOLD_SHARE);
    signed_alone(&log, &signer, "a").await;
    after_the_writers_fsync().await;
    // With more, a receipt is held until the group is a fair share of them: two receipts for
    // up to 2 x HOLD_SHARE calls.
    drop(calls);
    let calls = calls_in_flight(2 * HOLD_SHARE);
    let a = append_receipt(&log, &signer, "b", Some(log.expect_receipt()));
    let mut a = std::pin::pin!(a.wait_for_receipt());
    assert_held(
        a.as_mut(),
        &format!("one receipt held for {} calls", 2 * HOLD_SHARE),
    )
    .await;
    // The second receipt's arrival (the last expected) ends the gathering: a fair share now.
    let b = append_receipt(&log, &signer, "c", Some(log.expect_receipt()));
    let (ra, rb) = (receipt_of(b).await, a.await.unwrap().expect("a receipt"));
    assert_eq!((group_size(&ra), group_size(&rb)), (2, 2));
    drop(calls);
    log.close();
}

#[test]
fn the_hooks_count_a_real_runtimes_idle_workers_and_end_its_gatherings() {
    let idle = IdleWorkers::new();
    let runtime = idle
        .install(
            tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all(),
        )
        .build()
        .unwrap();
    runtime.block_on(async {
        // Idle workers park.
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        while !idle.any_parked() {
            assert!(std::time::Instant::now() < deadline, "no worker parked");
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        // Calls on the runtime while many more tasks are alive than receipts: each group is
        // held until a worker is about to park (the linger is 600 s, so only the hooks can end
        // them), and every receipt comes.
        let d = tempfile::tempdir().unwrap();
        let (log, signer) = gathering_log(d.path(), &idle);
        let log = Arc::new(log);
        let calls = calls_in_flight(200);
        let receipts = concurrent_receipts(&log, &signer, 8, 20).await;
        drop(calls);
        assert_eq!(receipts.len(), 160);
        let log = Arc::into_inner(log).expect("no other holder");
        close_and_check_receipts(log, d.path(), &receipts);
    });
}

#[tokio::test]
async fn a_receipt_is_not_held_for_calls_in_flight_that_bring_none() {
    let d = tempfile::tempdir().unwrap();
    let idle = IdleWorkers::new();
    let (log, signer) = gathering_log(d.path(), &idle);
    // Recent calls: one in a hundred asked for a receipt. Of 40 calls in flight, then, one
    // may bring a receipt: a receipt is not held for the others.
    for i in 0..2000 {
        if i % 100 == 0 {
            drop(log.expect_receipt());
        } else {
            log.note_call_without_receipt();
        }
    }
    let calls = calls_in_flight(40);
    signed_alone(&log, &signer, "a").await;
    after_the_writers_fsync().await;
    // Once the recent calls are mostly receipts' (the older ones count for less, halved
    // every few thousand calls), a receipt is held for the calls in flight again.
    for _ in 0..8000 {
        drop(log.expect_receipt());
    }
    let b = append_receipt(&log, &signer, "b", Some(log.expect_receipt()));
    let mut b = std::pin::pin!(b.wait_for_receipt());
    assert_held(b.as_mut(), "held while most calls carry receipts").await;
    idle.parking();
    assert_eq!(group_size(&b.await.unwrap().expect("a receipt")), 1);
    drop(calls);
    log.close();
}

/// A server's call: a task of its own (as hyper spawns one per HTTP/2 stream) queues `id`
/// with a receipt, the last one expected, and awaits it.
fn call(
    log: &Arc<AuditLog>,
    signer: &Arc<crate::receipt::ReceiptSigner>,
    id: &'static str,
) -> tokio::task::JoinHandle<(String, Vec<u8>)> {
    let (log, signer) = (Arc::clone(log), Arc::clone(signer));
    tokio::spawn(async move {
        let durable = append_receipt(&log, &signer, id, Some(log.expect_receipt()));
        (id.to_string(), receipt_of(durable).await)
    })
}

/// A call whose receipt is signed at once, in a group of its own.
async fn call_signed_alone(
    log: &Arc<AuditLog>,
    signer: &Arc<crate::receipt::ReceiptSigner>,
    id: &'static str,
) -> (String, Vec<u8>) {
    let r = tokio::time::timeout(Duration::from_secs(5), call(log, signer, id))
        .await
        .unwrap_or_else(|_| panic!("{id}'s receipt was held"))
        .unwrap();
    assert_eq!(group_size(&r.1), 1, "{id}");
    r
}

/// A call whose receipt is held while the runtime is busy, and signed, alone, once a
/// worker is about to park.
async fn call_held_until_a_park(
    idle: &Arc<IdleWorkers>,
    log: &Arc<AuditLog>,
    signer: &Arc<crate::receipt::ReceiptSigner>,
    id: &'static str,
) -> (String, Vec<u8>) {
    let mut held = call(log, signer, id);
    assert_held(
        std::pin::Pin::new(&mut held),
        &format!("{id}'s receipt is held for the calls in flight"),
    )
    .await;
    idle.parking();
    let r = tokio::time::timeout(Duration::from_secs(60), held)
        .await
        .expect("signed once a worker parked")
        .unwrap();
    idle.unparked();
    assert_eq!(group_size(&r.1), 1, "{id}");
    r
}

#[tokio::test]
async fn the_servers_own_tasks_and_its_connections_are_not_calls_in_flight() {
    let d = tempfile::tempdir().unwrap();
    let idle = IdleWorkers::new();
    let (log, signer) = gathering_log(d.path(), &idle);
    let log = Arc::new(log);
    // Tasks the server spawned after its receipts' task (its ports' accept loops, the
    // anchoring, …), and three connections, a task each.
    let own = calls_in_flight(5);
    let connection_tasks = calls_in_flight(3);
    let open = crate::tls::OpenConnections::default();
    let connections: Vec<_> = (0..3)
        .map(|_| {
            let mut c = open.connection();
            c.in_use();
            c
        })
        .collect();
    assert_eq!(open.count(), 3);
    let counted = open.clone();
    log.receipts_serving(move || counted.count());

    // One call in flight: its receipt is signed at once, by its own call (the eight other
    // tasks used to count as calls it was held for).
    let mut receipts = vec![call_signed_alone(&log, &signer, "a").await];
    after_the_writers_fsync().await;
    // Calls in flight are still calls: a receipt is held for them.
    let calls = calls_in_flight(2 * HOLD_SHARE);
    receipts.push(call_held_until_a_park(&idle, &log, &signer, "b").await);
    drop(calls);
    after_the_writers_fsync().await;

    // The server's own tasks that end no longer count: the first look with one call in
    // flight sees fewer, and calls in flight are held for again (not hidden by the tasks
    // that ended).
    drop(own);
    for _ in 0..100 {
        tokio::task::yield_now().await;
    }
    receipts.push(call_signed_alone(&log, &signer, "c").await);
    after_the_writers_fsync().await;
    let calls = calls_in_flight(2 * HOLD_SHARE);
    receipts.push(call_held_until_a_park(&idle, &log, &signer, "e").await);
    drop(calls);

    drop((connections, connection_tasks));
    assert_eq!(open.count(), 0);
    assert_none_expected(&log);
    let log = Arc::into_inner(log).expect("no other holder");
    close_and_check_receipts(log, d.path(), &receipts);
}
