use candle_core::Device;

use super::dpsgd::{add_gaussian_noise, poisson_sample};
use super::network::{Gradient, Workspace, clip_factor, unit_interval};
use super::*;
use crate::engine::Mlp;
use crate::privacy::accountant::{self, AccountantKind, SubsampledGaussian};

const BC_TRAIN: &[u8] = include_bytes!("../../tests/fixtures/splits/breast_cancer_train.csv");
const DIGITS_TEST: &[u8] = include_bytes!("../../tests/fixtures/splits/digits_test.csv");

fn rng(seed: u8) -> ChaChaDpRng {
    ChaChaDpRng::dangerous_from_seed([seed; 32])
}

/// Standard-normal-ish test inputs (sum of uniforms), scaled.
fn random_rows(rng: &mut ChaChaDpRng, rows: usize, width: usize, scale: f64) -> Vec<f64> {
    (0..rows * width)
        .map(|_| scale * ((0..4).map(|_| unit_interval(rng)).sum::<f64>() - 2.0))
        .collect()
}

fn options(privacy: Privacy) -> TrainOptions {
    TrainOptions {
        hidden: vec![8],
        epochs: 2,
        batch_size: 32,
        clip: 1.0,
        learning_rate: 0.5,
        momentum: 0.0,
        schedule: Schedule::Constant,
        privacy,
    }
}

fn dp(epsilon: f64) -> Privacy {
    Privacy::Target {
        epsilon,
        delta: 1e-5,
        accountant: AccountantKind::Rdp,
    }
}

/// Each example's gradient, by running the batched code on a batch of one.
fn per_example(net: &Network, x: &[f64], labels: &[usize]) -> Vec<Gradient> {
    let width = net.inputs();
    let mut ws = Workspace::default();
    labels
        .iter()
        .enumerate()
        .map(|(i, y)| {
            let mut g = Gradient::zeros(net);
            net.gradient_sum(&x[i * width..(i + 1) * width], &[*y], None, &mut ws, &mut g);
            g
        })
        .collect()
}

fn example_loss(net: &Network, x: &[f64], y: usize) -> f64 {
    -net.probabilities(x, 1)[y].ln()
}

#[test]
fn per_example_gradients_match_finite_differences() {
    let mut r = rng(1);
    let mut net = Network::new(&[5, 7, 6, 3], &mut r);
    let x = random_rows(&mut r, 4, 5, 1.0);
    let labels = [0, 2, 1, 2];
    let grads = per_example(&net, &x, &labels);
    let h = 1e-6;
    for (i, (g, &y)) in grads.iter().zip(&labels).enumerate() {
        let xi = &x[i * 5..(i + 1) * 5];
        let analytic: Vec<f64> = g.values().copied().collect();
        for (p, want) in analytic.iter().enumerate() {
            let original = *net.parameters_mut().nth(p).unwrap();
            *net.parameters_mut().nth(p).unwrap() = original + h;
            let up = example_loss(&net, xi, y);
            *net.parameters_mut().nth(p).unwrap() = original - h;
            let down = example_loss(&net, xi, y);
            *net.parameters_mut().nth(p).unwrap() = original;
            let numeric = (up - down) / (2.0 * h);
            assert!(
                (numeric - want).abs() <= 1e-6 + 1e-5 * want.abs(),
                "example {i}, parameter {p}: analytic {want}, numeric {numeric}"
            );
        }
    }
}

