//! Normalized claims decoded from evidence.
//!
//! Claims are what the evidence *says*. They are trustworthy only in a verdict that accepts;
//! in a rejecting verdict they are shown for diagnosis. Byte fields serialize as lowercase
//! hex.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use sev::firmware::guest::AttestationReport;

use crate::error::Error;

/// An AMD EPYC product line that supports SEV-SNP.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[non_exhaustive]
pub enum Product {
    /// 3rd generation EPYC (Zen 3), CPUID family 0x19 models 0x00–0x0F.
    Milan,
    /// 4th generation EPYC (Zen 4, also Bergamo and Siena), family 0x19 models 0x10–0x1F and
    /// 0xA0–0xAF.
    Genoa,
    /// 5th generation EPYC (Zen 5), family 0x1A models 0x00–0x11.
    Turin,
}

impl Product {
    /// Every product with built-in AMD roots.
    pub const ALL: [Product; 3] = [Product::Milan, Product::Genoa, Product::Turin];

    /// The product AMD KDS serves for a CPUID family and model, if it is a known SNP part.
    pub fn from_cpuid(family: u8, model: u8) -> Option<Self> {
        match (family, model) {
            (0x19, 0x00..=0x0F) => Some(Self::Milan),
            (0x19, 0x10..=0x1F | 0xA0..=0xAF) => Some(Self::Genoa),
            (0x1A, 0x00..=0x11) => Some(Self::Turin),
            _ => None,
        }
    }

    /// The product named in a VCEK/VLEK `productName` extension (`Milan-B0`, `Genoa`, …).
    pub fn from_product_name(name: &str) -> Option<Self> {
        name.split('-').next().and_then(|base| base.parse().ok())
    }

    /// The product name as AMD spells it.
    pub fn name(self) -> &'static str {
        match self {
            Self::Milan => "Milan",
            Self::Genoa => "Genoa",
            Self::Turin => "Turin",
        }
    }
}

impl fmt::Display for Product {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Product {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self, Error> {
        Self::ALL
            .into_iter()
            .find(|p| p.name().eq_ignore_ascii_case(s))
            .ok_or_else(|| Error::policy(format!("unknown product {s:?} (Milan, Genoa or Turin)")))
    }
}

/// Normalized claims from SNP or TDX evidence.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "format", rename_all = "lowercase")]
#[non_exhaustive]
pub enum Claims {
    /// From an SEV-SNP report (also used for the simulated TEE).
    Snp(Box<SnpClaims>),
    /// From a TDX quote.
    Tdx(Box<TdxClaims>),
    /// From NVIDIA GPU evidence: every check and the GPU's claims.
    #[serde(rename = "nvidia_gpu")]
    NvidiaGpu(Box<crate::nvidia::GpuVerdictClaims>),
    /// From Trustee's development `sample` evidence: nothing but what it says about itself.
    Sample(Box<SampleClaims>),
}

/// What sample evidence says (see [`SampleEvidence`](crate::SampleEvidence)). None of it is
/// vouched for by anything.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SampleClaims {
    /// The svn the evidence states.
    pub svn: String,
    /// The bound report_data, a 48-byte value followed by 16 zero bytes.
    #[serde(with = "hex::serde")]
    pub report_data: [u8; 64],
    /// The measurement: sample evidence measures nothing, so this is always 48 zero bytes.
    #[serde(with = "hex::serde")]
    pub measurement: [u8; 48],
}

/// An SEV-SNP `TCB_VERSION` (SEV-SNP ABI, Table 3), decoded for the report's CPU generation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SnpTcb {
    /// FMC SVN; present on Turin and later only.
    pub fmc: Option<u8>,
    /// PSP bootloader SVN.
    pub bootloader: u8,
    /// PSP OS (TEE) SVN.
    pub tee: u8,
    /// SNP firmware SVN.
    pub snp: u8,
    /// Lowest microcode patch level across cores.
    pub microcode: u8,
    /// The 8 raw bytes as a little-endian u64, in hex (`0xde1b000000000004`).
    pub raw: String,
}

impl SnpTcb {
    fn new(tcb: &sev::firmware::host::TcbVersion, raw: Option<&[u8]>) -> Self {
        let raw = raw
            .and_then(|b| <[u8; 8]>::try_from(b).ok())
            .map(|b| format!("{:#018x}", u64::from_le_bytes(b)))
            .unwrap_or_default();
        Self {
            fmc: tcb.fmc,
            bootloader: tcb.bootloader,
            tee: tcb.tee,
            snp: tcb.snp,
            microcode: tcb.microcode,
            raw,
        }
    }
}

