//! NVIDIA Reference Integrity Manifests: ISO/IEC 19770-2 SWID tags (`.swidtag`) with golden
//! measurements, signed with an enveloped XML-DSig.
//!
//! The signature is checked in the one form NVIDIA produces, and anything else is refused
//! rather than interpreted: exactly one `Signature`, a child of the root; one `Reference` with
//! `URI=""` (the whole document); the transforms enveloped-signature then Canonical XML
//! 1.1 (or 1.0, identical here); SHA-384 digest; ECDSA P-384/SHA-384 signature as raw
//! r ‖ s; the signer chain in `KeyInfo/X509Data`, leaf first. Because the reference covers
//! the whole document, every value read from it (versions, product, golden measurements) is
//! covered by the signature; the certificates inside the `Signature` are not, and are judged
//! by the chain check instead.

use base64::Engine as _;
use roxmltree::Node;
use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha384};

use super::c14n;
use super::certs::{Cert, verify_fixed_signature};
use super::error::RimError;

const SWID_NS: &str = "http://standards.iso.org/iso/19770/-2/2015/schema.xsd";
const DSIG_NS: &str = "http://www.w3.org/2000/09/xmldsig#";
const XML_NS: &str = "http://www.w3.org/XML/1998/namespace";
/// Namespace of the `HashN` attributes on a `Resource`.
const SHA384_NS: &str = "http://www.w3.org/2001/04/xmlenc#sha384";
const C14N_11: &str = "http://www.w3.org/2006/12/xml-c14n11";
const C14N_10: &str = "http://www.w3.org/TR/2001/REC-xml-c14n-20010315";
const ENVELOPED: &str = "http://www.w3.org/2000/09/xmldsig#enveloped-signature";
const ECDSA_SHA384: &str = "http://www.w3.org/2001/04/xmldsig-more#ecdsa-sha384";
const SHA384_DIGESTS: [&str; 2] = [
    "http://www.w3.org/2001/04/xmldsig-more#sha384",
    "http://www.w3.org/2001/04/xmlenc#sha384",
];
/// Largest RIM accepted: genuine ones are about 20 KB.
pub const MAX_RIM_LEN: usize = 4 << 20;

/// Which RIM: the driver's or the VBIOS's.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RimKind {
    /// The driver RIM (`colloquialVersion` is the driver version, `545.00`).
    Driver,
    /// The VBIOS RIM (`colloquialVersion` is the VBIOS version, `96.00.5E.00.01`).
    Vbios,
}

impl RimKind {
    /// `driver` or `vbios`, as in the check names.
    pub fn name(self) -> &'static str {
        match self {
            Self::Driver => "driver",
            Self::Vbios => "vbios",
        }
    }

    /// The kind a `colloquialVersion` implies: a VBIOS version is five dot-separated pairs of
    /// hex digits; anything else is a driver version.
    pub fn from_version(version: &str) -> Self {
        let parts: Vec<&str> = version.split('.').collect();
        if parts.len() == 5
            && parts
                .iter()
                .all(|p| p.len() == 2 && p.bytes().all(|b| b.is_ascii_hexdigit()))
        {
            Self::Vbios
        } else {
            Self::Driver
        }
    }
}

/// One golden measurement of a RIM (`Payload/Resource type="Measurement"`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GoldenMeasurement {
    /// RIM index, 0-based (SPDM index − 1).
    pub index: u32,
    /// Whether it is compared at all.
    pub active: bool,
    /// Expected size in bytes.
    pub size: usize,
    /// Accepted values (one of them must match), hex in JSON.
    pub alternatives: Vec<String>,
}

/// What a RIM says, read from the signed document.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct RimContent {
    /// `SoftwareIdentity/@name` (`GH100`).
    pub name: String,
    /// `SoftwareIdentity/@tagId`.
    pub tag_id: String,
    /// `Meta/@colloquialVersion`.
    pub colloquial_version: String,
    /// `Meta/@product`.
    pub product: String,
    /// Kind, from the version's form.
    pub kind: RimKind,
    /// Every measurement resource.
    pub measurements: Vec<GoldenMeasurement>,
}

