//! Open Inference Protocol tensors to and from the engine's row-major f32 rows.
//!
//! FP32 is the base type. Other numeric datatypes are converted only where the conversion is
//! lossless, checked value by value: FP16, BF16, INT8, INT16, UINT8 and UINT16 always are;
//! INT32, UINT32, INT64, UINT64 and FP64 are when each value is exactly an f32 (integers up to
//! 2^24 in magnitude, and so on). Anything else is refused, naming the tensor and datatype:
//! a confidential model must never answer a question it silently rounded.
//!
//! Raw contents are little-endian, as the protocol specifies.

use super::error::TensorError;
use crate::proto::inference::InferTensorContents;

/// The numeric datatypes the server accepts, by their protocol names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Datatype {
    /// IEEE 754 binary32 (the model's own type).
    Fp32,
    /// IEEE 754 binary16.
    Fp16,
    /// bfloat16 (Triton's extension to the protocol).
    Bf16,
    /// IEEE 754 binary64.
    Fp64,
    /// Signed 8-bit.
    Int8,
    /// Signed 16-bit.
    Int16,
    /// Signed 32-bit.
    Int32,
    /// Signed 64-bit.
    Int64,
    /// Unsigned 8-bit.
    Uint8,
    /// Unsigned 16-bit.
    Uint16,
    /// Unsigned 32-bit.
    Uint32,
    /// Unsigned 64-bit.
    Uint64,
}

impl Datatype {
    /// Parses a protocol datatype name (`"FP32"`, …); `None` for BOOL, BYTES and unknown names.
    pub fn parse(name: &str) -> Option<Self> {
        Some(match name {
            "FP32" => Self::Fp32,
            "FP16" => Self::Fp16,
            "BF16" => Self::Bf16,
            "FP64" => Self::Fp64,
            "INT8" => Self::Int8,
            "INT16" => Self::Int16,
            "INT32" => Self::Int32,
            "INT64" => Self::Int64,
            "UINT8" => Self::Uint8,
            "UINT16" => Self::Uint16,
            "UINT32" => Self::Uint32,
            "UINT64" => Self::Uint64,
            _ => return None,
        })
    }

    /// The protocol name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Fp32 => "FP32",
            Self::Fp16 => "FP16",
            Self::Bf16 => "BF16",
            Self::Fp64 => "FP64",
            Self::Int8 => "INT8",
            Self::Int16 => "INT16",
            Self::Int32 => "INT32",
            Self::Int64 => "INT64",
            Self::Uint8 => "UINT8",
            Self::Uint16 => "UINT16",
            Self::Uint32 => "UINT32",
            Self::Uint64 => "UINT64",
        }
    }

    /// Bytes per element in raw contents.
    pub fn size(self) -> usize {
        match self {
            Self::Int8 | Self::Uint8 => 1,
            Self::Fp16 | Self::Bf16 | Self::Int16 | Self::Uint16 => 2,
            Self::Fp32 | Self::Int32 | Self::Uint32 => 4,
            Self::Fp64 | Self::Int64 | Self::Uint64 => 8,
        }
    }
}

/// One input tensor as the request carries it.
#[derive(Debug, Clone, Copy)]
pub struct InputTensor<'a> {
    /// The tensor name.
    pub name: &'a str,
    /// The datatype name.
    pub datatype: &'a str,
    /// The shape.
    pub shape: &'a [i64],
    /// Typed contents, if sent.
    pub contents: Option<&'a InferTensorContents>,
    /// Raw little-endian contents, if sent.
    pub raw: Option<&'a [u8]>,
}

/// An input decoded to the engine's form.
#[derive(Debug, Clone, PartialEq)]
pub struct Rows {
    /// `[rows, features]`.
    pub shape: Vec<u64>,
    /// Row-major values.
    pub values: Vec<f32>,
}

