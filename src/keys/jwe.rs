//! JWE for KBS resources, exactly as a Trustee KBS emits them: key agreement
//! `ECDH-ES+A256KW` on P-256 (RFC 7518 §4.6, Concat KDF with SHA-256, RFC 3394 AES key wrap),
//! content encryption `A256GCM`, flattened JSON serialization (RFC 7516 §7.2.2) with members
//! `protected`, `encrypted_key`, `iv`, `ciphertext`, `tag`, all base64url without padding.
//!
//! The TEE side holds a [`TeeKeyPair`]: an ephemeral P-256 key made in memory (ring), whose
//! public half goes into the runtime data as a JWK. [`TeeKeyPair::decrypt`] consumes it, so a
//! key opens exactly one resource and never outlives the exchange.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64URL;
use ring::aead::{AES_256_GCM, Aad, LessSafeKey, Nonce, Tag, UnboundKey};
use ring::agreement::{ECDH_P256, EphemeralPrivateKey, UnparsedPublicKey, agree_ephemeral};
use ring::rand::{SecureRandom as _, SystemRandom};
use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};
use zeroize::Zeroizing;

use super::error::JweError;

/// The key-management algorithm.
pub const ALG: &str = "ECDH-ES+A256KW";
/// The content-encryption algorithm.
pub const ENC: &str = "A256GCM";
/// The curve.
pub const CRV: &str = "P-256";

/// Length of a P-256 coordinate.
const COORD_LEN: usize = 32;
/// Length of the content-encryption key and of the key-encryption key.
const KEY_LEN: usize = 32;
/// AES-GCM IV length.
const IV_LEN: usize = 12;
/// AES-GCM tag length.
const TAG_LEN: usize = 16;

/// A TEE public key as KBS types it (`kbs_types::TeePubKey`): only these members exist, so
/// unknown JWK members (`use`, `kid`) are dropped when parsing, as Trustee drops them before
/// hashing the runtime data.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kty")]
#[non_exhaustive]
pub enum TeePubKey {
    /// An elliptic-curve key.
    #[serde(rename = "EC")]
    Ec {
        /// The curve, e.g. `P-256`.
        crv: String,
        /// The JWE key-management algorithm the key is for (mandatory).
        alg: String,
        /// The x coordinate, base64url.
        x: String,
        /// The y coordinate, base64url.
        y: String,
    },
    /// An RSA key (accepted in runtime data for interoperability; this broker cannot
    /// encrypt to it).
    #[serde(rename = "RSA")]
    Rsa {
        /// The JWE key-management algorithm.
        alg: String,
        /// The modulus, base64url.
        n: String,
        /// The exponent, base64url.
        e: String,
    },
}

impl TeePubKey {
    /// The uncompressed SEC1 point (`04 || x || y`) of a P-256 `ECDH-ES+A256KW` key; any
    /// other key is [`JweError::Unsupported`].
    pub fn p256_point(&self) -> Result<Vec<u8>, JweError> {
        let (crv, alg, x, y) = match self {
            Self::Ec { crv, alg, x, y } => (crv, alg, x, y),
            Self::Rsa { .. } => {
                return Err(JweError::Unsupported {
                    what: "kty",
                    found: "RSA".into(),
                    supported: "EC",
                });
            }
        };
        if crv != CRV {
            return Err(JweError::Unsupported {
                what: "crv",
                found: crv.clone(),
                supported: CRV,
            });
        }
        if alg != ALG {
            return Err(JweError::Unsupported {
                what: "alg",
                found: alg.clone(),
                supported: ALG,
            });
        }
        let mut point = Vec::with_capacity(1 + 2 * COORD_LEN);
        point.push(4);
        for (name, coord) in [("x", x), ("y", y)] {
            let bytes = B64URL
                .decode(coord)
                .map_err(|e| JweError::PublicKey(format!("{name} is not base64url: {e}")))?;
            if bytes.len() != COORD_LEN {
                return Err(JweError::PublicKey(format!(
                    "{name} is {} bytes, a P-256 coordinate is {COORD_LEN}",
                    bytes.len()
                )));
            }
            point.extend_from_slice(&bytes);
        }
        Ok(point)
    }

    fn from_p256_point(point: &[u8]) -> Result<Self, JweError> {
        match point {
            [4, rest @ ..] if rest.len() == 2 * COORD_LEN => {
                let (x, y) = rest.split_at(COORD_LEN);
                Ok(Self::Ec {
                    crv: CRV.into(),
                    alg: ALG.into(),
                    x: B64URL.encode(x),
                    y: B64URL.encode(y),
                })
            }
            _ => Err(JweError::Crypto(
                "P-256 public key is not an uncompressed point",
            )),
        }
    }
}

