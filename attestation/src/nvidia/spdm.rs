//! The attestation report as NVML returns it: an SPDM 1.1 GET_MEASUREMENTS request followed
//! by the MEASUREMENTS response (DMTF DSP0274 1.1, §10.11), with NVIDIA's opaque data.
//!
//! Every offset is checked; a report is refused unless it is exactly request ‖ response with
//! the 96-byte signature ending the buffer.

use serde::{Deserialize, Serialize};

use super::error::SpdmError;

/// SPDM version 1.1.
const SPDM_VERSION_11: u8 = 0x11;
/// GET_MEASUREMENTS request code.
const GET_MEASUREMENTS: u8 = 0xE0;
/// MEASUREMENTS response code.
const MEASUREMENTS: u8 = 0x60;
/// Length of the GET_MEASUREMENTS request with a nonce (SPDM 1.1: 4 + 32 + SlotIDParam).
pub const REQUEST_LEN: usize = 37;
/// Length of the nonces.
pub const NONCE_LEN: usize = 32;
/// ECDSA P-384 signature, r ‖ s, 48 bytes each, big-endian.
pub const SIGNATURE_LEN: usize = 96;
/// MeasurementSpecification: DMTF.
const DMTF_SPECIFICATION: u8 = 0x01;

/// One measurement block of the response (DSP0274 Table 45, DMTF measurement Table 46).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MeasurementBlock {
    /// SPDM index, 1-based (RIM index `i` is SPDM index `i + 1`).
    pub index: u8,
    /// DMTFSpecMeasurementValueType.
    pub value_type: u8,
    /// The measurement value (a SHA-384 digest on every known GPU), hex in JSON.
    #[serde(with = "hex::serde")]
    pub value: Vec<u8>,
}

/// NVIDIA opaque-data types (nvtrust `spdm_msrt_resp_msg.py`).
pub mod opaque {
    /// CERT_ISSUER_NAME.
    pub const CERT_ISSUER_NAME: u16 = 1;
    /// DRIVER_VERSION, ASCII, NUL-terminated.
    pub const DRIVER_VERSION: u16 = 3;
    /// VBIOS_VERSION, 8 bytes.
    pub const VBIOS_VERSION: u16 = 6;
    /// NVDEC0_STATUS, 1 byte.
    pub const NVDEC0_STATUS: u16 = 11;
    /// MSRSCNT, u32 per measurement index.
    pub const MSRSCNT: u16 = 12;
    /// CHIP_SKU, ASCII.
    pub const CHIP_SKU: u16 = 15;
    /// CHIP_SKU_MOD, ASCII.
    pub const CHIP_SKU_MOD: u16 = 16;
    /// PROJECT, ASCII.
    pub const PROJECT: u16 = 17;
    /// PROJECT_SKU, ASCII.
    pub const PROJECT_SKU: u16 = 18;
    /// PROJECT_SKU_MOD, ASCII.
    pub const PROJECT_SKU_MOD: u16 = 19;
    /// FWID, 48 bytes.
    pub const FWID: u16 = 20;
    /// PROTECTED_PCIE_STATUS, 1 byte.
    pub const PROTECTED_PCIE_STATUS: u16 = 21;
    /// SWITCH_PDI, n × 8 bytes.
    pub const SWITCH_PDI: u16 = 22;
    /// OPAQUE_DATA_VERSION, little-endian integer.
    pub const OPAQUE_DATA_VERSION: u16 = 34;
    /// CHIP_INFO, ASCII, NUL-terminated.
    pub const CHIP_INFO: u16 = 35;
    /// FEATURE_FLAG, u16.
    pub const FEATURE_FLAG: u16 = 36;
    /// INVALID.
    pub const INVALID: u16 = 255;

    /// Whether `t` is a type nvtrust's parser knows (1–25, 32–36, 255).
    pub fn is_known(t: u16) -> bool {
        matches!(t, 1..=25 | 32..=36 | 255)
    }
}

/// NVDEC0 enabled.
pub const NVDEC0_ENABLED: u8 = 0xAA;
/// NVDEC0 disabled: RIM index 35 is then not compared.
pub const NVDEC0_DISABLED: u8 = 0x55;

