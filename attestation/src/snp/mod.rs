//! SEV-SNP verification: the AMD certificate chain, the report signature, and the binding
//! between the VEK certificate and the report.
//!
//! `sev` parses the report and checks RSA-PSS certificate signatures. It checks none of
//! certificate dates, TCB extensions, hwID or product consistency, so this module does, and it
//! verifies the report signature over the caller's raw bytes rather than a re-serialization.
//!
//! The same path verifies simulated evidence, with one difference: its anchor is the ARK the
//! evidence carries (self-signed, generated on the attesting machine) instead of a built-in
//! root, which is why simulated evidence proves nothing and policy must opt in to it.

mod endorsement;
mod roots;

#[cfg(test)]
mod tests;

use std::borrow::Cow;

use sev::certs::snp::Verifiable as _;
use sev::firmware::guest::AttestationReport;
use sev::parser::ByteParser as _;
use sha2::{Digest as _, Sha256};
use x509_cert::der::oid::ObjectIdentifier;
use x509_cert::der::{Decode as _, Encode as _};

pub(crate) use endorsement::{VekExtensions, encode_spl};
/// AMD's VEK extension OIDs, shared with the simulated signer.
pub(crate) mod oids {
    pub(crate) use super::endorsement::{
        BL_SPL, HW_ID, PRODUCT_NAME, SNP_SPL, STRUCT_VERSION, TEE_SPL, UCODE_SPL,
    };
}
pub use roots::ark_sha256;

use crate::claims::{Product, SigningKey, SnpClaims};
use crate::evidence::{CertType, SNP_REPORT_LEN, SnpEvidence};
use crate::timestamp::Timestamp;
use crate::verdict::{Check, Failures};

/// The signed part of the report: bytes 0x000–0x29F (SEV-SNP ABI, Table 22).
pub const SIGNED_LEN: usize = 0x2A0;
/// Offset of the signature's R component (72 bytes, little-endian, zero above 48 bytes).
const SIGNATURE_R: usize = 0x2A0;
/// Offset of the signature's S component.
const SIGNATURE_S: usize = 0x2E8;
/// Length of each signature component field.
const COMPONENT_LEN: usize = 72;

/// Where the chain's trust comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Anchor {
    /// The built-in AMD roots.
    Pinned,
    /// The ARK carried in the evidence: simulated TEE only.
    Carried,
}

/// The outcome of the cryptographic appraisal.
#[derive(Debug, Default)]
pub(crate) struct Appraisal {
    pub(crate) claims: Option<SnpClaims>,
    /// DER SHA-256 of the carried ARK (simulated evidence).
    pub(crate) carried_ark_sha256: Option<[u8; 32]>,
}

/// A certificate decoded for checking; pinned roots are borrowed, not copied.
struct Cert<'a> {
    name: &'static str,
    x509: Cow<'a, x509_cert::Certificate>,
}

impl<'a> Cert<'a> {
    fn decode(name: &'static str, der: &[u8]) -> Result<Self, String> {
        let x509 = x509_cert::Certificate::from_der(der).map_err(|e| format!("{name}: {e}"))?;
        Ok(Self {
            name,
            x509: Cow::Owned(x509),
        })
    }

    fn from_root(name: &'static str, root: &'a roots::Root) -> Self {
        Self {
            name,
            x509: Cow::Borrowed(&root.x509),
        }
    }

    fn sev(&self) -> sev::certs::snp::Certificate {
        self.x509.as_ref().clone().into()
    }
}

/// RSASSA-PSS, the only signature algorithm AMD uses on its certificates.
const RSA_PSS: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.1.10");

/// Verifies that `issuer` signed `subject` with RSA-PSS/SHA-384 (48-byte salt, MGF1-SHA-384),
/// as AMD signs every certificate in the chain.
///
/// This is the check `sev`'s `(&Certificate, &Certificate)::verify` makes; ring does it several
/// times faster, and it runs for every report. The unit tests hold the two to the same answers.
fn check_issued_by(issuer: &Cert<'_>, subject: &Cert<'_>) -> Result<(), String> {
    if subject.x509.signature_algorithm.oid != RSA_PSS {
        return Err(format!(
            "{} is signed with {}, not RSASSA-PSS",
            subject.name, subject.x509.signature_algorithm.oid
        ));
    }
    let message = subject
        .x509
        .tbs_certificate
        .to_der()
        .map_err(|e| format!("re-encoding the {}: {e}", subject.name))?;
    let key = issuer
        .x509
        .tbs_certificate
        .subject_public_key_info
        .subject_public_key
        .raw_bytes();
    ring::signature::UnparsedPublicKey::new(&ring::signature::RSA_PSS_2048_8192_SHA384, key)
        .verify(&message, subject.x509.signature.raw_bytes())
        .map_err(|_| {
            format!(
                "the {} signature does not verify under the {}",
                subject.name, issuer.name
            )
        })
}

