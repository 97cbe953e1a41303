//! Verifying keys: one algorithm per key, and the set a token's `kid` is looked up in.
//!
//! # Security
//! Each key carries exactly one algorithm; the verifier takes the algorithm from the key the
//! `kid` selects, never from the token (RFC 8725 §3.1).

use std::collections::HashMap;
use std::fmt;
use std::str::FromStr;

use aws_lc_rs::hmac;
use aws_lc_rs::signature::{self, ParsedPublicKey};
use thiserror::Error;

use crate::header;

/// Length of the HS256 secrets tessera generates, and the shortest it verifies with: the full
/// output size of SHA-256 (RFC 7518 §3.2).
pub const HMAC_SECRET_LEN: usize = 32;

/// A JWS signature algorithm tessera signs and verifies with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Algorithm {
    /// Ed25519 (RFC 8037): the default; small keys, fast, deterministic signatures.
    EdDsa,
    /// ECDSA P-256 with SHA-256, signatures in the fixed 64-byte (P1363) form.
    Es256,
    /// HMAC-SHA-256 with a per-key 32-byte secret; only for deployments where every verifier
    /// is a tessera instance. Never published in the JWKS.
    Hs256,
}

impl Algorithm {
    /// The JOSE `alg` name.
    pub const fn jose_name(self) -> &'static str {
        match self {
            Algorithm::EdDsa => "EdDSA",
            Algorithm::Es256 => "ES256",
            Algorithm::Hs256 => "HS256",
        }
    }
}

impl fmt::Display for Algorithm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.jose_name())
    }
}

impl FromStr for Algorithm {
    type Err = KeyError;

    /// Parses the exact JOSE name (case-sensitive: `none`, `eddsa` and friends are refused).
    fn from_str(name: &str) -> Result<Self, KeyError> {
        match name {
            "EdDSA" => Ok(Algorithm::EdDsa),
            "ES256" => Ok(Algorithm::Es256),
            "HS256" => Ok(Algorithm::Hs256),
            _ => Err(KeyError::UnsupportedAlgorithm),
        }
    }
}

/// Why a verifying key could not be built.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum KeyError {
    /// The algorithm name is not one tessera supports.
    #[error("unsupported signature algorithm (expected EdDSA, ES256 or HS256)")]
    UnsupportedAlgorithm,
    /// The key bytes do not form a valid key for their algorithm.
    #[error("stored key material is invalid")]
    InvalidMaterial,
}

enum Verifier {
    Public(ParsedPublicKey),
    // Boxed: an HMAC key holds precomputed state far larger than a parsed public key.
    Hmac(Box<hmac::Key>),
}

/// A key that verifies tokens.
pub struct VerifyingKey {
    kid: String,
    algorithm: Algorithm,
    verifier: Verifier,
}

impl fmt::Debug for VerifyingKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // An HS256 verifier holds a secret: only the name and algorithm are printed.
        f.debug_struct("VerifyingKey")
            .field("kid", &self.kid)
            .field("algorithm", &self.algorithm)
            .finish_non_exhaustive()
    }
}

impl VerifyingKey {
    /// Builds a verifier from raw key material: the 32-byte Ed25519 public key, the 65-byte
    /// uncompressed P-256 point, or an HMAC secret of at least 32 bytes.
    ///
    /// # Security
    /// The algorithm is fixed here, once, and never taken from a token. HMAC secrets shorter
    /// than the hash output are refused (RFC 7518 §3.2).
    pub fn new(kid: &str, algorithm: Algorithm, material: &[u8]) -> Result<VerifyingKey, KeyError> {
        let verifier = match algorithm {
            // Exact raw encodings only: aws-lc would also take DER or compressed points, and a
            // verifier should accept one spelling of a key, not several.
            Algorithm::EdDsa if material.len() != 32 => return Err(KeyError::InvalidMaterial),
            Algorithm::Es256 if material.len() != 65 || material.first() != Some(&4) => {
                return Err(KeyError::InvalidMaterial);
            }
            Algorithm::EdDsa => Verifier::Public(
                ParsedPublicKey::new(&signature::ED25519, material)
                    .map_err(|_| KeyError::InvalidMaterial)?,
            ),
            Algorithm::Es256 => Verifier::Public(
                ParsedPublicKey::new(&signature::ECDSA_P256_SHA256_FIXED, material)
                    .map_err(|_| KeyError::InvalidMaterial)?,
            ),
            Algorithm::Hs256 if material.len() < HMAC_SECRET_LEN => {
                return Err(KeyError::InvalidMaterial);
            }
            Algorithm::Hs256 => {
                Verifier::Hmac(Box::new(hmac::Key::new(hmac::HMAC_SHA256, material)))
            }
        };
        Ok(VerifyingKey {
            kid: kid.to_owned(),
            algorithm,
            verifier,
        })
    }

    /// The key id.
    pub fn kid(&self) -> &str {
        &self.kid
    }

