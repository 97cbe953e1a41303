//! How PostgreSQL and pool failures become [`StoreError`]s.

use tessera_store::StoreError;
use tokio_postgres::error::SqlState;

/// A failure inside the store, before it is reported.
#[derive(Debug)]
pub(crate) enum Failure {
    /// The database cannot be reached or did not answer in time.
    Unavailable(Box<dyn std::error::Error + Send + Sync>),
    /// A unique constraint was violated.
    Conflict,
    /// Stored data or the schema is not what this build expects.
    Corrupt(String),
}

impl From<Failure> for StoreError {
    fn from(failure: Failure) -> StoreError {
        match failure {
            Failure::Unavailable(source) => StoreError::Unavailable(source),
            Failure::Conflict => StoreError::Conflict,
            Failure::Corrupt(detail) => StoreError::Corrupt(detail),
        }
    }
}

/// Classifies a driver error.
pub(crate) fn pg(error: tokio_postgres::Error) -> Failure {
    let Some(db) = error.as_db_error() else {
        // No server error: the connection broke, timed out, or a value did not convert. A
        // conversion failure means the stored data is not what we wrote.
        if error.is_closed() || std::error::Error::source(&error).is_some_and(is_io) {
            return Failure::Unavailable(Box::new(error));
        }
        if error.to_string().contains("error deserializing") {
            return Failure::Corrupt(error.to_string());
        }
        return Failure::Unavailable(Box::new(error));
    };
    let code = db.code();
    if *code == SqlState::UNIQUE_VIOLATION {
        return Failure::Conflict;
    }
    // Connection exceptions (08), insufficient resources (53), operator intervention such as a
    // shutdown (57), system errors (58) and transaction rollbacks (40: serialization failures,
    // deadlocks) are conditions of the server, not of the data: fail closed and retry later.
    let class = code.code().get(..2).unwrap_or("");
    if matches!(class, "08" | "53" | "57" | "58" | "40") {
        return Failure::Unavailable(Box::new(error));
    }
    Failure::Corrupt(format!("{}: {}", code.code(), db.message()))
}

fn is_io(source: &(dyn std::error::Error + 'static)) -> bool {
    source.is::<std::io::Error>()
}

/// A pool failure: no connection could be had in time.
pub(crate) fn pool(error: deadpool_postgres::PoolError) -> Failure {
    match error {
        deadpool_postgres::PoolError::Backend(e) => pg(e),
        other => Failure::Unavailable(Box::new(other)),
    }
}
