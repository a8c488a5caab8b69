//! An Open Inference Protocol input tensor from a client: datatype, shape and raw contents
//! from the input, decoded as rows and as texts. Beyond never panicking (nor allocating what
//! the shape claims before the contents prove it): what decodes fills its shape exactly, and
//! integer types decode to finite values.
#![no_main]
use confidant::oip::tensor::{InputTensor, decode, decode_bytes};
use libfuzzer_sys::fuzz_target;

const TYPES: [&str; 14] = [
    "BOOL", "UINT8", "UINT16", "UINT32", "UINT64", "INT8", "INT16", "INT32", "INT64", "FP16",
    "FP32", "FP64", "BYTES", "BF16",
];

fuzz_target!(|data: &[u8]| {
    let Some((&head, rest)) = data.split_first() else {
        return;
    };
    let datatype = TYPES[usize::from(head) % TYPES.len()];
    let dims = usize::from(head >> 4) % 4;
    if rest.len() < dims * 8 {
        return;
    }
    let (shape_bytes, raw) = rest.split_at(dims * 8);
    let shape: Vec<i64> = shape_bytes
        .chunks_exact(8)
        .map(|c| i64::from_le_bytes(c.try_into().unwrap()))
        .collect();
    let input = InputTensor {
        name: "input",
        datatype,
        shape: &shape,
        contents: None,
        raw: Some(raw),
    };
    if let Ok(rows) = decode(&input) {
        let n: u64 = rows.shape.iter().product();
        assert_eq!(rows.values.len() as u64, n, "values do not fill the shape");
        assert!(
            rows.values
                .iter()
                .all(|v| v.is_finite() || datatype.starts_with("FP") || datatype == "BF16")
        );
    }
    if let Ok(texts) = decode_bytes(&input) {
        assert_eq!(
            Some(texts.len() as i64),
            shape.first().copied(),
            "texts do not fill the shape"
        );
    }
});
