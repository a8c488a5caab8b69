//! Attestation evidence, in the JSON shapes of the Confidential Containers KBS protocol.
//!
//! [`SnpEvidence`] is exactly Trustee's SNP evidence (`{"attestation_report": {...},
//! "cert_chain": [...]}`, with the report in the `sev` crate's serde form), and
//! [`TdxEvidence`] is Trustee's TDX evidence (`{"quote": "<base64>", ...}`) plus an optional
//! `collateral` for offline verification. [`Evidence`] wraps them with a `tee` tag:
//!
//! ```json
//! {"tee": "snp", "attestation_report": {"version": 3, ...}, "cert_chain": [...]}
//! {"tee": "tdx", "quote": "BAACAIEA...", "collateral": {...}}
//! {"tee": "simulated", "attestation_report": {...}, "cert_chain": [...]}
//! ```
//!
//! Types here only carry bytes. Nothing is trusted or even fully parsed until
//! [`verify`](crate::verify) runs, so that a malformed report becomes a failed check in the
//! verdict rather than an error that a caller might mishandle.

use std::fmt;

use serde::{Deserialize, Serialize};
use sev::parser::ByteParser as _;
use x509_cert::der::{Decode as _, Encode as _};

use crate::error::Error;
use crate::timestamp::Timestamp;

/// Length of an SEV-SNP attestation report (SEV-SNP ABI, Table 22 `ATTESTATION_REPORT`).
pub const SNP_REPORT_LEN: usize = 1184;

/// Which kind of TEE produced a piece of evidence.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
#[non_exhaustive]
pub enum TeeKind {
    /// AMD SEV-SNP.
    Snp,
    /// Intel TDX.
    Tdx,
    /// The simulated TEE for development machines: no hardware trust at all.
    Simulated,
    /// An NVIDIA GPU in confidential-computing mode (see [`crate::nvidia`]).
    #[serde(rename = "nvidia_gpu")]
    NvidiaGpu,
    /// Trustee's `sample` TEE, for development against a Trustee KBS: no hardware and no
    /// signature at all (see [`SampleEvidence`]).
    Sample,
}

impl fmt::Display for TeeKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Snp => "snp",
            Self::Tdx => "tdx",
            Self::Simulated => "simulated",
            Self::NvidiaGpu => "nvidia_gpu",
            Self::Sample => "sample",
        })
    }
}

/// Evidence from one TEE, tagged by `tee`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "tee", rename_all = "lowercase")]
#[non_exhaustive]
pub enum Evidence {
    /// An SEV-SNP report with its endorsement certificates.
    Snp(SnpEvidence),
    /// A TDX quote, optionally with its collateral.
    Tdx(TdxEvidence),
    /// An SNP-format report signed by a locally generated chain; see
    /// [`SimulatedTee`](crate::SimulatedTee).
    Simulated(SnpEvidence),
    /// Trustee's development `sample` evidence: report_data in the clear, signed by nobody.
    Sample(SampleEvidence),
}

impl Evidence {
    /// Parses evidence JSON (the `tee`-tagged form).
    pub fn from_json(json: &[u8]) -> Result<Self, Error> {
        serde_json::from_slice(json).map_err(|e| Error::evidence(e.to_string()))
    }

    /// The same evidence without any TDX collateral the attester attached: a verifier that
    /// holds its own collateral must not judge the quote by the attester's (it may be stale).
    #[must_use]
    pub fn without_tdx_collateral(self) -> Self {
        match self {
            Self::Tdx(e) => Self::Tdx(e.without_collateral()),
            other => other,
        }
    }

    /// Serializes to the `tee`-tagged JSON form.
    ///
    /// Fails only for an SNP report whose bytes cannot be decoded into the structured form.
    pub fn to_json(&self) -> Result<String, Error> {
        serde_json::to_string(self).map_err(|e| Error::evidence(e.to_string()))
    }

