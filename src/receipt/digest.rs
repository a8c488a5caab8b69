//! The canonical forms that receipts digest, the same whichever API carried the call.
//!
//! All integers are unsigned 64-bit little-endian; floats are IEEE-754 binary32
//! little-endian; texts are their UTF-8 bytes as sent.
//!
//! - **Request** (keyed): `HMAC-SHA256(salt, "confidant-request-v1" ‖ form)`, where `form` is
//!   `0x01 ‖ n_dims ‖ dims… ‖ values…` for numeric rows (`dims` as the call gave the shape,
//!   `[rows, features]`), or `0x02 ‖ n_texts ‖ (len ‖ bytes)…` for texts.
//! - **Response**: `SHA-256("confidant-response-v1" ‖ rows ‖ width ‖ values… ‖ n_labels ‖
//!   (len ‖ bytes)…)`: the released `rows × width` outputs (width 0 when a policy releases
//!   labels only) and the label of each row (none for embeddings).

use hmac::{KeyInit as _, Mac as _};
use sha2::Digest as _;

/// The request's domain.
pub const REQUEST_DOMAIN: &[u8] = b"confidant-request-v1";
/// The response's domain.
pub const RESPONSE_DOMAIN: &[u8] = b"confidant-response-v1";

/// A request's input, as the pipeline sees it.
#[derive(Debug, Clone, Copy)]
pub enum RequestInput<'a> {
    /// Numeric rows: the shape the call gave, and the values, row-major.
    Rows {
        /// `[rows, features]`.
        shape: &'a [u64],
        /// The values.
        values: &'a [f32],
    },
    /// A text model's inputs, as sent.
    Texts(&'a [Vec<u8>]),
}

/// Anything both a MAC and a hash can absorb.
trait Absorb {
    fn absorb(&mut self, bytes: &[u8]);

    fn u64(&mut self, v: u64) {
        self.absorb(&v.to_le_bytes());
    }

    fn floats(&mut self, values: &[f32]) {
        // In chunks: one update per 64 values rather than one per value (a small buffer:
        // most calls digest a few values, and a large one costs more to clear than to hash).
        let mut buf = [0u8; 256];
        for chunk in values.chunks(64) {
            for (out, v) in buf.chunks_exact_mut(4).zip(chunk) {
                out.copy_from_slice(&v.to_le_bytes());
            }
            self.absorb(&buf[..chunk.len() * 4]);
        }
    }

    fn strings<S: AsRef<[u8]>>(&mut self, items: &[S]) {
        self.u64(items.len() as u64);
        for s in items {
            let s = s.as_ref();
            self.u64(s.len() as u64);
            self.absorb(s);
        }
    }
}

impl Absorb for hmac::Hmac<sha2::Sha256> {
    fn absorb(&mut self, bytes: &[u8]) {
        self.update(bytes);
    }
}

impl Absorb for sha2::Sha256 {
    fn absorb(&mut self, bytes: &[u8]) {
        self.update(bytes);
    }
}

/// The request digest, keyed with the client's `salt`.
pub fn request(salt: &[u8], input: RequestInput<'_>) -> [u8; 32] {
    // HMAC takes a key of any length.
    let mut mac = match hmac::Hmac::<sha2::Sha256>::new_from_slice(salt) {
        Ok(m) => m,
        Err(_) => unreachable!("HMAC accepts keys of every length"),
    };
    mac.absorb(REQUEST_DOMAIN);
    match input {
        RequestInput::Rows { shape, values } => {
            mac.absorb(&[1]);
            mac.u64(shape.len() as u64);
            for d in shape {
                mac.u64(*d);
            }
            mac.floats(values);
        }
        RequestInput::Texts(texts) => {
            mac.absorb(&[2]);
            mac.strings(texts);
        }
    }
    mac.finalize().into_bytes().into()
}

/// The response digest.
pub fn response<S: AsRef<[u8]>>(rows: u64, width: u64, values: &[f32], labels: &[S]) -> [u8; 32] {
    let mut h = sha2::Sha256::new();
    h.absorb(RESPONSE_DOMAIN);
    h.u64(rows);
    h.u64(width);
    h.floats(values);
    h.strings(labels);
    h.finalize().into()
}

/// The explanation's domain.
pub const EXPLANATION_DOMAIN: &[u8] = b"confidant-explanation-v1";

