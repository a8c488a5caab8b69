//! Verifiable responses: a receipt is the server's signature, by a key its attestation
//! evidence binds, over a statement of what it answered.
//!
//! - **The key.** At start the server makes an Ed25519 key in its own memory (inside the TEE
//!   when the process is) and asks its TEE for evidence whose report_data is
//!   `SHA-512("confidant-receipt-v1" ‖ public key)` ([`report_data`]). That evidence, as
//!   JSON, is what `Attestation.GetReceiptEvidence` returns; its SHA-256 is in every
//!   statement, so a receipt names the evidence it must be checked against.
//! - **The statement** ([`Statement`], CBOR): the request's digest keyed with a salt that only
//!   the client holds (the receipt alone does not reveal the input, even a guessable one),
//!   the response's digest, the model's id, version and signed-manifest digest, the ε the
//!   call was charged, the audit record's sequence number and chain hash, the time, and the
//!   evidence digest. The digests are over the canonical forms in [`digest`], which are the
//!   same for `confidant.v1`, the Open Inference Protocol and `/v1/embeddings`.
//! - **The envelope** ([`envelope`]): COSE_Sign1 (RFC 9052), laid out as the COSE receipts
//!   draft lays out a receipt of inclusion (`draft-ietf-cose-merkle-tree-proofs`): the
//!   audit writer gathers the statements of one group into an RFC 9162 Merkle tree and signs
//!   its root once; each receipt carries its statement and its inclusion proof in the
//!   unprotected header. One signature per group keeps receipts cheap under load.
//! - **Verification** ([`verify`]) is offline: the evidence against the caller's policy, the
//!   key against the evidence, the proof and signature, the evidence digest, and, given the
//!   request (with its salt) and the response, their digests.

pub mod digest;
pub mod envelope;
mod error;
pub mod nonces;
pub mod verify;

#[cfg(test)]
mod tests;

use std::sync::Arc;

use ed25519_dalek::SigningKey;
use sha2::{Digest as _, Sha256, Sha512};

pub use error::ReceiptError;

/// The domain of the receipt key's binding in attestation evidence.
pub const REPORT_DATA_DOMAIN: &[u8] = b"confidant-receipt-v1";

/// The statement format this server writes: 2, a map with integer keys ([`key`]) and the
/// audit chain hash as bytes. Version 1 (the same fields under their names, the chain hash
/// as hex text) is still read.
pub const STATEMENT_VERSION: u32 = 2;

/// The integer keys of a version 2 statement, in the order they are written.
pub mod key {
    /// [`super::Statement::v`].
    pub const V: u64 = 1;
    /// [`super::Statement::rpc`].
    pub const RPC: u64 = 2;
    /// [`super::Statement::request_id`].
    pub const REQUEST_ID: u64 = 3;
    /// [`super::Statement::request`].
    pub const REQUEST: u64 = 4;
    /// [`super::Statement::response`].
    pub const RESPONSE: u64 = 5;
    /// [`super::Statement::model`].
    pub const MODEL: u64 = 6;
    /// [`super::Statement::version`].
    pub const VERSION: u64 = 7;
    /// [`super::Statement::manifest`].
    pub const MANIFEST: u64 = 8;
    /// [`super::Statement::epsilon`].
    pub const EPSILON: u64 = 9;
    /// [`super::Statement::audit_seq`].
    pub const AUDIT_SEQ: u64 = 10;
    /// [`super::Statement::audit_hash`] (32 bytes).
    pub const AUDIT_HASH: u64 = 11;
    /// [`super::Statement::time_ms`].
    pub const TIME_MS: u64 = 12;
    /// [`super::Statement::evidence`].
    pub const EVIDENCE: u64 = 13;
    /// How many keys a statement has.
    pub const COUNT: usize = 13;
}

/// Request header: ask for a receipt, keying the request digest with this salt (hex, 16 to
/// 64 bytes).
pub const SALT_HEADER: &str = "x-confidant-receipt";
/// HTTP response header (`/v1/embeddings`): the receipt, base64 (standard, padded). Over
/// gRPC it travels in the message: `PredictResponse.receipt`, or the Open Inference
/// Protocol's `confidant_receipt` response parameter.
pub const RECEIPT_HEADER: &str = "x-confidant-receipt";
/// HTTP response header: the salt the server drew, when receipts are required and the
/// client sent none (hex; over gRPC, `PredictResponse.receipt_salt` or the
/// `confidant_receipt_salt` parameter). Keep it with the request: the receipt does not
/// contain it.
pub const SALT_RESPONSE_HEADER: &str = "x-confidant-receipt-salt";

