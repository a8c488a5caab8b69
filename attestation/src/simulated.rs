//! The simulated TEE: SNP-format evidence signed by a chain generated in memory.
//!
//! For development machines without SEV-SNP or TDX. The chain mirrors AMD's: an RSA ARK
//! (self-signed) signs an RSA ASK, which signs an ECDSA P-384 VCEK carrying AMD's TCB and hwID
//! extensions, all with RSA-PSS/SHA-384; the VCEK signs a version 3 report. The verifier runs
//! the same checks as for genuine SNP evidence, but its anchor is the ARK the evidence
//! carries, so **simulated evidence proves nothing about hardware**. A policy accepts it only
//! with `allow_simulated = true`, and the verdict says `tee: "simulated"`.
//!
//! Deviations from AMD, on purpose:
//! - The ARK and ASK are RSA-2048, not RSA-4096: pure-Rust RSA key generation of 4096 bits
//!   takes tens of seconds in debug builds. Generate once per process with
//!   [`SimulatedTee::shared`], or once per run and keep the instance.
//! - Subjects say `Simulated`, and the VCEK `productName` is `Simulated`, so that no tool can
//!   mistake the chain for AMD's.

use std::fmt;
use std::str::FromStr as _;
use std::sync::OnceLock;
use std::time::Duration;

use p384::ecdsa::signature::Signer as _;
use rand_core::{CryptoRngCore, OsRng};
use rsa::pkcs8::EncodePublicKey as _;
use rsa::signature::{RandomizedSigner as _, SignatureEncoding as _};
use sha2::{Digest as _, Sha256, Sha384};
use x509_cert::der::asn1::{BitString, Ia5String, OctetString};
use x509_cert::der::{Decode as _, Encode as _};
use x509_cert::ext::Extension;
use x509_cert::ext::pkix::BasicConstraints;
use x509_cert::name::Name;
use x509_cert::serial_number::SerialNumber;
use x509_cert::spki::SubjectPublicKeyInfoOwned;
use x509_cert::time::{Time, Validity};
use x509_cert::{Certificate, TbsCertificate, Version};

use crate::error::Error;
use crate::evidence::{CertTableEntry, CertType, Evidence, SNP_REPORT_LEN, SnpEvidence};
use crate::snp::{SIGNED_LEN, encode_spl, oids};
use crate::timestamp::Timestamp;

/// RSA modulus size of the simulated ARK and ASK (AMD uses 4096; see the module docs).
pub const SIMULATED_RSA_BITS: usize = 2048;

/// The TCB the simulated VCEK endorses and the report claims (Milan layout).
const TCB: SimTcb = SimTcb {
    bootloader: 4,
    tee: 0,
    snp: 22,
    microcode: 213,
};

/// Guest policy: SMT allowed, reserved bit 17 set, no debug, no migration agent.
pub const GUEST_POLICY: u64 = 0x3_0000;

/// Default certificate validity: 2020-01-01T00:00:00Z to 2100-01-01T00:00:00Z, wide so that
/// tests pinned at any plausible time accept it.
const DEFAULT_VALIDITY: (u64, u64) = (1_577_836_800, 4_102_444_800);

#[derive(Clone, Copy)]
struct SimTcb {
    bootloader: u8,
    tee: u8,
    snp: u8,
    microcode: u8,
}

impl SimTcb {
    /// The Milan/Genoa `TCB_VERSION` layout (SEV-SNP ABI, Table 3).
    fn to_bytes(self) -> [u8; 8] {
        [
            self.bootloader,
            self.tee,
            0,
            0,
            0,
            0,
            self.snp,
            self.microcode,
        ]
    }
}

/// A simulated SNP platform: its certificate chain and the VCEK private key.
///
/// Not `Clone` or `Debug`-printable beyond fingerprints, since it holds signing keys.
pub struct SimulatedTee {
    ark_der: Vec<u8>,
    ask_der: Vec<u8>,
    vcek_der: Vec<u8>,
    vcek_key: p384::ecdsa::SigningKey,
    chip_id: [u8; 64],
}

impl fmt::Debug for SimulatedTee {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SimulatedTee")
            .field("ark_sha256", &hex::encode(self.ark_sha256()))
            .finish_non_exhaustive()
    }
}

