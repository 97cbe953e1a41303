//! PostgreSQL: a schema of the run's own (dropped afterwards, error or not), migrated by
//! `PgStore::open`; sessions go in by one `COPY` per batch on a connection of the seeder's own
//! (`synchronous_commit = off`; `session_replication_role = replica`, which skips the
//! foreign-key triggers, when the role may set it). Every index stays in place, so the table and
//! its indexes grow as they do under logins. Seeding ends with `VACUUM ANALYZE` and a
//! checkpoint — the steady state autovacuum would bring — and is timed with them.
//!
//! The size is `pg_total_relation_size` (heap, indexes, TOAST, free-space and visibility maps)
//! summed over the schema's tables.

use std::collections::VecDeque;
use std::fmt::Write as _;
use std::sync::{Arc, OnceLock};

use anyhow::{Result, ensure};
use futures_util::SinkExt;
use tessera_core::opaque::TokenHash;
use tessera_store::{NewSession, SessionStore, Store};
use tessera_store_postgres::{PgStore, TestSchema};
use tokio::task::JoinHandle;
use tokio_postgres::{Client, NoTls, Statement};

use super::Backend;

/// The store on a fresh schema and a seeding connection to it. Fields drop in order: the pool
/// and the connection close before the schema is dropped.
pub(super) struct Postgres {
    store: PgStore,
    seeder: Client,
    /// The verify statement, prepared on the seeder's connection for the raw lookups.
    raw_statement: OnceLock<Statement>,
    driver: JoinHandle<()>,
    _schema: TestSchema,
}

impl Postgres {
    /// Creates a schema of its own in the database of `url` and opens the store on it.
    pub(super) async fn open(url: &str) -> Result<Postgres> {
        let schema = TestSchema::create(url).await?;
        let store = PgStore::open(schema.url()).await?;
        let (seeder, connection) = tokio_postgres::connect(schema.url(), NoTls).await?;
        let driver = tokio::spawn(async move {
            let _ = connection.await;
        });
        // Seeding only: durability is the production path's business.
        seeder.batch_execute("SET synchronous_commit = off").await?;
        // Foreign keys are checked by triggers; a superuser may skip them for the bulk load.
        if let Err(error) = seeder
            .batch_execute("SET session_replication_role = replica")
            .await
        {
            eprintln!("note: foreign-key checks stay on while seeding ({error})");
        }
        Ok(Postgres {
            store,
            seeder,
            raw_statement: OnceLock::new(),
            driver,
            _schema: schema,
        })
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        self.driver.abort();
    }
}

/// Appends `value` as a field of `COPY … FROM STDIN` text format.
fn push_text(out: &mut String, value: Option<&str>) {
    let Some(value) = value else {
        out.push_str("\\N");
        return;
    };
    for c in value.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\t' => out.push_str("\\t"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            c => out.push(c),
        }
    }
}

impl Backend for Postgres {
    const SIZE_OF: &'static str = "pg_total_relation_size of the schema's tables";

    fn store(&self) -> Arc<dyn Store> {
        Arc::new(self.store.clone())
    }

    async fn size(&mut self) -> Result<u64> {
        let row = self
            .seeder
            .query_one(
                "SELECT coalesce(sum(pg_total_relation_size(c.oid)), 0)::bigint
                 FROM pg_class c
                 WHERE c.relnamespace = current_schema()::regnamespace AND c.relkind = 'r'",
                &[],
            )
            .await?;
        Ok(u64::try_from(row.try_get::<_, i64>(0)?)?)
    }

