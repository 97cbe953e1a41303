//! Sealing a refresh token's successor so that only the holder of that refresh token can read it.
//!
//! Refresh rotation must answer a repeated refresh inside the grace window with the *same*
//! successor pair, on any instance, while the store never holds a usable token. So the pair is
//! stored encrypted under a key derived from the presented refresh token: the store has the
//! ciphertext and SHA-256(token), neither of which yields the key.

use aws_lc_rs::aead::{AES_256_GCM, Aad, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
use aws_lc_rs::digest;

use crate::random::{self, RandomError};

/// Domain separation: the sealing key is never equal to the lookup hash SHA-256(token).
const KEY_CONTEXT: &[u8] = b"tessera/refresh-successor/v1\0";

fn key_for(refresh_token: &str) -> Option<LessSafeKey> {
    let mut ctx = digest::Context::new(&digest::SHA256);
    ctx.update(KEY_CONTEXT);
    ctx.update(refresh_token.as_bytes());
    let key = UnboundKey::new(&AES_256_GCM, ctx.finish().as_ref()).ok()?;
    Some(LessSafeKey::new(key))
}

/// Encrypts `plaintext` under a key derived from `refresh_token` (AES-256-GCM, random nonce).
pub fn seal(refresh_token: &str, plaintext: &[u8]) -> Result<Vec<u8>, RandomError> {
    let nonce_bytes = random::bytes::<NONCE_LEN>()?;
    let key = key_for(refresh_token).ok_or(RandomError)?;
    let mut in_out = plaintext.to_vec();
    key.seal_in_place_append_tag(
        Nonce::assume_unique_for_key(nonce_bytes),
        Aad::empty(),
        &mut in_out,
    )
    .map_err(|_| RandomError)?;
    let mut sealed = nonce_bytes.to_vec();
    sealed.extend_from_slice(&in_out);
    Ok(sealed)
}

/// Decrypts what [`seal`] produced; `None` when the token is not the one it was sealed for or
/// the data was altered.
pub fn open(refresh_token: &str, sealed: &[u8]) -> Option<Vec<u8>> {
    if sealed.len() < NONCE_LEN {
        return None;
    }
    let (nonce, ciphertext) = sealed.split_at(NONCE_LEN);
    let nonce = Nonce::try_assume_unique_for_key(nonce).ok()?;
    let key = key_for(refresh_token)?;
    let mut in_out = ciphertext.to_vec();
    let plain = key.open_in_place(nonce, Aad::empty(), &mut in_out).ok()?;
    Some(plain.to_vec())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_same_token_opens() {
        let sealed = seal("tsrf_a", b"pair").unwrap();
        assert_eq!(open("tsrf_a", &sealed).as_deref(), Some(&b"pair"[..]));
        assert_eq!(open("tsrf_b", &sealed), None);
        let mut tampered = sealed.clone();
        *tampered.last_mut().unwrap() ^= 1;
        assert_eq!(open("tsrf_a", &tampered), None);
        assert_eq!(open("tsrf_a", &sealed[..5]), None);
    }
}
