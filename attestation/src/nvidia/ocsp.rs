//! Revocation of the device and RIM certificates through OCSP responses (RFC 6960) that the
//! caller supplies: verification stays offline, so it never fetches one.
//!
//! A response counts for a certificate when one of its `SingleResponse`s names it (CertID:
//! serial, and the hashes of the issuer's name and key) and the response is signed by that
//! issuer, or by a responder certificate the issuer signed for `id-kp-OCSPSigning`, and
//! `thisUpdate ≤ now ≤ nextUpdate`. As NVIDIA's verifier does, the device chain is checked from
//! the certificate above the leaf to the one below the root, and a RIM chain from its leaf to
//! the one below the root.
//!
//! Without responses every certificate is `not_checked` and no check fails: whether that is
//! acceptable is the caller's policy. A supplied response that names a certificate but does
//! not verify, or says `revoked` or `unknown`, fails the `ocsp` check.

use serde::{Deserialize, Serialize};
use x509_cert::der::oid::ObjectIdentifier;
use x509_cert::der::{Decode as _, Encode as _};
use x509_ocsp::{BasicOcspResponse, CertStatus, OcspResponse, OcspResponseStatus};

use super::asn1::{self, Reader};
use super::certs::{self, Cert, NvidiaRoot};
use crate::timestamp::Timestamp;

const ID_PKIX_OCSP_BASIC: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.6.1.5.5.7.48.1.1");
const ID_KP_OCSP_SIGNING: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.6.1.5.5.7.3.9");
const EXTENDED_KEY_USAGE: ObjectIdentifier = ObjectIdentifier::new_unwrap("2.5.29.37");
/// How long a response without nextUpdate counts after its thisUpdate.
const NO_NEXT_UPDATE_MAX_AGE_SECS: u64 = 24 * 60 * 60;
/// Clock skew tolerated for thisUpdate.
const SKEW_SECS: u64 = 300;

/// The OCSP status of one certificate.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "status")]
#[non_exhaustive]
pub enum OcspStatus {
    /// No supplied response names it.
    NotChecked,
    /// A valid response says good.
    Good,
    /// A valid response says revoked.
    Revoked {
        /// When.
        revoked_at: Timestamp,
        /// CRL reason code, if given.
        reason: Option<u8>,
    },
    /// A valid response says unknown.
    Unknown,
    /// A response names it but does not verify.
    Invalid {
        /// Why.
        reason: String,
    },
}

/// One certificate's revocation status.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CertRevocation {
    /// The certificate's subject.
    pub subject: String,
    /// Its status.
    #[serde(flatten)]
    pub status: OcspStatus,
}

/// Revocation of every certificate that NVIDIA checks.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Revocation {
    /// `not_checked` (no responses), `good` (every certificate good), `incomplete` (some not
    /// checked, none bad) or `failed`.
    pub summary: String,
    /// Device chain, from the certificate above the leaf to the one below the root.
    pub device_chain: Vec<CertRevocation>,
    /// RIM signer chains, leaf to the certificate below the root.
    pub rim_chains: Vec<CertRevocation>,
    /// Supplied responses that could not be decoded at all.
    pub undecodable: Vec<String>,
}

impl Revocation {
    /// `Err` when a supplied response fails or a certificate is revoked or unknown.
    pub fn problems(&self) -> Result<(), RevocationProblems> {
        let mut problems: Vec<RevocationProblem> = self
            .undecodable
            .iter()
            .cloned()
            .map(RevocationProblem::Undecodable)
            .collect();
        for c in self.device_chain.iter().chain(&self.rim_chains) {
            let subject = c.subject.clone();
            match &c.status {
                OcspStatus::Revoked { revoked_at, .. } => {
                    problems.push(RevocationProblem::Revoked {
                        subject,
                        revoked_at: *revoked_at,
                    });
                }
                OcspStatus::Unknown => problems.push(RevocationProblem::Unknown { subject }),
                OcspStatus::Invalid { reason } => problems.push(RevocationProblem::Invalid {
                    subject,
                    reason: reason.clone(),
                }),
                OcspStatus::NotChecked | OcspStatus::Good => {}
            }
        }
        if problems.is_empty() {
            Ok(())
        } else {
            Err(RevocationProblems(problems))
        }
    }