/// The decoded opaque data. Strings are ASCII with the NUL terminator or padding removed.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct OpaqueData {
    /// Opaque types in the order they appear.
    pub types: Vec<u16>,
    /// Driver version (`545.00`).
    pub driver_version: Option<String>,
    /// VBIOS version, lower case (`96.00.5e.00.01`).
    pub vbios_version: Option<String>,
    /// Board project (`1010`).
    pub project: Option<String>,
    /// Board project SKU (`0200`).
    pub project_sku: Option<String>,
    /// Project SKU modifier.
    pub project_sku_mod: Option<String>,
    /// Chip SKU (`882`).
    pub chip_sku: Option<String>,
    /// Chip SKU modifier.
    pub chip_sku_mod: Option<String>,
    /// Chip name (`GB100`), opaque data version 1 and later.
    pub chip_info: Option<String>,
    /// FWID, 48 bytes, hex in JSON.
    #[serde(with = "hex_option")]
    pub fwid: Option<Vec<u8>>,
    /// NVDEC0 status byte (`0xAA` enabled, `0x55` disabled).
    pub nvdec0_status: Option<u8>,
    /// Protected PCIe status byte.
    pub protected_pcie_status: Option<u8>,
    /// Opaque data version (absent means 0).
    pub opaque_data_version: Option<u64>,
    /// Feature flag: 0 SPT, 1 MPT, 2 PPCIE.
    pub feature_flag: Option<u16>,
    /// Measurement counters, one per index.
    pub msrscnt: Option<Vec<u32>>,
    /// Switch PDIs (8 bytes each), hex.
    pub switch_pdis: Vec<String>,
}

mod hex_option {
    use serde::{Deserialize, Deserializer, Serializer};

    pub(super) fn serialize<S: Serializer>(v: &Option<Vec<u8>>, s: S) -> Result<S::Ok, S::Error> {
        match v {
            Some(bytes) => s.serialize_some(&hex::encode(bytes)),
            None => s.serialize_none(),
        }
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(
        d: D,
    ) -> Result<Option<Vec<u8>>, D::Error> {
        Option::<String>::deserialize(d)?
            .map(|text| hex::decode(text).map_err(serde::de::Error::custom))
            .transpose()
    }
}

/// A parsed report. Fields borrow nothing: the report is small.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpdmReport {
    /// Request Param1 (bit 0: signature requested).
    pub request_param1: u8,
    /// Request Param2 (0xFF: all measurements).
    pub request_param2: u8,
    /// The verifier's challenge, report bytes 4..36.
    pub request_nonce: [u8; NONCE_LEN],
    /// The GPU's own nonce in the response.
    pub responder_nonce: [u8; NONCE_LEN],
    /// The measurement blocks, in report order.
    pub measurements: Vec<MeasurementBlock>,
    /// The decoded opaque data.
    pub opaque: OpaqueData,
    /// Signature, r ‖ s.
    pub signature: [u8; SIGNATURE_LEN],
    /// Length of the signed bytes (request ‖ response without the signature).
    pub signed_len: usize,
}

/// A bounds-checked cursor over the report.
struct Cursor<'a> {
    bytes: &'a [u8],
    pos: usize,
}