/// The shortest and longest salt accepted, in bytes.
pub const SALT_BYTES: std::ops::RangeInclusive<usize> = 16..=MAX_SALT;

/// The longest salt, in bytes.
pub const MAX_SALT: usize = 64;

/// The report_data that binds a receipt key: `SHA-512("confidant-receipt-v1" ‖ key)`.
pub fn report_data(public_key: &[u8; 32]) -> [u8; 64] {
    Sha512::new()
        .chain_update(REPORT_DATA_DOMAIN)
        .chain_update(public_key)
        .finalize()
        .into()
}

/// What one receipt states. CBOR: in version 2, a map with the integer keys of [`key`], in
/// that order, `audit_hash` as its 32 bytes; in version 1, the same fields under their names
/// (serde's layout of this struct), `audit_hash` as hex text.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Statement {
    /// [`STATEMENT_VERSION`] (or 1, read from an older receipt).
    pub v: u32,
    /// The call: `predict`, `model_infer` or `embeddings`.
    pub rpc: String,
    /// The server's request id (also in the audit record).
    pub request_id: String,
    /// HMAC-SHA256 of the canonical request under the client's salt ([`digest::request`]).
    #[serde(with = "serde_bytes")]
    pub request: Vec<u8>,
    /// SHA-256 of the canonical response ([`digest::response`]).
    #[serde(with = "serde_bytes")]
    pub response: Vec<u8>,
    /// The model's id.
    pub model: String,
    /// Its version.
    pub version: String,
    /// SHA-256 of its signed manifest (the canonical JSON the publisher signed).
    #[serde(with = "serde_bytes")]
    pub manifest: Vec<u8>,
    /// ε this call was charged (at the budget's δ); 0 without an output policy.
    pub epsilon: f64,
    /// The sequence number of the call's audit record.
    pub audit_seq: u64,
    /// That record's chain hash (hex, as the log holds it).
    pub audit_hash: String,
    /// When the record was written, milliseconds since the Unix epoch.
    pub time_ms: u64,
    /// SHA-256 of the evidence (its JSON bytes) that binds the signing key.
    #[serde(with = "serde_bytes")]
    pub evidence: Vec<u8>,
}

impl Statement {
    /// The statement's CBOR bytes, in the layout of its version `v` (written directly: the
    /// audit writer finishes one statement per answer; tests compare the bytes with
    /// `ciborium`'s).
    pub fn to_cbor(&self) -> Vec<u8> {
        Fields {
            v: self.v,
            rpc: &self.rpc,
            request_id: &self.request_id,
            request: &self.request,
            response: &self.response,
            model: &self.model,
            version: &self.version,
            manifest: &self.manifest,
            epsilon: self.epsilon,
            audit_seq: self.audit_seq,
            audit_hash: &self.audit_hash,
            time_ms: self.time_ms,
            evidence: &self.evidence,
        }
        .to_cbor()
    }

    /// [`Self::to_cbor`] as `ciborium` writes it (what it must equal): serde's layout for
    /// version 1, a map of [`key`]s built as a `ciborium` value for version 2.
    #[cfg(test)]
    pub(crate) fn to_cbor_with_ciborium(&self) -> Vec<u8> {
        use ciborium::value::Value;
        let mut out = Vec::new();
        if self.v == 1 {
            let _ = ciborium::into_writer(self, &mut out);
            return out;
        }
        let int = |k: u64| Value::Integer(k.into());
        let map = Value::Map(vec![
            (int(key::V), int(u64::from(self.v))),
            (int(key::RPC), Value::Text(self.rpc.clone())),
            (int(key::REQUEST_ID), Value::Text(self.request_id.clone())),
            (int(key::REQUEST), Value::Bytes(self.request.clone())),
            (int(key::RESPONSE), Value::Bytes(self.response.clone())),
            (int(key::MODEL), Value::Text(self.model.clone())),
            (int(key::VERSION), Value::Text(self.version.clone())),
            (int(key::MANIFEST), Value::Bytes(self.manifest.clone())),
            (int(key::EPSILON), Value::Float(self.epsilon)),
            (int(key::AUDIT_SEQ), int(self.audit_seq)),
            (
                int(key::AUDIT_HASH),
                Value::Bytes(hex::decode(&self.audit_hash).unwrap_or_default()),
            ),
            (int(key::TIME_MS), int(self.time_ms)),
            (int(key::EVIDENCE), Value::Bytes(self.evidence.clone())),
        ]);
        let _ = ciborium::into_writer(&map, &mut out);
        out
    }