#[test]
fn ghost_norms_and_the_clipped_sum_match_a_naive_per_example_loop() {
    let mut r = rng(2);
    let net = Network::new(&[6, 9, 4], &mut r);
    let x = random_rows(&mut r, 12, 6, 3.0);
    let labels: Vec<usize> = (0..12).map(|i| i % 4).collect();
    let grads = per_example(&net, &x, &labels);
    // The median norm: some examples are clipped and some are not.
    let mut norms: Vec<f64> = grads.iter().map(Gradient::norm).collect();
    norms.sort_by(f64::total_cmp);
    let clip = norms[6];

    let mut ws = Workspace::default();
    let mut sum = Gradient::zeros(&net);
    let stats = net.gradient_sum(&x, &labels, Some(clip), &mut ws, &mut sum);

    let mut want = Gradient::zeros(&net);
    let mut clipped = 0;
    for (g, ghost) in grads.iter().zip(ws.norms()) {
        let n = g.norm();
        assert!(
            (n - ghost).abs() <= 1e-9 * n.max(1.0),
            "norm {n} vs ghost {ghost}"
        );
        let c = clip_factor(n, clip);
        if c < 1.0 {
            clipped += 1;
        }
        want.add_scaled(g, c);
    }
    assert!(clipped > 0 && clipped < 12, "clipped {clipped} of 12");
    assert_eq!(stats.clipped, clipped);
    assert_eq!(stats.rows, 12);
    for (a, b) in sum.values().zip(want.values()) {
        assert!((a - b).abs() <= 1e-9, "{a} vs {b}");
    }
    // And with clipping off, the plain sum.
    let mut plain = Gradient::zeros(&net);
    net.gradient_sum(&x, &labels, None, &mut ws, &mut plain);
    let mut want = Gradient::zeros(&net);
    grads.iter().for_each(|g| want.add_scaled(g, 1.0));
    for (a, b) in plain.values().zip(want.values()) {
        assert!((a - b).abs() <= 1e-9);
    }
}

#[test]
fn each_example_contributes_at_most_the_clip_norm() {
    let mut r = rng(3);
    let net = Network::new(&[10, 16, 5], &mut r);
    let x = random_rows(&mut r, 40, 10, 50.0);
    let labels: Vec<usize> = (0..40).map(|i| i % 5).collect();
    let mut ws = Workspace::default();
    for clip in [0.01, 0.5, 2.0] {
        for i in 0..40 {
            let mut g = Gradient::zeros(&net);
            net.gradient_sum(
                &x[i * 10..(i + 1) * 10],
                &labels[i..=i],
                Some(clip),
                &mut ws,
                &mut g,
            );
            assert!(g.norm() <= clip * (1.0 + 1e-12), "norm {}", g.norm());
        }
        // The batch sum is then bounded by B·C.
        let mut sum = Gradient::zeros(&net);
        net.gradient_sum(&x, &labels, Some(clip), &mut ws, &mut sum);
        assert!(sum.norm() <= 40.0 * clip * (1.0 + 1e-12));
    }
}

#[test]
fn poisson_sampling_includes_each_row_independently_with_probability_q() {
    let (n, q, steps) = (1000usize, 0.1, 2000);
    let x: Vec<f64> = (0..n).map(|i| i as f64).collect();
    let labels = vec![0; n];
    let mut r = rng(4);
    let (mut bx, mut by) = (Vec::new(), Vec::new());
    let mut sizes = Vec::with_capacity(steps);
    let mut hits = vec![0u32; n];
    for _ in 0..steps {
        poisson_sample(&mut r, q, &x, &labels, 1, &mut bx, &mut by);
        sizes.push(bx.len() as f64);
        for v in &bx {
            hits[*v as usize] += 1;
        }
    }
    let mean = sizes.iter().sum::<f64>() / steps as f64;
    let var = sizes.iter().map(|s| (s - mean).powi(2)).sum::<f64>() / (steps - 1) as f64;
    // Binomial(1000, 0.1): mean 100, variance 90 (a fixed-size batch would have variance 0).
    let se = (90.0 / steps as f64).sqrt();
    assert!((mean - 100.0).abs() < 5.0 * se, "mean batch {mean}");
    assert!((70.0..115.0).contains(&var), "batch size variance {var}");
    // Every row's inclusion count is Binomial(2000, 0.1): 200 ± 6 sd (sd 13.4).
    let (lo, hi) = (hits.iter().min().unwrap(), hits.iter().max().unwrap());
    assert!(*lo > 120 && *hi < 280, "inclusion counts {lo}..{hi}");
    // q = 1 takes every row.
    poisson_sample(&mut r, 1.0, &x, &labels, 1, &mut bx, &mut by);
    assert_eq!(bx.len(), n);
}