impl RimContent {
    /// The active golden measurements with their decoded alternatives.
    pub(crate) fn active(&self) -> impl Iterator<Item = (u32, usize, Vec<Vec<u8>>)> + '_ {
        self.measurements.iter().filter(|m| m.active).map(|m| {
            let values = m
                .alternatives
                .iter()
                .filter_map(|h| hex::decode(h).ok())
                .collect();
            (m.index, m.size, values)
        })
    }
}

/// Why a RIM's XML signature did not verify (the RIM itself was read).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RimSignatureError {
    /// The canonical document does not hash to the signed DigestValue.
    #[error("the document's SHA-384 digest is not the signed DigestValue")]
    Digest,
    /// The KeyInfo certificates could not be read.
    #[error("no signer certificate: {0}")]
    Certificates(String),
    /// KeyInfo holds no certificate.
    #[error("no signer certificate")]
    NoCertificate,
    /// The first certificate's key is not a P-384 key.
    #[error("{0}")]
    SignerKey(String),
    /// The SignedInfo signature does not verify.
    #[error("the SignedInfo signature does not verify under the first KeyInfo certificate")]
    Signature,
}

/// A RIM read and its signature checked (the chain is checked by the caller).
#[derive(Debug, Clone)]
pub(crate) struct RimAppraisal {
    pub(crate) content: RimContent,
    /// `Ok` when the digest and the signature verify under the first embedded certificate.
    pub(crate) signature: Result<(), RimSignatureError>,
    /// The embedded certificates, leaf first, or why they could not be read.
    pub(crate) certs: Result<Vec<Cert>, String>,
}

fn structure(msg: impl Into<String>) -> RimError {
    RimError::Structure(msg.into())
}

fn form(msg: impl Into<String>) -> RimError {
    RimError::SignatureForm(msg.into())
}

fn element_children<'a, 'i>(node: Node<'a, 'i>) -> impl Iterator<Item = Node<'a, 'i>> {
    node.children().filter(Node::is_element)
}

/// The only child element named `(ns, name)`.
fn only_child<'a, 'i>(node: Node<'a, 'i>, ns: &str, name: &str) -> Result<Node<'a, 'i>, RimError> {
    let mut found = element_children(node).filter(|c| c.has_tag_name((ns, name)));
    match (found.next(), found.next()) {
        (Some(one), None) => Ok(one),
        (None, _) => Err(structure(format!("no {name} element"))),
        (Some(_), Some(_)) => Err(structure(format!("more than one {name} element"))),
    }
}

fn attribute<'a>(node: Node<'a, '_>, name: &str) -> Result<&'a str, RimError> {
    node.attribute(name).ok_or_else(|| {
        structure(format!(
            "{} has no {name} attribute",
            node.tag_name().name()
        ))
    })
}

fn base64(text: &str, what: &str) -> Result<Vec<u8>, RimError> {
    let compact: String = text.chars().filter(|c| !c.is_ascii_whitespace()).collect();
    base64::engine::general_purpose::STANDARD
        .decode(compact)
        .map_err(|e| form(format!("{what}: {e}")))
}

/// The element children of `node`, which must be exactly `names` (DSIG namespace) in order.
fn exact_children<'a, 'i, const N: usize>(
    node: Node<'a, 'i>,
    names: [&str; N],
) -> Result<[Node<'a, 'i>; N], RimError> {
    let children: Vec<Node<'a, 'i>> = element_children(node).collect();
    let matches = children.len() == N
        && children
            .iter()
            .zip(names.iter())
            .all(|(c, n)| c.has_tag_name((DSIG_NS, *n)));
    if !matches {
        return Err(form(format!(
            "{} must hold exactly {names:?}",
            node.tag_name().name()
        )));
    }
    children
        .try_into()
        .map_err(|_| form(format!("{} has the wrong children", node.tag_name().name())))
}

