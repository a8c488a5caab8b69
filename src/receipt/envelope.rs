//! The receipt envelope: a tagged COSE_Sign1 (RFC 9052) laid out as the COSE receipts draft
//! (`draft-ietf-cose-merkle-tree-proofs`) lays out a receipt of inclusion in an RFC 9162
//! SHA-256 tree.
//!
//! | where | label | value |
//! | --- | --- | --- |
//! | protected | 1 (alg) | -19 (Ed25519) |
//! | protected | 4 (kid) | the raw 32-byte Ed25519 public key |
//! | protected | 395 (vds) | 1 (RFC9162_SHA256) |
//! | unprotected | 396 (vdp) | `{-1: [bstr .cbor [tree_size, leaf_index, [hash, …]]]}` |
//! | unprotected | -70001 | the statement (CBOR, [`super::Statement`]) |
//! | payload | | nil: detached, the Merkle root of the group |
//!
//! The statement is the tree's leaf: an unprotected header is not signed itself, but the
//! inclusion proof ties it to the signed root. As in the draft, the root is detached: the
//! verifier computes it from the statement and the proof (RFC 9162, 2.1.3.2) and checks the
//! signature over it. Receipts of earlier servers carried the root as the payload; they
//! still open (the root they carry must equal the one computed).

use ciborium_ll::{Encoder, Header};
use coset::cbor::value::Value;
use coset::{CoseSign1, CoseSign1Builder, HeaderBuilder, TaggedCborSerializable as _, iana};
use ct_merkle::{InclusionProof, RootHash};
use ed25519_dalek::{Signer as _, SigningKey};
use sha2::{Digest as _, Sha256};
use std::sync::atomic::{AtomicU64, Ordering};

use super::ReceiptError;

/// The verifiable data structure header parameter (vds).
pub const LABEL_VDS: i64 = 395;
/// The verifiable data proofs header parameter (vdp).
pub const LABEL_VDP: i64 = 396;
/// RFC9162_SHA256 in the vds registry.
pub const VDS_RFC9162_SHA256: i64 = 1;
/// The inclusion proofs inside the vdp map.
pub const VDP_INCLUSION: i64 = -1;
/// The statement (private-use label).
pub const LABEL_STATEMENT: i64 = -70001;

/// One receipt of a signed group, not yet encoded ([`Unencoded::encode`]). The signer encodes
/// each right after signing the group, while the group is in cache: encoding in each answer's
/// own task, after its wait, measured no cheaper (BENCHMARKS.md, "Receipts", session 15).
pub struct Unencoded {
    signed: std::sync::Arc<SignedGroup>,
    statement: Vec<u8>,
    tree_size: u64,
    index: u64,
    path: Vec<u8>,
}

/// What the receipts of one group share: their COSE_Sign1 encoded once, with an empty
/// unprotected header, split where each receipt's own header goes.
struct SignedGroup {
    /// The tag, the array head and the protected header.
    prefix: std::sync::Arc<[u8]>,
    /// The payload (nil: the root is detached) and the signature.
    suffix: Vec<u8>,
}

impl Unencoded {
    /// The receipt's bytes (a tagged COSE_Sign1). Only the unprotected header is written per
    /// receipt; the rest was encoded once for the group, by `coset`. The bytes are those
    /// `coset` writes for the whole receipt (a test compares them).
    pub fn encode(self) -> Vec<u8> {
        let mut inclusion = Vec::with_capacity(8 + self.path.len() + self.path.len() / 16);
        {
            let mut e = Encoder::from(&mut inclusion);
            let hashes = self.path.chunks(32);
            let _ = e.push(Header::Array(Some(3)));
            let _ = e.push(Header::Positive(self.tree_size));
            let _ = e.push(Header::Positive(self.index));
            let _ = e.push(Header::Array(Some(hashes.len())));
            for h in hashes {
                let _ = e.bytes(h, None);
            }
        }
        let g = &self.signed;
        let mut out = Vec::with_capacity(
            g.prefix.len() + g.suffix.len() + inclusion.len() + self.statement.len() + 24,
        );
        out.extend_from_slice(&g.prefix);
        {
            // {396: {-1: [bstr .cbor inclusion]}, -70001: bstr .cbor statement}
            let mut e = Encoder::from(&mut out);
            let _ = e.push(Header::Map(Some(2)));
            let _ = e.push(Header::Positive(LABEL_VDP.unsigned_abs()));
            let _ = e.push(Header::Map(Some(1)));
            let _ = e.push(Header::Negative(VDP_INCLUSION.unsigned_abs() - 1));
            let _ = e.push(Header::Array(Some(1)));
            let _ = e.bytes(&inclusion, None);
            let _ = e.push(Header::Negative(LABEL_STATEMENT.unsigned_abs() - 1));
            let _ = e.bytes(&self.statement, None);
        }
        out.extend_from_slice(&g.suffix);
        out
    }

