//! Randomness for tokens, ids and keys.

use thiserror::Error;

/// The operating system's random source failed; nothing can be issued safely.
#[derive(Debug, Error)]
#[error("the operating system's random number generator failed")]
pub struct RandomError;

/// Fills `buf` from the OS CSPRNG.
///
/// # Security
/// Session tokens, refresh tokens and ids must be unpredictable, so they come straight from the
/// operating system (getrandom), never from a seeded user-space generator.
pub fn fill(buf: &mut [u8]) -> Result<(), RandomError> {
    getrandom::fill(buf).map_err(|_| RandomError)
}

/// `N` random bytes from the OS CSPRNG.
pub fn bytes<const N: usize>() -> Result<[u8; N], RandomError> {
    let mut out = [0u8; N];
    fill(&mut out)?;
    Ok(out)
}

/// A random identifier: 16 bytes (128 bits) from the OS CSPRNG as unpadded base64url (22 chars).
pub fn id() -> Result<String, RandomError> {
    Ok(crate::b64::encode(&bytes::<16>()?))
}

#[cfg(test)]
mod tests {
    #[test]
    fn ids_are_22_chars_and_distinct() {
        let a = super::id().unwrap();
        let b = super::id().unwrap();
        assert_eq!(a.len(), 22);
        assert_ne!(a, b);
    }
}