/// Decodes one `[rows, features]` input tensor to f32, refusing any lossy conversion.
pub fn decode(input: &InputTensor<'_>) -> Result<Rows, TensorError> {
    let name = input.name;
    let &[rows, features] = input.shape else {
        return Err(shape_error(input));
    };
    let (Ok(rows), Ok(features)) = (u64::try_from(rows), u64::try_from(features)) else {
        return Err(shape_error(input));
    };
    let dtype = Datatype::parse(input.datatype).ok_or_else(|| TensorError::Datatype {
        name: name.to_string(),
        datatype: input.datatype.to_string(),
    })?;
    let count = u128::from(rows) * u128::from(features);
    let values = match (input.raw, input.contents) {
        (Some(_), Some(c)) if !contents_empty(c) => {
            return Err(TensorError::MixedContents {
                name: name.to_string(),
            });
        }
        (Some(raw), _) => decode_raw(input, dtype, count, raw)?,
        (None, contents) => {
            let empty = InferTensorContents::default();
            decode_typed(input, dtype, count, contents.unwrap_or(&empty))?
        }
    };
    Ok(Rows {
        shape: vec![rows, features],
        values,
    })
}

/// Decodes a text model's input: a `BYTES` tensor of shape `[n]` or `[n, 1]`, as
/// `bytes_contents` (one element each) or Triton's raw encoding (each element a 4-byte
/// little-endian length and its bytes, back to back). The bytes are returned as sent; the
/// pipeline checks their size and UTF-8.
pub fn decode_bytes(input: &InputTensor<'_>) -> Result<Vec<Vec<u8>>, TensorError> {
    let name = input.name;
    let shape_refused = || TensorError::TextTensor {
        name: name.to_string(),
        datatype: input.datatype.to_string(),
        shape: input.shape.to_vec(),
    };
    if input.datatype != "BYTES" {
        return Err(shape_refused());
    }
    let count = match input.shape {
        [n] | [n, 1] => u64::try_from(*n).map_err(|_| shape_refused())?,
        _ => return Err(shape_refused()),
    };
    let encoding = |problem: String| TensorError::BytesEncoding {
        name: name.to_string(),
        count,
        problem,
    };
    match (input.raw, input.contents) {
        (Some(_), Some(c)) if !contents_empty(c) => Err(TensorError::MixedContents {
            name: name.to_string(),
        }),
        (Some(mut raw), _) => {
            // Bounded by the raw buffer: no element count from the caller sizes an
            // allocation before the bytes are there.
            let mut texts = Vec::new();
            while !raw.is_empty() {
                let (len, rest) = raw
                    .split_first_chunk::<4>()
                    .ok_or_else(|| encoding(format!("{} bytes left over", raw.len())))?;
                let len = u32::from_le_bytes(*len) as usize;
                let text = rest.get(..len).ok_or_else(|| {
                    encoding(format!(
                        "element {} declares {len} bytes and {} remain",
                        texts.len(),
                        rest.len()
                    ))
                })?;
                texts.push(text.to_vec());
                raw = &rest[len..];
            }
            if texts.len() as u64 != count {
                return Err(encoding(format!("found {}", texts.len())));
            }
            Ok(texts)
        }
        (None, contents) => {
            let bytes = contents.map_or(&[][..], |c| c.bytes_contents.as_slice());
            if bytes.len() as u64 != count {
                return Err(TensorError::ContentsLength {
                    name: name.to_string(),
                    datatype: "BYTES",
                    field: "bytes_contents",
                    shape: input.shape.to_vec(),
                    expected: u128::from(count),
                    found: bytes.len(),
                });
            }
            Ok(bytes.to_vec())
        }
    }
}

/// Encodes f32 values as raw little-endian output contents.
pub fn encode_raw(values: &[f32]) -> Vec<u8> {
    let mut out = Vec::with_capacity(values.len() * 4);
    for v in values {
        out.extend_from_slice(&v.to_le_bytes());
    }
    out
}

fn shape_error(input: &InputTensor<'_>) -> TensorError {
    TensorError::Shape {
        name: input.name.to_string(),
        shape: input.shape.to_vec(),
    }
}

fn contents_empty(c: &InferTensorContents) -> bool {
    c.bool_contents.is_empty()
        && c.int_contents.is_empty()
        && c.int64_contents.is_empty()
        && c.uint_contents.is_empty()
        && c.uint64_contents.is_empty()
        && c.fp32_contents.is_empty()
        && c.fp64_contents.is_empty()
        && c.bytes_contents.is_empty()
}

