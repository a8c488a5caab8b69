//! Privacy budgets: an odometer per principal and window, kept in SQLite.
//!
//! A request reserves its charge before anything is released, in one IMMEDIATE transaction
//! that reads what the window has spent, checks that the new total stays within the budget,
//! and writes it. Concurrent requests serialize on that transaction, so the budget is never
//! overspent. A request refused for budget releases nothing and writes nothing; a reserved
//! charge is handed back only if the engine fails before any output exists.
//!
//! The spent total is kept as pure ε (basic composition) plus zCDP ρ (Gaussian releases),
//! and compared with the budget as `ε + ρ + 2√(ρ ln(1/δ))` at the budget's δ.

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};

use rusqlite::{OptionalExtension, params};
use serde::{Deserialize, Serialize};

use super::policy::Charge;
use crate::storage::{Database, StorageError};

/// Budget settings.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BudgetConfig {
    /// ε each principal may spend per window.
    pub epsilon: f64,
    /// δ at which zCDP spending converts to ε.
    pub delta: f64,
    /// The window length in seconds (86400: a UTC day).
    pub window_seconds: u64,
    /// ε each data subject (a request's `x-subject-id`) may have spent on it per window,
    /// across all principals; absent: no per-subject budget. The spend is kept under a keyed
    /// hash of the subject id and outlives the subject's erasure until the window ends.
    pub subject_epsilon: Option<f64>,
}

impl Default for BudgetConfig {
    fn default() -> Self {
        Self {
            epsilon: 10.0,
            delta: 1e-6,
            window_seconds: 86_400,
            subject_epsilon: None,
        }
    }
}

/// A privacy-budget setting outside its range.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct BudgetConfigError(String);

impl BudgetConfig {
    /// Checks the ranges.
    pub fn validate(&self) -> Result<(), BudgetConfigError> {
        if !(self.epsilon.is_finite() && self.epsilon > 0.0) {
            return Err(BudgetConfigError(format!(
                "privacy budget epsilon must be finite and > 0, got {}",
                self.epsilon
            )));
        }
        if !(self.delta > 0.0 && self.delta < 1.0) {
            return Err(BudgetConfigError(format!(
                "privacy budget delta must be in (0, 1), got {}",
                self.delta
            )));
        }
        if let Some(e) = self.subject_epsilon
            && !(e.is_finite() && e > 0.0)
        {
            return Err(BudgetConfigError(format!(
                "privacy budget subject_epsilon must be finite and > 0, got {e}"
            )));
        }
        if !(60..=366 * 86_400).contains(&self.window_seconds) {
            return Err(BudgetConfigError(format!(
                "privacy budget window_seconds must be 60 to 31622400, got {}",
                self.window_seconds
            )));
        }
        Ok(())
    }
}

/// A principal's budget in the current window.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct BudgetStatus {
    /// ε per window.
    pub epsilon_budget: f64,
    /// ε spent in this window (at the budget's δ).
    pub epsilon_spent: f64,
    /// ε left.
    pub epsilon_remaining: f64,
    /// The δ of the accounting.
    pub delta: f64,
    /// Window start, seconds since the epoch.
    pub window_start: i64,
    /// Window end (exclusive).
    pub window_end: i64,
}

/// A reserved charge, to refund if nothing is released.
#[derive(Debug)]
#[must_use = "refund a reservation whose output is never released"]
pub struct Reservation {
    principal: String,
    subject: Option<String>,
    window: i64,
    charge: Charge,
    status: BudgetStatus,
}

impl Reservation {
    /// The charge reserved.
    pub fn charge(&self) -> Charge {
        self.charge
    }

    /// The budget just after this reservation.
    pub fn status(&self) -> BudgetStatus {
        self.status
    }
}