    /// The kind of TEE this evidence claims to come from.
    pub fn tee(&self) -> TeeKind {
        match self {
            Self::Snp(_) => TeeKind::Snp,
            Self::Tdx(_) => TeeKind::Tdx,
            Self::Simulated(_) => TeeKind::Simulated,
            Self::Sample(_) => TeeKind::Sample,
        }
    }

    /// The attester's own statement of when it produced the evidence, if it made one.
    pub fn generated_at(&self) -> Option<Timestamp> {
        match self {
            Self::Snp(e) | Self::Simulated(e) => e.generated_at,
            Self::Tdx(e) => e.generated_at,
            Self::Sample(_) => None,
        }
    }
}

/// Trustee's `sample` evidence, exactly as its sample attester makes it and its sample
/// verifier reads it: `{"svn": "1", "report_data": "<base64 standard>"}`.
///
/// **It proves nothing.** Anyone can write it; there is no hardware, no measurement and no
/// signature. It exists so that a development server can obtain keys from a Trustee KBS
/// running only its sample verifier. [`verify`](crate::verify) refuses it unless the policy
/// sets `allow_simulated = true`, and even then it carries no measurement (its claims give 48
/// zero bytes, which only `measurements = "any"` or a pinned all-zero measurement accept).
///
/// For the KBS protocol the report_data is the 48-byte SHA-384 of the runtime data, not
/// padded (Trustee's sample verifier compares the decoded bytes with the digest exactly);
/// a 64-byte report_data is accepted too (Confidant's TLS binding).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SampleEvidence {
    /// The security version Trustee's sample attester reports (`"1"`).
    pub svn: String,
    /// The bound report_data, base64 (standard alphabet, padded).
    pub report_data: String,
}

/// The lengths of report_data that sample evidence may bind: a SHA-384 digest (the KBS
/// runtime-data binding) or a full 64-byte report_data.
pub const SAMPLE_REPORT_DATA_LENS: [usize; 2] = [48, 64];

impl SampleEvidence {
    /// The svn Trustee's sample attester reports.
    pub const SVN: &'static str = "1";

    /// Sample evidence binding `report_data` (48 or 64 bytes; see
    /// [`SampleEvidence::report_data_bytes`]).
    pub fn new(report_data: &[u8]) -> Self {
        use base64::Engine as _;
        Self {
            svn: Self::SVN.to_owned(),
            report_data: base64::engine::general_purpose::STANDARD.encode(report_data),
        }
    }

    /// The bound report_data as 64 bytes: a 48-byte value is followed by 16 zero bytes, as
    /// the SNP and TDX bindings of a SHA-384 digest are. Any other length, or text that is not
    /// standard base64, is an error.
    pub fn report_data_bytes(&self) -> Result<[u8; 64], Error> {
        use base64::Engine as _;
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(&self.report_data)
            .map_err(|e| Error::evidence(format!("sample report_data is not base64: {e}")))?;
        if !SAMPLE_REPORT_DATA_LENS.contains(&bytes.len()) {
            return Err(Error::evidence(format!(
                "sample report_data is {} bytes; 48 or 64 are accepted",
                bytes.len()
            )));
        }
        let mut out = [0u8; 64];
        out.get_mut(..bytes.len())
            .ok_or_else(|| Error::evidence("sample report_data length"))?
            .copy_from_slice(&bytes);
        Ok(out)
    }
}