/// The TEE's ephemeral key-exchange key. Made in memory, never serialized; consumed by the
/// one decryption it exists for.
pub struct TeeKeyPair {
    private: EphemeralPrivateKey,
    public: TeePubKey,
}

impl TeeKeyPair {
    /// A fresh P-256 key from the OS random number generator.
    pub fn generate() -> Result<Self, JweError> {
        let rng = SystemRandom::new();
        let private = EphemeralPrivateKey::generate(&ECDH_P256, &rng)
            .map_err(|_| JweError::Crypto("P-256 key generation failed"))?;
        let point = private
            .compute_public_key()
            .map_err(|_| JweError::Crypto("P-256 public key computation failed"))?;
        let public = TeePubKey::from_p256_point(point.as_ref())?;
        Ok(Self { private, public })
    }

    /// The public key, for the runtime data.
    pub fn public_key(&self) -> &TeePubKey {
        &self.public
    }

    /// Decrypts a flattened-JSON JWE addressed to this key, consuming the key.
    pub fn decrypt(self, jwe_json: &[u8]) -> Result<Zeroizing<Vec<u8>>, JweError> {
        let parsed = ParsedJwe::parse(jwe_json)?;
        let epk = UnparsedPublicKey::new(&ECDH_P256, parsed.epk_point.as_slice());
        let kek = agree_ephemeral(self.private, &epk, |z| {
            concat_kdf(z, &parsed.apu, &parsed.apv)
        })
        .map_err(|_| JweError::PublicKey("the JWE's epk is not a valid P-256 point".into()))?;
        let cek = unwrap_key(&kek, &parsed.encrypted_key)?;
        open(&cek, &parsed)
    }
}

/// Encrypts `plaintext` to `recipient` as a flattened-JSON JWE (the KBS resource response).
pub fn encrypt(recipient: &TeePubKey, plaintext: &[u8]) -> Result<Vec<u8>, JweError> {
    let point = recipient.p256_point()?;
    let rng = SystemRandom::new();
    let ephemeral = EphemeralPrivateKey::generate(&ECDH_P256, &rng)
        .map_err(|_| JweError::Crypto("P-256 key generation failed"))?;
    let epk_point = ephemeral
        .compute_public_key()
        .map_err(|_| JweError::Crypto("P-256 public key computation failed"))?;
    let TeePubKey::Ec { x, y, .. } = TeePubKey::from_p256_point(epk_point.as_ref())? else {
        return Err(JweError::Crypto("ephemeral key is not EC"));
    };
    let peer = UnparsedPublicKey::new(&ECDH_P256, point.as_slice());
    let kek = agree_ephemeral(ephemeral, &peer, |z| concat_kdf(z, &[], &[]))
        .map_err(|_| JweError::PublicKey("the TEE key is not a valid P-256 point".into()))?;

    let mut cek = Zeroizing::new([0u8; KEY_LEN]);
    rng.fill(cek.as_mut())
        .map_err(|_| JweError::Crypto("random content key"))?;
    let mut encrypted_key = [0u8; KEY_LEN + 8];
    aes_kw::KekAes256::from(*kek)
        .wrap(cek.as_ref(), &mut encrypted_key)
        .map_err(|_| JweError::Crypto("AES key wrap"))?;

    // Members in Trustee's order: alg, enc, epk (its members sorted).
    let header = ProtectedHeaderOut {
        alg: ALG,
        enc: ENC,
        epk: EpkOut {
            crv: CRV,
            kty: "EC",
            x: &x,
            y: &y,
        },
    };
    let protected = B64URL
        .encode(serde_json::to_vec(&header).map_err(|_| JweError::Crypto("protected header"))?);
    let mut iv = [0u8; IV_LEN];
    rng.fill(&mut iv)
        .map_err(|_| JweError::Crypto("random IV"))?;
    let key = aes_gcm_key(&cek)?;
    let mut ciphertext = plaintext.to_vec();
    let tag = key
        .seal_in_place_separate_tag(
            Nonce::assume_unique_for_key(iv),
            Aad::from(protected.as_bytes()),
            &mut ciphertext,
        )
        .map_err(|_| JweError::Crypto("AES-GCM encryption"))?;
    let jwe = FlattenedJwe {
        protected,
        encrypted_key: B64URL.encode(encrypted_key),
        iv: B64URL.encode(iv),
        ciphertext: B64URL.encode(&ciphertext),
        tag: B64URL.encode(tag.as_ref()),
        aad: None,
    };
    serde_json::to_vec(&jwe).map_err(|_| JweError::Crypto("JWE serialization"))
}

