use std::error::Error as StdError;

use thiserror::Error;

/// Why a store operation failed.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum StoreError {
    /// The store cannot be reached or did not answer in time. Requests fail closed with 503;
    /// this is never reported to a client as an authentication failure.
    #[error("store unavailable")]
    Unavailable(#[source] Box<dyn StdError + Send + Sync>),
    /// A unique value (username, id) is already taken.
    #[error("already exists")]
    Conflict,
    /// Stored data could not be read back (a bug or a hand-edited database).
    #[error("stored data is invalid: {0}")]
    Corrupt(String),
}
