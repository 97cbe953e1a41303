//! Redis: sessions under a key prefix of the run's own (its keys are deleted afterwards, error
//! or not), users and keys in a fresh SQLite database, composed by `ByAbility::split` as the
//! server composes them. Sessions go in by pipelined commands, 10 000 sessions per round trip,
//! writing the keys `RedisSessions::create_session` writes, with the same values and expiry
//! times (without its scripts' existence checks, which write nothing).
//!
//! The size is Redis's `used_memory` (INFO memory: the allocator's view of the data, not the
//! process's resident size), for the whole server: other clients' keys count too.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

use anyhow::{Context, Result, bail, ensure};
use tessera_core::opaque::TokenHash;
use tessera_store::{ByAbility, NewSession, SessionStore, Store};
use tessera_store_redis::{ENDED_SESSION_RETENTION, RedisSessions};
use tessera_store_sqlite::SqliteStore;

use super::Backend;

/// Sessions per pipeline.
const PIPELINE: usize = 10_000;

/// The split store and a plain connection for seeding, sizing and cleaning up.
pub(super) struct Redis {
    sessions: Arc<RedisSessions>,
    store: Arc<dyn Store>,
    conn: redis::Connection,
    /// For the raw lookups: a connection and the store's lookup script.
    raw: redis::aio::MultiplexedConnection,
    raw_script: redis::Script,
    prefix: String,
    /// The expiry last given to each user's index, to extend it as the store's script does.
    user_index_until: HashMap<String, i64>,
}

impl Redis {
    /// Connects to the standalone Redis of `url` (`redis://host:port[/db]`, no prefix: the run
    /// picks its own) and creates `dir/tessera.db` for the users, replacing an existing one.
    pub(super) async fn open(url: &str, dir: &Path) -> Result<Redis> {
        if !url.starts_with("redis://") || url.contains('?') {
            bail!("--redis-url must be a plain redis://host:port[/db] URL");
        }
        let prefix = format!("tessera-scale-{}", tessera_core::random::id()?);
        let client = redis::Client::open(url)?;
        let conn = client.get_connection().context("cannot connect to Redis")?;
        let raw = client.get_multiplexed_async_connection().await?;
        std::fs::create_dir_all(dir)?;
        let db = dir.join("tessera.db");
        for suffix in ["", "-wal", "-shm"] {
            let _ = std::fs::remove_file(format!("{}{suffix}", db.display()));
        }
        let durable: Arc<dyn Store> = Arc::new(SqliteStore::open(&db)?);
        let sessions = Arc::new(
            RedisSessions::connect(&format!("{url}?prefix={prefix}"), durable.clone()).await?,
        );
        Ok(Redis {
            store: Arc::new(ByAbility::split(durable, sessions.clone())),
            sessions,
            conn,
            raw,
            raw_script: redis::Script::new(tessera_store_redis::LOOKUP_BY_ACCESS_SCRIPT),
            prefix,
            user_index_until: HashMap::new(),
        })
    }

    /// Deletes every key under the run's prefix.
    fn clean(&mut self) -> Result<()> {
        let pattern = format!("{}:*", self.prefix);
        let mut cursor = 0u64;
        loop {
            let (next, keys): (u64, Vec<String>) = redis::cmd("SCAN")
                .arg(cursor)
                .arg("MATCH")
                .arg(&pattern)
                .arg("COUNT")
                .arg(10_000)
                .query(&mut self.conn)?;
            if !keys.is_empty() {
                redis::cmd("UNLINK").arg(keys).query::<()>(&mut self.conn)?;
            }
            if next == 0 {
                return Ok(());
            }
            cursor = next;
        }
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        if let Err(error) = self.clean() {
            eprintln!(
                "warning: keys under {}:* may be left in Redis: {error}",
                self.prefix
            );
        }
    }
}

impl Backend for Redis {
    const SIZE_OF: &'static str = "Redis used_memory (INFO memory)";

    fn store(&self) -> Arc<dyn Store> {
        Arc::clone(&self.store)
    }

    async fn size(&mut self) -> Result<u64> {
        let info: String = redis::cmd("INFO").arg("memory").query(&mut self.conn)?;
        info.lines()
            .find_map(|line| line.strip_prefix("used_memory:"))
            .and_then(|v| v.trim().parse().ok())
            .context("INFO memory without used_memory")
    }

