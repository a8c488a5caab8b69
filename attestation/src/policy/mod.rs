//! The appraisal policy: what genuine evidence must also satisfy to be accepted.
//!
//! Policies are written in TOML. These keys are a contract that other tools write:
//!
//! | key | type | default | meaning |
//! | --- | --- | --- | --- |
//! | `measurements` | hex strings (48 bytes) | any | SNP measurement or TDX MRTD must be one of these; empty or absent means any |
//! | `allow_debug` | bool | `false` | accept a debuggable guest (SNP policy DEBUG, TDX TD_ATTRIBUTES.DEBUG) |
//! | `allow_simulated` | bool | `false` | accept evidence from the simulated TEE. **Never set in production** |
//! | `products` | strings | all three | SNP products accepted: `"Milan"`, `"Genoa"`, `"Turin"` |
//! | `report_data` | hex (1–64 bytes) | any | report_data must equal this, right-padded with zeros to 64 bytes |
//! | `[min_tcb]` `bootloader`, `tee`, `snp`, `microcode`, `fmc` | integers | none | SNP reported_tcb floor per component (`fmc` applies on Turin only) |
//! | `tdx_statuses` | strings | `["UpToDate", "SWHardeningNeeded"]` | accepted TDX TCB statuses |
//!
//! Keys of this crate:
//!
//! | key | type | default | meaning |
//! | --- | --- | --- | --- |
//! | `vmpls` | integers 0–3 | any | SNP VMPLs accepted (e.g. `[0]` without an SVSM) |
//! | `allow_migration_agent` | bool | `false` | accept an SNP guest whose policy allows a migration agent |
//! | `host_data` | hex (32 bytes) | any | SNP host_data must equal this |
//! | `max_evidence_age_secs` | integer | none | reject evidence whose `generated_at` is older than this, or absent |
//! | `[tdx]` `rtmr0` … `rtmr3` | hex strings (48 bytes) | any | allowlist per TDX RTMR |
//! | `simulated_ark_sha256` | hex strings (32 bytes) | any | pin the simulated TEE's ARK by DER SHA-256 |
//! | `[gpu]` | table | none | how NVIDIA GPU evidence is judged; see [`crate::nvidia::policy`]. Without it no GPU evidence is accepted |
//!
//! Unknown keys are an error, so that a misspelt key cannot silently weaken a policy.
//!
//! ```toml
//! measurements = ["b747d55452e0b9e9079770a49e397c5e6d9573581e246da7baac4f28b5cdc5b1b6d19251b8ee600fd16a3708f58406f3"]
//! allow_debug = false
//! products = ["Milan", "Genoa"]
//! vmpls = [0]
//!
//! [min_tcb]
//! bootloader = 3
//! snp = 8
//! microcode = 115
//! ```
//!
//! `max_evidence_age_secs` judges a timestamp the attester writes into the evidence, which no
//! TEE signs; it catches stale or replayed files by mistake, not by an attacker. Freshness
//! against an attacker comes from binding a verifier nonce into `report_data`.

#[cfg(test)]
mod tests;

use serde::Deserialize;
use subtle::ConstantTimeEq as _;

use crate::claims::{Claims, Product, SnpClaims, TdxClaims};
use crate::error::{Error, decode_hex};
use crate::evidence::TeeKind;
use crate::nvidia::policy::GpuPolicy;
use crate::timestamp::Timestamp;
use crate::verdict::{Check, Failures};

/// TDX TCB statuses that Intel's collateral can report.
pub const TDX_STATUSES: [&str; 7] = [
    "UpToDate",
    "SWHardeningNeeded",
    "ConfigurationNeeded",
    "ConfigurationAndSWHardeningNeeded",
    "OutOfDate",
    "OutOfDateConfigurationNeeded",
    "Revoked",
];

/// How far in the future an attester's `generated_at` may be (clock skew).
const MAX_CLOCK_SKEW_SECS: u64 = 300;

