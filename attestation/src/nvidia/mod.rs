//! NVIDIA GPU attestation (Hopper and Blackwell in confidential-computing mode), verified
//! offline.
//!
//! The evidence is what NVML returns: `nvmlDeviceGetConfComputeGpuAttestationReport` (an SPDM
//! 1.1 GET_MEASUREMENTS request followed by the signed MEASUREMENTS response, see [`spdm`])
//! and `nvmlDeviceGetConfComputeGpuCertificate` (the device chain, PEM, leaf first). Optional
//! inputs are NVIDIA's signed Reference Integrity Manifests (the driver and VBIOS `.swidtag`
//! files, see [`rim`]) and OCSP responses for the certificates (see [`ocsp`]).
//!
//! [`verify_gpu`] runs the checks of NVIDIA's local verifier, in its order, and names each
//! as NVIDIA's test vectors do:
//!
//! | check | passes when |
//! | --- | --- |
//! | `report_parsed` | the report is exactly request ‖ response, every offset in bounds, no byte after the signature |
//! | `fwid_matches_leaf_cert` | the report's FWID equals the leaf certificate's (skipped when the report has none) |
//! | `cert_chain` | leaf ← BROM ← Provisioner ICA ← chip Identity ← the pinned NVIDIA Device Identity CA, valid at `now` |
//! | `nonce` | the request's nonce is the verifier's |
//! | `report_signature` | ECDSA P-384 over request ‖ response-without-signature, by the leaf key |
//! | `rim_<kind>_signature` | the RIM's enveloped XML-DSig verifies (digest and signature) |
//! | `rim_<kind>_cert_chain` | the RIM signer chain reaches the pinned NVIDIA CoRIM root, valid at `now` |
//! | `rim_<kind>_version_match` | the RIM is for the report's driver (VBIOS) version |
//! | `rim_<kind>_product_match` | the RIM is for the report's chip |
//! | `rim_index_conflict_free` | no index is active in both RIMs |
//! | `measurements_match` | every active golden index matches one of its alternatives |
//! | `ocsp` | only with OCSP responses: each verifies and no certificate is revoked |
//!
//! Without RIMs only the first five run, and the verdict says the measurements were not
//! compared. Without OCSP responses revocation is `not_checked`: the caller's policy decides.

mod asn1;
mod c14n;
pub mod certs;
pub mod composite;
pub mod error;
pub mod ocsp;
pub mod policy;
pub mod rim;
pub mod spdm;
mod verdict;

use std::fmt;

use serde::ser::SerializeMap as _;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use subtle::ConstantTimeEq as _;

pub use certs::{DEVICE_ROOT_SHA256, NvidiaRoot, RIM_ROOT_SHA256};
pub use composite::{
    GpuEvidenceSet, GpuSetError, HeldReferences, VerifiedGpus, gpu_nonce, judge_gpus, verify_gpus,
};
pub use error::{CertError, RimError, SpdmError};
pub use ocsp::{CertRevocation, OcspStatus, Revocation};
pub use policy::{CcMode, GpuPolicy, VersionRule};
pub use rim::{GoldenMeasurement, RimContent, RimKind};
pub use spdm::{MeasurementBlock, OpaqueData, SpdmReport, report_from_file};
pub use verdict::*;

use crate::timestamp::Timestamp;
use crate::verdict::Decision;
use certs::Cert;

/// RIM index of the NVDEC0 measurement, not compared when NVDEC0 is disabled.
const NVDEC0_RIM_INDEX: u32 = 35;
/// Number of certificates in a GPU device chain (nvtrust requires exactly this).
const DEVICE_CHAIN_LEN: usize = 5;

/// Optional inputs to [`verify_gpu`].
#[derive(Debug, Clone, Copy, Default)]
pub struct GpuReferences<'a> {
    /// RIM files (driver and VBIOS; the kind is read from each).
    pub rims: &'a [&'a [u8]],
    /// DER OCSP responses for certificates of the device and RIM chains.
    pub ocsp: &'a [&'a [u8]],
}

/// Collects outcomes and failures as checks run.
#[derive(Default)]
struct Recorder {
    checks: Vec<(GpuCheck, Outcome)>,
    failures: Vec<GpuFailure>,
}