#[test]
fn noise_is_centred_with_standard_deviation_sigma_c() {
    let mut r = rng(5);
    let net = Network::new(&[100, 200], &mut r);
    let mut g = Gradient::zeros(&net);
    let std = 2.5 * 0.8;
    add_gaussian_noise(&mut r, &mut g, std);
    let n = g.values().count() as f64;
    let mean = g.values().sum::<f64>() / n;
    let var = g.values().map(|v| (v - mean).powi(2)).sum::<f64>() / (n - 1.0);
    assert!(mean.abs() < 5.0 * std / n.sqrt(), "mean {mean}");
    // The sample variance of 20,200 normals is within 4% of σ² with overwhelming probability.
    assert!(
        (var.sqrt() / std - 1.0).abs() < 0.02,
        "std {} vs {std}",
        var.sqrt()
    );
    // Tails look Gaussian: about 4.55% beyond 2σ.
    let beyond = g.values().filter(|v| v.abs() > 2.0 * std).count() as f64 / n;
    assert!((beyond - 0.0455).abs() < 0.006, "beyond 2σ: {beyond}");
}

#[test]
fn a_private_step_adds_sigma_c_noise_scaled_by_the_expected_batch() {
    // Zero learning signal (all-zero inputs, a zero network): the update is noise alone.
    let data_rows = 200;
    let x = vec![0.0; data_rows * 4];
    let labels = vec![0usize; data_rows];
    let mut net = Network::new(&[4, 2], &mut rng(6));
    net.parameters_mut().for_each(|p| *p = 0.0);
    let plan = Plan {
        sample_rate: 0.25,
        steps: 1,
        noise_multiplier: Some(3.0),
        clip: 0.5,
        learning_rate: 1.0,
        momentum: 0.0,
        schedule: Schedule::Constant,
        rows: data_rows,
    };
    let mut deltas = Vec::new();
    let mut r = rng(7);
    for _ in 0..400 {
        let mut t = Trainer::new(net.clone(), x.clone(), labels.clone(), plan, &mut r);
        t.step().unwrap();
        // The weight gradient is exactly 0 for zero inputs; the update is the noise.
        let w = t.network().layers()[0].weight().to_vec();
        deltas.extend(w);
    }
    let n = deltas.len() as f64;
    let std = (deltas.iter().map(|d| d * d).sum::<f64>() / n).sqrt();
    let want = 3.0 * 0.5 / (0.25 * data_rows as f64);
    assert!(
        (std / want - 1.0).abs() < 0.05,
        "update std {std}, want {want}"
    );
}

#[test]
fn the_plan_takes_sigma_from_the_accountant() {
    let plan = TrainOptions {
        epochs: 3,
        batch_size: 50,
        ..options(dp(2.0))
    }
    .plan(1000)
    .unwrap();
    assert_eq!(plan.sample_rate, 0.05);
    assert_eq!(plan.steps, 60);
    let sigma = plan.noise_multiplier.unwrap();
    let want = accountant::noise_multiplier(2.0, 1e-5, 0.05, 60, AccountantKind::Rdp).unwrap();
    assert_eq!(sigma, want);
    let eps = accountant::epsilon(
        &SubsampledGaussian {
            sample_rate: 0.05,
            noise_multiplier: sigma,
            steps: 60,
        },
        1e-5,
        AccountantKind::Rdp,
    )
    .unwrap();
    assert!(eps <= 2.0, "ε {eps}");
    assert_eq!(
        options(Privacy::NonPrivate)
            .plan(100)
            .unwrap()
            .noise_multiplier,
        None
    );
}