    /// Parses a statement of version 2 (integer keys) or 1 (names), refusing unknown,
    /// missing or repeated keys, a version that does not match the layout, digests that are
    /// not 32 bytes (version 2), and trailing bytes.
    pub fn from_cbor(bytes: &[u8]) -> Result<Self, ReceiptError> {
        use ciborium::value::Value;
        let bad = |m: String| ReceiptError::Malformed(format!("the statement: {m}"));
        let mut reader = bytes;
        let value: Value = ciborium::from_reader(&mut reader).map_err(|e| bad(e.to_string()))?;
        if !reader.is_empty() {
            return Err(bad(format!("{} bytes after its end", reader.len())));
        }
        let Value::Map(entries) = value else {
            return Err(bad("not a map".into()));
        };
        if matches!(entries.first(), Some((Value::Text(_), _))) {
            // Version 1: the fields under their names.
            let s: Self = ciborium::from_reader(bytes).map_err(|e| bad(e.to_string()))?;
            if s.v != 1 {
                return Err(bad(format!(
                    "version {} written with version 1's named keys",
                    s.v
                )));
            }
            return Ok(s);
        }
        let mut fields: [Option<Value>; key::COUNT] = Default::default();
        for (k, v) in entries {
            let slot = match &k {
                Value::Integer(i) => u64::try_from(i128::from(*i))
                    .ok()
                    .and_then(|k| k.checked_sub(1))
                    .and_then(|k| fields.get_mut(usize::try_from(k).ok()?)),
                _ => None,
            };
            let Some(slot) = slot else {
                return Err(bad(format!("unknown key {k:?}")));
            };
            if slot.replace(v).is_some() {
                return Err(bad(format!("key {k:?} is repeated")));
            }
        }
        let mut take = |k: u64| {
            fields
                .get_mut((k - 1) as usize)
                .and_then(Option::take)
                .ok_or_else(|| bad(format!("no key {k}")))
        };
        let uint = |k: u64, v: Value| {
            match v {
                Value::Integer(i) => u64::try_from(i128::from(i)).ok(),
                _ => None,
            }
            .ok_or_else(|| bad(format!("key {k} must be an unsigned integer")))
        };
        let text = |k: u64, v: Value| match v {
            Value::Text(t) => Ok(t),
            _ => Err(bad(format!("key {k} must be text"))),
        };
        let digest = |k: u64, v: Value| match v {
            Value::Bytes(b) if b.len() == 32 => Ok(b),
            _ => Err(bad(format!("key {k} must be 32 bytes"))),
        };
        let v = uint(key::V, take(key::V)?)?;
        if v != 2 {
            return Err(bad(format!(
                "version {v} written with version 2's integer keys"
            )));
        }
        Ok(Self {
            v: 2,
            rpc: text(key::RPC, take(key::RPC)?)?,
            request_id: text(key::REQUEST_ID, take(key::REQUEST_ID)?)?,
            request: digest(key::REQUEST, take(key::REQUEST)?)?,
            response: digest(key::RESPONSE, take(key::RESPONSE)?)?,
            model: text(key::MODEL, take(key::MODEL)?)?,
            version: text(key::VERSION, take(key::VERSION)?)?,
            manifest: digest(key::MANIFEST, take(key::MANIFEST)?)?,
            epsilon: match take(key::EPSILON)? {
                Value::Float(f) => f,
                _ => return Err(bad(format!("key {} must be a float", key::EPSILON))),
            },
            audit_seq: uint(key::AUDIT_SEQ, take(key::AUDIT_SEQ)?)?,
            audit_hash: hex::encode(digest(key::AUDIT_HASH, take(key::AUDIT_HASH)?)?),
            time_ms: uint(key::TIME_MS, take(key::TIME_MS)?)?,
            evidence: digest(key::EVIDENCE, take(key::EVIDENCE)?)?,
        })
    }
}