impl Recorder {
    fn record(&mut self, check: GpuCheck, result: Result<(), String>) {
        match result {
            Ok(()) => self.checks.push((check, Outcome::Passed)),
            Err(detail) => {
                self.checks.push((check, Outcome::Failed));
                self.failures.push(GpuFailure { check, detail });
            }
        }
    }

    fn skip(&mut self, check: GpuCheck, reason: &str) {
        self.checks
            .push((check, Outcome::Skipped(reason.to_owned())));
    }
}

const NOT_PARSED: &str = "report not parsed";

/// The chip a leaf certificate names (`GH100 A01 GSP FMC LF` → `GH100`).
pub(crate) fn chip_from_cert(cert: &Cert) -> Option<String> {
    cert.common_name()?
        .split_whitespace()
        .next()
        .map(str::to_owned)
}

fn architecture(chip: &str) -> Option<String> {
    if chip.starts_with("GH") {
        Some("HOPPER".to_owned())
    } else if chip.starts_with("GB") {
        Some("BLACKWELL".to_owned())
    } else {
        None
    }
}

/// Verifies one GPU's evidence at `now` against the verifier's `nonce`, with optional RIMs
/// and OCSP responses. Never fails: every problem is a failed check in the verdict.
pub fn verify_gpu(
    evidence: &GpuEvidence,
    nonce: &[u8; 32],
    references: GpuReferences<'_>,
    now: Timestamp,
) -> GpuVerdict {
    let mut rec = Recorder::default();
    let mut claims = GpuClaims::default();

    // report_parsed
    let report = SpdmReport::parse(&evidence.report);
    rec.record(
        GpuCheck::ReportParsed,
        report.as_ref().map(|_| ()).map_err(ToString::to_string),
    );
    let report = report.ok();
    let chain = certs::parse_pem_chain(evidence.certificate_chain.as_bytes());
    let leaf = chain.as_ref().ok().and_then(|c| c.first());
    claims.device_certificates = chain
        .as_ref()
        .map(|c| c.iter().map(CertSummary::of).collect())
        .unwrap_or_default();
    claims.hwmodel = chain
        .as_ref()
        .ok()
        .and_then(|c| c.get(1))
        .and_then(Cert::common_name);
    let chip = report
        .as_ref()
        .and_then(|r| r.opaque.chip_info.clone())
        .or_else(|| leaf.and_then(chip_from_cert));
    claims.architecture = chip.as_deref().and_then(architecture);
    claims.chip = chip.clone();
    if let Some(r) = &report {
        fill_report_claims(&mut claims, r, chip.as_deref());
    }

    // fwid_matches_leaf_cert
    match report.as_ref().map(|r| r.opaque.fwid.as_ref()) {
        None => rec.skip(GpuCheck::FwidMatchesLeafCert, NOT_PARSED),
        Some(None) => rec.skip(GpuCheck::FwidMatchesLeafCert, "no FWID opaque field"),
        Some(Some(fwid)) => {
            let result = match leaf.map(Cert::fwid) {
                None => Err("no readable leaf certificate".to_owned()),
                Some(Err(e)) => Err(format!("leaf certificate FWID: {e}")),
                Some(Ok(None)) => Err("the leaf certificate has no FWID extension".to_owned()),
                Some(Ok(Some(cert_fwid))) => {
                    claims.leaf_cert_fwid = Some(hex::encode(&cert_fwid));
                    if bool::from(cert_fwid.ct_eq(fwid)) {
                        Ok(())
                    } else {
                        Err(format!(
                            "report FWID {} is not the leaf certificate's {}",
                            hex::encode(fwid),
                            hex::encode(&cert_fwid)
                        ))
                    }
                }
            };
            rec.record(GpuCheck::FwidMatchesLeafCert, result);
        }
    }

    // cert_chain
    let device_root = certs::pinned(NvidiaRoot::DeviceIdentity);
    let chain_result = match (&chain, device_root) {
        (Err(e), _) => Err(e.to_string()),
        (_, Err(e)) => Err(e),
        (Ok(chain), Ok(root)) => {
            certs::verify_chain(chain, root, now, Some(DEVICE_CHAIN_LEN)).map(|path| {
                claims.carried_root_is_pinned = Some(path.carried_root_is_pinned);
            })
        }
    };
    rec.record(GpuCheck::CertChain, chain_result);

    // nonce
    match &report {
        None => rec.skip(GpuCheck::Nonce, NOT_PARSED),
        Some(r) => rec.record(
            GpuCheck::Nonce,
            if bool::from(r.request_nonce.ct_eq(nonce)) {
                Ok(())
            } else {
                Err(format!(
                    "the report's nonce {} is not the expected {}",
                    hex::encode(r.request_nonce),
                    hex::encode(nonce)
                ))
            },
        ),
    }

    // report_signature
    match &report {
        None => rec.skip(GpuCheck::ReportSignature, NOT_PARSED),
        Some(r) => {
            let result = match leaf.map(Cert::p384_key) {
                None => Err("no readable leaf certificate".to_owned()),
                Some(Err(e)) => Err(e),
                Some(Ok(key)) => {
                    let signed = evidence.report.get(..r.signed_len).unwrap_or_default();
                    if certs::verify_fixed_signature(key, signed, &r.signature) {
                        Ok(())
                    } else {
                        Err(
                            "the report signature does not verify under the leaf certificate's key"
                                .to_owned(),
                        )
                    }
                }
            };
            rec.record(GpuCheck::ReportSignature, result);
        }
    }

    // RIMs
    let mut rim_chains: Vec<Vec<Cert>> = Vec::new();
    if !references.rims.is_empty() {
        appraise_rims(
            &mut rec,
            &mut claims,
            report.as_ref(),
            chip.as_deref(),
            references.rims,
            now,
            &mut rim_chains,
        );
    }

    // OCSP
    let device_chain: &[Cert] = chain.as_deref().unwrap_or_default();
    claims.revocation = ocsp::assess(device_chain, &rim_chains, references.ocsp, now);
    if !references.ocsp.is_empty() {
        rec.record(
            GpuCheck::Ocsp,
            claims.revocation.problems().map_err(|e| e.to_string()),
        );
    }

    let first_failure = rec
        .checks
        .iter()
        .find(|(_, o)| *o == Outcome::Failed)
        .map(|(c, _)| *c);
    GpuVerdict {
        verdict: if first_failure.is_none() {
            Decision::Accept
        } else {
            Decision::Reject
        },
        checks: Checks(rec.checks),
        first_failure,
        failures: rec.failures,
        claims,
        verified_at: now,
    }
}

