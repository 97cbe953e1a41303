//! Signing keys: generation, the stored form, and the in-memory signer and verifier built from it.
//!
//! # Security
//! Each key carries exactly one algorithm; the verifier takes the algorithm from the key the
//! `kid` selects, never from the token (RFC 8725 §3.1).

use std::collections::HashMap;
use std::fmt;
use std::str::FromStr;

use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{self, EcdsaKeyPair, Ed25519KeyPair, KeyPair, ParsedPublicKey};
use aws_lc_rs::{error::Unspecified, hmac};
use serde_json::{Value, json};
use thiserror::Error;

use crate::random::{self, RandomError};
use crate::{UnixTime, b64};

/// Length of the HS256 secrets tessera generates: the full output size of SHA-256.
pub const HMAC_SECRET_LEN: usize = 32;

/// A JWS signature algorithm tessera can sign with.
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

/// Why a key could not be generated or loaded.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum KeyError {
    /// The algorithm name is not one tessera supports.
    #[error("unsupported signature algorithm (expected EdDSA, ES256 or HS256)")]
    UnsupportedAlgorithm,
    /// The stored key bytes do not form a valid key for their algorithm.
    #[error("stored key material is invalid")]
    InvalidMaterial,
    /// The OS random source failed.
    #[error(transparent)]
    Random(#[from] RandomError),
}

impl From<Unspecified> for KeyError {
    fn from(_: Unspecified) -> Self {
        KeyError::InvalidMaterial
    }
}

/// A signing key as the store keeps it.
#[derive(Clone)]
pub struct KeyRecord {
    /// Key id, carried in every token header as `kid`.
    pub kid: String,
    /// The one algorithm this key is used with.
    pub algorithm: Algorithm,
    /// PKCS#8 document (EdDSA, ES256) or the raw 32-byte secret (HS256).
    pub private: Vec<u8>,
    /// The raw public key (Ed25519: 32 bytes; P-256: 65-byte uncompressed point; HS256: empty).
    pub public: Vec<u8>,
    /// When the key was created.
    pub created_at: UnixTime,
    /// When the key stopped signing (it still verifies until its tokens have expired).
    pub retired_at: Option<UnixTime>,
}

impl fmt::Debug for KeyRecord {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The private part is never printed.
        f.debug_struct("KeyRecord")
            .field("kid", &self.kid)
            .field("algorithm", &self.algorithm)
            .field("created_at", &self.created_at)
            .field("retired_at", &self.retired_at)
            .finish_non_exhaustive()
    }
}

impl KeyRecord {
    /// Generates a new key for `algorithm`, with a random `kid`.
    pub fn generate(algorithm: Algorithm, now: UnixTime) -> Result<KeyRecord, KeyError> {
        let rng = SystemRandom::new();
        let (private, public) = match algorithm {
            Algorithm::EdDsa => {
                let pkcs8 = Ed25519KeyPair::generate_pkcs8(&rng)?;
                let pair = Ed25519KeyPair::from_pkcs8(pkcs8.as_ref())
                    .map_err(|_| KeyError::InvalidMaterial)?;
                (pkcs8.as_ref().to_vec(), pair.public_key().as_ref().to_vec())
            }
            Algorithm::Es256 => {
                let alg = &signature::ECDSA_P256_SHA256_FIXED_SIGNING;
                let pkcs8 = EcdsaKeyPair::generate_pkcs8(alg, &rng)?;
                let pair = EcdsaKeyPair::from_pkcs8(alg, pkcs8.as_ref())
                    .map_err(|_| KeyError::InvalidMaterial)?;
                (pkcs8.as_ref().to_vec(), pair.public_key().as_ref().to_vec())
            }
            // 32 random bytes: the full strength of HMAC-SHA-256, one secret per key.
            Algorithm::Hs256 => (random::bytes::<HMAC_SECRET_LEN>()?.to_vec(), Vec::new()),
        };
        Ok(KeyRecord {
            kid: random::id()?,
            algorithm,
            private,
            public,
            created_at: now,
            retired_at: None,
        })
    }

