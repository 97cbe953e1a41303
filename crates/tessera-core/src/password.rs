//! Password hashing with Argon2id.

use argon2::{Argon2, PasswordHash, PasswordHasher as _, PasswordVerifier as _, Version};
use thiserror::Error;

use crate::random;

/// Longest password accepted, in bytes (SPEC §6); longer ones are refused before hashing.
pub const MAX_PASSWORD_BYTES: usize = 1024;

/// Argon2id cost parameters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PasswordParams {
    /// Memory in KiB.
    pub memory_kib: u32,
    /// Iterations.
    pub iterations: u32,
    /// Lanes.
    pub parallelism: u32,
}

impl Default for PasswordParams {
    /// OWASP's Argon2id minimum: m = 19456 KiB, t = 2, p = 1 (SPEC §6).
    fn default() -> Self {
        PasswordParams {
            memory_kib: 19_456,
            iterations: 2,
            parallelism: 1,
        }
    }
}

/// Why a password could not be hashed.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum PasswordError {
    /// The configured Argon2 parameters are invalid.
    #[error("invalid Argon2 parameters")]
    InvalidParams,
    /// The password is longer than [`MAX_PASSWORD_BYTES`].
    #[error("password is longer than {MAX_PASSWORD_BYTES} bytes")]
    TooLong,
    /// Hashing failed.
    #[error("password hashing failed")]
    Hashing,
}

/// Hashes and verifies passwords with one set of Argon2id parameters.
pub struct PasswordHasher {
    argon: Argon2<'static>,
    params: PasswordParams,
    /// A hash of a random password, verified against when the user does not exist.
    dummy: String,
}

impl PasswordHasher {
    /// Builds a hasher; computes the dummy hash used for unknown users.
    pub fn new(params: PasswordParams) -> Result<PasswordHasher, PasswordError> {
        let argon_params = argon2::Params::new(
            params.memory_kib,
            params.iterations,
            params.parallelism,
            None,
        )
        .map_err(|_| PasswordError::InvalidParams)?;
        let argon = Argon2::new(argon2::Algorithm::Argon2id, Version::V0x13, argon_params);
        let mut hasher = PasswordHasher {
            argon,
            params,
            dummy: String::new(),
        };
        let secret = random::id().map_err(|_| PasswordError::Hashing)?;
        hasher.dummy = hasher.hash(&secret)?;
        Ok(hasher)
    }

    /// The parameters new hashes are made with.
    pub fn params(&self) -> PasswordParams {
        self.params
    }

    /// Hashes `password` with a fresh random salt, as a PHC string.
    pub fn hash(&self, password: &str) -> Result<String, PasswordError> {
        if password.len() > MAX_PASSWORD_BYTES {
            return Err(PasswordError::TooLong);
        }
        self.argon
            .hash_password(password.as_bytes())
            .map(|hash| hash.to_string())
            .map_err(|_| PasswordError::Hashing)
    }

    /// Verifies `password` against `stored`. With `stored = None` (unknown user) it verifies
    /// against a dummy hash and returns false.
    ///
    /// # Security
    /// The unknown-user path does the same Argon2id work as a wrong password, so timing does
    /// not reveal which usernames exist. The full password is hashed: nothing is truncated.
    pub fn verify(&self, password: &str, stored: Option<&str>) -> bool {
        if password.len() > MAX_PASSWORD_BYTES {
            return false;
        }
        let target = stored.unwrap_or(&self.dummy);
        let ok = match PasswordHash::new(target) {
            Ok(hash) => self
                .argon
                .verify_password(password.as_bytes(), &hash)
                .is_ok(),
            Err(_) => false,
        };
        ok && stored.is_some()
    }

    /// True when `stored` was made with parameters other than the current ones (so it should
    /// be re-hashed after a successful login).
    pub fn needs_rehash(&self, stored: &str) -> bool {
        let Ok(hash) = PasswordHash::new(stored) else {
            return true;
        };
        match argon2::Params::try_from(&hash) {
            Ok(p) => {
                hash.algorithm.as_str() != "argon2id"
                    || p.m_cost() != self.params.memory_kib
                    || p.t_cost() != self.params.iterations
                    || p.p_cost() != self.params.parallelism
            }
            Err(_) => true,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Cheap parameters so unit tests stay fast; the defaults are tested once below.
    fn fast() -> PasswordHasher {
        PasswordHasher::new(PasswordParams {
            memory_kib: 64,
            iterations: 1,
            parallelism: 1,
        })
        .unwrap()
    }

    #[test]
    fn right_password_verifies_wrong_one_does_not() {
        let h = fast();
        let stored = h.hash("correct horse").unwrap();
        assert!(stored.starts_with("$argon2id$"));
        assert!(h.verify("correct horse", Some(&stored)));
        assert!(!h.verify("correct horsf", Some(&stored)));
    }

    #[test]
    fn unknown_user_never_verifies() {
        let h = fast();
        assert!(!h.verify("anything", None));
        assert!(!h.verify("", None));
    }

    #[test]
    fn long_passwords_are_not_truncated() {
        let h = fast();
        let long = "p".repeat(100);
        let stored = h.hash(&long).unwrap();
        assert!(h.verify(&long, Some(&stored)));
        assert!(!h.verify(&long[..72], Some(&stored)));
        assert!(matches!(
            h.hash(&"x".repeat(MAX_PASSWORD_BYTES + 1)),
            Err(PasswordError::TooLong)
        ));
    }

    #[test]
    fn defaults_are_spec_parameters_and_rehash_is_detected() {
        assert_eq!(
            PasswordParams::default(),
            PasswordParams {
                memory_kib: 19_456,
                iterations: 2,
                parallelism: 1
            }
        );
        let weak = fast();
        let stored = weak.hash("pw").unwrap();
        assert!(!weak.needs_rehash(&stored));
        let stronger = PasswordHasher::new(PasswordParams {
            memory_kib: 128,
            iterations: 1,
            parallelism: 1,
        })
        .unwrap();
        assert!(stronger.needs_rehash(&stored));
    }
}