fn fill_report_claims(claims: &mut GpuClaims, r: &SpdmReport, chip: Option<&str>) {
    let o = &r.opaque;
    claims.driver_version = o.driver_version.clone();
    claims.vbios_version = o.vbios_version.clone();
    claims.project = o.project.clone();
    claims.project_sku = o.project_sku.clone();
    claims.chip_sku = o.chip_sku.clone();
    claims.request_nonce = Some(hex::encode(r.request_nonce));
    claims.responder_nonce = Some(hex::encode(r.responder_nonce));
    claims.fwid = o.fwid.as_ref().map(hex::encode);
    claims.nvdec0_status = o.nvdec0_status.map(|b| format!("{b:02x}"));
    claims.gpu_mode = o
        .feature_flag
        .filter(|_| o.opaque_data_version.unwrap_or(0) >= 1)
        .map(|f| match f {
            0 => "SPT".to_owned(),
            1 => "MPT".to_owned(),
            2 => "PPCIE".to_owned(),
            other => format!("unknown({other})"),
        });
    if let (Some(project), Some(sku), Some(chip_sku), Some(vbios)) =
        (&o.project, &o.project_sku, &o.chip_sku, &o.vbios_version)
    {
        claims.vbios_rim_id = Some(format!(
            "NV_GPU_VBIOS_{project}_{sku}_{chip_sku}_{}",
            vbios.replace('.', "").to_ascii_uppercase()
        ));
    }
    if let (Some(chip), Some(driver)) = (chip, &o.driver_version) {
        claims.driver_rim_id = Some(if chip.starts_with("GH") {
            format!("NV_GPU_DRIVER_GH100_{driver}")
        } else {
            format!("NV_GPU_CC_DRIVER_{chip}_{driver}")
        });
    }
    claims.opaque = Some(o.clone());
    claims.measurements = r.measurements.clone();
}

