use std::str::FromStr as _;
use std::time::Duration;

use p384::ecdsa::signature::Signer as _;
use p384::pkcs8::EncodePublicKey as _;
use rand_core::OsRng;
use x509_cert::der::asn1::{BitString, GeneralizedTime, Null, OctetString, UtcTime};
use x509_cert::der::oid::db::rfc5280::{ID_CE_BASIC_CONSTRAINTS, ID_CE_EXT_KEY_USAGE};
use x509_cert::ext::Extension;
use x509_cert::ext::pkix::{BasicConstraints, ExtendedKeyUsage};
use x509_cert::name::Name;
use x509_cert::serial_number::SerialNumber;
use x509_cert::spki::{AlgorithmIdentifierOwned, SubjectPublicKeyInfoOwned};
use x509_cert::time::{Time, Validity};
use x509_cert::{Certificate, TbsCertificate, Version};
use x509_ocsp::{
    CertId, OcspGeneralizedTime, ResponderId, ResponseBytes, ResponseData, RevokedInfo,
    SingleResponse,
};

use super::*;

const NOW: u64 = 1_735_689_600; // 2025-01-01
const DAY: u64 = 86_400;

fn ecdsa_sha384() -> AlgorithmIdentifierOwned {
    AlgorithmIdentifierOwned {
        oid: ObjectIdentifier::new_unwrap("1.2.840.10045.4.3.3"),
        parameters: None,
    }
}

fn sign(key: &p384::ecdsa::SigningKey, message: &[u8]) -> BitString {
    let signature: p384::ecdsa::Signature = key.sign(message);
    BitString::from_bytes(signature.to_der().as_bytes()).unwrap()
}

fn cert(
    serial: u8,
    issuer: &str,
    subject: &str,
    key: &p384::ecdsa::SigningKey,
    issuer_key: &p384::ecdsa::SigningKey,
    extensions: Vec<Extension>,
) -> Vec<u8> {
    let validity = Validity {
        not_before: Time::UtcTime(
            UtcTime::from_unix_duration(Duration::from_secs(NOW - 365 * DAY)).unwrap(),
        ),
        not_after: Time::UtcTime(
            UtcTime::from_unix_duration(Duration::from_secs(NOW + 365 * DAY)).unwrap(),
        ),
    };
    let spki_der = key.verifying_key().to_public_key_der().unwrap();
    let tbs = TbsCertificate {
        version: Version::V3,
        serial_number: SerialNumber::new(&[serial]).unwrap(),
        signature: ecdsa_sha384(),
        issuer: Name::from_str(issuer).unwrap(),
        validity,
        subject: Name::from_str(subject).unwrap(),
        subject_public_key_info: SubjectPublicKeyInfoOwned::from_der(spki_der.as_bytes()).unwrap(),
        issuer_unique_id: None,
        subject_unique_id: None,
        extensions: Some(extensions),
    };
    let signature = sign(issuer_key, &tbs.to_der().unwrap());
    Certificate {
        tbs_certificate: tbs,
        signature_algorithm: ecdsa_sha384(),
        signature,
    }
    .to_der()
    .unwrap()
}

fn ext(oid: ObjectIdentifier, value: Vec<u8>) -> Extension {
    Extension {
        extn_id: oid,
        critical: false,
        extn_value: OctetString::new(value).unwrap(),
    }
}

struct Pki {
    ca_key: p384::ecdsa::SigningKey,
    ca: Vec<u8>,
    leaf: Vec<u8>,
}

fn new_pki() -> Pki {
    let ca_key = p384::ecdsa::SigningKey::random(&mut OsRng);
    let leaf_key = p384::ecdsa::SigningKey::random(&mut OsRng);
    let ca_ext = ext(
        ID_CE_BASIC_CONSTRAINTS,
        BasicConstraints {
            ca: true,
            path_len_constraint: None,
        }
        .to_der()
        .unwrap(),
    );
    let ca = cert(
        1,
        "CN=Test CA",
        "CN=Test CA",
        &ca_key,
        &ca_key,
        vec![ca_ext],
    );
    let leaf = cert(2, "CN=Test CA", "CN=Test Leaf", &leaf_key, &ca_key, vec![]);
    Pki { ca_key, ca, leaf }
}