/// The kind of a certificate in an SNP certificate table (GHCB spec, Table 9, by GUID).
///
/// Serialized as the `sev` crate does (`"VCEK"`, `{"OTHER": "<guid>"}`), so that Trustee
/// reads it.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[non_exhaustive]
pub enum CertType {
    /// A closing entry.
    #[serde(rename = "Empty")]
    Empty,
    /// AMD Root Key.
    #[serde(rename = "ARK")]
    Ark,
    /// AMD SEV Key, or for a VLEK chain the AMD SEV VLEK Key (ASVK), which hosts put in the
    /// same slot.
    #[serde(rename = "ASK")]
    Ask,
    /// Versioned Chip Endorsement Key.
    #[serde(rename = "VCEK")]
    Vcek,
    /// Versioned Loaded Endorsement Key.
    #[serde(rename = "VLEK")]
    Vlek,
    /// Certificate revocation list.
    #[serde(rename = "CRL")]
    Crl,
    /// Any other entry, by GUID.
    #[serde(rename = "OTHER")]
    Other(String),
}

/// One certificate of an SNP certificate table: its kind and its DER bytes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CertTableEntry {
    /// Which certificate this is.
    pub cert_type: CertType,
    /// The certificate, DER-encoded (a JSON array of byte values, as `sev` writes it).
    pub data: Vec<u8>,
}

impl CertTableEntry {
    /// An entry of `cert_type` holding `der`.
    pub fn new(cert_type: CertType, der: Vec<u8>) -> Self {
        Self {
            cert_type,
            data: der,
        }
    }
}

/// SEV-SNP evidence: the attestation report and the certificates the platform supplied.
///
/// The report is held as its raw 1184 bytes; in JSON it is the `sev` crate's structured form,
/// as Trustee expects.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SnpEvidence {
    #[serde(rename = "attestation_report", with = "structured_report")]
    report: Vec<u8>,
    #[serde(default)]
    cert_chain: Option<Vec<CertTableEntry>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    generated_at: Option<Timestamp>,
}

impl SnpEvidence {
    /// Evidence from a raw report and a certificate table (the VCEK or VLEK, and optionally
    /// the ASK/ASVK and ARK). Nothing is checked here.
    pub fn new(report: Vec<u8>, cert_chain: Vec<CertTableEntry>) -> Self {
        Self {
            report,
            cert_chain: Some(cert_chain),
            generated_at: None,
        }
    }

    /// Evidence from the files an operator has at hand: the raw report, the VCEK or VLEK in
    /// DER, and optionally the `ask_ark.pem` chain that AMD KDS serves (ASK or ASVK, then
    /// ARK; the order is not relied on).
    ///
    /// The endorsement key is labelled VLEK when its subject is `SEV-VLEK`, VCEK otherwise.
    /// Fails only when the PEM chain cannot be decoded.
    pub fn from_parts(
        report: &[u8],
        vek_der: &[u8],
        chain_pem: Option<&[u8]>,
    ) -> Result<Self, Error> {
        let vek_type = match x509_cert::Certificate::from_der(vek_der) {
            Ok(cert) if common_name(&cert).as_deref() == Some("SEV-VLEK") => CertType::Vlek,
            _ => CertType::Vcek,
        };
        let mut table = vec![CertTableEntry::new(vek_type, vek_der.to_vec())];
        if let Some(pem) = chain_pem {
            let certs = x509_cert::Certificate::load_pem_chain(pem)
                .map_err(|e| Error::evidence(format!("certificate chain PEM: {e}")))?;
            for cert in certs {
                // The root is the self-signed one; anything else is the intermediate.
                let kind = if cert.tbs_certificate.issuer == cert.tbs_certificate.subject {
                    CertType::Ark
                } else {
                    CertType::Ask
                };
                let der = cert.to_der().map_err(|e| {
                    Error::evidence(format!("re-encoding a chain certificate: {e}"))
                })?;
                table.push(CertTableEntry::new(kind, der));
            }
        }
        Ok(Self::new(report.to_vec(), table))
    }

    /// Records when the attester produced this evidence (unauthenticated; see
    /// [`Policy::max_evidence_age_secs`](crate::Policy::max_evidence_age_secs)).
    #[must_use]
    pub fn with_generated_at(mut self, at: Timestamp) -> Self {
        self.generated_at = Some(at);
        self
    }

