//! Guards that every request passes before it reaches the engine: identity (API keys),
//! scopes and purposes, rate limits, and input validation against the signed schema.
//!
//! The order is fixed so that a refused request has no side effects: authenticate →
//! authorize (scope) → purpose → validate input → rate limits (the only step that spends a
//! counter, and it hands its reservation back if the request is refused later).

pub mod api_keys;
pub mod error;
pub mod rate;
pub mod validation;

use std::collections::BTreeSet;
use std::sync::Arc;

pub use api_keys::{ApiKeySecret, KeyRecord, KeyStore, NewKey, RevokeSelector, Scope};
pub use error::GuardError;
pub use rate::{Admission, QuotaUnit, RateDefaults, RateLimiter};
pub use validation::{InputError, TextLimits, TextLimitsError, validate_rows, validate_texts};

use crate::storage::Database;

/// Credentials as presented in request metadata.
#[derive(Debug, Default, Clone, Copy)]
pub struct Credentials<'a> {
    /// The `x-api-key` header.
    pub api_key: Option<&'a str>,
    /// The `authorization` header.
    pub authorization: Option<&'a str>,
    /// The leaf certificate (DER) the client presented over mutual TLS, already verified
    /// against the configured client CA by the TLS layer.
    pub client_cert: Option<&'a [u8]>,
}

/// The guards, shared by every service.
pub struct Guard {
    keys: KeyStore,
    limiter: RateLimiter,
}

impl Guard {
    /// Guards over the shared database with these default limits.
    pub fn new(db: Arc<Database>, defaults: RateDefaults) -> Self {
        Self {
            keys: KeyStore::new(Arc::clone(&db)),
            limiter: RateLimiter::new(defaults, db),
        }
    }

    /// The key store.
    pub fn keys(&self) -> &KeyStore {
        &self.keys
    }

    /// The rate limiter.
    pub fn limiter(&self) -> &RateLimiter {
        &self.limiter
    }

    /// Finds the credential the request presents: an API key if the request carries one,
    /// otherwise its mutual-TLS client certificate.
    pub fn authenticate(&self, creds: Credentials<'_>) -> Result<Arc<KeyRecord>, GuardError> {
        if let (None, None, Some(der)) = (creds.api_key, creds.authorization, creds.client_cert) {
            return self
                .keys
                .authenticate_cert(der)?
                .map(Arc::new)
                .ok_or_else(|| {
                    GuardError::Unauthenticated(
                        "the client certificate is not registered to a principal, or was revoked"
                            .into(),
                    )
                });
        }
        let token = match (creds.api_key, creds.authorization) {
            (Some(k), _) => k.trim(),
            (None, Some(auth)) => auth
                .strip_prefix("Bearer ")
                .or_else(|| auth.strip_prefix("bearer "))
                .map(str::trim)
                .ok_or_else(|| {
                    GuardError::Unauthenticated(
                        "the authorization header must be \"Bearer <api key>\"".into(),
                    )
                })?,
            (None, None) => {
                return Err(GuardError::Unauthenticated(
                    "no credentials: send an API key in x-api-key or authorization: Bearer, \
                     or a registered client certificate"
                        .into(),
                ));
            }
        };
        if token.is_empty() || token.len() > 256 {
            return Err(GuardError::Unauthenticated(
                "the API key is malformed".into(),
            ));
        }
        self.keys
            .authenticate(token)?
            .ok_or_else(|| GuardError::Unauthenticated("the API key is unknown or revoked".into()))
    }

    /// Checks that `key` holds `scope`.
    pub fn authorize(&self, key: &KeyRecord, scope: Scope) -> Result<(), GuardError> {
        if key.scopes.contains(&scope) {
            Ok(())
        } else {
            Err(GuardError::PermissionDenied(format!(
                "principal {} lacks the {} scope",
                key.principal,
                scope.as_str()
            )))
        }
    }

    /// Checks the declared purpose against the key's allowed purposes and the model's
    /// (from its signed manifest). A model that lists purposes needs one of them declared; a
    /// declared purpose must always be allowed by the key.
    pub fn check_purpose<'d>(
        &self,
        key: &KeyRecord,
        declared: Option<&'d str>,
        model_id: &str,
        model_purposes: &[String],
    ) -> Result<Option<&'d str>, GuardError> {
        let Some(purpose) = declared.map(str::trim).filter(|p| !p.is_empty()) else {
            if model_purposes.is_empty() {
                return Ok(None);
            }
            return Err(GuardError::PermissionDenied(format!(
                "model {model_id} requires a declared purpose (x-purpose): one of {}",
                model_purposes.join(", ")
            )));
        };
        if !key.purposes.contains(purpose) {
            return Err(GuardError::PermissionDenied(format!(
                "purpose {purpose:?} is not allowed for principal {} (allowed: {})",
                key.principal,
                list(&key.purposes)
            )));
        }
        if !model_purposes.is_empty() && !model_purposes.iter().any(|p| p == purpose) {
            return Err(GuardError::PermissionDenied(format!(
                "purpose {purpose:?} is not allowed for model {model_id} (allowed: {})",
                model_purposes.join(", ")
            )));
        }
        Ok(Some(purpose))
    }

    /// Admits one request against the principal's rate limits.
    pub fn admit<'a>(&'a self, key: &'a KeyRecord, now: i64) -> Result<Admission<'a>, GuardError> {
        self.limiter.admit(key, now)
    }

    /// Admits a request of `tokens` text tokens: one unit when the limits count requests,
    /// `tokens` (at least one) when they count tokens.
    pub fn admit_text<'a>(
        &'a self,
        key: &'a KeyRecord,
        now: i64,
        tokens: u64,
    ) -> Result<Admission<'a>, GuardError> {
        let cost = match self.limiter.unit() {
            QuotaUnit::Requests => 1,
            QuotaUnit::Tokens => u32::try_from(tokens).unwrap_or(u32::MAX).max(1),
        };
        self.limiter.admit_units(key, now, cost)
    }
}

fn list(set: &BTreeSet<String>) -> String {
    if set.is_empty() {
        "none".into()
    } else {
        set.iter().cloned().collect::<Vec<_>>().join(", ")
    }
}

#[cfg(test)]
mod tests;
