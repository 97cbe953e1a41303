//! The typed values of configuration keys, each read once when the configuration loads.

use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// The durable store (`store`), read once at load.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub enum StoreUrl {
    /// `sqlite://PATH`; `sqlite://` alone is `tessera.db` in the data directory.
    Sqlite(Option<PathBuf>),
    /// `postgres://…` or `postgresql://…`, a libpq URL handed whole to the driver.
    Postgres(String),
}

impl TryFrom<String> for StoreUrl {
    type Error = String;

    fn try_from(url: String) -> Result<Self, String> {
        if let Some(path) = url.strip_prefix("sqlite://") {
            return Ok(StoreUrl::Sqlite(
                (!path.is_empty()).then(|| PathBuf::from(path)),
            ));
        }
        if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            return Ok(StoreUrl::Postgres(url));
        }
        Err("store must be sqlite://PATH or postgres://…".to_owned())
    }
}

impl From<StoreUrl> for String {
    fn from(url: StoreUrl) -> String {
        match url {
            StoreUrl::Sqlite(None) => "sqlite://".to_owned(),
            StoreUrl::Sqlite(Some(path)) => format!("sqlite://{}", path.display()),
            StoreUrl::Postgres(url) => url,
        }
    }
}

/// Where sessions live (`sessions`), read once at load.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub enum SessionsUrl {
    /// `same`: in the durable store.
    Same,
    /// `redis://…`, `redis+sentinel://…` or `redis+cluster://…` (`rediss…` with TLS), handed
    /// whole to the Redis store.
    Redis(String),
}

impl TryFrom<String> for SessionsUrl {
    type Error = String;

    fn try_from(url: String) -> Result<Self, String> {
        if url == "same" {
            return Ok(SessionsUrl::Same);
        }
        if [
            "redis://",
            "redis+sentinel://",
            "redis+cluster://",
            "rediss://",
            "rediss+sentinel://",
            "rediss+cluster://",
        ]
        .iter()
        .any(|scheme| url.starts_with(scheme))
        {
            return Ok(SessionsUrl::Redis(url));
        }
        Err(
            "sessions must be \"same\", redis://…, redis+sentinel://… or redis+cluster://… \
             (rediss://… for TLS)"
                .to_owned(),
        )
    }
}

impl From<SessionsUrl> for String {
    fn from(url: SessionsUrl) -> String {
        match url {
            SessionsUrl::Same => "same".to_owned(),
            SessionsUrl::Redis(url) => url,
        }
    }
}

/// A configuration secret: never printed by `Debug`.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Secret(pub(super) String);

impl Secret {
    /// The secret value.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(***)")
    }
}

/// A configured duration as the whole seconds the service counts in (durations load as whole
/// seconds; one beyond `i64::MAX` seconds saturates).
pub fn whole_seconds(duration: Duration) -> i64 {
    i64::try_from(duration.as_secs()).unwrap_or(i64::MAX)
}

/// Serde for duration keys: an integer is seconds (the original form), a string has units
/// (`"90s"`, `"30m"`, `"12h"`, `"1h 30m"`) as `humantime` reads them. Written back with units.
pub(super) mod duration {
    use std::fmt;
    use std::time::Duration;

    use serde::de::{self, Deserializer, Visitor};
    use serde::ser::Serializer;

    pub(in crate::config) fn serialize<S: Serializer>(
        value: &Duration,
        s: S,
    ) -> Result<S::Ok, S::Error> {
        s.collect_str(&humantime::format_duration(*value))
    }

    pub(in crate::config) fn deserialize<'de, D: Deserializer<'de>>(
        d: D,
    ) -> Result<Duration, D::Error> {
        d.deserialize_any(DurationVisitor)
    }

    struct DurationVisitor;

    impl Visitor<'_> for DurationVisitor {
        type Value = Duration;

        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a duration such as \"30m\", \"12h\" or \"10s\", or whole seconds")
        }

        fn visit_u64<E: de::Error>(self, seconds: u64) -> Result<Duration, E> {
            Ok(Duration::from_secs(seconds))
        }

        fn visit_i64<E: de::Error>(self, seconds: i64) -> Result<Duration, E> {
            u64::try_from(seconds)
                .map(Duration::from_secs)
                .map_err(|_| E::custom(format_args!("a duration cannot be negative ({seconds})")))
        }

        fn visit_str<E: de::Error>(self, text: &str) -> Result<Duration, E> {
            let duration = humantime::parse_duration(text).map_err(|e| {
                E::custom(format_args!(
                    "invalid duration {text:?} ({e}); write e.g. \"30m\", \"12h\", \"10s\" or whole seconds"
                ))
            })?;
            // Sessions, tokens and lockouts count whole seconds: refuse rather than round.
            if duration.subsec_nanos() != 0 {
                return Err(E::custom(format_args!(
                    "invalid duration {text:?}: durations are whole seconds"
                )));
            }
            Ok(duration)
        }
    }
}

/// Serde for `jwt_algorithm`: the exact JOSE name, as [`Algorithm`]'s `FromStr` reads it.
pub(super) mod algorithm_name {
    use serde::de::{Deserialize, Deserializer, Error};
    use serde::ser::Serializer;
    use tessera_core::keys::Algorithm;

    pub(in crate::config) fn serialize<S: Serializer>(
        value: &Algorithm,
        s: S,
    ) -> Result<S::Ok, S::Error> {
        s.serialize_str(value.jose_name())
    }

    pub(in crate::config) fn deserialize<'de, D: Deserializer<'de>>(
        d: D,
    ) -> Result<Algorithm, D::Error> {
        let name = String::deserialize(d)?;
        // No fallback: an unknown name (`none`, `eddsa`) stops the server at load.
        name.parse()
            .map_err(|e| D::Error::custom(format_args!("{name:?}: {e}")))
    }
}
