//! Per-principal rate limits: requests per minute by GCRA (governor, in memory) and requests
//! per UTC day by a quota kept in SQLite, so that a restart does not reset it.
//!
//! A request first takes one unit of the day quota, then a GCRA cell. If the minute limit
//! refuses, the day unit is handed back, so a refused request changes no counter. A request
//! refused later (for example by a full queue) hands its day unit back too; only its GCRA
//! cell stays spent (governor has no refund).
//!
//! Day units are reserved in SQLite in leases: one transaction reserves up to 4096 units at
//! once (a sixteenth of what is left, at least one), and the server hands them out from
//! memory. The database therefore always holds at least what was served, so a crash or a
//! restart never resets the quota; a crash can only lose the unused part of a lease (the
//! principal gets fewer requests that day, never more: at most a sixteenth of what was left,
//! and at most 4095). A graceful stop returns
//! unused leases. Small quotas lease one unit at a time and so stay exact in the database;
//! large ones pay one SQLite commit per lease instead of per request.
//!
//! The unit is a request, or with `unit = "tokens"` a text token: a text model's request then
//! costs its tokens (after truncation) in both limits, and any other request costs one. A
//! request that needs more units than the principal's lease holds leases at least what it
//! needs; one that needs more than is left is refused whole, spending nothing.

use foldhash::HashMap;
use foldhash::HashMapExt;
use std::num::NonZeroU32;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use governor::clock::{Clock, DefaultClock};
use governor::{DefaultDirectRateLimiter, Quota, RateLimiter as Gcra};
use rusqlite::params;
use serde::Deserialize;

use super::api_keys::KeyRecord;
use super::error::GuardError;
use crate::storage::Database;

/// Server-wide default limits; a key's own `rpm`/`rpd` override them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RateDefaults {
    /// Units per minute per principal; absent means unlimited.
    pub rpm: Option<u32>,
    /// Units per UTC day per principal; absent means unlimited.
    pub rpd: Option<u32>,
    /// What `rpm` and `rpd` count [default: requests].
    #[serde(default)]
    pub unit: QuotaUnit,
}

/// What the rate limits count.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum QuotaUnit {
    /// One per request.
    #[default]
    Requests,
    /// A text model's request counts its tokens (after truncation); any other request, one.
    Tokens,
}

impl QuotaUnit {
    /// The unit's name in refusals.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Requests => "requests",
            Self::Tokens => "tokens",
        }
    }
}

/// The limiter.
pub struct RateLimiter {
    defaults: RateDefaults,
    /// Per principal: unused day units and the per-minute GCRA states, under one lock, so
    /// that admitting a request takes one lock and one lookup by `&str` and allocates
    /// nothing.
    principals: Mutex<HashMap<String, PrincipalState>>,
    db: Arc<Database>,
}

/// One principal's limiter state.
#[derive(Default)]
struct PrincipalState {
    /// Day units reserved in SQLite but not yet handed out.
    lease: Option<Lease>,
    /// One GCRA state per per-minute limit (keys of one principal may differ).
    minute: Vec<(u32, DefaultDirectRateLimiter)>,
}

/// A principal's unused day units, for one day.
#[derive(Debug, Clone, Copy)]
struct Lease {
    day: i64,
    units: u64,
}

impl PrincipalState {
    /// Takes `n` units of `day`'s lease, if it holds that many.
    fn take(&mut self, day: i64, n: u64) -> bool {
        match &mut self.lease {
            Some(l) if l.day == day && l.units >= n => {
                l.units -= n;
                true
            }
            _ => false,
        }
    }

    /// Units of `day`'s lease.
    fn held(&self, day: i64) -> u64 {
        self.lease.filter(|l| l.day == day).map_or(0, |l| l.units)
    }

    /// Adds `units` of `day` (yesterday's leftovers are worthless today; a unit of a day
    /// already past is worthless too).
    fn give(&mut self, day: i64, units: u64) {
        match &mut self.lease {
            Some(l) if l.day == day => l.units += units,
            Some(l) if l.day > day => {}
            _ => self.lease = Some(Lease { day, units }),
        }
    }
}

/// Most day units one lease reserves.
pub const MAX_LEASE: u64 = 4096;