fn time_at(seconds: u64) -> Result<Time, Error> {
    let duration = Duration::from_secs(seconds);
    // RFC 5280: UTCTime through 2049, GeneralizedTime from 2050.
    if seconds < 2_524_608_000 {
        x509_cert::der::asn1::UtcTime::from_unix_duration(duration).map(Time::UtcTime)
    } else {
        x509_cert::der::asn1::GeneralizedTime::from_unix_duration(duration).map(Time::GeneralTime)
    }
    .map_err(Error::simulated)
}

fn extension(
    oid: x509_cert::der::oid::ObjectIdentifier,
    critical: bool,
    value: Vec<u8>,
) -> Result<Extension, Error> {
    Ok(Extension {
        extn_id: oid,
        critical,
        extn_value: OctetString::new(value).map_err(Error::simulated)?,
    })
}

/// Signs `tbs` with `issuer_key` (RSA-PSS, SHA-384, 48-byte salt, as AMD does).
fn sign_certificate(
    mut tbs: TbsCertificate,
    issuer_key: &rsa::RsaPrivateKey,
    rng: &mut impl CryptoRngCore,
) -> Result<Vec<u8>, Error> {
    let algorithm =
        rsa::pss::get_default_pss_signature_algo_id::<Sha384>().map_err(Error::simulated)?;
    tbs.signature = algorithm.clone();
    let message = tbs.to_der().map_err(Error::simulated)?;
    let signer = rsa::pss::SigningKey::<Sha384>::new(issuer_key.clone());
    let signature = signer
        .try_sign_with_rng(rng, &message)
        .map_err(Error::simulated)?
        .to_vec();
    Certificate {
        tbs_certificate: tbs,
        signature_algorithm: algorithm,
        signature: BitString::from_bytes(&signature).map_err(Error::simulated)?,
    }
    .to_der()
    .map_err(Error::simulated)
}

struct CertSpec<'a> {
    serial: u8,
    issuer: &'a str,
    subject: &'a str,
    validity: Validity,
    spki: SubjectPublicKeyInfoOwned,
    extensions: Vec<Extension>,
}

fn build_certificate(
    spec: CertSpec<'_>,
    issuer_key: &rsa::RsaPrivateKey,
    rng: &mut impl CryptoRngCore,
) -> Result<Vec<u8>, Error> {
    let tbs = TbsCertificate {
        version: Version::V3,
        serial_number: SerialNumber::new(&[spec.serial]).map_err(Error::simulated)?,
        // Replaced by `sign_certificate` with the PSS parameters.
        signature: rsa::pss::get_default_pss_signature_algo_id::<Sha384>()
            .map_err(Error::simulated)?,
        issuer: Name::from_str(spec.issuer).map_err(Error::simulated)?,
        validity: spec.validity,
        subject: Name::from_str(spec.subject).map_err(Error::simulated)?,
        subject_public_key_info: spec.spki,
        issuer_unique_id: None,
        subject_unique_id: None,
        extensions: Some(spec.extensions),
    };
    sign_certificate(tbs, issuer_key, rng)
}

fn ca_extension() -> Result<Extension, Error> {
    let constraints = BasicConstraints {
        ca: true,
        path_len_constraint: None,
    }
    .to_der()
    .map_err(Error::simulated)?;
    extension(
        x509_cert::der::oid::db::rfc5280::ID_CE_BASIC_CONSTRAINTS,
        true,
        constraints,
    )
}

fn rsa_spki(key: &rsa::RsaPrivateKey) -> Result<SubjectPublicKeyInfoOwned, Error> {
    let der = key
        .to_public_key()
        .to_public_key_der()
        .map_err(Error::simulated)?;
    SubjectPublicKeyInfoOwned::from_der(der.as_bytes()).map_err(Error::simulated)
}

const ARK_NAME: &str = "CN=ARK-Simulated,OU=Simulated TEE,O=Confidant";
const ASK_NAME: &str = "CN=SEV-Simulated,OU=Simulated TEE,O=Confidant";
const VCEK_NAME: &str = "CN=SEV-VCEK,OU=Simulated TEE,O=Confidant";

impl SimulatedTee {
    /// Generates a fresh chain with the OS random number generator and the default validity
    /// (2020-01-01 to 2100-01-01). Slow in debug builds; see [`SimulatedTee::shared`].
    pub fn generate() -> Result<Self, Error> {
        let (from, until) = DEFAULT_VALIDITY;
        Self::generate_with(
            &mut OsRng,
            Timestamp::from_unix_seconds(from),
            Timestamp::from_unix_seconds(until),
        )
    }