/// A statement's fields, borrowed: what is encoded ([`Statement::to_cbor`],
/// [`Draft::statement_cbor`]).
struct Fields<'a> {
    v: u32,
    rpc: &'a str,
    request_id: &'a str,
    request: &'a [u8],
    response: &'a [u8],
    model: &'a str,
    version: &'a str,
    manifest: &'a [u8],
    epsilon: f64,
    audit_seq: u64,
    audit_hash: &'a str,
    time_ms: u64,
    evidence: &'a [u8],
}

impl Fields<'_> {
    fn to_statement(&self) -> Statement {
        Statement {
            v: self.v,
            rpc: self.rpc.to_string(),
            request_id: self.request_id.to_string(),
            request: self.request.to_vec(),
            response: self.response.to_vec(),
            model: self.model.to_string(),
            version: self.version.to_string(),
            manifest: self.manifest.to_vec(),
            epsilon: self.epsilon,
            audit_seq: self.audit_seq,
            audit_hash: self.audit_hash.to_string(),
            time_ms: self.time_ms,
            evidence: self.evidence.to_vec(),
        }
    }

    /// The statement's CBOR in its version's layout.
    fn to_cbor(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(STATEMENT_CAPACITY);
        self.write_head(&mut out);
        write_tail(
            &mut out,
            self.v,
            self.audit_seq,
            ChainHash::Hex(self.audit_hash),
            self.time_ms,
            self.evidence,
        );
        out
    }

    /// The map's head and its entries before `audit_seq`'s value (`audit_seq`'s key
    /// included): what is known before the call's record is chained.
    fn write_head(&self, out: &mut Vec<u8>) {
        use ciborium_ll::{Encoder, Header};
        let mut e = Encoder::from(out);
        // Writing into a Vec cannot fail.
        let _ = e.push(Header::Map(Some(key::COUNT)));
        // Version 1 names its keys; version 2 numbers them.
        let named = self.v == 1;
        let k = |e: &mut Encoder<&mut Vec<u8>>, number: u64, name: &str| {
            let _ = if named {
                e.text(name, None)
            } else {
                e.push(Header::Positive(number))
            };
        };
        k(&mut e, key::V, "v");
        let _ = e.push(Header::Positive(u64::from(self.v)));
        k(&mut e, key::RPC, "rpc");
        let _ = e.text(self.rpc, None);
        k(&mut e, key::REQUEST_ID, "request_id");
        let _ = e.text(self.request_id, None);
        k(&mut e, key::REQUEST, "request");
        let _ = e.bytes(self.request, None);
        k(&mut e, key::RESPONSE, "response");
        let _ = e.bytes(self.response, None);
        k(&mut e, key::MODEL, "model");
        let _ = e.text(self.model, None);
        k(&mut e, key::VERSION, "version");
        let _ = e.text(self.version, None);
        k(&mut e, key::MANIFEST, "manifest");
        let _ = e.bytes(self.manifest, None);
        k(&mut e, key::EPSILON, "epsilon");
        let _ = e.push(Header::Float(self.epsilon));
        k(&mut e, key::AUDIT_SEQ, "audit_seq");
    }
}

/// Room for a whole statement: a prepared one is finished in place.
const STATEMENT_CAPACITY: usize = 384;

