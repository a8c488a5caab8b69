//! The `[gpu]` section of an attestation policy: what passing GPU evidence must also show.
//!
//! | key | type | default | meaning |
//! | --- | --- | --- | --- |
//! | `cc_mode` | `"on"` or `"any"` | `"on"` | `"on"`: the measurements were compared with NVIDIA's RIMs and every golden value matched, which is what NVIDIA's verifier needs to assert secure boot and debug disabled; a GPU in a DevTools or debug configuration, or evidence verified without RIMs, is refused. `"any"`: authenticity only |
//! | `require_ocsp` | bool | `false` | every device and RIM certificate NVIDIA checks must have a verified `good` OCSP response |
//! | `driver_versions` | strings | any | accepted driver versions (`"545.00"`) |
//! | `vbios_versions` | strings | any | accepted VBIOS versions, case-insensitive (`"96.00.5E.00.01"`) |
//! | `gpu_modes` | strings | any | accepted multi-GPU modes (`"SPT"`, `"MPT"`, `"PPCIE"`); evidence without a mode fails a non-empty list |
//!
//! A policy without a `[gpu]` section accepts no GPU evidence at all.

use serde::Deserialize;

use super::GpuVerdict;
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

/// The `[gpu]` policy section.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct GpuPolicy {
    /// See the module docs.
    #[serde(default)]
    pub cc_mode: CcMode,
    /// Require a good OCSP status for every certificate.
    #[serde(default)]
    pub require_ocsp: bool,
    /// Accepted driver versions; empty means any.
    #[serde(default)]
    pub driver_versions: Vec<String>,
    /// Accepted VBIOS versions; empty means any.
    #[serde(default)]
    pub vbios_versions: Vec<String>,
    /// Accepted GPU modes; empty means any.
    #[serde(default)]
    pub gpu_modes: Vec<String>,
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
        let allowed = |list: &[String], value: Option<&str>| {
            list.is_empty() || value.is_some_and(|v| list.iter().any(|a| a.eq_ignore_ascii_case(v)))
        };
        failures.require(
            allowed(&self.driver_versions, c.driver_version.as_deref()),
            Check::GpuDriverVersion,
            || {
                format!(
                    "driver version {:?} is not in the policy's list",
                    c.driver_version
                )
            },
        );
        failures.require(
            allowed(&self.vbios_versions, c.vbios_version.as_deref()),
            Check::GpuVbiosVersion,
            || {
                format!(
                    "VBIOS version {:?} is not in the policy's list",
                    c.vbios_version
                )
            },
        );
        failures.require(
            allowed(&self.gpu_modes, c.gpu_mode.as_deref()),
            Check::GpuMode,
            || format!("GPU mode {:?} is not in the policy's list", c.gpu_mode),
        );
    }
}
