use std::path::PathBuf;
use std::sync::Arc;

use tessera_store::conformance::{Fixture, test_service_url};
use tessera_store::{SessionStore, SplitStore, Store};
use tessera_store_postgres::{PgStore, TestSchema};
use tessera_store_sqlite::SqliteStore;

use super::RedisSessions;

fn redis_url() -> Option<String> {
    test_service_url("TESSERA_TEST_REDIS_URL")
}

/// Keys under a random prefix of the test Redis, deleted when dropped.
struct TestPrefix {
    base: String,
    prefix: String,
}

impl TestPrefix {
    fn new(base: &str) -> TestPrefix {
        TestPrefix {
            base: base.to_owned(),
            prefix: format!("tessera-test-{}", tessera_core::random::id().unwrap()),
        }
    }

    fn url(&self) -> String {
        format!("{}?prefix={}", self.base, self.prefix)
    }

    fn keys(&self) -> Vec<String> {
        let client = redis::Client::open(self.base.as_str()).unwrap();
        let mut conn = client.get_connection().unwrap();
        let pattern = format!("{}:*", self.prefix);
        redis::cmd("KEYS").arg(pattern).query(&mut conn).unwrap()
    }
}

impl Drop for TestPrefix {
    fn drop(&mut self) {
        let Ok(client) = redis::Client::open(self.base.as_str()) else {
            return;
        };
        let Ok(mut conn) = client.get_connection() else {
            return;
        };
        let keys: Vec<String> = redis::cmd("KEYS")
            .arg(format!("{}:*", self.prefix))
            .query(&mut conn)
            .unwrap_or_default();
        if !keys.is_empty() {
            let _: Result<(), _> = redis::cmd("DEL").arg(keys).query(&mut conn);
        }
    }
}