/// Why a reservation failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BudgetError {
    /// The charge does not fit.
    #[error(
        "privacy budget exhausted for {principal}: this request needs epsilon {needed:.6}, \
         {remaining:.6} of {budget} remains until {window_end} (unix time)"
    )]
    Exhausted {
        /// The principal.
        principal: String,
        /// ε the request needs.
        needed: f64,
        /// ε left.
        remaining: f64,
        /// ε per window.
        budget: f64,
        /// When the window resets.
        window_end: i64,
    },
    /// The data subject's budget does not fit the charge.
    #[error(
        "the privacy budget of this data subject is exhausted: this request needs epsilon \
         {needed:.6}, {remaining:.6} of {budget} remains until {window_end} (unix time)"
    )]
    SubjectExhausted {
        /// ε the request needs.
        needed: f64,
        /// ε left.
        remaining: f64,
        /// ε per window.
        budget: f64,
        /// When the window resets.
        window_end: i64,
    },
    /// The database failed.
    #[error(transparent)]
    Storage(#[from] StorageError),
}

/// The budget store.
#[derive(Clone)]
pub struct Budgets {
    db: Arc<Database>,
    config: BudgetConfig,
    /// The last window whose start deleted the per-subject rows of ended windows.
    swept: Arc<AtomicI64>,
}

const PRINCIPAL: &str = "principal";
const SUBJECT: &str = "subject";

fn spent_in(
    tx: &rusqlite::Connection,
    scope: &str,
    name: &str,
    window: i64,
) -> rusqlite::Result<Charge> {
    Ok(tx
        .prepare_cached(
            "SELECT epsilon, rho FROM privacy_spend WHERE scope = ?1 AND name = ?2 AND window = ?3",
        )?
        .query_row(params![scope, name, window], |r| {
            Ok(Charge {
                epsilon: r.get(0)?,
                rho: r.get(1)?,
            })
        })
        .optional()?
        .unwrap_or_default())
}

fn write_spent(
    tx: &rusqlite::Transaction<'_>,
    scope: &str,
    name: &str,
    window: i64,
    total: Charge,
) -> rusqlite::Result<()> {
    tx.prepare_cached(
        "INSERT INTO privacy_spend (scope, name, window, epsilon, rho) VALUES (?1, ?2, ?3, ?4, ?5)
         ON CONFLICT (scope, name, window) DO UPDATE SET epsilon = excluded.epsilon, rho = excluded.rho",
    )?
    .execute(params![scope, name, window, total.epsilon, total.rho])?;
    Ok(())
}

fn plus(a: Charge, b: Charge) -> Charge {
    Charge {
        epsilon: a.epsilon + b.epsilon,
        rho: a.rho + b.rho,
    }
}

/// Which budget refused.
enum Refused {
    Principal(Charge),
    Subject(Charge, f64),
}

impl Budgets {
    /// Budgets over `db`.
    pub fn new(db: Arc<Database>, config: BudgetConfig) -> Self {
        Self {
            db,
            config,
            swept: Arc::new(AtomicI64::new(i64::MIN)),
        }
    }

    /// Deletes per-subject spend of windows that have ended, once per window: it no longer
    /// limits anything, and a forgotten subject's spend is kept only while it does.
    fn sweep_subjects(&self, window: i64) {
        if self.swept.fetch_max(window, Ordering::AcqRel) >= window {
            return;
        }
        let result = self.db.transaction(|tx| {
            tx.prepare_cached("DELETE FROM privacy_spend WHERE scope = ?1 AND window < ?2")?
                .execute(params![SUBJECT, window])
        });
        if let Err(e) = result {
            tracing::error!(error = %e, "could not delete the per-subject spend of ended windows");
        }
    }

    /// The settings.
    pub fn config(&self) -> &BudgetConfig {
        &self.config
    }

    fn window(&self, now: i64) -> i64 {
        now.div_euclid(self.config.window_seconds as i64)
    }

    /// Reserves `charge` for `principal` at `now`, or refuses without writing anything.
    pub fn reserve(
        &self,
        principal: &str,
        charge: Charge,
        now: i64,
    ) -> Result<Reservation, BudgetError> {
        self.reserve_for(principal, None, charge, now)
    }