/// One explanation (a row's, or a text's), as the explanation digest covers it.
#[derive(Debug, Clone, Copy)]
pub struct Explained<'a> {
    /// The output explained.
    pub target: u64,
    /// One attribution per feature, or per token.
    pub attributions: &'a [f32],
    /// The output at the input and at the baseline.
    pub output_at_input: f32,
    /// The output at the baseline.
    pub output_at_baseline: f32,
    /// The completeness gap reported.
    pub completeness_error: f32,
    /// Path points used.
    pub steps: u64,
    /// A text's tokens (none for rows).
    pub tokens: &'a [String],
}

/// The digest of an Explain answer: `SHA-256("confidant-explanation-v1" ‖ n ‖ (target ‖
/// n_attr ‖ attributions… ‖ output_at_input ‖ output_at_baseline ‖ completeness_error ‖
/// steps ‖ n_tokens ‖ (len ‖ token)…)… ‖ n_baseline ‖ baseline… ‖ len ‖ baseline_token)`.
pub fn explanation(items: &[Explained<'_>], baseline: &[f32], baseline_token: &str) -> [u8; 32] {
    let mut h = sha2::Sha256::new();
    h.absorb(EXPLANATION_DOMAIN);
    h.u64(items.len() as u64);
    for e in items {
        h.u64(e.target);
        h.u64(e.attributions.len() as u64);
        h.floats(e.attributions);
        h.floats(&[
            e.output_at_input,
            e.output_at_baseline,
            e.completeness_error,
        ]);
        h.u64(e.steps);
        h.strings(e.tokens);
    }
    h.u64(baseline.len() as u64);
    h.floats(baseline);
    h.u64(baseline_token.len() as u64);
    h.absorb(baseline_token.as_bytes());
    h.finalize().into()
}

/// The explanation digest of the JSON `confidant explain` prints (rows: `attributions`,
/// `baseline`; texts: `texts[].tokens`, `texts[].attributions`, `baseline_token`; both:
/// `targets`, `output_at_input`, `output_at_baseline`, `completeness_error`, `steps`).
fn explanation_from_json(v: &serde_json::Value) -> Result<[u8; 32], super::ReceiptError> {
    let bad = |m: &str| super::ReceiptError::Malformed(format!("the explanation: {m}"));
    let floats = |x: &serde_json::Value, what: &str| -> Result<Vec<f32>, super::ReceiptError> {
        x.as_array()
            .ok_or_else(|| bad(&format!("{what} is not an array")))?
            .iter()
            .map(|n| n.as_f64().map(|f| f as f32))
            .collect::<Option<Vec<f32>>>()
            .ok_or_else(|| bad(&format!("{what} holds a value that is not a number")))
    };
    let field = |k: &str| v.get(k).ok_or_else(|| bad(&format!("no \"{k}\"")));
    let targets: Vec<u64> = serde_json::from_value(field("targets")?.clone())
        .map_err(|_| bad("\"targets\" is not a list of indices"))?;
    let steps: Vec<u64> = serde_json::from_value(field("steps")?.clone())
        .map_err(|_| bad("\"steps\" is not a list of counts"))?;
    let at_input = floats(field("output_at_input")?, "output_at_input")?;
    let at_baseline = floats(field("output_at_baseline")?, "output_at_baseline")?;
    let gaps = floats(field("completeness_error")?, "completeness_error")?;
    let (attributions, tokens, baseline, baseline_token) = match v.get("texts") {
        Some(texts) => {
            let texts = texts
                .as_array()
                .ok_or_else(|| bad("\"texts\" is not an array"))?;
            let mut attributions = Vec::new();
            let mut tokens = Vec::new();
            for t in texts {
                attributions.push(floats(
                    t.get("attributions")
                        .ok_or_else(|| bad("a text without attributions"))?,
                    "a text's attributions",
                )?);
                let tk: Vec<String> = serde_json::from_value(
                    t.get("tokens").cloned().unwrap_or(serde_json::Value::Null),
                )
                .map_err(|_| bad("a text's tokens are not strings"))?;
                tokens.push(tk);
            }
            let token = field("baseline_token")?
                .as_str()
                .ok_or_else(|| bad("\"baseline_token\" is not a string"))?
                .to_string();
            (attributions, tokens, Vec::new(), token)
        }
        None => {
            let rows = field("attributions")?
                .as_array()
                .ok_or_else(|| bad("\"attributions\" is not an array"))?;
            let attributions = rows
                .iter()
                .map(|r| floats(r, "a row's attributions"))
                .collect::<Result<Vec<_>, _>>()?;
            let tokens = vec![Vec::new(); attributions.len()];
            (
                attributions,
                tokens,
                floats(field("baseline")?, "baseline")?,
                String::new(),
            )
        }
    };
    let n = attributions.len();
    if [
        targets.len(),
        steps.len(),
        at_input.len(),
        at_baseline.len(),
        gaps.len(),
    ]
    .iter()
    .any(|&l| l != n)
    {
        return Err(bad("the per-explanation lists have different lengths"));
    }
    let items: Vec<Explained<'_>> = (0..n)
        .map(|i| Explained {
            target: targets[i],
            attributions: &attributions[i],
            output_at_input: at_input[i],
            output_at_baseline: at_baseline[i],
            completeness_error: gaps[i],
            steps: steps[i],
            tokens: &tokens[i],
        })
        .collect();
    Ok(explanation(&items, &baseline, &baseline_token))
}

/// A request as `confidant receipt verify --request` reads it: JSON with the salt (hex) and
/// either `inputs` (rows of numbers) or `texts` (strings), as `confidant predict
/// --receipt-out` writes it.
#[derive(Debug, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RequestFile {
    /// The salt, hex.
    pub salt: String,
    /// Numeric rows.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub inputs: Option<Vec<Vec<f32>>>,
    /// Texts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub texts: Option<Vec<String>>,
}