fn algorithm<'a>(node: Node<'a, '_>) -> Result<&'a str, RimError> {
    node.attribute("Algorithm")
        .ok_or_else(|| form(format!("{} has no Algorithm", node.tag_name().name())))
}

fn no_xml_attributes(node: Node<'_, '_>) -> Result<(), RimError> {
    if node.attributes().any(|a| a.namespace() == Some(XML_NS)) {
        return Err(form(format!(
            "xml:* attributes on {} are not supported",
            node.tag_name().name()
        )));
    }
    Ok(())
}

fn parse_measurement(resource: Node<'_, '_>) -> Result<GoldenMeasurement, RimError> {
    let index: u32 = attribute(resource, "index")?
        .parse()
        .map_err(|_| structure("Resource index is not a number"))?;
    let active = match attribute(resource, "active")? {
        a if a.eq_ignore_ascii_case("true") => true,
        a if a.eq_ignore_ascii_case("false") => false,
        other => return Err(structure(format!("Resource {index}: active={other:?}"))),
    };
    let count: usize = attribute(resource, "alternatives")?
        .parse()
        .map_err(|_| structure(format!("Resource {index}: alternatives is not a number")))?;
    let size: usize = attribute(resource, "size")?
        .parse()
        .map_err(|_| structure(format!("Resource {index}: size is not a number")))?;
    let mut alternatives = Vec::new();
    if active {
        if count == 0 || count > 64 {
            return Err(structure(format!(
                "Resource {index}: {count} alternatives (1 to 64 accepted)"
            )));
        }
        for i in 0..count {
            let name = format!("Hash{i}");
            let value = resource
                .attribute((SHA384_NS, name.as_str()))
                .ok_or_else(|| structure(format!("active Resource {index} has no {name}")))?;
            let bytes = hex::decode(value)
                .map_err(|_| structure(format!("Resource {index} {name} is not hex")))?;
            if bytes.len() != size {
                return Err(structure(format!(
                    "Resource {index} {name} has {} bytes, size says {size}",
                    bytes.len()
                )));
            }
            alternatives.push(hex::encode(bytes));
        }
    }
    Ok(GoldenMeasurement {
        index,
        active,
        size,
        alternatives,
    })
}

fn read_content(root: Node<'_, '_>) -> Result<RimContent, RimError> {
    let meta = only_child(root, SWID_NS, "Meta")?;
    let payload = only_child(root, SWID_NS, "Payload")?;
    let colloquial_version = attribute(meta, "colloquialVersion")?.to_owned();
    let mut measurements: Vec<GoldenMeasurement> = Vec::new();
    for resource in element_children(payload).filter(|c| c.has_tag_name((SWID_NS, "Resource"))) {
        if resource.attribute("type") != Some("Measurement") {
            continue;
        }
        let m = parse_measurement(resource)?;
        if measurements.iter().any(|o| o.index == m.index) {
            return Err(structure(format!("measurement index {} repeated", m.index)));
        }
        measurements.push(m);
    }
    Ok(RimContent {
        name: attribute(root, "name")?.to_owned(),
        tag_id: root.attribute("tagId").unwrap_or_default().to_owned(),
        kind: RimKind::from_version(&colloquial_version),
        colloquial_version,
        product: attribute(meta, "product")?.to_owned(),
        measurements,
    })
}

/// Checks the signature's form and returns (digest, signature value, SignedInfo, certs).
struct SignatureParts<'a, 'i> {
    signed_info: Node<'a, 'i>,
    digest: Vec<u8>,
    value: Vec<u8>,
    certs: Result<Vec<Cert>, String>,
}