impl<'a> Cursor<'a> {
    fn take(&mut self, n: usize, field: &'static str) -> Result<&'a [u8], SpdmError> {
        let end = self.pos.checked_add(n).ok_or(SpdmError::Truncated {
            field,
            offset: self.pos,
        })?;
        let slice = self.bytes.get(self.pos..end).ok_or(SpdmError::Truncated {
            field,
            offset: self.pos,
        })?;
        self.pos = end;
        Ok(slice)
    }

    fn u8(&mut self, field: &'static str) -> Result<u8, SpdmError> {
        self.take(1, field)?
            .first()
            .copied()
            .ok_or(SpdmError::Truncated {
                field,
                offset: self.pos,
            })
    }

    fn uint(&mut self, n: usize, field: &'static str) -> Result<usize, SpdmError> {
        Ok(self
            .take(n, field)?
            .iter()
            .rev()
            .fold(0usize, |acc, b| (acc << 8) | usize::from(*b)))
    }

    fn array<const N: usize>(&mut self, field: &'static str) -> Result<[u8; N], SpdmError> {
        let mut out = [0u8; N];
        out.copy_from_slice(self.take(N, field)?);
        Ok(out)
    }
}

fn expect_byte(field: &'static str, found: u8, expected: u8) -> Result<(), SpdmError> {
    if found == expected {
        Ok(())
    } else {
        Err(SpdmError::Field {
            field,
            found: u64::from(found),
            expected: u64::from(expected),
        })
    }
}

impl SpdmReport {
    /// Parses a report: the 37-byte request, then the response whose signature must end the
    /// buffer exactly.
    pub fn parse(bytes: &[u8]) -> Result<Self, SpdmError> {
        let mut c = Cursor { bytes, pos: 0 };
        // Request (DSP0274 Table 44).
        expect_byte("request SPDMVersion", c.u8("request")?, SPDM_VERSION_11)?;
        expect_byte(
            "request RequestResponseCode",
            c.u8("request")?,
            GET_MEASUREMENTS,
        )?;
        let request_param1 = c.u8("request Param1")?;
        if request_param1 & 0x01 == 0 {
            return Err(SpdmError::Malformed(
                "the request did not ask for a signature (Param1 bit 0 clear)".to_owned(),
            ));
        }
        let request_param2 = c.u8("request Param2")?;
        let request_nonce = c.array::<NONCE_LEN>("request nonce")?;
        let _slot = c.u8("request SlotIDParam")?;
        // Response (DSP0274 Table 45).
        expect_byte("response SPDMVersion", c.u8("response")?, SPDM_VERSION_11)?;
        expect_byte(
            "response RequestResponseCode",
            c.u8("response")?,
            MEASUREMENTS,
        )?;
        let _param1 = c.u8("response Param1")?;
        let _param2 = c.u8("response Param2")?;
        let number_of_blocks = c.u8("NumberOfBlocks")?;
        if number_of_blocks == 0 {
            return Err(SpdmError::Malformed("NumberOfBlocks is 0".to_owned()));
        }
        let record_len = c.uint(3, "MeasurementRecordLength")?;
        let record = c.take(record_len, "MeasurementRecord")?;
        let measurements = parse_record(record, number_of_blocks)?;
        let responder_nonce = c.array::<NONCE_LEN>("responder nonce")?;
        let opaque_len = c.uint(2, "OpaqueLength")?;
        if opaque_len == 0 {
            return Err(SpdmError::Malformed("the opaque data is empty".to_owned()));
        }
        let opaque = parse_opaque(c.take(opaque_len, "OpaqueData")?)?;
        let signed_len = c.pos;
        let signature = c.array::<SIGNATURE_LEN>("signature")?;
        if c.pos != bytes.len() {
            return Err(SpdmError::TrailingBytes {
                count: bytes.len().saturating_sub(c.pos),
                signature_end: c.pos,
            });
        }
        Ok(Self {
            request_param1,
            request_param2,
            request_nonce,
            responder_nonce,
            measurements,
            opaque,
            signature,
            signed_len,
        })
    }

