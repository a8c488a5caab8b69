//! The verification time, injected by the caller.
//!
//! Verification never reads the clock: certificate validity, collateral freshness and evidence
//! age are all judged against a [`Timestamp`] that the caller passes in, so that a verdict can
//! be reproduced and tests can pin the time.

use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use crate::error::Error;

#[cfg(test)]
mod tests;

/// A point in time, in whole seconds since the Unix epoch (UTC).
///
/// It serializes as an RFC 3339 string, e.g. `"2026-01-01T00:00:00Z"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Timestamp(u64);

impl Timestamp {
    /// A timestamp `seconds` after the Unix epoch.
    pub const fn from_unix_seconds(seconds: u64) -> Self {
        Self(seconds)
    }

    /// Seconds since the Unix epoch.
    pub const fn unix_seconds(self) -> u64 {
        self.0
    }

    /// Parses an RFC 3339 timestamp such as `2025-06-01T00:00:00Z` or
    /// `2025-06-01T02:00:00+02:00`.
    pub fn parse_rfc3339(text: &str) -> Result<Self, Error> {
        let refuse = |reason: String| Error::Timestamp {
            input: text.to_owned(),
            reason,
        };
        let parsed =
            OffsetDateTime::parse(text.trim(), &Rfc3339).map_err(|e| refuse(e.to_string()))?;
        let seconds = u64::try_from(parsed.unix_timestamp())
            .map_err(|_| refuse("before the Unix epoch".to_owned()))?;
        Ok(Self(seconds))
    }

    /// Formats as RFC 3339 in UTC, e.g. `2026-01-01T00:00:00Z`.
    pub fn to_rfc3339(self) -> String {
        i64::try_from(self.0)
            .ok()
            .and_then(|s| OffsetDateTime::from_unix_timestamp(s).ok())
            .and_then(|t| t.format(&Rfc3339).ok())
            // Only a timestamp past year 9999 gets here; show the raw seconds then.
            .unwrap_or_else(|| format!("@{}", self.0))
    }

    /// This timestamp plus `seconds`, saturating.
    pub const fn saturating_add(self, seconds: u64) -> Self {
        Self(self.0.saturating_add(seconds))
    }
}

impl From<std::time::SystemTime> for Timestamp {
    /// Converts a caller-supplied `SystemTime` (times before the epoch clamp to it).
    fn from(time: std::time::SystemTime) -> Self {
        Self(
            time.duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_secs())
                .unwrap_or(0),
        )
    }
}

impl fmt::Display for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_rfc3339())
    }
}

impl Serialize for Timestamp {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.to_rfc3339())
    }
}

impl<'de> Deserialize<'de> for Timestamp {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        Self::parse_rfc3339(&text).map_err(serde::de::Error::custom)
    }
}
