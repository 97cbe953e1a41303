//! Encryption of private signing keys at rest, under a master key kept outside the store.
//!
//! A stored key's private part is `TSK1 || nonce (12) || AES-256-GCM(private) || tag (16)`.
//! The associated data binds the ciphertext to the key's `kid` and algorithm, so a row
//! copied to another `kid`, or relabelled with another algorithm, fails to decrypt.
//!
//! # Security
//! Whoever reads the store (a backup, a replica, a PostgreSQL dump) gets no usable signing key
//! without the master key. The master key never enters the store.

use std::fmt;

use aws_lc_rs::aead::{AES_256_GCM, Aad, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
use aws_lc_rs::hmac;
use thiserror::Error;

use crate::b64;
use crate::keys::{Algorithm, KeyRecord};
use crate::random;

/// Marks an encrypted private key, and the format version.
const MAGIC: &[u8; 4] = b"TSK1";
/// Derivation label: the master key is never used directly, so it can serve other purposes
/// later without two uses sharing an AES key.
const SUBKEY_LABEL: &[u8] = b"tessera/at-rest/signing-keys/v1";
/// Prefix of the associated data.
const AAD_LABEL: &[u8] = b"tessera/signing-key/v1\0";
/// Length of a master key: 256 bits.
pub const MASTER_KEY_LEN: usize = 32;

/// Why a private key could not be sealed or opened.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum AtRestError {
    /// The text is not a master key: 32 bytes as unpadded base64url (43 characters).
    #[error("a master key is 32 random bytes written as unpadded base64url (43 characters)")]
    InvalidMasterKey,
    /// The stored private key is not encrypted (written by an older tessera, or by hand).
    #[error(
        "signing key {kid} is stored unencrypted; this tessera only accepts keys encrypted at rest"
    )]
    NotEncrypted {
        /// The key's id.
        kid: String,
    },
    /// Decryption failed: another master key, or altered data.
    #[error(
        "signing key {kid} cannot be decrypted: the master key differs from the one it was \
         stored with, or the stored key was altered"
    )]
    Undecryptable {
        /// The key's id.
        kid: String,
    },
    /// The operating system's random source failed.
    #[error("the operating system's random number generator failed")]
    Random,
}

/// The key that encrypts private signing keys in the store.
#[derive(Clone)]
pub struct MasterKey([u8; MASTER_KEY_LEN]);

impl fmt::Debug for MasterKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // A secret: never printed.
        f.write_str("MasterKey(..)")
    }
}

impl MasterKey {
    /// A new random master key from the OS CSPRNG.
    pub fn generate() -> Result<MasterKey, AtRestError> {
        random::bytes::<MASTER_KEY_LEN>()
            .map(MasterKey)
            .map_err(|_| AtRestError::Random)
    }

    /// A master key from its 32 bytes.
    pub fn from_bytes(bytes: [u8; MASTER_KEY_LEN]) -> MasterKey {
        MasterKey(bytes)
    }

    /// Parses the text form (unpadded base64url of 32 bytes); surrounding whitespace, such as
    /// the newline at the end of a key file, is ignored.
    pub fn parse(text: &str) -> Result<MasterKey, AtRestError> {
        let bytes = b64::decode(text.trim()).ok_or(AtRestError::InvalidMasterKey)?;
        let bytes: [u8; MASTER_KEY_LEN] = bytes
            .try_into()
            .map_err(|_| AtRestError::InvalidMasterKey)?;
        Ok(MasterKey(bytes))
    }

    /// The text form, for writing a key file.
    pub fn to_text(&self) -> String {
        b64::encode(&self.0)
    }

    /// The record with its private part encrypted, as the store should keep it.
    pub fn seal(&self, record: &KeyRecord) -> Result<KeyRecord, AtRestError> {
        let context = aad(&record.kid, record.algorithm);
        Ok(KeyRecord {
            private: self.seal_bytes(Purpose::SigningKey, &context, &record.private)?,
            ..record.clone()
        })
    }

    /// The record with its private part decrypted, from what the store keeps.
    pub fn open(&self, record: &KeyRecord) -> Result<KeyRecord, AtRestError> {
        if !record.private.starts_with(Purpose::SigningKey.magic()) {
            return Err(AtRestError::NotEncrypted {
                kid: record.kid.clone(),
            });
        }
        let context = aad(&record.kid, record.algorithm);
        let private = self
            .open_bytes(Purpose::SigningKey, &context, &record.private)
            .ok_or_else(|| AtRestError::Undecryptable {
                kid: record.kid.clone(),
            })?;
        Ok(KeyRecord {
            private,
            ..record.clone()
        })
    }
}