/// The guest policy the VM was launched with (SEV-SNP ABI, Table 10 `GUEST_POLICY`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct SnpGuestPolicy {
    /// The raw 64-bit value.
    pub raw: u64,
    /// Minimum ABI major version.
    pub abi_major: u8,
    /// Minimum ABI minor version.
    pub abi_minor: u8,
    /// SMT allowed.
    pub smt: bool,
    /// Association with a migration agent allowed.
    pub migrate_ma: bool,
    /// Debugging allowed: the hypervisor can read and write guest memory.
    pub debug: bool,
    /// Single-socket only.
    pub single_socket: bool,
    /// CXL may be populated with devices or memory.
    pub cxl_allowed: bool,
    /// AES-256-XTS required for memory encryption.
    pub mem_aes_256_xts: bool,
    /// Running Average Power Limit must be disabled.
    pub rapl_dis: bool,
    /// Ciphertext hiding must be enabled.
    pub ciphertext_hiding: bool,
    /// Guest support for page swap disabled (report v5).
    pub page_swap_disabled: bool,
}

/// Platform state at report time (SEV-SNP ABI, Table 24 `PLATFORM_INFO`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct SnpPlatformInfo {
    /// The raw 64-bit value.
    pub raw: u64,
    /// SMT enabled on the host.
    pub smt_enabled: bool,
    /// Transparent SME enabled.
    pub tsme_enabled: bool,
    /// ECC memory in use.
    pub ecc_enabled: bool,
    /// RAPL disabled.
    pub rapl_disabled: bool,
    /// Ciphertext hiding enabled.
    pub ciphertext_hiding_enabled: bool,
    /// Alias check completed (report v3+).
    pub alias_check_complete: bool,
}

/// Which key signed the report (SEV-SNP ABI, Table 23, `SIGNING_KEY`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
#[non_exhaustive]
pub enum SigningKey {
    /// The Versioned Chip Endorsement Key, unique to the chip.
    Vcek,
    /// A Versioned Loaded Endorsement Key, loaded by a cloud provider.
    Vlek,
    /// No key: the report is unsigned.
    None,
    /// A reserved value.
    Reserved,
}

/// CPUID family, model and stepping of the host (report v3+).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct SnpCpuid {
    /// Combined family (base + extended).
    pub family: u8,
    /// Combined model.
    pub model: u8,
    /// Stepping.
    pub stepping: u8,
}

/// Claims decoded from an SEV-SNP attestation report (SEV-SNP ABI, Table 22).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct SnpClaims {
    /// Report format version (2, 3 or 5).
    pub version: u32,
    /// The product whose AMD roots anchor the chain; `None` for the simulated TEE or when it
    /// could not be determined.
    pub product: Option<Product>,
    /// The guest SVN from the ID block.
    pub guest_svn: u32,
    /// The guest policy.
    pub policy: SnpGuestPolicy,
    /// Family ID from the ID block.
    #[serde(with = "hex::serde")]
    pub family_id: [u8; 16],
    /// Image ID from the ID block.
    #[serde(with = "hex::serde")]
    pub image_id: [u8; 16],
    /// The VM privilege level that requested the report.
    pub vmpl: u32,
    /// Signature algorithm (1 = ECDSA P-384 with SHA-384).
    pub sig_algo: u32,
    /// Platform information.
    pub platform_info: SnpPlatformInfo,
    /// Which key signed the report.
    pub signing_key: SigningKey,
    /// Whether the chip key was masked (`MASK_CHIP_KEY`).
    pub mask_chip_key: bool,
    /// Whether the author key digest is present (`AUTHOR_KEY_EN`).
    pub author_key_en: bool,
    /// Guest-supplied data bound into the report.
    #[serde(with = "hex::serde")]
    pub report_data: [u8; 64],
    /// The launch measurement.
    #[serde(with = "hex::serde")]
    pub measurement: [u8; 48],
    /// Host-supplied data fixed at launch.
    #[serde(with = "hex::serde")]
    pub host_data: [u8; 32],
    /// SHA-384 of the ID key that signed the ID block.
    #[serde(with = "hex::serde")]
    pub id_key_digest: [u8; 48],
    /// SHA-384 of the author key that signed the ID key.
    #[serde(with = "hex::serde")]
    pub author_key_digest: [u8; 48],
    /// Report ID of this guest.
    #[serde(with = "hex::serde")]
    pub report_id: [u8; 32],
    /// Report ID of the migration agent.
    #[serde(with = "hex::serde")]
    pub report_id_ma: [u8; 32],
    /// TCB the platform runs now.
    pub current_tcb: SnpTcb,
    /// TCB the VCEK was derived from and that the report is endorsed at.
    pub reported_tcb: SnpTcb,
    /// TCB committed on the platform (anti-rollback floor).
    pub committed_tcb: SnpTcb,
    /// TCB at guest launch.
    pub launch_tcb: SnpTcb,
    /// CPUID of the host (report v3+).
    pub cpuid: Option<SnpCpuid>,
    /// The chip identifier (zero when masked or for VLEK-signed reports).
    #[serde(with = "hex::serde")]
    pub chip_id: [u8; 64],
    /// Current firmware version, `major.minor.build`.
    pub current_version: String,
    /// Committed firmware version.
    pub committed_version: String,
    /// Mitigations at launch (report v5+).
    pub launch_mit_vector: Option<u64>,
    /// Mitigations now (report v5+).
    pub current_mit_vector: Option<u64>,
}

