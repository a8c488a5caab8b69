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
}

impl Default for BudgetConfig {
    fn default() -> Self {
        Self {
            epsilon: 10.0,
            delta: 1e-6,
            window_seconds: 86_400,
        }
    }
}

impl BudgetConfig {
    /// Checks the ranges.
    pub fn validate(&self) -> Result<(), String> {
        if !(self.epsilon.is_finite() && self.epsilon > 0.0) {
            return Err(format!(
                "privacy budget epsilon must be finite and > 0, got {}",
                self.epsilon
            ));
        }
        if !(self.delta > 0.0 && self.delta < 1.0) {
            return Err(format!(
                "privacy budget delta must be in (0, 1), got {}",
                self.delta
            ));
        }
        if !(60..=366 * 86_400).contains(&self.window_seconds) {
            return Err(format!(
                "privacy budget window_seconds must be 60 to 31622400, got {}",
                self.window_seconds
            ));
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
    /// The database failed.
    #[error(transparent)]
    Storage(#[from] StorageError),
}

/// The budget store.
#[derive(Clone)]
pub struct Budgets {
    db: Arc<Database>,
    config: BudgetConfig,
}

const PRINCIPAL: &str = "principal";

impl Budgets {
    /// Budgets over `db`.
    pub fn new(db: Arc<Database>, config: BudgetConfig) -> Self {
        Self { db, config }
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
        let window = self.window(now);
        let cfg = self.config;
        let outcome = self.db.transaction(|tx| {
            let spent: Charge = tx
                .prepare_cached(
                    "SELECT epsilon, rho FROM privacy_spend
                     WHERE scope = ?1 AND name = ?2 AND window = ?3",
                )?
                .query_row(params![PRINCIPAL, principal, window], |r| {
                    Ok(Charge {
                        epsilon: r.get(0)?,
                        rho: r.get(1)?,
                    })
                })
                .optional()?
                .unwrap_or_default();
            let total = Charge {
                epsilon: spent.epsilon + charge.epsilon,
                rho: spent.rho + charge.rho,
            };
            if total.epsilon_at(cfg.delta) > cfg.epsilon {
                return Ok(Err(spent));
            }
            let after = total;
            tx.prepare_cached(
                "INSERT INTO privacy_spend (scope, name, window, epsilon, rho)
                 VALUES (?1, ?2, ?3, ?4, ?5)
                 ON CONFLICT (scope, name, window)
                 DO UPDATE SET epsilon = excluded.epsilon, rho = excluded.rho",
            )?
            .execute(params![
                PRINCIPAL,
                principal,
                window,
                total.epsilon,
                total.rho
            ])?;
            Ok(Ok(after))
        })?;
        let w = cfg.window_seconds as i64;
        match outcome {
            Ok(after) => {
                let used = after.epsilon_at(cfg.delta);
                Ok(Reservation {
                    principal: principal.to_string(),
                    window,
                    charge,
                    status: BudgetStatus {
                        epsilon_budget: cfg.epsilon,
                        epsilon_spent: used,
                        epsilon_remaining: (cfg.epsilon - used).max(0.0),
                        delta: cfg.delta,
                        window_start: window * w,
                        window_end: (window + 1) * w,
                    },
                })
            }
            Err(spent) => {
                let used = spent.epsilon_at(cfg.delta);
                Err(BudgetError::Exhausted {
                    principal: principal.to_string(),
                    needed: (Charge {
                        epsilon: spent.epsilon + charge.epsilon,
                        rho: spent.rho + charge.rho,
                    })
                    .epsilon_at(cfg.delta)
                        - used,
                    remaining: (cfg.epsilon - used).max(0.0),
                    budget: cfg.epsilon,
                    window_end: (window + 1) * cfg.window_seconds as i64,
                })
            }
        }
    }

    /// Hands back a reservation whose output was never released.
    pub fn refund(&self, r: Reservation) {
        let result = self.db.transaction(|tx| {
            tx.prepare_cached(
                "UPDATE privacy_spend SET epsilon = max(epsilon - ?4, 0), rho = max(rho - ?5, 0)
                 WHERE scope = ?1 AND name = ?2 AND window = ?3",
            )?
            .execute(params![
                PRINCIPAL,
                r.principal,
                r.window,
                r.charge.epsilon,
                r.charge.rho
            ])
        });
        if let Err(e) = result {
            tracing::error!(error = %e, "could not refund a privacy reservation");
        }
    }

    /// The principal's budget at `now`.
    pub fn status(&self, principal: &str, now: i64) -> Result<BudgetStatus, StorageError> {
        let window = self.window(now);
        let spent: Charge = self
            .db
            .read(|conn| {
                conn.prepare_cached(
                    "SELECT epsilon, rho FROM privacy_spend
                     WHERE scope = ?1 AND name = ?2 AND window = ?3",
                )?
                .query_row(params![PRINCIPAL, principal, window], |r| {
                    Ok(Charge {
                        epsilon: r.get(0)?,
                        rho: r.get(1)?,
                    })
                })
                .optional()
            })?
            .unwrap_or_default();
        let used = spent.epsilon_at(self.config.delta);
        let w = self.config.window_seconds as i64;
        Ok(BudgetStatus {
            epsilon_budget: self.config.epsilon,
            epsilon_spent: used,
            epsilon_remaining: (self.config.epsilon - used).max(0.0),
            delta: self.config.delta,
            window_start: window * w,
            window_end: (window + 1) * w,
        })
    }
}

#[cfg(test)]
mod tests;
