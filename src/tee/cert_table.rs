//! The SEV-SNP certificate table that the host hands the guest (GHCB specification, section
//! 4.1.8.1, "SNP Extended Guest Request"): entries of a 16-byte GUID, a little-endian u32
//! offset and a u32 length, closed by an all-zero GUID; each offset counts from the start of
//! the table. configfs-tsm returns it as `auxblob`.
//!
//! The table comes from the untrusted host, so every offset and length is bounds-checked
//! here. (`sev`'s own parser follows raw pointers without bounds checks.)

use confidant_attestation::{CertTableEntry, CertType};

use super::error::TeeError;

/// Bytes per table entry: GUID, offset, length.
const ENTRY_LEN: usize = 24;

/// The GUIDs of the GHCB specification (Table 9), in RFC 4122 byte order as Linux and `sev`
/// lay them out.
const GUIDS: [(&str, CertType); 5] = [
    ("c0b406a4-a803-4952-9743-3fb6014cd0ae", CertType::Ark),
    ("4ab7b379-bbac-4fe4-a02f-05aef327c782", CertType::Ask),
    ("63da758d-e664-4564-adc5-f4b93be8accd", CertType::Vcek),
    ("a8074bc2-a25a-483e-aae6-39c045a0b8a1", CertType::Vlek),
    ("92f81bc3-5811-4d3d-97ff-d19f88dc67ea", CertType::Crl),
];

/// Parses a certificate table. An empty blob is an empty table (the host supplied no
/// certificates).
pub(crate) fn parse(blob: &[u8]) -> Result<Vec<CertTableEntry>, TeeError> {
    let mut entries = Vec::new();
    let mut headers = blob.chunks(ENTRY_LEN);
    loop {
        let Some(header) = headers.next() else {
            if blob.is_empty() {
                return Ok(entries);
            }
            return Err(malformed("no closing all-zero entry"));
        };
        let (Some(guid), Some(offset), Some(length)) = (
            header.get(..16),
            header.get(16..20).and_then(le_u32),
            header.get(20..24).and_then(le_u32),
        ) else {
            return Err(malformed("truncated entry"));
        };
        if guid.iter().all(|b| *b == 0) {
            return Ok(entries);
        }
        let start = usize::try_from(offset).map_err(|_| malformed("offset out of range"))?;
        let len = usize::try_from(length).map_err(|_| malformed("length out of range"))?;
        let data = start
            .checked_add(len)
            .and_then(|end| blob.get(start..end))
            .ok_or_else(|| {
                malformed(format!(
                    "entry {} claims bytes {offset}+{length}, beyond the {}-byte table",
                    entries.len(),
                    blob.len()
                ))
            })?;
        entries.push(CertTableEntry::new(cert_type(guid), data.to_vec()));
    }
}

/// Builds a table (for tests and for tools that assemble auxblob-like files).
#[cfg(test)]
pub(crate) fn encode(entries: &[(CertType, &[u8])]) -> Vec<u8> {
    let header_len = ENTRY_LEN * (entries.len() + 1);
    let mut table = Vec::new();
    let mut data = Vec::new();
    for (kind, bytes) in entries {
        let guid = GUIDS
            .iter()
            .find(|(_, k)| k == kind)
            .map(|(g, _)| guid_bytes(g))
            .unwrap_or_default();
        table.extend_from_slice(&guid);
        let offset = u32::try_from(header_len + data.len()).unwrap_or(u32::MAX);
        table.extend_from_slice(&offset.to_le_bytes());
        let len = u32::try_from(bytes.len()).unwrap_or(u32::MAX);
        table.extend_from_slice(&len.to_le_bytes());
        data.extend_from_slice(bytes);
    }
    table.extend_from_slice(&[0u8; ENTRY_LEN]);
    table.extend_from_slice(&data);
    table
}

#[cfg(test)]
fn guid_bytes(text: &str) -> Vec<u8> {
    hex::decode(text.replace('-', "")).unwrap_or_default()
}

fn cert_type(guid: &[u8]) -> CertType {
    let text = guid_string(guid);
    GUIDS
        .iter()
        .find(|(g, _)| *g == text)
        .map(|(_, kind)| kind.clone())
        .unwrap_or(CertType::Other(text))
}

/// `8-4-4-4-12` lowercase hex, in the byte order given.
fn guid_string(guid: &[u8]) -> String {
    let hex = hex::encode(guid);
    let part = |range: std::ops::Range<usize>| hex.get(range).unwrap_or_default().to_owned();
    format!(
        "{}-{}-{}-{}-{}",
        part(0..8),
        part(8..12),
        part(12..16),
        part(16..20),
        part(20..32)
    )
}

fn le_u32(bytes: &[u8]) -> Option<u32> {
    bytes.try_into().ok().map(u32::from_le_bytes)
}

fn malformed(reason: impl Into<String>) -> TeeError {
    TeeError::Malformed {
        interface: "configfs-tsm",
        what: "certificate table",
        reason: reason.into(),
    }
}
