//! Client keys for the tests of proofs signed by a client (DPoP, DBSC).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{
    ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, Ed25519KeyPair, KeyPair,
};
use serde_json::{Value, json};

use crate::b64;

/// A client's key (a DPoP client, a browser registering for DBSC): signs JWTs and names
/// itself as a public JWK.
pub(crate) enum ClientKey {
    Ed25519(Ed25519KeyPair),
    P256(EcdsaKeyPair),
}

impl ClientKey {
    pub(crate) fn ed25519() -> ClientKey {
        ClientKey::Ed25519(Ed25519KeyPair::generate().unwrap())
    }

    pub(crate) fn p256() -> ClientKey {
        ClientKey::P256(EcdsaKeyPair::generate(&ECDSA_P256_SHA256_FIXED_SIGNING).unwrap())
    }

    pub(crate) fn alg(&self) -> &'static str {
        match self {
            ClientKey::Ed25519(_) => "EdDSA",
            ClientKey::P256(_) => "ES256",
        }
    }

    pub(crate) fn jwk(&self) -> Value {
        match self {
            ClientKey::Ed25519(k) => json!({
                "kty": "OKP", "crv": "Ed25519",
                "x": b64::encode(k.public_key().as_ref()),
            }),
            ClientKey::P256(k) => {
                let point = k.public_key().as_ref();
                json!({
                    "kty": "EC", "crv": "P-256",
                    "x": b64::encode(&point[1..33]), "y": b64::encode(&point[33..65]),
                })
            }
        }
    }

    pub(crate) fn sign(&self, header: &Value, claims: &Value) -> String {
        let input = format!(
            "{}.{}",
            b64::encode(header.to_string().as_bytes()),
            b64::encode(claims.to_string().as_bytes())
        );
        self.signed(&input)
    }

    /// `input` with its signature appended: a compact JWS.
    pub(crate) fn signed(&self, input: &str) -> String {
        let signature = match self {
            ClientKey::Ed25519(k) => k.sign(input.as_bytes()).as_ref().to_vec(),
            ClientKey::P256(k) => k
                .sign(&SystemRandom::new(), input.as_bytes())
                .unwrap()
                .as_ref()
                .to_vec(),
        };
        format!("{input}.{}", b64::encode(&signature))
    }
}