/// Checks that `cert` is valid at `now`.
fn check_validity(cert: &Cert, now: Timestamp, failures: &mut Failures) {
    let validity = &cert.x509.tbs_certificate.validity;
    let not_before = validity.not_before.to_unix_duration().as_secs();
    let not_after = validity.not_after.to_unix_duration().as_secs();
    let now_s = now.unix_seconds();
    failures.require(
        not_before <= now_s && now_s <= not_after,
        Check::CertificateValidity,
        || {
            format!(
                "{} is valid {} to {}, not at {now}",
                cert.name,
                Timestamp::from_unix_seconds(not_before),
                Timestamp::from_unix_seconds(not_after)
            )
        },
    );
}

/// Verifies the report signature over the raw signed bytes.
fn check_report_signature(raw: &[u8], vek: &Cert) -> Result<(), String> {
    let component = |offset: usize| -> Result<[u8; 48], String> {
        let field = raw
            .get(offset..offset + COMPONENT_LEN)
            .ok_or("report too short for its signature")?;
        let (low, high) = field.split_at(48);
        // A P-384 scalar fits in 48 bytes; anything above is malleability, not a signature.
        if high.iter().any(|b| *b != 0) {
            return Err("signature component has non-zero bytes above 48".to_owned());
        }
        let mut big_endian = [0u8; 48];
        big_endian
            .iter_mut()
            .zip(low.iter().rev())
            .for_each(|(o, b)| *o = *b);
        Ok(big_endian)
    };
    // ring wants the fixed-length big-endian R || S.
    let mut signature = [0u8; 96];
    let (r, s) = signature.split_at_mut(48);
    r.copy_from_slice(&component(SIGNATURE_R)?);
    s.copy_from_slice(&component(SIGNATURE_S)?);
    let key = vek
        .x509
        .tbs_certificate
        .subject_public_key_info
        .subject_public_key
        .raw_bytes();
    let signed = raw.get(..SIGNED_LEN).ok_or("report too short")?;
    ring::signature::UnparsedPublicKey::new(&ring::signature::ECDSA_P384_SHA384_FIXED, key)
        .verify(signed, &signature)
        .map_err(|_| {
            format!(
                "the report signature does not verify under the {} (or its key is not P-384)",
                vek.name
            )
        })
}

/// Appraises SNP (or simulated) evidence: decodes the report, then runs every check it can,
/// recording each failure.
pub(crate) fn appraise(
    evidence: &SnpEvidence,
    anchor: Anchor,
    now: Timestamp,
    failures: &mut Failures,
) -> Appraisal {
    let mut appraisal = Appraisal::default();
    let raw = evidence.report();
    if raw.len() != SNP_REPORT_LEN {
        failures.push(
            Check::EvidenceFormat,
            format!("SNP report is {} bytes, not {SNP_REPORT_LEN}", raw.len()),
        );
        return appraisal;
    }
    let report = match AttestationReport::from_bytes(raw) {
        Ok(report) => report,
        Err(e) => {
            failures.push(
                Check::EvidenceFormat,
                format!("SNP report does not parse: {e}"),
            );
            return appraisal;
        }
    };
    let mut claims = SnpClaims::from_report(&report, raw);

    // Reserved fields are ignored by the decoder; a canonical re-encoding proves they are zero.
    let canonical = report.to_bytes().is_ok_and(|bytes| bytes.as_slice() == raw);
    failures.require(canonical, Check::ReportEncoding, || {
        "SNP report has non-zero reserved bytes".to_owned()
    });
    failures.require(
        (2..=5).contains(&report.version),
        Check::ReportVersion,
        || {
            format!(
                "SNP report version {} is not supported (2 to 5)",
                report.version
            )
        },
    );
    failures.require(report.sig_algo == 1, Check::SignatureAlgorithm, || {
        format!(
            "signature algorithm {} is not ECDSA P-384/SHA-384 (1)",
            report.sig_algo
        )
    });

    check_chain_and_binding(
        evidence,
        &report,
        raw,
        anchor,
        now,
        failures,
        &mut claims,
        &mut appraisal,
    );
    appraisal.claims = Some(claims);
    appraisal
}