    /// Builds the signer for this key.
    pub fn signing_key(&self) -> Result<SigningKey, KeyError> {
        let signer = match self.algorithm {
            Algorithm::EdDsa => Signer::Ed25519(
                Ed25519KeyPair::from_pkcs8(&self.private).map_err(|_| KeyError::InvalidMaterial)?,
            ),
            Algorithm::Es256 => Signer::Es256(
                EcdsaKeyPair::from_pkcs8(
                    &signature::ECDSA_P256_SHA256_FIXED_SIGNING,
                    &self.private,
                )
                .map_err(|_| KeyError::InvalidMaterial)?,
                SystemRandom::new(),
            ),
            Algorithm::Hs256 => Signer::Hs256(Box::new(self.hmac_key()?)),
        };
        Ok(SigningKey {
            access_header: crate::jws::encoded_header(
                self.algorithm,
                &self.kid,
                crate::jws::ACCESS_TOKEN_TYPE,
            )?,
            kid: self.kid.clone(),
            algorithm: self.algorithm,
            signer,
        })
    }

    /// Builds the verifier for this key.
    pub fn verifying_key(&self) -> Result<VerifyingKey, KeyError> {
        let material = match self.algorithm {
            Algorithm::EdDsa | Algorithm::Es256 => &self.public,
            // tessera generates exactly 32-byte secrets; anything else in the store is damage.
            Algorithm::Hs256 if self.private.len() != HMAC_SECRET_LEN => {
                return Err(KeyError::InvalidMaterial);
            }
            Algorithm::Hs256 => &self.private,
        };
        VerifyingKey::new(&self.kid, self.algorithm, material)
    }

    fn hmac_key(&self) -> Result<hmac::Key, KeyError> {
        if self.private.len() != HMAC_SECRET_LEN {
            return Err(KeyError::InvalidMaterial);
        }
        Ok(hmac::Key::new(hmac::HMAC_SHA256, &self.private))
    }

    /// The public JWK (RFC 7517) for the JWKS, or `None` for HS256 keys, which are secret.
    pub fn public_jwk(&self) -> Option<Value> {
        match self.algorithm {
            Algorithm::EdDsa => Some(json!({
                "kty": "OKP", "crv": "Ed25519", "x": b64::encode(&self.public),
                "kid": self.kid, "alg": "EdDSA", "use": "sig",
            })),
            Algorithm::Es256 => {
                // Uncompressed SEC1 point: 0x04 || x (32) || y (32).
                let (x, y) = (self.public.get(1..33)?, self.public.get(33..65)?);
                Some(json!({
                    "kty": "EC", "crv": "P-256", "x": b64::encode(x), "y": b64::encode(y),
                    "kid": self.kid, "alg": "ES256", "use": "sig",
                }))
            }
            Algorithm::Hs256 => None,
        }
    }
}

enum Signer {
    Ed25519(Ed25519KeyPair),
    Es256(EcdsaKeyPair, SystemRandom),
    // Boxed: an HMAC key holds precomputed state far larger than the other variants.
    Hs256(Box<hmac::Key>),
}

/// A key that signs tokens.
pub struct SigningKey {
    kid: String,
    algorithm: Algorithm,
    signer: Signer,
    /// The base64url JWS header of access tokens signed with this key, made once.
    access_header: String,
}

impl SigningKey {
    /// The key id.
    pub fn kid(&self) -> &str {
        &self.kid
    }

    /// The key's one algorithm.
    pub fn algorithm(&self) -> Algorithm {
        self.algorithm
    }

    /// Signs `message`, returning the raw JWS signature bytes.
    pub fn sign(&self, message: &[u8]) -> Result<Vec<u8>, KeyError> {
        Ok(match &self.signer {
            Signer::Ed25519(pair) => pair.sign(message).as_ref().to_vec(),
            Signer::Es256(pair, rng) => pair.sign(rng, message)?.as_ref().to_vec(),
            Signer::Hs256(key) => hmac::sign(key, message).as_ref().to_vec(),
        })
    }

    /// Signs `message` into the start of `out` without allocating; returns the signature's
    /// length.
    pub(crate) fn sign_into(&self, message: &[u8], out: &mut [u8]) -> Result<usize, KeyError> {
        let copy = |sig: &[u8], out: &mut [u8]| -> Result<usize, KeyError> {
            out.get_mut(..sig.len())
                .ok_or(KeyError::InvalidMaterial)?
                .copy_from_slice(sig);
            Ok(sig.len())
        };
        match &self.signer {
            Signer::Ed25519(pair) => copy(pair.sign(message).as_ref(), out),
            Signer::Es256(pair, rng) => copy(pair.sign(rng, message)?.as_ref(), out),
            Signer::Hs256(key) => copy(hmac::sign(key, message).as_ref(), out),
        }
    }

