#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::sync::Arc;

use confidant_attestation::{CertType, Evidence, Policy, TeeKind, Timestamp, verify};
use sha2::{Digest as _, Sha384};

use super::configfs::FakeKernel;
use super::*;

const SNP_REPORT: &[u8] =
    include_bytes!("../../attestation/tests/data/snp/virtee-milan-v2/report.bin");
const SNP_VCEK: &[u8] = include_bytes!("../../attestation/tests/data/snp/virtee-milan-v2/vcek.der");
const SNP_EXPECTED: &str =
    include_str!("../../attestation/tests/data/snp/virtee-milan-v2/expected.json");
const TDX_QUOTE: &[u8] =
    include_bytes!("../../attestation/tests/data/tdx/dcapqvl-b0c06f-v4-uptodate/quote.bin");
const TDX_EXPECTED: &str =
    include_str!("../../attestation/tests/data/tdx/dcapqvl-b0c06f-v4-uptodate/expected.json");

fn snp_report_data() -> [u8; 64] {
    let expected: serde_json::Value = serde_json::from_str(SNP_EXPECTED).unwrap();
    let hex = expected["report"]["report_data"].as_str().unwrap();
    hex::decode(hex).unwrap().try_into().unwrap()
}

fn tdx_report_data() -> [u8; 64] {
    let expected: serde_json::Value = serde_json::from_str(TDX_EXPECTED).unwrap();
    let hex = expected["dcap_qvl_0_7_1"]["quote.bin"]["body"]["td"]["report_data"]
        .as_str()
        .unwrap();
    hex::decode(hex).unwrap().try_into().unwrap()
}

/// A kernel that answers every entry with fixed attributes.
#[derive(Debug, Clone)]
struct Fake {
    provider: &'static str,
    outblob: Vec<u8>,
    auxblob: Option<Vec<u8>>,
    generation: &'static str,
}

const ATTRIBUTES: [&str; 5] = ["inblob", "outblob", "auxblob", "provider", "generation"];

impl FakeKernel for Fake {
    fn populate(&self, entry: &Path) -> std::io::Result<()> {
        std::fs::write(entry.join("inblob"), b"")?;
        std::fs::write(entry.join("outblob"), &self.outblob)?;
        if let Some(aux) = &self.auxblob {
            std::fs::write(entry.join("auxblob"), aux)?;
        }
        std::fs::write(entry.join("provider"), format!("{}\n", self.provider))?;
        std::fs::write(entry.join("generation"), format!("{}\n", self.generation))
    }

    fn depopulate(&self, entry: &Path) -> std::io::Result<()> {
        for name in ATTRIBUTES {
            match std::fs::remove_file(entry.join(name)) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e),
                _ => {}
            }
        }
        Ok(())
    }
}

fn snp_kernel() -> Fake {
    Fake {
        provider: "sev_guest",
        outblob: SNP_REPORT.to_vec(),
        auxblob: Some(cert_table::encode(&[(CertType::Vcek, SNP_VCEK)])),
        generation: "1",
    }
}

fn configfs(kernel: Fake) -> (tempfile::TempDir, ConfigfsTsm) {
    let root = tempfile::tempdir().unwrap();
    let tsm = ConfigfsTsm::probe_with(root.path(), Some(Arc::new(kernel))).unwrap();
    (root, tsm)
}

fn is_empty_dir(dir: &Path) -> bool {
    std::fs::read_dir(dir).unwrap().next().is_none()
}

#[test]
fn cert_table_round_trips() {
    let table = cert_table::encode(&[
        (CertType::Vcek, b"vcek".as_slice()),
        (CertType::Ask, b"ask!".as_slice()),
        (CertType::Ark, b"".as_slice()),
    ]);
    let parsed = cert_table::parse(&table).unwrap();
    let kinds: Vec<_> = parsed.iter().map(|e| e.cert_type.clone()).collect();
    assert_eq!(kinds, [CertType::Vcek, CertType::Ask, CertType::Ark]);
    assert_eq!(parsed[0].data, b"vcek");
    assert_eq!(parsed[1].data, b"ask!");
    assert!(parsed[2].data.is_empty());
}

