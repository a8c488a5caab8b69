//! A minimal DER reader for the two NVIDIA FWID certificate extensions.
//!
//! The device certificates are decoded with `x509-cert`; only the values of NVIDIA's own
//! extensions (TCG DICE `tcg-dice-Ueid`-style FWID on Hopper, `DiceTcbInfo` on Blackwell)
//! need walking, and those are a handful of definite-length TLVs. Every read is bounds
//! checked; long-form lengths are accepted up to four bytes and must be minimal.

/// One decoded TLV: its tag byte and its contents.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Tlv<'a> {
    pub(crate) tag: u8,
    pub(crate) value: &'a [u8],
}

/// Reads TLVs one after the other from a byte slice.
#[derive(Debug, Clone)]
pub(crate) struct Reader<'a> {
    rest: &'a [u8],
}

/// Tag of a SEQUENCE.
pub(crate) const SEQUENCE: u8 = 0x30;
/// Tag of an OBJECT IDENTIFIER.
pub(crate) const OID: u8 = 0x06;
/// Tag of an OCTET STRING.
pub(crate) const OCTET_STRING: u8 = 0x04;

impl<'a> Reader<'a> {
    pub(crate) fn new(bytes: &'a [u8]) -> Self {
        Self { rest: bytes }
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.rest.is_empty()
    }

    /// The next TLV including its header, as raw bytes.
    pub(crate) fn raw_next(&mut self) -> Result<&'a [u8], String> {
        let before = self.rest;
        self.next()?;
        let used = before.len().saturating_sub(self.rest.len());
        before.get(..used).ok_or_else(|| "DER: bad TLV".to_owned())
    }

    /// Reads the next TLV. Multi-byte (high-number) tags are refused.
    pub(crate) fn next(&mut self) -> Result<Tlv<'a>, String> {
        let (&tag, after_tag) = self.rest.split_first().ok_or("DER: unexpected end")?;
        if tag & 0x1F == 0x1F {
            return Err("DER: high-number tags are not supported".to_owned());
        }
        let (&first, after_len) = after_tag.split_first().ok_or("DER: missing length")?;
        let (len, body) = if first < 0x80 {
            (usize::from(first), after_len)
        } else {
            let count = usize::from(first & 0x7F);
            if count == 0 || count > 4 {
                return Err(format!("DER: unsupported length form {first:#04x}"));
            }
            let bytes = after_len.get(..count).ok_or("DER: truncated length")?;
            if bytes.first() == Some(&0) {
                return Err("DER: non-minimal length".to_owned());
            }
            let len = bytes
                .iter()
                .fold(0usize, |acc, b| (acc << 8) | usize::from(*b));
            if len < 0x80 {
                return Err("DER: non-minimal length".to_owned());
            }
            (len, after_len.get(count..).ok_or("DER: truncated length")?)
        };
        let value = body
            .get(..len)
            .ok_or("DER: value runs past its container")?;
        self.rest = body
            .get(len..)
            .ok_or("DER: value runs past its container")?;
        Ok(Tlv { tag, value })
    }

    /// Reads the next TLV and requires its tag.
    pub(crate) fn expect(&mut self, tag: u8) -> Result<&'a [u8], String> {
        let tlv = self.next()?;
        if tlv.tag == tag {
            Ok(tlv.value)
        } else {
            Err(format!(
                "DER: expected tag {tag:#04x}, found {:#04x}",
                tlv.tag
            ))
        }
    }
}

/// DER encoding of the OID 2.16.840.1.101.3.4.2.2 (id-sha384), contents only.
pub(crate) const SHA384_OID: [u8; 9] = [0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02, 0x02];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_short_and_long_lengths() {
        let mut long = vec![0x04, 0x81, 0x80];
        long.extend(std::iter::repeat_n(7u8, 0x80));
        let mut r = Reader::new(&long);
        let tlv = r.next().unwrap();
        assert_eq!((tlv.tag, tlv.value.len()), (0x04, 0x80));
        assert!(r.is_empty());
        let mut r = Reader::new(&[0x30, 0x03, 0x02, 0x01, 0x05, 0x04, 0x00]);
        assert_eq!(r.expect(SEQUENCE).unwrap(), &[0x02, 0x01, 0x05]);
        assert_eq!(r.expect(OCTET_STRING).unwrap(), &[] as &[u8]);
    }

    #[test]
    fn refuses_truncation_and_non_minimal_lengths() {
        for bad in [
            &[0x04, 0x02, 0x00][..],
            &[0x04],
            &[0x04, 0x81, 0x05, 0, 0, 0, 0, 0],
            &[0x04, 0x82, 0x00, 0x80],
            &[0x04, 0x85, 1, 1, 1, 1, 1],
            &[0x1F, 0x01, 0x00],
            &[0x04, 0x80],
        ] {
            assert!(Reader::new(bad).next().is_err(), "{bad:?}");
        }
        assert!(Reader::new(&[0x02, 0x00]).expect(OCTET_STRING).is_err());
    }
}
