//! The vectors `kernels/host_check` checks the CUDA code against, written by the CPU
//! references (`kernels/host_check/vectors.txt`).

/// The vectors `kernels/host_check` checks the CUDA code against, written by the CPU
/// references. The test fails when the committed file differs from what the references
/// produce now; `CONFIDANT_WRITE_VECTORS=1 cargo test --lib --features experimental
/// host_check_vectors` rewrites it. Without the `experimental` feature the noise references
/// (`gpu::noise`, `gpu::chacha`) are not built, so their lines
/// ([`generator::EXPERIMENTAL_TAGS`]) are left out of the comparison, and the file is not
/// rewritten (it would lose them).
#[test]
fn host_check_vectors_are_current() {
    let path =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("kernels/host_check/vectors.txt");
    let text = generator::generate();
    if std::env::var_os("CONFIDANT_WRITE_VECTORS").is_some() {
        if !cfg!(feature = "experimental") {
            panic!(
                "rewriting {} needs --features experimental (the noise vectors)",
                path.display()
            );
        }
        std::fs::write(&path, &text).unwrap();
    }
    let committed = std::fs::read_to_string(&path).unwrap_or_default();
    let committed: String = if cfg!(feature = "experimental") {
        committed
    } else {
        let built = |line: &&str| {
            let tag = line.split(' ').next().unwrap_or_default();
            !generator::EXPERIMENTAL_TAGS.contains(&tag)
        };
        committed
            .lines()
            .filter(built)
            .flat_map(|l| [l, "\n"])
            .collect()
    };
    assert!(
        committed == text,
        "{} is stale: rerun with CONFIDANT_WRITE_VECTORS=1 and --features experimental",
        path.display()
    );
}

mod generator {
    use std::fmt::Write;

    use crate::gpu::aes_gcm;
    #[cfg(feature = "experimental")]
    use crate::gpu::chacha::{self, NoiseKey};
    #[cfg(feature = "experimental")]
    use crate::gpu::noise;
    #[cfg(feature = "experimental")]
    use crate::privacy::mechanism::NoisyArgmax;
    #[cfg(feature = "experimental")]
    use crate::privacy::sampler::fast::FastDiscreteLaplace;
    #[cfg(feature = "experimental")]
    use crate::privacy::sampler::{Rational, discrete_gaussian_sigma2};

    /// The first fields of the lines the experimental noise references write (feature
    /// `experimental`).
    pub(super) const EXPERIMENTAL_TAGS: [&str; 6] = [
        "chacha",
        "grid_laplace",
        "dlaplace",
        "dgauss",
        "argmax",
        "laplace_argmax",
    ];

    #[cfg(feature = "experimental")]
    fn key(seed: u8) -> NoiseKey {
        NoiseKey::dangerous_from_bytes(std::array::from_fn(|i| {
            seed.wrapping_mul(101)
                .wrapping_add((i as u8).wrapping_mul(53))
        }))
    }

    fn hex_or_dash(b: &[u8]) -> String {
        if b.is_empty() {
            "-".into()
        } else {
            hex::encode(b)
        }
    }

    #[cfg(feature = "experimental")]
    fn join<T: ToString>(v: impl IntoIterator<Item = T>) -> String {
        v.into_iter()
            .map(|x| x.to_string())
            .collect::<Vec<_>>()
            .join(" ")
    }