struct TempDir(PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Sessions in Redis, users and keys in a durable store. Fields drop in order: the store
/// first, then what it lives in.
struct SplitFixture {
    store: SplitStore,
    _prefix: TestPrefix,
    _schema: Option<TestSchema>,
    _dir: Option<TempDir>,
}

impl Fixture for SplitFixture {
    fn store(&self) -> &dyn Store {
        &self.store
    }
}

async fn with_sqlite() -> Option<SplitFixture> {
    let prefix = TestPrefix::new(&redis_url()?);
    let dir = TempDir(std::env::temp_dir().join(format!(
        "tessera-redis-{}",
        tessera_core::random::id().unwrap()
    )));
    let durable = SqliteStore::open(&dir.0.join("tessera.db")).unwrap();
    let sessions = RedisSessions::connect(&prefix.url()).await.unwrap();
    Some(SplitFixture {
        store: SplitStore::new(Arc::new(durable), Arc::new(sessions)),
        _prefix: prefix,
        _schema: None,
        _dir: Some(dir),
    })
}

async fn with_postgres() -> Option<SplitFixture> {
    let redis = redis_url()?;
    let database = test_service_url("TESSERA_TEST_DATABASE_URL")?;
    let prefix = TestPrefix::new(&redis);
    let schema = TestSchema::create(&database).await.unwrap();
    let durable = PgStore::open(schema.url()).await.unwrap();
    let sessions = RedisSessions::connect(&prefix.url()).await.unwrap();
    Some(SplitFixture {
        store: SplitStore::new(Arc::new(durable), Arc::new(sessions)),
        _prefix: prefix,
        _schema: Some(schema),
        _dir: None,
    })
}

mod redis_and_sqlite {
    tessera_store::store_conformance_tests!(optional super::with_sqlite);
}

mod redis_and_postgres {
    tessera_store::store_conformance_tests!(optional super::with_postgres);
}

fn ttl_of(base: &str, key: &str) -> i64 {
    let client = redis::Client::open(base).unwrap();
    let mut conn = client.get_connection().unwrap();
    redis::cmd("TTL").arg(key).query(&mut conn).unwrap()
}

/// Redis holds a session only until it ends (plus the retention): the TTL of the session key
/// follows the idle expiry as it slides, and revocation shortens it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn session_keys_expire_with_the_session() {
    use tessera_core::session::{SessionPolicy, Touch};
    use tessera_store::{NewSession, Session};

    let Some(base) = redis_url() else { return };
    let prefix = TestPrefix::new(&base);
    let store = RedisSessions::connect(&prefix.url()).await.unwrap();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    let policy = SessionPolicy {
        idle_timeout: 1800,
        absolute_timeout: 43200,
        activity_write_interval: 60,
    };
    let id = tessera_core::random::id().unwrap();
    store
        .create_session(&NewSession {
            session: Session {
                id: id.clone(),
                user_id: "u1".into(),
                times: policy.start(now),
                ip: None,
                user_agent: None,
            },
            access_hash: Some(tessera_core::opaque::TokenHash::of("tsr_x")),
            refresh_hash: None,
        })
        .await
        .unwrap();
    let key = store.session_key(&id);
    let retention = super::ENDED_SESSION_RETENTION;
    let ttl = ttl_of(&base, &key);
    assert!(
        (1800 + retention - 5..=1800 + retention).contains(&ttl),
        "{ttl}"
    );

    store
        .touch_session(
            &id,
            Touch {
                last_seen_at: now + 600,
                idle_expires_at: now + 2400,
            },
        )
        .await
        .unwrap();
    let ttl = ttl_of(&base, &key);
    assert!(
        (2400 + retention - 5..=2400 + retention).contains(&ttl),
        "{ttl}"
    );

    assert!(store.revoke_session(&id, now).await.unwrap());
    let ttl = ttl_of(&base, &key);
    assert!((retention - 5..=retention).contains(&ttl), "{ttl}");

    // Every key of the prefix carries a TTL except the all-sessions index.
    for key in prefix.keys() {
        let ttl = ttl_of(&base, &key);
        if key.ends_with(":all") {
            assert_eq!(ttl, -1);
        } else {
            assert!(ttl > 0, "{key} has TTL {ttl}");
        }
    }

    // A session created already ended is not kept at all.
    let dead = tessera_core::random::id().unwrap();
    store
        .create_session(&NewSession {
            session: Session {
                id: dead.clone(),
                user_id: "u1".into(),
                times: policy.start(now - 50_000),
                ip: None,
                user_agent: None,
            },
            access_hash: None,
            refresh_hash: None,
        })
        .await
        .unwrap();
    assert_eq!(store.session_by_id(&dead).await.unwrap(), None);
}

/// Sessions of two deployments sharing a Redis under different prefixes never meet.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prefixes_keep_deployments_apart() {
    let Some(base) = redis_url() else { return };
    let (p1, p2) = (TestPrefix::new(&base), TestPrefix::new(&base));
    let a = RedisSessions::connect(&p1.url()).await.unwrap();
    let b = RedisSessions::connect(&p2.url()).await.unwrap();
    let now = 1_900_000_000;
    a.hit_counter("k", now, 60).await.unwrap();
    assert_eq!(b.counter("k", now, 60).await.unwrap(), None);
    assert_eq!(
        a.counter("k", now, 60).await.unwrap().map(|c| c.count),
        Some(1)
    );
}

/// With nothing listening, operations fail as unavailable within about a second.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_redis_fails_closed() {
    let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = silent.local_addr().unwrap().port();
    let _hold = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((socket, _)) = silent.accept().await {
            held.push(socket);
        }
    });
    let started = std::time::Instant::now();
    let error = RedisSessions::connect(&format!("redis://127.0.0.1:{port}"))
        .await
        .unwrap_err();
    assert!(
        matches!(error, tessera_store::StoreError::Unavailable(_)),
        "{error:?}"
    );
    assert!(started.elapsed() < std::time::Duration::from_millis(2500));
}
