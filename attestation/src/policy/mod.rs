//! The appraisal policy: what genuine evidence must also satisfy to be accepted.
//!
//! A policy pins what it accepts. A policy file that does not say which software it accepts
//! is refused when it is loaded, and a policy that deliberately accepts any guest, any TCB or
//! any OS must say so in words (the `i_understand_…` keys and the `"any"` values below), so
//! that no typo, empty file or forgotten key can open it.
//!
//! Policies are written in TOML. These keys are a contract that other tools write:
//!
//! | key | type | default | meaning |
//! | --- | --- | --- | --- |
//! | `measurements` | hex strings (48 bytes), or `"any"` | **required** | SNP launch measurement or TDX MRTD must be one of these. `"any"` needs `i_understand_this_accepts_any_guest = true` |
//! | `i_understand_this_accepts_any_guest` | bool | `false` | confirms `measurements = "any"` |
//! | `allow_debug` | bool | `false` | accept a debuggable guest (SNP policy DEBUG, any TDX TD_ATTRIBUTES.TUD bit) |
//! | `allow_simulated` | bool | `false` | accept evidence from the simulated TEE. **Never set in production** |
//! | `products` | strings | all three | SNP products accepted: `"Milan"`, `"Genoa"`, `"Turin"` |
//! | `report_data` | hex (1–64 bytes) | any | report_data must equal this, right-padded with zeros to 64 bytes |
//! | `[min_tcb]` `bootloader`, `tee`, `snp`, `microcode`, `fmc` | integers | **required for SNP** | SNP reported_tcb floor per component (`fmc` applies on Turin only). `min_tcb = "any"` accepts any TCB |
//! | `tdx_statuses` | strings | `["UpToDate", "SWHardeningNeeded"]` | accepted TDX TCB statuses |
//!
//! Keys of this crate:
//!
//! | key | type | default | meaning |
//! | --- | --- | --- | --- |
//! | `vmpls` | integers 0–3 | `[0]` | SNP VMPLs accepted (list `[0, 1]` or more for a guest under an SVSM) |
//! | `allow_migration_agent` | bool | `false` | accept an SNP guest whose policy allows a migration agent |
//! | `host_data` | hex (32 bytes) | any | SNP host_data must equal this |
//! | `max_evidence_age_secs` | integer | none | reject evidence whose `generated_at` is older than this, or absent |
//! | `[tdx]` `rtmr0` … `rtmr3` | hex strings (48 bytes) | **required for TDX** | allowlist per TDX RTMR |
//! | `[tdx]` `pinned_rtmrs` | strings `"rtmr0"` … `"rtmr3"` | all four | which RTMRs the policy pins; each needs its allowlist, the others are not checked |
//! | `[tdx]` `i_understand_this_accepts_any_os` | bool | `false` | accept any OS on the pinned firmware (MRTD): no RTMR need be pinned |
//! | `[tdx]` `min_tcb_evaluation_data_number` | integer | none | the verifier's TDX collateral (TCB info and QE identity) must be at least this recent |
//! | `simulated_ark_sha256` | hex strings (32 bytes) | any | pin the simulated TEE's ARK by DER SHA-256 |
//! | `[gpu]` | table | none | how NVIDIA GPU evidence is judged; see [`crate::nvidia::policy`]. Without it no GPU evidence is accepted |
//!
//! Unknown keys are an error, so that a misspelt key cannot silently weaken a policy.
//!
//! ```toml
//! measurements = ["b747d55452e0b9e9079770a49e397c5e6d9573581e246da7baac4f28b5cdc5b1b6d19251b8ee600fd16a3708f58406f3"]
//! allow_debug = false
//! products = ["Milan", "Genoa"]
//!
//! [min_tcb]
//! bootloader = 3
//! snp = 8
//! microcode = 115
//! ```
//!
//! # What identifies the software
//!
//! On SEV-SNP the launch measurement covers the initial guest image (firmware, and with a
//! measured direct boot the kernel, initrd and command line). On TDX, MRTD covers only the
//! TD's initial memory, which is the virtual firmware (TDVF/OVMF): any kernel and root file
//! system boot on the same firmware with the same MRTD. The OS is measured into RTMR0–3
//! (RTMR0 firmware configuration, RTMR1 boot loader and kernel, RTMR2 kernel command line and
//! initrd, RTMR3 run time). So a TDX policy pins MRTD **and** the RTMRs; one that pins only
//! MRTD must say `i_understand_this_accepts_any_os = true`.
//!
//! # Rules checked when the evidence is judged
//!
//! - A policy with no measurement and no `"any"` rejects everything ([`Policy::default`] is
//!   such a policy until measurements are set).
//! - SNP (not simulated) evidence needs a `min_tcb` floor with at least one component, or
//!   `min_tcb = "any"`. Simulated evidence has no TCB to judge.
//! - TDX evidence needs every pinned RTMR (all four unless `pinned_rtmrs` says otherwise) to
//!   have an allowlist, unless the policy accepts any OS or any guest.
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

