//! GPU benchmarks (feature `cuda`; run by scripts/gpu-check.sh on a GPU host):
//!
//! - **P4** `p4_load/{plaintext,staged,device_decrypt}`: a 148 MB sealed model
//!   (1024-4096-4096-4096-16) from its file to its first prediction: read, signature check,
//!   decryption into device memory by each path, model build, one forward pass; against
//!   reading the same plaintext safetensors, loading them to the GPU and one forward pass.
//!   Target: device_decrypt ≤ 1.1× plaintext.
//! - **P5** `p5_mlp/{fused,candle}/B`: one prediction round trip (upload, forward, download)
//!   of a 64-128-128-10 MLP at batch B, the fused kernel against candle's cuBLAS path.
//!   Target: ≥ 2× at B ≤ 256.
//! - **noise**: ChaCha20 noise generation against a device-to-device copy of the same bytes
//!   (GB/s), and AES-GCM decryption on the device (GB/s), timed with stream synchronisation.
//!
//! After the groups it prints a table of the ratios, read from criterion's estimates.
//! Run: `CRITERION_HOME=DIR cargo bench --features cuda --bench gpu`.

use std::hint::black_box;
use std::time::Duration;

use candle_core::{Device, Tensor};
use confidant::engine::Mlp;
use confidant::engine::synthetic;
use confidant::gpu::{self, DeviceSpec, LoadPath};
use confidant::loading;
use confidant::sealed::{self, PublisherSigningKey, SealOptions, SealedFile};
use criterion::{BenchmarkId, Criterion, Throughput};