/// The flattened JSON serialization. Unknown members (`header`, `unprotected`) are refused:
/// KBS never sends them, and silently ignoring a header is how JOSE libraries get fooled.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct FlattenedJwe {
    protected: String,
    encrypted_key: String,
    iv: String,
    ciphertext: String,
    tag: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    aad: Option<String>,
}

#[derive(Serialize)]
struct ProtectedHeaderOut<'a> {
    alg: &'a str,
    enc: &'a str,
    epk: EpkOut<'a>,
}

#[derive(Serialize)]
struct EpkOut<'a> {
    crv: &'a str,
    kty: &'a str,
    x: &'a str,
    y: &'a str,
}

#[derive(Debug, Deserialize)]
struct ProtectedHeader {
    alg: String,
    enc: String,
    epk: Option<TeePubKeyLoose>,
    apu: Option<String>,
    apv: Option<String>,
    zip: Option<String>,
}

/// An `epk`: like [`TeePubKey`] but `alg` is optional (an epk carries none).
#[derive(Debug, Deserialize)]
struct TeePubKeyLoose {
    kty: String,
    crv: String,
    x: String,
    y: String,
}

/// A JWE parsed and checked for algorithms and lengths, not yet decrypted.
#[derive(Debug)]
pub struct ParsedJwe {
    /// The protected header as sent (base64url), the AAD's first part.
    pub protected_b64: String,
    /// The decoded protected header (JSON text).
    pub protected_json: String,
    /// The sender's ephemeral public key, uncompressed.
    pub epk_point: Vec<u8>,
    /// Agreement PartyUInfo and PartyVInfo (empty when absent).
    pub apu: Vec<u8>,
    /// See `apu`.
    pub apv: Vec<u8>,
    /// The wrapped content key (40 bytes).
    pub encrypted_key: Vec<u8>,
    /// The 12-byte IV.
    pub iv: [u8; IV_LEN],
    /// The ciphertext.
    pub ciphertext: Vec<u8>,
    /// The 16-byte tag.
    pub tag: [u8; TAG_LEN],
    /// The JWE `aad` member as sent, if any.
    pub aad_b64: Option<String>,
}

fn b64(what: &'static str, text: &str) -> Result<Vec<u8>, JweError> {
    B64URL.decode(text).map_err(|e| JweError::Malformed {
        what,
        reason: format!("not base64url without padding: {e}"),
    })
}