/// The word that opens `measurements` or `min_tcb`.
const ANY: &str = "any";

/// How a policy file may say which guests it accepts; quoted in load errors.
const MEASUREMENTS_HOW: &str = "list the accepted measurements (SNP launch measurement or TDX \
     MRTD, 48 bytes hex each), or, to accept any genuine guest whatever software it runs, write \
     measurements = \"any\" and i_understand_this_accepts_any_guest = true";

/// The names of the TDX runtime measurement registers, by index.
const RTMR_NAMES: [&str; 4] = ["rtmr0", "rtmr1", "rtmr2", "rtmr3"];

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

impl MinTcb {
    /// Whether no component has a floor.
    pub fn is_empty(&self) -> bool {
        *self == Self::default()
    }
}

/// An appraisal policy. Build it with [`Policy::from_toml`], or start from
/// [`Policy::default`] and set fields.
///
/// The default pins nothing and therefore accepts no evidence: set `measurements` (and for
/// SNP a `min_tcb`, for TDX the RTMR allowlists) before use. It forbids debug, migration
/// agents and simulated evidence, accepts VMPL 0 only, and (TDX) a TCB status of `UpToDate`
/// or `SWHardeningNeeded`.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Policy {
    /// Accepted measurements (SNP measurement or TDX MRTD). Empty rejects every guest unless
    /// `dangerous_accept_any_measurement` is set.
    pub measurements: Vec<[u8; 48]>,
    /// Accept any measurement: any software on genuine hardware. TOML `measurements = "any"`
    /// with `i_understand_this_accepts_any_guest = true`.
    pub dangerous_accept_any_measurement: bool,
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
    /// Accepted SNP VMPLs; `None` means any (only [`Policy::dangerous_authenticity_only`]
    /// builds that).
    pub vmpls: Option<Vec<u32>>,
    /// SNP reported_tcb floor. Empty rejects SNP evidence unless `dangerous_accept_any_tcb`
    /// is set.
    pub min_tcb: MinTcb,
    /// Accept SNP evidence at any TCB. TOML `min_tcb = "any"`.
    pub dangerous_accept_any_tcb: bool,
    /// Accepted TDX TCB statuses.
    pub tdx_statuses: Vec<String>,
    /// Allowlists for TDX RTMR0–3.
    pub tdx_rtmrs: [Vec<[u8; 48]>; 4],
    /// Which RTMRs must have an allowlist (TOML `[tdx] pinned_rtmrs`; all four by default).
    pub tdx_pinned_rtmrs: [bool; 4],
    /// Accept any OS on the pinned TDX firmware: no RTMR need be pinned. TOML `[tdx]
    /// i_understand_this_accepts_any_os = true`.
    pub dangerous_accept_any_os: bool,
    /// Minimum `tcbEvaluationDataNumber` of the TDX collateral (TCB info and QE identity).
    pub tdx_min_tcb_evaluation_data_number: Option<u32>,
    /// Maximum age of the evidence's `generated_at`, in seconds.
    pub max_evidence_age_secs: Option<u64>,
    /// Pinned simulated ARKs (DER SHA-256); empty means any. Only consulted when simulated
    /// evidence is allowed at all.
    pub simulated_ark_sha256: Vec<[u8; 32]>,
    /// The `[gpu]` section; `None` accepts no GPU evidence.
    pub gpu: Option<GpuPolicy>,
    /// False only for [`Policy::dangerous_authenticity_only`]; reported in the verdict.
    applied: bool,
}