fn signature_parts<'a, 'i>(signature: Node<'a, 'i>) -> Result<SignatureParts<'a, 'i>, RimError> {
    let [signed_info, value, key_info] =
        exact_children(signature, ["SignedInfo", "SignatureValue", "KeyInfo"])?;
    let [c14n_method, signature_method, reference] = exact_children(
        signed_info,
        ["CanonicalizationMethod", "SignatureMethod", "Reference"],
    )?;
    let c14n_algorithm = algorithm(c14n_method)?;
    if c14n_algorithm != C14N_11 && c14n_algorithm != C14N_10 {
        return Err(form(format!("canonicalization {c14n_algorithm}")));
    }
    if algorithm(signature_method)? != ECDSA_SHA384 {
        return Err(form(format!(
            "signature method {}",
            algorithm(signature_method)?
        )));
    }
    if reference.attribute("URI") != Some("") {
        return Err(form(
            "the Reference must cover the whole document (URI=\"\")",
        ));
    }
    let [transforms, digest_method, digest_value] =
        exact_children(reference, ["Transforms", "DigestMethod", "DigestValue"])?;
    let [enveloped, canonical] = exact_children(transforms, ["Transform", "Transform"])?;
    let c14n_transform = algorithm(canonical)?;
    if algorithm(enveloped)? != ENVELOPED
        || (c14n_transform != C14N_11 && c14n_transform != C14N_10)
    {
        return Err(form(
            "transforms must be enveloped-signature then Canonical XML",
        ));
    }
    if !SHA384_DIGESTS.contains(&algorithm(digest_method)?) {
        return Err(form(format!("digest method {}", algorithm(digest_method)?)));
    }
    let digest = base64(digest_value.text().unwrap_or_default(), "DigestValue")?;
    let value = base64(value.text().unwrap_or_default(), "SignatureValue")?;
    if digest.len() != 48 || value.len() != 96 {
        return Err(form(
            "DigestValue must be 48 bytes and SignatureValue 96 (raw r || s)",
        ));
    }
    let certs = only_child(key_info, DSIG_NS, "X509Data")
        .map_err(|e| e.to_string())
        .and_then(|data| {
            element_children(data)
                .filter(|c| c.has_tag_name((DSIG_NS, "X509Certificate")))
                .enumerate()
                .map(|(i, c)| {
                    let der = base64(c.text().unwrap_or_default(), "X509Certificate")
                        .map_err(|e| e.to_string())?;
                    Cert::from_der(der, i).map_err(|e| e.to_string())
                })
                .collect::<Result<Vec<_>, String>>()
        })
        .and_then(|certs| {
            if certs.is_empty() {
                Err("KeyInfo holds no certificate".to_owned())
            } else {
                Ok(certs)
            }
        });
    Ok(SignatureParts {
        signed_info,
        digest,
        value,
        certs,
    })
}

/// Reads a RIM and checks its XML signature (digest and ECDSA, under the first certificate in
/// `KeyInfo`; not the signer chain, which [`verify_gpu`](super::verify_gpu) checks): the
/// content, and `Ok` if the signature verified or why not.
pub fn read(bytes: &[u8]) -> Result<(RimContent, Result<(), RimSignatureError>), RimError> {
    appraise(bytes).map(|a| (a.content, a.signature))
}

/// Most remembered RIM appraisals before the memo starts over.
const MAX_REMEMBERED_RIMS: usize = 64;

type RimMemo = std::collections::HashMap<[u8; 32], Result<RimAppraisal, RimError>>;

fn remembered() -> Option<std::sync::MutexGuard<'static, RimMemo>> {
    static MEMO: std::sync::OnceLock<std::sync::Mutex<RimMemo>> = std::sync::OnceLock::new();
    MEMO.get_or_init(Default::default).lock().ok()
}

