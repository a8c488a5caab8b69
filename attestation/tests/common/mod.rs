//! Test vectors, loaded with `include_bytes!` so that a fresh clone needs nothing else.
#![allow(dead_code, missing_docs)]

use confidant_attestation::{Evidence, SnpEvidence, TdxCollateral, TdxEvidence, Timestamp};
use serde_json::Value;

/// A genuine SNP vector: report, VEK, the KDS chain, and expected.json.
pub struct SnpVector {
    pub name: &'static str,
    pub report: &'static [u8],
    pub vek: &'static [u8],
    pub chain: &'static [u8],
    pub expected: &'static str,
}

macro_rules! snp_vector {
    ($dir:literal, $report:literal, $vek:literal, $chain:literal, $expected:literal) => {
        SnpVector {
            name: concat!($dir, "/", $report),
            report: include_bytes!(concat!("../data/snp/", $dir, "/", $report)),
            vek: include_bytes!(concat!("../data/snp/", $dir, "/", $vek)),
            chain: include_bytes!(concat!("../data/snp/", $dir, "/", $chain)),
            expected: include_str!(concat!("../data/snp/", $dir, "/", $expected)),
        }
    };
}

pub const VIRTEE_MILAN_V2: SnpVector = snp_vector!(
    "virtee-milan-v2",
    "report.bin",
    "vcek.der",
    "ask_ark.pem",
    "expected.json"
);
pub const GOSEV_MILAN_V2_DEBUG: SnpVector = snp_vector!(
    "gosev-milan-v2-debug",
    "report.bin",
    "vcek.der",
    "ask_ark.pem",
    "expected.json"
);
pub const TRUSTEE_MILAN_V3_VLEK: SnpVector = snp_vector!(
    "trustee-milan-v3-vlek-aws",
    "report.bin",
    "vlek.der",
    "asvk_ark.pem",
    "expected.json"
);
pub const TRUSTEE_GENOA_V3: SnpVector = snp_vector!(
    "trustee-genoa-v3",
    "report.bin",
    "vcek.der",
    "ask_ark.pem",
    "expected.json"
);
pub const GCP_MILAN_V5: SnpVector = snp_vector!(
    "gcp-milan-v5",
    "report.bin",
    "vcek.der",
    "ask_ark.pem",
    "expected.json"
);
pub const GCP_MILAN_V5_REPORTDATA: SnpVector = snp_vector!(
    "gcp-milan-v5",
    "report-reportdata.bin",
    "vcek.der",
    "ask_ark.pem",
    "expected-reportdata.json"
);

/// Every genuine SNP report.
pub const SNP_VECTORS: [SnpVector; 6] = [
    VIRTEE_MILAN_V2,
    GOSEV_MILAN_V2_DEBUG,
    TRUSTEE_MILAN_V3_VLEK,
    TRUSTEE_GENOA_V3,
    GCP_MILAN_V5,
    GCP_MILAN_V5_REPORTDATA,
];

pub const TURIN_VCEK: &[u8] = include_bytes!("../data/snp/virtee-turin-vcek-chain-only/vcek.der");
pub const GENOA_ASK_ARK: &[u8] = include_bytes!("../data/snp/amd-roots/genoa/cert_chain_vcek.pem");
pub const MILAN_ASK_ARK: &[u8] = include_bytes!("../data/snp/amd-roots/milan/cert_chain_vcek.pem");
pub const MILAN_ASVK_ARK: &[u8] = include_bytes!("../data/snp/amd-roots/milan/cert_chain_vlek.pem");
pub const GENOA_TRUSTEE_EVIDENCE: &str = include_str!("../data/snp/trustee-genoa-v3/evidence.json");

impl SnpVector {
    pub fn expected(&self) -> Value {
        serde_json::from_str(self.expected).expect("expected.json parses")
    }