/// What the master key seals, each under its own subkey and format tag, so a value sealed
/// for one purpose never opens as another.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Purpose {
    /// A private signing key, bound to its `kid` and algorithm.
    SigningKey,
    /// A user's TOTP secret, bound to the user id (the associated data).
    TotpSecret,
    /// A login ticket: proof of a first factor, carried by the client to the second step.
    LoginTicket,
    /// A DPoP nonce (RFC 9449 §8): a MAC of the time window it was issued in, so every
    /// instance sharing the master key issues and accepts the same one, and nobody else can
    /// make one.
    DpopNonce,
    /// A DBSC challenge: the session it was issued for and until when, so any instance
    /// sharing the master key accepts it.
    DbscChallenge,
}

impl Purpose {
    const fn magic(self) -> &'static [u8; 4] {
        match self {
            Purpose::SigningKey => MAGIC,
            Purpose::TotpSecret => b"TOT1",
            Purpose::LoginTicket => b"TLT1",
            Purpose::DpopNonce => b"TDN1",
            Purpose::DbscChallenge => b"TDC1",
        }
    }

    const fn label(self) -> &'static [u8] {
        match self {
            Purpose::SigningKey => SUBKEY_LABEL,
            Purpose::TotpSecret => b"tessera/at-rest/totp-secret/v1",
            Purpose::LoginTicket => b"tessera/login-ticket/v1",
            Purpose::DpopNonce => b"tessera/dpop-nonce/v1",
            Purpose::DbscChallenge => b"tessera/dbsc-challenge/v1",
        }
    }
}

impl MasterKey {
    fn subkey(&self, label: &[u8]) -> Result<LessSafeKey, AtRestError> {
        let subkey = hmac::sign(&hmac::Key::new(hmac::HMAC_SHA256, &self.0), label);
        let key = UnboundKey::new(&AES_256_GCM, subkey.as_ref())
            .map_err(|_| AtRestError::InvalidMasterKey)?;
        Ok(LessSafeKey::new(key))
    }

    /// HMAC-SHA256 of `data` under this key's subkey for `purpose`: a value only holders of
    /// the master key can compute, the same on every instance.
    pub fn mac(&self, purpose: Purpose, data: &[u8]) -> [u8; 32] {
        let subkey = hmac::sign(&hmac::Key::new(hmac::HMAC_SHA256, &self.0), purpose.label());
        let tag = hmac::sign(&hmac::Key::new(hmac::HMAC_SHA256, subkey.as_ref()), data);
        let mut out = [0u8; 32];
        out.copy_from_slice(tag.as_ref());
        out
    }

    /// Encrypts `plaintext` for `purpose`, bound to `context` (authenticated, not encrypted):
    /// `tag (4) || nonce (12) || AES-256-GCM(plaintext) || tag (16)`.
    pub fn seal_bytes(
        &self,
        purpose: Purpose,
        context: &[u8],
        plaintext: &[u8],
    ) -> Result<Vec<u8>, AtRestError> {
        let nonce = random::bytes::<NONCE_LEN>().map_err(|_| AtRestError::Random)?;
        let mut in_out = plaintext.to_vec();
        self.subkey(purpose.label())?
            .seal_in_place_append_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(context),
                &mut in_out,
            )
            .map_err(|_| AtRestError::Random)?;
        let mut sealed = Vec::with_capacity(4 + NONCE_LEN + in_out.len());
        sealed.extend_from_slice(purpose.magic());
        sealed.extend_from_slice(&nonce);
        sealed.extend_from_slice(&in_out);
        Ok(sealed)
    }

    /// Decrypts what [`MasterKey::seal_bytes`] produced for the same purpose and context;
    /// `None` for anything else (another key, purpose or context, or altered bytes).
    pub fn open_bytes(&self, purpose: Purpose, context: &[u8], sealed: &[u8]) -> Option<Vec<u8>> {
        let rest = sealed.strip_prefix(purpose.magic())?;
        if rest.len() < NONCE_LEN {
            return None;
        }
        let (nonce, ciphertext) = rest.split_at(NONCE_LEN);
        let nonce = Nonce::try_assume_unique_for_key(nonce).ok()?;
        let mut in_out = ciphertext.to_vec();
        let key = self.subkey(purpose.label()).ok()?;
        let plain = key
            .open_in_place(nonce, Aad::from(context), &mut in_out)
            .ok()?;
        Some(plain.to_vec())
    }
}