    /// The raw report bytes.
    pub fn report(&self) -> &[u8] {
        &self.report
    }

    /// The certificate table, if the platform supplied one.
    pub fn cert_chain(&self) -> &[CertTableEntry] {
        self.cert_chain.as_deref().unwrap_or_default()
    }

    /// The first certificate of `kind` in the table.
    pub(crate) fn cert(&self, kind: &CertType) -> Option<&[u8]> {
        self.cert_chain()
            .iter()
            .find(|e| &e.cert_type == kind)
            .map(|e| e.data.as_slice())
    }
}

/// The subject common name of `cert`, if it has exactly one readable one.
pub(crate) fn common_name(cert: &x509_cert::Certificate) -> Option<String> {
    use x509_cert::der::asn1::{PrintableStringRef, Utf8StringRef};
    const CN: x509_cert::der::oid::ObjectIdentifier =
        x509_cert::der::oid::ObjectIdentifier::new_unwrap("2.5.4.3");
    let mut names = cert
        .tbs_certificate
        .subject
        .0
        .iter()
        .flat_map(|rdn| rdn.0.iter())
        .filter(|atv| atv.oid == CN);
    let atv = names.next()?;
    if names.next().is_some() {
        return None;
    }
    if let Ok(s) = atv.value.decode_as::<Utf8StringRef<'_>>() {
        return Some(s.as_str().to_owned());
    }
    atv.value
        .decode_as::<PrintableStringRef<'_>>()
        .ok()
        .map(|s| s.as_str().to_owned())
}

/// The report in `sev`'s serde form on the wire, raw bytes in memory.
mod structured_report {
    use serde::{Deserialize as _, Deserializer, Serialize as _, Serializer};
    use sev::firmware::guest::AttestationReport;
    use sev::parser::ByteParser as _;

    pub(super) fn serialize<S: Serializer>(
        report: &[u8],
        serializer: S,
    ) -> Result<S::Ok, S::Error> {
        let parsed = AttestationReport::from_bytes(report).map_err(serde::ser::Error::custom)?;
        parsed.serialize(serializer)
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(
        deserializer: D,
    ) -> Result<Vec<u8>, D::Error> {
        let parsed = AttestationReport::deserialize(deserializer)?;
        let bytes = parsed.to_bytes().map_err(serde::de::Error::custom)?;
        Ok(bytes.to_vec())
    }
}

/// TDX evidence: a DCAP quote (v4 or v5), with optional collateral for offline verification.
///
/// `quote` is base64 (standard alphabet) in JSON, as in Trustee; `cc_eventlog` and
/// `aa_eventlog` are carried through untouched and are not verified here.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TdxEvidence {
    #[serde(with = "base64_bytes")]
    quote: Vec<u8>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    cc_eventlog: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    aa_eventlog: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    // Boxed: collateral is large and most evidence in flight does not carry it.
    collateral: Option<Box<TdxCollateral>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    generated_at: Option<Timestamp>,
}

impl TdxEvidence {
    /// Evidence from a raw quote.
    pub fn new(quote: Vec<u8>) -> Self {
        Self {
            quote,
            cc_eventlog: None,
            aa_eventlog: None,
            collateral: None,
            generated_at: None,
        }
    }

    /// Attaches collateral so that the evidence verifies offline on its own.
    #[must_use]
    pub fn with_collateral(mut self, collateral: TdxCollateral) -> Self {
        self.collateral = Some(Box::new(collateral));
        self
    }

    /// Records when the attester produced this evidence (unauthenticated).
    #[must_use]
    pub fn with_generated_at(mut self, at: Timestamp) -> Self {
        self.generated_at = Some(at);
        self
    }

    /// The raw quote.
    pub fn quote(&self) -> &[u8] {
        &self.quote
    }

    /// The collateral carried in the evidence, if any.
    pub fn collateral(&self) -> Option<&TdxCollateral> {
        self.collateral.as_deref()
    }

