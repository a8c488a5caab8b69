//! Key-broker errors: one enum per side (JWE and JCS, the broker, the RCAR client). Each
//! variant says which step failed and why, precisely enough for an operator to act on, and
//! never carries key material.

/// Why a JWE could not be made or opened, or a TEE key is unusable.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum JweError {
    /// The JWE or one of its members is malformed.
    #[error("JWE {what}: {reason}")]
    Malformed {
        /// The member or step: `JSON`, `protected header`, `iv`, ...
        what: &'static str,
        /// What was wrong.
        reason: String,
    },
    /// A well-formed JWE or JWK uses an algorithm this implementation does not support.
    #[error("unsupported {what} {found:?} (supported: {supported})")]
    Unsupported {
        /// `alg`, `enc`, `crv` or `kty`.
        what: &'static str,
        /// The value found.
        found: String,
        /// What is supported.
        supported: &'static str,
    },
    /// The TEE public key (JWK) is malformed or not on the curve.
    #[error("TEE public key: {0}")]
    PublicKey(String),
    /// Decryption failed: the key unwrap or the content's authentication tag did not verify
    /// (a JWE for another key, or tampered).
    #[error("JWE decryption failed at {step}: wrong key or tampered ciphertext")]
    Decrypt {
        /// `key unwrap` or `content`.
        step: &'static str,
    },
    /// The OS random number generator or the key agreement failed.
    #[error("JWE crypto: {0}")]
    Crypto(&'static str),
}

/// Why a value has no RFC 8785 canonical form here.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum JcsError {
    /// Only integers in the IEEE-754 exact range are canonicalized; runtime data has none.
    #[error("JCS: number {0} is not an integer within 2^53; no canonical form is produced")]
    Number(String),
}

/// Why the broker refused a request. Each variant maps to one HTTP status and one
/// KBS-style error type (see [`BrokerError::status`]).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BrokerError {
    /// The request body or a header is malformed (400).
    #[error("{0}")]
    BadRequest(String),
    /// The request body is larger than the broker accepts (413).
    #[error("the request body exceeds {limit} bytes")]
    TooLarge {
        /// The limit in bytes.
        limit: usize,
    },
    /// The RCAR handshake failed: protocol version, TEE, session, nonce, or evidence (401).
    #[error("{0}")]
    Attestation(String),
    /// No attested, unexpired session for a resource request (401).
    #[error("{0}")]
    Session(String),
    /// The resource is not released to this session (403): no release policy admits its
    /// evidence, or there is no policy, or no such resource. The caller is told only that
    /// (the same answer whether or not the path exists, see [`BrokerError::public_detail`]);
    /// `reason` goes to the broker's log.
    #[error("policy denied {path}: {reason}")]
    PolicyDeny {
        /// The resource path.
        path: String,
        /// The failed checks.
        reason: String,
    },
    /// The resource does not exist (404); said only to a session whose evidence the path's
    /// release policy admits.
    #[error("no resource at {0}")]
    NotFound(String),
    /// No such endpoint on this broker (404, Trustee's `PluginNotFound`): what it is, and
    /// what this broker does instead.
    #[error("{0}")]
    NoEndpoint(String),
    /// The admin API was called without credentials (401).
    #[error("the admin API needs `Authorization: Bearer <admin key>`")]
    AdminUnauthenticated,
    /// The admin API was called with a wrong key (403).
    #[error("the admin key is not valid")]
    AdminForbidden,
    /// The resource exists and the request would replace it (409).
    #[error("{0}")]
    Conflict(String),
    /// The caller is over one of its per-peer limits (429); retry after `retry_after`.
    #[error("too many requests: {what}; retry in {} s", retry_after.as_secs().max(1))]
    TooManyRequests {
        /// Which limit.
        what: String,
        /// When to retry.
        retry_after: std::time::Duration,
    },
    /// A freshness-anchor request is not signed by the deployment's checkpoint key (403).
    #[error("the anchor request is not signed by the deployment's checkpoint key")]
    AnchorSignature,
    /// Another live server instance holds the deployment (409); retry once its lease ends.
    #[error("{0}")]
    LeaseHeld(String),
    /// The request would move a freshness anchor back, or onto another history (409).
    #[error("{0}")]
    Rollback(String),
    /// Too many sessions in flight (503); retry later.
    #[error("too many sessions in flight ({0}); retry later")]
    Busy(usize),
    /// A server-side failure (500); logged in full, reported without detail.
    #[error("internal error: {0}")]
    Internal(String),
}

impl BrokerError {
    /// The HTTP status code.
    pub fn status(&self) -> u16 {
        match self {
            Self::BadRequest(_) => 400,
            Self::TooLarge { .. } => 413,
            Self::Attestation(_) | Self::Session(_) | Self::AdminUnauthenticated => 401,
            Self::PolicyDeny { .. } | Self::AdminForbidden | Self::AnchorSignature => 403,
            Self::NotFound(_) | Self::NoEndpoint(_) => 404,
            Self::Conflict(_) | Self::LeaseHeld(_) | Self::Rollback(_) => 409,
            Self::TooManyRequests { .. } => 429,
            Self::Busy(_) => 503,
            Self::Internal(_) => 500,
        }
    }

