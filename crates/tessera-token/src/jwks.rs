//! Verifying keys from a JWKS document (RFC 7517), as tessera publishes it at
//! `GET /.well-known/jwks.json`.
//!
//! # Security
//! Only keys tessera could have signed with are taken: `OKP`/`Ed25519` for EdDSA and
//! `EC`/`P-256` for ES256, each with the algorithm it names (or implies) pinned to it. A
//! document that holds anything else — a symmetric key, a private member, an unknown curve, a
//! key for encryption, two keys with one `kid` — is refused whole, with an error naming the
//! key, rather than trimmed: a verifier should not quietly run on part of what it was given.

use std::collections::HashSet;

use serde::Deserialize;
use serde_json::{Map, Value};
use thiserror::Error;

use crate::b64;
use crate::jws::is_well_formed_kid;
use crate::keys::{Algorithm, VerifyingKey, VerifyingKeys};

/// Longest JWKS document read, in bytes; tessera's hold a handful of keys (~200 bytes each).
pub const MAX_JWKS_LEN: usize = 64 * 1024;

/// Why a JWKS document could not be turned into verifying keys.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum JwksError {
    /// Longer than [`MAX_JWKS_LEN`].
    #[error("the JWKS document is larger than {MAX_JWKS_LEN} bytes")]
    TooLarge,
    /// Not a JSON object with a `keys` array of objects (or a member is duplicated).
    #[error("the JWKS document is not a JSON object with a \"keys\" array of objects: {0}")]
    NotAJwks(String),
    /// A key has no `kid`, or one tessera never issues (empty, too long, outside base64url).
    #[error("key #{index} has no usable \"kid\" (1 to 64 base64url characters)")]
    BadKid {
        /// The key's position in `keys`.
        index: usize,
    },
    /// Two keys share a `kid`, so a token's `kid` would not name one key.
    #[error("two keys have the kid {kid:?}")]
    DuplicateKid {
        /// The repeated key id.
        kid: String,
    },
    /// A key tessera cannot verify with: another `kty`, `crv` or `alg`, a symmetric key, or a
    /// key whose `use` is not `sig`.
    #[error("key {kid:?} is not usable: {reason}")]
    Unsupported {
        /// The key's id.
        kid: String,
        /// What is wrong with it.
        reason: String,
    },
    /// A key carries a private member (`d`, `p`, `q`, `dp`, `dq`, `qi`, `oth`, `k`): a JWKS is
    /// public, and one that holds a secret has leaked it.
    #[error("key {kid:?} carries the private member {member:?}; a JWKS must hold public keys only")]
    PrivateMember {
        /// The key's id.
        kid: String,
        /// The private member found.
        member: String,
    },
    /// The key's coordinates are missing, not canonical base64url, or not a point of the curve.
    #[error("key {kid:?} has invalid key material")]
    InvalidMaterial {
        /// The key's id.
        kid: String,
    },
}

/// Members that only private (or symmetric) JWKs have (RFC 7518 §6.2.2, §6.3.2, §6.4).
const PRIVATE_MEMBERS: [&str; 8] = ["d", "p", "q", "dp", "dq", "qi", "oth", "k"];

/// The document's shape; `keys` entries are read member by member below.
#[derive(Deserialize)]
struct Document {
    keys: Vec<Map<String, Value>>,
}

impl VerifyingKeys {
    /// The verifying keys of a JWKS document, such as tessera's `/.well-known/jwks.json`.
    ///
    /// Each key must be an Ed25519 (`kty` `OKP`) or P-256 (`kty` `EC`) public key with a
    /// `kid`; `alg`, when present, must be the one its curve implies, and `use`, when present,
    /// `sig`. Members tessera does not use (`key_ops`, `x5t`, ...) are ignored.
    ///
    /// # Errors
    /// The whole document is refused when any key is unusable (see [`JwksError`]).
    pub fn from_jwks(document: impl AsRef<[u8]>) -> Result<VerifyingKeys, JwksError> {
        let bytes = document.as_ref();
        if bytes.len() > MAX_JWKS_LEN {
            return Err(JwksError::TooLarge);
        }
        let text = std::str::from_utf8(bytes)
            .map_err(|_| JwksError::NotAJwks("the document is not UTF-8".into()))?;
        // serde_json's `Map` keeps the last of duplicate members; refuse them first.
        let _: crate::json::UniqueJson =
            serde_json::from_str(text).map_err(|error| JwksError::NotAJwks(error.to_string()))?;
        let document: Document =
            serde_json::from_str(text).map_err(|error| JwksError::NotAJwks(error.to_string()))?;
        let mut seen = HashSet::new();
        let mut keys = Vec::with_capacity(document.keys.len());
        for (index, jwk) in document.keys.iter().enumerate() {
            let key = from_jwk(index, jwk)?;
            if !seen.insert(key.kid().to_owned()) {
                return Err(JwksError::DuplicateKid {
                    kid: key.kid().to_owned(),
                });
            }
            keys.push(key);
        }
        // Every kid is well formed, so every key gets its access-header shortcut.
        VerifyingKeys::new(keys).map_err(|_| JwksError::NotAJwks("unusable key set".into()))
    }
}

