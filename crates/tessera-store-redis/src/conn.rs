//! Connections: standalone, Sentinel or Cluster, behind one type that runs commands and scripts.

use std::sync::Mutex;
use std::time::Duration;

use redis::aio::{ConnectionLike, ConnectionManager, ConnectionManagerConfig};
use redis::cluster::ClusterClientBuilder;
use redis::cluster_async::ClusterConnection;
use redis::sentinel::{SentinelClient, SentinelClientBuilder, SentinelServerType};
use redis::{Cmd, ConnectionAddr, Pipeline, RedisError, RedisFuture, Value};
use tessera_store::StoreError;

use crate::OP_TIMEOUT;

/// Where the sessions live, parsed from the `sessions` URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Target {
    pub(crate) mode: Mode,
    /// Key prefix (no braces: they would change the cluster slot of keys).
    pub(crate) prefix: String,
}

/// How to reach Redis.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Mode {
    /// `redis://…`: one server (the redis crate parses the URL).
    Standalone(String),
    /// `redis+sentinel://[:password@]host:port[,host:port…]/master-name[/db]`.
    Sentinel {
        sentinels: Vec<(String, u16)>,
        master: String,
        db: i64,
        username: Option<String>,
        password: Option<String>,
    },
    /// `redis+cluster://[:password@]host:port[,host:port…]`.
    Cluster {
        nodes: Vec<String>,
        username: Option<String>,
        password: Option<String>,
    },
}

fn bad(detail: impl Into<String>) -> StoreError {
    StoreError::Corrupt(format!("bad sessions URL: {}", detail.into()))
}

/// Splits `?prefix=…` off a URL; other query parameters stay (the redis crate reads some).
fn split_prefix(url: &str) -> Result<(String, String), StoreError> {
    let (base, query) = match url.split_once('?') {
        Some((base, query)) => (base, query),
        None => (url, ""),
    };
    let mut prefix = "tessera".to_owned();
    let mut rest = Vec::new();
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        match pair.strip_prefix("prefix=") {
            Some(value) => prefix = value.to_owned(),
            None => rest.push(pair),
        }
    }
    if prefix.is_empty() || prefix.contains(['{', '}']) || prefix.len() > 64 {
        return Err(bad("prefix must be 1 to 64 characters without braces"));
    }
    let base = if rest.is_empty() {
        base.to_owned()
    } else {
        format!("{base}?{}", rest.join("&"))
    };
    Ok((base, prefix))
}

/// `user:password@hosts`, split.
fn credentials(authority: &str) -> (Option<String>, Option<String>, &str) {
    match authority.rsplit_once('@') {
        Some((creds, hosts)) => {
            let (user, password) = match creds.split_once(':') {
                Some((user, password)) => (user, Some(password.to_owned())),
                None => (creds, None),
            };
            let user = Some(user.to_owned()).filter(|u| !u.is_empty());
            (user, password, hosts)
        }
        None => (None, None, authority),
    }
}

fn host_port(item: &str) -> Result<(String, u16), StoreError> {
    let (host, port) = item
        .rsplit_once(':')
        .ok_or_else(|| bad(format!("{item:?} is not host:port")))?;
    let port = port
        .parse()
        .map_err(|_| bad(format!("{item:?} has no valid port")))?;
    Ok((host.trim_matches(['[', ']']).to_owned(), port))
}

impl Target {
    /// Parses a `redis://`, `redis+sentinel://` or `redis+cluster://` URL.
    pub(crate) fn parse(url: &str) -> Result<Target, StoreError> {
        let (base, prefix) = split_prefix(url)?;
        let mode = if let Some(rest) = base.strip_prefix("redis+sentinel://") {
            let (authority, path) = rest.split_once('/').unwrap_or((rest, ""));
            let (username, password, hosts) = credentials(authority);
            let sentinels = hosts
                .split(',')
                .map(host_port)
                .collect::<Result<Vec<_>, _>>()?;
            let mut segments = path.split('/').filter(|s| !s.is_empty());
            let master = segments
                .next()
                .ok_or_else(|| bad("redis+sentinel:// needs the master name as its path"))?
                .to_owned();
            let db = match segments.next() {
                Some(db) => db
                    .parse()
                    .map_err(|_| bad("the database must be a number"))?,
                None => 0,
            };
            Mode::Sentinel {
                sentinels,
                master,
                db,
                username,
                password,
            }
        } else if let Some(rest) = base.strip_prefix("redis+cluster://") {
            let authority = rest.split(['/', '?']).next().unwrap_or("");
            let (username, password, hosts) = credentials(authority);
            let nodes = hosts
                .split(',')
                .map(|item| host_port(item).map(|(h, p)| format!("redis://{h}:{p}")))
                .collect::<Result<Vec<_>, _>>()?;
            Mode::Cluster {
                nodes,
                username,
                password,
            }
        } else if base.starts_with("redis://") || base.starts_with("redis+unix://") {
            Mode::Standalone(base)
        } else {
            return Err(bad(
                "expected redis://, redis+sentinel:// or redis+cluster://",
            ));
        };
        Ok(Target { mode, prefix })
    }
}

/// The reconnecting connection's settings: short timeouts, so an outage fails fast (closed).
fn manager_config() -> ConnectionManagerConfig {
    ConnectionManagerConfig::new()
        .set_connection_timeout(Some(OP_TIMEOUT / 2))
        .set_response_timeout(Some(OP_TIMEOUT))
        .set_number_of_retries(1)
        .set_min_delay(Duration::from_millis(50))
        .set_max_delay(Duration::from_millis(500))
}