    /// Whether every certificate has a good status.
    pub fn all_good(&self) -> bool {
        self.summary == "good"
    }
}

/// What failed the `ocsp` check ([`Revocation::problems`]): every problem, in chain order;
/// displayed joined by `; `.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}", .0.iter().map(ToString::to_string).collect::<Vec<_>>().join("; "))]
pub struct RevocationProblems(pub Vec<RevocationProblem>);

/// One reason a [`Revocation`] fails the `ocsp` check.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RevocationProblem {
    /// A supplied response that could not be decoded at all (the decoder's message).
    #[error("{0}")]
    Undecodable(String),
    /// A valid response says the certificate is revoked.
    #[error("{subject} revoked at {revoked_at}")]
    Revoked {
        /// The certificate's subject.
        subject: String,
        /// When.
        revoked_at: Timestamp,
    },
    /// A valid response says the certificate's status is unknown.
    #[error("{subject}: status unknown")]
    Unknown {
        /// The certificate's subject.
        subject: String,
    },
    /// A response names the certificate but does not verify.
    #[error("{subject}: {reason}")]
    Invalid {
        /// The certificate's subject.
        subject: String,
        /// Why.
        reason: String,
    },
}

/// A decoded response with the exact bytes its signature covers.
struct Decoded {
    basic: BasicOcspResponse,
    tbs: Vec<u8>,
}

fn decode(der: &[u8]) -> Result<Decoded, String> {
    let response = OcspResponse::from_der(der).map_err(|e| format!("OCSP response: {e}"))?;
    if response.response_status != OcspResponseStatus::Successful {
        return Err(format!(
            "OCSP response status {:?}",
            response.response_status
        ));
    }
    let bytes = response
        .response_bytes
        .ok_or("OCSP response without responseBytes")?;
    if bytes.response_type != ID_PKIX_OCSP_BASIC {
        return Err(format!("OCSP response type {}", bytes.response_type));
    }
    let inner = bytes.response.as_bytes();
    let basic =
        BasicOcspResponse::from_der(inner).map_err(|e| format!("BasicOCSPResponse: {e}"))?;
    let tbs = Reader::new(Reader::new(inner).expect(asn1::SEQUENCE)?)
        .raw_next()?
        .to_vec();
    Ok(Decoded { basic, tbs })
}

fn digest(alg: &ObjectIdentifier, data: &[u8]) -> Option<Vec<u8>> {
    let algorithm = match alg.to_string().as_str() {
        "1.3.14.3.2.26" => &ring::digest::SHA1_FOR_LEGACY_USE_ONLY,
        "2.16.840.1.101.3.4.2.1" => &ring::digest::SHA256,
        "2.16.840.1.101.3.4.2.2" => &ring::digest::SHA384,
        "2.16.840.1.101.3.4.2.3" => &ring::digest::SHA512,
        _ => return None,
    };
    Some(ring::digest::digest(algorithm, data).as_ref().to_vec())
}

/// Verifies `signature` over `message` by `signer` with the X.509 algorithm `alg`.
fn verify_signature(
    signer: &Cert,
    alg: &ObjectIdentifier,
    message: &[u8],
    signature: &[u8],
) -> bool {
    use ring::signature as s;
    let spki = &signer.x509.tbs_certificate.subject_public_key_info;
    let curve = spki
        .algorithm
        .parameters
        .as_ref()
        .and_then(|p| p.decode_as::<ObjectIdentifier>().ok())
        .map(|o| o.to_string());
    let key = spki.subject_public_key.raw_bytes();
    let algorithm: &dyn s::VerificationAlgorithm =
        match (alg.to_string().as_str(), curve.as_deref()) {
            ("1.2.840.10045.4.3.3", Some("1.3.132.0.34")) => &s::ECDSA_P384_SHA384_ASN1,
            ("1.2.840.10045.4.3.2", Some("1.3.132.0.34")) => &s::ECDSA_P384_SHA256_ASN1,
            ("1.2.840.10045.4.3.2", Some("1.2.840.10045.3.1.7")) => &s::ECDSA_P256_SHA256_ASN1,
            ("1.2.840.10045.4.3.3", Some("1.2.840.10045.3.1.7")) => &s::ECDSA_P256_SHA384_ASN1,
            ("1.2.840.113549.1.1.11", _) => &s::RSA_PKCS1_2048_8192_SHA256,
            ("1.2.840.113549.1.1.12", _) => &s::RSA_PKCS1_2048_8192_SHA384,
            ("1.2.840.113549.1.1.13", _) => &s::RSA_PKCS1_2048_8192_SHA512,
            _ => return false,
        };
    s::UnparsedPublicKey::new(algorithm, key)
        .verify(message, signature)
        .is_ok()
}

