//! Guard overhead: Predict throughput with every guard on against every guard off, same
//! run, same load generator, same process.
//!
//! Two in-process servers serve the embedded demo model over real TLS gRPC on loopback:
//!
//! - **on**: the production pipeline: API-key authentication (a SQLite lookup), scope and
//!   purpose checks, input validation against the signed schema, the per-minute GCRA limit
//!   and the per-day quota (a SQLite write per request), adversarial-sensitivity screening
//!   (8 perturbed copies per row in the same forward pass), the hash-chained audit record
//!   (group-fsync'd) and the metrics;
//! - **off**: `ServeConfig::unguarded_benchmark_baseline`, the same engine and batcher with
//!   none of the above (reachable from no flag or config file).
//!
//! The load generator keeps `CONCURRENCY` (128) requests in flight over `CHANNELS` HTTP/2
//! connections for a window, alternating on/off windows (ABAB…) so that drift on a shared
//! machine cancels, and reports requests/s of each and the median of the per-pair ratios.
//!
//! Run: `cargo bench --bench guards` (about 40 s). Without `--bench` (as `cargo test
//! --benches` runs it) it does one short pair as a smoke test.
//!
//! `GUARDS_BENCH_RECEIPTS=1` measures the cost of receipts instead: one guarded server, its
//! clients asking for a signed receipt with every answer (**on**) against the same clients
//! asking for none (**off**), windows alternated as above.
//!
//! `GUARDS_BENCH_SEPARATE=1` (with `GUARDS_BENCH_RECEIPTS=1`) runs that server in a child
//! process (this bench, re-executed) and also reports the server's own CPU time per answer
//! in each window (the sum of its threads' run time, `/proc/PID/task/*/schedstat`): the
//! clients' share of the work (half of it, on two shared cores) is then not counted as the
//! server's cost. The ratio of the server's CPU per answer off/on is the server's throughput
//! ratio once it has its cores to itself.

use std::sync::Arc;
use std::time::{Duration, Instant};

use confidant::client::Client;
use confidant::guard::RateDefaults;
use confidant::server::{self, ServeConfig};

/// The same allocator as the binary.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Requests in flight by default: enough to saturate both cores of the CI machine. At 32,
/// neither side saturated them (the unguarded server went from 70k to 88k requests/s
/// between 32 and 128), so the ratio measured latency as much as throughput.
/// `GUARDS_BENCH_CONCURRENCY` overrides it.
const CONCURRENCY: usize = 128;
const CHANNELS: usize = 4;

struct Target {
    addr: String,
    ca: Vec<u8>,
    key: String,
    stop: tokio::sync::oneshot::Sender<()>,
    task: tokio::task::JoinHandle<Result<(), server::ServerError>>,
}

async fn start(
    dir: &std::path::Path,
    unguarded: bool,
    idle: &std::sync::Arc<confidant::audit::IdleWorkers>,
) -> Target {
    let config = ServeConfig {
        // As `confidant serve` runs: receipts gather while the runtime is busy.
        idle_workers: Some(std::sync::Arc::clone(idle)),
        rate: RateDefaults {
            rpm: Some(1_000_000_000),
            rpd: if std::env::var_os("GUARDS_BENCH_NO_RPD").is_some() {
                None
            } else {
                Some(1_000_000_000)
            },
            ..RateDefaults::default()
        },
        // Profiling aid: GUARDS_BENCH_GROUP_MS overrides `[audit] group_commit_ms`.
        audit: server::AuditSettings {
            group_commit_ms: std::env::var("GUARDS_BENCH_GROUP_MS")
                .ok()
                .and_then(|v| v.parse().ok())
                .unwrap_or(confidant::audit::DEFAULT_GROUP_COMMIT_MS),
            // GUARDS_BENCH_JOURNAL_MIB overrides `[audit] journal_mib` (0: answers wait for
            // the writer instead of the journal).
            journal_mib: std::env::var("GUARDS_BENCH_JOURNAL_MIB")
                .ok()
                .and_then(|v| v.parse().ok())
                .unwrap_or(confidant::audit::DEFAULT_JOURNAL_BYTES as u64 >> 20),
            ..Default::default()
        },
        unguarded_benchmark_baseline: unguarded,
        ..ServeConfig::embedded_demo("127.0.0.1:0".parse().expect("addr"), dir.to_path_buf())
    };
    let ca_path = config.cert_path();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let (ready_tx, ready_rx) = tokio::sync::oneshot::channel();
    let task = tokio::spawn(server::run(
        config,
        async move {
            let _ = stopped.await;
        },
        move |running| {
            let key = running
                .demo_api_key
                .as_ref()
                .map(|k| k.secret_str().to_string())
                .expect("a fresh data dir gets a demo key");
            let _ = ready_tx.send((running.addr, key));
        },
    ));
    let (addr, key) = ready_rx.await.expect("server ready");
    Target {
        addr: format!("https://{addr}"),
        ca: std::fs::read(ca_path).expect("cert"),
        key,
        stop,
        task,
    }
}