#[test]
fn cert_table_empty_and_unknown_guids() {
    assert!(cert_table::parse(b"").unwrap().is_empty());
    assert!(cert_table::parse(&[0u8; 24]).unwrap().is_empty());
    let mut table = vec![0x11u8; 16];
    table.extend_from_slice(&48u32.to_le_bytes());
    table.extend_from_slice(&1u32.to_le_bytes());
    table.extend_from_slice(&[0u8; 24]);
    table.push(7);
    let parsed = cert_table::parse(&table).unwrap();
    assert_eq!(
        parsed[0].cert_type,
        CertType::Other("11111111-1111-1111-1111-111111111111".into())
    );
    assert_eq!(parsed[0].data, [7]);
}

#[test]
fn cert_table_rejects_out_of_bounds_and_unterminated() {
    let mut table = cert_table::encode(&[(CertType::Vcek, b"vcek".as_slice())]);
    // Point the VCEK past the end.
    table[16..20].copy_from_slice(&1000u32.to_le_bytes());
    let err = cert_table::parse(&table).unwrap_err().to_string();
    assert!(err.contains("beyond the"), "{err}");
    // Offset + length overflowing.
    table[16..20].copy_from_slice(&u32::MAX.to_le_bytes());
    table[20..24].copy_from_slice(&u32::MAX.to_le_bytes());
    assert!(cert_table::parse(&table).is_err());
    // No closing entry.
    let mut unterminated = cert_table::encode(&[(CertType::Vcek, b"".as_slice())]);
    unterminated.truncate(24);
    unterminated[16..20].copy_from_slice(&0u32.to_le_bytes());
    let err = cert_table::parse(&unterminated).unwrap_err().to_string();
    assert!(err.contains("no closing"), "{err}");
    // A torn entry.
    let mut torn = vec![0x11u8; 16];
    torn.extend_from_slice(&[0u8; 8]);
    torn.extend_from_slice(&[1u8; 6]);
    let err = cert_table::parse(&torn).unwrap_err().to_string();
    assert!(err.contains("truncated"), "{err}");
}

#[test]
fn configfs_snp_report_maps_to_snp_evidence_and_verifies() {
    let (root, tsm) = configfs(snp_kernel());
    assert_eq!(tsm.kind(), AttesterKind::ConfigfsTsm(Provider::SevGuest));
    assert_eq!(tsm.kind().tee(), TeeKind::Snp);
    let evidence = tsm.evidence(&snp_report_data()).unwrap();
    let Evidence::Snp(snp) = &evidence else {
        panic!("expected SNP evidence, got {evidence:?}");
    };
    assert_eq!(snp.report(), SNP_REPORT);
    assert_eq!(snp.cert_chain().len(), 1);
    assert_eq!(snp.cert_chain()[0].cert_type, CertType::Vcek);
    assert!(evidence.generated_at().is_some());
    // Every entry was removed again.
    assert!(is_empty_dir(root.path()));
    // The evidence is genuine: it verifies at the vector's pinned time.
    let now = Timestamp::parse_rfc3339("2025-06-01T00:00:00Z").unwrap();
    let verdict = verify(&evidence, None, &Policy::dangerous_authenticity_only(), now);
    assert!(verdict.is_accept(), "{:?}", verdict.failures);
    // And it survives the JSON round trip `attest report` performs.
    let json = evidence.to_json().unwrap();
    assert_eq!(Evidence::from_json(json.as_bytes()).unwrap(), evidence);
}

#[test]
fn configfs_writes_report_data_to_inblob() {
    #[derive(Debug)]
    struct Recording(Fake, std::sync::Mutex<Vec<u8>>);
    impl FakeKernel for Recording {
        fn populate(&self, entry: &Path) -> std::io::Result<()> {
            self.0.populate(entry)
        }
        fn depopulate(&self, entry: &Path) -> std::io::Result<()> {
            *self.1.lock().unwrap() = std::fs::read(entry.join("inblob"))?;
            self.0.depopulate(entry)
        }
    }
    let kernel = Arc::new(Recording(snp_kernel(), Default::default()));
    let root = tempfile::tempdir().unwrap();
    let tsm = ConfigfsTsm::probe_with(root.path(), Some(kernel.clone())).unwrap();
    tsm.evidence(&snp_report_data()).unwrap();
    assert_eq!(*kernel.1.lock().unwrap(), snp_report_data());
}