    /// One chain per process, generated on first use and shared afterwards, so that tests
    /// and a long-running server pay for RSA key generation once.
    pub fn shared() -> Result<&'static Self, Error> {
        static SHARED: OnceLock<Result<SimulatedTee, String>> = OnceLock::new();
        SHARED
            .get_or_init(|| Self::generate().map_err(|e| e.to_string()))
            .as_ref()
            .map_err(|reason| Error::Simulated {
                reason: reason.clone(),
            })
    }

    /// Generates a chain with `rng`, every certificate valid from `not_before` to
    /// `not_after`.
    pub fn generate_with(
        rng: &mut impl CryptoRngCore,
        not_before: Timestamp,
        not_after: Timestamp,
    ) -> Result<Self, Error> {
        let validity = Validity {
            not_before: time_at(not_before.unix_seconds())?,
            not_after: time_at(not_after.unix_seconds())?,
        };
        let ark_key = rsa::RsaPrivateKey::new(rng, SIMULATED_RSA_BITS).map_err(Error::simulated)?;
        let ask_key = rsa::RsaPrivateKey::new(rng, SIMULATED_RSA_BITS).map_err(Error::simulated)?;
        let vcek_key = p384::ecdsa::SigningKey::random(rng);
        let mut chip_id = [0u8; 64];
        rng.fill_bytes(&mut chip_id);
        // A v2-style parser guesses Turin from a chip_id whose tail is zero; keep it non-zero.
        chip_id[63] |= 1;

        let ark_der = build_certificate(
            CertSpec {
                serial: 1,
                issuer: ARK_NAME,
                subject: ARK_NAME,
                validity,
                spki: rsa_spki(&ark_key)?,
                extensions: vec![ca_extension()?],
            },
            &ark_key,
            rng,
        )?;
        let ask_der = build_certificate(
            CertSpec {
                serial: 2,
                issuer: ARK_NAME,
                subject: ASK_NAME,
                validity,
                spki: rsa_spki(&ask_key)?,
                extensions: vec![ca_extension()?],
            },
            &ark_key,
            rng,
        )?;
        let vcek_public = vcek_key
            .verifying_key()
            .to_public_key_der()
            .map_err(Error::simulated)?;
        let product_name = Ia5String::new("Simulated")
            .and_then(|s| s.to_der())
            .map_err(Error::simulated)?;
        let hw_id = OctetString::new(chip_id.to_vec())
            .and_then(|o| o.to_der())
            .map_err(Error::simulated)?;
        let vcek_extensions = vec![
            extension(
                oids::STRUCT_VERSION,
                false,
                encode_spl(0).map_err(Error::simulated)?,
            )?,
            extension(oids::PRODUCT_NAME, false, product_name)?,
            extension(
                oids::BL_SPL,
                false,
                encode_spl(TCB.bootloader).map_err(Error::simulated)?,
            )?,
            extension(
                oids::TEE_SPL,
                false,
                encode_spl(TCB.tee).map_err(Error::simulated)?,
            )?,
            extension(
                oids::SNP_SPL,
                false,
                encode_spl(TCB.snp).map_err(Error::simulated)?,
            )?,
            extension(
                oids::UCODE_SPL,
                false,
                encode_spl(TCB.microcode).map_err(Error::simulated)?,
            )?,
            extension(oids::HW_ID, false, hw_id)?,
        ];
        let vcek_der = build_certificate(
            CertSpec {
                serial: 3,
                issuer: ASK_NAME,
                subject: VCEK_NAME,
                validity,
                spki: SubjectPublicKeyInfoOwned::from_der(vcek_public.as_bytes())
                    .map_err(Error::simulated)?,
                extensions: vcek_extensions,
            },
            &ask_key,
            rng,
        )?;
        Ok(Self {
            ark_der,
            ask_der,
            vcek_der,
            vcek_key,
            chip_id,
        })
    }

    /// DER SHA-256 of the simulated ARK, for `simulated_ark_sha256` in a policy.
    pub fn ark_sha256(&self) -> [u8; 32] {
        Sha256::digest(&self.ark_der).into()
    }

    /// The VCEK certificate (DER).
    pub fn vcek_der(&self) -> &[u8] {
        &self.vcek_der
    }

    /// Produces a signed report binding `report_data` and `measurement`, wrapped as
    /// [`Evidence::Simulated`] with the VCEK, ASK and ARK.
    pub fn attest(
        &self,
        report_data: &[u8; 64],
        measurement: &[u8; 48],
    ) -> Result<Evidence, Error> {
        let report = self.sign_report(report_data, measurement)?;
        Ok(Evidence::Simulated(SnpEvidence::new(
            report,
            vec![
                CertTableEntry::new(CertType::Vcek, self.vcek_der.clone()),
                CertTableEntry::new(CertType::Ask, self.ask_der.clone()),
                CertTableEntry::new(CertType::Ark, self.ark_der.clone()),
            ],
        )))
    }

    /// Like [`SimulatedTee::attest`], with another SNP guest policy (SEV-SNP ABI, Table 9),
    /// e.g. with the DEBUG bit (19) set, so that verifiers' refusals can be tested.
    pub fn attest_with_guest_policy(
        &self,
        report_data: &[u8; 64],
        measurement: &[u8; 48],
        guest_policy: u64,
    ) -> Result<Evidence, Error> {
        let report = self.sign_report_with_guest_policy(report_data, measurement, guest_policy)?;
        Ok(Evidence::Simulated(SnpEvidence::new(
            report,
            vec![
                CertTableEntry::new(CertType::Vcek, self.vcek_der.clone()),
                CertTableEntry::new(CertType::Ask, self.ask_der.clone()),
                CertTableEntry::new(CertType::Ark, self.ark_der.clone()),
            ],
        )))
    }

    /// Produces the raw 1184-byte signed report (SEV-SNP ABI, Table 22, version 3).
    pub fn sign_report(
        &self,
        report_data: &[u8; 64],
        measurement: &[u8; 48],
    ) -> Result<Vec<u8>, Error> {
        self.sign_report_with_guest_policy(report_data, measurement, GUEST_POLICY)
    }

    /// [`SimulatedTee::sign_report`] with another SNP guest policy.
    pub fn sign_report_with_guest_policy(
        &self,
        report_data: &[u8; 64],
        measurement: &[u8; 48],
        guest_policy: u64,
    ) -> Result<Vec<u8>, Error> {
        let mut report = vec![0u8; SNP_REPORT_LEN];
        let tcb = TCB.to_bytes();
        let mut put = |offset: usize, bytes: &[u8]| -> Result<(), Error> {
            report
                .get_mut(offset..offset + bytes.len())
                .ok_or_else(|| Error::simulated("report field out of range"))?
                .copy_from_slice(bytes);
            Ok(())
        };
        put(0x00, &3u32.to_le_bytes())?; // VERSION
        put(0x08, &guest_policy.to_le_bytes())?; // POLICY
        put(0x34, &1u32.to_le_bytes())?; // SIGNATURE_ALGO: ECDSA P-384 with SHA-384
        put(0x38, &tcb)?; // CURRENT_TCB
        put(0x50, report_data)?; // REPORT_DATA
        put(0x90, measurement)?; // MEASUREMENT
        put(0x140, &Sha256::digest(measurement))?; // REPORT_ID: stable per measurement
        put(0x160, &[0xFF; 32])?; // REPORT_ID_MA: no migration agent
        put(0x180, &tcb)?; // REPORTED_TCB
        put(0x188, &[0x19, 0x01, 0x01])?; // CPUID family, model, stepping (Milan-like)
        put(0x1A0, &self.chip_id)?; // CHIP_ID
        put(0x1E0, &tcb)?; // COMMITTED_TCB
        put(0x1E8, &[0, 55, 1])?; // CURRENT_BUILD, _MINOR, _MAJOR
        put(0x1EC, &[0, 55, 1])?; // COMMITTED_BUILD, _MINOR, _MAJOR
        put(0x1F0, &tcb)?; // LAUNCH_TCB

        let signed = report
            .get(..SIGNED_LEN)
            .ok_or_else(|| Error::simulated("report shorter than its signed part"))?;
        let signature: p384::ecdsa::Signature = self.vcek_key.sign(signed);
        let (r, s) = signature.split_bytes();
        // AMD stores R and S little-endian in 72-byte fields.
        let mut r_le = r.to_vec();
        r_le.reverse();
        let mut s_le = s.to_vec();
        s_le.reverse();
        let mut put = |offset: usize, bytes: &[u8]| -> Result<(), Error> {
            report
                .get_mut(offset..offset + bytes.len())
                .ok_or_else(|| Error::simulated("signature out of range"))?
                .copy_from_slice(bytes);
            Ok(())
        };
        put(0x2A0, &r_le)?;
        put(0x2E8, &s_le)?;
        Ok(report)
    }
}