fn generalized(seconds: u64) -> OcspGeneralizedTime {
    OcspGeneralizedTime(GeneralizedTime::from_unix_duration(Duration::from_secs(seconds)).unwrap())
}

/// An OCSP response about `leaf`, signed by `signer` (with `certs` attached).
fn response(
    pki: &Pki,
    status: CertStatus,
    this_update: u64,
    next_update: Option<u64>,
    signer: &p384::ecdsa::SigningKey,
    certs: Option<Vec<Certificate>>,
) -> Vec<u8> {
    let ca = Certificate::from_der(&pki.ca).unwrap();
    let leaf = Certificate::from_der(&pki.leaf).unwrap();
    let sha1 = ObjectIdentifier::new_unwrap("1.3.14.3.2.26");
    let name_hash = digest(&sha1, &ca.tbs_certificate.subject.to_der().unwrap()).unwrap();
    let key_hash = digest(
        &sha1,
        ca.tbs_certificate
            .subject_public_key_info
            .subject_public_key
            .raw_bytes(),
    )
    .unwrap();
    let data = ResponseData {
        version: x509_ocsp::Version::V1,
        responder_id: ResponderId::ByKey(OctetString::new(key_hash.clone()).unwrap()),
        produced_at: generalized(this_update),
        responses: vec![SingleResponse {
            cert_id: CertId {
                hash_algorithm: AlgorithmIdentifierOwned {
                    oid: sha1,
                    parameters: None,
                },
                issuer_name_hash: OctetString::new(name_hash).unwrap(),
                issuer_key_hash: OctetString::new(key_hash).unwrap(),
                serial_number: leaf.tbs_certificate.serial_number.clone(),
            },
            cert_status: status,
            this_update: generalized(this_update),
            next_update: next_update.map(generalized),
            single_extensions: None,
        }],
        response_extensions: None,
    };
    let basic = BasicOcspResponse {
        signature: sign(signer, &data.to_der().unwrap()),
        tbs_response_data: data,
        signature_algorithm: ecdsa_sha384(),
        certs,
    };
    OcspResponse {
        response_status: OcspResponseStatus::Successful,
        response_bytes: Some(ResponseBytes {
            response_type: ID_PKIX_OCSP_BASIC,
            response: OctetString::new(basic.to_der().unwrap()).unwrap(),
        }),
    }
    .to_der()
    .unwrap()
}

fn good() -> CertStatus {
    CertStatus::Good(Null)
}

#[test]
fn good_revoked_and_unknown_responses_from_the_issuer() {
    let pki = new_pki();
    let now = Timestamp::from_unix_seconds(NOW);
    let ok = response(&pki, good(), NOW - DAY, Some(NOW + DAY), &pki.ca_key, None);
    assert_eq!(status_for(&pki.leaf, &pki.ca, &ok, now), OcspStatus::Good);
    let revoked = response(
        &pki,
        CertStatus::Revoked(RevokedInfo {
            revocation_time: generalized(NOW - 2 * DAY),
            revocation_reason: None,
        }),
        NOW - DAY,
        Some(NOW + DAY),
        &pki.ca_key,
        None,
    );
    assert_eq!(
        status_for(&pki.leaf, &pki.ca, &revoked, now),
        OcspStatus::Revoked {
            revoked_at: Timestamp::from_unix_seconds(NOW - 2 * DAY),
            reason: None
        }
    );
    let unknown = response(
        &pki,
        CertStatus::Unknown(Null),
        NOW - DAY,
        Some(NOW + DAY),
        &pki.ca_key,
        None,
    );
    assert_eq!(
        status_for(&pki.leaf, &pki.ca, &unknown, now),
        OcspStatus::Unknown
    );
}