    /// The same receipt encoded entirely by `coset` (what [`Self::encode`] must equal).
    #[cfg(test)]
    pub(crate) fn encode_with_coset(&self, key: &SigningKey) -> Vec<u8> {
        let path: Vec<Value> = self
            .path
            .chunks(32)
            .map(|h| Value::Bytes(h.to_vec()))
            .collect();
        let inclusion = Value::Array(vec![
            Value::Integer(self.tree_size.into()),
            Value::Integer(self.index.into()),
            Value::Array(path),
        ]);
        let mut inclusion_bytes = Vec::new();
        let _ = ciborium::into_writer(&inclusion, &mut inclusion_bytes);
        let root = root_from_inclusion(&self.statement, self.index, self.tree_size, &self.path)
            .expect("the receipt's own proof");
        let mut receipt = group_sign1(key, &root);
        receipt.unprotected = HeaderBuilder::new()
            .value(
                LABEL_VDP,
                Value::Map(vec![(
                    Value::Integer(VDP_INCLUSION.into()),
                    Value::Array(vec![Value::Bytes(inclusion_bytes)]),
                )]),
            )
            .value(LABEL_STATEMENT, Value::Bytes(self.statement.clone()))
            .build();
        receipt.to_tagged_vec().unwrap_or_default()
    }
}

/// The group's COSE_Sign1: the protected header, the signature over the detached root.
fn group_sign1(key: &SigningKey, root: &[u8; 32]) -> CoseSign1 {
    let protected = HeaderBuilder::new()
        .algorithm(iana::Algorithm::Ed25519)
        .key_id(key.verifying_key().to_bytes().to_vec())
        .value(LABEL_VDS, Value::Integer(VDS_RFC9162_SHA256.into()))
        .build();
    CoseSign1Builder::new()
        .protected(protected)
        .create_detached_signature(root, b"", |tbs| key.sign(tbs).to_bytes().to_vec())
        .build()
}

/// The CBOR of a COSE_Sign1's tail: the nil payload (the root is detached) and the signature.
fn nil_and_signature(signature: &[u8]) -> Vec<u8> {
    let mut suffix = Vec::with_capacity(80);
    let mut e = Encoder::from(&mut suffix);
    let _ = e.push(Header::Simple(ciborium_ll::simple::NULL));
    let _ = e.bytes(signature, None);
    suffix
}

/// What every group signed by one key shares, encoded once by `coset`: the receipt's bytes
/// before its unprotected header, and the bytes that are signed (COSE's `Sig_structure`)
/// before the root. A group then costs its signature and no more encoding: with `coset`
/// building both per group, a group of one took about 6 µs beyond its signature.
pub struct GroupFrame {
    /// The tag, the array head and the protected header.
    prefix: std::sync::Arc<[u8]>,
    /// `["Signature1", protected, h'', ` up to the detached payload (the root, a 32-byte
    /// bstr).
    tbs_prefix: Vec<u8>,
    /// The key in AWS-LC, which signs the groups: its Ed25519 (s2n-bignum's assembly) signs
    /// in about half the time of `ed25519-dalek`'s on x86-64 (8.6 against 15.7 µs on the VM
    /// of BENCHMARKS.md), and Ed25519 signatures are deterministic, so the bytes are those
    /// dalek would sign (`aws_lc_and_dalek_sign_the_same_bytes`). It signs the groups for
    /// which `nonces` has none ready.
    key: aws_lc_rs::signature::Ed25519KeyPair,
    /// Nonces made ahead, while a CPU is idle, once [`Self::make_nonces_ahead`] was called: a
    /// group signed with one costs about a tenth of AWS-LC's signature ([`super::nonces`]).
    nonces: super::nonces::NoncePool,
    /// Groups signed with a nonce made ahead (`/metrics`).
    signed_ahead: AtomicU64,
    /// Groups signed whole by AWS-LC.
    signed_whole: AtomicU64,
    /// Receipts signed.
    receipts: AtomicU64,
}

