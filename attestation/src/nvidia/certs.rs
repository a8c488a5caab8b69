//! X.509 for the GPU: the device chain and the RIM signer chains, both ECDSA P-384 with
//! SHA-384, each anchored in an NVIDIA root pinned by SHA-256.
//!
//! Path building follows NVIDIA's local verifier: the last certificate the evidence carries
//! (its copy of the root) is dropped and the pinned root takes its place, so trust never comes
//! from the evidence. Each link is checked for name chaining, the issuer's CA constraints and
//! key usage, the ECDSA signature over the exact TBS bytes, and every certificate's validity
//! at the caller's time. Unknown critical extensions are refused.

use std::sync::OnceLock;

use base64::Engine as _;
use sha2::{Digest as _, Sha256};
use x509_cert::der::Decode as _;
use x509_cert::der::oid::ObjectIdentifier;
use x509_cert::ext::pkix::{BasicConstraints, KeyUsage};

use super::asn1::{self, Reader};
use super::error::CertError;
use crate::timestamp::Timestamp;

/// ecdsa-with-SHA384.
const ECDSA_SHA384: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.10045.4.3.3");
/// id-ecPublicKey.
const EC_PUBLIC_KEY: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.10045.2.1");
/// secp384r1.
const SECP384R1: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.132.0.34");
/// TCG DICE FWID extension on Hopper leaves; the FWID is its last 48 bytes.
const HOPPER_FWID: ObjectIdentifier = ObjectIdentifier::new_unwrap("2.23.133.5.4.1");
/// TCG DiceTcbInfo on Blackwell leaves; the FWID is `fwids[0].digest`.
const DICE_TCB_INFO: ObjectIdentifier = ObjectIdentifier::new_unwrap("2.23.133.5.4.1.1");

/// Extensions whose meaning this verifier handles or that carry no constraint it must
/// enforce; any other extension marked critical is refused.
const KNOWN_EXTENSIONS: [&str; 12] = [
    "2.5.29.19",         // basicConstraints
    "2.5.29.15",         // keyUsage
    "2.5.29.37",         // extKeyUsage
    "2.5.29.17",         // subjectAltName
    "2.5.29.14",         // subjectKeyIdentifier
    "2.5.29.35",         // authorityKeyIdentifier
    "2.5.29.31",         // cRLDistributionPoints
    "2.5.29.32",         // certificatePolicies
    "1.3.6.1.5.5.7.1.1", // authorityInfoAccess
    "2.23.133.5.4.1",    // TCG DICE FWID (Hopper)
    "2.23.133.5.4.1.1",  // TCG DiceTcbInfo (Blackwell)
    "2.23.133.5.4.4",    // TCG DICE UEID
];

/// One certificate, kept as DER and decoded.
#[derive(Debug, Clone)]
pub(crate) struct Cert {
    pub(crate) der: Vec<u8>,
    pub(crate) x509: x509_cert::Certificate,
}

impl Cert {
    pub(crate) fn from_der(der: Vec<u8>, position: usize) -> Result<Self, CertError> {
        let x509 = x509_cert::Certificate::from_der(&der).map_err(|e| CertError::Der {
            position,
            reason: e.to_string(),
        })?;
        Ok(Self { der, x509 })
    }

    /// The subject as a string (RFC 4514 order as `x509-cert` prints it).
    pub(crate) fn subject(&self) -> String {
        self.x509.tbs_certificate.subject.to_string()
    }

    /// The subject's common name, if any.
    pub(crate) fn common_name(&self) -> Option<String> {
        let cn = ObjectIdentifier::new_unwrap("2.5.4.3");
        self.x509
            .tbs_certificate
            .subject
            .0
            .iter()
            .flat_map(|rdn| rdn.0.iter())
            .find(|atv| atv.oid == cn)
            .and_then(|atv| {
                x509_cert::der::asn1::Utf8StringRef::try_from(&atv.value)
                    .map(|s| s.as_str().to_owned())
                    .ok()
                    .or_else(|| {
                        x509_cert::der::asn1::PrintableStringRef::try_from(&atv.value)
                            .map(|s| s.as_str().to_owned())
                            .ok()
                    })
            })
    }

