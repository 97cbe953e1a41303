//! Connections: standalone, Sentinel or Cluster, behind one type that runs commands and scripts.

use std::sync::Mutex;
use std::time::Duration;

use redis::aio::{ConnectionLike, ConnectionManager, ConnectionManagerConfig};
use redis::cluster::ClusterClientBuilder;
use redis::cluster_async::ClusterConnection;
use redis::sentinel::{SentinelClient, SentinelClientBuilder, SentinelServerType};
use redis::{
    ClientTlsConfig, Cmd, ConnectionAddr, Pipeline, RedisError, RedisFuture, TlsCertificates,
    TlsMode, Value,
};
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
    /// `redis://…` or `rediss://…` (TLS): one server (the redis crate parses the URL).
    Standalone(String),
    /// `redis+sentinel://[:password@]host:port[,host:port…]/master-name[/db]`, or
    /// `rediss+sentinel://…` (TLS to the sentinels and the data nodes); the sentinels' own
    /// credentials in `?sentinel_username=…&sentinel_password=…`.
    Sentinel {
        sentinels: Vec<(String, u16)>,
        master: String,
        db: i64,
        username: Option<String>,
        password: Option<String>,
        sentinel_username: Option<String>,
        sentinel_password: Option<String>,
        tls: bool,
    },
    /// `redis+cluster://[:password@]host:port[,host:port…]`, or `rediss+cluster://…` (TLS).
    Cluster {
        nodes: Vec<String>,
        username: Option<String>,
        password: Option<String>,
        tls: bool,
    },
}

impl Mode {
    /// Whether the connections use TLS.
    pub(crate) fn tls(&self) -> bool {
        match self {
            Mode::Standalone(url) => url.starts_with("rediss://"),
            Mode::Sentinel { tls, .. } | Mode::Cluster { tls, .. } => *tls,
        }
    }
}

/// TLS material for `rediss://` connections, as PEM. With no CA, the system's roots are trusted.
#[derive(Clone, Default)]
pub struct RedisTls {
    /// The CA certificate(s) that sign the servers' certificates (PEM).
    pub ca: Option<Vec<u8>>,
    /// A client certificate chain and its private key (PEM), for servers that ask for one.
    pub client: Option<(Vec<u8>, Vec<u8>)>,
}

impl std::fmt::Debug for RedisTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisTls")
            .field("ca", &self.ca.is_some())
            .field("client", &self.client.is_some())
            .finish()
    }
}

impl RedisTls {
    fn certificates(&self) -> TlsCertificates {
        TlsCertificates {
            client_tls: self
                .client
                .as_ref()
                .map(|(client_cert, client_key)| ClientTlsConfig {
                    client_cert: client_cert.clone(),
                    client_key: client_key.clone(),
                }),
            root_cert: self.ca.clone(),
        }
    }

    pub(crate) fn is_set(&self) -> bool {
        self.ca.is_some() || self.client.is_some()
    }
}

fn bad(detail: impl Into<String>) -> StoreError {
    StoreError::Corrupt(format!("bad sessions URL: {}", detail.into()))
}

/// Query parameters of the URL that tessera reads itself (the redis crate reads the others).
#[derive(Default)]
struct Params {
    sentinel_username: Option<String>,
    sentinel_password: Option<String>,
}