#[allow(clippy::too_many_arguments)]
fn check_chain_and_binding(
    evidence: &SnpEvidence,
    report: &AttestationReport,
    raw: &[u8],
    anchor: Anchor,
    now: Timestamp,
    failures: &mut Failures,
    claims: &mut SnpClaims,
    appraisal: &mut Appraisal,
) {
    // The signed report names its key; the evidence's labels must agree.
    let (vek_type, vek_name, intermediate_name) = match claims.signing_key {
        SigningKey::Vcek => (CertType::Vcek, "VCEK", "ASK"),
        SigningKey::Vlek => (CertType::Vlek, "VLEK", "ASVK"),
        other => {
            failures.push(
                Check::EndorsementKey,
                format!("report signing key is {other:?}, not a VCEK or VLEK"),
            );
            return;
        }
    };
    let Some(vek_der) = evidence.cert(&vek_type) else {
        failures.push(
            Check::EndorsementKey,
            format!("the report is signed by a {vek_name} but the evidence carries none"),
        );
        return;
    };
    let vek = match Cert::decode(vek_name, vek_der) {
        Ok(cert) => cert,
        Err(e) => {
            failures.push(Check::EndorsementKey, format!("cannot decode the {e}"));
            return;
        }
    };
    let extensions = VekExtensions::read(&vek.x509);
    let carried_ark = evidence.cert(&CertType::Ark);
    let carried_intermediate = evidence.cert(&CertType::Ask);

    let (ark, intermediate) = match anchor {
        Anchor::Pinned => {
            let Some(product) = resolve_product(claims, &extensions, failures) else {
                return;
            };
            claims.product = Some(product);
            let roots = match roots::pinned(product) {
                Ok(roots) => roots,
                Err(e) => {
                    failures.push(Check::CertificateChain, e);
                    return;
                }
            };
            let pinned_intermediate = match vek_type {
                CertType::Vlek => &roots.asvk,
                _ => &roots.ask,
            };
            if let Some(carried) = carried_ark {
                failures.require(
                    carried == roots.ark.der.as_slice(),
                    Check::RootPinning,
                    || {
                        format!(
                            "carried ARK (SHA-256 {}) is not the pinned ARK-{product}",
                            hex::encode(Sha256::digest(carried))
                        )
                    },
                );
            }
            if let Some(carried) = carried_intermediate {
                failures.require(
                    carried == pinned_intermediate.der.as_slice(),
                    Check::RootPinning,
                    || {
                        format!(
                            "carried ASK/ASVK is not the pinned {intermediate_name} of {product}"
                        )
                    },
                );
            }
            (
                Cert::from_root("ARK", &roots.ark),
                Cert::from_root(intermediate_name, pinned_intermediate),
            )
        }
        Anchor::Carried => {
            let decoded = match (carried_ark, carried_intermediate) {
                (Some(ark), Some(ask)) => Cert::decode("ARK", ark)
                    .and_then(|ark| Cert::decode(intermediate_name, ask).map(|ask| (ark, ask))),
                _ => Err("simulated evidence must carry its ARK and ASK".to_owned()),
            };
            let (ark, ask) = match decoded {
                Ok(pair) => pair,
                Err(e) => {
                    failures.push(Check::CertificateChain, e);
                    return;
                }
            };
            appraisal.carried_ark_sha256 = carried_ark.map(|der| Sha256::digest(der).into());
            let chain = sev::certs::snp::ca::Chain {
                ark: ark.sev(),
                ask: ask.sev(),
            };
            if let Err(e) = (&chain).verify() {
                failures.push(
                    Check::CertificateChain,
                    format!("ARK -> {intermediate_name}: {e}"),
                );
            }
            (ark, ask)
        }
    };

    if let Err(e) = check_issued_by(&intermediate, &vek) {
        failures.push(Check::CertificateChain, e);
    }
    for cert in [&ark, &intermediate, &vek] {
        check_validity(cert, now, failures);
    }
    if let Err(e) = check_report_signature(raw, &vek) {
        failures.push(Check::ReportSignature, e);
    }
    check_tcb_extensions(report, &extensions, vek_name, failures);
    if vek_type == CertType::Vcek {
        check_chip_id(report, &extensions, failures);
    }
}

/// Picks the product from the VEK's productName and, on v3+ reports, the CPUID, requiring that
/// they agree.
fn resolve_product(
    claims: &SnpClaims,
    extensions: &VekExtensions,
    failures: &mut Failures,
) -> Option<Product> {
    let named = extensions.product_name.as_deref();
    let from_vek = named.and_then(Product::from_product_name);
    let from_cpuid = claims
        .cpuid
        .map(|c| (c, Product::from_cpuid(c.family, c.model)));
    if from_vek.is_none() {
        failures.push(
            Check::Product,
            format!("VEK productName {named:?} is not a known SNP product"),
        );
    }
    match from_cpuid {
        Some((cpuid, None)) => failures.push(
            Check::Product,
            format!(
                "CPUID family {:#x} model {:#x} is not a known SNP product",
                cpuid.family, cpuid.model
            ),
        ),
        Some((cpuid, Some(p))) if from_vek.is_some_and(|v| v != p) => failures.push(
            Check::Product,
            format!(
                "the VEK is for {named:?} but the report's CPUID (family {:#x} model {:#x}) is {p}",
                cpuid.family, cpuid.model
            ),
        ),
        _ => {}
    }
    from_vek.or(from_cpuid.and_then(|(_, p)| p))
}