/// The audit record's chain hash, as a statement is given it: in hex (as the log writes it),
/// or its 32 bytes (as the audit writer has it, so that finishing a statement decodes nothing).
#[derive(Clone, Copy)]
enum ChainHash<'a> {
    Hex(&'a str),
    Raw(&'a [u8; 32]),
}

/// The statement's entries from `audit_seq`'s value on: what the audit writer adds once it has
/// chained the call's record.
fn write_tail(
    out: &mut Vec<u8>,
    v: u32,
    audit_seq: u64,
    audit_hash: ChainHash<'_>,
    time_ms: u64,
    evidence: &[u8],
) {
    use ciborium_ll::{Encoder, Header};
    let mut e = Encoder::from(out);
    // Writing into a Vec cannot fail.
    let _ = e.push(Header::Positive(audit_seq));
    if v == 1 {
        let _ = e.text("audit_hash", None);
        let _ = match audit_hash {
            ChainHash::Hex(text) => e.text(text, None),
            ChainHash::Raw(raw) => e.text(&hex::encode(raw), None),
        };
        let _ = e.text("time_ms", None);
        let _ = e.push(Header::Positive(time_ms));
        let _ = e.text("evidence", None);
    } else {
        let _ = e.push(Header::Positive(key::AUDIT_HASH));
        let _ = match audit_hash {
            ChainHash::Raw(raw) => e.bytes(raw, None),
            // The log's chain hash is always 64 hex digits (a SHA-256).
            ChainHash::Hex(text) => {
                let mut raw = [0u8; 32];
                match hex::decode_to_slice(text, &mut raw) {
                    Ok(()) => e.bytes(&raw, None),
                    Err(_) => e.bytes(&hex::decode(text).unwrap_or_default(), None),
                }
            }
        };
        let _ = e.push(Header::Positive(key::TIME_MS));
        let _ = e.push(Header::Positive(time_ms));
        let _ = e.push(Header::Positive(key::EVIDENCE));
    }
    let _ = e.bytes(evidence, None);
}

/// Where a signed receipt goes, encoded: `None` tells the waiting answer that its record was
/// not written, so there is no receipt (the answer is withheld).
pub type Delivery = tokio::sync::oneshot::Sender<Option<Vec<u8>>>;

/// Statements waiting for one signature, and where each receipt goes.
struct Batch {
    statements: Vec<Vec<u8>>,
    deliveries: Vec<Delivery>,
}

/// The server's receipt key and the evidence that binds it.
pub struct ReceiptSigner {
    /// What every group's receipts share, encoded once, and the key (held by AWS-LC only).
    frame: envelope::GroupFrame,
    public: [u8; 32],
    evidence_json: Vec<u8>,
    evidence_sha256: [u8; 32],
    /// The signing task, once [`ReceiptSigner::sign_on_runtime`] started it.
    batches: std::sync::OnceLock<tokio::sync::mpsc::UnboundedSender<Batch>>,
}

impl std::fmt::Debug for ReceiptSigner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReceiptSigner")
            .field("public", &hex::encode(self.public))
            .finish_non_exhaustive()
    }
}

impl ReceiptSigner {
    /// Makes a key in this process's memory and has `attester` bind it.
    pub fn new(attester: &dyn crate::tee::Attester) -> Result<Self, ReceiptError> {
        let mut seed = zeroize::Zeroizing::new([0u8; 32]);
        getrandom::fill(seed.as_mut_slice())
            .map_err(|e| ReceiptError::Key(format!("no OS randomness: {e}")))?;
        let key = SigningKey::from_bytes(&seed);
        let public = key.verifying_key().to_bytes();
        let evidence = attester
            .evidence(&report_data(&public))
            .map_err(|e| ReceiptError::Key(format!("the TEE would not bind the key: {e}")))?;
        let evidence_json = evidence
            .to_json()
            .map_err(|e| ReceiptError::Key(format!("the evidence does not serialize: {e}")))?
            .into_bytes();
        Self::from_parts(key, evidence_json)
    }

    /// A signer over a key and the evidence (JSON) said to bind it; refused if AWS-LC, which
    /// signs, does not take the key.
    pub fn from_parts(key: SigningKey, evidence_json: Vec<u8>) -> Result<Self, ReceiptError> {
        Ok(Self {
            public: key.verifying_key().to_bytes(),
            evidence_sha256: Sha256::digest(&evidence_json).into(),
            frame: envelope::GroupFrame::new(&key)?,
            evidence_json,
            batches: std::sync::OnceLock::new(),
        })
    }

    /// From now on, groups are signed with nonces made ahead by a thread that runs only when
    /// a CPU is idle ([`nonces`]); false where this OS does not allow such a thread (every
    /// group is then signed whole, as before).
    pub fn make_nonces_ahead(&self) -> bool {
        self.frame.make_nonces_ahead()
    }

    /// Nonces made ahead and ready now.
    pub fn nonces_ready(&self) -> usize {
        self.frame.nonces_ready()
    }

    /// What this signer has signed since the server started (`/metrics`).
    pub fn counts(&self) -> SignedCounts {
        self.frame.counts()
    }

    /// The public key, raw (32 bytes).
    pub fn public_key(&self) -> [u8; 32] {
        self.public
    }

    /// The evidence that binds the key, as JSON.
    pub fn evidence_json(&self) -> &[u8] {
        &self.evidence_json
    }

    /// SHA-256 of [`Self::evidence_json`].
    pub fn evidence_sha256(&self) -> [u8; 32] {
        self.evidence_sha256
    }