/// One connection handle of any mode; cheap to clone, multiplexed.
#[derive(Clone)]
pub(crate) enum Conn {
    Single(ConnectionManager),
    Cluster(ClusterConnection),
}

impl ConnectionLike for Conn {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            Conn::Single(c) => c.req_packed_command(cmd),
            Conn::Cluster(c) => c.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            Conn::Single(c) => c.req_packed_commands(pipeline, offset, count),
            Conn::Cluster(c) => c.req_packed_commands(pipeline, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Conn::Single(c) => c.get_db(),
            Conn::Cluster(c) => c.get_db(),
        }
    }
}

/// The connection source of a store.
pub(crate) enum Source {
    Fixed(Conn),
    /// The master as the sentinels name it now; re-asked after a connection failure, so a
    /// failover is followed.
    Sentinel(Box<SentinelSource>),
}

/// The Sentinel client and the master connection in use.
pub(crate) struct SentinelSource {
    client: tokio::sync::Mutex<SentinelClient>,
    current: Mutex<Option<ConnectionManager>>,
}

impl Source {
    pub(crate) async fn connect(mode: &Mode) -> Result<Source, RedisError> {
        match mode {
            Mode::Standalone(url) => {
                let client = redis::Client::open(url.as_str())?;
                let manager = ConnectionManager::new_lazy_with_config(client, manager_config())?;
                Ok(Source::Fixed(Conn::Single(manager)))
            }
            Mode::Cluster {
                nodes,
                username,
                password,
            } => {
                let mut builder = ClusterClientBuilder::new(nodes.clone())
                    .connection_timeout(OP_TIMEOUT / 2)
                    .response_timeout(OP_TIMEOUT)
                    .retries(1);
                if let Some(username) = username {
                    builder = builder.username(username.clone());
                }
                if let Some(password) = password {
                    builder = builder.password(password.clone());
                }
                let connection = builder.build()?.get_async_connection().await?;
                Ok(Source::Fixed(Conn::Cluster(connection)))
            }
            Mode::Sentinel {
                sentinels,
                master,
                db,
                username,
                password,
            } => {
                let addrs = sentinels
                    .iter()
                    .map(|(host, port)| ConnectionAddr::Tcp(host.clone(), *port));
                let mut builder =
                    SentinelClientBuilder::new(addrs, master, SentinelServerType::Master)?
                        .set_client_to_redis_db(*db);
                if let Some(username) = username {
                    builder = builder.set_client_to_redis_username(username);
                }
                if let Some(password) = password {
                    builder = builder.set_client_to_redis_password(password);
                }
                Ok(Source::Sentinel(Box::new(SentinelSource {
                    client: tokio::sync::Mutex::new(builder.build()?),
                    current: Mutex::new(None),
                })))
            }
        }
    }

    /// A connection to use now.
    pub(crate) async fn get(&self) -> Result<Conn, RedisError> {
        match self {
            Source::Fixed(conn) => Ok(conn.clone()),
            Source::Sentinel(sentinel) => {
                let SentinelSource { client, current } = sentinel.as_ref();
                if let Some(manager) = lock(current).clone() {
                    return Ok(Conn::Single(manager));
                }
                let master = client.lock().await.async_get_client().await?;
                let manager = ConnectionManager::new_with_config(master, manager_config()).await?;
                *lock(current) = Some(manager.clone());
                Ok(Conn::Single(manager))
            }
        }
    }

    /// Forgets the Sentinel master after a failure that may mean it moved.
    pub(crate) fn failed(&self, error: &RedisError) {
        if let Source::Sentinel(sentinel) = self {
            let moved = error.is_io_error()
                || error.is_connection_dropped()
                || error.is_connection_refusal()
                || error.is_timeout()
                || error.code() == Some("READONLY");
            if moved {
                *lock(&sentinel.current) = None;
            }
        }
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;

    #[test]
    fn urls_of_every_mode_parse() {
        let t = Target::parse("redis://127.0.0.1:6379/2?prefix=app1").unwrap();
        assert_eq!(t.prefix, "app1");
        assert_eq!(t.mode, Mode::Standalone("redis://127.0.0.1:6379/2".into()));
        assert_eq!(
            Target::parse("redis://h").unwrap().prefix,
            "tessera",
            "default prefix"
        );

        let t = Target::parse("redis+sentinel://:s3cret@10.0.0.1:26379,10.0.0.2:26379/mymaster/1")
            .unwrap();
        assert_eq!(
            t.mode,
            Mode::Sentinel {
                sentinels: vec![("10.0.0.1".into(), 26379), ("10.0.0.2".into(), 26379)],
                master: "mymaster".into(),
                db: 1,
                username: None,
                password: Some("s3cret".into()),
            }
        );

        let t = Target::parse("redis+cluster://a:7000,b:7001?prefix=t").unwrap();
        assert_eq!(
            t.mode,
            Mode::Cluster {
                nodes: vec!["redis://a:7000".into(), "redis://b:7001".into()],
                username: None,
                password: None,
            }
        );
        assert_eq!(t.prefix, "t");
    }

    #[test]
    fn bad_urls_are_refused() {
        for url in [
            "http://x",
            "redis+sentinel://h:1",
            "redis+cluster://nohost",
            "redis+cluster://h:port",
            "redis://h?prefix={x}",
            "redis://h?prefix=",
        ] {
            assert!(Target::parse(url).is_err(), "{url}");
        }
    }
}
