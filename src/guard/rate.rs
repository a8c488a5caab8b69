//! Per-principal rate limits: requests per minute by GCRA (governor, in memory) and requests
//! per UTC day by a quota kept in SQLite, so that a restart does not reset it.
//!
//! A request first reserves one unit of the day quota (an atomic conditional UPDATE in one
//! transaction, so concurrent requests can never overspend it), then takes a GCRA cell. If
//! the minute limit refuses, the day reservation is handed back, so a refused request
//! changes no counter. A request refused later (for example by a full queue) hands its day
//! unit back too; only its GCRA cell stays spent (governor has no refund).

use std::collections::HashMap;
use std::num::NonZeroU32;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use governor::clock::{Clock, DefaultClock};
use governor::{DefaultDirectRateLimiter, Quota, RateLimiter as Gcra};
use rusqlite::params;
use serde::Deserialize;

use super::error::GuardError;
use super::keys::KeyRecord;
use crate::storage::Database;

/// Server-wide default limits; a key's own `rpm`/`rpd` override them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RateDefaults {
    /// Requests per minute per principal; absent means unlimited.
    pub rpm: Option<u32>,
    /// Requests per UTC day per principal; absent means unlimited.
    pub rpd: Option<u32>,
}

/// The limiter.
pub struct RateLimiter {
    defaults: RateDefaults,
    minute: Mutex<HashMap<(String, u32), Arc<DefaultDirectRateLimiter>>>,
    db: Arc<Database>,
}

/// A day-quota unit held by an admitted request. Call [`Admission::refund`] if the request
/// fails before producing a result.
#[derive(Debug)]
pub struct Admission {
    day: Option<(String, i64)>,
}

const DAY: i64 = 86_400;

impl RateLimiter {
    /// A limiter with these defaults over `db`.
    pub fn new(defaults: RateDefaults, db: Arc<Database>) -> Self {
        Self {
            defaults,
            minute: Mutex::new(HashMap::new()),
            db,
        }
    }

    /// Admits one request for `key`'s principal at `now` (seconds since the epoch), or says
    /// how long to wait.
    pub fn admit(&self, key: &KeyRecord, now: i64) -> Result<Admission, GuardError> {
        let principal = &key.principal;
        let day_limit = key.rpd.or(self.defaults.rpd);
        let minute_limit = key.rpm.or(self.defaults.rpm);
        let mut admission = Admission { day: None };
        if let Some(limit) = day_limit {
            let day = now.div_euclid(DAY);
            // One statement: count the request unless the quota is spent (then no row
            // changes, and nothing is written).
            let reserved = self.db.transaction(|tx| {
                tx.prepare_cached(
                    "INSERT INTO daily_usage (principal, day, count) VALUES (?1, ?2, 1)
                     ON CONFLICT (principal, day) DO UPDATE SET count = count + 1
                     WHERE count < ?3",
                )?
                .execute(params![principal, day, limit])
            })?;
            if reserved == 0 {
                let retry = (day + 1) * DAY - now;
                return Err(GuardError::RateLimited {
                    what: format!("daily quota of {limit} requests for {principal} is spent"),
                    retry_after: Duration::from_secs(retry.max(1) as u64),
                });
            }
            admission.day = Some((principal.clone(), day));
        }
        if let Some(limit) = minute_limit.and_then(NonZeroU32::new) {
            let limiter = {
                let mut map = self.minute.lock().unwrap_or_else(|p| p.into_inner());
                Arc::clone(
                    map.entry((principal.clone(), limit.get()))
                        .or_insert_with(|| Arc::new(Gcra::direct(Quota::per_minute(limit)))),
                )
            };
            if let Err(not_until) = limiter.check() {
                let wait = not_until.wait_time_from(DefaultClock::default().now());
                self.refund(admission);
                return Err(GuardError::RateLimited {
                    what: format!("rate limit of {limit} requests per minute for {principal}"),
                    retry_after: wait.max(Duration::from_millis(1)),
                });
            }
        }
        Ok(admission)
    }

    /// Hands back an admission's day unit.
    pub fn refund(&self, admission: Admission) {
        if let Some((principal, day)) = admission.day {
            let r = self.db.transaction(|tx| {
                tx.prepare_cached(
                    "UPDATE daily_usage SET count = count - 1
                     WHERE principal = ?1 AND day = ?2 AND count > 0",
                )?
                .execute(params![principal, day])
            });
            if let Err(e) = r {
                tracing::error!(error = %e, "could not refund a daily quota unit");
            }
        }
    }

    /// Requests counted for `principal` on the UTC day containing `now`.
    pub fn used_today(&self, principal: &str, now: i64) -> Result<u64, GuardError> {
        let day = now.div_euclid(DAY);
        Ok(self.db.read(|conn| {
            conn.query_row(
                "SELECT COALESCE(SUM(count), 0) FROM daily_usage WHERE principal = ?1 AND day = ?2",
                params![principal, day],
                |r| r.get::<_, i64>(0),
            )
        })? as u64)
    }
}
