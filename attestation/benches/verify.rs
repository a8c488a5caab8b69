//! Verification latency: SNP (genuine and simulated) and TDX, against the default policy;
//! NVIDIA GPU evidence (report signature, device chain, and with RIMs their XML signatures,
//! chains and the golden comparison).
//!
//! `cargo bench -p confidant-attestation --bench verify`. SNP target: 2 ms or less. GPU
//! target: 5 ms or less for one GPU with both RIMs.

use std::hint::black_box;

use confidant_attestation::{
    Evidence, GpuEvidence, GpuReferences, Policy, SimulatedTee, SnpEvidence, TdxCollateral,
    TdxEvidence, Timestamp, verify, verify_gpu,
};
use criterion::{Criterion, criterion_main};

const MILAN_REPORT: &[u8] = include_bytes!("../tests/data/snp/virtee-milan-v2/report.bin");
const MILAN_VCEK: &[u8] = include_bytes!("../tests/data/snp/virtee-milan-v2/vcek.der");
const MILAN_CHAIN: &[u8] = include_bytes!("../tests/data/snp/virtee-milan-v2/ask_ark.pem");
const GENOA_REPORT: &[u8] = include_bytes!("../tests/data/snp/trustee-genoa-v3/report.bin");
const GENOA_VCEK: &[u8] = include_bytes!("../tests/data/snp/trustee-genoa-v3/vcek.der");
const TDX_QUOTE: &[u8] = include_bytes!("../tests/data/tdx/dcapqvl-b0c06f-v4-uptodate/quote.bin");
const TDX_COLLATERAL: &[u8] =
    include_bytes!("../tests/data/tdx/dcapqvl-b0c06f-v4-uptodate/collateral.json");
const HOPPER_REPORT: &[u8] =
    include_bytes!("../tests/data/nvidia/hopper-h100-545.00-nvtrust/report.bin");
const HOPPER_CHAIN: &str =
    include_str!("../tests/data/nvidia/hopper-h100-545.00-nvtrust/chain.pem");
const HOPPER_DRIVER_RIM: &[u8] =
    include_bytes!("../tests/data/nvidia/hopper-h100-545.00-nvtrust/rim-driver-545.00.swidtag");
const HOPPER_VBIOS_RIM: &[u8] = include_bytes!(
    "../tests/data/nvidia/hopper-h100-545.00-nvtrust/rim-vbios-96.00.5E.00.01.swidtag"
);
const BLACKWELL_REPORT: &[u8] =
    include_bytes!("../tests/data/nvidia/blackwell-gb100-575.32-asdk/report.bin");
const BLACKWELL_CHAIN: &str =
    include_str!("../tests/data/nvidia/blackwell-gb100-575.32-asdk/chain.pem");