    /// The raw SEC1 public key, after checking it is a P-384 key.
    pub(crate) fn p384_key(&self) -> Result<&[u8], String> {
        let spki = &self.x509.tbs_certificate.subject_public_key_info;
        let curve = spki
            .algorithm
            .parameters
            .as_ref()
            .and_then(|p| p.decode_as::<ObjectIdentifier>().ok());
        if spki.algorithm.oid != EC_PUBLIC_KEY || curve != Some(SECP384R1) {
            return Err(format!("{} does not hold a P-384 key", self.subject()));
        }
        spki.subject_public_key
            .as_bytes()
            .ok_or_else(|| format!("{}: public key is not whole bytes", self.subject()))
    }

    /// (notBefore, notAfter) in Unix seconds.
    pub(crate) fn validity(&self) -> (u64, u64) {
        let v = &self.x509.tbs_certificate.validity;
        (
            v.not_before.to_unix_duration().as_secs(),
            v.not_after.to_unix_duration().as_secs(),
        )
    }

    fn extension(&self, oid: &ObjectIdentifier) -> Option<&[u8]> {
        self.x509
            .tbs_certificate
            .extensions
            .as_ref()?
            .iter()
            .find(|e| &e.extn_id == oid)
            .map(|e| e.extn_value.as_bytes())
    }

    fn check_extensions(&self) -> Result<(), String> {
        let exts = self
            .x509
            .tbs_certificate
            .extensions
            .as_deref()
            .unwrap_or(&[]);
        for (i, e) in exts.iter().enumerate() {
            if exts.iter().skip(i + 1).any(|o| o.extn_id == e.extn_id) {
                return Err(format!(
                    "{}: extension {} repeated",
                    self.subject(),
                    e.extn_id
                ));
            }
            if e.critical && !KNOWN_EXTENSIONS.contains(&e.extn_id.to_string().as_str()) {
                return Err(format!(
                    "{}: unknown critical extension {}",
                    self.subject(),
                    e.extn_id
                ));
            }
        }
        Ok(())
    }

    fn basic_constraints(&self) -> Result<Option<BasicConstraints>, String> {
        self.extension(&ObjectIdentifier::new_unwrap("2.5.29.19"))
            .map(|v| {
                BasicConstraints::from_der(v)
                    .map_err(|e| format!("{}: basicConstraints: {e}", self.subject()))
            })
            .transpose()
    }

    fn key_usage(&self) -> Result<Option<KeyUsage>, String> {
        self.extension(&ObjectIdentifier::new_unwrap("2.5.29.15"))
            .map(|v| {
                KeyUsage::from_der(v).map_err(|e| format!("{}: keyUsage: {e}", self.subject()))
            })
            .transpose()
    }

    /// The TBS bytes exactly as signed, taken from the DER rather than re-encoded.
    pub(crate) fn tbs_bytes(&self) -> Result<&[u8], String> {
        let mut outer = Reader::new(&self.der);
        let body = outer.expect(asn1::SEQUENCE)?;
        Reader::new(body).raw_next()
    }

    /// The FWID of a GPU leaf: Hopper's FWID extension or Blackwell's DiceTcbInfo.
    pub(crate) fn fwid(&self) -> Result<Option<Vec<u8>>, String> {
        if let Some(value) = self.extension(&DICE_TCB_INFO) {
            return dice_tcb_info_fwid(value).map(Some);
        }
        if let Some(value) = self.extension(&HOPPER_FWID) {
            let start = value
                .len()
                .checked_sub(48)
                .ok_or("the FWID extension is shorter than 48 bytes")?;
            return Ok(value.get(start..).map(<[u8]>::to_vec));
        }
        Ok(None)
    }
}