    /// One receipt per statement of a group, under one signature over their Merkle root.
    pub fn sign_group(&self, statements: &[Vec<u8>]) -> Vec<Vec<u8>> {
        self.sign_and_encode(statements.to_vec())
    }

    /// [`Self::sign_group`], taking the statements.
    fn sign_and_encode(&self, statements: Vec<Vec<u8>>) -> Vec<Vec<u8>> {
        self.sign_group_unencoded(statements)
            .into_iter()
            .map(envelope::Unencoded::encode)
            .collect()
    }

    /// [`Self::sign_group`], each receipt left unencoded (the benches time the two apart).
    pub fn sign_group_unencoded(&self, statements: Vec<Vec<u8>>) -> Vec<envelope::Unencoded> {
        self.frame.sign_group(statements)
    }

    /// An Ed25519 signature of `message` by the receipt key (tests forge receipts with it).
    #[cfg(test)]
    pub(crate) fn sign_raw(&self, message: &[u8]) -> Vec<u8> {
        self.frame.sign_raw(message)
    }

    /// From now on, groups are signed on a task of the current tokio runtime (a no-op
    /// outside one, or once started). The audit writer then hands a whole written group
    /// over with one wake-up, where it would otherwise wake each answer's task from its own
    /// thread; and the task signs what queued meanwhile under the same signature.
    pub fn sign_on_runtime(self: &Arc<Self>) {
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<Batch>();
        if self.batches.set(tx).is_err() {
            return;
        }
        // Weak: the task ends when the signer (which holds the channel) is dropped.
        let signer = Arc::downgrade(self);
        runtime.spawn(async move {
            while let Some(mut batch) = rx.recv().await {
                while let Ok(more) = rx.try_recv() {
                    batch.statements.extend(more.statements);
                    batch.deliveries.extend(more.deliveries);
                }
                let Some(signer) = signer.upgrade() else {
                    return;
                };
                signer.sign_batch(batch);
            }
        });
    }

    /// Signs `statements` under one signature (on the signing task when one runs) and sends
    /// each its receipt, in order.
    pub fn sign_and_deliver(&self, statements: Vec<Vec<u8>>, deliveries: Vec<Delivery>) {
        let batch = Batch {
            statements,
            deliveries,
        };
        match self.batches.get() {
            Some(task) => {
                // The runtime is gone (the server is stopping): sign here.
                if let Err(unsent) = task.send(batch) {
                    self.sign_batch(unsent.0);
                }
            }
            None => self.sign_batch(batch),
        }
    }

    /// [`Self::sign_and_deliver`] on this thread (the audit log's receipts' task is on the
    /// runtime already).
    pub fn sign_and_deliver_here(&self, statements: Vec<Vec<u8>>, deliveries: Vec<Delivery>) {
        self.sign_batch(Batch {
            statements,
            deliveries,
        });
    }

    fn sign_batch(&self, batch: Batch) {
        let signed = self.sign_and_encode(batch.statements);
        for (receipt, delivery) in signed.into_iter().zip(batch.deliveries) {
            let _ = delivery.send(Some(receipt));
        }
    }
}

/// What a [`ReceiptSigner`] has signed: receipts, and the signatures over their groups by how
/// each was made.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SignedCounts {
    /// Groups signed with a nonce made ahead ([`nonces`]).
    pub groups_nonce_ahead: u64,
    /// Groups signed whole by AWS-LC (no nonce was ready).
    pub groups_whole: u64,
    /// Receipts signed (each in one group).
    pub receipts: u64,
}

/// What the audit writer needs to finish a statement: everything but the record's place in
/// the chain and its time, which only the writer knows. Its texts are borrowed from the
/// answer where they can be: a draft lives only until its statement is prepared.
pub struct Draft<'a> {
    /// Who signs.
    pub signer: Arc<ReceiptSigner>,
    /// The call.
    pub rpc: &'static str,
    /// The request id.
    pub request_id: std::borrow::Cow<'a, str>,
    /// [`digest::request`].
    pub request: [u8; 32],
    /// [`digest::response`].
    pub response: [u8; 32],
    /// Model id, version and manifest digest.
    pub model: std::borrow::Cow<'a, str>,
    /// The model's version.
    pub version: std::borrow::Cow<'a, str>,
    /// SHA-256 of the model's signed manifest.
    pub manifest: [u8; 32],
    /// ε charged.
    pub epsilon: f64,
}