    pub(super) fn generate() -> String {
        let mut s = String::from(
            "# Written by the Rust CPU references (src/gpu/tests.rs, host_check_vectors_are_current);\n\
             # read by kernels/host_check/host_check.cu. One vector per line, fields space-separated.\n",
        );
        #[cfg(feature = "experimental")]
        chacha_vectors(&mut s);
        for x in [
            1.0f64,
            0.5,
            0.999_999_9,
            1e-300,
            5e-324,
            2f64.powi(-63),
            0.75,
            3.0e-5,
            0.0,
        ] {
            writeln!(
                s,
                "log {:016x} {:016x}",
                x.to_bits(),
                libm::log(x).to_bits()
            )
            .unwrap();
        }
        #[cfg(feature = "experimental")]
        noise_vectors(&mut s);
        let mut x = 0x1234_5678_9abc_def0u64;
        let mut next = move || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        for _ in 0..4 {
            let a = aes_gcm::Gf128 {
                hi: next(),
                lo: next(),
            };
            let b = aes_gcm::Gf128 {
                hi: next(),
                lo: next(),
            };
            let c = a.times(b);
            writeln!(
                s,
                "gfmul {} {} {}",
                hex::encode(a.to_bytes()),
                hex::encode(b.to_bytes()),
                hex::encode(c.to_bytes())
            )
            .unwrap();
        }
        for (index, last) in [(0u32, false), (0x0102_0304, true)] {
            let prefix = [1, 2, 3, 4, 5, 6, 7];
            let n = aes_gcm::chunk_nonce(&prefix, index, last);
            writeln!(
                s,
                "nonce {} {index} {} {}",
                hex::encode(prefix),
                u8::from(last),
                hex::encode(n)
            )
            .unwrap();
        }
        for (i, len) in [0usize, 5, 16, 100, 4096 + 3, 16 * aes_gcm::LANES + 40]
            .into_iter()
            .enumerate()
        {
            let bytes = |salt: u64, n: usize| -> Vec<u8> {
                (0..n)
                    .map(|j| ((j as u64 * 131 + salt * 7 + i as u64) % 251) as u8)
                    .collect()
            };
            let key: [u8; 32] = bytes(1, 32).try_into().unwrap();
            let nonce: [u8; 12] = bytes(2, 12).try_into().unwrap();
            let aad = bytes(3, if i % 2 == 0 { 32 } else { 20 });
            let pt = bytes(4, len);
            let k = ring::aead::LessSafeKey::new(
                ring::aead::UnboundKey::new(&ring::aead::AES_256_GCM, &key).unwrap(),
            );
            let mut ct = pt.clone();
            let tag = k
                .seal_in_place_separate_tag(
                    ring::aead::Nonce::assume_unique_for_key(nonce),
                    ring::aead::Aad::from(&aad),
                    &mut ct,
                )
                .unwrap();
            writeln!(
                s,
                "gcm {} {} {} {} {} {}",
                hex::encode(key),
                hex::encode(nonce),
                hex::encode(&aad),
                hex_or_dash(&ct),
                hex::encode(tag.as_ref()),
                hex_or_dash(&pt)
            )
            .unwrap();
        }
        // A multi-chunk STREAM region, sealed by the sealing code itself.
        for (len, chunk) in [
            (4096 * 3 + 100, 4096u32),
            (4096, 4096),
            (1, 4096),
            (4100 * 2 + 50, 4100),
        ] {
            let key = crate::sealed::DataKey::from_bytes(&[0x5a; 32]).unwrap();
            let prefix = [9, 8, 7, 6, 5, 4, 3];
            let aad: [u8; 32] = std::array::from_fn(|i| (i * 3) as u8);
            let pt: Vec<u8> = (0..len).map(|i| (i * 17 % 256) as u8).collect();
            let region =
                crate::sealed::stream::encrypt(&key, &prefix, &aad, chunk as usize, &pt).unwrap();
            writeln!(
                s,
                "stream {} {} {} {chunk} {len} {} {}",
                hex::encode(key.secret_bytes()),
                hex::encode(prefix),
                hex::encode(aad),
                hex::encode(&region),
                hex::encode(&pt)
            )
            .unwrap();
        }
        s
    }

    /// The ChaCha20 stream's vectors (`gpu::chacha`).
    #[cfg(feature = "experimental")]
    fn chacha_vectors(s: &mut String) {
        for (seed, nonce, counter0, n) in [
            (1u8, 0u64, 0u64, 40usize),
            (2, u64::MAX, 5, 16),
            (3, 77, 1 << 40, 3),
        ] {
            let k = key(seed);
            let mut w = vec![0u32; n];
            chacha::fill_words(&k, nonce, counter0, &mut w);
            let words = join(w.iter().map(|x| format!("{x:08x}")));
            writeln!(
                s,
                "chacha {} {nonce:x} {counter0:x} {n} {words}",
                hex::encode(k.secret_bytes())
            )
            .unwrap();
        }
    }