/// Where the clients connect.
struct Endpoint {
    addr: String,
    ca: Vec<u8>,
    key: String,
}

impl Target {
    fn endpoint(&self) -> Endpoint {
        Endpoint {
            addr: self.addr.clone(),
            ca: self.ca.clone(),
            key: self.key.clone(),
        }
    }
}

async fn clients(t: &Endpoint, receipts: bool) -> Vec<Client> {
    let mut out = Vec::new();
    for _ in 0..CHANNELS {
        let mut c = Client::connect(&t.addr, &t.ca)
            .await
            .expect("connect")
            .with_api_key(&t.key)
            .expect("key")
            .with_purpose("demonstration")
            .expect("purpose");
        if receipts {
            c = c.with_receipt_salt(&[7; 32]).expect("salt");
        }
        out.push(c);
    }
    out
}

/// Requests per second over one window.
fn concurrency() -> usize {
    std::env::var("GUARDS_BENCH_CONCURRENCY")
        .ok()
        .and_then(|v| v.parse().ok())
        .filter(|&n| n > 0)
        .unwrap_or(CONCURRENCY)
}

async fn window(clients: &[Client], length: Duration) -> f64 {
    window_counted(clients, length).await.0
}

/// Requests per second over one window, and how many were answered.
async fn window_counted(clients: &[Client], length: Duration) -> (f64, u64) {
    let deadline = Instant::now() + length;
    let started = Instant::now();
    let mut tasks = Vec::new();
    for i in 0..concurrency() {
        let mut c = clients[i % clients.len()].clone();
        tasks.push(tokio::spawn(async move {
            let row = vec![confidant::demo::SAMPLE_ROW.to_vec()];
            let mut n = 0u64;
            while Instant::now() < deadline {
                let p = c.predict("demo", &row).await.expect("predict");
                // A receipt asked for is a receipt received (not verified here: that is the
                // client's cost, not the server's, and would share the server's cores).
                if p.receipt_salt.is_some() {
                    assert!(p.receipt.as_ref().is_some_and(|r| !r.is_empty()));
                }
                n += 1;
            }
            n
        }));
    }
    let mut total = 0;
    for t in tasks {
        total += t.await.expect("task");
    }
    (total as f64 / started.elapsed().as_secs_f64(), total)
}

/// The run time of every thread of process `pid` so far, in nanoseconds.
fn cpu_ns(pid: u32) -> u64 {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return 0;
    };
    tasks
        .filter_map(|t| t.ok())
        .filter_map(|t| std::fs::read_to_string(t.path().join("schedstat")).ok())
        .filter_map(|s| s.split_whitespace().next()?.parse::<u64>().ok())
        .sum()
}

/// The child of `GUARDS_BENCH_SEPARATE`: serves until its parent closes its stdin.
fn serve_for_parent(
    rt: &tokio::runtime::Runtime,
    idle: &std::sync::Arc<confidant::audit::IdleWorkers>,
) {
    rt.block_on(async {
        let dir = tempfile::tempdir().expect("tempdir");
        let t = start(dir.path(), false, idle).await;
        println!("{} {} {}", t.addr, t.key, hex::encode(&t.ca));
        let _ = tokio::task::spawn_blocking(|| {
            let mut line = String::new();
            let _ = std::io::stdin().read_line(&mut line);
        })
        .await;
        let _ = t.stop.send(());
        let _ = t.task.await;
    });
}

