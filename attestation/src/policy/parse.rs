//! Reading a policy: the TOML file as written ([`PolicyFile`]) and its validation into a
//! [`Policy`], refusing a policy that does not pin what it accepts (see the module docs of
//! [`crate::policy`]).

use serde::Deserialize;

use super::{ANY, MEASUREMENTS_HOW, MinTcb, Policy, RTMR_NAMES, TDX_STATUSES};
use crate::error::{Error, decode_hex};
use crate::nvidia::policy::GpuPolicy;

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

    /// Decodes a 48-byte measurement from hex (for a `--measurement` flag).
    pub fn measurement_from_hex(text: &str) -> Result<[u8; 48], Error> {
        decode_hex::<48>("measurement", text, false)
    }

    /// Decodes report_data from hex: 1 to 64 bytes, right-padded with zeros to 64 (a SHA-384
    /// digest is commonly bound into the first 48 bytes).
    pub fn report_data_from_hex(text: &str) -> Result<[u8; 64], Error> {
        decode_hex::<64>("report_data", text, true)
    }
}