/// `fwids[0].digest` of a DiceTcbInfo (TCG DICE Attestation Architecture, §6.1.1):
/// SEQUENCE { ..., fwids [6] IMPLICIT SEQUENCE OF SEQUENCE { hashAlg OID, digest OCTET STRING } }.
fn dice_tcb_info_fwid(value: &[u8]) -> Result<Vec<u8>, String> {
    let mut fields = Reader::new(Reader::new(value).expect(asn1::SEQUENCE)?);
    while !fields.is_empty() {
        let field = fields.next()?;
        if field.tag == 0xA6 {
            let mut fwids = Reader::new(field.value);
            let mut first = Reader::new(fwids.expect(asn1::SEQUENCE)?);
            let alg = first.expect(asn1::OID)?;
            let digest = first.expect(asn1::OCTET_STRING)?;
            if alg != asn1::SHA384_OID || digest.len() != 48 {
                return Err("DiceTcbInfo fwids[0] is not a SHA-384 digest".to_owned());
            }
            return Ok(digest.to_vec());
        }
    }
    Err("DiceTcbInfo has no fwids".to_owned())
}

/// Decodes every `CERTIFICATE` block of a PEM text, in order.
pub(crate) fn parse_pem_chain(pem: &[u8]) -> Result<Vec<Cert>, CertError> {
    const BEGIN: &str = "-----BEGIN CERTIFICATE-----";
    const END: &str = "-----END CERTIFICATE-----";
    let text = std::str::from_utf8(pem).map_err(|_| CertError::Pem("not UTF-8".to_owned()))?;
    let mut certs = Vec::new();
    let mut rest = text;
    while let Some(start) = rest.find(BEGIN) {
        let after = rest.get(start + BEGIN.len()..).unwrap_or_default();
        let end = after
            .find(END)
            .ok_or_else(|| CertError::Pem("BEGIN CERTIFICATE without END".to_owned()))?;
        let body: String = after
            .get(..end)
            .unwrap_or_default()
            .chars()
            .filter(|c| !c.is_ascii_whitespace())
            .collect();
        let der = base64::engine::general_purpose::STANDARD
            .decode(body)
            .map_err(|e| CertError::Pem(format!("certificate {}: {e}", certs.len())))?;
        certs.push(Cert::from_der(der, certs.len())?);
        rest = after.get(end + END.len()..).unwrap_or_default();
    }
    if certs.is_empty() {
        return Err(CertError::Pem("no CERTIFICATE block".to_owned()));
    }
    Ok(certs)
}

/// A pinned NVIDIA root.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NvidiaRoot {
    /// NVIDIA Device Identity CA: anchors every GPU device chain.
    DeviceIdentity,
    /// NVIDIA CoRIM signing Root CA: anchors the RIM signer chains.
    RimSigning,
}

/// DER SHA-256 of the NVIDIA Device Identity CA (nvtrust `verifier_device_root.pem`).
pub const DEVICE_ROOT_SHA256: &str =
    "102bf659d5419614c9d8e6aecebc80454eb26b1df6a769ac720b9a690b167b48";
/// DER SHA-256 of the NVIDIA CoRIM signing Root CA (nvtrust `verifier_RIM_root.pem`).
pub const RIM_ROOT_SHA256: &str =
    "12977b5115acb0381179279fffeb5a8c4d264971ebb32298023a465fa41df5d1";

const DEVICE_ROOT_PEM: &[u8] = include_bytes!("../../roots/nvidia/verifier_device_root.pem");
const RIM_ROOT_PEM: &[u8] = include_bytes!("../../roots/nvidia/verifier_RIM_root.pem");