impl SnpClaims {
    /// Decodes claims from a parsed report and its raw bytes (for the raw TCB values).
    pub(crate) fn from_report(report: &AttestationReport, raw: &[u8]) -> Self {
        let policy = report.policy;
        let info = report.plat_info;
        let key = report.key_info;
        let raw_tcb = |offset: usize| raw.get(offset..offset + 8);
        let raw_u64 = |offset: usize| {
            raw_tcb(offset)
                .and_then(|b| <[u8; 8]>::try_from(b).ok())
                .map(u64::from_le_bytes)
                .unwrap_or_default()
        };
        Self {
            version: report.version,
            product: None,
            guest_svn: report.guest_svn,
            policy: SnpGuestPolicy {
                raw: raw_u64(0x08),
                abi_major: policy.abi_major() as u8,
                abi_minor: policy.abi_minor() as u8,
                smt: policy.smt_allowed(),
                migrate_ma: policy.migrate_ma_allowed(),
                debug: policy.debug_allowed(),
                single_socket: policy.single_socket_required(),
                cxl_allowed: policy.cxl_allowed(),
                mem_aes_256_xts: policy.mem_aes_256_xts(),
                rapl_dis: policy.rapl_dis(),
                ciphertext_hiding: policy.ciphertext_hiding(),
                page_swap_disabled: policy.page_swap_disabled(),
            },
            family_id: report.family_id,
            image_id: report.image_id,
            vmpl: report.vmpl,
            sig_algo: report.sig_algo,
            platform_info: SnpPlatformInfo {
                raw: u64::from(info),
                smt_enabled: info.smt_enabled(),
                tsme_enabled: info.tsme_enabled(),
                ecc_enabled: info.ecc_enabled(),
                rapl_disabled: info.rapl_disabled(),
                ciphertext_hiding_enabled: info.ciphertext_hiding_enabled(),
                alias_check_complete: info.alias_check_complete(),
            },
            signing_key: match key.signing_key() {
                0 => SigningKey::Vcek,
                1 => SigningKey::Vlek,
                7 => SigningKey::None,
                _ => SigningKey::Reserved,
            },
            mask_chip_key: key.mask_chip_key(),
            author_key_en: key.author_key_en(),
            report_data: report.report_data,
            measurement: report.measurement,
            host_data: report.host_data,
            id_key_digest: report.id_key_digest,
            author_key_digest: report.author_key_digest,
            report_id: report.report_id,
            report_id_ma: report.report_id_ma,
            // Offsets from SEV-SNP ABI Table 22.
            current_tcb: SnpTcb::new(&report.current_tcb, raw_tcb(0x38)),
            reported_tcb: SnpTcb::new(&report.reported_tcb, raw_tcb(0x180)),
            committed_tcb: SnpTcb::new(&report.committed_tcb, raw_tcb(0x1E0)),
            launch_tcb: SnpTcb::new(&report.launch_tcb, raw_tcb(0x1F0)),
            cpuid: match (report.cpuid_fam_id, report.cpuid_mod_id, report.cpuid_step) {
                (Some(family), Some(model), Some(stepping)) => Some(SnpCpuid {
                    family,
                    model,
                    stepping,
                }),
                _ => None,
            },
            chip_id: report.chip_id,
            current_version: report.current.to_string(),
            committed_version: report.committed.to_string(),
            launch_mit_vector: report.launch_mit_vector,
            current_mit_vector: report.current_mit_vector,
        }
    }
}