impl GroupFrame {
    /// The frame of `key`'s groups: `coset`'s encoding of a group, split around what
    /// changes from group to group (the root, the signature); and the key, loaded into
    /// AWS-LC and checked against its public key.
    pub fn new(key: &SigningKey) -> Result<Self, ReceiptError> {
        let aws_lc = aws_lc_rs::signature::Ed25519KeyPair::from_seed_and_public_key(
            key.as_bytes(),
            key.verifying_key().as_bytes(),
        )
        .map_err(|e| ReceiptError::Key(format!("AWS-LC refused the receipt key: {e}")))?;
        let root = [0u8; 32];
        let sign1 = group_sign1(key, &root);
        // Encoding a COSE_Sign1 of byte strings and integers cannot fail.
        let whole = sign1.clone().to_tagged_vec().unwrap_or_default();
        let suffix = nil_and_signature(&sign1.signature);
        // tag(18) [protected, {}, payload, signature]: the empty map (0xa0) sits just before
        // the suffix.
        let at = whole.len().saturating_sub(suffix.len() + 1);
        debug_assert!(whole.ends_with(&suffix) && whole.get(at) == Some(&0xa0));
        let tbs = coset::sig_structure_data(
            coset::SignatureContext::CoseSign1,
            sign1.protected,
            None,
            b"",
            &root,
        );
        // The payload is the last item: a 32-byte bstr (0x58 0x20, then the root).
        let payload_at = tbs.len().saturating_sub(34);
        debug_assert!(tbs.get(payload_at..payload_at + 2) == Some(&[0x58, 0x20][..]));
        Ok(Self {
            prefix: whole.get(..at).unwrap_or_default().into(),
            tbs_prefix: tbs.get(..payload_at).unwrap_or_default().to_vec(),
            key: aws_lc,
            nonces: super::nonces::NoncePool::new(key),
            signed_ahead: AtomicU64::new(0),
            signed_whole: AtomicU64::new(0),
            receipts: AtomicU64::new(0),
        })
    }

    /// From now on, groups are signed with nonces made ahead while a CPU is idle, where this
    /// OS allows a thread of the lowest priority ([`super::nonces`]); false where it does
    /// not.
    pub fn make_nonces_ahead(&self) -> bool {
        self.nonces.make_ahead()
    }

    /// Nonces ready now.
    pub fn nonces_ready(&self) -> usize {
        self.nonces.ready()
    }

    /// What this frame has signed so far.
    pub fn counts(&self) -> super::SignedCounts {
        super::SignedCounts {
            groups_nonce_ahead: self.signed_ahead.load(Ordering::Relaxed),
            groups_whole: self.signed_whole.load(Ordering::Relaxed),
            receipts: self.receipts.load(Ordering::Relaxed),
        }
    }

    /// An Ed25519 signature of `message` by this frame's key (tests forge receipts of other
    /// layouts with it).
    #[cfg(test)]
    pub(crate) fn sign_raw(&self, message: &[u8]) -> Vec<u8> {
        self.key.sign(message).as_ref().to_vec()
    }

    /// Signs `root` with this frame's key.
    fn sign(&self, root: &[u8; 32]) -> SignedGroup {
        let mut tbs = Vec::with_capacity(self.tbs_prefix.len() + 34);
        tbs.extend_from_slice(&self.tbs_prefix);
        tbs.extend_from_slice(&[0x58, 0x20]);
        tbs.extend_from_slice(root);
        let suffix = match self.nonces.try_sign(&tbs) {
            Some(signature) => {
                self.signed_ahead.fetch_add(1, Ordering::Relaxed);
                nil_and_signature(&signature)
            }
            None => {
                self.signed_whole.fetch_add(1, Ordering::Relaxed);
                nil_and_signature(self.key.sign(&tbs).as_ref())
            }
        };
        SignedGroup {
            prefix: std::sync::Arc::clone(&self.prefix),
            suffix,
        }
    }