fn load_root(pem: &[u8], fingerprint: &str) -> Result<Cert, String> {
    let mut certs = parse_pem_chain(pem).map_err(|e| format!("built-in root: {e}"))?;
    let root = certs.pop().ok_or("built-in root: empty")?;
    let actual = hex::encode(Sha256::digest(&root.der));
    if actual != fingerprint || !certs.is_empty() {
        return Err(format!(
            "built-in root fingerprint {actual} is not the pinned {fingerprint}"
        ));
    }
    verify_link(&root, &root).map_err(|e| format!("built-in root self-signature: {e}"))?;
    Ok(root)
}

/// The pinned root, loaded and self-checked once per process.
pub(crate) fn pinned(root: NvidiaRoot) -> Result<&'static Cert, String> {
    static DEVICE: OnceLock<Result<Cert, String>> = OnceLock::new();
    static RIM: OnceLock<Result<Cert, String>> = OnceLock::new();
    let cell = match root {
        NvidiaRoot::DeviceIdentity => {
            DEVICE.get_or_init(|| load_root(DEVICE_ROOT_PEM, DEVICE_ROOT_SHA256))
        }
        NvidiaRoot::RimSigning => RIM.get_or_init(|| load_root(RIM_ROOT_PEM, RIM_ROOT_SHA256)),
    };
    cell.as_ref().map_err(Clone::clone)
}

// Every NVIDIA signature (device chain, report, RIM XML-DSig, RIM chains, OCSP) is ECDSA
// P-384/SHA-384, and a cold verification of one GPU's evidence with its RIMs needs eleven. They
// are checked with AWS-LC (aws-lc-rs), whose P-384 is about 3.5 times ring's on this project's
// machine (BENCHMARKS.md, "Cold GPU verification"): ring's P-384 has no assembly field
// arithmetic, and with it the cold path alone took longer than the 5 ms issue 18 allows.

/// Verifies an ECDSA P-384/SHA-384 signature (DER-encoded, as in X.509) by `key`.
pub(crate) fn verify_der_signature(key: &[u8], message: &[u8], signature: &[u8]) -> bool {
    use aws_lc_rs::signature::{ECDSA_P384_SHA384_ASN1, UnparsedPublicKey};
    is_uncompressed_p384(key)
        && UnparsedPublicKey::new(&ECDSA_P384_SHA384_ASN1, key)
            .verify(message, signature)
            .is_ok()
}

/// Verifies a raw r ‖ s ECDSA P-384/SHA-384 signature by `key`.
pub(crate) fn verify_fixed_signature(key: &[u8], message: &[u8], signature: &[u8]) -> bool {
    use aws_lc_rs::signature::{ECDSA_P384_SHA384_FIXED, UnparsedPublicKey};
    is_uncompressed_p384(key)
        && UnparsedPublicKey::new(&ECDSA_P384_SHA384_FIXED, key)
            .verify(message, signature)
            .is_ok()
}

/// Whether `key` is an uncompressed P-384 point encoding (0x04 ‖ x ‖ y), the only form
/// NVIDIA's certificates use and the only one ring accepted: AWS-LC also parses compressed
/// points, which no NVIDIA certificate has, so they are refused here as before.
fn is_uncompressed_p384(key: &[u8]) -> bool {
    key.len() == 97 && key.first() == Some(&0x04)
}

/// Most remembered verified signatures (certificate links) before the memo starts over.
const MAX_VERIFIED_LINKS: usize = 4096;

/// Signatures on certificates that have verified in this process, keyed by SHA-256 over both
/// DER encodings. A signature check is a pure function of the two certificates, so
/// remembering a success changes no verdict; it spares the ECDSA work for NVIDIA's
/// intermediates, which every GPU and RIM of a product shares. Names, constraints and
/// validity are still checked every time.
fn verified_links()
-> Result<std::sync::MutexGuard<'static, std::collections::HashSet<[u8; 32]>>, ()> {
    static LINKS: OnceLock<std::sync::Mutex<std::collections::HashSet<[u8; 32]>>> = OnceLock::new();
    LINKS.get_or_init(Default::default).lock().map_err(|_| ())
}