#[allow(clippy::expect_used)]
fn bench_load(c: &mut Criterion, dev: &Device) {
    let Device::Cuda(cuda) = dev else { return };
    let widths = [1024usize, 4096, 4096, 4096, 16];
    let (config, weights) = synthetic::mlp(&widths, 1).expect("model");
    let signing = PublisherSigningKey::generate().expect("key");
    let sealed = sealed::seal(&config, &weights, &signing, &SealOptions::default()).expect("seal");
    let trusted = [signing.public_key()];
    let x = synthetic::values(widths[0], 2, 4.0);
    // Both sides start from a file (in the page cache after the first read), as a server does.
    let dir = std::env::temp_dir().join(format!("confidant-gpu-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let plain_path = dir.join("model.safetensors");
    let sealed_path = dir.join("model.sealed");
    std::fs::write(&plain_path, &weights).expect("write plaintext");
    std::fs::write(&sealed_path, &sealed.file).expect("write sealed");
    let mut g = c.benchmark_group("p4_load");
    g.sample_size(10)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(4));
    g.throughput(Throughput::Bytes(weights.len() as u64));
    g.bench_function("plaintext", |b| {
        b.iter(|| {
            let bytes = std::fs::read(black_box(&plain_path)).expect("read");
            let m = Mlp::from_safetensors(&config, &bytes, dev).expect("load");
            m.forward_rows(&x, 1).expect("predict")
        })
    });
    for (name, path) in [
        ("staged", LoadPath::Staged),
        ("device_decrypt", LoadPath::DeviceDecrypt),
    ] {
        g.bench_function(name, |b| {
            b.iter(|| {
                let file = SealedFile::read(black_box(&sealed_path)).expect("read");
                let verified = file.verify(&trusted).expect("verify");
                let plain = loading::cuda::load_sealed(&verified, &sealed.data_key, cuda, path)
                    .expect("decrypt");
                let m = loading::cuda::mlp_from_device(&verified.manifest().model, &plain, dev)
                    .expect("build");
                drop(plain);
                m.forward_rows(&x, 1).expect("predict")
            })
        });
    }
    // Where the time goes: each side's file read alone.
    g.bench_function("read_plaintext", |b| {
        b.iter(|| std::fs::read(black_box(&plain_path)).expect("read"))
    });
    g.bench_function("read_sealed", |b| {
        b.iter(|| SealedFile::read(black_box(&sealed_path)).expect("read"))
    });
    g.finish();
    let _ = std::fs::remove_dir_all(&dir);
}

#[allow(clippy::expect_used)]
fn bench_mlp(c: &mut Criterion, dev: &Device) {
    let widths = [64usize, 128, 128, 10];
    let (config, weights) = synthetic::mlp(&widths, 3).expect("model");
    let m = Mlp::from_safetensors(&config, &weights, dev).expect("load");
    let mut g = c.benchmark_group("p5_mlp");
    g.warm_up_time(Duration::from_millis(300))
        .measurement_time(Duration::from_secs(1))
        .sample_size(20);
    for batch in [1usize, 16, 64, 256, 1024, 4096] {
        let x = synthetic::values(batch * widths[0], batch as u64, 4.0);
        g.throughput(Throughput::Elements(batch as u64));
        g.bench_with_input(BenchmarkId::new("fused", batch), &x, |b, x| {
            b.iter(|| m.forward_rows(black_box(x), batch).expect("fused"))
        });
        g.bench_with_input(BenchmarkId::new("candle", batch), &x, |b, x| {
            b.iter(|| {
                let t = Tensor::from_slice(black_box(x), (batch, widths[0]), dev).expect("x");
                m.forward_candle(&t)
                    .expect("candle")
                    .flatten_all()
                    .expect("flat")
                    .to_vec1::<f32>()
                    .expect("download")
            })
        });
    }
    g.finish();
}

/// ChaCha20 noise generation (with the `experimental` feature) and AES-GCM device decryption
/// throughput, timed with stream synchronisation (`gpu::noise::bench_noise_gbps`,
/// `loading::cuda::bench_decrypt_gbps`): summary lines for the table.
#[allow(clippy::expect_used)]
fn bench_throughput(dev: &Device) -> Vec<String> {
    let cuda = gpu::cuda::cuda_device(dev, "bench").expect("cuda device");
    let bytes = 1usize << 30;
    let mut lines = Vec::new();
    #[cfg(feature = "experimental")]
    match gpu::noise::bench_noise_gbps(cuda, bytes) {
        Ok((noise, copy)) => lines.push(format!(
            "{:<34} {:>10.0} GB/s {:>10.0} GB/s {:>7.2}x  (noise / device-to-device copy, 1 GiB)",
            "ChaCha20 noise generation",
            noise,
            copy,
            noise / copy
        )),
        Err(e) => lines.push(format!("noise bench failed: {e}")),
    }
    match loading::cuda::bench_decrypt_gbps(cuda, bytes) {
        Ok(gbps) => lines.push(format!(
            "{:<34} {:>10.0} GB/s  (1 MiB STREAM chunks, 1 GiB)",
            "AES-256-GCM decrypt on device", gbps
        )),
        Err(e) => lines.push(format!("decrypt bench failed: {e}")),
    }
    lines
}

/// Mean time of one criterion benchmark, from its estimates file.
fn mean_ns(home: &std::path::Path, id: &str) -> Option<f64> {
    let text = std::fs::read_to_string(home.join(id).join("new").join("estimates.json")).ok()?;
    let v: serde_json::Value = serde_json::from_str(&text).ok()?;
    v["mean"]["point_estimate"].as_f64()
}

fn table(extra: &[String]) {
    let home = std::path::PathBuf::from(
        std::env::var("CRITERION_HOME").unwrap_or_else(|_| "target/criterion".into()),
    );
    let m = |id: &str| mean_ns(&home, id);
    println!(
        "\n== GPU summary (criterion means; ratio = baseline / ours, higher is better, except P4)"
    );
    println!(
        "{:<34} {:>14} {:>14} {:>8}",
        "measure", "ours", "baseline", "ratio"
    );
    if let (Some(p), Some(s), Some(d)) = (
        m("p4_load/plaintext"),
        m("p4_load/staged"),
        m("p4_load/device_decrypt"),
    ) {
        println!(
            "{:<34} {:>11.1} ms {:>11.1} ms {:>7.2}x  (time / plaintext's)",
            "P4 staged -> first predict",
            s / 1e6,
            p / 1e6,
            s / p
        );
        println!(
            "{:<34} {:>11.1} ms {:>11.1} ms {:>7.2}x  (target <= 1.1x)",
            "P4 device_decrypt -> first predict",
            d / 1e6,
            p / 1e6,
            d / p
        );
    }
    if let (Some(rp), Some(rs)) = (m("p4_load/read_plaintext"), m("p4_load/read_sealed")) {
        println!(
            "{:<34} {:>11.1} ms {:>11.1} ms",
            "  of which: file read (sealed, plain)",
            rs / 1e6,
            rp / 1e6
        );
    }
    for b in [1, 16, 64, 256, 1024, 4096] {
        if let (Some(f), Some(c)) = (
            m(&format!("p5_mlp/fused/{b}")),
            m(&format!("p5_mlp/candle/{b}")),
        ) {
            println!(
                "{:<34} {:>11.1} us {:>11.1} us {:>7.2}x  (target >= 2x at B <= 256)",
                format!("P5 fused MLP, batch {b}"),
                f / 1e3,
                c / 1e3,
                c / f
            );
        }
    }
    for line in extra {
        println!("{line}");
    }
}

fn main() {
    let dev = match gpu::open(DeviceSpec::Cuda(0)) {
        Ok(d) => d,
        Err(e) => {
            eprintln!("gpu bench: no CUDA device ({e}); nothing to measure");
            return;
        }
    };
    let mut c = Criterion::default().configure_from_args();
    bench_load(&mut c, &dev);
    bench_mlp(&mut c, &dev);
    c.final_summary();
    let extra = bench_throughput(&dev);
    table(&extra);
}