#[test]
fn configfs_without_auxblob_gives_an_empty_chain() {
    let (_root, tsm) = configfs(Fake {
        auxblob: None,
        ..snp_kernel()
    });
    let Evidence::Snp(snp) = tsm.evidence(&snp_report_data()).unwrap() else {
        panic!("expected SNP evidence");
    };
    assert!(snp.cert_chain().is_empty());
}

#[test]
fn configfs_tdx_quote_maps_to_tdx_evidence_without_collateral() {
    let (root, tsm) = configfs(Fake {
        provider: "tdx_guest",
        outblob: TDX_QUOTE.to_vec(),
        auxblob: None,
        generation: "1",
    });
    assert_eq!(tsm.kind().tee(), TeeKind::Tdx);
    let evidence = tsm.evidence(&tdx_report_data()).unwrap();
    let Evidence::Tdx(tdx) = &evidence else {
        panic!("expected TDX evidence, got {evidence:?}");
    };
    assert_eq!(tdx.quote(), TDX_QUOTE);
    assert!(tdx.collateral().is_none());
    assert!(is_empty_dir(root.path()));
}

#[test]
fn configfs_refuses_foreign_report_data_races_and_garbage() {
    let (root, tsm) = configfs(snp_kernel());
    let err = tsm.evidence(&[0xAA; 64]).unwrap_err();
    assert!(matches!(err, TeeError::ReportDataMismatch { .. }), "{err}");
    assert!(is_empty_dir(root.path()));

    let (_root, tsm) = configfs(Fake {
        generation: "2",
        ..snp_kernel()
    });
    let err = tsm.evidence(&snp_report_data()).unwrap_err();
    assert!(matches!(err, TeeError::Generation { .. }), "{err}");

    let (_root, tsm) = configfs(Fake {
        outblob: vec![0; 100],
        ..snp_kernel()
    });
    let err = tsm.evidence(&snp_report_data()).unwrap_err().to_string();
    assert!(err.contains("100 bytes, expected 1184"), "{err}");

    let (_root, tsm) = configfs(Fake {
        provider: "tdx_guest",
        outblob: b"not a quote".to_vec(),
        auxblob: None,
        generation: "1",
    });
    let err = tsm.evidence(&[0; 64]).unwrap_err().to_string();
    assert!(err.contains("undecodable TDX quote"), "{err}");
}

#[test]
fn configfs_probe_fails_without_a_provider() {
    let root = tempfile::tempdir().unwrap();
    // A plain directory: mkdir works but there is no provider attribute.
    let err = ConfigfsTsm::probe(root.path()).unwrap_err().to_string();
    assert!(err.contains("provider"), "{err}");
    let err = ConfigfsTsm::probe_with(
        root.path(),
        Some(Arc::new(Fake {
            provider: "acme_guest",
            ..snp_kernel()
        })),
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("unknown provider \"acme_guest\""), "{err}");
    let missing = root.path().join("absent");
    assert!(ConfigfsTsm::probe(&missing).is_err());
}

#[test]
fn measurement_is_sha384_of_the_binary_and_tracks_changes() {
    let dir = tempfile::tempdir().unwrap();
    let binary = dir.path().join("confidant");
    let bytes: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
    std::fs::write(&binary, &bytes).unwrap();
    let m1 = binary_measurement(&binary).unwrap();
    let want: [u8; 48] = Sha384::digest(&bytes).into();
    assert_eq!(m1, want);
    let mut changed = bytes.clone();
    changed[123_456] ^= 1;
    std::fs::write(&binary, &changed).unwrap();
    assert_ne!(binary_measurement(&binary).unwrap(), m1);
    let err = binary_measurement(&dir.path().join("absent"))
        .unwrap_err()
        .to_string();
    assert!(err.contains("simulated: cannot measure"), "{err}");
}

