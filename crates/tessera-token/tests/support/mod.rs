//! Test keys that sign like tessera does, for the verifier's tests. Fixed material, so the
//! tokens they make are reproducible; they sign nothing outside tests.

#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use aws_lc_rs::hmac;
use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{self, EcdsaKeyPair, Ed25519KeyPair, KeyPair};
use serde_json::{Value, json};
use tessera_token::{Algorithm, VerifyingKey, VerifyingKeys, b64};

enum Signer {
    Ed25519(Ed25519KeyPair),
    Es256(EcdsaKeyPair),
    Hs256(Vec<u8>),
}

/// One signing key of one algorithm.
pub struct TestKey {
    pub kid: String,
    pub algorithm: Algorithm,
    signer: Signer,
}

impl TestKey {
    /// A key of `algorithm` whose material and `kid` follow from `seed`.
    pub fn new(algorithm: Algorithm, seed: u8) -> TestKey {
        let signer = match algorithm {
            Algorithm::EdDsa => {
                Signer::Ed25519(Ed25519KeyPair::from_seed_unchecked(&[seed; 32]).unwrap())
            }
            Algorithm::Es256 => {
                // RFC 5915 ECPrivateKey { version 1, privateKey (32 bytes), [0] prime256v1 }.
                let mut der = vec![0x30, 0x31, 0x02, 0x01, 0x01, 0x04, 0x20];
                der.extend_from_slice(&[seed; 32]);
                der.extend_from_slice(&[
                    0xa0, 0x0a, 0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07,
                ]);
                Signer::Es256(
                    EcdsaKeyPair::from_private_key_der(
                        &signature::ECDSA_P256_SHA256_FIXED_SIGNING,
                        &der,
                    )
                    .unwrap(),
                )
            }
            Algorithm::Hs256 => Signer::Hs256(vec![seed; 32]),
        };
        TestKey {
            kid: b64::encode(&[
                seed,
                algorithm.jose_name().len() as u8,
                7,
                7,
                7,
                7,
                7,
                7,
                7,
                7,
                7,
                7,
                7,
                7,
                7,
                7,
            ]),
            algorithm,
            signer,
        }
    }

    /// Raw signature bytes over `message`.
    pub fn signature(&self, message: &[u8]) -> Vec<u8> {
        match &self.signer {
            Signer::Ed25519(pair) => pair.sign(message).as_ref().to_vec(),
            Signer::Es256(pair) => pair
                .sign(&SystemRandom::new(), message)
                .unwrap()
                .as_ref()
                .to_vec(),
            Signer::Hs256(secret) => {
                hmac::sign(&hmac::Key::new(hmac::HMAC_SHA256, secret), message)
                    .as_ref()
                    .to_vec()
            }
        }
    }

    /// `header.payload.signature` over raw header and payload bytes, signed with this key.
    pub fn sign_raw(&self, header: &[u8], payload: &[u8]) -> String {
        let input = format!("{}.{}", b64::encode(header), b64::encode(payload));
        let signature = self.signature(input.as_bytes());
        format!("{input}.{}", b64::encode(&signature))
    }

    /// The header tessera signs access tokens with for this key.
    pub fn header(&self) -> Value {
        json!({"alg": self.algorithm.jose_name(), "kid": self.kid, "typ": "at+jwt"})
    }

    /// An access token with `claims`, signed as tessera signs.
    pub fn sign(&self, claims: &Value) -> String {
        self.sign_raw(
            self.header().to_string().as_bytes(),
            claims.to_string().as_bytes(),
        )
    }

    /// The public JWK, as tessera publishes it (`None` for HS256).
    pub fn jwk(&self) -> Option<Value> {
        match &self.signer {
            Signer::Ed25519(pair) => Some(json!({
                "kty": "OKP", "crv": "Ed25519", "x": b64::encode(pair.public_key().as_ref()),
                "kid": self.kid, "alg": "EdDSA", "use": "sig",
            })),
            Signer::Es256(pair) => {
                let point = pair.public_key().as_ref();
                Some(json!({
                    "kty": "EC", "crv": "P-256", "x": b64::encode(&point[1..33]),
                    "y": b64::encode(&point[33..65]), "kid": self.kid, "alg": "ES256", "use": "sig",
                }))
            }
            Signer::Hs256(_) => None,
        }
    }

    /// The verifier for this key.
    pub fn verifying_key(&self) -> VerifyingKey {
        let material = match &self.signer {
            Signer::Ed25519(pair) => pair.public_key().as_ref().to_vec(),
            Signer::Es256(pair) => pair.public_key().as_ref().to_vec(),
            Signer::Hs256(secret) => secret.clone(),
        };
        VerifyingKey::new(&self.kid, self.algorithm, &material).unwrap()
    }
}

/// A JWKS document of `keys` (HS256 keys are left out, as tessera leaves them out).
pub fn jwks(keys: &[&TestKey]) -> String {
    let list: Vec<Value> = keys.iter().filter_map(|k| k.jwk()).collect();
    json!({ "keys": list }).to_string()
}

/// A key set holding `keys`, HS256 included.
pub fn key_set(keys: &[&TestKey]) -> VerifyingKeys {
    VerifyingKeys::new(keys.iter().map(|k| k.verifying_key())).unwrap()
}

pub const ISSUER: &str = "https://auth.example";
pub const AUDIENCE: &str = "apps";
pub const NOW: i64 = 1_800_000_000;

/// Claims as tessera issues them, valid at [`NOW`] for ten minutes.
pub fn claims() -> Value {
    json!({
        "iss": ISSUER, "aud": AUDIENCE, "sub": "u-42", "sid": "s-42", "name": "alice",
        "roles": ["editor"], "perms": ["docs:read", "docs:write"],
        "iat": NOW, "nbf": NOW, "exp": NOW + 600, "jti": "j-42",
    })
}

pub fn rules() -> tessera_token::ClaimRules {
    tessera_token::ClaimRules {
        issuer: ISSUER.into(),
        audience: AUDIENCE.into(),
        leeway: 30,
    }
}