    /// The base64url JWS header for tokens of type `typ` signed with this key, when it is
    /// the one made in advance (access tokens).
    pub(crate) fn cached_header(&self, typ: &str) -> Option<&str> {
        (typ == crate::jws::ACCESS_TOKEN_TYPE).then_some(self.access_header.as_str())
    }
}

enum Verifier {
    Public(ParsedPublicKey),
    // Boxed for the same reason as `Signer::Hs256`.
    Hmac(Box<hmac::Key>),
}

/// A key that verifies tokens.
pub struct VerifyingKey {
    kid: String,
    algorithm: Algorithm,
    verifier: Verifier,
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

/// The keys an instance signs and verifies with: one current signer, any number of verifiers.
pub struct KeySet {
    current: SigningKey,
    verifiers: HashMap<String, VerifyingKey>,
    /// For each verifier whose `kid` is well formed, the base64url access-token header
    /// tessera signs with for it, mapped to that `kid`.
    access_headers: HashMap<String, String>,
}

impl KeySet {
    /// Builds a key set from stored records. `current` signs; every record verifies.
    pub fn new(current: &KeyRecord, all: &[KeyRecord]) -> Result<KeySet, KeyError> {
        let mut verifiers = HashMap::new();
        for record in all.iter().chain(std::iter::once(current)) {
            verifiers.insert(record.kid.clone(), record.verifying_key()?);
        }
        // Built from the final map, so a header leads to the very key its `kid` names.
        let mut access_headers = HashMap::new();
        for (kid, key) in &verifiers {
            if crate::jws::is_well_formed_kid(kid) {
                let header = crate::jws::encoded_header(
                    key.algorithm(),
                    kid,
                    crate::jws::ACCESS_TOKEN_TYPE,
                )?;
                access_headers.insert(header, kid.clone());
            }
        }
        Ok(KeySet {
            current: current.signing_key()?,
            verifiers,
            access_headers,
        })
    }

    /// The key new tokens are signed with.
    pub fn current(&self) -> &SigningKey {
        &self.current
    }

    /// The verifier for `kid`, if we hold one.
    pub fn verifier(&self, kid: &str) -> Option<&VerifyingKey> {
        self.verifiers.get(kid)
    }

    /// The verifier whose access-token header (`{alg, kid, typ: "at+jwt"}`, base64url, as
    /// tessera signs it) is exactly `encoded_header`, if any.
    pub(crate) fn access_verifier(&self, encoded_header: &str) -> Option<&VerifyingKey> {
        self.verifier(self.access_headers.get(encoded_header)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn algorithm_names_are_exact() {
        assert_eq!("EdDSA".parse::<Algorithm>().unwrap(), Algorithm::EdDsa);
        for bad in ["none", "None", "eddsa", "HS512", "RS256", ""] {
            assert!(bad.parse::<Algorithm>().is_err(), "{bad}");
        }
    }

    #[test]
    fn every_algorithm_signs_and_verifies_and_rejects_other_messages() {
        for alg in [Algorithm::EdDsa, Algorithm::Es256, Algorithm::Hs256] {
            let record = KeyRecord::generate(alg, 0).unwrap();
            let sig = record.signing_key().unwrap().sign(b"hello").unwrap();
            let verifier = record.verifying_key().unwrap();
            assert!(verifier.verify(b"hello", &sig), "{alg}");
            assert!(!verifier.verify(b"hellp", &sig), "{alg}");
        }
    }

    #[test]
    fn jwks_entries_are_public_only() {
        let ed = KeyRecord::generate(Algorithm::EdDsa, 0)
            .unwrap()
            .public_jwk()
            .unwrap();
        assert_eq!(ed["kty"], "OKP");
        assert!(ed.get("d").is_none());
        let es = KeyRecord::generate(Algorithm::Es256, 0)
            .unwrap()
            .public_jwk()
            .unwrap();
        assert_eq!(es["crv"], "P-256");
        assert_eq!(b64::decode(es["x"].as_str().unwrap()).unwrap().len(), 32);
        assert!(
            KeyRecord::generate(Algorithm::Hs256, 0)
                .unwrap()
                .public_jwk()
                .is_none()
        );
    }
}
