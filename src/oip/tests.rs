#![allow(clippy::unwrap_used)]

use super::error::TensorError;
use super::tensor::{InputTensor, decode, encode_raw, f16_to_f32};
use crate::proto::inference::InferTensorContents;

fn raw(datatype: &str, shape: &[i64], bytes: &[u8]) -> Result<Vec<f32>, TensorError> {
    decode(&InputTensor {
        name: "input__0",
        datatype,
        shape,
        contents: None,
        raw: Some(bytes),
    })
    .map(|r| r.values)
}

fn typed(
    datatype: &str,
    shape: &[i64],
    contents: InferTensorContents,
) -> Result<Vec<f32>, TensorError> {
    decode(&InputTensor {
        name: "input__0",
        datatype,
        shape,
        contents: Some(&contents),
        raw: None,
    })
    .map(|r| r.values)
}

fn le<T: Copy, const N: usize>(values: &[T], to: fn(T) -> [u8; N]) -> Vec<u8> {
    values.iter().flat_map(|&v| to(v)).collect()
}

#[test]
fn fp32_raw_round_trips_and_reports_the_shape() {
    let values = [1.5f32, -2.25, 0.0, 3.0e-3, 7.0, 8.0];
    let r = decode(&InputTensor {
        name: "x",
        datatype: "FP32",
        shape: &[2, 3],
        contents: None,
        raw: Some(&encode_raw(&values)),
    })
    .unwrap();
    assert_eq!(r.shape, vec![2, 3]);
    assert_eq!(r.values, values);
}

#[test]
fn small_types_convert_exactly_from_raw() {
    assert_eq!(
        raw("INT8", &[1, 3], &[0x80, 0xff, 0x7f]).unwrap(),
        [-128.0, -1.0, 127.0]
    );
    assert_eq!(raw("UINT8", &[1, 2], &[0, 255]).unwrap(), [0.0, 255.0]);
    assert_eq!(
        raw("INT16", &[1, 2], &le(&[i16::MIN, 300], i16::to_le_bytes)).unwrap(),
        [-32768.0, 300.0]
    );
    assert_eq!(
        raw("UINT16", &[1, 1], &le(&[u16::MAX], u16::to_le_bytes)).unwrap(),
        [65535.0]
    );
    // BF16 is the top half of an f32.
    let bf = le(&[0x3fc0u16, 0xc120], u16::to_le_bytes);
    assert_eq!(raw("BF16", &[1, 2], &bf).unwrap(), [1.5, -10.0]);
}

#[test]
fn fp16_converts_every_class_exactly() {
    assert_eq!(f16_to_f32(0x3c00), 1.0);
    assert_eq!(f16_to_f32(0xc000), -2.0);
    assert_eq!(f16_to_f32(0x7bff), 65504.0); // largest normal
    assert_eq!(f16_to_f32(0x0001), 2f32.powi(-24)); // smallest subnormal
    assert_eq!(f16_to_f32(0x03ff), 1023.0 * 2f32.powi(-24)); // largest subnormal
    assert_eq!(f16_to_f32(0x0400), 2f32.powi(-14)); // smallest normal
    assert_eq!(f16_to_f32(0x8000).to_bits(), (-0.0f32).to_bits());
    assert_eq!(f16_to_f32(0x7c00), f32::INFINITY);
    assert!(f16_to_f32(0x7e00).is_nan());
    let bytes = le(&[0x3555u16], u16::to_le_bytes); // 0.33325195…
    assert_eq!(raw("FP16", &[1, 1], &bytes).unwrap(), [0.333_251_95]);
}