    /// Signs a group of statements once, over their Merkle root: one [`Unencoded`] receipt
    /// per statement.
    pub fn sign_group(&self, statements: Vec<Vec<u8>>) -> Vec<Unencoded> {
        if statements.is_empty() {
            return Vec::new();
        }
        let tree = Tree::new(&statements);
        let size = statements.len() as u64;
        self.receipts.fetch_add(size, Ordering::Relaxed);
        let signed = std::sync::Arc::new(self.sign(&tree.root()));
        statements
            .into_iter()
            .enumerate()
            .map(|(i, statement)| Unencoded {
                signed: std::sync::Arc::clone(&signed),
                statement,
                tree_size: size,
                index: i as u64,
                path: tree.path(i),
            })
            .collect()
    }
}

/// An RFC 9162 Merkle tree over one group, built once, level by level.
///
/// `ct_merkle`'s tree recomputes the path to the root on every append (n log n hashes for
/// a group of n); this one hashes each node once (2n - 1). The trees are the same: pairing
/// the nodes of each level and carrying an unpaired last node up unchanged gives RFC 9162's
/// split at the largest power of two. `ct_merkle` checks the proofs ([`open`]), and a test
/// compares roots and proofs with its tree for every size up to 70.
struct Tree {
    /// `levels[0]` the leaf hashes, the last level the root.
    levels: Vec<Vec<[u8; 32]>>,
}

impl Tree {
    fn new(leaves: &[Vec<u8>]) -> Self {
        let mut level: Vec<[u8; 32]> = leaves.iter().map(|l| leaf_hash(l)).collect();
        let mut levels = Vec::new();
        while level.len() > 1 {
            let next = level
                .chunks(2)
                .map(|pair| match pair {
                    [l, r] => node_hash(l, r),
                    // The last node of an odd level goes up as it is.
                    unpaired => unpaired.first().copied().unwrap_or_default(),
                })
                .collect();
            levels.push(std::mem::replace(&mut level, next));
        }
        levels.push(level);
        Self { levels }
    }

    /// The root (the tree is never empty: see [`sign_group_unencoded`]).
    fn root(&self) -> [u8; 32] {
        self.levels
            .last()
            .and_then(|l| l.first())
            .copied()
            .unwrap_or_default()
    }

    /// Leaf `index`'s inclusion path, bottom up, the hashes back to back.
    fn path(&self, mut index: usize) -> Vec<u8> {
        let mut path = Vec::with_capacity(32 * self.levels.len());
        let below_root = self.levels.split_last().map_or(&[][..], |(_, below)| below);
        for level in below_root {
            if let Some(sibling) = level.get(index ^ 1) {
                path.extend_from_slice(sibling);
            }
            index /= 2;
        }
        path
    }
}

/// RFC 9162's leaf hash: `SHA-256(0x00 ‖ leaf)`.
fn leaf_hash(leaf: &[u8]) -> [u8; 32] {
    Sha256::new()
        .chain_update([0u8])
        .chain_update(leaf)
        .finalize()
        .into()
}

/// RFC 9162's node hash: `SHA-256(0x01 ‖ left ‖ right)`.
fn node_hash(left: &[u8], right: &[u8]) -> [u8; 32] {
    Sha256::new()
        .chain_update([1u8])
        .chain_update(left)
        .chain_update(right)
        .finalize()
        .into()
}

/// The root an inclusion proof leads to (RFC 9162, 2.1.3.2): leaf `index` of a tree of
/// `size` leaves holds `statement`, and `path` is its proof, the hashes bottom up, back to
/// back. `None` when the proof cannot be one of such a tree (the index out of range, the
/// path too long or too short, a partial hash).
pub fn root_from_inclusion(
    statement: &[u8],
    index: u64,
    size: u64,
    path: &[u8],
) -> Option<[u8; 32]> {
    if index >= size || !path.len().is_multiple_of(32) {
        return None;
    }
    let (mut f, mut s) = (index, size - 1);
    let mut r = leaf_hash(statement);
    for p in path.chunks_exact(32) {
        if s == 0 {
            return None;
        }
        if f & 1 == 1 || f == s {
            r = node_hash(p, &r);
            while f & 1 == 0 && f != 0 {
                f >>= 1;
                s >>= 1;
            }
        } else {
            r = node_hash(&r, p);
        }
        f >>= 1;
        s >>= 1;
    }
    (s == 0).then_some(r)
}

/// A receipt taken apart, its proof and signature checked.
#[derive(Debug)]
pub struct Opened {
    /// The signing key (the kid).
    pub public_key: [u8; 32],
    /// The statement's bytes.
    pub statement: Vec<u8>,
    /// The group's size and this statement's place in it.
    pub tree_size: u64,
    /// This statement's leaf index.
    pub leaf_index: u64,
}