    /// The measurement block with SPDM index `index`.
    pub fn measurement(&self, index: u8) -> Option<&MeasurementBlock> {
        self.measurements.iter().find(|m| m.index == index)
    }
}

fn parse_record(record: &[u8], number_of_blocks: u8) -> Result<Vec<MeasurementBlock>, SpdmError> {
    let mut c = Cursor {
        bytes: record,
        pos: 0,
    };
    let mut blocks: Vec<MeasurementBlock> = Vec::with_capacity(usize::from(number_of_blocks));
    for _ in 0..number_of_blocks {
        let index = c.u8("measurement Index")?;
        let spec = c.u8("MeasurementSpecification")?;
        if spec != DMTF_SPECIFICATION {
            return Err(SpdmError::Malformed(format!(
                "measurement block {index} uses specification {spec:#04x}, not DMTF"
            )));
        }
        let size = c.uint(2, "MeasurementSize")?;
        let measurement = c.take(size, "Measurement")?;
        let mut m = Cursor {
            bytes: measurement,
            pos: 0,
        };
        let value_type = m.u8("DMTFSpecMeasurementValueType")?;
        let value_size = m.uint(2, "DMTFSpecMeasurementValueSize")?;
        let value = m.take(value_size, "DMTFSpecMeasurementValue")?;
        if m.pos != measurement.len() {
            return Err(SpdmError::Malformed(format!(
                "measurement block {index}: MeasurementSize {size} is not ValueSize {value_size} + 3"
            )));
        }
        if index == 0 || index == 0xFF || blocks.iter().any(|b| b.index == index) {
            return Err(SpdmError::Malformed(format!(
                "measurement index {index} is invalid or repeated"
            )));
        }
        blocks.push(MeasurementBlock {
            index,
            value_type,
            value: value.to_vec(),
        });
    }
    if c.pos != record.len() {
        return Err(SpdmError::Malformed(format!(
            "MeasurementRecordLength {} but {number_of_blocks} blocks use {}",
            record.len(),
            c.pos
        )));
    }
    Ok(blocks)
}

/// ASCII text up to the first NUL; the rest must be NUL padding.
fn ascii(t: u16, value: &[u8]) -> Result<String, SpdmError> {
    let end = value.iter().position(|b| *b == 0).unwrap_or(value.len());
    let (text, padding) = value.split_at(end);
    if padding.iter().any(|b| *b != 0) || !text.iter().all(|b| b.is_ascii_graphic() || *b == b' ') {
        return Err(SpdmError::Opaque {
            t,
            reason: "not NUL-terminated printable ASCII".to_owned(),
        });
    }
    Ok(String::from_utf8_lossy(text).into_owned())
}

fn exact<const N: usize>(t: u16, value: &[u8]) -> Result<[u8; N], SpdmError> {
    <[u8; N]>::try_from(value).map_err(|_| SpdmError::Opaque {
        t,
        reason: format!("{} bytes, expected {N}", value.len()),
    })
}

fn parse_opaque(data: &[u8]) -> Result<OpaqueData, SpdmError> {
    let mut c = Cursor {
        bytes: data,
        pos: 0,
    };
    let mut out = OpaqueData::default();
    while c.pos < data.len() {
        let t = u16::try_from(c.uint(2, "opaque type")?).unwrap_or(u16::MAX);
        let len = c.uint(2, "opaque length")?;
        let value = c.take(len, "opaque value")?;
        if !opaque::is_known(t) {
            return Err(SpdmError::Opaque {
                t,
                reason: "unknown opaque data type".to_owned(),
            });
        }
        if out.types.contains(&t) {
            return Err(SpdmError::Opaque {
                t,
                reason: "repeated opaque data type".to_owned(),
            });
        }
        out.types.push(t);
        match t {
            opaque::DRIVER_VERSION => out.driver_version = Some(ascii(t, value)?),
            opaque::VBIOS_VERSION => {
                let b = exact::<8>(t, value)?;
                out.vbios_version = Some(format!(
                    "{:02x}.{:02x}.{:02x}.{:02x}.{:02x}",
                    b[3], b[2], b[1], b[0], b[4]
                ));
            }
            opaque::PROJECT => out.project = Some(ascii(t, value)?),
            opaque::PROJECT_SKU => out.project_sku = Some(ascii(t, value)?),
            opaque::PROJECT_SKU_MOD => out.project_sku_mod = Some(ascii(t, value)?),
            opaque::CHIP_SKU => out.chip_sku = Some(ascii(t, value)?),
            opaque::CHIP_SKU_MOD => out.chip_sku_mod = Some(ascii(t, value)?),
            opaque::CHIP_INFO => out.chip_info = Some(ascii(t, value)?),
            opaque::FWID => out.fwid = Some(exact::<48>(t, value)?.to_vec()),
            opaque::NVDEC0_STATUS => out.nvdec0_status = Some(exact::<1>(t, value)?[0]),
            opaque::PROTECTED_PCIE_STATUS => {
                out.protected_pcie_status = Some(exact::<1>(t, value)?[0]);
            }
            opaque::FEATURE_FLAG => {
                out.feature_flag = Some(u16::from_le_bytes(exact::<2>(t, value)?));
            }
            opaque::OPAQUE_DATA_VERSION => {
                if value.is_empty() || value.len() > 8 {
                    return Err(SpdmError::Opaque {
                        t,
                        reason: format!("{} bytes, expected 1 to 8", value.len()),
                    });
                }
                out.opaque_data_version = Some(
                    value
                        .iter()
                        .rev()
                        .fold(0u64, |acc, b| (acc << 8) | u64::from(*b)),
                );
            }
            opaque::MSRSCNT => {
                if value.len() % 4 != 0 {
                    return Err(SpdmError::Opaque {
                        t,
                        reason: "length is not a multiple of 4".to_owned(),
                    });
                }
                out.msrscnt = Some(
                    value
                        .chunks_exact(4)
                        .map(|w| {
                            w.iter()
                                .rev()
                                .fold(0u32, |acc, b| (acc << 8) | u32::from(*b))
                        })
                        .collect(),
                );
            }
            opaque::SWITCH_PDI => {
                if value.len() % 8 != 0 {
                    return Err(SpdmError::Opaque {
                        t,
                        reason: "length is not a multiple of 8".to_owned(),
                    });
                }
                out.switch_pdis = value.chunks_exact(8).map(hex::encode).collect();
            }
            _ => {}
        }
    }
    Ok(out)
}

/// Reads a report file as NVML's callers store it: raw bytes, or the same bytes as hex text
/// (whitespace around it or between digits allowed, so `xxd -p`'s wrapped lines read too). A
/// raw report starts with 0x11, which is neither a hex digit nor whitespace, so the two cannot
/// be confused.
pub fn report_from_file(bytes: &[u8]) -> Result<Vec<u8>, SpdmError> {
    let text = bytes.trim_ascii();
    let is_hex_text = !text.is_empty()
        && text
            .iter()
            .all(|b| b.is_ascii_hexdigit() || b.is_ascii_whitespace());
    if is_hex_text {
        let digits: Vec<u8> = text.iter().copied().filter(u8::is_ascii_hexdigit).collect();
        hex::decode(digits).map_err(|e| SpdmError::Malformed(format!("hex report: {e}")))
    } else {
        Ok(bytes.to_vec())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HOPPER: &[u8] =
        include_bytes!("../../tests/data/nvidia/hopper-h100-545.00-nvtrust/report.bin");

    #[test]
    fn genuine_layout() {
        let r = SpdmReport::parse(HOPPER).unwrap();
        assert_eq!(r.signed_len, 3953);
        assert_eq!(r.measurements.len(), 64);
        assert!(
            r.measurements
                .iter()
                .all(|m| m.value.len() == 48 && m.value_type == 1)
        );
        assert_eq!(r.opaque.driver_version.as_deref(), Some("545.00"));
        assert_eq!(r.opaque.vbios_version.as_deref(), Some("96.00.5e.00.01"));
        assert_eq!(r.opaque.project.as_deref(), Some("1010"));
        assert_eq!(r.opaque.chip_sku.as_deref(), Some("882"));
        assert_eq!(r.opaque.nvdec0_status, Some(NVDEC0_DISABLED));
        assert_eq!(r.opaque.msrscnt.as_ref().map(Vec::len), Some(64));
        assert_eq!(r.measurement(1).map(|m| m.index), Some(1));
        assert!(r.measurement(65).is_none());
    }

    fn with(offset: usize, value: u8) -> Vec<u8> {
        let mut r = HOPPER.to_vec();
        r[offset] = value;
        r
    }

    #[test]
    fn fixed_fields_are_checked() {
        for (offset, value) in [(0, 0x12), (1, 0xE1), (37, 0x10), (38, 0x61), (41, 0)] {
            assert!(SpdmReport::parse(&with(offset, value)).is_err(), "{offset}");
        }
        // Param1 without the signature bit.
        assert!(SpdmReport::parse(&with(2, 0)).is_err());
        // A block that is not DMTF, a measurement size that disagrees with its value size.
        assert!(SpdmReport::parse(&with(46, 2)).is_err());
        assert!(SpdmReport::parse(&with(47, 52)).is_err());
        // A repeated index (block 2 claims index 1).
        assert!(SpdmReport::parse(&with(45 + 55, 1)).is_err());
        // NumberOfBlocks one short: the record has bytes left over.
        assert!(SpdmReport::parse(&with(41, 63)).is_err());
    }

    #[test]
    fn opaque_data_is_checked() {
        let opaque = 3599;
        // The first TLV is type 6 (VBIOS), 8 bytes. Unknown type:
        assert!(matches!(
            SpdmReport::parse(&with(opaque, 26)),
            Err(SpdmError::Opaque { t: 26, .. })
        ));
        // Type 3 (driver version) repeated:
        assert!(matches!(
            SpdmReport::parse(&with(opaque, 3)),
            Err(SpdmError::Opaque { t: 3, .. })
        ));
        // A length that runs past the opaque data.
        assert!(SpdmReport::parse(&with(opaque + 3, 0x10)).is_err());
        // Non-ASCII in the driver version.
        let driver = HOPPER.windows(7).position(|w| w == b"545.00\0").unwrap();
        assert!(SpdmReport::parse(&with(driver, 0xFF)).is_err());
        // Empty opaque data.
        let mut empty = HOPPER[..3597].to_vec();
        empty.extend([0, 0]);
        empty.extend([0u8; 96]);
        assert!(SpdmReport::parse(&empty).is_err());
    }

    #[test]
    fn file_forms() {
        assert_eq!(report_from_file(b"  11e0\n").unwrap(), vec![0x11, 0xE0]);
        assert!(report_from_file(b"11e").is_err());
        // Wrapped hex (`xxd -p`, CRLF) reads as the same bytes; an odd number of digits
        // is refused.
        assert_eq!(
            report_from_file(b"11e0\r\n ab\n\tCD\n").unwrap(),
            vec![0x11, 0xE0, 0xAB, 0xCD]
        );
        assert!(report_from_file(b"11e0\nab c").is_err());
        assert_eq!(report_from_file(&[0x11, 0xE0]).unwrap(), vec![0x11, 0xE0]);
    }
}