    /// Reserves `charge` for `principal` and, when a per-subject budget is configured, for
    /// the data subject `subject` (its pseudonym), both in one transaction; refuses without
    /// writing anything if either does not fit.
    pub fn reserve_for(
        &self,
        principal: &str,
        subject: Option<&str>,
        charge: Charge,
        now: i64,
    ) -> Result<Reservation, BudgetError> {
        let window = self.window(now);
        let cfg = self.config;
        let subject = subject.filter(|_| cfg.subject_epsilon.is_some());
        if subject.is_some() {
            self.sweep_subjects(window);
        }
        let outcome = self.db.transaction(|tx| {
            let spent = spent_in(tx, PRINCIPAL, principal, window)?;
            let total = plus(spent, charge);
            if total.epsilon_at(cfg.delta) > cfg.epsilon {
                return Ok(Err(Refused::Principal(spent)));
            }
            if let (Some(name), Some(limit)) = (subject, cfg.subject_epsilon) {
                let s_spent = spent_in(tx, SUBJECT, name, window)?;
                let s_total = plus(s_spent, charge);
                if s_total.epsilon_at(cfg.delta) > limit {
                    return Ok(Err(Refused::Subject(s_spent, limit)));
                }
                write_spent(tx, SUBJECT, name, window, s_total)?;
            }
            write_spent(tx, PRINCIPAL, principal, window, total)?;
            Ok(Ok(total))
        })?;
        let w = cfg.window_seconds as i64;
        let window_end = (window + 1) * w;
        match outcome {
            Ok(after) => Ok(Reservation {
                principal: principal.to_string(),
                subject: subject.map(str::to_string),
                window,
                charge,
                status: self.status_of(window, after),
            }),
            Err(Refused::Principal(spent)) => {
                let used = spent.epsilon_at(cfg.delta);
                Err(BudgetError::Exhausted {
                    principal: principal.to_string(),
                    needed: plus(spent, charge).epsilon_at(cfg.delta) - used,
                    remaining: (cfg.epsilon - used).max(0.0),
                    budget: cfg.epsilon,
                    window_end,
                })
            }
            Err(Refused::Subject(spent, limit)) => {
                let used = spent.epsilon_at(cfg.delta);
                Err(BudgetError::SubjectExhausted {
                    needed: plus(spent, charge).epsilon_at(cfg.delta) - used,
                    remaining: (limit - used).max(0.0),
                    budget: limit,
                    window_end,
                })
            }
        }
    }

    /// Hands back a reservation whose output was never released.
    pub fn refund(&self, r: Reservation) {
        let result = self.db.transaction(|tx| {
            let mut stmt = tx.prepare_cached(
                "UPDATE privacy_spend SET epsilon = max(epsilon - ?4, 0), rho = max(rho - ?5, 0)
                 WHERE scope = ?1 AND name = ?2 AND window = ?3",
            )?;
            stmt.execute(params![
                PRINCIPAL,
                r.principal,
                r.window,
                r.charge.epsilon,
                r.charge.rho
            ])?;
            if let Some(subject) = &r.subject {
                stmt.execute(params![
                    SUBJECT,
                    subject,
                    r.window,
                    r.charge.epsilon,
                    r.charge.rho
                ])?;
            }
            Ok(())
        });
        if let Err(e) = result {
            tracing::error!(error = %e, "could not refund a privacy reservation");
        }
    }

    /// The principal's budget at `now`.
    pub fn status(&self, principal: &str, now: i64) -> Result<BudgetStatus, StorageError> {
        let window = self.window(now);
        let spent = self
            .db
            .read(|conn| spent_in(conn, PRINCIPAL, principal, window))?;
        Ok(self.status_of(window, spent))
    }

    /// A principal's budget in `window`, having spent `spent`.
    fn status_of(&self, window: i64, spent: Charge) -> BudgetStatus {
        let cfg = &self.config;
        let used = spent.epsilon_at(cfg.delta);
        let w = cfg.window_seconds as i64;
        BudgetStatus {
            epsilon_budget: cfg.epsilon,
            epsilon_spent: used,
            epsilon_remaining: (cfg.epsilon - used).max(0.0),
            delta: cfg.delta,
            window_start: window * w,
            window_end: (window + 1) * w,
        }
    }
}

#[cfg(test)]
mod tests;
