//! SQLite: batched INSERTs into tessera's schema on a connection of the seeder's own
//! (`synchronous=OFF`, large page cache, foreign-key checks off, one transaction per batch). The
//! size is the database file's, once the WAL has been folded into it.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context, Result};
use rusqlite::{Connection, params};
use tessera_core::opaque::TokenHash;
use tessera_store::{NewSession, SessionStore, Store};
use tessera_store_sqlite::SqliteStore;

use super::Backend;

/// A fresh SQLite database and a seeding connection to it.
pub(super) struct Sqlite {
    store: SqliteStore,
    db: PathBuf,
    seeder: Connection,
}

impl Sqlite {
    /// Creates `dir/tessera.db`, replacing an existing one.
    pub(super) fn open(dir: &Path) -> Result<Sqlite> {
        std::fs::create_dir_all(dir)?;
        let db = dir.join("tessera.db");
        for suffix in ["", "-wal", "-shm", "-changes"] {
            let _ = std::fs::remove_file(format!("{}{suffix}", db.display()));
        }
        // No session-record cache: the scale run measures how the database's own cost grows
        // with it (the cache would answer every sampled session from memory after its first
        // lookup, whatever the size).
        let store = SqliteStore::open_with_cache(&db, 0)?;
        let seeder = Connection::open(&db)?;
        // Seeding only: durability and integrity checks are the production path's business.
        seeder.execute_batch(
            "PRAGMA synchronous = OFF; PRAGMA cache_size = -1048576; PRAGMA foreign_keys = OFF;",
        )?;
        Ok(Sqlite { store, db, seeder })
    }
}

impl Backend for Sqlite {
    const SIZE_OF: &'static str = "database file (WAL checkpointed)";

    fn store(&self) -> Arc<dyn Store> {
        Arc::new(self.store.clone())
    }

    async fn size(&mut self) -> Result<u64> {
        self.seeder
            .query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))?;
        Ok(std::fs::metadata(&self.db)
            .with_context(|| format!("{}", self.db.display()))?
            .len())
    }

    async fn write(&mut self, batch: &[NewSession]) -> Result<()> {
        let tx = self.seeder.transaction()?;
        {
            // The statement of `SqliteStore::create_session`.
            let mut insert = tx.prepare(
                "INSERT INTO sessions (id, user_id, access_hash, created_at, last_seen_at,
                     idle_expires_at, absolute_expires_at, revoked_at, ip, user_agent, amr)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)",
            )?;
            for new in batch {
                anyhow::ensure!(new.refresh_hash.is_none(), "refresh tokens are not seeded");
                let (s, t) = (&new.session, &new.session.times);
                insert.execute(params![
                    s.id,
                    s.user_id,
                    new.access_hash.as_ref().map(|h| &h.as_bytes()[..]),
                    t.created_at,
                    t.last_seen_at,
                    t.idle_expires_at,
                    t.absolute_expires_at,
                    t.revoked_at,
                    s.ip,
                    s.user_agent,
                    s.amr.bits(),
                ])?;
            }
        }
        tx.commit()?;
        Ok(())
    }

    async fn lookup(&self, hash: &TokenHash) -> Result<bool> {
        Ok(self.store.session_by_access_hash(hash).await?.is_some())
    }

    #[cfg(test)]
    async fn raw(&mut self, id: &str, hash: &TokenHash) -> Result<Vec<String>> {
        let conn = Connection::open(&self.db)?;
        let mut query = conn.prepare("SELECT * FROM sessions WHERE id = ?1")?;
        let names: Vec<String> = query.column_names().map(str::to_owned).collect();
        let mut rows = query.query(params![id])?;
        let mut out = Vec::new();
        while let Some(row) = rows.next()? {
            for (i, name) in names.iter().enumerate() {
                let value = match row.get_ref(i)? {
                    rusqlite::types::ValueRef::Text(t) if t == id.as_bytes() => "<id>".into(),
                    rusqlite::types::ValueRef::Blob(b) if b == hash.as_bytes() => "<hash>".into(),
                    other => format!("{other:?}"),
                };
                out.push(format!("{name}={value}"));
            }
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scale::{Options, StoreKind, run};

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn seeded_sessions_are_stored_as_create_session_stores_them() {
        let dir = crate::TempDir::new(None).unwrap();
        let mut backend = Sqlite::open(dir.path()).unwrap();
        crate::scale::tests::seeded_sessions_are_stored_as_create_session_stores_them(&mut backend)
            .await;
    }

    #[test]
    fn a_small_run_seeds_every_session_and_verifies_the_samples() {
        let dir = crate::TempDir::new(None).unwrap();
        let outcome = run(&Options {
            store: StoreKind::Sqlite,
            dir: Some(dir.path().to_path_buf()),
            database_url: None,
            redis_url: None,
            sessions: 2_000,
            samples: 50,
            lookups: 200,
        })
        .unwrap();
        assert_eq!(outcome.sessions, 2_000);
        assert_eq!(outcome.opaque_verify.count, 200);
        assert!(outcome.bytes_per_session > 64.0, "{outcome:?}");
        let conn = Connection::open(dir.path().join("tessera.db")).unwrap();
        let live: i64 = conn
            .query_row(
                "SELECT count(*) FROM sessions WHERE revoked_at IS NULL AND access_hash IS NOT NULL",
                [],
                |row| row.get(0),
            )
            .unwrap();
        assert_eq!(live, 2_000);
    }
}
