//! Property test: any single-bit flip in a signed region of genuine NVIDIA GPU evidence is
//! rejected. The regions are the report (signed bytes and signature), the DER of every device
//! certificate the verifier uses (TBS, algorithm and signature; the carried root is replaced
//! by the pinned one and so is not a region), and each RIM file except the base64 of its
//! embedded root certificate (likewise replaced by the pinned RIM root).
//!
//! The default run flips a few hundred bits so that `cargo test` stays fast in debug builds.
//! The acceptance run:
//!
//! ```sh
//! NVIDIA_BITFLIPS=10000 cargo test --release -p confidant-attestation --test nvidia_bitflip
//! ```
//!
//! Positions come from a seeded generator (`NVIDIA_BITFLIP_SEED`) so a failure can be replayed.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use base64::Engine as _;
use confidant_attestation::{GpuEvidence, GpuReferences, Timestamp, verify_gpu};

const HOPPER_REPORT: &[u8] = include_bytes!("data/nvidia/hopper-h100-545.00-nvtrust/report.bin");
const HOPPER_CHAIN: &str = include_str!("data/nvidia/hopper-h100-545.00-nvtrust/chain.pem");
const HOPPER_DRIVER_RIM: &[u8] =
    include_bytes!("data/nvidia/hopper-h100-545.00-nvtrust/rim-driver-545.00.swidtag");
const HOPPER_VBIOS_RIM: &[u8] =
    include_bytes!("data/nvidia/hopper-h100-545.00-nvtrust/rim-vbios-96.00.5E.00.01.swidtag");
const HOPPER_NONCE: &str = "4cff7f5380ead8fad8ec2c531c110aca4302a88f603792801a8ca29ee151af2e";
const BLACKWELL_REPORT: &[u8] =
    include_bytes!("data/nvidia/blackwell-gb100-575.32-asdk/report.bin");
const BLACKWELL_CHAIN: &str = include_str!("data/nvidia/blackwell-gb100-575.32-asdk/chain.pem");
const BLACKWELL_NONCE: &str = "931d8dd0add203ac3d8b4fbde75e115278eefcdceac5b87671a748f32364dfcb";

/// splitmix64, as in bitflip.rs.
struct SplitMix(u64);

impl SplitMix {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
}

fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn der_chain(pem: &str) -> Vec<Vec<u8>> {
    pem.split("-----BEGIN CERTIFICATE-----")
        .skip(1)
        .map(|b| {
            let body: String = b
                .split("-----END CERTIFICATE-----")
                .next()
                .unwrap()
                .chars()
                .filter(|c| !c.is_ascii_whitespace())
                .collect();
            base64::engine::general_purpose::STANDARD
                .decode(body)
                .unwrap()
        })
        .collect()
}

fn pem_chain(ders: &[Vec<u8>]) -> String {
    ders.iter()
        .map(|d| {
            format!(
                "-----BEGIN CERTIFICATE-----\n{}\n-----END CERTIFICATE-----\n",
                base64::engine::general_purpose::STANDARD.encode(d)
            )
        })
        .collect()
}

/// The byte range of a RIM that is not the base64 text of its last embedded certificate.
fn rim_signed_len(rim: &[u8]) -> (usize, std::ops::Range<usize>) {
    let text = std::str::from_utf8(rim).unwrap();
    let open = "<ds:X509Certificate>";
    let start = text.rfind(open).unwrap() + open.len();
    let end = start + text[start..].find("</ds:X509Certificate>").unwrap();
    (rim.len(), start..end)
}

struct Gpu {
    name: &'static str,
    report: &'static [u8],
    chain: Vec<Vec<u8>>,
    rims: Vec<&'static [u8]>,
    nonce: [u8; 32],
}

impl Gpu {
    fn accepts(&self, report: &[u8], chain: &[Vec<u8>], rims: &[&[u8]]) -> bool {
        let evidence = GpuEvidence::new(report.to_vec(), pem_chain(chain));
        let at = Timestamp::parse_rfc3339("2025-01-01T00:00:00Z").unwrap();
        verify_gpu(
            &evidence,
            &self.nonce,
            GpuReferences { rims, ocsp: &[] },
            at,
        )
        .is_accept()
    }
}

fn nonce(hex_text: &str) -> [u8; 32] {
    hex::decode(hex_text).unwrap().try_into().unwrap()
}

#[test]
fn random_single_bit_flips_in_signed_regions_are_rejected() {
    let total = env_u64("NVIDIA_BITFLIPS", 300);
    let seed = env_u64("NVIDIA_BITFLIP_SEED", 0x05EE_D6B0_0000_0018);
    let mut rng = SplitMix(seed);
    let gpus = [
        Gpu {
            name: "hopper",
            report: HOPPER_REPORT,
            chain: der_chain(HOPPER_CHAIN),
            rims: vec![HOPPER_DRIVER_RIM, HOPPER_VBIOS_RIM],
            nonce: nonce(HOPPER_NONCE),
        },
        Gpu {
            name: "blackwell",
            report: BLACKWELL_REPORT,
            chain: der_chain(BLACKWELL_CHAIN),
            rims: vec![],
            nonce: nonce(BLACKWELL_NONCE),
        },
    ];
    for gpu in &gpus {
        assert!(
            gpu.accepts(gpu.report, &gpu.chain, &gpu.rims),
            "{}",
            gpu.name
        );
    }
    // Targets: 0 = report, 1..=4 = device certificates 0..3, 5.. = RIMs.
    let mut counts = [0u64; 3];
    for i in 0..total {
        let gpu = &gpus[(i % 2) as usize];
        // A region kind first (report, certificate, RIM), so that each gets a fair share.
        let kinds = if gpu.rims.is_empty() { 2 } else { 3 };
        let target = match rng.next() % kinds {
            0 => 0,
            1 => 1 + (rng.next() % 4) as usize,
            _ => 5 + (rng.next() % gpu.rims.len() as u64) as usize,
        };
        let mut report = gpu.report.to_vec();
        let mut chain = gpu.chain.clone();
        let mut rims: Vec<Vec<u8>> = gpu.rims.iter().map(|r| r.to_vec()).collect();
        let (what, bit) = match target {
            0 => {
                let bit = (rng.next() % (report.len() as u64 * 8)) as usize;
                report[bit / 8] ^= 1 << (bit % 8);
                counts[0] += 1;
                ("report", bit)
            }
            1..=4 => {
                let cert = &mut chain[target - 1];
                let bit = (rng.next() % (cert.len() as u64 * 8)) as usize;
                cert[bit / 8] ^= 1 << (bit % 8);
                counts[1] += 1;
                ("device certificate", bit)
            }
            _ => {
                let rim = &mut rims[target - 5];
                let (len, root) = rim_signed_len(rim);
                let bit = loop {
                    let bit = (rng.next() % (len as u64 * 8)) as usize;
                    if !root.contains(&(bit / 8)) {
                        break bit;
                    }
                };
                rim[bit / 8] ^= 1 << (bit % 8);
                counts[2] += 1;
                ("RIM", bit)
            }
        };
        let rim_refs: Vec<&[u8]> = rims.iter().map(Vec::as_slice).collect();
        assert!(
            !gpu.accepts(&report, &chain, &rim_refs),
            "flip #{i}: bit {bit} of {what} (target {target}) of {} was accepted (seed {seed:#x})",
            gpu.name
        );
    }
    println!(
        "flips: report {}, certificates {}, RIMs {}",
        counts[0], counts[1], counts[2]
    );
}