#[test]
fn the_running_binary_is_measured() {
    let simulated = Simulated::new().unwrap();
    let exe = std::env::current_exe().unwrap();
    assert_eq!(simulated.measurement(), &binary_measurement(&exe).unwrap());
}

#[test]
fn simulated_evidence_carries_the_measurement_and_needs_allow_simulated() {
    let dir = tempfile::tempdir().unwrap();
    let binary = dir.path().join("bin");
    std::fs::write(&binary, b"a binary").unwrap();
    let simulated = Simulated::measuring(&binary).unwrap();
    assert_eq!(simulated.kind(), AttesterKind::Simulated);
    let report_data = [0x5A; 64];
    let evidence = simulated.evidence(&report_data).unwrap();
    assert_eq!(evidence.tee(), TeeKind::Simulated);
    let now = Timestamp::parse_rfc3339("2026-01-01T00:00:00Z").unwrap();
    let want: [u8; 48] = Sha384::digest(b"a binary").into();
    let mut production = Policy::default();
    production.measurements = vec![want];
    let rejected = verify(&evidence, None, &production, now);
    assert!(!rejected.is_accept());
    let policy = Policy::from_toml(&format!(
        "measurements = [\"{}\"]\nallow_simulated = true",
        hex::encode(want)
    ))
    .unwrap();
    let verdict = verify(&evidence, None, &policy, now);
    assert!(verdict.is_accept(), "{:?}", verdict.failures);
    assert_eq!(verdict.measurement, Some(hex::encode(want)));
    assert_eq!(verdict.report_data, Some(hex::encode(report_data)));
}

fn paths(dir: &Path) -> DetectPaths {
    let binary = dir.join("bin");
    std::fs::write(&binary, b"binary").unwrap();
    DetectPaths {
        tsm_report: dir.join("tsm"),
        sev_guest: dir.join("sev-guest"),
        binary,
    }
}

#[test]
fn detection_prefers_configfs_then_sev_guest_then_simulated() {
    let dir = tempfile::tempdir().unwrap();
    let paths = paths(dir.path());
    std::fs::create_dir(&paths.tsm_report).unwrap();
    std::fs::write(&paths.sev_guest, b"").unwrap();

    // Both present and configfs answers: configfs-tsm.
    let attester = detect_inner(&paths, Some(Arc::new(snp_kernel()))).unwrap();
    assert_eq!(
        attester.kind(),
        AttesterKind::ConfigfsTsm(Provider::SevGuest)
    );

    // configfs-tsm present but no provider answers: /dev/sev-guest.
    let attester = detect_inner(&paths, None).unwrap();
    assert_eq!(attester.kind(), AttesterKind::SevGuest);

    // Neither: simulated, measuring the given binary.
    std::fs::remove_file(&paths.sev_guest).unwrap();
    std::fs::remove_dir(&paths.tsm_report).unwrap();
    let attester = detect_with(&paths).unwrap();
    assert_eq!(attester.kind(), AttesterKind::Simulated);
    assert_eq!(attester.kind().tee(), TeeKind::Simulated);
    let evidence = attester.evidence(&[1; 64]).unwrap();
    let claims = confidant_attestation::evidence::parse_snp_report(match &evidence {
        Evidence::Simulated(e) => e.report(),
        other => panic!("expected simulated evidence, got {other:?}"),
    })
    .unwrap();
    let want: [u8; 48] = Sha384::digest(b"binary").into();
    assert_eq!(claims.measurement, want);

    // Nothing to measure either: an error, not a silent default.
    let broken = DetectPaths {
        binary: dir.path().join("absent"),
        ..paths
    };
    assert!(detect_with(&broken).is_err());
}

#[test]
fn system_paths_are_the_documented_ones() {
    let paths = DetectPaths::system();
    assert_eq!(paths.tsm_report, Path::new("/sys/kernel/config/tsm/report"));
    assert_eq!(paths.sev_guest, Path::new("/dev/sev-guest"));
    assert_eq!(paths.binary, Path::new("/proc/self/exe"));
    assert_eq!(SevGuest::new().device(), Path::new("/dev/sev-guest"));
}