    /// The key's one algorithm.
    pub fn algorithm(&self) -> Algorithm {
        self.algorithm
    }

    /// Verifies a raw signature over `message`.
    ///
    /// # Security
    /// HMAC tags are compared in constant time (aws-lc `hmac::verify`); Ed25519 refuses
    /// non-canonical `S` and ECDSA refuses `r`/`s` of zero or out of range (aws-lc).
    pub fn verify(&self, message: &[u8], signature: &[u8]) -> bool {
        match &self.verifier {
            Verifier::Public(key) => key.verify_sig(message, signature).is_ok(),
            Verifier::Hmac(key) => hmac::verify(key, message, signature).is_ok(),
        }
    }
}

/// The keys tokens are verified with, by `kid`: built from a JWKS document
/// ([`VerifyingKeys::from_jwks`]) or from keys the caller holds ([`VerifyingKeys::new`]).
#[derive(Debug, Default)]
pub struct VerifyingKeys {
    keys: HashMap<String, VerifyingKey>,
    /// For each key whose `kid` is well formed, the base64url access-token header tessera
    /// signs with for it, mapped to that `kid`.
    access_headers: HashMap<String, String>,
}

impl VerifyingKeys {
    /// A set of `keys`; of several keys with the same `kid`, the last one is kept.
    pub fn new(keys: impl IntoIterator<Item = VerifyingKey>) -> Result<VerifyingKeys, KeyError> {
        let keys: HashMap<String, VerifyingKey> =
            keys.into_iter().map(|key| (key.kid.clone(), key)).collect();
        // Built from the final map, so a header leads to the very key its `kid` names.
        let mut access_headers = HashMap::new();
        for (kid, key) in &keys {
            if header::is_well_formed_kid(kid) {
                let header =
                    header::encoded(key.algorithm.jose_name(), kid, header::ACCESS_TOKEN_TYPE)
                        .ok_or(KeyError::InvalidMaterial)?;
                access_headers.insert(header, kid.clone());
            }
        }
        Ok(VerifyingKeys {
            keys,
            access_headers,
        })
    }

    /// The verifier for `kid`, if the set holds one.
    pub fn get(&self, kid: &str) -> Option<&VerifyingKey> {
        self.keys.get(kid)
    }

    /// The verifier whose access-token header (`{alg, kid, typ: "at+jwt"}`, base64url, as
    /// tessera signs it) is exactly `encoded_header`, if any: the shortcut that lets a
    /// genuine header skip decoding and parsing.
    pub fn access_verifier(&self, encoded_header: &str) -> Option<&VerifyingKey> {
        self.get(self.access_headers.get(encoded_header)?)
    }

    /// The number of keys in the set.
    pub fn len(&self) -> usize {
        self.keys.len()
    }

    /// True when the set holds no key (every token is then refused as `UnknownKey`).
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// The keys of the set, in no particular order.
    pub fn iter(&self) -> impl Iterator<Item = &VerifyingKey> {
        self.keys.values()
    }
}

impl AsRef<VerifyingKeys> for VerifyingKeys {
    fn as_ref(&self) -> &VerifyingKeys {
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn algorithm_names_are_exact() {
        assert_eq!("EdDSA".parse::<Algorithm>().unwrap(), Algorithm::EdDsa);
        assert_eq!("ES256".parse::<Algorithm>().unwrap(), Algorithm::Es256);
        assert_eq!("HS256".parse::<Algorithm>().unwrap(), Algorithm::Hs256);
        for bad in ["none", "None", "eddsa", "HS512", "RS256", ""] {
            assert!(bad.parse::<Algorithm>().is_err(), "{bad}");
        }
    }

    #[test]
    fn key_material_must_be_the_exact_raw_encoding() {
        assert!(VerifyingKey::new("k", Algorithm::EdDsa, &[1; 31]).is_err());
        assert!(VerifyingKey::new("k", Algorithm::Es256, &[4; 64]).is_err());
        assert!(VerifyingKey::new("k", Algorithm::Es256, &[2; 33]).is_err());
        assert!(VerifyingKey::new("k", Algorithm::Hs256, &[7; 31]).is_err());
        assert!(VerifyingKey::new("k", Algorithm::Hs256, &[7; 32]).is_ok());
    }

    #[test]
    fn the_last_key_of_a_kid_wins_and_debug_shows_no_secret() {
        let keys = VerifyingKeys::new([
            VerifyingKey::new("k", Algorithm::Hs256, &[7; 32]).unwrap(),
            VerifyingKey::new("k", Algorithm::Hs256, &[8; 40]).unwrap(),
        ])
        .unwrap();
        assert_eq!(keys.len(), 1);
        let tag = hmac::sign(&hmac::Key::new(hmac::HMAC_SHA256, &[8; 40]), b"m");
        assert!(keys.get("k").unwrap().verify(b"m", tag.as_ref()));
        assert!(!format!("{keys:?}").contains("[8"));
    }
}