/// One supplied RIM after reading.
struct ReadRim {
    kind: RimKind,
    appraisal: Result<rim::RimAppraisal, RimError>,
}

fn appraise_rims(
    rec: &mut Recorder,
    claims: &mut GpuClaims,
    report: Option<&SpdmReport>,
    chip: Option<&str>,
    rims: &[&[u8]],
    now: Timestamp,
    rim_chains: &mut Vec<Vec<Cert>>,
) {
    // Read each RIM; one that cannot be read takes the first kind not yet supplied.
    let appraisals: Vec<Result<rim::RimAppraisal, RimError>> =
        rims.iter().map(|bytes| rim::appraise(bytes)).collect();
    let mut read: Vec<ReadRim> = Vec::new();
    let known: Vec<RimKind> = appraisals
        .iter()
        .filter_map(|a| a.as_ref().ok().map(|a| a.content.kind))
        .collect();
    let mut free = [RimKind::Driver, RimKind::Vbios]
        .into_iter()
        .filter(|k| !known.contains(k));
    for appraisal in appraisals {
        let kind = match &appraisal {
            Ok(a) => a.content.kind,
            Err(_) => free.next().unwrap_or(RimKind::Driver),
        };
        read.push(ReadRim { kind, appraisal });
    }
    let rim_root = certs::pinned(NvidiaRoot::RimSigning);

    for kind in [RimKind::Driver, RimKind::Vbios] {
        let of_kind: Vec<&ReadRim> = read.iter().filter(|r| r.kind == kind).collect();
        let checks = [
            GpuCheck::RimSignature(kind),
            GpuCheck::RimCertChain(kind),
            GpuCheck::RimVersionMatch(kind),
            GpuCheck::RimProductMatch(kind),
        ];
        let one = match of_kind.as_slice() {
            [one] => one,
            [] => {
                for check in checks {
                    rec.record(check, Err(format!("no {} RIM was supplied", kind.name())));
                }
                continue;
            }
            _ => {
                for check in checks {
                    rec.record(
                        check,
                        Err(format!(
                            "{} {} RIMs were supplied, expected one",
                            of_kind.len(),
                            kind.name()
                        )),
                    );
                }
                continue;
            }
        };
        let appraisal = match &one.appraisal {
            Ok(a) => a,
            Err(e) => {
                rec.record(checks[0], Err(e.to_string()));
                for check in &checks[1..] {
                    rec.record(
                        *check,
                        Err(format!("the {} RIM could not be read", kind.name())),
                    );
                }
                continue;
            }
        };
        rec.record(
            GpuCheck::RimSignature(kind),
            appraisal.signature.clone().map_err(|e| e.to_string()),
        );
        let chain_result = match (&appraisal.certs, &rim_root) {
            (Err(e), _) => Err(e.clone()),
            (_, Err(e)) => Err(e.clone()),
            (Ok(certs), Ok(root)) => certs::verify_chain(certs, root, now, None).map(|_| ()),
        };
        if let Ok(certs) = &appraisal.certs {
            rim_chains.push(certs.clone());
        }
        rec.record(GpuCheck::RimCertChain(kind), chain_result);
        let content = &appraisal.content;
        claims.rims.push(RimSummary {
            kind,
            colloquial_version: content.colloquial_version.clone(),
            product: content.product.clone(),
            tag_id: content.tag_id.clone(),
            active_indices: content.active().map(|(i, _, _)| i).collect(),
            signer: appraisal
                .certs
                .as_ref()
                .ok()
                .and_then(|c| c.first())
                .map(Cert::subject),
        });
        match report {
            None => rec.skip(GpuCheck::RimVersionMatch(kind), NOT_PARSED),
            Some(r) => {
                let reported = match kind {
                    RimKind::Driver => r.opaque.driver_version.as_deref(),
                    RimKind::Vbios => r.opaque.vbios_version.as_deref(),
                };
                rec.record(
                    GpuCheck::RimVersionMatch(kind),
                    match reported {
                        None => Err(format!("the report has no {} version", kind.name())),
                        Some(v) if v.eq_ignore_ascii_case(&content.colloquial_version) => Ok(()),
                        Some(v) => Err(format!(
                            "the {} RIM is for version {}, the report says {v}",
                            kind.name(),
                            content.colloquial_version
                        )),
                    },
                );
            }
        }
        match (report, chip) {
            (None, _) => rec.skip(GpuCheck::RimProductMatch(kind), NOT_PARSED),
            (Some(_), None) => rec.record(
                GpuCheck::RimProductMatch(kind),
                Err("the GPU's chip is unknown (no CHIP_INFO, no readable leaf)".to_owned()),
            ),
            (Some(_), Some(chip)) => rec.record(
                GpuCheck::RimProductMatch(kind),
                if content.product.eq_ignore_ascii_case(chip) {
                    Ok(())
                } else {
                    Err(format!(
                        "the {} RIM is for {}, the GPU is {chip}",
                        kind.name(),
                        content.product
                    ))
                },
            ),
        }
    }

    // rim_index_conflict_free
    let contents: Vec<(RimKind, &RimContent)> = read
        .iter()
        .filter_map(|r| r.appraisal.as_ref().ok().map(|a| (r.kind, &a.content)))
        .collect();
    let mut conflicts: Vec<u32> = Vec::new();
    for (i, (_, a)) in contents.iter().enumerate() {
        for (_, b) in contents.iter().skip(i + 1) {
            for (index, _, _) in a.active() {
                if b.active().any(|(j, _, _)| j == index) && !conflicts.contains(&index) {
                    conflicts.push(index);
                }
            }
        }
    }
    rec.record(
        GpuCheck::RimIndexConflictFree,
        if conflicts.is_empty() {
            Ok(())
        } else {
            Err(format!(
                "indices active in more than one RIM: {conflicts:?}"
            ))
        },
    );

    // measurements_match
    let Some(r) = report else {
        rec.skip(GpuCheck::MeasurementsMatch, NOT_PARSED);
        return;
    };
    let result = compare_measurements(r, &contents, claims);
    if result.is_ok() {
        claims.secure_boot = Some(true);
        claims.debug_status = Some("disabled".to_owned());
    }
    claims.measurements_compared = true;
    rec.record(GpuCheck::MeasurementsMatch, result);
}