#[test]
fn wide_types_are_accepted_only_where_each_value_is_exact() {
    let ok = le(&[16_777_216i32, -5], i32::to_le_bytes);
    assert_eq!(raw("INT32", &[1, 2], &ok).unwrap(), [16_777_216.0, -5.0]);
    let bad = le(&[3, 16_777_217i32], i32::to_le_bytes);
    assert_eq!(
        raw("INT32", &[1, 2], &bad).unwrap_err(),
        TensorError::Inexact {
            name: "input__0".into(),
            datatype: "INT32",
            index: 1
        }
    );
    // i64::MAX rounds to 2^63, which a saturating cast back would mistake for exact.
    let max = le(&[i64::MAX], i64::to_le_bytes);
    assert!(matches!(
        raw("INT64", &[1, 1], &max),
        Err(TensorError::Inexact { .. })
    ));
    let big = le(&[1i64 << 40], i64::to_le_bytes);
    assert_eq!(raw("INT64", &[1, 1], &big).unwrap(), [2f32.powi(40)]);
    assert!(matches!(
        raw("UINT64", &[1, 1], &le(&[u64::MAX], u64::to_le_bytes)),
        Err(TensorError::Inexact { .. })
    ));
    assert!(matches!(
        raw("UINT32", &[1, 1], &le(&[u32::MAX], u32::to_le_bytes)),
        Err(TensorError::Inexact { .. })
    ));
    assert_eq!(
        raw("FP64", &[1, 2], &le(&[0.5f64, -1e10], f64::to_le_bytes)).unwrap(),
        [0.5, -1e10]
    );
    for v in [0.1f64, 1e300, f64::MIN_POSITIVE] {
        assert!(
            matches!(
                raw("FP64", &[1, 1], &v.to_le_bytes()),
                Err(TensorError::Inexact { .. })
            ),
            "{v} is not an f32"
        );
    }
}

#[test]
fn typed_contents_use_the_datatypes_field_and_range() {
    let fp32 = InferTensorContents {
        fp32_contents: vec![1.0, 2.0],
        ..Default::default()
    };
    assert_eq!(typed("FP32", &[1, 2], fp32.clone()).unwrap(), [1.0, 2.0]);
    // FP32 data in the wrong field is a count mismatch in the right one.
    assert!(matches!(
        typed("INT32", &[1, 2], fp32),
        Err(TensorError::ContentsLength {
            field: "int_contents",
            expected: 2,
            found: 0,
            ..
        })
    ));
    let ints = InferTensorContents {
        int_contents: vec![-128, 127],
        ..Default::default()
    };
    assert_eq!(typed("INT8", &[2, 1], ints).unwrap(), [-128.0, 127.0]);
    let out_of_int8 = InferTensorContents {
        int_contents: vec![1, 300],
        ..Default::default()
    };
    assert_eq!(
        typed("INT8", &[1, 2], out_of_int8).unwrap_err(),
        TensorError::OutOfType {
            name: "input__0".into(),
            datatype: "INT8",
            index: 1
        }
    );
    let uints = InferTensorContents {
        uint_contents: vec![70_000],
        ..Default::default()
    };
    assert!(matches!(
        typed("UINT16", &[1, 1], uints),
        Err(TensorError::OutOfType { .. })
    ));
    let fp64 = InferTensorContents {
        fp64_contents: vec![0.25, 0.1],
        ..Default::default()
    };
    assert!(matches!(
        typed("FP64", &[1, 2], fp64),
        Err(TensorError::Inexact { index: 1, .. })
    ));
    assert!(matches!(
        typed("FP16", &[1, 1], InferTensorContents::default()),
        Err(TensorError::RawOnly { .. })
    ));
}

#[test]
fn unsupported_datatypes_shapes_and_lengths_are_refused_with_names() {
    for dt in ["BOOL", "BYTES", "fp32", "FP8"] {
        let e = raw(dt, &[1, 1], &[0; 4]).unwrap_err();
        assert!(
            e.to_string().contains(dt) && e.to_string().contains("input__0"),
            "{e}"
        );
    }
    for shape in [&[4][..], &[1, 2, 2], &[-1, 4], &[]] {
        assert!(
            matches!(raw("FP32", shape, &[0; 16]), Err(TensorError::Shape { .. })),
            "{shape:?}"
        );
    }
    let e = raw("FP32", &[2, 2], &[0; 15]).unwrap_err();
    assert_eq!(
        e,
        TensorError::RawLength {
            name: "input__0".into(),
            datatype: "FP32",
            shape: vec![2, 2],
            expected: 16,
            found: 15
        }
    );
    assert!(e.to_string().contains("needs 16 bytes"), "{e}");
    // A huge shape cannot make the server allocate: the length check fails first.
    assert!(matches!(
        raw("FP64", &[i64::MAX, i64::MAX], &[0; 8]),
        Err(TensorError::RawLength { .. })
    ));
    let both = InferTensorContents {
        fp32_contents: vec![1.0],
        ..Default::default()
    };
    let e = decode(&InputTensor {
        name: "input__0",
        datatype: "FP32",
        shape: &[1, 1],
        contents: Some(&both),
        raw: Some(&[0; 4]),
    })
    .unwrap_err();
    assert!(matches!(e, TensorError::MixedContents { .. }));
}