fn decode_raw(
    input: &InputTensor<'_>,
    dtype: Datatype,
    count: u128,
    raw: &[u8],
) -> Result<Vec<f32>, TensorError> {
    let size = dtype.size();
    // Saturating: a shape too large to count can never match the bytes sent.
    let expected = count.saturating_mul(size as u128);
    if expected != raw.len() as u128 {
        return Err(TensorError::RawLength {
            name: input.name.to_string(),
            datatype: dtype.as_str(),
            shape: input.shape.to_vec(),
            expected,
            found: raw.len(),
        });
    }
    // `chunks_exact` yields exactly `size` bytes, so the conversions below cannot fail.
    let cells = raw.chunks_exact(size);
    match dtype {
        Datatype::Fp32 => Ok(cells.map(|c| f32::from_le_bytes(array(c))).collect()),
        Datatype::Fp16 => Ok(cells
            .map(|c| f16_to_f32(u16::from_le_bytes(array(c))))
            .collect()),
        Datatype::Bf16 => Ok(cells
            .map(|c| f32::from_bits(u32::from(u16::from_le_bytes(array(c))) << 16))
            .collect()),
        Datatype::Int8 => Ok(raw.iter().map(|&b| f32::from(b as i8)).collect()),
        Datatype::Uint8 => Ok(raw.iter().map(|&b| f32::from(b)).collect()),
        Datatype::Int16 => Ok(cells
            .map(|c| f32::from(i16::from_le_bytes(array(c))))
            .collect()),
        Datatype::Uint16 => Ok(cells
            .map(|c| f32::from(u16::from_le_bytes(array(c))))
            .collect()),
        Datatype::Int32 => exact(
            input,
            dtype,
            cells.map(|c| i64::from(i32::from_le_bytes(array(c)))),
            exact_i64,
        ),
        Datatype::Uint32 => exact(
            input,
            dtype,
            cells.map(|c| u64::from(u32::from_le_bytes(array(c)))),
            exact_u64,
        ),
        Datatype::Int64 => exact(
            input,
            dtype,
            cells.map(|c| i64::from_le_bytes(array(c))),
            exact_i64,
        ),
        Datatype::Uint64 => exact(
            input,
            dtype,
            cells.map(|c| u64::from_le_bytes(array(c))),
            exact_u64,
        ),
        Datatype::Fp64 => exact(
            input,
            dtype,
            cells.map(|c| f64::from_le_bytes(array(c))),
            exact_f64,
        ),
    }
}

fn decode_typed(
    input: &InputTensor<'_>,
    dtype: Datatype,
    count: u128,
    c: &InferTensorContents,
) -> Result<Vec<f32>, TensorError> {
    let check = |field: &'static str, found: usize| {
        if count == found as u128 {
            Ok(())
        } else {
            Err(TensorError::ContentsLength {
                name: input.name.to_string(),
                datatype: dtype.as_str(),
                field,
                shape: input.shape.to_vec(),
                expected: count,
                found,
            })
        }
    };
    match dtype {
        Datatype::Fp32 => {
            check("fp32_contents", c.fp32_contents.len())?;
            Ok(c.fp32_contents.clone())
        }
        Datatype::Fp64 => {
            check("fp64_contents", c.fp64_contents.len())?;
            exact(input, dtype, c.fp64_contents.iter().copied(), exact_f64)
        }
        Datatype::Int8 | Datatype::Int16 | Datatype::Int32 => {
            check("int_contents", c.int_contents.len())?;
            let (lo, hi) = match dtype {
                Datatype::Int8 => (i64::from(i8::MIN), i64::from(i8::MAX)),
                Datatype::Int16 => (i64::from(i16::MIN), i64::from(i16::MAX)),
                _ => (i64::from(i32::MIN), i64::from(i32::MAX)),
            };
            in_type(
                input,
                dtype,
                c.int_contents.iter().map(|&v| i64::from(v)),
                lo,
                hi,
            )?;
            exact(
                input,
                dtype,
                c.int_contents.iter().map(|&v| i64::from(v)),
                exact_i64,
            )
        }
        Datatype::Uint8 | Datatype::Uint16 | Datatype::Uint32 => {
            check("uint_contents", c.uint_contents.len())?;
            let hi = match dtype {
                Datatype::Uint8 => i64::from(u8::MAX),
                Datatype::Uint16 => i64::from(u16::MAX),
                _ => i64::from(u32::MAX),
            };
            in_type(
                input,
                dtype,
                c.uint_contents.iter().map(|&v| i64::from(v)),
                0,
                hi,
            )?;
            exact(
                input,
                dtype,
                c.uint_contents.iter().map(|&v| u64::from(v)),
                exact_u64,
            )
        }
        Datatype::Int64 => {
            check("int64_contents", c.int64_contents.len())?;
            exact(input, dtype, c.int64_contents.iter().copied(), exact_i64)
        }
        Datatype::Uint64 => {
            check("uint64_contents", c.uint64_contents.len())?;
            exact(input, dtype, c.uint64_contents.iter().copied(), exact_u64)
        }
        Datatype::Fp16 | Datatype::Bf16 => Err(TensorError::RawOnly {
            name: input.name.to_string(),
            datatype: dtype.as_str(),
        }),
    }
}