    /// Drops the collateral the evidence carries, so that only the verifier's is used.
    #[must_use]
    pub fn without_collateral(mut self) -> Self {
        self.collateral = None;
        self
    }
}

mod base64_bytes {
    use base64::Engine as _;
    use base64::engine::general_purpose::STANDARD;
    use serde::{Deserialize as _, Deserializer, Serializer};

    pub(super) fn serialize<S: Serializer>(bytes: &[u8], serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&STANDARD.encode(bytes))
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(
        deserializer: D,
    ) -> Result<Vec<u8>, D::Error> {
        let text = String::deserialize(deserializer)?;
        STANDARD
            .decode(text.trim())
            .map_err(serde::de::Error::custom)
    }
}

/// Intel PCS collateral for one quote (`QuoteCollateralV3` in dcap-qvl's serde layout): TCB
/// info, QE identity, CRLs and their issuer chains.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct TdxCollateral(pub(crate) dcap_qvl::QuoteCollateralV3);

/// The fields of a TCB info or QE identity document this crate reads besides dcap-qvl.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct CollateralDocument {
    tcb_evaluation_data_number: u32,
    #[serde(default)]
    fmspc: Option<String>,
}

impl TdxCollateral {
    /// Parses collateral JSON as dcap-qvl and Intel PCCS tooling write it.
    pub fn from_json(json: &[u8]) -> Result<Self, Error> {
        serde_json::from_slice(json).map_err(|e| Error::Collateral {
            reason: e.to_string(),
        })
    }

    fn document(json: &str, name: &str) -> Result<CollateralDocument, Error> {
        serde_json::from_str(json).map_err(|e| Error::Collateral {
            reason: format!("{name}: {e}"),
        })
    }

    /// The FMSPC the TCB info applies to. Not authenticated here: dcap-qvl checks the TCB
    /// info's signature and that its FMSPC matches the quote's when it verifies.
    pub fn fmspc(&self) -> Result<[u8; 6], Error> {
        let fmspc = Self::document(&self.0.tcb_info, "tcb_info")?
            .fmspc
            .ok_or_else(|| Error::Collateral {
                reason: "tcb_info has no fmspc".to_owned(),
            })?;
        crate::error::decode_hex::<6>("tcb_info.fmspc", &fmspc, false)
    }

    /// The lower of the TCB info's and the QE identity's `tcbEvaluationDataNumber`: how
    /// recent Intel's TCB evaluation behind this collateral is (it grows with each TCB
    /// recovery). Trustworthy once a quote has verified against this collateral.
    pub fn tcb_evaluation_data_number(&self) -> Result<u32, Error> {
        let tcb = Self::document(&self.0.tcb_info, "tcb_info")?.tcb_evaluation_data_number;
        let qe = Self::document(&self.0.qe_identity, "qe_identity")?.tcb_evaluation_data_number;
        Ok(tcb.min(qe))
    }
}

/// Decodes an SNP report into claims without verifying anything (no signature, no chain);
/// for display, for the fuzz targets, and for callers that want to refuse garbage early.
pub fn parse_snp_report(report: &[u8]) -> Result<crate::claims::SnpClaims, Error> {
    let parsed = sev::firmware::guest::AttestationReport::from_bytes(report)
        .map_err(|e| Error::evidence(format!("SNP report: {e}")))?;
    Ok(crate::claims::SnpClaims::from_report(&parsed, report))
}

/// Parses a TDX quote into claims (no signature or collateral check); used by the fuzz
/// targets and for display.
pub fn parse_tdx_quote(quote: &[u8]) -> Result<crate::claims::TdxClaims, Error> {
    let parsed = dcap_qvl::quote::Quote::parse(quote)
        .map_err(|e| Error::evidence(format!("TDX quote: {e}")))?;
    crate::claims::TdxClaims::from_quote(&parsed)
}