/// Minimum SNP TCB, per component. `None` means no floor.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct MinTcb {
    /// PSP bootloader SVN.
    pub bootloader: Option<u8>,
    /// PSP OS SVN.
    pub tee: Option<u8>,
    /// SNP firmware SVN.
    pub snp: Option<u8>,
    /// Microcode patch level.
    pub microcode: Option<u8>,
    /// FMC SVN (Turin and later; ignored for reports without an FMC component).
    pub fmc: Option<u8>,
}

/// An appraisal policy. Build it with [`Policy::from_toml`] or start from
/// [`Policy::default`] and set fields.
///
/// The default accepts genuine SNP or TDX evidence from any product with any measurement, as
/// long as the guest is not debuggable, has no migration agent, and (TDX) its TCB is
/// `UpToDate` or `SWHardeningNeeded`. It never accepts simulated evidence.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Policy {
    /// Accepted measurements (SNP measurement or TDX MRTD); empty means any.
    pub measurements: Vec<[u8; 48]>,
    /// Accept debuggable guests.
    pub allow_debug: bool,
    /// Accept evidence from the simulated TEE, which proves nothing about hardware. TOML key
    /// `allow_simulated`.
    pub dangerous_allow_simulated: bool,
    /// Accept SNP guests whose policy allows association with a migration agent.
    pub allow_migration_agent: bool,
    /// Accepted SNP products.
    pub products: Vec<Product>,
    /// Required report_data.
    pub report_data: Option<[u8; 64]>,
    /// Required SNP host_data.
    pub host_data: Option<[u8; 32]>,
    /// Accepted SNP VMPLs; `None` means any.
    pub vmpls: Option<Vec<u32>>,
    /// SNP reported_tcb floor.
    pub min_tcb: MinTcb,
    /// Accepted TDX TCB statuses.
    pub tdx_statuses: Vec<String>,
    /// Allowlists for TDX RTMR0–3; an empty list means any.
    pub tdx_rtmrs: [Vec<[u8; 48]>; 4],
    /// Maximum age of the evidence's `generated_at`, in seconds.
    pub max_evidence_age_secs: Option<u64>,
    /// Pinned simulated ARKs (DER SHA-256); empty means any. Only consulted when simulated
    /// evidence is allowed at all.
    pub simulated_ark_sha256: Vec<[u8; 32]>,
    /// The `[gpu]` section; `None` accepts no GPU evidence.
    pub gpu: Option<GpuPolicy>,
}

impl Default for Policy {
    fn default() -> Self {
        Self {
            measurements: Vec::new(),
            allow_debug: false,
            dangerous_allow_simulated: false,
            allow_migration_agent: false,
            products: Product::ALL.to_vec(),
            report_data: None,
            host_data: None,
            vmpls: None,
            min_tcb: MinTcb::default(),
            tdx_statuses: vec!["UpToDate".to_owned(), "SWHardeningNeeded".to_owned()],
            tdx_rtmrs: Default::default(),
            max_evidence_age_secs: None,
            simulated_ark_sha256: Vec::new(),
            gpu: None,
        }
    }
}