/// A day-quota unit held by an admitted request. Dropping it hands the unit back (the
/// request failed before producing a result); [`Admission::commit`] keeps it spent. So a
/// refusal after admission can never forget the refund, and an early `?` return refunds too.
#[must_use = "an admission refunds its day unit when dropped: call commit() once the request has produced a result"]
pub struct Admission<'a> {
    limiter: &'a RateLimiter,
    principal: &'a str,
    day: Option<i64>,
    /// Day units taken.
    units: u64,
}

impl Admission<'_> {
    /// Marks the admission used: the request produced a result, so its day unit stays spent.
    pub fn commit(mut self) {
        self.day = None;
    }
}

impl std::fmt::Debug for Admission<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Admission")
            .field("principal", &self.principal)
            .field("day", &self.day)
            .finish()
    }
}

impl Drop for Admission<'_> {
    fn drop(&mut self) {
        if let Some(day) = self.day.take() {
            entry(&mut self.limiter.lock(), self.principal).give(day, self.units);
        }
    }
}

const DAY: i64 = 86_400;

impl RateLimiter {
    /// A limiter with these defaults over `db`.
    pub fn new(defaults: RateDefaults, db: Arc<Database>) -> Self {
        Self {
            defaults,
            principals: Mutex::new(HashMap::new()),
            db,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, PrincipalState>> {
        self.principals.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// What the limits count.
    pub fn unit(&self) -> QuotaUnit {
        self.defaults.unit
    }

    /// Admits one request for `key`'s principal at `now` (seconds since the epoch), or says
    /// how long to wait.
    pub fn admit<'a>(&'a self, key: &'a KeyRecord, now: i64) -> Result<Admission<'a>, GuardError> {
        self.admit_units(key, now, 1)
    }

    /// Admits a request that costs `cost` units (at least one), or says how long to wait.
    /// A request that costs more than the day has left, or than a minute's limit could ever
    /// allow, is refused whole and spends nothing.
    pub fn admit_units<'a>(
        &'a self,
        key: &'a KeyRecord,
        now: i64,
        cost: u32,
    ) -> Result<Admission<'a>, GuardError> {
        let principal = key.principal.as_str();
        let day_limit = key.rpd.or(self.defaults.rpd);
        let minute_limit = key.rpm.or(self.defaults.rpm).and_then(NonZeroU32::new);
        let unit = self.defaults.unit.as_str();
        let cost = NonZeroU32::new(cost).unwrap_or(NonZeroU32::MIN);
        let n = u64::from(cost.get());
        let day = now.div_euclid(DAY);
        let mut map = self.lock();
        let mut taken_day = None;
        if let Some(limit) = day_limit {
            if !map.get_mut(principal).is_some_and(|st| st.take(day, n)) {
                // Reserve a lease outside the lock: SQLite must not stall other principals.
                let held = map.get(principal).map_or(0, |st| st.held(day));
                drop(map);
                let need = n.saturating_sub(held);
                let granted = self.lease(principal, day, u64::from(limit), need)?;
                map = self.lock();
                let st = entry(&mut map, principal);
                st.give(day, granted);
                if !st.take(day, n) {
                    let retry = (day + 1) * DAY - now;
                    return Err(GuardError::RateLimited {
                        what: if n == 1 {
                            format!("daily quota of {limit} {unit} for {principal} is spent")
                        } else {
                            format!(
                                "daily quota of {limit} {unit} for {principal}: this request \
                                 needs {n} and fewer are left"
                            )
                        },
                        retry_after: Duration::from_secs(retry.max(1) as u64),
                    });
                }
            }
            taken_day = Some(day);
        }
        if let Some(limit) = minute_limit {
            let st = entry(&mut map, principal);
            let gcra = match st.minute.iter().position(|(l, _)| *l == limit.get()) {
                Some(i) => &st.minute[i].1,
                None => {
                    st.minute
                        .push((limit.get(), Gcra::direct(Quota::per_minute(limit))));
                    &st.minute[st.minute.len() - 1].1
                }
            };
            let refused = match gcra.check_n(cost) {
                Ok(Ok(())) => None,
                Ok(Err(not_until)) => Some((
                    format!("rate limit of {limit} {unit} per minute for {principal}"),
                    not_until.wait_time_from(DefaultClock::default().now()),
                )),
                // More than a minute's limit at once: never admissible, so no wait helps.
                Err(_) => Some((
                    format!(
                        "rate limit of {limit} {unit} per minute for {principal}: this request \
                         needs {n}, more than a minute allows"
                    ),
                    Duration::from_secs(60),
                )),
            };
            if let Some((what, wait)) = refused {
                if let Some(day) = taken_day {
                    st.give(day, n);
                }
                return Err(GuardError::RateLimited {
                    what,
                    retry_after: wait.max(Duration::from_millis(1)),
                });
            }
        }
        drop(map);
        Ok(Admission {
            limiter: self,
            principal,
            day: taken_day,
            units: n,
        })
    }

    /// Reserves a lease of day units in one transaction, at least `need` (nothing if fewer
    /// are left); returns how many (0: spent, or not enough left).
    fn lease(&self, principal: &str, day: i64, limit: u64, need: u64) -> Result<u64, GuardError> {
        Ok(self.db.transaction(|tx| {
            let used: i64 = tx
                .prepare_cached(
                    "SELECT COALESCE(SUM(count), 0) FROM daily_usage
                     WHERE principal = ?1 AND day = ?2",
                )?
                .query_row(params![principal, day], |r| r.get(0))?;
            let left = limit.saturating_sub(used.max(0) as u64);
            // A request that needs more than is left reserves nothing: it is refused whole.
            let grant = if need > left {
                0
            } else {
                (left / 16).clamp(1, MAX_LEASE).max(need).min(left)
            };
            if grant > 0 {
                tx.prepare_cached(
                    "INSERT INTO daily_usage (principal, day, count) VALUES (?1, ?2, ?3)
                     ON CONFLICT (principal, day) DO UPDATE SET count = count + ?3",
                )?
                .execute(params![principal, day, grant as i64])?;
            }
            Ok(grant)
        })?)
    }

    /// Returns every unused lease to the database (at a graceful stop).
    pub fn release_leases(&self) {
        let leases: Vec<(String, Lease)> = self
            .lock()
            .iter_mut()
            .filter_map(|(p, st)| st.lease.take().map(|l| (p.clone(), l)))
            .filter(|(_, l)| l.units > 0)
            .collect();
        for (principal, Lease { day, units: n }) in leases {
            let r = self.db.transaction(|tx| {
                tx.prepare_cached(
                    "UPDATE daily_usage SET count = max(count - ?3, 0)
                     WHERE principal = ?1 AND day = ?2",
                )?
                .execute(params![principal, day, n as i64])
            });
            if let Err(e) = r {
                tracing::error!(error = %e, "could not return a daily quota lease");
            }
        }
    }

    /// Requests counted for `principal` on the UTC day containing `now`: what the database
    /// holds, less this limiter's unused leases. (Read from another process, while a server
    /// runs, it includes that server's unused leases.)
    pub fn used_today(&self, principal: &str, now: i64) -> Result<u64, GuardError> {
        let day = now.div_euclid(DAY);
        let stored = self.db.read(|conn| {
            conn.query_row(
                "SELECT COALESCE(SUM(count), 0) FROM daily_usage WHERE principal = ?1 AND day = ?2",
                params![principal, day],
                |r| r.get::<_, i64>(0),
            )
        })?;
        let leased = self
            .lock()
            .get(principal)
            .and_then(|st| st.lease)
            .filter(|l| l.day == day)
            .map_or(0, |l| l.units);
        Ok((stored.max(0) as u64).saturating_sub(leased))
    }
}

/// `principal`'s state, created on first use (the only allocation, once per principal).
fn entry<'a>(
    map: &'a mut HashMap<String, PrincipalState>,
    principal: &str,
) -> &'a mut PrincipalState {
    if !map.contains_key(principal) {
        map.insert(principal.to_string(), PrincipalState::default());
    }
    #[allow(clippy::expect_used)]
    // Invariant: the entry exists, inserted just above if it was missing (and `map` is
    // borrowed mutably throughout, so nothing removed it).
    map.get_mut(principal)
        .expect("the principal's entry was just ensured")
}