    async fn write(&mut self, batch: &[NewSession]) -> Result<()> {
        let p = &self.prefix;
        for chunk in batch.chunks(PIPELINE) {
            let mut pipe = redis::pipe();
            for new in chunk {
                ensure!(new.refresh_hash.is_none(), "refresh tokens are not seeded");
                let (s, t) = (&new.session, &new.session.times);
                // As `RedisSessions::create_session`: pointer, user index, global index, then
                // the session hash with its fields in the same order.
                let pointer_until = t
                    .absolute_expires_at
                    .saturating_add(ENDED_SESSION_RETENTION);
                let fields = tessera_store_redis::session_fields(new);
                if let Some(access) = &new.access_hash {
                    let hex = tessera_store_redis::hex(access);
                    pipe.cmd("SET")
                        .arg(format!("{p}:a:{hex}"))
                        .arg(s.id.as_str())
                        .arg("EXAT")
                        .arg(pointer_until.max(1))
                        .ignore();
                }
                pipe.cmd("ZADD")
                    .arg(format!("{p}:u:{}", s.user_id))
                    .arg(t.absolute_expires_at)
                    .arg(s.id.as_str())
                    .ignore();
                let until = self
                    .user_index_until
                    .entry(s.user_id.to_string())
                    .or_default();
                *until = (*until).max(pointer_until);
                pipe.cmd("ZADD")
                    .arg(format!("{p}:all"))
                    .arg(t.absolute_expires_at)
                    .arg(s.id.as_str())
                    .ignore();
                let key = format!("{p}:s:{{{}}}", s.id);
                let end = t.idle_expires_at.min(t.absolute_expires_at);
                let end = t.revoked_at.map_or(end, |r| end.min(r));
                pipe.cmd("HSET").arg(&key).arg(&fields).ignore();
                pipe.cmd("EXPIREAT")
                    .arg(&key)
                    .arg(end.saturating_add(ENDED_SESSION_RETENTION))
                    .ignore();
            }
            pipe.query::<()>(&mut self.conn)?;
        }
        // A user's index lives as long as its longest-lived session.
        let mut pipe = redis::pipe();
        for (user, until) in &self.user_index_until {
            pipe.cmd("EXPIREAT")
                .arg(format!("{p}:u:{user}"))
                .arg(*until)
                .ignore();
        }
        pipe.query::<()>(&mut self.conn)?;
        Ok(())
    }

    async fn lookup(&self, hash: &TokenHash) -> Result<bool> {
        Ok(self.sessions.session_by_access_hash(hash).await?.is_some())
    }

    async fn raw_lookup(&self, hash: &TokenHash) -> Result<Option<bool>> {
        // The store's script with the store's keys, on a multiplexed connection of its own
        // (the store's connection manager wraps one), by EVALSHA once loaded.
        let hex = tessera_store_redis::hex(hash);
        let mut conn = self.raw.clone();
        let reply: Vec<Vec<u8>> = self
            .raw_script
            .key(format!("{}:a:{hex}", self.prefix))
            .arg(format!("{}:s:{{", self.prefix))
            .arg(&hex)
            .invoke_async(&mut conn)
            .await?;
        Ok(Some(!reply.is_empty()))
    }

    #[cfg(test)]
    async fn raw(&mut self, id: &str, hash: &TokenHash) -> Result<Vec<String>> {
        let p = self.prefix.clone();
        let hex = tessera_store_redis::hex(hash);
        let session = format!("{p}:s:{{{id}}}");
        let pointer = format!("{p}:a:{hex}");
        let user: Option<String> = redis::cmd("HGET")
            .arg(&session)
            .arg("u")
            .query(&mut self.conn)?;
        let user = format!("{p}:u:{}", user.unwrap_or_default());
        let conn = &mut self.conn;
        let mut out = Vec::new();
        for key in [
            session.clone(),
            format!("{p}:f:{{{id}}}"),
            pointer.clone(),
            format!("{p}:r:{hex}"),
            user.clone(),
            format!("{p}:all"),
        ] {
            let kind: String = redis::cmd("TYPE").arg(&key).query(conn)?;
            let expires: i64 = redis::cmd("EXPIRETIME").arg(&key).query(conn)?;
            let shown = key.replace(id, "<id>").replace(&hex, "<hash>");
            out.push(format!("{shown}: {kind}, expires at {expires}"));
        }
        let encoding: String = redis::cmd("OBJECT")
            .arg("ENCODING")
            .arg(&session)
            .query(conn)?;
        out.push(format!("session encoding {encoding}"));
        let fields: Vec<String> = redis::cmd("HGETALL").arg(&session).query(conn)?;
        out.extend(
            fields
                .into_iter()
                .map(|f| f.replace(id, "<id>").replace(&hex, "<hash>")),
        );
        let target: Option<String> = redis::cmd("GET").arg(&pointer).query(conn)?;
        out.push(format!(
            "pointer to {}",
            target.unwrap_or_default().replace(id, "<id>")
        ));
        for index in [user, format!("{p}:all")] {
            let score: Option<i64> = redis::cmd("ZSCORE").arg(&index).arg(id).query(conn)?;
            out.push(format!("score {score:?}"));
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use tessera_store::conformance::test_service_url;

    use super::*;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn seeded_sessions_are_stored_as_create_session_stores_them() {
        let Some(url) = test_service_url("TESSERA_TEST_REDIS_URL") else {
            return;
        };
        let dir = crate::TempDir::new(None).unwrap();
        let mut backend = Redis::open(&url, dir.path()).await.unwrap();
        crate::scale::tests::seeded_sessions_are_stored_as_create_session_stores_them(&mut backend)
            .await;
        let prefix = backend.prefix.clone();
        drop(backend);
        let mut conn = redis::Client::open(url.as_str())
            .unwrap()
            .get_connection()
            .unwrap();
        let left: Vec<String> = redis::cmd("KEYS")
            .arg(format!("{prefix}:*"))
            .query(&mut conn)
            .unwrap();
        assert!(left.is_empty(), "keys left behind: {left:?}");
    }
}