impl Default for Policy {
    fn default() -> Self {
        Self {
            measurements: Vec::new(),
            dangerous_accept_any_measurement: false,
            allow_debug: false,
            dangerous_allow_simulated: false,
            allow_migration_agent: false,
            products: Product::ALL.to_vec(),
            report_data: None,
            host_data: None,
            vmpls: Some(vec![0]),
            min_tcb: MinTcb::default(),
            dangerous_accept_any_tcb: false,
            tdx_statuses: vec!["UpToDate".to_owned(), "SWHardeningNeeded".to_owned()],
            tdx_rtmrs: Default::default(),
            tdx_pinned_rtmrs: [true; 4],
            dangerous_accept_any_os: false,
            tdx_min_tcb_evaluation_data_number: None,
            max_evidence_age_secs: None,
            simulated_ark_sha256: Vec::new(),
            gpu: None,
            applied: true,
        }
    }
}

/// The policy file as written; validated into a [`Policy`].
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct PolicyFile {
    /// A list of hex strings, or the word `"any"`.
    measurements: Option<toml::Value>,
    i_understand_this_accepts_any_guest: Option<bool>,
    allow_debug: Option<bool>,
    allow_simulated: Option<bool>,
    allow_migration_agent: Option<bool>,
    products: Option<Vec<String>>,
    report_data: Option<String>,
    host_data: Option<String>,
    vmpls: Option<Vec<u32>>,
    /// A `[min_tcb]` table, or the word `"any"`.
    min_tcb: Option<toml::Value>,
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
    pinned_rtmrs: Option<Vec<String>>,
    i_understand_this_accepts_any_os: Option<bool>,
    min_tcb_evaluation_data_number: Option<u32>,
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

/// `measurements`: the allowlist, and whether it is the word `"any"`.
fn measurements(
    value: Option<toml::Value>,
    any_confirmed: bool,
) -> Result<(Vec<[u8; 48]>, bool), Error> {
    let list = match value {
        None => {
            return Err(Error::PolicyMissing {
                key: "measurements",
                how: MEASUREMENTS_HOW,
            });
        }
        Some(toml::Value::String(word)) if word == ANY => {
            if !any_confirmed {
                return Err(Error::PolicyMissing {
                    key: "i_understand_this_accepts_any_guest",
                    how: "measurements = \"any\" accepts any genuine guest, whatever software \
                          it runs; confirm it with i_understand_this_accepts_any_guest = true, \
                          or list the accepted measurements",
                });
            }
            return Ok((Vec::new(), true));
        }
        Some(toml::Value::Array(items)) => items,
        Some(other) => {
            return Err(Error::policy(format!(
                "measurements: expected a list of hex strings or \"any\", got {other}"
            )));
        }
    };
    if any_confirmed {
        return Err(Error::policy(
            "i_understand_this_accepts_any_guest is set but measurements lists values; \
             write measurements = \"any\" to accept any guest, or drop the confirmation",
        ));
    }
    if list.is_empty() {
        return Err(Error::PolicyMissing {
            key: "measurements",
            how: MEASUREMENTS_HOW,
        });
    }
    let hex: Vec<String> = list
        .into_iter()
        .map(|v| match v {
            toml::Value::String(s) => Ok(s),
            other => Err(Error::policy(format!(
                "measurements: expected hex strings, got {other}"
            ))),
        })
        .collect::<Result<_, _>>()?;
    Ok((hex_list("measurements", Some(hex))?, false))
}

/// `min_tcb`: the floor, and whether it is the word `"any"`.
fn min_tcb(value: Option<toml::Value>) -> Result<(MinTcb, bool), Error> {
    match value {
        None => Ok((MinTcb::default(), false)),
        Some(toml::Value::String(word)) if word == ANY => Ok((MinTcb::default(), true)),
        Some(table @ toml::Value::Table(_)) => {
            let floor: MinTcb = table
                .try_into()
                .map_err(|e: toml::de::Error| Error::policy(format!("min_tcb: {e}")))?;
            if floor.is_empty() {
                return Err(Error::PolicyMissing {
                    key: "min_tcb",
                    how: "the [min_tcb] table sets no component; give at least one floor \
                          (bootloader, tee, snp, microcode, fmc), or write min_tcb = \"any\"",
                });
            }
            Ok((floor, false))
        }
        Some(other) => Err(Error::policy(format!(
            "min_tcb: expected a table of SVN floors or \"any\", got {other}"
        ))),
    }
}

/// The `[tdx]` table: allowlists, which RTMRs are pinned, any-OS, the collateral floor.
struct TdxRules {
    rtmrs: [Vec<[u8; 48]>; 4],
    pinned: [bool; 4],
    any_os: bool,
    min_tcb_evaluation_data_number: Option<u32>,
}

fn tdx_rules(file: Option<TdxFile>, any_measurement: bool) -> Result<TdxRules, Error> {
    let present = file.is_some();
    let tdx = file.unwrap_or_default();
    let rtmrs = [
        hex_list("tdx.rtmr0", tdx.rtmr0)?,
        hex_list("tdx.rtmr1", tdx.rtmr1)?,
        hex_list("tdx.rtmr2", tdx.rtmr2)?,
        hex_list("tdx.rtmr3", tdx.rtmr3)?,
    ];
    let any_os = tdx.i_understand_this_accepts_any_os.unwrap_or(false);
    let pinned = match &tdx.pinned_rtmrs {
        None => [true; 4],
        Some(names) => {
            let mut pinned = [false; 4];
            for name in names {
                let slot = RTMR_NAMES
                    .iter()
                    .zip(pinned.iter_mut())
                    .find_map(|(n, slot)| (n == name).then_some(slot))
                    .ok_or_else(|| {
                        Error::policy(format!(
                            "tdx.pinned_rtmrs: unknown register {name:?} (one of {RTMR_NAMES:?})"
                        ))
                    })?;
                *slot = true;
            }
            pinned
        }
    };
    // A [tdx] table is a TDX policy: it pins the OS, or says in words that it does not.
    let os_open = any_os || any_measurement;
    if present && !os_open && !pinned.contains(&true) {
        return Err(Error::PolicyMissing {
            key: "tdx.pinned_rtmrs",
            how: RTMR_HOW,
        });
    }
    for ((key, list), is_pinned) in RTMR_KEYS.iter().zip(&rtmrs).zip(pinned) {
        if tdx.pinned_rtmrs.is_some() && !list.is_empty() && !is_pinned {
            return Err(Error::policy(format!(
                "{key} has an allowlist but tdx.pinned_rtmrs does not name it"
            )));
        }
        if present && is_pinned && list.is_empty() && !os_open {
            return Err(Error::PolicyMissing { key, how: RTMR_HOW });
        }
    }
    Ok(TdxRules {
        rtmrs,
        pinned,
        any_os,
        min_tcb_evaluation_data_number: tdx.min_tcb_evaluation_data_number,
    })
}

/// The TOML keys of the RTMR allowlists, by index.
const RTMR_KEYS: [&str; 4] = ["tdx.rtmr0", "tdx.rtmr1", "tdx.rtmr2", "tdx.rtmr3"];

/// How a TDX policy pins the OS; quoted in load errors.
const RTMR_HOW: &str = "MRTD identifies only the TD's firmware; the OS is measured into \
     RTMR0-3. Give an allowlist for each RTMR, name the RTMRs the policy pins in \
     tdx.pinned_rtmrs, or accept any OS on this firmware with \
     tdx.i_understand_this_accepts_any_os = true";

impl Policy {
    /// Parses and validates a TOML policy.
    ///
    /// Refuses a policy that does not pin what it accepts: `measurements` is required (a
    /// list, or `"any"` confirmed by `i_understand_this_accepts_any_guest = true`), and a
    /// `[tdx]` table must pin the RTMRs it names (see the module docs). The error names the
    /// missing key.
    pub fn from_toml(text: &str) -> Result<Self, Error> {
        let file: PolicyFile = toml::from_str(text).map_err(|e| Error::policy(e.to_string()))?;
        let defaults = Self::default();
        let (measurements, any_measurement) = measurements(
            file.measurements,
            file.i_understand_this_accepts_any_guest.unwrap_or(false),
        )?;
        let (min_tcb, any_tcb) = min_tcb(file.min_tcb)?;
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
        let vmpls = match file.vmpls {
            None => defaults.vmpls,
            Some(vmpls) => {
                if let Some(bad) = vmpls.iter().find(|v| **v > 3) {
                    return Err(Error::policy(format!(
                        "vmpls: {bad} is not a VMPL (0 to 3)"
                    )));
                }
                if vmpls.is_empty() {
                    return Err(Error::policy(
                        "vmpls is empty: list the accepted VMPLs (usually [0])",
                    ));
                }
                Some(vmpls)
            }
        };
        let tdx = tdx_rules(file.tdx, any_measurement)?;
        Ok(Self {
            measurements,
            dangerous_accept_any_measurement: any_measurement,
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
            vmpls,
            min_tcb,
            dangerous_accept_any_tcb: any_tcb,
            tdx_statuses,
            tdx_rtmrs: tdx.rtmrs,
            tdx_pinned_rtmrs: tdx.pinned,
            dangerous_accept_any_os: tdx.any_os,
            tdx_min_tcb_evaluation_data_number: tdx.min_tcb_evaluation_data_number,
            max_evidence_age_secs: file.max_evidence_age_secs,
            simulated_ark_sha256: hex_list("simulated_ark_sha256", file.simulated_ark_sha256)?,
            gpu: file.gpu,
            applied: true,
        })
    }

    /// A policy that checks authenticity only: the chain, the signature, the dates, the
    /// TCB's consistency with its endorsement, and that the guest is not debuggable and has no
    /// migration agent. It accepts any measurement, any VMPL, any SNP TCB and any OS, and its
    /// verdicts say that no policy was applied (`policy_applied: false`).
    ///
    /// For tools that inspect evidence (`confidant attest verify` without `--policy`); never
    /// for a decision to trust a guest with a secret. Constraints set on it afterwards (a
    /// measurement, report_data) are checked.
    pub fn dangerous_authenticity_only() -> Self {
        Self {
            dangerous_accept_any_measurement: true,
            vmpls: None,
            dangerous_accept_any_tcb: true,
            dangerous_accept_any_os: true,
            applied: false,
            ..Self::default()
        }
    }

    /// Whether this policy is one a verdict can be said to have applied (false only for
    /// [`Policy::dangerous_authenticity_only`]).
    pub fn is_applied(&self) -> bool {
        self.applied
    }

    /// What this policy deliberately leaves open, in words, for a warning on every decision
    /// it makes: empty for a policy that pins the guest, its TCB and (TDX) its OS.
    pub fn deliberately_open(&self) -> Vec<&'static str> {
        let mut open = Vec::new();
        if self.dangerous_accept_any_measurement && self.measurements.is_empty() {
            open.push("any guest (measurements = \"any\")");
        }
        if self.dangerous_accept_any_tcb && self.min_tcb.is_empty() {
            open.push("any SNP TCB (min_tcb = \"any\")");
        }
        if self.dangerous_accept_any_os {
            open.push("any OS on the TDX firmware (i_understand_this_accepts_any_os)");
        }
        if self.dangerous_allow_simulated {
            open.push("simulated evidence (allow_simulated)");
        }
        if self.allow_debug {
            open.push("debuggable guests (allow_debug)");
        }
        if self
            .gpu
            .as_ref()
            .is_some_and(|g| g.cc_mode == crate::nvidia::policy::CcMode::Any)
        {
            open.push(
                "GPUs whose CC mode and measurements are not shown ([gpu] cc_mode = \"any\")",
            );
        }
        open
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