/// One JWK of a JWKS document as a verifying key.
fn from_jwk(index: usize, jwk: &Map<String, Value>) -> Result<VerifyingKey, JwksError> {
    let kid = match jwk.get("kid") {
        Some(Value::String(kid)) if is_well_formed_kid(kid) => kid.clone(),
        _ => return Err(JwksError::BadKid { index }),
    };
    key_from_jwk(&kid, jwk)
}

/// A public JWK (OKP Ed25519 or EC P-256) as a verifying key named `kid`: no private member,
/// no symmetric key, `alg` and `use` (when given) matching, coordinates exactly 32 bytes.
/// Shared by JWKS documents and DPoP proofs' `jwk` headers.
pub(crate) fn key_from_jwk(kid: &str, jwk: &Map<String, Value>) -> Result<VerifyingKey, JwksError> {
    let kid = kid.to_owned();
    if let Some(member) = PRIVATE_MEMBERS.iter().find(|m| jwk.contains_key(**m)) {
        return Err(JwksError::PrivateMember {
            kid,
            member: (*member).to_owned(),
        });
    }
    let unsupported = |reason: String| JwksError::Unsupported {
        kid: kid.clone(),
        reason,
    };
    let text = |name: &str| -> Result<Option<&str>, JwksError> {
        match jwk.get(name) {
            None => Ok(None),
            Some(Value::String(value)) => Ok(Some(value.as_str())),
            Some(_) => Err(unsupported(format!("\"{name}\" is not a string"))),
        }
    };
    let (kty, crv) = (text("kty")?, text("crv")?);
    let algorithm = match (kty, crv) {
        (Some("OKP"), Some("Ed25519")) => Algorithm::EdDsa,
        (Some("EC"), Some("P-256")) => Algorithm::Es256,
        (Some("oct"), _) => {
            return Err(unsupported(
                "symmetric keys (kty \"oct\") are never published".into(),
            ));
        }
        (kty, crv) => {
            return Err(unsupported(format!(
                "kty {kty:?} with crv {crv:?} (expected OKP/Ed25519 or EC/P-256)"
            )));
        }
    };
    // Exact, case-sensitive: the key's algorithm is the one its curve implies.
    if let Some(alg) = text("alg")?
        && alg != algorithm.jose_name()
    {
        return Err(unsupported(format!(
            "alg {alg:?} does not match its curve (expected {})",
            algorithm.jose_name()
        )));
    }
    if let Some(usage) = text("use")?
        && usage != "sig"
    {
        return Err(unsupported(format!("use {usage:?} (expected \"sig\")")));
    }
    let invalid = || JwksError::InvalidMaterial { kid: kid.clone() };
    let coordinate = |name: &str| -> Result<[u8; 32], JwksError> {
        text(name)?.and_then(b64::decode_32).ok_or_else(invalid)
    };
    let material = match algorithm {
        Algorithm::EdDsa => {
            if jwk.contains_key("y") {
                return Err(invalid());
            }
            coordinate("x")?.to_vec()
        }
        // Uncompressed SEC1 point: 0x04 || x || y; aws-lc checks that it lies on the curve.
        _ => [&[4u8][..], &coordinate("x")?, &coordinate("y")?].concat(),
    };
    VerifyingKey::new(&kid, algorithm, &material).map_err(|_| invalid())
}