fn benches(c: &mut Criterion) {
    // The checks the old accept-anything default ran, so that figures stay comparable: the
    // cost is in the chain, signatures and collateral, not in the policy's comparisons.
    let policy = Policy::dangerous_authenticity_only();
    let snp_now = Timestamp::from_unix_seconds(1_748_736_000); // 2025-06-01
    let tdx_now = Timestamp::from_unix_seconds(1_750_809_600); // 2025-06-25

    let milan =
        Evidence::Snp(SnpEvidence::from_parts(MILAN_REPORT, MILAN_VCEK, None).expect("parts"));
    let milan_chain = Evidence::Snp(
        SnpEvidence::from_parts(MILAN_REPORT, MILAN_VCEK, Some(MILAN_CHAIN)).expect("parts"),
    );
    let genoa =
        Evidence::Snp(SnpEvidence::from_parts(GENOA_REPORT, GENOA_VCEK, None).expect("parts"));
    // Warm the pinned roots (parsed and self-verified once per process) outside the timing.
    assert!(verify(&milan, None, &policy, snp_now).is_accept());
    assert!(verify(&genoa, None, &policy, snp_now).is_accept());

    c.bench_function("snp_verify_milan_v2", |b| {
        b.iter(|| verify(black_box(&milan), None, &policy, snp_now))
    });
    c.bench_function("snp_verify_milan_v2_with_carried_chain", |b| {
        b.iter(|| verify(black_box(&milan_chain), None, &policy, snp_now))
    });
    c.bench_function("snp_verify_genoa_v3", |b| {
        b.iter(|| verify(black_box(&genoa), None, &policy, snp_now))
    });

    let tee = SimulatedTee::shared().expect("simulated TEE");
    let simulated = tee.attest(&[7; 64], &[9; 48]).expect("attest");
    let allow_simulated = Policy::from_toml(&format!(
        "measurements = [\"{}\"]\nallow_simulated = true",
        hex::encode([9u8; 48])
    ))
    .expect("policy");
    assert!(verify(&simulated, None, &allow_simulated, snp_now).is_accept());
    c.bench_function("simulated_verify", |b| {
        b.iter(|| verify(black_box(&simulated), None, &allow_simulated, snp_now))
    });
    c.bench_function("simulated_sign", |b| {
        b.iter(|| tee.sign_report(&[7; 64], &[9; 48]))
    });

    let collateral = TdxCollateral::from_json(TDX_COLLATERAL).expect("collateral");
    let tdx = Evidence::Tdx(TdxEvidence::new(TDX_QUOTE.to_vec()));
    assert!(verify(&tdx, Some(&collateral), &policy, tdx_now).is_accept());
    c.bench_function("tdx_verify_v4", |b| {
        b.iter(|| verify(black_box(&tdx), Some(&collateral), &policy, tdx_now))
    });

    let gpu_now = Timestamp::from_unix_seconds(1_735_689_600); // 2025-01-01
    let nonce =
        |h: &str| -> [u8; 32] { hex::decode(h).expect("hex").try_into().expect("32 bytes") };
    let hopper = GpuEvidence::new(HOPPER_REPORT.to_vec(), HOPPER_CHAIN.to_owned());
    let hopper_nonce = nonce("4cff7f5380ead8fad8ec2c531c110aca4302a88f603792801a8ca29ee151af2e");
    let rims: [&[u8]; 2] = [HOPPER_DRIVER_RIM, HOPPER_VBIOS_RIM];
    let with_rims = GpuReferences {
        rims: &rims,
        ocsp: &[],
    };
    assert!(verify_gpu(&hopper, &hopper_nonce, with_rims, gpu_now).is_accept());
    c.bench_function("gpu_verify_hopper_with_rims", |b| {
        b.iter(|| verify_gpu(black_box(&hopper), &hopper_nonce, with_rims, gpu_now))
    });
    c.bench_function("gpu_verify_hopper_with_rims_cold", |b| {
        b.iter(|| {
            confidant_attestation::nvidia::certs::forget_verified_links();
            confidant_attestation::nvidia::rim::forget_remembered_rims();
            verify_gpu(black_box(&hopper), &hopper_nonce, with_rims, gpu_now)
        })
    });
    c.bench_function("gpu_verify_hopper_with_rims_cold_links", |b| {
        b.iter(|| {
            confidant_attestation::nvidia::certs::forget_verified_links();
            verify_gpu(black_box(&hopper), &hopper_nonce, with_rims, gpu_now)
        })
    });
    c.bench_function("gpu_verify_hopper_with_rims_cold_rims", |b| {
        b.iter(|| {
            confidant_attestation::nvidia::rim::forget_remembered_rims();
            verify_gpu(black_box(&hopper), &hopper_nonce, with_rims, gpu_now)
        })
    });
    c.bench_function("gpu_verify_hopper_evidence_only", |b| {
        b.iter(|| {
            verify_gpu(
                black_box(&hopper),
                &hopper_nonce,
                GpuReferences::default(),
                gpu_now,
            )
        })
    });
    let blackwell = GpuEvidence::new(BLACKWELL_REPORT.to_vec(), BLACKWELL_CHAIN.to_owned());
    let blackwell_nonce = nonce("931d8dd0add203ac3d8b4fbde75e115278eefcdceac5b87671a748f32364dfcb");
    assert!(
        verify_gpu(
            &blackwell,
            &blackwell_nonce,
            GpuReferences::default(),
            gpu_now
        )
        .is_accept()
    );
    c.bench_function("gpu_verify_blackwell_evidence_only", |b| {
        b.iter(|| {
            verify_gpu(
                black_box(&blackwell),
                &blackwell_nonce,
                GpuReferences::default(),
                gpu_now,
            )
        })
    });
}

// The macro generates an undocumented function.
#[allow(missing_docs)]
mod group {
    criterion::criterion_group!(verify_latency, super::benches);
}
criterion_main!(group::verify_latency);