fn check_tcb_extensions(
    report: &AttestationReport,
    extensions: &VekExtensions,
    vek_name: &str,
    failures: &mut Failures,
) {
    let tcb = &report.reported_tcb;
    let mut components = vec![
        ("bootloader", extensions.bootloader, tcb.bootloader),
        ("tee", extensions.tee, tcb.tee),
        ("snp", extensions.snp, tcb.snp),
        ("microcode", extensions.microcode, tcb.microcode),
    ];
    if let Some(fmc) = tcb.fmc {
        components.push(("fmc", extensions.fmc, fmc));
    }
    for (name, endorsed, reported) in components {
        match endorsed {
            None => failures.push(
                Check::TcbExtensions,
                format!("the {vek_name} has no {name} SPL extension"),
            ),
            Some(endorsed) => failures.require(endorsed == reported, Check::TcbExtensions, || {
                format!("the {vek_name} endorses {name} {endorsed} but reported_tcb has {reported}")
            }),
        }
    }
}

fn check_chip_id(report: &AttestationReport, extensions: &VekExtensions, failures: &mut Failures) {
    let chip_id = &report.chip_id;
    if chip_id.iter().all(|b| *b == 0) {
        failures.push(
            Check::ChipId,
            "chip_id is masked, so the VCEK cannot be bound to the chip",
        );
        return;
    }
    let Some(hw_id) = &extensions.hw_id else {
        failures.push(Check::ChipId, "the VCEK has no hwID extension");
        return;
    };
    // Turin VCEKs carry an 8-byte hwID; the report's chip_id is then zero-padded to 64.
    let matches = !hw_id.is_empty()
        && chip_id.get(..hw_id.len()) == Some(hw_id.as_slice())
        && chip_id
            .get(hw_id.len()..)
            .is_some_and(|rest| rest.iter().all(|b| *b == 0));
    failures.require(matches, Check::ChipId, || {
        format!(
            "the VCEK hwID {} does not equal chip_id {}",
            hex::encode(hw_id),
            hex::encode(chip_id)
        )
    });
}

/// Verifies a VCEK or VLEK certificate on its own: its product (from `productName`), its
/// signature by the pinned ASK or ASVK of that product, and the validity of the whole chain at
/// `now`. Useful to check a VEK fetched from AMD KDS before caching it.
pub fn verify_vek(vek_der: &[u8], now: Timestamp) -> Result<Product, Vec<crate::Failure>> {
    let mut failures = Failures::default();
    let product = check_vek(vek_der, now, &mut failures);
    let failures = failures.into_vec();
    match product {
        Some(product) if failures.is_empty() => Ok(product),
        _ => Err(failures),
    }
}

fn check_vek(vek_der: &[u8], now: Timestamp, failures: &mut Failures) -> Option<Product> {
    let vek = match Cert::decode("VEK", vek_der) {
        Ok(cert) => cert,
        Err(e) => {
            failures.push(Check::EndorsementKey, format!("cannot decode the {e}"));
            return None;
        }
    };
    let extensions = VekExtensions::read(&vek.x509);
    let named = extensions.product_name.as_deref();
    let Some(product) = named.and_then(Product::from_product_name) else {
        failures.push(
            Check::Product,
            format!("VEK productName {named:?} is not a known SNP product"),
        );
        return None;
    };
    let roots = match roots::pinned(product) {
        Ok(roots) => roots,
        Err(e) => {
            failures.push(Check::CertificateChain, e);
            return None;
        }
    };
    let is_vlek = crate::evidence::common_name(&vek.x509).as_deref() == Some("SEV-VLEK");
    let (name, intermediate) = if is_vlek {
        ("ASVK", &roots.asvk)
    } else {
        ("ASK", &roots.ask)
    };
    let intermediate = Cert::from_root(name, intermediate);
    if let Err(e) = check_issued_by(&intermediate, &vek) {
        failures.push(Check::CertificateChain, e);
    }
    for cert in [&Cert::from_root("ARK", &roots.ark), &intermediate, &vek] {
        check_validity(cert, now, failures);
    }
    Some(product)
}
