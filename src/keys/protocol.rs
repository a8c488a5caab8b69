//! The KBS protocol's messages (RCAR 0.4.0, the `kbs_types` JSON shapes) and the
//! runtime-data binding.
//!
//! ```text
//! POST /kbs/v0/auth      {"version":"0.4.0","tee":"snp","extra-params":""}
//!                     <- {"nonce":"<base64>","extra-params":""} + Set-Cookie kbs-session-id
//! POST /kbs/v0/attest    {"runtime-data":{"nonce","tee-pubkey":JWK},
//!                         "tee-evidence":{"primary_evidence":{...},"additional_evidence":""}}
//!                     <- {"token":"<JWT>"}
//! GET  /kbs/v0/resource/<repo>/<type>/<tag>   <- flattened JWE to tee-pubkey
//! ```
//!
//! The evidence binds `SHA-384(JCS({"additional-evidence", "nonce", "tee-pubkey"}))` in its
//! report_data: the 48-byte digest, then 16 zero bytes (Trustee's attestation service pads
//! report_data to 64 bytes for SNP and TDX).
//!
//! # GPU evidence (composite evidence)
//!
//! A server that serves on GPUs carries their evidence in `additional_evidence`: the string
//! `JCS({"nvidia_gpus": [{"certificate_chain": PEM, "report": HEX}, ...]})`, one entry per
//! GPU it serves on ([`GpuEvidenceSet`]). Each report answers the GPU nonce
//! [`gpu_nonce`](confidant_attestation::nvidia::gpu_nonce) of the session's challenge
//! (`SHA-256("confidant/v1/nvidia-gpu-nonce" ‖ 0x00 ‖ nonce)`, the nonce being the
//! challenge's base64 text as sent). Since `additional-evidence` is inside the hashed runtime
//! data, the CPU report's report_data is SHA-384 over the canonical GPU evidence together with
//! the TEE key and the nonce: GPU evidence cannot be swapped into another session's CPU
//! report, and the broker checks the GPU nonce, so a CPU report cannot bind GPU evidence
//! recorded elsewhere. A server on CPU sends `""`, exactly as a Trustee attester without
//! devices does, so interop with a Trustee KBS is unchanged.

use serde::{Deserialize, Serialize};
use serde_json::Value;
use sha2::{Digest as _, Sha384};

use super::error::JcsError;
use super::jwe::TeePubKey;

/// The protocol version this broker and client speak.
pub const PROTOCOL_VERSION: &str = "0.4.0";
/// The session cookie's name.
pub const SESSION_COOKIE: &str = "kbs-session-id";
/// The prefix of KBS error type URIs.
pub const ERROR_TYPE_PREFIX: &str = "https://github.com/confidential-containers/kbs/errors/";

/// `POST /kbs/v0/auth` body (kbs_types `Request`). `extra-params` is required, as Trustee
/// requires it; any JSON value is accepted.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuthRequest {
    /// The protocol version, [`PROTOCOL_VERSION`].
    pub version: String,
    /// The TEE: `snp` or `tdx` (simulated evidence travels as `snp`: it is SNP-format).
    pub tee: String,
    /// Free-form parameters.
    #[serde(rename = "extra-params")]
    pub extra_params: Value,
}

/// The auth response (kbs_types `Challenge`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Challenge {
    /// 32 random bytes, base64 (standard, padded).
    pub nonce: String,
    /// Free-form parameters (the empty string except for IBM SE).
    #[serde(rename = "extra-params")]
    pub extra_params: Value,
}

/// `POST /kbs/v0/attest` body (kbs_types `Attestation`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AttestRequest {
    /// Initdata (TOML) that the evidence binds in a host/config field; unused here.
    #[serde(rename = "init-data", default, skip_serializing_if = "Option::is_none")]
    pub init_data: Option<Value>,
    /// The nonce and the TEE key.
    #[serde(rename = "runtime-data")]
    pub runtime_data: RuntimeData,
    /// The evidence.
    #[serde(rename = "tee-evidence")]
    pub tee_evidence: TeeEvidence,
}

/// The runtime data: the challenge nonce and the key the resource will be encrypted to.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RuntimeData {
    /// The session's nonce, as the challenge gave it.
    pub nonce: String,
    /// The TEE's public key (JWK).
    #[serde(rename = "tee-pubkey")]
    pub tee_pubkey: TeePubKey,
}

/// The evidence (kbs_types `CompositeEvidence`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TeeEvidence {
    /// The TEE's evidence: Trustee's SNP or TDX JSON, which is what
    /// [`Evidence`](confidant_attestation::Evidence) serializes to (plus a `tee` tag that
    /// Trustee ignores).
    pub primary_evidence: Value,
    /// Additional (device) evidence, as a string; hashed into the runtime data even when
    /// empty.
    #[serde(default)]
    pub additional_evidence: String,
}

/// The attest response.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AttestResponse {
    /// The attestation token (a JWT).
    pub token: String,
}

/// An RFC 7807-like KBS error body.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ErrorBody {
    /// `https://github.com/confidential-containers/kbs/errors/<Type>`.
    #[serde(rename = "type")]
    pub kind: String,
    /// The reason.
    pub detail: String,
}

/// The canonical runtime data that KBS hashes: `JCS({"additional-evidence", "nonce",
/// "tee-pubkey"})`, the JWK re-serialized from its typed form.
pub fn canonical_runtime_data(
    nonce: &str,
    tee_pubkey: &TeePubKey,
    additional_evidence: &str,
) -> Result<Vec<u8>, JcsError> {
    let key = serde_json::to_value(tee_pubkey)
        .map_err(|e| JcsError::Number(format!("unserializable key: {e}")))?;
    let value = serde_json::json!({
        "tee-pubkey": key,
        "nonce": nonce,
        "additional-evidence": additional_evidence,
    });
    super::jcs::to_vec(&value)
}

/// SHA-384 of [`canonical_runtime_data`].
pub fn runtime_data_digest(
    nonce: &str,
    tee_pubkey: &TeePubKey,
    additional_evidence: &str,
) -> Result<[u8; 48], JcsError> {
    let canonical = canonical_runtime_data(nonce, tee_pubkey, additional_evidence)?;
    Ok(Sha384::digest(&canonical).into())
}

/// The report_data that binds a runtime-data digest: the digest, then 16 zero bytes.
pub fn report_data(digest: &[u8; 48]) -> [u8; 64] {
    let mut out = [0u8; 64];
    out[..48].copy_from_slice(digest);
    out
}

/// The GPU evidence a server on GPUs carries in `additional_evidence` (see the module docs): the
/// attestation crate's canonical set, which the attested channel carries too.
pub use confidant_attestation::nvidia::composite::{GpuEvidenceSet, MAX_GPUS};
