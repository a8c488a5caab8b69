//! Judging claims against a policy: each violated rule is recorded as a failed [`Check`],
//! the SNP and TDX rules apart.

use subtle::ConstantTimeEq as _;

use super::{MAX_CLOCK_SKEW_SECS, Policy};
use crate::claims::{Claims, SnpClaims, TdxClaims};
use crate::evidence::TeeKind;
use crate::timestamp::Timestamp;
use crate::verdict::{Check, Failures};

impl Policy {
    /// Evaluates the policy against decoded claims, recording each violated rule.
    pub(crate) fn evaluate(
        &self,
        tee: TeeKind,
        claims: &Claims,
        context: &Context,
        failures: &mut Failures,
    ) {
        if tee == TeeKind::Simulated {
            failures.require(self.dangerous_allow_simulated, Check::Simulated, || {
                "evidence comes from the simulated TEE and the policy does not set allow_simulated"
                    .to_owned()
            });
            if self.dangerous_allow_simulated && !self.simulated_ark_sha256.is_empty() {
                let pinned = context.simulated_ark_sha256.is_some_and(|fp| {
                    self.simulated_ark_sha256
                        .iter()
                        .any(|p| bool::from(p.ct_eq(&fp)))
                });
                failures.require(pinned, Check::SimulatedRoot, || {
                    "the simulated ARK is not one the policy pins".to_owned()
                });
            }
        }
        if tee == TeeKind::Sample {
            failures.require(self.dangerous_allow_simulated, Check::Simulated, || {
                "evidence is Trustee's sample evidence (no TEE, signed by nobody) and the \
                 policy does not set allow_simulated"
                    .to_owned()
            });
            // A policy that pins the simulated TEE's root pins evidence with a root; sample
            // evidence has none.
            failures.require(
                self.simulated_ark_sha256.is_empty(),
                Check::SimulatedRoot,
                || "the policy pins a simulated ARK and sample evidence has no root".to_owned(),
            );
        }
        match claims {
            Claims::Snp(c) => self.evaluate_snp(tee, c, failures),
            Claims::Tdx(c) => self.evaluate_tdx(c, failures),
            Claims::Sample(c) => {
                if tee != TeeKind::Sample {
                    failures.push(
                        Check::EvidenceFormat,
                        "sample claims from non-sample evidence",
                    );
                }
                self.check_measurement(&c.measurement, "measurement", failures);
                self.check_report_data(&c.report_data, failures);
            }
            // GPU evidence is judged by `nvidia::verify_gpu`, never by a CPU policy.
            Claims::NvidiaGpu(_) => failures.push(
                Check::EvidenceFormat,
                "GPU claims cannot be judged by a CPU attestation policy",
            ),
        }
        if let Some(max_age) = self.max_evidence_age_secs {
            match context.generated_at {
                None => failures.push(
                    Check::EvidenceAge,
                    "the policy limits evidence age but the evidence has no generated_at",
                ),
                Some(at) if at > context.now.saturating_add(MAX_CLOCK_SKEW_SECS) => failures.push(
                    Check::EvidenceAge,
                    format!(
                        "evidence generated_at {at} is in the future (now {})",
                        context.now
                    ),
                ),
                Some(at) if at.saturating_add(max_age) < context.now => failures.push(
                    Check::EvidenceAge,
                    format!(
                        "evidence generated at {at} is older than {max_age} s at {}",
                        context.now
                    ),
                ),
                Some(_) => {}
            }
        }
    }

    fn evaluate_snp(&self, tee: TeeKind, c: &SnpClaims, failures: &mut Failures) {
        failures.require(self.allow_debug || !c.policy.debug, Check::Debug, || {
            "guest policy allows debugging (DEBUG bit set) and the policy forbids debug".to_owned()
        });
        failures.require(
            self.allow_migration_agent || !c.policy.migrate_ma,
            Check::MigrationAgent,
            || "guest policy allows a migration agent and the policy forbids it".to_owned(),
        );
        if let Some(vmpls) = &self.vmpls {
            failures.require(vmpls.contains(&c.vmpl), Check::Vmpl, || {
                format!("VMPL {} is not in the allowed set {vmpls:?}", c.vmpl)
            });
        }
        self.check_measurement(&c.measurement, "measurement", failures);
        self.check_report_data(&c.report_data, failures);
        if let Some(expected) = &self.host_data {
            failures.require(
                bool::from(expected.ct_eq(&c.host_data)),
                Check::HostData,
                || "host_data does not equal the required value".to_owned(),
            );
        }
        if tee != TeeKind::Simulated {
            match c.product {
                Some(p) => {
                    failures.require(self.products.contains(&p), Check::AllowedProduct, || {
                        format!("product {p} is not among the allowed products")
                    })
                }
                None => failures.push(Check::AllowedProduct, "the product could not be determined"),
            }
            // Simulated evidence has no TCB worth judging; genuine SNP evidence does.
            failures.require(
                self.dangerous_accept_any_tcb || !self.min_tcb.is_empty(),
                Check::MinTcb,
                || {
                    "the policy sets no min_tcb: give a [min_tcb] floor, or write \
                     min_tcb = \"any\" to accept any TCB"
                        .to_owned()
                },
            );
        }
        let tcb = &c.reported_tcb;
        let floor = &self.min_tcb;
        let components = [
            ("bootloader", Some(tcb.bootloader), floor.bootloader),
            ("tee", Some(tcb.tee), floor.tee),
            ("snp", Some(tcb.snp), floor.snp),
            ("microcode", Some(tcb.microcode), floor.microcode),
            // Pre-Turin TCBs have no FMC component, so an fmc floor does not apply to them.
            ("fmc", tcb.fmc, floor.fmc.filter(|_| tcb.fmc.is_some())),
        ];
        for (name, actual, minimum) in components {
            if let (Some(actual), Some(minimum)) = (actual, minimum) {
                failures.require(actual >= minimum, Check::MinTcb, || {
                    format!("reported_tcb {name} {actual} is below the minimum {minimum}")
                });
            }
        }
    }

