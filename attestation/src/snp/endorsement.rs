//! The VCEK/VLEK certificate and AMD's X.509 extensions on it.
//!
//! AMD's "Versioned Chip Endorsement Key (VCEK) Certificate and KDS Interface Specification"
//! (doc. 57230), Table 9, puts the TCB the key was derived for into extensions under
//! 1.3.6.1.4.1.3704.1: `structVersion` (.1), `productName` (.2), the SPLs (.3.x, each a DER
//! INTEGER), `hwID` (.4, VCEK only) and `cspID` (.5, VLEK only).

use x509_cert::der::asn1::{Ia5StringRef, OctetStringRef, UintRef};
use x509_cert::der::oid::ObjectIdentifier;
use x509_cert::der::{Decode as _, Encode as _};

pub(crate) const STRUCT_VERSION: ObjectIdentifier =
    ObjectIdentifier::new_unwrap("1.3.6.1.4.1.3704.1.1");
pub(crate) const PRODUCT_NAME: ObjectIdentifier =
    ObjectIdentifier::new_unwrap("1.3.6.1.4.1.3704.1.2");
pub(crate) const BL_SPL: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.6.1.4.1.3704.1.3.1");
pub(crate) const TEE_SPL: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.6.1.4.1.3704.1.3.2");
pub(crate) const SNP_SPL: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.6.1.4.1.3704.1.3.3");
pub(crate) const UCODE_SPL: ObjectIdentifier =
    ObjectIdentifier::new_unwrap("1.3.6.1.4.1.3704.1.3.8");
pub(crate) const FMC_SPL: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.6.1.4.1.3704.1.3.9");
pub(crate) const HW_ID: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.6.1.4.1.3704.1.4");

/// AMD's extensions as found on a VEK. Absent or unreadable values are `None`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct VekExtensions {
    pub(crate) product_name: Option<String>,
    pub(crate) bootloader: Option<u8>,
    pub(crate) tee: Option<u8>,
    pub(crate) snp: Option<u8>,
    pub(crate) microcode: Option<u8>,
    pub(crate) fmc: Option<u8>,
    pub(crate) hw_id: Option<Vec<u8>>,
}

fn extension<'a>(cert: &'a x509_cert::Certificate, oid: &ObjectIdentifier) -> Option<&'a [u8]> {
    cert.tbs_certificate
        .extensions
        .as_ref()?
        .iter()
        .find(|e| &e.extn_id == oid)
        .map(|e| e.extn_value.as_bytes())
}

fn spl(cert: &x509_cert::Certificate, oid: &ObjectIdentifier) -> Option<u8> {
    let value = UintRef::from_der(extension(cert, oid)?).ok()?;
    match value.as_bytes() {
        [] => Some(0),
        [b] => Some(*b),
        _ => None,
    }
}

impl VekExtensions {
    pub(crate) fn read(cert: &x509_cert::Certificate) -> Self {
        let product_name = extension(cert, &PRODUCT_NAME).and_then(|v| {
            Ia5StringRef::from_der(v)
                .map(|s| s.as_str().to_owned())
                .ok()
                // Some early VCEKs carry the bare string rather than a DER IA5String.
                .or_else(|| std::str::from_utf8(v).ok().map(str::to_owned))
        });
        // Early VCEKs carry the raw 64-byte hwID, later ones a DER OCTET STRING.
        let hw_id = extension(cert, &HW_ID).map(|v| match OctetStringRef::from_der(v) {
            Ok(octets) => octets.as_bytes().to_vec(),
            Err(_) => v.to_vec(),
        });
        Self {
            product_name,
            bootloader: spl(cert, &BL_SPL),
            tee: spl(cert, &TEE_SPL),
            snp: spl(cert, &SNP_SPL),
            microcode: spl(cert, &UCODE_SPL),
            fmc: spl(cert, &FMC_SPL),
            hw_id,
        }
    }
}

/// Encodes a DER INTEGER for an SPL extension value.
pub(crate) fn encode_spl(value: u8) -> Result<Vec<u8>, String> {
    UintRef::new(&[value])
        .and_then(|u| u.to_der())
        .map_err(|e| e.to_string())
}