/// Why an envelope did not open: which check failed.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum EnvelopeError {
    /// Not a receipt of this layout.
    #[error("{0}")]
    Malformed(#[from] ReceiptError),
    /// The inclusion proof does not lead from the statement to the signed root.
    #[error("the statement is not in the signed tree: {0}")]
    Inclusion(String),
    /// The signature does not verify under the key it names.
    #[error("the signature does not verify under the receipt's key")]
    Signature,
}

fn malformed(m: impl Into<String>) -> EnvelopeError {
    EnvelopeError::Malformed(ReceiptError::Malformed(m.into()))
}

fn header_value(rest: &[(coset::Label, Value)], label: i64) -> Option<&Value> {
    rest.iter()
        .find(|(l, _)| *l == coset::Label::Int(label))
        .map(|(_, v)| v)
}

fn as_u64(v: &Value) -> Option<u64> {
    match v {
        Value::Integer(i) => u64::try_from(i128::from(*i)).ok(),
        _ => None,
    }
}

/// Parses a receipt and checks its proof and signature (not yet what the key is).
pub fn open(receipt: &[u8]) -> Result<Opened, EnvelopeError> {
    let sign1 = CoseSign1::from_tagged_slice(receipt)
        .map_err(|e| malformed(format!("not a tagged COSE_Sign1: {e}")))?;
    // One encoding only: what parses must be what `coset` writes back (a CBOR "undefined"
    // for the nil payload, a longer length or integer encoding, would otherwise leave the
    // signature valid over changed bytes).
    if sign1.clone().to_tagged_vec().ok().as_deref() != Some(receipt) {
        return Err(malformed(
            "not in its canonical encoding (the bytes differ from the receipt they parse to)",
        ));
    }
    let p = &sign1.protected.header;
    if p.alg != Some(coset::Algorithm::Assigned(iana::Algorithm::Ed25519)) {
        return Err(malformed(format!(
            "the algorithm must be Ed25519 (-19), got {:?}",
            p.alg
        )));
    }
    if !p.crit.is_empty() {
        return Err(malformed("unknown critical header parameters"));
    }
    let public_key: [u8; 32] = p
        .key_id
        .as_slice()
        .try_into()
        .map_err(|_| malformed("the kid must be the 32-byte Ed25519 key"))?;
    match header_value(&p.rest, LABEL_VDS).and_then(as_u64) {
        Some(1) => {}
        other => {
            return Err(malformed(format!(
                "the verifiable data structure must be RFC9162_SHA256 (1), got {other:?}"
            )));
        }
    }
    // The root is detached (nil), or, in receipts of earlier servers, the payload.
    let carried: Option<[u8; 32]> = match sign1.payload.as_deref() {
        None => None,
        Some(r) => Some(
            r.try_into()
                .map_err(|_| malformed("the payload must be nil (detached) or the 32-byte root"))?,
        ),
    };
    let u = &sign1.unprotected.rest;
    let statement = match header_value(u, LABEL_STATEMENT) {
        Some(Value::Bytes(b)) => b.clone(),
        _ => return Err(malformed("no statement (label -70001)")),
    };
    let proofs = match header_value(u, LABEL_VDP) {
        Some(Value::Map(m)) => m
            .iter()
            .find(|(k, _)| as_i64(k) == Some(VDP_INCLUSION))
            .map(|(_, v)| v),
        _ => None,
    };
    let proof_bytes = match proofs {
        Some(Value::Array(a)) if a.len() == 1 => match &a[0] {
            Value::Bytes(b) => b.as_slice(),
            _ => return Err(malformed("the inclusion proof is not a byte string")),
        },
        _ => return Err(malformed("no single inclusion proof (label 396, -1)")),
    };
    let mut reader = proof_bytes;
    let proof: Value = ciborium::from_reader(&mut reader)
        .map_err(|e| malformed(format!("the inclusion proof: {e}")))?;
    if !reader.is_empty() {
        return Err(malformed("bytes after the inclusion proof"));
    }
    let mut again = Vec::with_capacity(proof_bytes.len());
    if ciborium::into_writer(&proof, &mut again).is_err() || again != proof_bytes {
        return Err(malformed(
            "the inclusion proof is not in its canonical encoding",
        ));
    }
    let (tree_size, leaf_index, path) = match &proof {
        Value::Array(a) => match &a[..] {
            [size, index, Value::Array(path)] => (
                as_u64(size).ok_or_else(|| malformed("the tree size"))?,
                as_u64(index).ok_or_else(|| malformed("the leaf index"))?,
                path,
            ),
            _ => return Err(malformed("the inclusion proof must be [size, index, path]")),
        },
        _ => return Err(malformed("the inclusion proof must be an array")),
    };
    let mut hashes = Vec::with_capacity(path.len() * 32);
    for h in path {
        match h {
            Value::Bytes(b) if b.len() == 32 => hashes.extend_from_slice(b),
            _ => return Err(malformed("a proof hash is not 32 bytes")),
        }
    }
    let root =
        root_from_inclusion(&statement, leaf_index, tree_size, &hashes).ok_or_else(|| {
            EnvelopeError::Inclusion(format!(
                "no proof of leaf {leaf_index} of a tree of {tree_size} has {} hashes",
                hashes.len() / 32
            ))
        })?;
    // The same proof, checked by `ct_merkle` against the root it leads to.
    RootHash::<Sha256>::new(root.into(), tree_size)
        .verify_inclusion(
            &statement.as_slice(),
            leaf_index,
            &InclusionProof::<Sha256>::from_bytes(hashes),
        )
        .map_err(|e| EnvelopeError::Inclusion(format!("{e:?}")))?;
    if carried.is_some_and(|c| c != root) {
        return Err(EnvelopeError::Inclusion(
            "the proof does not lead to the root the receipt carries".into(),
        ));
    }
    let key = ed25519_dalek::VerifyingKey::from_bytes(&public_key)
        .map_err(|_| malformed("the kid is not an Ed25519 public key"))?;
    let check = |sig: &[u8], tbs: &[u8]| {
        let sig = ed25519_dalek::Signature::from_slice(sig).map_err(|_| ())?;
        key.verify_strict(tbs, &sig).map_err(|_| ())
    };
    match carried {
        None => sign1.verify_detached_signature(&root, b"", check),
        Some(_) => sign1.verify_signature(b"", check),
    }
    .map_err(|()| EnvelopeError::Signature)?;
    Ok(Opened {
        public_key,
        statement,
        tree_size,
        leaf_index,
    })
}