    fn evaluate_tdx(&self, c: &TdxClaims, failures: &mut Failures) {
        // Any TD_ATTRIBUTES.TUD bit (DEBUG, and the profiling bits 4-6) makes the TD
        // untrusted: the host can inspect it.
        let tud = c.td_attributes.first().copied().unwrap_or(0xFF);
        failures.require(self.allow_debug || tud == 0, Check::Debug, || {
            format!(
                "TD attributes have TUD bits {tud:#04x} set (DEBUG or profiling) and the policy \
                 forbids debug"
            )
        });
        self.check_measurement(&c.mr_td, "MRTD", failures);
        self.check_report_data(&c.report_data, failures);
        let os_open = self.dangerous_accept_any_os || self.dangerous_accept_any_measurement;
        for (index, (allowed, actual)) in self.tdx_rtmrs.iter().zip(c.rtmrs()).enumerate() {
            let pinned = self.tdx_pinned_rtmrs.get(index).copied().unwrap_or(true);
            if !allowed.is_empty() {
                let listed = allowed.iter().any(|a| bool::from(a.ct_eq(actual)));
                failures.require(listed, Check::Rtmr, || {
                    format!(
                        "RTMR{index} {} is not on the allowlist",
                        hex::encode(actual)
                    )
                });
            } else if pinned && !os_open {
                failures.push(
                    Check::Rtmr,
                    format!(
                        "the policy pins no RTMR{index}: MRTD identifies only the firmware, the \
                         OS is measured into RTMR0-3; pin them in [tdx], or set \
                         tdx.i_understand_this_accepts_any_os = true"
                    ),
                );
            }
        }
        // Without a status the quote did not verify, which is already a failure.
        if let Some(status) = &c.tcb_status {
            failures.require(
                self.tdx_statuses.contains(status),
                Check::TdxTcbStatus,
                || {
                    format!(
                        "TCB status {status} (advisories {:?}) is not among {:?}",
                        c.advisory_ids, self.tdx_statuses
                    )
                },
            );
        }
        if let Some(minimum) = self.tdx_min_tcb_evaluation_data_number {
            match c.tcb_evaluation_data_number {
                Some(n) => failures.require(n >= minimum, Check::TcbEvaluationDataNumber, || {
                    format!(
                        "the TDX collateral's tcbEvaluationDataNumber {n} is below the \
                         policy's minimum {minimum} (refresh the collateral)"
                    )
                }),
                None => failures.push(
                    Check::TcbEvaluationDataNumber,
                    "the policy sets min_tcb_evaluation_data_number but no verified collateral \
                     gives one",
                ),
            }
        }
    }

    fn check_measurement(&self, actual: &[u8; 48], name: &str, failures: &mut Failures) {
        if self.measurements.is_empty() {
            failures.require(
                self.dangerous_accept_any_measurement,
                Check::Measurement,
                || {
                    "the policy pins no measurement: list the accepted measurements, or write \
                 measurements = \"any\" with i_understand_this_accepts_any_guest = true"
                        .to_owned()
                },
            );
            return;
        }
        let listed = self
            .measurements
            .iter()
            .any(|m| bool::from(m.ct_eq(actual)));
        failures.require(listed, Check::Measurement, || {
            format!("{name} {} is not on the allowlist", hex::encode(actual))
        });
    }

    fn check_report_data(&self, actual: &[u8; 64], failures: &mut Failures) {
        if let Some(expected) = &self.report_data {
            failures.require(
                bool::from(expected.ct_eq(actual)),
                Check::ReportData,
                || "report_data does not equal the required value".to_owned(),
            );
        }
    }
}

/// What policy evaluation needs besides the claims.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Context {
    pub(crate) now: Timestamp,
    pub(crate) generated_at: Option<Timestamp>,
    pub(crate) simulated_ark_sha256: Option<[u8; 32]>,
}