/// `GUARDS_BENCH_SEPARATE`: receipts on/off against a server in a child process, with the
/// server's CPU time per answer.
fn separate(rt: &tokio::runtime::Runtime, pairs: usize, length: Duration) {
    use std::io::BufRead;
    let mut child = std::process::Command::new(std::env::current_exe().expect("exe"))
        .arg("--bench")
        .env("GUARDS_BENCH_CHILD", "1")
        .env_remove("GUARDS_BENCH_SEPARATE")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("the server process");
    let pid = child.id();
    let mut line = String::new();
    std::io::BufReader::new(child.stdout.take().expect("stdout"))
        .read_line(&mut line)
        .expect("the server's address");
    let mut parts = line.split_whitespace();
    let (Some(addr), Some(key), Some(ca)) = (parts.next(), parts.next(), parts.next()) else {
        panic!("the server said {line:?}");
    };
    let endpoint = Endpoint {
        addr: addr.to_string(),
        key: key.to_string(),
        ca: hex::decode(ca).expect("hex"),
    };
    rt.block_on(async {
        let c_on = clients(&endpoint, true).await;
        let c_off = clients(&endpoint, false).await;
        window(&c_on, length / 2).await;
        window(&c_off, length / 2).await;
        // One window: requests/s, and the server's CPU µs per answer.
        let measure = async |c: &[Client]| {
            let before = cpu_ns(pid);
            let (rate, n) = window_counted(c, length).await;
            (rate, (cpu_ns(pid) - before) as f64 / 1e3 / n.max(1) as f64)
        };
        // Profiling aid: GUARDS_BENCH_ONLY=on|off runs one side's windows only (after a
        // marker line, with the server's pid for `perf record -p`).
        if let Ok(side) = std::env::var("GUARDS_BENCH_ONLY") {
            let c = if side == "on" { &c_on } else { &c_off };
            println!("{side}: warmed up, server pid {pid}");
            let (mut n, mut cpu) = (0, 0.0);
            for _ in 0..pairs {
                let before = cpu_ns(pid);
                let (rate, count) = window_counted(c, length).await;
                n += count;
                cpu += (cpu_ns(pid) - before) as f64;
                println!("{side}: {rate:.0} req/s");
            }
            println!(
                "{side}: {n} answers, {:.1} µs of server CPU an answer",
                cpu / 1e3 / n.max(1) as f64
            );
            return;
        }
        let (mut rates, mut cpus) = (Vec::new(), Vec::new());
        for i in 0..pairs {
            let (on, off) = if i % 2 == 0 {
                let on = measure(&c_on).await;
                (on, measure(&c_off).await)
            } else {
                let off = measure(&c_off).await;
                (measure(&c_on).await, off)
            };
            rates.push(on.0 / off.0);
            cpus.push(off.1 / on.1);
            println!(
                "pair {i}: receipts on {:.0} req/s, {:.1} µs of server CPU an answer; off {:.0} \
                 req/s, {:.1} µs; throughput ratio {:.3}, server CPU ratio (off/on) {:.3}",
                on.0,
                on.1,
                off.0,
                off.1,
                on.0 / off.0,
                off.1 / on.1
            );
        }
        rates.sort_by(f64::total_cmp);
        cpus.sort_by(f64::total_cmp);
        println!(
            "server in its own process: median throughput ratio {:.3}, median server CPU per \
             answer off/on {:.3} ({pairs} pairs of {length:?}, concurrency {}, {CHANNELS} \
             connections)",
            rates[rates.len() / 2],
            cpus[cpus.len() / 2],
            concurrency()
        );
    });
    drop(child.stdin.take());
    let _ = child.wait();
}

