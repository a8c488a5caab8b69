//! One training epoch on digits (64 → 32 → 10, 1,437 rows): DP-SGD (per-example ghost norms,
//! clipping, Gaussian noise) against the same trainer with clipping and noise off.
// criterion_group! generates an undocumented function.
#![allow(missing_docs)]

use criterion::{Criterion, Throughput};
use std::hint::black_box;

use confidant::privacy::accountant::AccountantKind;
use confidant::privacy::rng::ChaChaDpRng;
use confidant::train::{
    Dataset, Network, Privacy, Schedule, Standardization, TrainOptions, Trainer,
};

/// The expected batch size: `confidant train`'s MLP default.
const BATCH: usize = 64;

fn trainer(data: &Dataset, privacy: Privacy) -> Trainer {
    let options = TrainOptions {
        hidden: vec![32],
        epochs: 1,
        batch_size: BATCH,
        clip: 1.0,
        learning_rate: 0.5,
        momentum: 0.9,
        schedule: Schedule::Cosine,
        privacy,
    };
    let plan = options.plan(data.rows()).expect("valid plan");
    let standardization = Standardization::fit(data);
    let x = standardization.apply(data.values());
    let mut rng = ChaChaDpRng::dangerous_from_seed([3; 32]);
    let network = Network::new(&[data.width(), 32, 10], &mut rng);
    Trainer::new(network, x, data.labels().to_vec(), plan, &mut rng)
}

fn epochs(c: &mut Criterion) {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/splits/digits_train.csv"
    );
    let data = Dataset::read_csv(std::path::Path::new(path), "target", None).expect("digits");
    let mut group = c.benchmark_group("train_epoch_digits_mlp32");
    group.throughput(Throughput::Elements(data.rows() as u64));
    for (name, privacy) in [
        (
            "dp_sgd",
            Privacy::Target {
                epsilon: 3.0,
                delta: 1e-5,
                accountant: AccountantKind::Rdp,
            },
        ),
        ("non_private", Privacy::NonPrivate),
    ] {
        let mut t = trainer(&data, privacy);
        let steps = t.plan().steps_per_epoch();
        group.bench_function(name, |b| {
            b.iter(|| {
                for _ in 0..steps {
                    black_box(t.step().expect("step"));
                }
            })
        });
    }
    group.finish();
}

fn main() {
    let threads = confidant::secure::pin_thread_count();
    eprintln!("train bench: {threads} rayon threads (the trainer itself is single-threaded)");
    let mut c = Criterion::default().configure_from_args();
    epochs(&mut c);
    c.final_summary();
}
