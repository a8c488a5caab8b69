//! Prints the distribution of sensitivity scores of the demo model on the held-out split, to
//! calibrate a screening threshold: `cargo run --release --example calibrate_screening`.
#![allow(clippy::unwrap_used, clippy::expect_used)] // A measurement script.
use confidant::engine::{Mlp, ScreenAction, Screener, ScreeningSpec};

fn main() -> anyhow::Result<()> {
    let config = confidant::demo::config()?;
    let mlp = Mlp::from_safetensors(&config, confidant::demo::WEIGHTS, &candle_core::Device::Cpu)?;
    let noise: f32 = std::env::args().nth(1).map_or(Ok(0.01), |s| s.parse())?;
    let spec = ScreeningSpec {
        copies: 16,
        noise,
        threshold: 1.0,
        action: ScreenAction::Flag,
    };
    let mut screener = Screener::new(spec, &config.input)?;
    let mut reader = csv::Reader::from_path("tests/fixtures/breast_cancer_test.csv")?;
    let width = config.feature_count();
    let mut rows = Vec::new();
    for rec in reader.records() {
        let rec = rec?;
        let v: Vec<f32> = rec
            .iter()
            .take(width)
            .map(|c| c.parse().unwrap_or(0.0))
            .collect();
        let v: Vec<f32> = v
            .iter()
            .enumerate()
            .map(|(f, x)| x.clamp(config.input.min[f], config.input.max[f]))
            .collect();
        rows.extend(v);
    }
    let n = rows.len() / width;
    let out = mlp.forward_rows(&rows, n)?;
    let mut pert = Vec::new();
    screener.perturb_into(&rows, &mut pert);
    let pout = mlp.forward_rows(&pert, n * 16)?;
    let mut scores = screener.scores(&out, &pout, config.output_count());
    scores.sort_by(f32::total_cmp);
    for q in [0.5, 0.9, 0.95, 0.99, 1.0] {
        let i = ((q * n as f64) as usize).min(n - 1);
        println!("noise {noise}: q{q} = {:.4}", scores[i]);
    }
    // Boundary rows: interpolate between a benign and a malignant row until the class flips.
    let a = &rows[0..width];
    let other = (0..n)
        .find(|&i| (out[2 * i] > 0.5) != (out[0] > 0.5))
        .unwrap_or(1);
    let b = &rows[other * width..(other + 1) * width];
    let mut probe = Vec::new();
    for t in 0..=20 {
        let t = t as f32 / 20.0;
        probe.extend(a.iter().zip(b).map(|(x, y)| x + t * (y - x)));
    }
    let pout0 = mlp.forward_rows(&probe, 21)?;
    let mut pp = Vec::new();
    screener.perturb_into(&probe, &mut pp);
    let ppo = mlp.forward_rows(&pp, 21 * 16)?;
    let s = screener.scores(&pout0, &ppo, 2);
    for (i, sc) in s.iter().enumerate() {
        println!(
            "t={:.2} p0={:.3} score={:.4}",
            i as f32 / 20.0,
            pout0[2 * i],
            sc
        );
    }
    Ok(())
}
