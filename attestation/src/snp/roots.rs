//! The built-in AMD roots: ARK, ASK and ASVK for each product, pinned by SHA-256.
//!
//! The PEMs live in `attestation/roots/` (see the README there for provenance). They are
//! checked against the fingerprints below and their signatures (ARK self-signature, ARK →
//! ASK, ARK → ASVK) are verified once per process, on first use. Evidence never supplies a
//! trust anchor: a carried ARK or ASK is only compared with these.

use std::sync::OnceLock;

use sev::certs::snp::Verifiable as _;
use sha2::{Digest as _, Sha256};
use x509_cert::der::{DecodePem as _, Encode as _};

use crate::claims::Product;

/// One certificate, kept in the forms the checks need.
#[derive(Debug, Clone)]
pub(crate) struct Root {
    pub(crate) der: Vec<u8>,
    pub(crate) x509: x509_cert::Certificate,
    pub(crate) sev: sev::certs::snp::Certificate,
}

/// The pinned certificates of one product.
#[derive(Debug, Clone)]
pub(crate) struct ProductRoots {
    pub(crate) product: Product,
    pub(crate) ark: Root,
    pub(crate) ask: Root,
    pub(crate) asvk: Root,
}

struct Pinned {
    product: Product,
    ark: (&'static [u8], &'static str),
    ask: (&'static [u8], &'static str),
    asvk: (&'static [u8], &'static str),
}

/// DER SHA-256 fingerprints, as published in `roots/README.amd.md` and matching the copies in
/// virtee/sev, Trustee and go-sev-guest.
const PINNED: [Pinned; 3] = [
    Pinned {
        product: Product::Milan,
        ark: (
            include_bytes!("../../roots/milan/ark.pem"),
            "69d063b45344d26a2e94e1f4210de49ef555308287d4c174445c95639a540bcd",
        ),
        ask: (
            include_bytes!("../../roots/milan/ask.pem"),
            "67d303bd3905fd38db8b20e0793699870e7fa612eaad5dec358293fd8c0bac1b",
        ),
        asvk: (
            include_bytes!("../../roots/milan/asvk.pem"),
            "c5e081f59b7efab1fe2f8b505e159704e72f29cab7ef7cf628a05a42439082f5",
        ),
    },
    Pinned {
        product: Product::Genoa,
        ark: (
            include_bytes!("../../roots/genoa/ark.pem"),
            "4c6598d19c18719c5dfd4a7d335f674e5bfe1d8f800cea2cf270c10d103db2f1",
        ),
        ask: (
            include_bytes!("../../roots/genoa/ask.pem"),
            "5464738c1546aed5f2cecf1dc98c5c960a92e8913238a61711bc90ec6e828521",
        ),
        asvk: (
            include_bytes!("../../roots/genoa/asvk.pem"),
            "197e610743a917d6b9bb982a5a9226ccc0a15b611be0619e626aca9151457372",
        ),
    },
    Pinned {
        product: Product::Turin,
        ark: (
            include_bytes!("../../roots/turin/ark.pem"),
            "1f084161a44bb6d93778a904877d4819cafa5d05ef4193b2ded9dd9c73dd3f6a",
        ),
        ask: (
            include_bytes!("../../roots/turin/ask.pem"),
            "5b77ef5fe7a7a004fd9032668fba9d0fda22f88c4442069a479636a6ae3b3185",
        ),
        asvk: (
            include_bytes!("../../roots/turin/asvk.pem"),
            "104e10a8bd060a3c20a434261a57d0588fd65a88915b4f65b08bdecaf8df1a3c",
        ),
    },
];

fn load((pem, fingerprint): (&[u8], &str)) -> Result<Root, String> {
    let x509 = x509_cert::Certificate::from_pem(pem).map_err(|e| format!("built-in PEM: {e}"))?;
    let der = x509.to_der().map_err(|e| format!("built-in DER: {e}"))?;
    let actual = hex::encode(Sha256::digest(&der));
    if actual != fingerprint {
        return Err(format!(
            "built-in root fingerprint {actual} is not the pinned {fingerprint}"
        ));
    }
    Ok(Root {
        der,
        sev: x509.clone().into(),
        x509,
    })
}

fn load_all() -> Result<Vec<ProductRoots>, String> {
    PINNED
        .iter()
        .map(|p| {
            let roots = ProductRoots {
                product: p.product,
                ark: load(p.ark)?,
                ask: load(p.ask)?,
                asvk: load(p.asvk)?,
            };
            // `sev` checks the ARK self-signature and ARK -> ASK; run it for the ASVK too.
            for intermediate in [&roots.ask, &roots.asvk] {
                let chain = sev::certs::snp::ca::Chain {
                    ark: roots.ark.sev.clone(),
                    ask: intermediate.sev.clone(),
                };
                (&chain)
                    .verify()
                    .map_err(|e| format!("built-in {} chain: {e}", p.product))?;
            }
            Ok(roots)
        })
        .collect()
}

/// The built-in roots, loaded and self-checked once per process.
pub(crate) fn pinned(product: Product) -> Result<&'static ProductRoots, String> {
    static ROOTS: OnceLock<Result<Vec<ProductRoots>, String>> = OnceLock::new();
    let all = ROOTS.get_or_init(load_all).as_ref().map_err(Clone::clone)?;
    all.iter()
        .find(|r| r.product == product)
        .ok_or_else(|| format!("no built-in roots for {product}"))
}

/// The pinned ARK fingerprint (DER SHA-256, hex) of `product`.
pub fn ark_sha256(product: Product) -> &'static str {
    PINNED
        .iter()
        .find(|p| p.product == product)
        .map(|p| p.ark.1)
        .unwrap_or_default()
}