fn compare_measurements(
    r: &SpdmReport,
    contents: &[(RimKind, &RimContent)],
    claims: &mut GpuClaims,
) -> Result<(), String> {
    for kind in [RimKind::Driver, RimKind::Vbios] {
        if !contents.iter().any(|(k, _)| *k == kind) {
            return Err(format!(
                "no readable {} RIM: its golden values cannot be compared",
                kind.name()
            ));
        }
    }
    let skip_nvdec0 = match r.opaque.nvdec0_status {
        Some(spdm::NVDEC0_DISABLED) => true,
        Some(spdm::NVDEC0_ENABLED) => false,
        Some(other) => return Err(format!("unknown NVDEC0 status {other:#04x}")),
        None => return Err("the report has no NVDEC0 status".to_owned()),
    };
    let mut mismatches = Vec::new();
    for (kind, content) in contents {
        for (index, size, alternatives) in content.active() {
            if index == NVDEC0_RIM_INDEX && skip_nvdec0 {
                continue;
            }
            let block = u8::try_from(index)
                .ok()
                .and_then(|i| i.checked_add(1))
                .and_then(|spdm_index| r.measurement(spdm_index));
            let matched = block.is_some_and(|b| {
                b.value.len() == size && alternatives.iter().any(|a| a.as_slice() == b.value)
            });
            if !matched {
                mismatches.push(MeasurementMismatch {
                    index,
                    rim: *kind,
                    expected: alternatives.iter().map(hex::encode).collect(),
                    actual: block.map(|b| hex::encode(&b.value)),
                });
            }
        }
    }
    let result = if mismatches.is_empty() {
        Ok(())
    } else {
        Err(format!(
            "{} golden measurement(s) do not match, at RIM indices {:?}",
            mismatches.len(),
            mismatches.iter().map(|m| m.index).collect::<Vec<_>>()
        ))
    };
    claims.measurement_mismatches = mismatches;
    result
}
