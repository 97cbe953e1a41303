//! Signing keys: generation, the stored form, and the in-memory signer and verifier built from
//! it. The verifier ([`VerifyingKey`]) and [`Algorithm`] come from [`tessera_token::keys`].
//!
//! # Security
//! Each key carries exactly one algorithm; the verifier takes the algorithm from the key the
//! `kid` selects, never from the token (RFC 8725 §3.1).

use std::fmt;

use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{self, EcdsaKeyPair, Ed25519KeyPair, KeyPair};
use aws_lc_rs::{error::Unspecified, hmac};
use serde_json::{Value, json};
use thiserror::Error;

use crate::random::{self, RandomError};
use crate::{UnixTime, b64};

pub use tessera_token::keys::{Algorithm, HMAC_SECRET_LEN, VerifyingKey, VerifyingKeys};

/// Why a key could not be generated or loaded.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum KeyError {
    /// The algorithm is not one tessera supports, or the key bytes do not form a valid key for
    /// their algorithm (the reasons [`tessera_token`] refuses a verifying key for).
    #[error(transparent)]
    Key(#[from] tessera_token::keys::KeyError),
    /// The OS random source failed.
    #[error(transparent)]
    Random(#[from] RandomError),
}

impl KeyError {
    /// The key bytes do not form a valid key for their algorithm.
    pub const INVALID_MATERIAL: KeyError =
        KeyError::Key(tessera_token::keys::KeyError::InvalidMaterial);
}

impl From<Unspecified> for KeyError {
    fn from(_: Unspecified) -> Self {
        KeyError::INVALID_MATERIAL
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
                    .map_err(|_| KeyError::INVALID_MATERIAL)?;
                (pkcs8.as_ref().to_vec(), pair.public_key().as_ref().to_vec())
            }
            Algorithm::Es256 => {
                let alg = &signature::ECDSA_P256_SHA256_FIXED_SIGNING;
                let pkcs8 = EcdsaKeyPair::generate_pkcs8(alg, &rng)?;
                let pair = EcdsaKeyPair::from_pkcs8(alg, pkcs8.as_ref())
                    .map_err(|_| KeyError::INVALID_MATERIAL)?;
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
                Ed25519KeyPair::from_pkcs8(&self.private)
                    .map_err(|_| KeyError::INVALID_MATERIAL)?,
            ),
            Algorithm::Es256 => Signer::Es256(
                EcdsaKeyPair::from_pkcs8(
                    &signature::ECDSA_P256_SHA256_FIXED_SIGNING,
                    &self.private,
                )
                .map_err(|_| KeyError::INVALID_MATERIAL)?,
                SystemRandom::new(),
            ),
            Algorithm::Hs256 => Signer::Hs256(Box::new(self.hmac_key()?)),
        };
        Ok(SigningKey {
            access_header: tessera_token::jws::encoded_header(
                self.algorithm,
                &self.kid,
                tessera_token::jws::ACCESS_TOKEN_TYPE,
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
                return Err(KeyError::INVALID_MATERIAL);
            }
            Algorithm::Hs256 => &self.private,
        };
        Ok(VerifyingKey::new(&self.kid, self.algorithm, material)?)
    }

    fn hmac_key(&self) -> Result<hmac::Key, KeyError> {
        if self.private.len() != HMAC_SECRET_LEN {
            return Err(KeyError::INVALID_MATERIAL);
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
                .ok_or(KeyError::INVALID_MATERIAL)?
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
        (typ == tessera_token::jws::ACCESS_TOKEN_TYPE).then_some(self.access_header.as_str())
    }
}

/// The keys an instance signs and verifies with: one current signer, any number of verifiers.
pub struct KeySet {
    current: SigningKey,
    verifiers: VerifyingKeys,
}

impl KeySet {
    /// Builds a key set from stored records. `current` signs; every record verifies.
    pub fn new(current: &KeyRecord, all: &[KeyRecord]) -> Result<KeySet, KeyError> {
        // `current` last, so that it is the verifier kept for its `kid`.
        let verifiers = all
            .iter()
            .chain(std::iter::once(current))
            .map(KeyRecord::verifying_key)
            .collect::<Result<Vec<_>, _>>()?;
        Ok(KeySet {
            current: current.signing_key()?,
            verifiers: VerifyingKeys::new(verifiers)?,
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

    /// Every verifier, as [`tessera_token`] looks tokens up in them.
    pub fn verifying_keys(&self) -> &VerifyingKeys {
        &self.verifiers
    }
}

/// Verification takes a [`KeySet`] where it takes [`VerifyingKeys`]: its verifiers.
impl AsRef<VerifyingKeys> for KeySet {
    fn as_ref(&self) -> &VerifyingKeys {
        &self.verifiers
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
    fn the_published_jwks_is_what_tessera_token_verifies_with() {
        let records: Vec<KeyRecord> = [Algorithm::EdDsa, Algorithm::Es256, Algorithm::Hs256]
            .into_iter()
            .map(|alg| KeyRecord::generate(alg, 0).unwrap())
            .collect();
        let jwks =
            json!({ "keys": records.iter().filter_map(KeyRecord::public_jwk).collect::<Vec<_>>() });
        let published = VerifyingKeys::from_jwks(jwks.to_string()).unwrap();
        assert_eq!(published.len(), 2, "HS256 keys are never published");
        for record in &records[..2] {
            let keys = KeySet::new(record, &records).unwrap();
            let token = crate::jws::sign(keys.current(), "at+jwt", b"{}").unwrap();
            assert_eq!(
                tessera_token::jws::verify(&token, &published, "at+jwt").unwrap(),
                b"{}",
                "{}",
                record.algorithm
            );
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