#[test]
fn versions_are_reported_as_triton_numbers_where_they_start_with_one() {
    use super::service::triton_version;
    for (version, want) in [
        ("1.0.0", "1"),
        ("12.3", "12"),
        ("7", "7"),
        ("0.9.1", "0"),
        ("01.0.0", "01.0.0"),
        ("v1.0.0", "v1.0.0"),
        ("1a", "1a"),
        ("2024-05", "2024-05"),
        ("99999999999999999999.1", "99999999999999999999.1"),
    ] {
        assert_eq!(triton_version(version), want, "{version}");
    }
}

fn bytes_tensor<'a>(
    datatype: &'a str,
    shape: &'a [i64],
    raw: Option<&'a [u8]>,
    contents: Option<&'a InferTensorContents>,
) -> InputTensor<'a> {
    InputTensor {
        name: "text",
        datatype,
        shape,
        contents,
        raw,
    }
}

#[test]
fn bytes_tensors_decode_from_triton_raw_encoding_and_bytes_contents() {
    use super::tensor::decode_bytes;
    // Triton's raw encoding: a 4-byte little-endian length, then the bytes.
    let mut raw = Vec::new();
    for t in ["hello", "", "日本"] {
        raw.extend_from_slice(&(t.len() as u32).to_le_bytes());
        raw.extend_from_slice(t.as_bytes());
    }
    let want = vec![b"hello".to_vec(), Vec::new(), "日本".as_bytes().to_vec()];
    for shape in [&[3][..], &[3, 1][..]] {
        assert_eq!(
            decode_bytes(&bytes_tensor("BYTES", shape, Some(&raw), None)).unwrap(),
            want
        );
    }
    let contents = InferTensorContents {
        bytes_contents: want.clone(),
        ..Default::default()
    };
    assert_eq!(
        decode_bytes(&bytes_tensor("BYTES", &[3], None, Some(&contents))).unwrap(),
        want
    );
    // Refusals: datatype, shape, element count, truncated prefix or element, mixed.
    for (datatype, shape) in [
        ("FP32", &[3][..]),
        ("BYTES", &[3, 2][..]),
        ("BYTES", &[-1][..]),
    ] {
        let e = decode_bytes(&bytes_tensor(datatype, shape, Some(&raw), None)).unwrap_err();
        assert!(matches!(e, TensorError::TextTensor { .. }), "{e}");
    }
    let e = decode_bytes(&bytes_tensor("BYTES", &[2], Some(&raw), None)).unwrap_err();
    assert!(e.to_string().contains("found 3"), "{e}");
    let e = decode_bytes(&bytes_tensor(
        "BYTES",
        &[1],
        Some(&[5, 0, 0, 0, b'a']),
        None,
    ))
    .unwrap_err();
    assert!(
        e.to_string().contains("declares 5 bytes and 1 remain"),
        "{e}"
    );
    let e = decode_bytes(&bytes_tensor("BYTES", &[1], Some(&[1, 0]), None)).unwrap_err();
    assert!(e.to_string().contains("2 bytes left over"), "{e}");
    let e = decode_bytes(&bytes_tensor("BYTES", &[4], None, Some(&contents))).unwrap_err();
    assert!(matches!(e, TensorError::ContentsLength { .. }), "{e}");
    let e = decode_bytes(&bytes_tensor("BYTES", &[3], Some(&raw), Some(&contents))).unwrap_err();
    assert!(matches!(e, TensorError::MixedContents { .. }), "{e}");
}
