//! Where a SQLite session lookup's time goes: the read transaction versus the B-tree probes.
//!
//! `cargo run --release -p tessera-bench --example sqlite_lookup`
//!
//! Times, on a plain rusqlite connection configured like the store's readers (QPSG, mmap), a
//! statement that touches no table (no read transaction on the file), a one-row read of a tiny
//! table (read transaction + one probe), the store's lookup by token hash (join with users),
//! the same without the join, and one probe of a WITHOUT ROWID table holding the whole record.
//! Then the same on a connection in `locking_mode=EXCLUSIVE`, which keeps the WAL index in
//! private memory: no fcntl() lock and unlock of a WAL read mark per transaction, and no other
//! process (the CLI next to the server) able to open the database.

// An example that cannot set up should stop loudly.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::time::Instant;

use rusqlite::Connection;
use rusqlite::config::DbConfig;
use tessera_bench::{Fixture, TempDir};
use tessera_core::opaque::{OpaqueKind, parse};

const CALLS: u32 = 200_000;

fn open(path: &Path, exclusive: bool) -> Connection {
    let conn = Connection::open(path).unwrap();
    if exclusive {
        // Must precede the first access to the WAL.
        conn.pragma_update(None, "locking_mode", "EXCLUSIVE")
            .unwrap();
    }
    conn.pragma_update(None, "journal_mode", "WAL").unwrap();
    conn.set_db_config(DbConfig::SQLITE_DBCONFIG_ENABLE_QPSG, true)
        .unwrap();
    conn.pragma_update(None, "mmap_size", 1i64 << 31).unwrap();
    conn
}

fn time(conn: &Connection, name: &str, sql: &str, hash: Option<&[u8]>) {
    let start = Instant::now();
    for _ in 0..CALLS {
        let mut stmt = conn.prepare_cached(sql).unwrap();
        let row: i64 = match hash {
            Some(h) => stmt.query_row([h], |row| row.get(0)).unwrap(),
            None => stmt.query_row([], |row| row.get(0)).unwrap(),
        };
        std::hint::black_box(row);
    }
    let micros = start.elapsed().as_secs_f64() * 1e6 / f64::from(CALLS);
    println!("| {name} | {micros:.2} µs |");
}

fn main() {
    // The runtime stays alive with the fixture, whose service it runs.
    let (_runtime, fixture) = Fixture::on_new_runtime().unwrap();
    let hash = parse(&fixture.opaque, OpaqueKind::Session).unwrap();
    let hash = &hash.as_bytes()[..];

    // A copy of the fixture's database with the whole record in one WITHOUT ROWID table too.
    let dir = TempDir::new(None).unwrap();
    let copy = dir.path().join("copy.db");
    {
        let source = Connection::open(fixture.store.path()).unwrap();
        source
            .query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))
            .unwrap();
        std::fs::copy(fixture.store.path(), &copy).unwrap();
        let conn = Connection::open(&copy).unwrap();
        conn.execute_batch(
            "CREATE TABLE flat (hash BLOB PRIMARY KEY, created_at INTEGER, id TEXT,
                 user_id TEXT, last_seen_at INTEGER, idle INTEGER, absolute INTEGER,
                 revoked INTEGER, username TEXT, roles TEXT, permissions TEXT,
                 disabled INTEGER) STRICT, WITHOUT ROWID;
             INSERT INTO flat SELECT s.access_hash, s.created_at, s.id, s.user_id,
                 s.last_seen_at, s.idle_expires_at, s.absolute_expires_at, s.revoked_at,
                 u.username, u.roles, u.permissions, u.disabled
             FROM sessions s JOIN users u ON u.id = s.user_id
             WHERE s.access_hash IS NOT NULL;",
        )
        .unwrap();
    }

    for exclusive in [false, true] {
        let conn = open(&copy, exclusive);
        let mode = if exclusive {
            "locking_mode=EXCLUSIVE"
        } else {
            "shared (as tessera)"
        };
        println!("\n| {mode} | per call |\n|---|---:|");
        time(&conn, "SELECT 1 (no table)", "SELECT 1", None);
        time(
            &conn,
            "one row of a tiny table (read transaction + 1 probe)",
            "SELECT created_at FROM users LIMIT 1",
            None,
        );
        time(
            &conn,
            "session by token hash, joined with its user (the store's lookup)",
            "SELECT s.created_at FROM sessions s JOIN users u ON u.id = s.user_id \
             WHERE s.access_hash = ?1",
            Some(hash),
        );
        time(
            &conn,
            "session by token hash, no join",
            "SELECT created_at FROM sessions WHERE access_hash = ?1",
            Some(hash),
        );
        time(
            &conn,
            "whole record from one WITHOUT ROWID table",
            "SELECT created_at FROM flat WHERE hash = ?1",
            Some(hash),
        );
    }
}