fn as_i64(v: &Value) -> Option<i64> {
    match v {
        Value::Integer(i) => i64::try_from(i128::from(*i)).ok(),
        _ => None,
    }
}

#[cfg(test)]
mod tree_tests {
    use super::*;
    use ct_merkle::mem_backed_tree::MemoryBackedTree;

    #[test]
    fn the_tree_is_rfc9162s_as_ct_merkle_builds_it() {
        for n in 1..=70usize {
            let leaves: Vec<Vec<u8>> = (0..n).map(|i| format!("leaf {i}").into_bytes()).collect();
            let ours = Tree::new(&leaves);
            let mut theirs = MemoryBackedTree::<Sha256, &[u8]>::new();
            for l in &leaves {
                theirs.push(l.as_slice());
            }
            assert_eq!(
                &ours.root()[..],
                &theirs.root().as_bytes()[..],
                "root of {n}"
            );
            for (i, leaf) in leaves.iter().enumerate() {
                let path = ours.path(i);
                assert_eq!(
                    path,
                    theirs.prove_inclusion(i).as_bytes(),
                    "path of leaf {i} of {n}"
                );
                // The proof leads back to the root, and only from its own place.
                let (i64, n64) = (i as u64, n as u64);
                assert_eq!(
                    root_from_inclusion(leaf, i64, n64, &path),
                    Some(ours.root()),
                    "leaf {i} of {n}"
                );
                assert_eq!(root_from_inclusion(leaf, n64, n64, &path), None);
                let short = &path[..path.len().saturating_sub(32)];
                if !path.is_empty() {
                    assert_ne!(
                        root_from_inclusion(leaf, i64, n64, short),
                        Some(ours.root())
                    );
                }
                let mut long = path.clone();
                long.extend_from_slice(&[0; 32]);
                assert_eq!(root_from_inclusion(leaf, i64, n64, &long), None);
                if n > 1 {
                    let other = (i + 1) % n;
                    assert_ne!(
                        root_from_inclusion(leaf, other as u64, n64, &path),
                        Some(ours.root()),
                        "leaf {i} of {n} claimed at {other}"
                    );
                }
            }
        }
    }
}
