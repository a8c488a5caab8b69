//! One training epoch on digits (64 → 32 → 10, 1,437 rows): DP-SGD (per-example ghost norms,
//! clipping, Gaussian noise) against the same trainer with clipping and noise off.
//!
//! Every timed epoch starts from a freshly initialized network: a non-private run trained for
//! thousands of epochs saturates its softmax, and the resulting subnormal gradients would slow
//! it down for reasons that have nothing to do with privacy.
// criterion_group! generates an undocumented function.
#![allow(missing_docs)]

use criterion::{BatchSize, Criterion, Throughput};
use std::hint::black_box;

use confidant::privacy::accountant::AccountantKind;
use confidant::privacy::rng::ChaChaDpRng;
use confidant::train::{
    Dataset, Network, Plan, Privacy, Schedule, Standardization, TrainOptions, Trainer,
};

/// The expected batch size: `confidant train`'s MLP default (q = 512 / 1437, 3 steps an
/// epoch).
const BATCH: usize = 512;

/// Everything a fresh trainer needs; `start` builds one outside the timed region.
struct Setup {
    network: Network,
    x: Vec<f64>,
    labels: Vec<usize>,
    plan: Plan,
    rng: ChaChaDpRng,
}

impl Setup {
    fn new(data: &Dataset, privacy: Privacy, batch: usize) -> Self {
        let options = TrainOptions {
            hidden: vec![32],
            epochs: 1,
            batch_size: batch,
            clip: 1.0,
            learning_rate: 8.0,
            momentum: 0.0,
            schedule: Schedule::Cosine,
            privacy,
        };
        let plan = options.plan(data.rows()).expect("valid plan");
        let x = Standardization::fit(data).apply(data.values());
        let mut rng = ChaChaDpRng::dangerous_from_seed([3; 32]);
        let network = Network::new(&[data.width(), 32, 10], &mut rng);
        Self {
            network,
            x,
            labels: data.labels().to_vec(),
            plan,
            rng,
        }
    }

    fn start(&mut self) -> Trainer {
        Trainer::new(
            self.network.clone(),
            self.x.clone(),
            self.labels.clone(),
            self.plan,
            &mut self.rng,
        )
    }
}

fn epoch(mut t: Trainer) -> Trainer {
    for _ in 0..t.plan().steps {
        black_box(t.step().expect("step"));
    }
    t
}

fn dp_privacy() -> Privacy {
    Privacy::Target {
        epsilon: 3.0,
        delta: 1e-5,
        accountant: AccountantKind::Rdp,
    }
}

fn digits() -> Dataset {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/splits/digits_train.csv"
    );
    Dataset::read_csv(std::path::Path::new(path), "target", None).expect("digits")
}

fn epochs(c: &mut Criterion, data: &Dataset) {
    let mut group = c.benchmark_group("train_epoch_digits_mlp32");
    group.throughput(Throughput::Elements(data.rows() as u64));
    for (name, privacy) in [
        ("dp_sgd", dp_privacy()),
        ("non_private", Privacy::NonPrivate),
    ] {
        let mut setup = Setup::new(data, privacy, BATCH);
        group.bench_function(name, |b| {
            b.iter_batched(|| setup.start(), epoch, BatchSize::SmallInput)
        });
    }
    group.finish();
}

/// Alternates private and non-private epochs and prints the medians and the median of the
/// per-pair time ratios: on a shared machine, load drifts between criterion's two
/// back-to-back runs, while two adjacent epochs see about the same load.
fn interleaved(data: &Dataset, batch: usize, pairs: usize) {
    let mut dp = Setup::new(data, dp_privacy(), batch);
    let mut plain = Setup::new(data, Privacy::NonPrivate, batch);
    let timed = |t: Trainer| {
        let start = std::time::Instant::now();
        black_box(epoch(t));
        start.elapsed().as_secs_f64()
    };
    let (mut ratios, mut dp_times, mut plain_times) = (Vec::new(), Vec::new(), Vec::new());
    for i in 0..pairs {
        let (a, b) = (dp.start(), plain.start());
        // Alternate which goes first, so neither always runs on a warmer cache.
        let (ta, tb) = if i.is_multiple_of(2) {
            let ta = timed(a);
            (ta, timed(b))
        } else {
            let tb = timed(b);
            (timed(a), tb)
        };
        dp_times.push(ta);
        plain_times.push(tb);
        ratios.push(ta / tb);
    }
    let median = |v: &mut Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    eprintln!(
        "interleaved, batch {batch}, {pairs} pairs: DP-SGD epoch {:.3} ms, non-private {:.3} ms \
         (medians); median ratio {:.3}",
        median(&mut dp_times) * 1e3,
        median(&mut plain_times) * 1e3,
        median(&mut ratios)
    );
}

fn main() {
    // SAFETY: the first statement of `main`: no other thread exists yet.
    #[allow(unsafe_code)]
    let threads = unsafe { confidant::secure::pin_thread_count() };
    eprintln!("train bench: {threads} rayon threads (the trainer itself is single-threaded)");
    let data = digits();
    // `cargo bench` passes --bench; `cargo test --benches` (the CI smoke run) does not, and
    // runs each criterion benchmark once: skip the 2,000 interleaved epochs there.
    if std::env::args().any(|a| a == "--bench") {
        for batch in [BATCH, 64] {
            interleaved(&data, batch, 1000);
        }
    }
    let mut c = Criterion::default().configure_from_args();
    epochs(&mut c, &data);
    c.final_summary();
}
