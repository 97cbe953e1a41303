//! Password hashing with Argon2id.

use std::sync::{Mutex, MutexGuard, PoisonError};

use argon2::password_hash::phc::{Output, ParamsString, Salt};
use argon2::{Argon2, Block, PasswordHash, Version};
use subtle::ConstantTimeEq as _;
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
    /// Argon2 working memory kept between calls, so that a login does not fault in and zero
    /// its ~19 MiB afresh each time.
    pool: BlockPool,
}

impl PasswordHasher {
    /// Builds a hasher; computes the dummy hash used for unknown users.
    ///
    /// Up to one Argon2 working area per available CPU is kept for reuse (the server runs at
    /// most that many hashes at once).
    pub fn new(params: PasswordParams) -> Result<PasswordHasher, PasswordError> {
        let cpus = std::thread::available_parallelism().map_or(2, usize::from);
        PasswordHasher::with_pool_limit(params, cpus)
    }

    /// Builds a hasher that keeps at most `pool_limit` Argon2 working areas (each
    /// `memory_kib` KiB) between calls; 0 keeps none.
    pub fn with_pool_limit(
        params: PasswordParams,
        pool_limit: usize,
    ) -> Result<PasswordHasher, PasswordError> {
        let argon_params = argon2::Params::new(
            params.memory_kib,
            params.iterations,
            params.parallelism,
            None,
        )
        .map_err(|_| PasswordError::InvalidParams)?;
        let blocks = argon_params.block_count();
        let argon = Argon2::new(argon2::Algorithm::Argon2id, Version::V0x13, argon_params);
        let mut hasher = PasswordHasher {
            argon,
            params,
            dummy: String::new(),
            pool: BlockPool::new(blocks, pool_limit),
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
        let salt = random::bytes::<{ argon2::RECOMMENDED_SALT_LEN }>()
            .map_err(|_| PasswordError::Hashing)?;
        let mut out = [0u8; argon2::Params::DEFAULT_OUTPUT_LEN];
        self.pool
            .run(&self.argon, password.as_bytes(), &salt, &mut out)
            .map_err(|_| PasswordError::Hashing)?;
        let phc = PasswordHash {
            algorithm: argon2::Algorithm::Argon2id.ident(),
            version: Some(Version::V0x13.into()),
            params: ParamsString::try_from(self.argon.params())
                .map_err(|_| PasswordError::Hashing)?,
            salt: Some(Salt::new(&salt).map_err(|_| PasswordError::Hashing)?),
            hash: Some(Output::new(&out).map_err(|_| PasswordError::Hashing)?),
        };
        Ok(phc.to_string())
    }

    /// Verifies `password` against `stored`. With `stored = None` (unknown user) it verifies
    /// against a dummy hash and returns false.
    ///
    /// A stored hash made with other parameters (or another Argon2 variant or version) is
    /// verified with its own parameters.
    ///
    /// # Security
    /// The unknown-user path does the same Argon2id work as a wrong password, so timing does
    /// not reveal which usernames exist. The full password is hashed: nothing is truncated.
    pub fn verify(&self, password: &str, stored: Option<&str>) -> bool {
        if password.len() > MAX_PASSWORD_BYTES {
            return false;
        }
        let target = stored.unwrap_or(&self.dummy);
        let ok = self
            .verify_phc(password.as_bytes(), target)
            .unwrap_or(false);
        ok && stored.is_some()
    }

    /// Recomputes the hash of `password` with the salt, parameters, variant and version of
    /// the PHC string `stored`, and compares; `None` when `stored` cannot be used.
    fn verify_phc(&self, password: &[u8], stored: &str) -> Option<bool> {
        let hash = PasswordHash::new(stored).ok()?;
        let algorithm = argon2::Algorithm::try_from(hash.algorithm.as_str()).ok()?;
        let version = match hash.version {
            Some(v) => Version::try_from(v).ok()?,
            None => Version::default(),
        };
        // The output length comes from the stored hash, as the argon2 crate's verifier does.
        let params = argon2::Params::try_from(&hash).ok()?;
        let (salt, expected) = (hash.salt?, hash.hash?);
        let mut buf = [0u8; Output::MAX_LENGTH];
        let out = buf.get_mut(..expected.len())?;
        let argon = Argon2::new(algorithm, version, params);
        self.pool.run(&argon, password, salt.as_ref(), out).ok()?;
        // Constant-time: the comparison must not tell how many leading bytes of a guess matched.
        Some(out.ct_eq(expected.as_bytes()).into())
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

    /// How many working areas the pool holds right now (for tests).
    #[cfg(test)]
    fn pooled(&self) -> usize {
        self.pool.lock().len()
    }
}

/// Argon2 working areas of the configured size, taken for one hash and given back after.
///
/// The pool never holds more than `limit` areas, and never more than the number of hashes that
/// ran at once: an area is only allocated when none is free, and only put back when there is
/// room.
struct BlockPool {
    /// Blocks in one area: the configured parameters' block count.
    blocks: usize,
    limit: usize,
    free: Mutex<Vec<Vec<Block>>>,
}

impl BlockPool {
    fn new(blocks: usize, limit: usize) -> BlockPool {
        BlockPool {
            blocks,
            limit,
            free: Mutex::new(Vec::new()),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Vec<Vec<Block>>> {
        // The list stays valid whatever a panicking holder did, so poisoning is ignored.
        self.free.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Runs `argon` over `password` and `salt` into `out`, in a pooled area when the
    /// parameters fit the configured size, else in one allocated for this call only.
    ///
    /// # Security
    /// Reusing an area is safe: Argon2 writes every block before it reads it, so nothing of a
    /// previous hash can influence this one (the argon2 crate's `*_with_memory` contract).
    fn run(
        &self,
        argon: &Argon2<'_>,
        password: &[u8],
        salt: &[u8],
        out: &mut [u8],
    ) -> Result<(), argon2::Error> {
        let needed = argon.params().block_count();
        if needed > self.blocks {
            // Stored with more memory than configured: a one-off area, never pooled, so the
            // pool's memory stays bounded by the configured size.
            let mut area = new_area(needed)?;
            return argon.hash_password_into_with_memory(password, salt, out, &mut area[..]);
        }
        let taken = self.lock().pop();
        let mut area = match taken {
            Some(area) => area,
            None => new_area(self.blocks)?,
        };
        let result = argon.hash_password_into_with_memory(password, salt, out, &mut area[..needed]);
        let mut free = self.lock();
        if free.len() < self.limit {
            free.push(area);
        }
        result
    }
}

/// A working area of `blocks` blocks, or an error (not an abort) when it cannot be allocated:
/// a damaged stored hash may ask for absurd memory.
fn new_area(blocks: usize) -> Result<Vec<Block>, argon2::Error> {
    let mut area = Vec::new();
    area.try_reserve_exact(blocks)
        .map_err(|_| argon2::Error::OutOfMemory)?;
    area.resize(blocks, Block::new());
    Ok(area)
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
    fn hashes_made_by_the_argon2_crate_verify() {
        use argon2::PasswordHasher as _;
        let h = fast();
        // The argon2 crate's own hasher at the same parameters, and at its defaults
        // (m = 19456, t = 2): other parameters are read from the stored string.
        for argon in [
            Argon2::new(
                argon2::Algorithm::Argon2id,
                Version::V0x13,
                argon2::Params::new(64, 1, 1, None).unwrap(),
            ),
            Argon2::default(),
        ] {
            let stored = argon.hash_password(b"hunter2").unwrap().to_string();
            assert!(h.verify("hunter2", Some(&stored)), "{stored}");
            assert!(!h.verify("hunter3", Some(&stored)), "{stored}");
        }
        // And ours verify with the argon2 crate's verifier.
        use argon2::PasswordVerifier as _;
        let ours = h.hash("hunter2").unwrap();
        let parsed = PasswordHash::new(&ours).unwrap();
        assert!(
            Argon2::default()
                .verify_password(b"hunter2", &parsed)
                .is_ok()
        );
        assert!(
            Argon2::default()
                .verify_password(b"hunter3", &parsed)
                .is_err()
        );
    }

    #[test]
    fn hashes_with_other_parameters_variants_and_lengths_verify() {
        use argon2::PasswordHasher as _;
        let h = fast();
        for (alg, version, m, t, p, len) in [
            (argon2::Algorithm::Argon2id, Version::V0x13, 32, 3, 2, 32),
            (argon2::Algorithm::Argon2id, Version::V0x13, 256, 1, 1, 16),
            (argon2::Algorithm::Argon2id, Version::V0x13, 128, 1, 4, 64),
            (argon2::Algorithm::Argon2i, Version::V0x13, 64, 2, 1, 32),
            (argon2::Algorithm::Argon2d, Version::V0x10, 64, 1, 1, 32),
        ] {
            let params = argon2::Params::new(m, t, p, Some(len)).unwrap();
            let stored = Argon2::new(alg, version, params)
                .hash_password(b"pw")
                .unwrap()
                .to_string();
            assert!(h.verify("pw", Some(&stored)), "{stored}");
            assert!(!h.verify("pW", Some(&stored)), "{stored}");
        }
    }

    #[test]
    fn tampered_or_garbled_hashes_fail() {
        let h = fast();
        let stored = h.hash("pw").unwrap();
        assert!(h.verify("pw", Some(&stored)));
        // Change one character of the hash, of the salt, and one parameter.
        let (rest, hash) = stored.rsplit_once('$').unwrap();
        let flip = |s: &str| {
            let mut b = s.as_bytes().to_vec();
            b[3] = if b[3] == b'A' { b'B' } else { b'A' };
            String::from_utf8(b).unwrap()
        };
        let tampered_hash = format!("{rest}${}", flip(hash));
        let (head, salt) = rest.rsplit_once('$').unwrap();
        let tampered_salt = format!("{head}${}${hash}", flip(salt));
        let tampered_params = stored.replace("t=1", "t=2");
        let truncated = &stored[..stored.len() - 4];
        for bad in [
            tampered_hash.as_str(),
            &tampered_salt,
            &tampered_params,
            truncated,
            "",
            "$argon2id$v=19$m=64,t=1,p=1",
            "plaintext",
            &stored.replace("argon2id", "argon2x"),
            &stored.replace("v=19", "v=18"),
        ] {
            assert_ne!(bad, stored);
            assert!(!h.verify("pw", Some(bad)), "{bad}");
        }
    }

    #[test]
    fn an_area_too_large_to_allocate_is_an_error_not_an_abort() {
        assert!(new_area(usize::MAX / 2).is_err());
        assert_eq!(new_area(8).unwrap().len(), 8);
    }

    #[test]
    fn the_pool_reuses_areas_and_stays_bounded() {
        let h = PasswordHasher::with_pool_limit(
            PasswordParams {
                memory_kib: 64,
                iterations: 1,
                parallelism: 1,
            },
            2,
        )
        .unwrap();
        // The dummy hash at construction left one area behind; sequential calls reuse it.
        assert_eq!(h.pooled(), 1);
        let stored = h.hash("pw").unwrap();
        for _ in 0..5 {
            assert!(h.verify("pw", Some(&stored)));
            assert!(!h.verify("pw", None));
        }
        assert_eq!(h.pooled(), 1);
        // A hash with more memory than configured runs in a one-off area, not pooled.
        use argon2::PasswordHasher as _;
        let big = Argon2::new(
            argon2::Algorithm::Argon2id,
            Version::V0x13,
            argon2::Params::new(256, 1, 1, None).unwrap(),
        )
        .hash_password(b"pw")
        .unwrap()
        .to_string();
        assert!(h.verify("pw", Some(&big)));
        assert_eq!(h.pooled(), 1);
        // Eight hashes at once need eight areas; at most two are kept afterwards.
        let h = std::sync::Arc::new(h);
        let barrier = std::sync::Arc::new(std::sync::Barrier::new(8));
        let threads: Vec<_> = (0..8)
            .map(|_| {
                let (h, barrier, stored) = (h.clone(), barrier.clone(), stored.clone());
                std::thread::spawn(move || {
                    barrier.wait();
                    h.verify("pw", Some(&stored))
                })
            })
            .collect();
        for t in threads {
            assert!(t.join().unwrap());
        }
        assert!(h.pooled() <= 2, "{}", h.pooled());
        // With no pooling at all, everything still works.
        let none = PasswordHasher::with_pool_limit(PasswordParams::default(), 0).unwrap();
        assert_eq!(none.pooled(), 0);
        let stored = none.hash("pw").unwrap();
        assert!(none.verify("pw", Some(&stored)));
        assert_eq!(none.pooled(), 0);
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