impl RequestFile {
    /// The keyed digest of the request the file describes.
    pub fn digest(&self) -> Result<[u8; 32], super::ReceiptError> {
        let salt = super::parse_salt(&self.salt)?;
        match (&self.inputs, &self.texts) {
            (Some(rows), None) => {
                let width = rows.first().map_or(0, Vec::len);
                if let Some(i) = rows.iter().position(|r| r.len() != width) {
                    return Err(super::ReceiptError::Malformed(format!(
                        "the request: row {i} has {} values, row 0 has {width}",
                        rows[i].len()
                    )));
                }
                let values: Vec<f32> = rows.iter().flatten().copied().collect();
                let shape = [rows.len() as u64, width as u64];
                Ok(request(
                    &salt,
                    RequestInput::Rows {
                        shape: &shape,
                        values: &values,
                    },
                ))
            }
            (None, Some(texts)) => {
                let bytes: Vec<Vec<u8>> = texts.iter().map(|t| t.as_bytes().to_vec()).collect();
                Ok(request(&salt, RequestInput::Texts(&bytes)))
            }
            _ => Err(super::ReceiptError::Malformed(
                "the request must have exactly one of \"inputs\" and \"texts\"".into(),
            )),
        }
    }
}

/// A response as `confidant receipt verify --response` reads it: the JSON `confidant
/// predict` prints (its `outputs` or `embeddings`, and its `labels`; other fields are
/// ignored), or the JSON `confidant explain` prints.
pub fn response_from_json(v: &serde_json::Value) -> Result<[u8; 32], super::ReceiptError> {
    // What `confidant explain` prints (it alone has `steps`).
    if v.get("steps").is_some() {
        return explanation_from_json(v);
    }
    let bad = |m: &str| super::ReceiptError::Malformed(format!("the response: {m}"));
    let rows_v = v
        .get("outputs")
        .or_else(|| v.get("embeddings"))
        .and_then(serde_json::Value::as_array)
        .ok_or_else(|| bad("no \"outputs\" or \"embeddings\" array"))?;
    let mut values = Vec::new();
    let mut width = None;
    for (i, row) in rows_v.iter().enumerate() {
        let row = row
            .as_array()
            .ok_or_else(|| bad(&format!("row {i} is not an array")))?;
        if *width.get_or_insert(row.len()) != row.len() {
            return Err(bad(&format!("row {i} has another width than row 0")));
        }
        for x in row {
            let x = x
                .as_f64()
                .ok_or_else(|| bad(&format!("row {i} holds a value that is not a number")))?;
            values.push(x as f32);
        }
    }
    let labels: Vec<String> = match v.get("labels") {
        None | Some(serde_json::Value::Null) => Vec::new(),
        Some(l) => serde_json::from_value(l.clone())
            .map_err(|_| bad("\"labels\" is not an array of strings"))?,
    };
    Ok(response(
        rows_v.len() as u64,
        width.unwrap_or(0) as u64,
        &values,
        &labels,
    ))
}