#[test]
fn bad_parameters_are_refused_naming_their_flag() {
    let check = |o: TrainOptions, flag: &str| {
        let err = o.validate(100).unwrap_err();
        assert!(
            matches!(&err, TrainError::Parameter { name, .. } if *name == flag),
            "{flag}: {err}"
        );
        assert!(err.to_string().starts_with(&format!("--{flag} ")), "{err}");
    };
    let base = options(dp(1.0));
    for eps in [0.0, -1.0, f64::INFINITY, f64::NAN] {
        check(
            TrainOptions {
                privacy: dp(eps),
                ..base.clone()
            },
            "epsilon",
        );
    }
    for delta in [0.0, 1.0, -0.1, 2.0, f64::NAN] {
        let privacy = Privacy::Target {
            epsilon: 1.0,
            delta,
            accountant: AccountantKind::Rdp,
        };
        check(
            TrainOptions {
                privacy,
                ..base.clone()
            },
            "delta",
        );
    }
    check(
        TrainOptions {
            batch_size: 101,
            ..base.clone()
        },
        "batch-size",
    );
    check(
        TrainOptions {
            batch_size: 0,
            ..base.clone()
        },
        "batch-size",
    );
    check(
        TrainOptions {
            clip: 0.0,
            ..base.clone()
        },
        "clip",
    );
    check(
        TrainOptions {
            clip: -1.0,
            ..base.clone()
        },
        "clip",
    );
    check(
        TrainOptions {
            learning_rate: f64::NAN,
            ..base.clone()
        },
        "lr",
    );
    check(
        TrainOptions {
            epochs: 0,
            ..base.clone()
        },
        "epochs",
    );
    check(
        TrainOptions {
            momentum: 1.0,
            ..base.clone()
        },
        "momentum",
    );
    check(
        TrainOptions {
            hidden: vec![0],
            ..base.clone()
        },
        "hidden",
    );
    assert!(base.validate(100).is_ok());
    assert!(
        TrainOptions {
            privacy: Privacy::NonPrivate,
            ..base
        }
        .validate(100)
        .is_ok()
    );
}

fn read(csv: &str) -> Result<Dataset> {
    Dataset::from_csv_reader(csv.as_bytes(), "t.csv", "y", None)
}

#[test]
fn bad_csv_is_refused_naming_line_and_column() {
    let msg = |csv: &str| read(csv).unwrap_err().to_string();
    let m = msg("a,b,y\n1,2,0\n1,2\n");
    assert!(
        m.contains("t.csv: line 3") && m.contains("2 cells") && m.contains("3 columns"),
        "{m}"
    );
    let m = msg("a,b,y\n1,2,0\n1,x7,1\n");
    assert!(
        m.contains("line 3, column \"b\"") && m.contains("\"x7\" is not a number"),
        "{m}"
    );
    let m = msg("a,b,y\n1,NaN,0\n");
    assert!(
        m.contains("line 2, column \"b\"") && m.contains("not a finite"),
        "{m}"
    );
    let m = msg("a,b,label\n1,2,0\n");
    assert!(
        m.contains("no column \"y\"") && m.contains("\"label\""),
        "{m}"
    );
    let m = msg("a,b,y\n1,2,0.5\n");
    assert!(
        m.contains("line 2, column \"y\"") && m.contains("not an integer"),
        "{m}"
    );
    let m = msg("a,b,y\n1,2,-1\n");
    assert!(m.contains("not an integer class index"), "{m}");
    let m = msg("a,b,y\n1,2,cat\n");
    assert!(m.contains("\"cat\" is not an integer class index"), "{m}");
    let m = msg("a,b,y\n1,2,5000\n");
    assert!(m.contains("too large") && m.contains("1024"), "{m}");
    let m = msg("a,a,y\n1,2,0\n");
    assert!(m.contains("more than once"), "{m}");
    let m = msg("a,b,y\n");
    assert!(m.contains("no data rows"), "{m}");
    let m = msg("y\n1\n");
    assert!(m.contains("no feature columns"), "{m}");
    // Labels written as floats, blank lines and spaces are fine.
    let d = read("a, b ,y\n1, 2,1.0\n\n3,4,0\n").unwrap();
    assert_eq!(d.labels(), [1, 0]);
    assert_eq!(d.features(), ["a", "b"]);
    assert_eq!(d.values(), [1.0, 2.0, 3.0, 4.0]);
}