    /// The time the vector's README says to pin.
    pub fn now(&self) -> Timestamp {
        let text = self.expected()["suggested_pinned_now_utc"]
            .as_str()
            .expect("pinned now")
            .to_owned();
        Timestamp::parse_rfc3339(&text).expect("pinned now parses")
    }

    /// The report field `name` from expected.json.
    pub fn field(&self, name: &str) -> Value {
        self.expected()["report"][name].clone()
    }

    /// Evidence with the VEK only.
    pub fn evidence(&self) -> Evidence {
        self.evidence_from(self.report)
    }

    /// Evidence with the VEK and the carried KDS chain.
    pub fn evidence_with_chain(&self) -> Evidence {
        Evidence::Snp(
            SnpEvidence::from_parts(self.report, self.vek, Some(self.chain)).expect("chain PEM"),
        )
    }

    pub fn evidence_from(&self, report: &[u8]) -> Evidence {
        Evidence::Snp(SnpEvidence::from_parts(report, self.vek, None).expect("no chain"))
    }
}

/// A genuine TDX vector.
pub struct TdxVector {
    pub name: &'static str,
    pub quote: &'static [u8],
    pub collateral: &'static [u8],
    pub expected: &'static str,
}

macro_rules! tdx_vector {
    ($dir:literal) => {
        TdxVector {
            name: $dir,
            quote: include_bytes!(concat!("../data/tdx/", $dir, "/quote.bin")),
            collateral: include_bytes!(concat!("../data/tdx/", $dir, "/collateral.json")),
            expected: include_str!(concat!("../data/tdx/", $dir, "/expected.json")),
        }
    };
}

pub const DCAPQVL_V4: TdxVector = tdx_vector!("dcapqvl-b0c06f-v4-uptodate");
pub const GOTDX_V5: TdxVector = tdx_vector!("gotdx-90c06f-v5-uptodate");
pub const TRUSTEE_V4_DEBUG: TdxVector = tdx_vector!("trustee-50806f-v4-debug");
pub const TDX_VECTORS: [TdxVector; 3] = [DCAPQVL_V4, GOTDX_V5, TRUSTEE_V4_DEBUG];

impl TdxVector {
    pub fn expected(&self) -> Value {
        serde_json::from_str(self.expected).expect("expected.json parses")
    }

    fn results(&self) -> Value {
        self.expected()["dcap_qvl_0_7_1"]["quote.bin"].clone()
    }

    /// The pinned time from expected.json.
    pub fn now(&self) -> Timestamp {
        Timestamp::from_unix_seconds(
            self.results()["at_pinned_time"]["now_unix"]
                .as_u64()
                .expect("now"),
        )
    }

    /// A time from expected.json by case name (`after_window`, …).
    pub fn time(&self, case: &str) -> Option<Timestamp> {
        self.results()[case]["now_unix"]
            .as_u64()
            .map(Timestamp::from_unix_seconds)
    }

    pub fn td_field(&self, name: &str) -> String {
        self.results()["body"]["td"][name]
            .as_str()
            .expect("td field")
            .to_owned()
    }

    pub fn collateral(&self) -> TdxCollateral {
        TdxCollateral::from_json(self.collateral).expect("collateral parses")
    }

    pub fn evidence(&self) -> Evidence {
        Evidence::Tdx(TdxEvidence::new(self.quote.to_vec()).with_collateral(self.collateral()))
    }

    pub fn evidence_from(&self, quote: &[u8]) -> Evidence {
        Evidence::Tdx(TdxEvidence::new(quote.to_vec()).with_collateral(self.collateral()))
    }
}

/// Policy lines that accept any VMPL and any TCB, for twins that test one other rule.
pub const ANY_VMPL_ANY_TCB: &str = "vmpls = [0, 1, 2, 3]\nmin_tcb = \"any\"\n";
/// Policy lines that accept any guest, said in words.
pub const ANY_GUEST: &str = "measurements = \"any\"\ni_understand_this_accepts_any_guest = true\n";
