//! Errors of the NVIDIA GPU verifier's parsers.
//!
//! As for SNP and TDX, verification never returns an error: each of these becomes a failed
//! check, with its message, in the [`GpuVerdict`](super::GpuVerdict).

/// The attestation report is not a well-formed SPDM 1.1 GET_MEASUREMENTS request and
/// MEASUREMENTS response.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SpdmError {
    /// The report ends inside a field.
    #[error("report truncated in {field} (at byte {offset})")]
    Truncated {
        /// The field being read.
        field: &'static str,
        /// Where it starts.
        offset: usize,
    },
    /// A fixed field has the wrong value.
    #[error("{field} is {found:#x}, expected {expected:#x}")]
    Field {
        /// The field.
        field: &'static str,
        /// Its value.
        found: u64,
        /// The only value accepted.
        expected: u64,
    },
    /// Bytes follow the signature.
    #[error("{count} byte(s) after the signature, which ends at byte {signature_end}")]
    TrailingBytes {
        /// How many.
        count: usize,
        /// Where the signature ends.
        signature_end: usize,
    },
    /// An opaque-data field is malformed.
    #[error("opaque data type {t}: {reason}")]
    Opaque {
        /// The TLV type.
        t: u16,
        /// What is wrong.
        reason: String,
    },
    /// Another structural problem.
    #[error("{0}")]
    Malformed(String),
}

/// A RIM (SWID tag with an enveloped XML-DSig) that cannot be read or whose signature
/// structure is not the one NVIDIA uses.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RimError {
    /// The XML does not parse (or has a DTD).
    #[error("RIM XML: {0}")]
    Xml(String),
    /// A required element or attribute is missing, repeated or malformed.
    #[error("RIM structure: {0}")]
    Structure(String),
    /// The XML-DSig is not the enveloped ECDSA-SHA384 / C14N 1.1 form NVIDIA signs with.
    #[error("RIM signature form: {0}")]
    SignatureForm(String),
}

/// A certificate input that is not usable at all (not PEM, not X.509).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CertError {
    /// The PEM text could not be decoded.
    #[error("certificate PEM: {0}")]
    Pem(String),
    /// A certificate is not DER X.509.
    #[error("certificate {position}: {reason}")]
    Der {
        /// Position in the chain, 0 = leaf.
        position: usize,
        /// Why it was refused.
        reason: String,
    },
}
