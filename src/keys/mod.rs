//! Attested key release: the key broker (`confidant broker`) and its client.
//!
//! Both sides speak the Confidential Containers KBS protocol, RCAR 0.4.0 (request,
//! challenge, attestation, response), in the wire form a Trustee KBS uses, so either side
//! can be swapped for Trustee:
//!
//! - [`broker`]: the HTTPS broker. Resources (data keys) sit encrypted in SQLite under the
//!   broker's master key ([`store`]); each has a release policy in the attestation crate's
//!   TOML; an authenticated admin API sets both.
//! - [`client`]: the TEE side. [`client::fetch_resource`] makes an ephemeral P-256 key, gets
//!   evidence binding it and the broker's nonce, and decrypts the released JWE.
//! - [`protocol`], [`jcs`], [`jwe`]: the messages, RFC 8785 canonical JSON for the
//!   runtime-data hash, and `ECDH-ES+A256KW` / `A256GCM` JWE.
//!
//! ```no_run
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! use std::sync::Arc;
//! use confidant::keys::client::{BrokerEndpoint, fetch_resource};
//! let ca = std::fs::read("broker-data/tls/cert.pem")?;
//! let broker = BrokerEndpoint::new("https://127.0.0.1:8443", Some(&ca))?;
//! let attester: Arc<dyn confidant::tee::Attester> = Arc::from(confidant::tee::detect()?);
//! let data_key = fetch_resource(&broker, attester, "default/models/credit").await?;
//! assert_eq!(data_key.len(), 32);
//! # Ok(()) }
//! ```

pub mod broker;
pub mod client;
pub mod collateral;
pub mod error;
pub mod gpu_references;
pub mod jcs;
pub mod jwe;
pub mod protocol;
pub mod store;

#[cfg(test)]
mod tests;

pub use broker::{BrokerConfig, RunningBroker};
pub use client::{BrokerEndpoint, anchor_request, fetch_resource, fetch_resource_retrying};
pub use error::{BrokerError, BrokerStartError, GpuEvidenceError, JcsError, JweError, RcarError};
pub use jwe::{TeeKeyPair, TeePubKey};