#[test]
fn stale_future_forged_and_foreign_responses_are_not_good() {
    let pki = new_pki();
    let now = Timestamp::from_unix_seconds(NOW);
    let expired = response(
        &pki,
        good(),
        NOW - 3 * DAY,
        Some(NOW - DAY),
        &pki.ca_key,
        None,
    );
    assert!(matches!(
        status_for(&pki.leaf, &pki.ca, &expired, now),
        OcspStatus::Invalid { .. }
    ));
    let no_next = response(&pki, good(), NOW - 2 * DAY, None, &pki.ca_key, None);
    assert!(matches!(
        status_for(&pki.leaf, &pki.ca, &no_next, now),
        OcspStatus::Invalid { .. }
    ));
    let future = response(
        &pki,
        good(),
        NOW + DAY,
        Some(NOW + 2 * DAY),
        &pki.ca_key,
        None,
    );
    assert!(matches!(
        status_for(&pki.leaf, &pki.ca, &future, now),
        OcspStatus::Invalid { .. }
    ));
    let stranger = p384::ecdsa::SigningKey::random(&mut OsRng);
    let forged = response(&pki, good(), NOW - DAY, Some(NOW + DAY), &stranger, None);
    assert!(matches!(
        status_for(&pki.leaf, &pki.ca, &forged, now),
        OcspStatus::Invalid { .. }
    ));
    // A response about another certificate says nothing about this one.
    let other = new_pki();
    let theirs = response(
        &other,
        good(),
        NOW - DAY,
        Some(NOW + DAY),
        &other.ca_key,
        None,
    );
    assert_eq!(
        status_for(&pki.leaf, &pki.ca, &theirs, now),
        OcspStatus::NotChecked
    );
    // Garbage.
    assert!(matches!(
        status_for(&pki.leaf, &pki.ca, b"\x30\x00", now),
        OcspStatus::Invalid { .. }
    ));
    let mut flipped = response(&pki, good(), NOW - DAY, Some(NOW + DAY), &pki.ca_key, None);
    let last = flipped.len() - 1;
    flipped[last] ^= 1;
    assert_ne!(
        status_for(&pki.leaf, &pki.ca, &flipped, now),
        OcspStatus::Good
    );
}

#[test]
fn delegated_responders_need_the_ocsp_signing_purpose() {
    let pki = new_pki();
    let now = Timestamp::from_unix_seconds(NOW);
    let responder_key = p384::ecdsa::SigningKey::random(&mut OsRng);
    let eku = ext(
        ID_CE_EXT_KEY_USAGE,
        ExtendedKeyUsage(vec![ID_KP_OCSP_SIGNING]).to_der().unwrap(),
    );
    let delegated = cert(
        3,
        "CN=Test CA",
        "CN=Responder",
        &responder_key,
        &pki.ca_key,
        vec![eku],
    );
    let plain = cert(
        4,
        "CN=Test CA",
        "CN=Not a responder",
        &responder_key,
        &pki.ca_key,
        vec![],
    );
    let with = |der: &[u8]| {
        response(
            &pki,
            good(),
            NOW - DAY,
            Some(NOW + DAY),
            &responder_key,
            Some(vec![Certificate::from_der(der).unwrap()]),
        )
    };
    assert_eq!(
        status_for(&pki.leaf, &pki.ca, &with(&delegated), now),
        OcspStatus::Good
    );
    assert!(matches!(
        status_for(&pki.leaf, &pki.ca, &with(&plain), now),
        OcspStatus::Invalid { .. }
    ));
}

#[test]
fn no_responses_means_not_checked_and_no_problem() {
    let revocation = assess(&[], &[], &[], Timestamp::from_unix_seconds(NOW));
    assert_eq!(revocation.summary, "not_checked");
    assert_eq!(revocation.problems(), Ok(()));
    let revocation = assess(&[], &[], &[b"junk"], Timestamp::from_unix_seconds(NOW));
    assert_eq!(revocation.summary, "failed");
    let problems = revocation.problems().unwrap_err();
    assert!(
        matches!(problems.0.as_slice(), [RevocationProblem::Undecodable(_)]),
        "{problems:?}"
    );
}
