//! Where the master key that encrypts private signing keys at rest comes from.
//!
//! In order: the `TESSERA_MASTER_KEY` environment variable (43 characters of base64url), or
//! the file named by `master_key_file`, or `master.key` in the data directory. When none of
//! these exists and the store holds no signing key yet (first start), a random key is written
//! to `master.key` in the data directory, readable by the owner only, so that `tessera serve`
//! with no options keeps working.
//!
//! # Security
//! A key file beside the database only protects copies of the database made without the
//! directory (a PostgreSQL dump, a backup of the database file alone). To protect against a
//! stolen data directory, keep the master key elsewhere: `TESSERA_MASTER_KEY` from a secret
//! manager, or `master_key_file` on another volume.

use std::fmt;
use std::io::Write;
use std::path::{Path, PathBuf};

use tessera_core::at_rest::MasterKey;
use thiserror::Error;

use crate::config::Config;

/// The environment variable holding the master key itself.
pub use crate::config::MASTER_KEY_ENV as ENV_VAR;
/// Name of the key file in the data directory.
pub const DEFAULT_FILE: &str = "master.key";

/// Where the master key in use came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MasterKeySource {
    /// `TESSERA_MASTER_KEY`.
    Environment,
    /// A key file that already existed (`master_key_file`, or the data directory's).
    File(PathBuf),
    /// A key file generated just now in the data directory (first start).
    Generated(PathBuf),
    /// Given by the program that assembled the server ([`crate::Builder::master_key`]).
    Given,
}

impl fmt::Display for MasterKeySource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            MasterKeySource::Environment => f.write_str(ENV_VAR),
            MasterKeySource::Given => f.write_str("the assembling program"),
            MasterKeySource::File(path) | MasterKeySource::Generated(path) => {
                write!(f, "{}", path.display())
            }
        }
    }
}

/// Why no master key could be had.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum MasterKeyError {
    /// Both `TESSERA_MASTER_KEY` and `master_key_file` are set.
    #[error("both {ENV_VAR} and master_key_file are set; set only one")]
    Ambiguous,
    /// `TESSERA_MASTER_KEY` is not a master key.
    #[error(
        "{ENV_VAR} is not a master key: it must be 32 random bytes as unpadded base64url \
         (43 characters), e.g. from `head -c 32 /dev/urandom | base64 | tr '+/' '-_' | tr -d '='`"
    )]
    InvalidEnvironment,
    /// A key file does not hold a master key.
    #[error(
        "{0} does not hold a master key (32 random bytes as unpadded base64url, 43 characters)"
    )]
    InvalidFile(PathBuf),
    /// A key file could not be read or written.
    #[error("cannot {action} master key file {path}: {source}")]
    Io {
        /// `read` or `create`.
        action: &'static str,
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The store holds encrypted signing keys but no master key is configured.
    #[error(
        "the store holds signing keys encrypted at rest, but no master key was given: set \
         {ENV_VAR} or master_key_file, or restore {0}"
    )]
    Missing(PathBuf),
}

/// Finds the master key for `config`, generating one on first start.
///
/// `env_value` is the value of `TESSERA_MASTER_KEY` (the caller reads the environment, so
/// tests can pass their own). `store_has_keys` says whether the store already holds signing
/// keys: a key is generated only when it does not, because keys stored under a lost master key
/// cannot be recovered by making a new one.
pub fn resolve(
    config: &Config,
    env_value: Option<&str>,
    store_has_keys: bool,
) -> Result<(MasterKey, MasterKeySource), MasterKeyError> {
    let env_value = env_value.filter(|v| !v.trim().is_empty());
    match (env_value, &config.master_key_file) {
        (Some(_), Some(_)) => Err(MasterKeyError::Ambiguous),
        (Some(text), None) => MasterKey::parse(text)
            .map(|key| (key, MasterKeySource::Environment))
            .map_err(|_| MasterKeyError::InvalidEnvironment),
        (None, Some(path)) => Ok((read(path)?, MasterKeySource::File(path.clone()))),
        (None, None) => {
            let path = config.data.join(DEFAULT_FILE);
            if path.exists() {
                return Ok((read(&path)?, MasterKeySource::File(path)));
            }
            if store_has_keys {
                return Err(MasterKeyError::Missing(path));
            }
            let key = MasterKey::generate().map_err(|_| MasterKeyError::Io {
                action: "create",
                path: path.clone(),
                source: std::io::Error::other("the OS random number generator failed"),
            })?;
            write_new(&path, &key)?;
            Ok((key, MasterKeySource::Generated(path)))
        }
    }
}

