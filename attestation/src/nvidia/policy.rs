//! The `[gpu]` section of an attestation policy: what passing GPU evidence must also show.
//!
//! | key | type | default | meaning |
//! | --- | --- | --- | --- |
//! | `cc_mode` | `"on"` or `"any"` | `"on"` | `"on"`: the measurements were compared with NVIDIA's RIMs and every golden value matched, which is what NVIDIA's verifier needs to assert secure boot and debug disabled; a GPU in a DevTools or debug configuration, or evidence verified without RIMs, is refused. `"any"`: authenticity only |
//! | `require_ocsp` | bool | `true` | every device and RIM certificate NVIDIA checks must have a verified `good` OCSP response; `false`: revocation may go unchecked (the verdict says `not_checked`, and the broker lists it among what the policy leaves open) |
//! | `driver_versions` | strings, or `"rim"` | any | accepted driver versions (`"545.00"`); `"rim"`: whatever version the verifier's driver RIM is for (the RIM was supplied, verified and names the report's version) |
//! | `vbios_versions` | strings, or `"rim"` | any | accepted VBIOS versions, case-insensitive (`"96.00.5E.00.01"`); `"rim"` as for the driver |
//! | `gpu_modes` | strings | any | accepted multi-GPU modes (`"SPT"`, `"MPT"`, `"PPCIE"`); evidence without a mode fails a non-empty list |
//! | `count` | integer ≥ 1 | at least one | exactly this many distinct GPUs must present passing evidence (composite evidence, [`super::composite`]) |
//!
//! A policy without a `[gpu]` section accepts no GPU evidence at all; composite judgement
//! ([`super::composite::judge_gpus`]) refuses a CPU TEE that presents any.

use serde::{Deserialize, Deserializer};

use super::{GpuCheck, GpuVerdict, Outcome, RimKind};
use crate::verdict::{Check, Failures};

/// Whether the GPU must prove confidential-computing mode with debug off.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CcMode {
    /// RIMs compared and every golden measurement matched.
    #[default]
    On,
    /// Authenticity only.
    Any,
}

/// The `[gpu]` policy section. Its [`Default`] is an empty `[gpu]` section: CC mode on, OCSP
/// required, any versions and modes, at least one GPU.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct GpuPolicy {
    /// See the module docs.
    #[serde(default)]
    pub cc_mode: CcMode,
    /// Require a good OCSP status for every certificate (default: required, as issue 18 asks
    /// of release policies: a missing response is a failure unless the policy says otherwise).
    #[serde(default = "required")]
    pub require_ocsp: bool,
    /// Accepted driver versions.
    #[serde(default)]
    pub driver_versions: VersionRule,
    /// Accepted VBIOS versions.
    #[serde(default)]
    pub vbios_versions: VersionRule,
    /// Accepted GPU modes; empty means any.
    #[serde(default)]
    pub gpu_modes: Vec<String>,
    /// How many distinct GPUs must present passing evidence; `None`: at least one.
    #[serde(default, deserialize_with = "count")]
    pub count: Option<u32>,
}

fn required() -> bool {
    true
}

impl Default for GpuPolicy {
    fn default() -> Self {
        Self {
            cc_mode: CcMode::On,
            require_ocsp: true,
            driver_versions: VersionRule::Any,
            vbios_versions: VersionRule::Any,
            gpu_modes: Vec::new(),
            count: None,
        }
    }
}

/// Which driver (VBIOS) versions a `[gpu]` policy accepts.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum VersionRule {
    /// Any version (the key is absent or the list empty).
    #[default]
    Any,
    /// One of these, case-insensitive.
    OneOf(Vec<String>),
    /// The version a RIM the verifier supplied is for: the RIM verified and its
    /// `colloquialVersion` equals the report's (TOML `"rim"`).
    MatchRim,
}

impl<'de> Deserialize<'de> for VersionRule {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            List(Vec<String>),
            Word(String),
        }
        match Raw::deserialize(d)? {
            Raw::List(list) if list.is_empty() => Ok(Self::Any),
            Raw::List(list) => Ok(Self::OneOf(list)),
            Raw::Word(w) if w == "rim" => Ok(Self::MatchRim),
            Raw::Word(w) => Err(serde::de::Error::custom(format!(
                "{w:?}: expected a list of versions or the word \"rim\""
            ))),
        }
    }
}

fn count<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u32>, D::Error> {
    match u32::deserialize(d)? {
        0 => Err(serde::de::Error::custom(
            "count = 0: a policy with a [gpu] section needs at least one GPU (remove the \
             section to release only to servers on CPU)",
        )),
        n => Ok(Some(n)),
    }
}

impl VersionRule {
    /// Whether `value` passes, given whether the RIM of this kind verified and matched the
    /// report's version.
    fn allows(&self, value: Option<&str>, rim_matched: bool) -> bool {
        match self {
            Self::Any => true,
            Self::OneOf(list) => {
                value.is_some_and(|v| list.iter().any(|a| a.eq_ignore_ascii_case(v)))
            }
            Self::MatchRim => rim_matched,
        }
    }
}

impl GpuPolicy {
    pub(crate) fn evaluate(&self, verdict: &GpuVerdict, failures: &mut Failures) {
        let c = &verdict.claims;
        if self.cc_mode == CcMode::On {
            failures.require(
                c.measurements_compared && c.debug_status.as_deref() == Some("disabled"),
                Check::GpuCcMode,
                || {
                    if c.measurements_compared {
                        "the GPU's measurements do not match NVIDIA's RIMs, so CC mode with debug off is not shown".to_owned()
                    } else {
                        "cc_mode = \"on\" needs the driver and VBIOS RIMs: the measurements were not compared".to_owned()
                    }
                },
            );
        }
        failures.require(
            !self.require_ocsp || c.revocation.all_good(),
            Check::Ocsp,
            || {
                format!(
                    "the policy requires OCSP and revocation is {}",
                    c.revocation.summary
                )
            },
        );
        // A RIM "matched" when its signature and chain verified and it names the report's
        // version: the three checks ran and passed.
        let rim_matched = |kind: RimKind| {
            [
                GpuCheck::RimSignature(kind),
                GpuCheck::RimCertChain(kind),
                GpuCheck::RimVersionMatch(kind),
            ]
            .into_iter()
            .all(|check| verdict.check(check) == Some(&Outcome::Passed))
        };
        let rule_text = |rule: &VersionRule| match rule {
            VersionRule::MatchRim => "no verified RIM the verifier holds is for it".to_owned(),
            _ => "it is not in the policy's list".to_owned(),
        };
        failures.require(
            self.driver_versions
                .allows(c.driver_version.as_deref(), rim_matched(RimKind::Driver)),
            Check::GpuDriverVersion,
            || {
                format!(
                    "driver version {:?}: {}",
                    c.driver_version,
                    rule_text(&self.driver_versions)
                )
            },
        );
        failures.require(
            self.vbios_versions
                .allows(c.vbios_version.as_deref(), rim_matched(RimKind::Vbios)),
            Check::GpuVbiosVersion,
            || {
                format!(
                    "VBIOS version {:?}: {}",
                    c.vbios_version,
                    rule_text(&self.vbios_versions)
                )
            },
        );
        let allowed = |list: &[String], value: Option<&str>| {
            list.is_empty() || value.is_some_and(|v| list.iter().any(|a| a.eq_ignore_ascii_case(v)))
        };
        failures.require(
            allowed(&self.gpu_modes, c.gpu_mode.as_deref()),
            Check::GpuMode,
            || format!("GPU mode {:?} is not in the policy's list", c.gpu_mode),
        );
    }
}
