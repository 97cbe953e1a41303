//! How SQLite failures become [`StoreError`]s.

use rusqlite::ErrorCode;
use rusqlite::ffi;
use tessera_store::StoreError;

/// A failure inside a blocking store operation, converted to a [`StoreError`] at the boundary.
#[derive(Debug)]
pub(crate) enum Failure {
    /// An error from SQLite or rusqlite.
    Sql(rusqlite::Error),
    /// Stored data that does not make sense (detected by our code rather than by rusqlite).
    Corrupt(String),
    /// The operating system failed us outside SQLite (creating the data directory).
    Io(std::io::Error),
}

impl From<rusqlite::Error> for Failure {
    fn from(error: rusqlite::Error) -> Self {
        Failure::Sql(error)
    }
}

impl From<std::io::Error> for Failure {
    fn from(error: std::io::Error) -> Self {
        Failure::Io(error)
    }
}

impl From<Failure> for StoreError {
    fn from(failure: Failure) -> Self {
        match failure {
            Failure::Sql(error) => from_sqlite(error),
            Failure::Corrupt(what) => StoreError::Corrupt(what),
            Failure::Io(error) => StoreError::Unavailable(Box::new(error)),
        }
    }
}

/// Maps a rusqlite error.
///
/// * a UNIQUE or PRIMARY KEY violation is a [`StoreError::Conflict`];
/// * values that cannot be read back as the type we stored, and a malformed database file, are
///   [`StoreError::Corrupt`];
/// * everything else (busy or locked past the busy timeout, I/O errors, a full disk, a file that
///   cannot be opened, and anything unexpected) is [`StoreError::Unavailable`], so callers fail
///   closed with a 503 and retry later, never treat it as an authentication answer.
fn from_sqlite(error: rusqlite::Error) -> StoreError {
    match &error {
        rusqlite::Error::SqliteFailure(code, _) => match code.code {
            ErrorCode::ConstraintViolation
                if code.extended_code == ffi::SQLITE_CONSTRAINT_UNIQUE
                    || code.extended_code == ffi::SQLITE_CONSTRAINT_PRIMARYKEY =>
            {
                StoreError::Conflict
            }
            ErrorCode::ConstraintViolation => StoreError::Corrupt(error.to_string()),
            ErrorCode::DatabaseCorrupt | ErrorCode::NotADatabase => {
                StoreError::Corrupt(error.to_string())
            }
            _ => StoreError::Unavailable(Box::new(error)),
        },
        rusqlite::Error::FromSqlConversionFailure(..)
        | rusqlite::Error::IntegralValueOutOfRange(..)
        | rusqlite::Error::Utf8Error(..)
        | rusqlite::Error::InvalidColumnType(..) => StoreError::Corrupt(error.to_string()),
        _ => StoreError::Unavailable(Box::new(error)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sqlite(extended_code: i32) -> rusqlite::Error {
        rusqlite::Error::SqliteFailure(ffi::Error::new(extended_code), None)
    }

    #[test]
    fn unique_and_primary_key_violations_are_conflicts() {
        for code in [
            ffi::SQLITE_CONSTRAINT_UNIQUE,
            ffi::SQLITE_CONSTRAINT_PRIMARYKEY,
        ] {
            assert!(matches!(from_sqlite(sqlite(code)), StoreError::Conflict));
        }
        assert!(matches!(
            from_sqlite(sqlite(ffi::SQLITE_CONSTRAINT_FOREIGNKEY)),
            StoreError::Corrupt(_)
        ));
    }

    #[test]
    fn busy_locked_and_io_errors_are_unavailable() {
        for code in [
            ffi::SQLITE_BUSY,
            ffi::SQLITE_LOCKED,
            ffi::SQLITE_IOERR,
            ffi::SQLITE_IOERR_FSYNC,
            ffi::SQLITE_FULL,
            ffi::SQLITE_CANTOPEN,
        ] {
            assert!(
                matches!(from_sqlite(sqlite(code)), StoreError::Unavailable(_)),
                "{code}"
            );
        }
    }

    #[test]
    fn unreadable_data_is_corrupt() {
        assert!(matches!(
            from_sqlite(sqlite(ffi::SQLITE_CORRUPT)),
            StoreError::Corrupt(_)
        ));
        assert!(matches!(
            from_sqlite(rusqlite::Error::IntegralValueOutOfRange(0, -1)),
            StoreError::Corrupt(_)
        ));
    }
}