fn main() {
    // As the binary does: fix candle's thread count before any thread exists.
    // SAFETY: the first statement of `main`: no other thread exists yet.
    #[allow(unsafe_code)]
    let _ = unsafe { confidant::secure::pin_thread_count() };
    let full = std::env::args().any(|a| a == "--bench");
    let pairs_env = std::env::var("GUARDS_BENCH_PAIRS")
        .ok()
        .and_then(|v| v.parse().ok());
    let window_env = std::env::var("GUARDS_BENCH_WINDOW_MS")
        .ok()
        .and_then(|v| v.parse().ok())
        .map(Duration::from_millis);
    let (pairs, length) = if full {
        (
            // 16 pairs of 1 s windows: the same 40 s as 8 pairs of 2 s, but a median over
            // twice as many pairs, which this shared VM's drift needs.
            pairs_env.unwrap_or(16),
            window_env.unwrap_or(Duration::from_secs(1)),
        )
    } else {
        (1, Duration::from_millis(200))
    };
    // With the park hooks that `confidant serve` installs (receipts gather with them).
    let idle = confidant::audit::IdleWorkers::new();
    let rt = idle
        .install(tokio::runtime::Builder::new_multi_thread().enable_all())
        .build()
        .expect("runtime");
    if std::env::var_os("GUARDS_BENCH_CHILD").is_some() {
        serve_for_parent(&rt, &idle);
        return;
    }
    let receipts = std::env::var_os("GUARDS_BENCH_RECEIPTS").is_some();
    if receipts && std::env::var_os("GUARDS_BENCH_SEPARATE").is_some() {
        separate(&rt, pairs, length);
        return;
    }
    let (label_on, label_off) = if receipts {
        ("receipts on", "receipts off")
    } else {
        ("guards on", "guards off")
    };
    rt.block_on(async {
        let dir_on = tempfile::tempdir().expect("tempdir");
        let dir_off = tempfile::tempdir().expect("tempdir");
        let on = start(dir_on.path(), false, &idle).await;
        let off = (!receipts).then_some(start(dir_off.path(), true, &idle).await);
        let (c_on, c_off) = match &off {
            Some(off) => (
                clients(&on.endpoint(), false).await,
                clients(&off.endpoint(), false).await,
            ),
            None => (
                clients(&on.endpoint(), true).await,
                clients(&on.endpoint(), false).await,
            ),
        };
        // Profiling aid: GUARDS_BENCH_ONLY=on|off runs one side's windows only (its own
        // warm-up included, so that a profile holds that side's requests and no other).
        let only = std::env::var("GUARDS_BENCH_ONLY").ok();
        if let Some(side) = only.as_deref() {
            let c = if side == "on" { &c_on } else { &c_off };
            window(c, length / 2).await;
            // A marker for tools that sample system-wide CPU time over the measured windows.
            println!("{side}: warmed up");
            let mut total = 0.0;
            for _ in 0..pairs {
                let rate = window(c, length).await;
                total += rate * length.as_secs_f64();
                println!("{side}: {rate:.0} req/s");
            }
            println!("{side}: about {total:.0} requests after the warm-up");
            return;
        }
        // Warm-up.
        window(&c_on, length / 2).await;
        window(&c_off, length / 2).await;
        let mut ratios = Vec::new();
        let (mut sum_on, mut sum_off) = (0.0, 0.0);
        for i in 0..pairs {
            // Alternate which side goes first.
            let (a, b) = if i % 2 == 0 {
                let a = window(&c_on, length).await;
                (a, window(&c_off, length).await)
            } else {
                let b = window(&c_off, length).await;
                (window(&c_on, length).await, b)
            };
            sum_on += a;
            sum_off += b;
            ratios.push(a / b);
            println!(
                "pair {i}: {label_on} {a:.0} req/s, {label_off} {b:.0} req/s, ratio {:.3}",
                a / b
            );
        }
        ratios.sort_by(f64::total_cmp);
        let median = ratios[ratios.len() / 2];
        println!(
            "{label_on} {:.0} req/s, {label_off} {:.0} req/s (mean of {pairs} windows of {:?}, \
             batch 1, concurrency {}, {CHANNELS} connections); \
             median on/off ratio {median:.3}",
            sum_on / pairs as f64,
            sum_off / pairs as f64,
            length,
            concurrency()
        );
        for t in std::iter::once(on).chain(off) {
            let _ = t.stop.send(());
            let _ = Arc::new(t.task.await);
        }
    });
}