/// Associated data: label, `kid`, NUL, algorithm name.
fn aad(kid: &str, algorithm: Algorithm) -> Vec<u8> {
    let mut aad = AAD_LABEL.to_vec();
    aad.extend_from_slice(kid.as_bytes());
    aad.push(0);
    aad.extend_from_slice(algorithm.jose_name().as_bytes());
    aad
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(alg: Algorithm) -> KeyRecord {
        KeyRecord::generate(alg, 7).unwrap()
    }

    #[test]
    fn sealed_bytes_open_only_for_their_purpose_context_and_key() {
        let master = MasterKey::generate().unwrap();
        let sealed = master
            .seal_bytes(Purpose::TotpSecret, b"user-1", b"secret")
            .unwrap();
        assert_eq!(
            master.open_bytes(Purpose::TotpSecret, b"user-1", &sealed),
            Some(b"secret".to_vec())
        );
        assert_eq!(
            master.open_bytes(Purpose::TotpSecret, b"user-2", &sealed),
            None
        );
        assert_eq!(
            master.open_bytes(Purpose::LoginTicket, b"user-1", &sealed),
            None
        );
        let other = MasterKey::generate().unwrap();
        assert_eq!(
            other.open_bytes(Purpose::TotpSecret, b"user-1", &sealed),
            None
        );
        let mut altered = sealed.clone();
        if let Some(last) = altered.last_mut() {
            *last ^= 1;
        }
        assert_eq!(
            master.open_bytes(Purpose::TotpSecret, b"user-1", &altered),
            None
        );
        assert_eq!(
            master.open_bytes(Purpose::TotpSecret, b"user-1", b"TOT1"),
            None
        );
    }

    #[test]
    fn sealed_keys_open_with_the_same_master_key_only() {
        let master = MasterKey::generate().unwrap();
        for alg in [Algorithm::EdDsa, Algorithm::Es256, Algorithm::Hs256] {
            let plain = record(alg);
            let sealed = master.seal(&plain).unwrap();
            assert!(sealed.private.starts_with(MAGIC));
            assert_ne!(sealed.private, plain.private);
            assert_eq!(
                sealed.public, plain.public,
                "the public part stays readable"
            );
            let opened = master.open(&sealed).unwrap();
            assert_eq!(opened.private, plain.private);
            opened.signing_key().unwrap();

            let other = MasterKey::generate().unwrap();
            assert_eq!(
                other.open(&sealed).unwrap_err(),
                AtRestError::Undecryptable {
                    kid: plain.kid.clone()
                }
            );
        }
    }

    #[test]
    fn ciphertext_is_bound_to_kid_and_algorithm() {
        let master = MasterKey::generate().unwrap();
        let sealed = master.seal(&record(Algorithm::Hs256)).unwrap();
        let moved = KeyRecord {
            kid: "another-kid".into(),
            ..sealed.clone()
        };
        assert!(matches!(
            master.open(&moved),
            Err(AtRestError::Undecryptable { .. })
        ));
        let relabelled = KeyRecord {
            algorithm: Algorithm::EdDsa,
            ..sealed.clone()
        };
        assert!(matches!(
            master.open(&relabelled),
            Err(AtRestError::Undecryptable { .. })
        ));
        let mut altered = sealed;
        *altered.private.last_mut().unwrap() ^= 1;
        assert!(matches!(
            master.open(&altered),
            Err(AtRestError::Undecryptable { .. })
        ));
    }

    #[test]
    fn unencrypted_keys_are_refused_by_name() {
        let master = MasterKey::generate().unwrap();
        let plain = record(Algorithm::EdDsa);
        assert_eq!(
            master.open(&plain).unwrap_err(),
            AtRestError::NotEncrypted { kid: plain.kid }
        );
    }

    #[test]
    fn master_key_text_form_is_strict() {
        let master = MasterKey::generate().unwrap();
        let text = master.to_text();
        assert_eq!(text.len(), 43);
        assert_eq!(MasterKey::parse(&format!("{text}\n")).unwrap().0, master.0);
        for bad in [
            "",
            "short",
            &text[..42],
            &format!("{text}A"),
            &format!("{text}="),
        ] {
            assert_eq!(
                MasterKey::parse(bad).unwrap_err(),
                AtRestError::InvalidMasterKey,
                "{bad:?}"
            );
        }
        assert_eq!(format!("{master:?}"), "MasterKey(..)");
    }
}
