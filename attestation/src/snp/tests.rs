//! Unit tests for the pieces of SNP verification that the API tests cannot isolate.

use sev::certs::snp::Verifiable as _;
use x509_cert::der::Decode as _;

use super::*;

const VLEK: &[u8] = include_bytes!("../../tests/data/snp/trustee-milan-v3-vlek-aws/vlek.der");
const MILAN_VCEK: &[u8] = include_bytes!("../../tests/data/snp/virtee-milan-v2/vcek.der");
const TURIN_VCEK: &[u8] =
    include_bytes!("../../tests/data/snp/virtee-turin-vcek-chain-only/vcek.der");
const GCP_VCEK: &[u8] = include_bytes!("../../tests/data/snp/gcp-milan-v5/vcek.der");

fn cert(der: &[u8]) -> Cert<'static> {
    Cert::decode("VEK", der).expect("test certificate decodes")
}

/// Our ring-based check and `sev`'s must agree on every issuer/subject pair.
fn issued_by(issuer: &roots::Root, subject: &[u8]) -> bool {
    let ours = check_issued_by(&Cert::from_root("issuer", issuer), &cert(subject)).is_ok();
    let theirs = (&issuer.sev, &cert(subject).sev()).verify().is_ok();
    assert_eq!(ours, theirs, "ring and sev disagree");
    ours
}

#[test]
fn built_in_roots_load_and_self_verify() {
    for product in Product::ALL {
        let roots = roots::pinned(product).expect("roots load");
        assert_eq!(roots.product, product);
        assert_eq!(
            hex::encode(Sha256::digest(&roots.ark.der)),
            ark_sha256(product)
        );
    }
}

#[test]
fn vlek_does_not_verify_under_the_ordinary_ask() {
    let roots = roots::pinned(Product::Milan).expect("roots");
    assert!(!issued_by(&roots.ask, VLEK));
    assert!(issued_by(&roots.asvk, VLEK));
    // And a VCEK does not verify under the ASVK.
    assert!(!issued_by(&roots.asvk, MILAN_VCEK));
    assert!(issued_by(&roots.ask, MILAN_VCEK));
}

#[test]
fn genoa_ask_does_not_sign_a_milan_vcek() {
    let genoa = roots::pinned(Product::Genoa).expect("roots");
    assert!(!issued_by(&genoa.ask, MILAN_VCEK));
    let turin = roots::pinned(Product::Turin).expect("roots");
    assert!(issued_by(&turin.ask, TURIN_VCEK));
    assert!(!issued_by(&turin.ask, GCP_VCEK));
}

#[test]
fn a_tampered_vcek_does_not_verify() {
    let roots = roots::pinned(Product::Milan).expect("roots");
    let mut tampered = MILAN_VCEK.to_vec();
    // Byte 300 lies inside the TBS (the subject public key); the DER still parses.
    tampered[300] ^= 0x01;
    if x509_cert::Certificate::from_der(&tampered).is_ok() {
        assert!(!issued_by(&roots.ask, &tampered));
    }
}

#[test]
fn vek_extensions_are_read() {
    let milan = VekExtensions::read(&cert(MILAN_VCEK).x509);
    assert_eq!(milan.product_name.as_deref(), Some("Milan-B0"));
    assert_eq!(
        (milan.bootloader, milan.tee, milan.snp, milan.microcode),
        (Some(3), Some(0), Some(8), Some(115))
    );
    assert_eq!(milan.fmc, None);
    assert_eq!(milan.hw_id.as_ref().map(Vec::len), Some(64));

    // Turin: structVersion 1, an FMC SPL and an 8-byte hwID.
    let turin = VekExtensions::read(&cert(TURIN_VCEK).x509);
    assert_eq!(turin.product_name.as_deref(), Some("Turin"));
    assert_eq!(turin.fmc, Some(0));
    assert_eq!(turin.microcode, Some(9));
    assert_eq!(
        turin.hw_id.as_deref().map(hex::encode).as_deref(),
        Some("1e550a8ee5cf9f4d")
    );

    // ucodeSPL 222 is encoded with a leading zero byte (02 02 00 de).
    let gcp = VekExtensions::read(&cert(GCP_VCEK).x509);
    assert_eq!(gcp.microcode, Some(222));

    // A VLEK has no hwID.
    assert_eq!(VekExtensions::read(&cert(VLEK).x509).hw_id, None);
}

#[test]
fn spl_encoding_round_trips() {
    for value in [0u8, 1, 127, 128, 222, 255] {
        let der = encode_spl(value).expect("encodes");
        let uint = x509_cert::der::asn1::UintRef::from_der(&der).expect("decodes");
        assert_eq!(uint.as_bytes().last().copied().unwrap_or(0), value);
        assert!(uint.as_bytes().len() <= 1);
    }
}

#[test]
fn products_from_cpuid() {
    assert_eq!(Product::from_cpuid(0x19, 0x01), Some(Product::Milan));
    assert_eq!(Product::from_cpuid(0x19, 0x11), Some(Product::Genoa));
    assert_eq!(Product::from_cpuid(0x19, 0xA0), Some(Product::Genoa));
    assert_eq!(Product::from_cpuid(0x1A, 0x02), Some(Product::Turin));
    assert_eq!(Product::from_cpuid(0x17, 0x31), None);
    assert_eq!(Product::from_product_name("Milan-B0"), Some(Product::Milan));
    assert_eq!(Product::from_product_name("Simulated"), None);
}