/// Converts every value with `convert`, refusing at the first one it cannot hold exactly.
fn exact<T>(
    input: &InputTensor<'_>,
    dtype: Datatype,
    values: impl Iterator<Item = T>,
    convert: fn(T) -> Option<f32>,
) -> Result<Vec<f32>, TensorError> {
    values
        .enumerate()
        .map(|(index, v)| {
            convert(v).ok_or_else(|| TensorError::Inexact {
                name: input.name.to_string(),
                datatype: dtype.as_str(),
                index,
            })
        })
        .collect()
}

fn in_type(
    input: &InputTensor<'_>,
    dtype: Datatype,
    mut values: impl Iterator<Item = i64>,
    lo: i64,
    hi: i64,
) -> Result<(), TensorError> {
    match values.position(|v| !(lo..=hi).contains(&v)) {
        Some(index) => Err(TensorError::OutOfType {
            name: input.name.to_string(),
            datatype: dtype.as_str(),
            index,
        }),
        None => Ok(()),
    }
}

/// `v` as f32 if the f32 is exactly `v`. The round trip goes through i128 so that `i64::MAX`,
/// which rounds to 2^63, is not mistaken for exact by a saturating cast back.
fn exact_i64(v: i64) -> Option<f32> {
    let f = v as f32;
    (f as i128 == i128::from(v)).then_some(f)
}

fn exact_u64(v: u64) -> Option<f32> {
    let f = v as f32;
    (f as u128 == u128::from(v)).then_some(f)
}

/// NaN and the infinities convert as themselves; input validation then refuses them with
/// its own message (values must be finite).
fn exact_f64(v: f64) -> Option<f32> {
    let f = v as f32;
    (v.is_nan() || f64::from(f) == v).then_some(f)
}

/// IEEE binary16 to binary32; exact for every input.
pub fn f16_to_f32(h: u16) -> f32 {
    let sign = u32::from(h >> 15) << 31;
    let exponent = u32::from((h >> 10) & 0x1f);
    let mantissa = u32::from(h & 0x3ff);
    match exponent {
        // Zero and subnormals: mantissa × 2^-24, exact in f32.
        0 => {
            let magnitude = mantissa as f32 * f32::from_bits(0x3380_0000);
            f32::from_bits(sign | magnitude.to_bits())
        }
        // Infinities and NaNs keep their payload.
        0x1f => f32::from_bits(sign | 0x7f80_0000 | (mantissa << 13)),
        // Normal numbers: rebias the exponent from 15 to 127.
        _ => f32::from_bits(sign | ((exponent + 112) << 23) | (mantissa << 13)),
    }
}

fn array<const N: usize>(bytes: &[u8]) -> [u8; N] {
    let mut out = [0u8; N];
    out.copy_from_slice(bytes);
    out
}