#[test]
fn tee_choice_is_auto_or_sample_and_sample_selects_the_sample_attester() {
    assert_eq!("auto".parse::<TeeChoice>().unwrap(), TeeChoice::Auto);
    assert_eq!("sample".parse::<TeeChoice>().unwrap(), TeeChoice::Sample);
    for bad in ["", "Sample", "snp", "simulated", "sample "] {
        let e = bad.parse::<TeeChoice>().unwrap_err();
        assert!(
            matches!(&e, TeeError::UnknownChoice(s) if s == bad),
            "{bad:?}: {e}"
        );
        assert!(e.to_string().contains("expected auto or sample"), "{e}");
    }
    let attester = select(TeeChoice::Sample).unwrap();
    assert_eq!(attester.kind(), AttesterKind::Sample);
    assert_eq!(attester.kind().tee(), TeeKind::Sample);
    assert!(attester.gpus().is_empty());
}

/// Sample evidence (the TLS binding: all 64 bytes) is refused by a policy without
/// `allow_simulated`, by one that pins a real measurement, and by one that pins a
/// simulated ARK; with `allow_simulated` and any measurement it is accepted with an
/// all-zero measurement and the bound report_data, and a different report_data fails.
#[test]
fn sample_evidence_needs_allow_simulated_and_measures_nothing() {
    let report_data = [0xA5; 64];
    let evidence = Sample.evidence(&report_data).unwrap();
    assert_eq!(evidence.tee(), TeeKind::Sample);
    assert_eq!(evidence.generated_at(), None);
    let now = Timestamp::parse_rfc3339("2026-01-01T00:00:00Z").unwrap();
    let open = "measurements = \"any\"\ni_understand_this_accepts_any_guest = true\n";
    let strict = Policy::from_toml(open).unwrap();
    let refused = verify(&evidence, None, &strict, now);
    assert!(
        refused.failed(confidant_attestation::verdict::Check::Simulated),
        "{:?}",
        refused.failures
    );
    let pinned = Policy::from_toml(&format!(
        "measurements = [\"{}\"]\nallow_simulated = true\n",
        "11".repeat(48)
    ))
    .unwrap();
    assert!(!verify(&evidence, None, &pinned, now).is_accept());
    let rooted = Policy::from_toml(&format!(
        "{open}allow_simulated = true\nsimulated_ark_sha256 = [\"{}\"]\n",
        "00".repeat(32)
    ))
    .unwrap();
    assert!(!verify(&evidence, None, &rooted, now).is_accept());
    let mut dev = Policy::from_toml(&format!("{open}allow_simulated = true\n")).unwrap();
    let verdict = verify(&evidence, None, &dev, now);
    assert!(verdict.is_accept(), "{:?}", verdict.failures);
    assert_eq!(verdict.measurement, Some("00".repeat(48)));
    assert_eq!(verdict.report_data, Some(hex::encode(report_data)));
    dev.report_data = Some([0x5A; 64]);
    assert!(!verify(&evidence, None, &dev, now).is_accept());
    // The KBS binding: the 48-byte digest alone, which reads back as digest ‖ 0¹⁶.
    let Evidence::Sample(kbs) = Sample.evidence_for_runtime_digest(&[3u8; 48]).unwrap() else {
        panic!("sample evidence expected")
    };
    let mut padded = [0u8; 64];
    padded[..48].copy_from_slice(&[3u8; 48]);
    assert_eq!(kbs.report_data_bytes().unwrap(), padded);
    for bad in ["AAAA", "***", ""] {
        let e = confidant_attestation::SampleEvidence {
            svn: "1".into(),
            report_data: bad.into(),
        };
        assert!(e.report_data_bytes().is_err(), "{bad:?}");
    }
}

#[test]
fn serve_tee_sample_needs_a_broker() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = crate::server::ServeConfig::embedded_demo(
        "127.0.0.1:0".parse().unwrap(),
        dir.path().to_path_buf(),
    );
    config.validate().unwrap();
    config.tee = TeeChoice::Sample;
    let e = config.validate().unwrap_err();
    assert!(e.to_string().contains("--tee sample"), "{e}");
    assert!(e.to_string().contains("give --broker"), "{e}");
}