    /// The DP samplers' and noisy argmaxes' vectors (`gpu::noise`).
    #[cfg(feature = "experimental")]
    fn noise_vectors(s: &mut String) {
        for (seed, scale, n) in [(4u8, 0.25f64, 300usize), (5, 3.7, 100), (6, 1048576.0, 64)] {
            let k = key(seed);
            let sampler = FastDiscreteLaplace::new(scale).unwrap();
            let mut out = vec![0i64; n];
            noise::grid_laplace_reference(&k, 1000, &sampler, &mut out);
            writeln!(
                s,
                "grid_laplace {} 1000 {:016x} {:016x} {} {n} {}",
                hex::encode(k.secret_bytes()),
                sampler.scale().to_bits(),
                sampler.shift().to_bits(),
                sampler.cap(),
                join(out)
            )
            .unwrap();
        }
        for (seed, t, sd) in [(7u8, 1u128, 1u128), (8, 13, 4), (9, 1 << 20, 1)] {
            let k = key(seed);
            let mut out = vec![0i64; 50];
            noise::discrete_laplace_reference(&k, 3, Rational::new(t, sd).unwrap(), &mut out)
                .unwrap();
            writeln!(
                s,
                "dlaplace {} 3 {t} {sd} 50 {}",
                hex::encode(k.secret_bytes()),
                join(out)
            )
            .unwrap();
        }
        for (seed, sigma) in [(10u8, 0.7f64), (11, 4.25), (12, 300.0)] {
            let k = key(seed);
            let sigma2 = discrete_gaussian_sigma2(sigma).unwrap();
            let mut out = vec![0i64; 50];
            noise::discrete_gaussian_reference(&k, 9, sigma2, &mut out).unwrap();
            writeln!(
                s,
                "dgauss {} 9 {} {} 50 {}",
                hex::encode(k.secret_bytes()),
                sigma2.num,
                sigma2.den,
                join(out)
            )
            .unwrap();
        }
        for (seed, eps, sens, mono, rows, classes) in [
            (13u8, 1.0f64, 1.0f64, false, 6usize, 10usize),
            (14, 0.1, 0.5, true, 3, 1),
            (15, 8.0, 0.01, false, 4, 33),
        ] {
            let k = key(seed);
            let m = NoisyArgmax::new(eps, sens, mono).unwrap();
            let scores: Vec<f32> = (0..rows * classes)
                .map(|i| ((i * 7919) % 97) as f32 / 13.0 - 3.0)
                .collect();
            let labels = noise::noisy_argmax_reference(&k, 21, &m, &scores, classes).unwrap();
            let e = m.epsilon_rational();
            writeln!(
                s,
                "argmax {} 21 {:016x} {} {} {rows} {classes} {} {}",
                hex::encode(k.secret_bytes()),
                m.grid().step().to_bits(),
                e.num,
                e.den * m.divisor(),
                join(scores.iter().map(|x| format!("{:08x}", x.to_bits()))),
                join(labels)
            )
            .unwrap();
        }
        for (seed, eps, dim, rows) in [
            (16u8, 1.0f64, 5usize, 7usize),
            (17, 0.05, 1, 3),
            (18, 20.0, 12, 4),
        ] {
            let k = key(seed);
            let m = crate::privacy::mechanism::LaplaceScores::new(eps, 1.0, dim)
                .unwrap()
                .fast()
                .unwrap();
            let scores: Vec<f32> = (0..rows * dim)
                .map(|i| ((i * 104_729) % 89) as f32 / 7.0 - 5.0)
                .collect();
            let (labels, noisy) =
                noise::laplace_argmax_reference(&k, 33, &m, &scores, dim).unwrap();
            let sampler = m.sampler();
            writeln!(
                s,
                "laplace_argmax {} 33 {:016x} {:016x} {:016x} {} {rows} {dim} {} {} {}",
                hex::encode(k.secret_bytes()),
                m.grid().step().to_bits(),
                sampler.scale().to_bits(),
                sampler.shift().to_bits(),
                sampler.cap(),
                join(scores.iter().map(|x| format!("{:08x}", x.to_bits()))),
                join(labels),
                join(noisy.iter().map(|x| format!("{:016x}", x.to_bits())))
            )
            .unwrap();
        }
    }
}