    /// The KBS error type (the last segment of the RFC 7807 `type` URI).
    pub fn kind(&self) -> &'static str {
        match self {
            Self::BadRequest(_) => "InvalidRequest",
            Self::TooLarge { .. } => "PayloadTooLarge",
            Self::Attestation(_) => "AttestationError",
            Self::Session(_) => "TokenNotFound",
            Self::PolicyDeny { .. } => "PolicyDeny",
            Self::NotFound(_) => "ResourceNotFound",
            Self::NoEndpoint(_) => "PluginNotFound",
            Self::Conflict(_) => "Conflict",
            Self::AnchorSignature => "AnchorSignature",
            Self::LeaseHeld(_) => "LeaseHeld",
            Self::Rollback(_) => "Rollback",
            Self::AdminUnauthenticated | Self::AdminForbidden => "AdminAuth",
            Self::TooManyRequests { .. } => "TooManyRequests",
            Self::Busy(_) => "Busy",
            Self::Internal(_) => "InternalError",
        }
    }

    /// What the caller is told: the error's text, except that an internal error is not
    /// detailed and a policy denial does not say why, so that a caller the policy does not
    /// admit learns nothing about the resource, not even whether it exists.
    pub fn public_detail(&self) -> String {
        match self {
            Self::Internal(_) => "internal error; see the broker's log".to_owned(),
            Self::PolicyDeny { path, .. } => format!(
                "policy denied {path}: the resource is not released to this session (no \
                 release policy admits its evidence, or there is no such resource); the \
                 broker's log says why"
            ),
            other => other.to_string(),
        }
    }
}

/// Why the broker could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BrokerStartError {
    /// A file in the data directory could not be read or written.
    #[error("{what}: {source}")]
    Io {
        /// The file or socket.
        what: String,
        /// The error.
        source: std::io::Error,
    },
    /// A key or certificate in the data directory is unusable.
    #[error("{0}")]
    Key(String),
    /// The database failed.
    #[error(transparent)]
    Storage(#[from] crate::storage::StorageError),
    /// A file in the data directory could not be read or written.
    #[error(transparent)]
    File(#[from] crate::files::FileError),
    /// The TLS identity could not be made.
    #[error(transparent)]
    Tls(#[from] crate::tls::TlsError),
    /// The TDX collateral given to `broker serve` could not be loaded.
    #[error(transparent)]
    Collateral(#[from] super::collateral::CollateralError),
    /// The GPU references (RIMs, OCSP responses) given to `broker serve` could not be loaded.
    #[error(transparent)]
    GpuReferences(#[from] super::gpu_references::GpuReferenceError),
    /// A release policy stored in the database no longer loads (it was set before policies
    /// had to pin what they accept); set it again with `broker set-policy`.
    #[error(
        "the stored release policy of {path} is refused: {reason}; set it again with `confidant broker set-policy`"
    )]
    StoredPolicy {
        /// The resource path.
        path: String,
        /// Why it is refused.
        reason: String,
    },
}

/// Why an RCAR exchange with a broker (ours or a Trustee KBS) did not release a key.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RcarError {
    /// The broker URL or CA is unusable.
    #[error("broker configuration: {0}")]
    Config(String),
    /// The broker could not be reached (connect, TLS or HTTP failure).
    #[error("broker unreachable at {url}: {reason}")]
    Unreachable {
        /// The broker URL.
        url: String,
        /// What failed.
        reason: String,
    },
    /// The broker refused a step; `detail` is the broker's own reason.
    #[error("broker refused {step} with HTTP {status} {kind}: {detail}")]
    Refused {
        /// `auth`, `attest` or `resource <path>`.
        step: String,
        /// The HTTP status.
        status: u16,
        /// The KBS error type, if the body named one.
        kind: String,
        /// The broker's reason.
        detail: String,
    },
    /// The broker answered something that is not the protocol.
    #[error("broker protocol error at {step}: {reason}")]
    Protocol {
        /// The step.
        step: &'static str,
        /// What was wrong.
        reason: String,
    },
    /// The TEE could not produce evidence.
    #[error("evidence: {0}")]
    Tee(#[from] crate::tee::TeeError),
    /// The GPU evidence could not be encoded.
    #[error("GPU evidence: {0}")]
    Gpu(#[from] GpuEvidenceError),
    /// The released resource could not be decrypted.
    #[error(transparent)]
    Jwe(#[from] JweError),
}

/// Why `additional_evidence` is not GPU evidence this crate accepts.
pub use confidant_attestation::nvidia::composite::GpuEvidenceError;