/// [`appraise_uncached`], remembered by the SHA-256 of the bytes: the outcome is a pure
/// function of them, and a verifier sees the same few RIMs (one per driver and VBIOS version)
/// for every GPU. The chain and the comparison with the report still run every time.
pub(crate) fn appraise(bytes: &[u8]) -> Result<RimAppraisal, RimError> {
    let key: [u8; 32] = sha2::Sha256::digest(bytes).into();
    if let Some(hit) = remembered().and_then(|memo| memo.get(&key).cloned()) {
        return hit;
    }
    let result = appraise_uncached(bytes);
    if let Some(mut memo) = remembered() {
        if memo.len() >= MAX_REMEMBERED_RIMS {
            memo.clear();
        }
        memo.insert(key, result.clone());
    }
    result
}

/// Forgets every remembered RIM (for benchmarks of the cold path).
#[doc(hidden)]
pub fn forget_remembered_rims() {
    if let Some(mut memo) = remembered() {
        memo.clear();
    }
}

/// Reads a RIM and checks its XML-DSig (digest and signature, not the chain).
fn appraise_uncached(bytes: &[u8]) -> Result<RimAppraisal, RimError> {
    if bytes.len() > MAX_RIM_LEN {
        return Err(RimError::Xml(format!("{} bytes is too large", bytes.len())));
    }
    let text = std::str::from_utf8(bytes).map_err(|e| RimError::Xml(e.to_string()))?;
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let doc = roxmltree::Document::parse(text).map_err(|e| RimError::Xml(e.to_string()))?;
    let root = doc.root_element();
    if !root.has_tag_name((SWID_NS, "SoftwareIdentity")) {
        return Err(structure("the root element is not a SWID SoftwareIdentity"));
    }
    let content = read_content(root)?;
    let mut signatures = doc
        .descendants()
        .filter(|n| n.has_tag_name((DSIG_NS, "Signature")));
    let signature = match (signatures.next(), signatures.next()) {
        (Some(one), None) if one.parent_element() == Some(root) => one,
        (None, _) => return Err(form("no Signature element")),
        _ => {
            return Err(form(
                "exactly one Signature, a child of the root, is accepted",
            ));
        }
    };
    no_xml_attributes(root)?;
    no_xml_attributes(signature)?;
    let parts = signature_parts(signature)?;

    let document = c14n::document_without(&doc, Some(signature.id()));
    let digest_ok = Sha384::digest(document.as_bytes())[..] == parts.digest[..];
    let signature_result = if !digest_ok {
        Err(RimSignatureError::Digest)
    } else {
        match &parts.certs {
            Err(e) => Err(RimSignatureError::Certificates(e.clone())),
            Ok(certs) => match certs.first().map(Cert::p384_key) {
                Some(Ok(key)) => {
                    let signed_info = c14n::subtree(parts.signed_info);
                    if verify_fixed_signature(key, signed_info.as_bytes(), &parts.value) {
                        Ok(())
                    } else {
                        Err(RimSignatureError::Signature)
                    }
                }
                Some(Err(e)) => Err(RimSignatureError::SignerKey(e)),
                None => Err(RimSignatureError::NoCertificate),
            },
        }
    };
    Ok(RimAppraisal {
        content,
        signature: signature_result,
        certs: parts.certs,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kind_from_version() {
        assert_eq!(RimKind::from_version("96.00.5E.00.01"), RimKind::Vbios);
        assert_eq!(RimKind::from_version("97.00.88.00.0f"), RimKind::Vbios);
        assert_eq!(RimKind::from_version("545.00"), RimKind::Driver);
        assert_eq!(RimKind::from_version("570.124.06"), RimKind::Driver);
    }

    #[test]
    fn non_rim_xml_is_refused() {
        assert!(matches!(appraise(b"<a/>"), Err(RimError::Structure(_))));
        assert!(matches!(appraise(b"<a"), Err(RimError::Xml(_))));
        assert!(matches!(
            appraise(b"<!DOCTYPE a [<!ENTITY x \"y\">]><a>&x;</a>"),
            Err(RimError::Xml(_))
        ));
    }
}