/// Splits `?prefix=…` (and the sentinels' credentials) off a URL; other query parameters stay
/// (the redis crate reads some).
fn split_prefix(url: &str) -> Result<(String, String, Params), StoreError> {
    let (base, query) = match url.split_once('?') {
        Some((base, query)) => (base, query),
        None => (url, ""),
    };
    let mut prefix = "tessera".to_owned();
    let mut params = Params::default();
    let mut rest = Vec::new();
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        if let Some(value) = pair.strip_prefix("prefix=") {
            prefix = value.to_owned();
        } else if let Some(value) = pair.strip_prefix("sentinel_username=") {
            params.sentinel_username = Some(value.to_owned());
        } else if let Some(value) = pair.strip_prefix("sentinel_password=") {
            params.sentinel_password = Some(value.to_owned());
        } else {
            rest.push(pair);
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
    Ok((base, prefix, params))
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
    /// Parses a `redis://`, `redis+sentinel://` or `redis+cluster://` URL, or its TLS form
    /// (`rediss://`, `rediss+sentinel://`, `rediss+cluster://`).
    pub(crate) fn parse(url: &str) -> Result<Target, StoreError> {
        let (base, prefix, params) = split_prefix(url)?;
        let sentinel = base
            .strip_prefix("redis+sentinel://")
            .map(|rest| (rest, false))
            .or_else(|| base.strip_prefix("rediss+sentinel://").map(|r| (r, true)));
        let cluster = base
            .strip_prefix("redis+cluster://")
            .map(|rest| (rest, false))
            .or_else(|| base.strip_prefix("rediss+cluster://").map(|r| (r, true)));
        if sentinel.is_none()
            && (params.sentinel_username.is_some() || params.sentinel_password.is_some())
        {
            return Err(bad(
                "sentinel_username and sentinel_password are for redis+sentinel:// URLs",
            ));
        }
        let mode = if let Some((rest, tls)) = sentinel {
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
                sentinel_username: params.sentinel_username,
                sentinel_password: params.sentinel_password,
                tls,
            }
        } else if let Some((rest, tls)) = cluster {
            let authority = rest.split(['/', '?']).next().unwrap_or("");
            let (username, password, hosts) = credentials(authority);
            let scheme = if tls { "rediss" } else { "redis" };
            let nodes = hosts
                .split(',')
                .map(|item| host_port(item).map(|(h, p)| format!("{scheme}://{h}:{p}")))
                .collect::<Result<Vec<_>, _>>()?;
            Mode::Cluster {
                nodes,
                username,
                password,
                tls,
            }
        } else if base.starts_with("redis://")
            || base.starts_with("rediss://")
            || base.starts_with("redis+unix://")
        {
            Mode::Standalone(base)
        } else {
            return Err(bad(
                "expected redis://, rediss://, redis+sentinel:// or redis+cluster:// \
                 (rediss+… for TLS)",
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
    pub(crate) async fn connect(mode: &Mode, tls: &RedisTls) -> Result<Source, RedisError> {
        match mode {
            Mode::Standalone(url) => {
                let client = if mode.tls() {
                    redis::Client::build_with_tls(url.as_str(), tls.certificates())?
                } else {
                    redis::Client::open(url.as_str())?
                };
                let manager = ConnectionManager::new_lazy_with_config(client, manager_config())?;
                Ok(Source::Fixed(Conn::Single(manager)))
            }
            Mode::Cluster {
                nodes,
                username,
                password,
                tls: with_tls,
            } => {
                let mut builder = ClusterClientBuilder::new(nodes.clone())
                    .connection_timeout(OP_TIMEOUT / 2)
                    .response_timeout(OP_TIMEOUT)
                    .retries(1);
                if *with_tls {
                    builder = builder.tls(TlsMode::Secure).certs(tls.certificates());
                }
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
                sentinel_username,
                sentinel_password,
                tls: with_tls,
            } => {
                let addrs = sentinels.iter().map(|(host, port)| {
                    if *with_tls {
                        ConnectionAddr::TcpTls {
                            host: host.clone(),
                            port: *port,
                            insecure: false,
                            tls_params: None,
                        }
                    } else {
                        ConnectionAddr::Tcp(host.clone(), *port)
                    }
                });
                let mut builder =
                    SentinelClientBuilder::new(addrs, master, SentinelServerType::Master)?
                        .set_client_to_redis_db(*db);
                if *with_tls {
                    builder = builder
                        .set_client_to_redis_tls_mode(TlsMode::Secure)
                        .set_client_to_redis_certificates(tls.certificates())
                        .set_client_to_sentinel_tls_mode(TlsMode::Secure)
                        .set_client_to_sentinel_certificates(tls.certificates());
                }
                if let Some(username) = sentinel_username {
                    builder = builder.set_client_to_sentinel_username(username);
                }
                if let Some(password) = sentinel_password {
                    builder = builder.set_client_to_sentinel_password(password);
                }
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
                sentinel_username: None,
                sentinel_password: None,
                tls: false,
            }
        );

        let t = Target::parse("redis+cluster://a:7000,b:7001?prefix=t").unwrap();
        assert_eq!(
            t.mode,
            Mode::Cluster {
                nodes: vec!["redis://a:7000".into(), "redis://b:7001".into()],
                username: None,
                password: None,
                tls: false,
            }
        );
        assert_eq!(t.prefix, "t");
    }

    #[test]
    fn tls_urls_of_every_mode_parse() {
        let t = Target::parse("rediss://cache.example:6380/1?prefix=app").unwrap();
        assert_eq!(
            t.mode,
            Mode::Standalone("rediss://cache.example:6380/1".into())
        );
        assert!(t.mode.tls());
        assert!(!Target::parse("redis://h").unwrap().mode.tls());

        let t = Target::parse("rediss+cluster://a:7000,b:7001").unwrap();
        assert_eq!(
            t.mode,
            Mode::Cluster {
                nodes: vec!["rediss://a:7000".into(), "rediss://b:7001".into()],
                username: None,
                password: None,
                tls: true,
            }
        );

        let t = Target::parse(
            "rediss+sentinel://:data@s1:26379/mymaster?sentinel_username=sen&sentinel_password=pw&prefix=p",
        )
        .unwrap();
        assert_eq!(t.prefix, "p");
        assert_eq!(
            t.mode,
            Mode::Sentinel {
                sentinels: vec![("s1".into(), 26379)],
                master: "mymaster".into(),
                db: 0,
                username: None,
                password: Some("data".into()),
                sentinel_username: Some("sen".into()),
                sentinel_password: Some("pw".into()),
                tls: true,
            }
        );
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
            "redis://h?sentinel_password=x",
            "rediss+unix:///tmp/x",
        ] {
            assert!(Target::parse(url).is_err(), "{url}");
        }
    }
}