/// Whether `responder` is a delegated OCSP signer of `issuer`, valid at `now`.
fn delegated(responder: &Cert, issuer: &Cert, now: Timestamp) -> bool {
    let eku_ok = responder
        .x509
        .tbs_certificate
        .extensions
        .as_deref()
        .unwrap_or(&[])
        .iter()
        .find(|e| e.extn_id == EXTENDED_KEY_USAGE)
        .and_then(|e| {
            x509_cert::ext::pkix::ExtendedKeyUsage::from_der(e.extn_value.as_bytes()).ok()
        })
        .is_some_and(|eku| eku.0.contains(&ID_KP_OCSP_SIGNING));
    let (not_before, not_after) = responder.validity();
    eku_ok
        && not_before <= now.unix_seconds()
        && now.unix_seconds() <= not_after
        && certs::verify_link(issuer, responder).is_ok()
}

/// The status `response` gives `cert` (issued by `issuer`), or `None` if it does not name it.
fn status_in(response: &Decoded, cert: &Cert, issuer: &Cert, now: Timestamp) -> Option<OcspStatus> {
    let issuer_name = issuer.x509.tbs_certificate.subject.to_der().ok()?;
    let issuer_key = issuer
        .x509
        .tbs_certificate
        .subject_public_key_info
        .subject_public_key
        .raw_bytes();
    let single = response
        .basic
        .tbs_response_data
        .responses
        .iter()
        .find(|r| {
            let id = &r.cert_id;
            id.serial_number == cert.x509.tbs_certificate.serial_number
                && digest(&id.hash_algorithm.oid, &issuer_name).as_deref()
                    == Some(id.issuer_name_hash.as_bytes())
                && digest(&id.hash_algorithm.oid, issuer_key).as_deref()
                    == Some(id.issuer_key_hash.as_bytes())
        })?;
    let invalid = |reason: String| Some(OcspStatus::Invalid { reason });
    // The signature: by the issuer, or by a delegated responder the issuer certified.
    let alg = &response.basic.signature_algorithm.oid;
    let Some(signature) = response.basic.signature.as_bytes() else {
        return invalid("signature is not whole bytes".to_owned());
    };
    let responders: Vec<Cert> = response
        .basic
        .certs
        .as_deref()
        .unwrap_or(&[])
        .iter()
        .filter_map(|c| c.to_der().ok())
        .enumerate()
        .filter_map(|(i, der)| Cert::from_der(der, i).ok())
        .collect();
    let signed = verify_signature(issuer, alg, &response.tbs, signature)
        || responders.iter().any(|r| {
            delegated(r, issuer, now) && verify_signature(r, alg, &response.tbs, signature)
        });
    if !signed {
        return invalid(format!(
            "the OCSP response is signed neither by {} nor by a responder it delegated to",
            issuer.subject()
        ));
    }
    let now_s = now.unix_seconds();
    let this_update = single.this_update.0.to_unix_duration().as_secs();
    if this_update > now_s.saturating_add(SKEW_SECS) {
        return invalid(format!(
            "OCSP thisUpdate {} is after {now}",
            Timestamp::from_unix_seconds(this_update)
        ));
    }
    let expires = single
        .next_update
        .as_ref()
        .map(|t| t.0.to_unix_duration().as_secs())
        .unwrap_or(this_update.saturating_add(NO_NEXT_UPDATE_MAX_AGE_SECS));
    if now_s > expires {
        return invalid(format!(
            "the OCSP response expired at {}",
            Timestamp::from_unix_seconds(expires)
        ));
    }
    Some(match &single.cert_status {
        CertStatus::Good(_) => OcspStatus::Good,
        CertStatus::Revoked(info) => OcspStatus::Revoked {
            revoked_at: Timestamp::from_unix_seconds(
                info.revocation_time.0.to_unix_duration().as_secs(),
            ),
            reason: info.revocation_reason.map(|r| r as u8),
        },
        CertStatus::Unknown(_) => OcspStatus::Unknown,
    })
}