/// The policy file as written; validated into a [`Policy`].
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct PolicyFile {
    measurements: Option<Vec<String>>,
    allow_debug: Option<bool>,
    allow_simulated: Option<bool>,
    allow_migration_agent: Option<bool>,
    products: Option<Vec<String>>,
    report_data: Option<String>,
    host_data: Option<String>,
    vmpls: Option<Vec<u32>>,
    min_tcb: Option<MinTcb>,
    tdx_statuses: Option<Vec<String>>,
    tdx: Option<TdxFile>,
    max_evidence_age_secs: Option<u64>,
    simulated_ark_sha256: Option<Vec<String>>,
    gpu: Option<GpuPolicy>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct TdxFile {
    rtmr0: Option<Vec<String>>,
    rtmr1: Option<Vec<String>>,
    rtmr2: Option<Vec<String>>,
    rtmr3: Option<Vec<String>>,
}

fn hex_list<const N: usize>(
    field: &'static str,
    list: Option<Vec<String>>,
) -> Result<Vec<[u8; N]>, Error> {
    list.unwrap_or_default()
        .iter()
        .map(|h| decode_hex::<N>(field, h, false))
        .collect()
}

impl Policy {
    /// Parses and validates a TOML policy. Absent keys take their defaults.
    pub fn from_toml(text: &str) -> Result<Self, Error> {
        let file: PolicyFile = toml::from_str(text).map_err(|e| Error::policy(e.to_string()))?;
        let defaults = Self::default();
        let products = match file.products {
            None => defaults.products,
            Some(names) => names.iter().map(|n| n.parse()).collect::<Result<_, _>>()?,
        };
        let tdx_statuses = match file.tdx_statuses {
            None => defaults.tdx_statuses,
            Some(statuses) => {
                if let Some(bad) = statuses
                    .iter()
                    .find(|s| !TDX_STATUSES.contains(&s.as_str()))
                {
                    return Err(Error::policy(format!(
                        "tdx_statuses: unknown status {bad:?} (one of {TDX_STATUSES:?})"
                    )));
                }
                statuses
            }
        };
        if let Some(bad) = file.vmpls.iter().flatten().find(|v| **v > 3) {
            return Err(Error::policy(format!(
                "vmpls: {bad} is not a VMPL (0 to 3)"
            )));
        }
        let tdx = file.tdx.unwrap_or_default();
        Ok(Self {
            measurements: hex_list("measurements", file.measurements)?,
            allow_debug: file.allow_debug.unwrap_or(false),
            dangerous_allow_simulated: file.allow_simulated.unwrap_or(false),
            allow_migration_agent: file.allow_migration_agent.unwrap_or(false),
            products,
            report_data: file
                .report_data
                .map(|h| Self::report_data_from_hex(&h))
                .transpose()?,
            host_data: file
                .host_data
                .map(|h| decode_hex::<32>("host_data", &h, false))
                .transpose()?,
            vmpls: file.vmpls,
            min_tcb: file.min_tcb.unwrap_or_default(),
            tdx_statuses,
            tdx_rtmrs: [
                hex_list("tdx.rtmr0", tdx.rtmr0)?,
                hex_list("tdx.rtmr1", tdx.rtmr1)?,
                hex_list("tdx.rtmr2", tdx.rtmr2)?,
                hex_list("tdx.rtmr3", tdx.rtmr3)?,
            ],
            max_evidence_age_secs: file.max_evidence_age_secs,
            simulated_ark_sha256: hex_list("simulated_ark_sha256", file.simulated_ark_sha256)?,
            gpu: file.gpu,
        })
    }

    /// Decodes a 48-byte measurement from hex (for a `--measurement` flag).
    pub fn measurement_from_hex(text: &str) -> Result<[u8; 48], Error> {
        decode_hex::<48>("measurement", text, false)
    }

    /// Decodes report_data from hex: 1 to 64 bytes, right-padded with zeros to 64 (a SHA-384
    /// digest is commonly bound into the first 48 bytes).
    pub fn report_data_from_hex(text: &str) -> Result<[u8; 64], Error> {
        decode_hex::<64>("report_data", text, true)
    }

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
        match claims {
            Claims::Snp(c) => self.evaluate_snp(tee, c, failures),
            Claims::Tdx(c) => self.evaluate_tdx(c, failures),
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
        failures.require(self.allow_debug || !c.debug, Check::Debug, || {
            "TD attributes have DEBUG set and the policy forbids debug".to_owned()
        });
        self.check_measurement(&c.mr_td, "MRTD", failures);
        self.check_report_data(&c.report_data, failures);
        for (index, (allowed, actual)) in self.tdx_rtmrs.iter().zip(c.rtmrs()).enumerate() {
            if !allowed.is_empty() {
                let listed = allowed.iter().any(|a| bool::from(a.ct_eq(actual)));
                failures.require(listed, Check::Rtmr, || {
                    format!(
                        "RTMR{index} {} is not on the allowlist",
                        hex::encode(actual)
                    )
                });
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
    }

    fn check_measurement(&self, actual: &[u8; 48], name: &str, failures: &mut Failures) {
        if !self.measurements.is_empty() {
            let listed = self
                .measurements
                .iter()
                .any(|m| bool::from(m.ct_eq(actual)));
            failures.require(listed, Check::Measurement, || {
                format!("{name} {} is not on the allowlist", hex::encode(actual))
            });
        }
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