fn link_key(issuer: &Cert, subject: &Cert) -> [u8; 32] {
    let mut hash = Sha256::new();
    hash.update((issuer.der.len() as u64).to_be_bytes());
    hash.update(&issuer.der);
    hash.update(&subject.der);
    hash.finalize().into()
}

/// Forgets every remembered certificate signature, so that the next verification does all
/// the ECDSA work again (for benchmarks of the cold path).
#[doc(hidden)]
pub fn forget_verified_links() {
    if let Ok(mut links) = verified_links() {
        links.clear();
    }
}

/// Checks that `issuer` issued `subject`: names chain, the signature verifies.
pub(crate) fn verify_link(issuer: &Cert, subject: &Cert) -> Result<(), String> {
    if subject.x509.tbs_certificate.issuer != issuer.x509.tbs_certificate.subject {
        return Err(format!(
            "{} names issuer {}, not {}",
            subject.subject(),
            subject.x509.tbs_certificate.issuer,
            issuer.subject()
        ));
    }
    if subject.x509.signature_algorithm.oid != ECDSA_SHA384
        || subject.x509.tbs_certificate.signature.oid != ECDSA_SHA384
    {
        return Err(format!(
            "{} is signed with {}, not ecdsa-with-SHA384",
            subject.subject(),
            subject.x509.signature_algorithm.oid
        ));
    }
    if subject.x509.signature_algorithm.parameters.is_some() {
        return Err(format!(
            "{}: ECDSA signature algorithm with parameters",
            subject.subject()
        ));
    }
    let key = issuer.p384_key()?;
    let signature = subject
        .x509
        .signature
        .as_bytes()
        .ok_or_else(|| format!("{}: signature is not whole bytes", subject.subject()))?;
    let memo = link_key(issuer, subject);
    if verified_links().is_ok_and(|links| links.contains(&memo)) {
        return Ok(());
    }
    if verify_der_signature(key, subject.tbs_bytes()?, signature) {
        if let Ok(mut links) = verified_links() {
            if links.len() >= MAX_VERIFIED_LINKS {
                links.clear();
            }
            links.insert(memo);
        }
        Ok(())
    } else {
        Err(format!(
            "the signature on {} does not verify under {}",
            subject.subject(),
            issuer.subject()
        ))
    }
}

fn check_validity(cert: &Cert, now: Timestamp) -> Result<(), String> {
    let (not_before, not_after) = cert.validity();
    let now_s = now.unix_seconds();
    if not_before <= now_s && now_s <= not_after {
        Ok(())
    } else {
        Err(format!(
            "{} is valid {} to {}, not at {now}",
            cert.subject(),
            Timestamp::from_unix_seconds(not_before),
            Timestamp::from_unix_seconds(not_after)
        ))
    }
}

/// The role a certificate plays in a path, for the checks that differ.
fn check_ca(cert: &Cert, cas_below: usize) -> Result<(), String> {
    let bc = cert.basic_constraints()?.ok_or_else(|| {
        format!(
            "{} issues certificates but has no basicConstraints",
            cert.subject()
        )
    })?;
    if !bc.ca {
        return Err(format!(
            "{} is not a CA (basicConstraints cA false)",
            cert.subject()
        ));
    }
    if let Some(limit) = bc.path_len_constraint
        && cas_below > usize::from(limit)
    {
        return Err(format!(
            "{} allows {limit} CA(s) below it, the path has {cas_below}",
            cert.subject()
        ));
    }
    if let Some(ku) = cert.key_usage()?
        && !ku.key_cert_sign()
    {
        return Err(format!(
            "{} may not sign certificates (keyUsage)",
            cert.subject()
        ));
    }
    Ok(())
}

/// The outcome of a path check.
#[derive(Debug)]
pub(crate) struct Path {
    /// Whether the certificate the evidence carried in the root's place equals the pinned root.
    pub(crate) carried_root_is_pinned: bool,
}

