//! Errors for the operations that can fail outright.
//!
//! Verification itself never returns an error: a problem with the evidence is a failed check
//! in the [`Verdict`](crate::Verdict). These errors cover inputs that are not evidence at all
//! (an unreadable policy, a malformed timestamp, a certificate file that is not PEM) and the
//! simulated signer.

/// An error from parsing inputs or from the simulated signer.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The policy TOML could not be parsed or holds an invalid value.
    #[error("invalid policy: {reason}")]
    Policy {
        /// What was wrong, naming the key.
        reason: String,
    },

    /// The policy leaves out a key it needs to pin what it accepts (`measurements`, or a
    /// TDX RTMR allowlist), or an open value without the words that confirm it.
    #[error("invalid policy: {key} is missing: {how}")]
    PolicyMissing {
        /// The missing key, as written in TOML.
        key: &'static str,
        /// How to write it.
        how: &'static str,
    },

    /// The evidence JSON or its parts could not be decoded.
    #[error("invalid evidence: {reason}")]
    Evidence {
        /// What was wrong.
        reason: String,
    },

    /// The TDX collateral JSON could not be decoded.
    #[error("invalid TDX collateral: {reason}")]
    Collateral {
        /// What was wrong.
        reason: String,
    },

    /// A timestamp was not RFC 3339 or is out of range.
    #[error("invalid timestamp {input:?}: {reason}")]
    Timestamp {
        /// The text that was given.
        input: String,
        /// Why it was refused.
        reason: String,
    },

    /// A hex string did not decode to the expected number of bytes.
    #[error("invalid hex for {field}: {reason}")]
    Hex {
        /// The field being decoded.
        field: &'static str,
        /// Why it was refused.
        reason: String,
    },

    /// The simulated TEE could not generate a key, certificate or report.
    #[error("simulated TEE: {reason}")]
    Simulated {
        /// What failed.
        reason: String,
    },
}

impl Error {
    pub(crate) fn evidence(reason: impl Into<String>) -> Self {
        Self::Evidence {
            reason: reason.into(),
        }
    }

    pub(crate) fn policy(reason: impl Into<String>) -> Self {
        Self::Policy {
            reason: reason.into(),
        }
    }

    pub(crate) fn simulated(reason: impl std::fmt::Display) -> Self {
        Self::Simulated {
            reason: reason.to_string(),
        }
    }
}

/// Decodes `text` as hex into exactly `N` bytes, or into at most `N` bytes right-padded with
/// zeros when `pad` is set (report_data binds a 48-byte digest into a 64-byte field).
pub(crate) fn decode_hex<const N: usize>(
    field: &'static str,
    text: &str,
    pad: bool,
) -> Result<[u8; N], Error> {
    let bytes = hex::decode(text.trim()).map_err(|e| Error::Hex {
        field,
        reason: e.to_string(),
    })?;
    let fits = if pad {
        !bytes.is_empty() && bytes.len() <= N
    } else {
        bytes.len() == N
    };
    if !fits {
        return Err(Error::Hex {
            field,
            reason: format!(
                "expected {}{N} bytes, got {}",
                if pad { "1 to " } else { "" },
                bytes.len()
            ),
        });
    }
    let mut out = [0u8; N];
    out.iter_mut().zip(bytes.iter()).for_each(|(o, b)| *o = *b);
    Ok(out)
}