    async fn write(&mut self, batch: &[NewSession]) -> Result<()> {
        // The columns of `PgStore::create_session`'s INSERT; `seq` takes its default.
        let sink = self
            .seeder
            .copy_in::<_, VecDeque<u8>>(
                "COPY sessions (id, user_id, access_hash, created_at, last_seen_at,
                     idle_expires_at, absolute_expires_at, revoked_at, ip, user_agent, amr)
                 FROM STDIN",
            )
            .await?;
        futures_util::pin_mut!(sink);
        let mut text = String::with_capacity(batch.len() * 260);
        for new in batch {
            ensure!(new.refresh_hash.is_none(), "refresh tokens are not seeded");
            let (s, t) = (&new.session, &new.session.times);
            push_text(&mut text, Some(&s.id));
            text.push('\t');
            push_text(&mut text, Some(&s.user_id));
            text.push('\t');
            match &new.access_hash {
                // bytea in hex input form, its backslash escaped for COPY.
                Some(hash) => {
                    text.push_str("\\\\x");
                    for b in hash.as_bytes() {
                        let _ = write!(text, "{b:02x}");
                    }
                }
                None => text.push_str("\\N"),
            }
            for time in [
                Some(t.created_at),
                Some(t.last_seen_at),
                Some(t.idle_expires_at),
                Some(t.absolute_expires_at),
                t.revoked_at,
            ] {
                text.push('\t');
                match time {
                    Some(time) => {
                        let _ = write!(text, "{time}");
                    }
                    None => text.push_str("\\N"),
                }
            }
            text.push('\t');
            push_text(&mut text, s.ip.as_deref());
            text.push('\t');
            push_text(&mut text, s.user_agent.as_deref());
            let _ = writeln!(text, "\t{}", s.amr.bits());
            if text.len() > 1 << 20 {
                sink.send(VecDeque::from(std::mem::take(&mut text).into_bytes()))
                    .await?;
            }
        }
        if !text.is_empty() {
            sink.send(VecDeque::from(text.into_bytes())).await?;
        }
        let copied = sink.finish().await?;
        ensure!(copied == batch.len() as u64, "COPY wrote {copied} rows");
        Ok(())
    }

    async fn settle(&mut self) -> Result<()> {
        self.seeder.batch_execute("VACUUM ANALYZE sessions").await?;
        // A checkpoint running during the measurement would disturb it; it needs a privilege
        // the role may not have, and the run is valid without it.
        let _ = self.seeder.batch_execute("CHECKPOINT").await;
        Ok(())
    }

    async fn lookup(&self, hash: &TokenHash) -> Result<bool> {
        Ok(self.store.session_by_access_hash(hash).await?.is_some())
    }

    async fn raw_lookup(&self, hash: &TokenHash) -> Result<Option<bool>> {
        // The store's statement text; tokio-postgres caches nothing itself, so prepared once.
        let statement = match self.raw_statement.get() {
            Some(statement) => statement,
            None => {
                let prepared = self
                    .seeder
                    .prepare(&tessera_store_postgres::SESSION_BY_ACCESS_HASH)
                    .await?;
                self.raw_statement.get_or_init(|| prepared)
            }
        };
        let row = self
            .seeder
            .query_opt(statement, &[&hash.as_bytes().as_slice()])
            .await?;
        Ok(Some(row.is_some()))
    }

    #[cfg(test)]
    async fn raw(&mut self, id: &str, hash: &TokenHash) -> Result<Vec<String>> {
        let hex: String = hash.as_bytes().iter().map(|b| format!("{b:02x}")).collect();
        let mut out = Vec::new();
        for (table, key) in [("sessions", "id"), ("refresh_tokens", "session_id")] {
            let rows = self
                .seeder
                .query(
                    &format!("SELECT row_to_json(t)::text FROM {table} t WHERE {key} = $1"),
                    &[&id],
                )
                .await?;
            for row in rows {
                let json: serde_json::Value = serde_json::from_str(row.try_get(0)?)?;
                let serde_json::Value::Object(fields) = json else {
                    anyhow::bail!("not a row: {json}");
                };
                for (name, value) in fields {
                    let value = match value.as_str() {
                        _ if name == "seq" => "<seq>".to_owned(),
                        Some(v) if v == id => "<id>".to_owned(),
                        Some(v) if v == format!("\\x{hex}") => "<hash>".to_owned(),
                        _ => value.to_string(),
                    };
                    out.push(format!("{table}.{name}={value}"));
                }
            }
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
        let Some(url) = test_service_url("TESSERA_TEST_DATABASE_URL") else {
            return;
        };
        let mut backend = Postgres::open(&url).await.unwrap();
        crate::scale::tests::seeded_sessions_are_stored_as_create_session_stores_them(&mut backend)
            .await;
    }

    #[test]
    fn copy_text_escapes_what_it_must() {
        let mut out = String::new();
        push_text(&mut out, Some("a\tb\\c\nd"));
        out.push('|');
        push_text(&mut out, None);
        assert_eq!(out, "a\\tb\\\\c\\nd|\\N");
    }
}
