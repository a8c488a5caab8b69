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

mod evaluate;
mod parse;
#[cfg(test)]
mod tests;

pub(crate) use evaluate::Context;

use serde::Deserialize;

use crate::claims::Product;
use crate::nvidia::policy::GpuPolicy;

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

impl Policy {
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
        if self.gpu.as_ref().is_some_and(|g| !g.require_ocsp) {
            open.push(
                "GPU certificates whose revocation is not checked ([gpu] require_ocsp = false)",
            );
        }
        open
    }
}