/// Claims decoded from a TDX quote (Intel TDX DCAP Quote Generation Library, Appendix A).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct TdxClaims {
    /// Quote format version (4 or 5).
    pub quote_version: u16,
    /// The TD report body type: `TD10`, `TD15` or `TD15Ex`.
    pub body: String,
    /// TCB status from the collateral, once verified (`UpToDate`, `OutOfDate`, …).
    pub tcb_status: Option<String>,
    /// Intel security advisories that apply to this TCB level.
    pub advisory_ids: Vec<String>,
    /// The `tcbEvaluationDataNumber` of the collateral the quote verified against (the lower
    /// of the TCB info's and the QE identity's), once verified.
    #[serde(default)]
    pub tcb_evaluation_data_number: Option<u32>,
    /// TEE TCB SVN of the TDX module.
    #[serde(with = "hex::serde")]
    pub tee_tcb_svn: [u8; 16],
    /// Measurement of the TDX module.
    #[serde(with = "hex::serde")]
    pub mr_seam: [u8; 48],
    /// Signer of the TDX module (zero for Intel).
    #[serde(with = "hex::serde")]
    pub mr_signer_seam: [u8; 48],
    /// TDX module attributes.
    #[serde(with = "hex::serde")]
    pub seam_attributes: [u8; 8],
    /// TD attributes; bit 0 is DEBUG.
    #[serde(with = "hex::serde")]
    pub td_attributes: [u8; 8],
    /// Whether the TD is a debug TD: TD_ATTRIBUTES.TUD.DEBUG or any other TUD bit (the
    /// profiling bits), each of which lets the host inspect the TD.
    pub debug: bool,
    /// Extended features allowed (XFAM).
    #[serde(with = "hex::serde")]
    pub xfam: [u8; 8],
    /// Build-time measurement of the TD.
    #[serde(with = "hex::serde")]
    pub mr_td: [u8; 48],
    /// Software-defined configuration ID.
    #[serde(with = "hex::serde")]
    pub mr_config_id: [u8; 48],
    /// Software-defined owner ID.
    #[serde(with = "hex::serde")]
    pub mr_owner: [u8; 48],
    /// Software-defined owner configuration.
    #[serde(with = "hex::serde")]
    pub mr_owner_config: [u8; 48],
    /// Runtime measurement register 0 (firmware).
    #[serde(with = "hex::serde")]
    pub rtmr0: [u8; 48],
    /// Runtime measurement register 1 (OS loader and kernel).
    #[serde(with = "hex::serde")]
    pub rtmr1: [u8; 48],
    /// Runtime measurement register 2 (OS and command line).
    #[serde(with = "hex::serde")]
    pub rtmr2: [u8; 48],
    /// Runtime measurement register 3 (application).
    #[serde(with = "hex::serde")]
    pub rtmr3: [u8; 48],
    /// Guest-supplied data bound into the quote.
    #[serde(with = "hex::serde")]
    pub report_data: [u8; 64],
    /// Second TEE TCB SVN (TD 1.5 bodies).
    pub tee_tcb_svn2: Option<String>,
    /// Measurement of bound service TDs (TD 1.5 bodies).
    pub mr_service_td: Option<String>,
}

impl TdxClaims {
    /// Decodes claims from a parsed quote; fails for SGX quotes.
    pub(crate) fn from_quote(quote: &dcap_qvl::quote::Quote) -> Result<Self, Error> {
        use dcap_qvl::quote::Report;
        let (body, extra) = match &quote.report {
            Report::TD10(_) => ("TD10", None),
            Report::TD15(r) => ("TD15", Some((r.tee_tcb_svn2, r.mr_service_td))),
            Report::TD15Ex(r) => ("TD15Ex", Some((r.base.tee_tcb_svn2, r.base.mr_service_td))),
            Report::SgxEnclave(_) => {
                return Err(Error::evidence(
                    "quote is an SGX enclave quote, not a TD quote",
                ));
            }
        };
        let td = quote
            .report
            .as_td10()
            .ok_or_else(|| Error::evidence("quote has no TD report body"))?;
        Ok(Self {
            quote_version: quote.header.version,
            body: body.to_owned(),
            tcb_status: None,
            advisory_ids: Vec::new(),
            tcb_evaluation_data_number: None,
            tee_tcb_svn: td.tee_tcb_svn,
            mr_seam: td.mr_seam,
            mr_signer_seam: td.mr_signer_seam,
            seam_attributes: td.seam_attributes,
            td_attributes: td.td_attributes,
            debug: td.td_attributes[0] != 0,
            xfam: td.xfam,
            mr_td: td.mr_td,
            mr_config_id: td.mr_config_id,
            mr_owner: td.mr_owner,
            mr_owner_config: td.mr_owner_config,
            rtmr0: td.rt_mr0,
            rtmr1: td.rt_mr1,
            rtmr2: td.rt_mr2,
            rtmr3: td.rt_mr3,
            report_data: td.report_data,
            tee_tcb_svn2: extra.map(|(svn2, _)| hex::encode(svn2)),
            mr_service_td: extra.map(|(_, mr)| hex::encode(mr)),
        })
    }

    /// The four runtime measurement registers, in order.
    pub fn rtmrs(&self) -> [&[u8; 48]; 4] {
        [&self.rtmr0, &self.rtmr1, &self.rtmr2, &self.rtmr3]
    }
}