fn read(path: &Path) -> Result<MasterKey, MasterKeyError> {
    let text = std::fs::read_to_string(path).map_err(|source| MasterKeyError::Io {
        action: "read",
        path: path.to_owned(),
        source,
    })?;
    MasterKey::parse(&text).map_err(|_| MasterKeyError::InvalidFile(path.to_owned()))
}

/// Writes a new key file, owner-only, refusing to overwrite an existing one.
fn write_new(path: &Path, key: &MasterKey) -> Result<(), MasterKeyError> {
    let io = |source| MasterKeyError::Io {
        action: "create",
        path: path.to_owned(),
        source,
    };
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        let mut dirs = std::fs::DirBuilder::new();
        dirs.recursive(true);
        #[cfg(unix)]
        std::os::unix::fs::DirBuilderExt::mode(&mut dirs, 0o700);
        dirs.create(parent).map_err(io)?;
    }
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        // Created 0600: the key decrypts every signing key.
        options.mode(0o600);
    }
    let mut file = options.open(path).map_err(io)?;
    file.write_all(format!("{}\n", key.to_text()).as_bytes())
        .map_err(io)?;
    file.sync_all().map_err(io)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

    use super::*;

    struct Dir(PathBuf);

    impl Dir {
        fn new(name: &str) -> Dir {
            let path = std::env::temp_dir().join(format!(
                "tessera-mk-{name}-{}",
                tessera_core::random::id().unwrap()
            ));
            std::fs::create_dir_all(&path).unwrap();
            Dir(path)
        }
    }

    impl Drop for Dir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    fn config(dir: &Dir) -> Config {
        Config {
            data: dir.0.clone(),
            ..Config::default()
        }
    }

    #[test]
    fn first_start_generates_an_owner_only_key_file_and_reuses_it() {
        let dir = Dir::new("gen");
        let (key, source) = resolve(&config(&dir), None, false).unwrap();
        let path = dir.0.join(DEFAULT_FILE);
        assert_eq!(source, MasterKeySource::Generated(path.clone()));
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        let (again, source) = resolve(&config(&dir), None, true).unwrap();
        assert_eq!(source, MasterKeySource::File(path));
        assert_eq!(again.to_text(), key.to_text());
    }

    #[test]
    fn no_key_is_generated_for_a_store_that_already_has_keys() {
        let dir = Dir::new("missing");
        assert!(matches!(
            resolve(&config(&dir), None, true),
            Err(MasterKeyError::Missing(_))
        ));
        assert!(!dir.0.join(DEFAULT_FILE).exists());
    }

    #[test]
    fn environment_and_file_are_read_and_checked() {
        let dir = Dir::new("env");
        let key = MasterKey::generate().unwrap();
        let (from_env, source) = resolve(&config(&dir), Some(&key.to_text()), true).unwrap();
        assert_eq!(source, MasterKeySource::Environment);
        assert_eq!(from_env.to_text(), key.to_text());
        assert!(matches!(
            resolve(&config(&dir), Some("not a key"), true),
            Err(MasterKeyError::InvalidEnvironment)
        ));

        let file = dir.0.join("elsewhere.key");
        std::fs::write(&file, format!("{}\n", key.to_text())).unwrap();
        let with_file = Config {
            master_key_file: Some(file.clone()),
            ..config(&dir)
        };
        let (from_file, source) = resolve(&with_file, None, true).unwrap();
        assert_eq!(source, MasterKeySource::File(file.clone()));
        assert_eq!(from_file.to_text(), key.to_text());
        assert!(matches!(
            resolve(&with_file, Some(&key.to_text()), true),
            Err(MasterKeyError::Ambiguous)
        ));
        std::fs::write(&file, "garbage").unwrap();
        assert!(matches!(
            resolve(&with_file, None, true),
            Err(MasterKeyError::InvalidFile(_))
        ));
        std::fs::remove_file(&file).unwrap();
        assert!(matches!(
            resolve(&with_file, None, true),
            Err(MasterKeyError::Io { .. })
        ));
    }
}