#[test]
fn one_class_or_too_few_class_names_are_refused() {
    let d = read("a,y\n1,0\n2,0\n3,0\n").unwrap();
    let o = TrainOptions {
        hidden: vec![],
        batch_size: 2,
        ..options(Privacy::NonPrivate)
    };
    let err = train(&d, &o, &ModelInfo::new("m"), &mut rng(1), &mut Silent).unwrap_err();
    assert!(err.to_string().contains("single class"), "{err}");
    let d = read("a,y\n1,0\n2,2\n3,1\n").unwrap();
    let info = ModelInfo {
        labels: Some(vec!["x".into(), "y".into()]),
        ..ModelInfo::new("m")
    };
    let err = train(&d, &o, &info, &mut rng(1), &mut Silent).unwrap_err();
    assert!(err.to_string().starts_with("--class-names"), "{err}");
}

#[test]
fn standardization_uses_the_training_rows_and_constant_columns_get_std_1() {
    let d = read("a,b,y\n1,5,0\n3,5,1\n5,5,0\n").unwrap();
    let s = Standardization::fit(&d);
    assert_eq!(s.mean, [3.0, 5.0]);
    assert!((s.std[0] - (8.0f32 / 3.0).sqrt()).abs() < 1e-6);
    assert_eq!(s.std[1], 1.0);
    let z = s.apply(d.values());
    assert!((z[0] + z[4]).abs() < 1e-6 && z[1] == 0.0 && z[2] == 0.0);
}

#[test]
fn input_ranges_contain_the_training_data_widened_by_the_margin() {
    let d = read("a,b,c,y\n1,-2,7,0\n3,2,7,1\n").unwrap();
    let (min, max) = data::feature_ranges(&d, 0.5);
    // a: [1, 3], span 2 → [0 (not below 0: never negative), 4]; b: [-2, 2] → [-4, 4];
    // c: constant 7 → span 7 → [3.5, 10.5].
    assert_eq!(min, [0.0, -4.0, 3.5]);
    assert_eq!(max, [4.0, 4.0, 10.5]);
    let (min, max) = data::feature_ranges(&d, 0.0);
    assert_eq!((min[0], max[0]), (1.0, 3.0));
}

fn bc() -> Dataset {
    Dataset::from_csv_reader(BC_TRAIN, "breast_cancer_train.csv", "target", None).unwrap()
}

#[test]
fn trained_weights_serve_in_the_engine_exactly_as_the_trainer_predicts() {
    let data = bc();
    let o = TrainOptions {
        hidden: vec![6, 5],
        epochs: 2,
        batch_size: 64,
        ..options(dp(3.0))
    };
    let model = train(
        &data,
        &o,
        &ModelInfo::new("bc-test"),
        &mut rng(8),
        &mut Silent,
    )
    .unwrap();
    let weights = model.weights().unwrap();
    // The config survives JSON and the engine loads it with the weights.
    let json = serde_json::to_vec(&model.config).unwrap();
    let config = ModelConfig::from_json(&json).unwrap();
    assert_eq!(config, model.config);
    let names: Vec<&str> = config
        .architecture
        .layers
        .iter()
        .map(|l| l.weight.as_str())
        .collect();
    assert_eq!(names, ["0.weight", "2.weight", "4.weight"]);
    let mlp = Mlp::from_safetensors(&config, &weights, &Device::Cpu).unwrap();
    let rows = 50;
    let raw = &data.values()[..rows * 30];
    let served = mlp.forward_rows(raw, rows).unwrap();
    let ours = model.probabilities(raw);
    assert_eq!(served.len(), ours.len());
    for (s, o) in served.iter().zip(&ours) {
        assert!((f64::from(*s) - o).abs() < 1e-5, "served {s}, trainer {o}");
    }
    // The sealed path accepts it too (the same checks as `confidant seal`).
    let key = crate::sealed::PublisherSigningKey::generate().unwrap();
    let sealed = crate::sealed::seal(
        &config,
        &weights,
        &key,
        &crate::sealed::SealOptions::default(),
    )
    .unwrap();
    assert_eq!(sealed.manifest.model.dp_training, model.config.dp_training);
}