/// Verifies `chain` (leaf first, the evidence's copy of the root last) up to `root`.
///
/// `expected_len`, when given, is the number of certificates the chain must have (5 for a
/// GPU device chain, as nvtrust requires).
pub(crate) fn verify_chain<'a>(
    chain: &'a [Cert],
    root: &'a Cert,
    now: Timestamp,
    expected_len: Option<usize>,
) -> Result<Path, String> {
    if let Some(n) = expected_len
        && chain.len() != n
    {
        return Err(format!(
            "the chain has {} certificates, expected {n}",
            chain.len()
        ));
    }
    let (carried_root, below_root) = chain.split_last().ok_or("the certificate chain is empty")?;
    if below_root.is_empty() {
        return Err("the chain holds no certificate below the root".to_owned());
    }
    let mut path: Vec<&Cert> = below_root.iter().collect();
    path.push(root);
    for cert in &path {
        cert.check_extensions()?;
        check_validity(cert, now)?;
    }
    for (i, pair) in path.windows(2).enumerate() {
        let [subject, issuer] = pair else {
            continue;
        };
        // CAs strictly between `issuer` and the leaf.
        check_ca(issuer, i)?;
        verify_link(issuer, subject)?;
    }
    if let Some(leaf) = path.first() {
        if let Some(ku) = leaf.key_usage()?
            && !ku.digital_signature()
        {
            return Err(format!("{} may not sign (keyUsage)", leaf.subject()));
        }
        leaf.p384_key()?;
    }
    Ok(Path {
        carried_root_is_pinned: carried_root.der == root.der,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The genuine Hopper report verifies under its leaf's key; the same key compressed, or
    /// the signature in the other encoding, does not.
    #[test]
    fn p384_signatures_verify_only_in_their_form() {
        let report: &[u8] =
            include_bytes!("../../tests/data/nvidia/hopper-h100-545.00-nvtrust/report.bin");
        let chain = include_str!("../../tests/data/nvidia/hopper-h100-545.00-nvtrust/chain.pem");
        let chain = parse_pem_chain(chain.as_bytes()).unwrap();
        let key = chain[0].p384_key().unwrap();
        let (signed, signature) = report.split_at(report.len() - 96);
        assert!(verify_fixed_signature(key, signed, signature));
        assert!(!verify_fixed_signature(key, &signed[1..], signature));
        let mut compressed = vec![0x02 | (key[96] & 1)];
        compressed.extend_from_slice(&key[1..49]);
        assert!(!verify_fixed_signature(&compressed, signed, signature));
        assert!(!verify_der_signature(key, signed, signature));
    }

    #[test]
    fn pinned_roots_load() {
        let device = pinned(NvidiaRoot::DeviceIdentity).unwrap();
        assert_eq!(
            device.common_name().as_deref(),
            Some("NVIDIA Device Identity CA")
        );
        let rim = pinned(NvidiaRoot::RimSigning).unwrap();
        assert_eq!(
            rim.common_name().as_deref(),
            Some("NVIDIA CoRIM signing Root CA")
        );
    }

    #[test]
    fn pem_without_certificates_is_refused() {
        assert!(parse_pem_chain(b"hello").is_err());
        assert!(parse_pem_chain(b"-----BEGIN CERTIFICATE-----\nAAAA").is_err());
        assert!(
            parse_pem_chain(b"-----BEGIN CERTIFICATE-----\n!!\n-----END CERTIFICATE-----").is_err()
        );
    }

    #[test]
    fn dice_tcb_info_needs_fwids() {
        // SEQUENCE { [0] "NV" }
        assert!(dice_tcb_info_fwid(&[0x30, 0x04, 0x80, 0x02, b'N', b'V']).is_err());
        assert!(dice_tcb_info_fwid(&[0x04, 0x00]).is_err());
    }
}