/// The status of `cert` across all responses: any invalid or bad answer wins over good.
fn status_of(responses: &[Decoded], cert: &Cert, issuer: &Cert, now: Timestamp) -> OcspStatus {
    let mut statuses: Vec<OcspStatus> = responses
        .iter()
        .filter_map(|r| status_in(r, cert, issuer, now))
        .collect();
    statuses.sort_by_key(|s| match s {
        OcspStatus::Revoked { .. } => 0,
        OcspStatus::Invalid { .. } => 1,
        OcspStatus::Unknown => 2,
        OcspStatus::Good => 3,
        OcspStatus::NotChecked => 4,
    });
    statuses
        .into_iter()
        .next()
        .unwrap_or(OcspStatus::NotChecked)
}

/// The certificates of `chain` (pinned root in place of the carried one) from `first` to the
/// one below the root, each with its issuer.
fn pairs<'a>(chain: &'a [Cert], root: &'a Cert, first: usize) -> Vec<(&'a Cert, &'a Cert)> {
    let below_root = chain.len().saturating_sub(1);
    (first..below_root)
        .filter_map(|i| {
            let cert = chain.get(i)?;
            let issuer = if i + 1 == below_root {
                root
            } else {
                chain.get(i + 1)?
            };
            Some((cert, issuer))
        })
        .collect()
}

/// Judges the supplied responses for the device chain and the RIM chains.
pub(crate) fn assess(
    device_chain: &[Cert],
    rim_chains: &[Vec<Cert>],
    responses: &[&[u8]],
    now: Timestamp,
) -> Revocation {
    let mut decoded = Vec::new();
    let mut undecodable = Vec::new();
    for (i, der) in responses.iter().enumerate() {
        match decode(der) {
            Ok(d) => decoded.push(d),
            Err(e) => undecodable.push(format!("OCSP response {i}: {e}")),
        }
    }
    let judge = |pairs: Vec<(&Cert, &Cert)>| -> Vec<CertRevocation> {
        pairs
            .into_iter()
            .map(|(cert, issuer)| CertRevocation {
                subject: cert.subject(),
                status: status_of(&decoded, cert, issuer, now),
            })
            .collect()
    };
    let device = certs::pinned(NvidiaRoot::DeviceIdentity)
        .map(|root| judge(pairs(device_chain, root, 1)))
        .unwrap_or_default();
    let rims = certs::pinned(NvidiaRoot::RimSigning)
        .map(|root| {
            rim_chains
                .iter()
                .flat_map(|chain| judge(pairs(chain, root, 0)))
                .collect()
        })
        .unwrap_or_default();
    let mut revocation = Revocation {
        summary: String::new(),
        device_chain: device,
        rim_chains: rims,
        undecodable,
    };
    let all = || revocation.device_chain.iter().chain(&revocation.rim_chains);
    revocation.summary = if responses.is_empty() {
        "not_checked"
    } else if revocation.problems().is_err() {
        "failed"
    } else if all().all(|c| c.status == OcspStatus::Good) {
        "good"
    } else {
        "incomplete"
    }
    .to_owned();
    revocation
}

/// Verifies OCSP responses for one certificate issued by `issuer`: for tests and tools that
/// judge a single response.
pub fn status_for(
    cert_der: &[u8],
    issuer_der: &[u8],
    response: &[u8],
    now: Timestamp,
) -> OcspStatus {
    let (Ok(cert), Ok(issuer)) = (
        Cert::from_der(cert_der.to_vec(), 0),
        Cert::from_der(issuer_der.to_vec(), 1),
    ) else {
        return OcspStatus::Invalid {
            reason: "certificate does not decode".to_owned(),
        };
    };
    match decode(response) {
        Ok(d) => status_of(std::slice::from_ref(&d), &cert, &issuer, now),
        Err(reason) => OcspStatus::Invalid { reason },
    }
}

#[cfg(test)]
mod tests;