#[test]
fn the_recorded_guarantee_recomputes_from_the_recorded_mechanism() {
    let model = train(
        &bc(),
        &TrainOptions {
            hidden: vec![],
            epochs: 3,
            batch_size: 45,
            ..options(dp(1.5))
        },
        &ModelInfo::new("m"),
        &mut rng(9),
        &mut Silent,
    )
    .unwrap();
    let dp = model.config.dp_training.clone().unwrap();
    assert_eq!((dp.epsilon, dp.delta), (1.5, 1e-5));
    let m = dp.mechanism.unwrap();
    assert_eq!(m.accountant, "rdp");
    assert_eq!(m.steps, 30);
    assert_eq!(m.clip_norm, 1.0);
    let eps = accountant::epsilon(
        &SubsampledGaussian {
            sample_rate: m.sample_rate,
            noise_multiplier: m.noise_multiplier,
            steps: m.steps,
        },
        dp.delta,
        AccountantKind::Rdp,
    )
    .unwrap();
    assert!(eps <= dp.epsilon && eps > 0.9 * dp.epsilon, "ε {eps}");
    assert!(model.config.description.unwrap().contains("without noise"));
}

#[test]
fn seeded_runs_repeat_and_non_private_runs_carry_no_guarantee() {
    let o = TrainOptions {
        hidden: vec![],
        epochs: 1,
        batch_size: 64,
        ..options(dp(1.0))
    };
    let run = |seed: u8, o: &TrainOptions| {
        train(&bc(), o, &ModelInfo::new("m"), &mut rng(seed), &mut Silent).unwrap()
    };
    assert_eq!(run(1, &o).network, run(1, &o).network);
    assert_ne!(run(1, &o).network, run(2, &o).network);
    let plain = run(
        1,
        &TrainOptions {
            privacy: Privacy::NonPrivate,
            ..o
        },
    );
    assert_eq!(plain.config.dp_training, None);
    assert!(
        plain
            .config
            .description
            .unwrap()
            .contains("without differential privacy")
    );
}

#[test]
fn non_private_training_learns_breast_cancer() {
    let data = bc();
    let o = TrainOptions {
        hidden: vec![],
        epochs: 5,
        batch_size: 32,
        learning_rate: 0.5,
        ..options(Privacy::NonPrivate)
    };
    let model = train(&data, &o, &ModelInfo::new("m"), &mut rng(10), &mut Silent).unwrap();
    let eval = evaluate(&model.config, &model.weights().unwrap(), &data).unwrap();
    assert_eq!(eval.rows, 455);
    assert!(eval.accuracy > 0.95, "train accuracy {}", eval.accuracy);
}

#[test]
fn evaluate_refuses_labels_the_model_lacks_and_misordered_features() {
    let data = bc();
    let o = TrainOptions {
        hidden: vec![],
        epochs: 1,
        ..options(Privacy::NonPrivate)
    };
    let model = train(&data, &o, &ModelInfo::new("m"), &mut rng(11), &mut Silent).unwrap();
    let weights = model.weights().unwrap();
    // Digits has labels up to 9 and other features.
    let digits = Dataset::from_csv_reader(DIGITS_TEST, "digits_test.csv", "target", None).unwrap();
    let err = evaluate(&model.config, &weights, &digits).unwrap_err();
    assert!(
        err.to_string().contains("not the model's features"),
        "{err}"
    );
    let mut features = data.features().to_vec();
    features.swap(0, 1);
    let shuffled = Dataset::from_csv_reader(BC_TRAIN, "bc", "target", Some(&features)).unwrap();
    assert!(evaluate(&model.config, &weights, &shuffled).is_err());
    let mut values = data.values().to_vec();
    values.truncate(30);
    let one = Dataset::from_parts("one", data.features().to_vec(), values, vec![7]).unwrap();
    let err = evaluate(&model.config, &weights, &one).unwrap_err();
    assert!(
        err.to_string()
            .contains("data row 1: label 7 is not a class"),
        "{err}"
    );
}