impl ParsedJwe {
    /// Parses a flattened-JSON JWE and checks `alg`, `enc`, the epk and every length.
    pub fn parse(json: &[u8]) -> Result<Self, JweError> {
        let jwe: FlattenedJwe = serde_json::from_slice(json).map_err(|e| JweError::Malformed {
            what: "JSON",
            reason: e.to_string(),
        })?;
        let header_bytes = b64("protected header", &jwe.protected)?;
        let protected_json = String::from_utf8(header_bytes).map_err(|_| JweError::Malformed {
            what: "protected header",
            reason: "not UTF-8".into(),
        })?;
        let header: ProtectedHeader =
            serde_json::from_str(&protected_json).map_err(|e| JweError::Malformed {
                what: "protected header",
                reason: e.to_string(),
            })?;
        if header.alg != ALG {
            return Err(JweError::Unsupported {
                what: "alg",
                found: header.alg,
                supported: ALG,
            });
        }
        if header.enc != ENC {
            return Err(JweError::Unsupported {
                what: "enc",
                found: header.enc,
                supported: ENC,
            });
        }
        if let Some(zip) = header.zip {
            return Err(JweError::Unsupported {
                what: "zip",
                found: zip,
                supported: "none",
            });
        }
        let epk = header.epk.ok_or_else(|| JweError::Malformed {
            what: "protected header",
            reason: "ECDH-ES needs an epk".into(),
        })?;
        if epk.kty != "EC" {
            return Err(JweError::Unsupported {
                what: "kty",
                found: epk.kty,
                supported: "EC",
            });
        }
        let epk_point = TeePubKey::Ec {
            crv: epk.crv,
            alg: ALG.into(),
            x: epk.x,
            y: epk.y,
        }
        .p256_point()?;
        let encrypted_key = b64("encrypted_key", &jwe.encrypted_key)?;
        if encrypted_key.len() != KEY_LEN + 8 {
            return Err(JweError::Malformed {
                what: "encrypted_key",
                reason: format!(
                    "{} bytes, an AES-KW-wrapped 256-bit key is {}",
                    encrypted_key.len(),
                    KEY_LEN + 8
                ),
            });
        }
        let iv = b64("iv", &jwe.iv)?
            .try_into()
            .map_err(|v: Vec<u8>| JweError::Malformed {
                what: "iv",
                reason: format!("{} bytes, A256GCM uses {IV_LEN}", v.len()),
            })?;
        let tag = b64("tag", &jwe.tag)?
            .try_into()
            .map_err(|v: Vec<u8>| JweError::Malformed {
                what: "tag",
                reason: format!("{} bytes, A256GCM uses {TAG_LEN}", v.len()),
            })?;
        if let Some(aad) = &jwe.aad {
            b64("aad", aad)?;
        }
        Ok(Self {
            protected_b64: jwe.protected,
            protected_json,
            epk_point,
            apu: header
                .apu
                .as_deref()
                .map(|a| b64("apu", a))
                .transpose()?
                .unwrap_or_default(),
            apv: header
                .apv
                .as_deref()
                .map(|a| b64("apv", a))
                .transpose()?
                .unwrap_or_default(),
            encrypted_key,
            iv,
            ciphertext: b64("ciphertext", &jwe.ciphertext)?,
            tag,
            aad_b64: jwe.aad,
        })
    }

    /// The AEAD additional data: `ASCII(protected)`, or `ASCII(protected || '.' || aad)`.
    fn aad(&self) -> Vec<u8> {
        match &self.aad_b64 {
            None => self.protected_b64.as_bytes().to_vec(),
            Some(aad) => format!("{}.{aad}", self.protected_b64).into_bytes(),
        }
    }
}

/// RFC 7518 §4.6.2: Concat KDF (NIST SP 800-56A) with SHA-256, one round, for a 256-bit
/// key with AlgorithmID = `ECDH-ES+A256KW`.
pub fn concat_kdf(z: &[u8], apu: &[u8], apv: &[u8]) -> Zeroizing<[u8; KEY_LEN]> {
    let len32 = |b: &[u8]| (b.len() as u32).to_be_bytes();
    let digest = Sha256::new()
        .chain_update(1u32.to_be_bytes())
        .chain_update(z)
        .chain_update(len32(ALG.as_bytes()))
        .chain_update(ALG.as_bytes())
        .chain_update(len32(apu))
        .chain_update(apu)
        .chain_update(len32(apv))
        .chain_update(apv)
        .chain_update(((KEY_LEN * 8) as u32).to_be_bytes())
        .finalize();
    let mut kek = Zeroizing::new([0u8; KEY_LEN]);
    kek.copy_from_slice(&digest);
    kek
}

fn unwrap_key(kek: &[u8; KEY_LEN], wrapped: &[u8]) -> Result<Zeroizing<[u8; KEY_LEN]>, JweError> {
    let mut cek = Zeroizing::new([0u8; KEY_LEN]);
    aes_kw::KekAes256::from(*kek)
        .unwrap(wrapped, cek.as_mut())
        .map_err(|_| JweError::Decrypt { step: "key unwrap" })?;
    Ok(cek)
}

fn aes_gcm_key(cek: &[u8; KEY_LEN]) -> Result<LessSafeKey, JweError> {
    UnboundKey::new(&AES_256_GCM, cek)
        .map(LessSafeKey::new)
        .map_err(|_| JweError::Crypto("AES-256-GCM key"))
}

fn open(cek: &[u8; KEY_LEN], jwe: &ParsedJwe) -> Result<Zeroizing<Vec<u8>>, JweError> {
    let key = aes_gcm_key(cek)?;
    let mut buf = Zeroizing::new(jwe.ciphertext.clone());
    let len = key
        .open_in_place_separate_tag(
            Nonce::assume_unique_for_key(jwe.iv),
            Aad::from(jwe.aad()),
            Tag::from(jwe.tag),
            buf.as_mut_slice(),
            0..,
        )
        .map_err(|_| JweError::Decrypt { step: "content" })?
        .len();
    buf.truncate(len);
    Ok(buf)
}