impl Draft<'_> {
    /// The statement, once the writer has chained the call's record.
    pub fn statement(&self, audit_seq: u64, audit_hash: &str, time_ms: u64) -> Statement {
        self.fields(audit_seq, audit_hash, time_ms).to_statement()
    }

    /// [`Self::statement`]'s CBOR bytes, written without building it (what
    /// [`Prepared::finish`] gives).
    pub fn statement_cbor(&self, audit_seq: u64, audit_hash: &str, time_ms: u64) -> Vec<u8> {
        self.fields(audit_seq, audit_hash, time_ms).to_cbor()
    }

    /// The statement encoded but for the record's place in the chain and its time, which
    /// [`Prepared::finish`] adds: the answer's own task does this, so that the audit writer
    /// only appends what it alone knows.
    pub fn prepare(self) -> Prepared {
        let mut head = Vec::with_capacity(STATEMENT_CAPACITY);
        self.fields(0, "", 0).write_head(&mut head);
        Prepared {
            signer: self.signer,
            head,
        }
    }

    fn fields<'a>(&'a self, audit_seq: u64, audit_hash: &'a str, time_ms: u64) -> Fields<'a> {
        Fields {
            v: STATEMENT_VERSION,
            rpc: self.rpc,
            request_id: &self.request_id,
            request: &self.request,
            response: &self.response,
            model: &self.model,
            version: &self.version,
            manifest: &self.manifest,
            epsilon: self.epsilon,
            audit_seq,
            audit_hash,
            time_ms,
            evidence: &self.signer.evidence_sha256,
        }
    }
}

/// A statement encoded up to the record's place in the chain ([`Draft::prepare`]).
pub struct Prepared {
    /// Who signs.
    pub signer: Arc<ReceiptSigner>,
    head: Vec<u8>,
}

impl Prepared {
    /// The statement's CBOR, now that the call's record is `audit_seq`, with chain hash
    /// `audit_hash` (its 32 bytes), at `time_ms`: the same bytes as [`Draft::statement_cbor`]
    /// given that hash in hex; and who signs it.
    pub fn finish(
        self,
        audit_seq: u64,
        audit_hash: &[u8; 32],
        time_ms: u64,
    ) -> (Vec<u8>, Arc<ReceiptSigner>) {
        // Finished in place: the head was allocated with room for the rest.
        let mut out = self.head;
        write_tail(
            &mut out,
            STATEMENT_VERSION,
            audit_seq,
            ChainHash::Raw(audit_hash),
            time_ms,
            &self.signer.evidence_sha256,
        );
        (out, self.signer)
    }
}

/// Parses a salt given as hex.
pub fn parse_salt(text: &str) -> Result<Vec<u8>, ReceiptError> {
    let mut buf = [0u8; MAX_SALT];
    parse_salt_into(text, &mut buf).map(<[u8]>::to_vec)
}

/// [`parse_salt`] into `buf`, with no allocation (once per request that asks for a receipt).
pub fn parse_salt_into<'b>(
    text: &str,
    buf: &'b mut [u8; MAX_SALT],
) -> Result<&'b [u8], ReceiptError> {
    let hex_error = |e: hex::FromHexError| {
        ReceiptError::Salt(format!(
            "{SALT_HEADER} must be the salt in hex ({} to {} bytes): {e}",
            SALT_BYTES.start(),
            SALT_BYTES.end()
        ))
    };
    let text = text.trim();
    if text.len().is_multiple_of(2) && SALT_BYTES.contains(&(text.len() / 2)) {
        let salt = &mut buf[..text.len() / 2];
        hex::decode_to_slice(text, salt).map_err(hex_error)?;
        return Ok(salt);
    }
    // Not a salt's length: say what is wrong with it, as a decoded salt would.
    let got = hex::decode(text).map_err(hex_error)?.len();
    Err(ReceiptError::Salt(format!(
        "{SALT_HEADER} must be {} to {} bytes, got {got}",
        SALT_BYTES.start(),
        SALT_BYTES.end(),
    )))
}

/// A fresh 32-byte salt from the OS.
pub fn new_salt() -> Result<Vec<u8>, ReceiptError> {
    let mut salt = vec![0u8; 32];
    getrandom::fill(&mut salt).map_err(|e| ReceiptError::Key(format!("no OS randomness: {e}")))?;
    Ok(salt)
}
