//! Change counters shared by every process that has the database open.
//!
//! The session-record cache ([`crate::cache`]) must never answer for a session after a
//! revocation has returned — whichever process made it: this server, another one on the same
//! file, or the CLI. Asking SQLite costs a read transaction (two `fcntl` calls on the WAL index
//! and a page lookup), which is what the cache exists to avoid. So every process also keeps
//! counters in a small file next to the database, `<database>-changes`, and a cached record is
//! served only while the counters it was read under are unchanged.
//!
//! # Bound to the database, read without a mapping
//!
//! The file is found next to the database's canonical path (symlinks resolved, as SQLite does
//! for `-wal` and `-shm`), so processes that open the database by different paths share it; its
//! header holds the random identity stored in the database (`database_identity`, schema 4), so
//! a counters file left from another database is never trusted. Every check of a cached record
//! also `fstat`s the open file: one removed, replaced (another file renamed over its path) or
//! resized since this process opened it turns this process's cache off (logged at warn,
//! `tessera_session_cache_disabled` set to 1) — a process that created a new file there would
//! never see this one's writes, and the other way round. Writers, after each commit, also look
//! at the path and bump the file now there when it is not theirs, so a process that started on
//! a new file sees their writes; that look also turns their own cache off. What a reader alone
//! does not notice: its file moved to another name (so still linked) and a new one made at the
//! path, until this process writes.
//!
//! The file is read and written with `pread`/`pwrite`, never mapped: another process (or an
//! operator) can truncate it, and touching a mapping past the end of a truncated file kills the
//! process with SIGBUS, which safe Rust cannot catch (issue 11 #9). A cache hit costs one
//! `fstat` and one `pread` of the header while no write has happened since the record was
//! read, and two more `pread`s (its session's and user's counters) after any write
//! (measured in `docs/performance.md`).
//!
//! # Layout
//! Little-endian `u64` words: `MAGIC`; the database identity (two words); `GEN` (changed by
//! every write, before and after its commit); `ALL` (writes that may touch any session: purges);
//! then [`SLOTS`] counters, each changed by writes to a session or a user whose id hashes to it
//! (FNV-1a, the same in every process and build; ids are random, so collisions are spread
//! evenly and only cost extra misses).
//!
//! # Protocol
//! A write does not add one to a counter (that would need a lock across processes for the
//! read-modify-write) but stores a value never used before: a per-process random seed run
//! through a bijective mixer with a per-process sequence number. So no counter ever returns to
//! a value a reader saw, whatever writes race or are lost to a concurrent one.
//!
//! A writer calls [`ChangeCounters::writing`] and, before its transaction commits, names what it
//! changes ([`Writing::session`], [`Writing::user`], [`Writing::everything`]): each call stores
//! a new value in the named counter and then a new `GEN`, and returns the [`SessionChange`],
//! [`UserChange`] or [`AnySessionChange`] that the SQL changing that session or user requires
//! in place of its id — so a write cannot reach the SQL without having named what it changes.
//! After the commit (or a failure) the [`Writing`] is dropped, which stores a new `GEN` and
//! then new values in every named counter again.
//!
//! A reader that wants to cache what it reads takes a [`Ticket`] (the value of `GEN`) before
//! reading, reads the record, reads the counters of the record's session and user and `ALL`,
//! then checks `GEN` is still the ticket's. If it is, no write stored `GEN` in between. Take a
//! write whose commit came after the read (so the read may be stale): its post-commit `GEN`
//! store came after the ticket; being unchanged at the final check, it came after that check
//! too, and so did the post-commit counter store that follows it — the cached version is
//! refused from then on, before the writer returns. The pre-commit stores make a writer that
//! dies after its commit (before its post-commit stores) still change its counters.
//!
//! Checking a cached version ([`ChangeCounters::is_current`]) reads the header first: while
//! `GEN` is still the version's (its ticket), no `GEN` store happened since, so no counter
//! store either (after a commit `GEN` is stored before the counters; before it, after them),
//! and the version stands without reading its counters. After any write the check reads them;
//! when they are unchanged and `GEN` was the same before and after reading them, that `GEN`
//! becomes the version's, so the next check is short again.
//!
//! Only tessera's own store code changes the counters: a database edited by other means (the
//! `sqlite3` shell) while a server runs is not seen by its cache until the entry is evicted or
//! the server restarts. Schema version 3 marks databases whose writers all do this; version 4
//! adds the identity this layout (`tsrchg02`) binds to.

use std::cell::RefCell;
use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

/// Counters for sessions and users; a power of two, so a slot is the hash's low bits.
pub(crate) const SLOTS: usize = 4096;
/// "tsrchg02": the layout above.
const MAGIC: u64 = u64::from_le_bytes(*b"tsrchg02");
/// The database identity's length, in bytes.
pub(crate) const ID_BYTES: usize = 16;
const GEN: usize = 3;
const ALL: usize = 4;
const HEADER_WORDS: usize = 5;
const FIRST_SLOT: usize = HEADER_WORDS;
const WORDS: usize = FIRST_SLOT + SLOTS;
const WORD: u64 = std::mem::size_of::<u64>() as u64;
const BYTES: u64 = WORDS as u64 * WORD;

/// The counters of one database, as this process opened them.
pub(crate) struct ChangeCounters {
    file: File,
    /// Where the file is found (next to the database's canonical path).
    path: PathBuf,
    /// Device and inode of `file`: what writers look for at the path.
    identity: (u64, u64),
    database: [u8; ID_BYTES],
    /// Seed of the values this process stores.
    seed: u64,
    sequence: AtomicU64,
    /// Set once the file is found removed, replaced, resized or unreadable: no caching since.
    off: AtomicBool,
}

impl std::fmt::Debug for ChangeCounters {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChangeCounters")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

/// The path of the counters file of the database at `db` (already canonical).
pub(crate) fn counters_path(db: &Path) -> PathBuf {
    let mut name = db.as_os_str().to_owned();
    name.push("-changes");
    PathBuf::from(name)
}

/// The header a counters file of `database` starts with, `GEN` and `ALL` excluded.
fn header_prefix(database: &[u8; ID_BYTES]) -> [u8; 24] {
    let mut prefix = [0; 24];
    prefix[..8].copy_from_slice(&MAGIC.to_le_bytes());
    prefix[8..].copy_from_slice(database);
    prefix
}

fn random_u64() -> io::Result<u64> {
    tessera_core::random::bytes::<8>()
        .map(u64::from_le_bytes)
        .map_err(|e| io::Error::other(e.to_string()))
}

/// A bijection of `u64` (SplitMix64's finaliser): distinct inputs give distinct outputs.
fn mix(mut x: u64) -> u64 {
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

impl ChangeCounters {
    /// Opens (creating if needed, mode 0600) the counters file of the database at `db`, whose
    /// identity is `database`. A file that is missing, too short, of another layout or of
    /// another database is (re)initialised: values are never reused, so processes still using
    /// it see their records refused, never a stale one.
    ///
    /// # Errors
    /// When the file cannot be created, read or written.
    pub(crate) fn open(db: &Path, database: [u8; ID_BYTES]) -> io::Result<ChangeCounters> {
        // Canonical, so a database opened through a symlink shares its counters file.
        let path = counters_path(&std::fs::canonicalize(db)?);
        let mut options = OpenOptions::new();
        options.read(true).write(true).create(true).truncate(false);
        std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
        let file = options.open(&path)?;
        let prefix = header_prefix(&database);
        let mut found = [0; 24];
        let valid = file.metadata()?.len() == BYTES
            && file.read_exact_at(&mut found, 0).is_ok()
            && found == prefix;
        if !valid {
            // Growing or shrinking it to size; the new bytes are zeros, a valid counter value.
            file.set_len(BYTES)?;
            let mut header = [0; HEADER_WORDS * 8];
            header[..24].copy_from_slice(&prefix);
            header[24..32].copy_from_slice(&random_u64()?.to_le_bytes());
            header[32..].copy_from_slice(&random_u64()?.to_le_bytes());
            file.write_all_at(&header, 0)?;
        }
        let metadata = file.metadata()?;
        Ok(ChangeCounters {
            file,
            path,
            identity: (metadata.dev(), metadata.ino()),
            database,
            seed: random_u64()?,
            sequence: AtomicU64::new(0),
            off: AtomicBool::new(false),
        })
    }

    /// Whether caching is off in this process (the file can no longer be trusted).
    pub(crate) fn is_off(&self) -> bool {
        self.off.load(Ordering::Relaxed)
    }

    /// Turns this process's cache off for good, saying why once.
    fn turn_off(&self, why: &str) {
        if !self.off.swap(true, Ordering::Relaxed) {
            tracing::warn!(
                path = %self.path.display(),
                why,
                "session-record cache off until restart: the change-counters file can no \
                 longer be trusted; every lookup reads the database"
            );
            metrics::gauge!("tessera_session_cache_disabled").set(1.0);
        }
    }

    /// True while the file this process opened still has a name and its size.
    ///
    /// Asked of the open descriptor (`fstat`), not the path: no path walk on every check. A
    /// file removed, or replaced by another one renamed over its path, has no name left (its
    /// link count is 0); a truncated or grown one has another size.
    fn still_bound(&self) -> bool {
        match self.file.metadata() {
            Ok(m) if m.nlink() > 0 && m.len() == BYTES => true,
            Ok(m) if m.nlink() > 0 => {
                self.turn_off("resized");
                false
            }
            Ok(_) => {
                self.turn_off("removed or replaced");
                false
            }
            Err(_) => {
                self.turn_off("unreadable");
                false
            }
        }
    }

    /// `GEN` and `ALL`, when the header is this database's.
    fn header(&self) -> Option<(u64, u64)> {
        let mut header = [0; HEADER_WORDS * 8];
        if self.file.read_exact_at(&mut header, 0).is_err() {
            self.turn_off("unreadable or truncated");
            return None;
        }
        if header[..24] != header_prefix(&self.database) {
            self.turn_off("holds another database's header");
            return None;
        }
        let word = |i: usize| {
            let mut bytes = [0; 8];
            bytes.copy_from_slice(&header[i * 8..i * 8 + 8]);
            u64::from_le_bytes(bytes)
        };
        Some((word(GEN), word(ALL)))
    }

    fn word(&self, index: usize) -> Option<u64> {
        let mut bytes = [0; 8];
        match self.file.read_exact_at(&mut bytes, index as u64 * WORD) {
            Ok(()) => Some(u64::from_le_bytes(bytes)),
            Err(_) => {
                self.turn_off("unreadable or truncated");
                None
            }
        }
    }

    /// Starts a write; see the module documentation.
    pub(crate) fn writing(&self) -> Writing<'_> {
        Writing {
            counters: self,
            named: RefCell::new(Vec::new()),
        }
    }

    /// A ticket to cache what is read next; `None` when caching is off.
    pub(crate) fn ticket(&self) -> Option<Ticket> {
        if self.is_off() {
            return None;
        }
        self.header().map(|(generation, _)| Ticket(generation))
    }

    /// The version of the record of `session_id` and `user_id` read under `ticket`, or `None`
    /// when a write happened since the ticket was taken (or caching is off).
    pub(crate) fn version(
        &self,
        ticket: Ticket,
        session_id: &str,
        user_id: &str,
    ) -> Option<Version> {
        let counters = self.counters(session_id, user_id)?;
        let (generation, _) = self.header()?;
        (generation == ticket.0).then(|| Version {
            counters,
            generation: AtomicU64::new(generation),
        })
    }

    /// Whether a record of `session_id` and `user_id` read at `version` may still be served:
    /// false after any write to its session, its user or `ALL` (or when caching is off).
    pub(crate) fn is_current(&self, version: &Version, session_id: &str, user_id: &str) -> bool {
        if self.is_off() || !self.still_bound() {
            return false;
        }
        let Some((generation, all)) = self.header() else {
            return false;
        };
        // No write at all since the version was read or last checked (see the module
        // documentation).
        if generation == version.generation.load(Ordering::Relaxed) {
            return true;
        }
        let current = all == version.counters.all
            && self.word(slot(session_id)) == Some(version.counters.session)
            && self.word(slot(user_id)) == Some(version.counters.user);
        // Unchanged, and no write stored `GEN` while they were read: the next check can stop
        // at the header again (the argument of the ticket, above).
        if current && self.header().is_some_and(|(after, _)| after == generation) {
            version.generation.store(generation, Ordering::Relaxed);
        }
        current
    }

    /// The counters a record of `session_id` and `user_id` depends on now; `None` when
    /// caching is off.
    fn counters(&self, session_id: &str, user_id: &str) -> Option<Counters> {
        if self.is_off() || !self.still_bound() {
            return None;
        }
        let (_, all) = self.header()?;
        Some(Counters {
            session: self.word(slot(session_id))?,
            user: self.word(slot(user_id))?,
            all,
        })
    }

    /// A value never stored before (see the module documentation).
    fn fresh(&self) -> u64 {
        mix(self.seed ^ mix(self.sequence.fetch_add(1, Ordering::Relaxed)))
    }

    /// Stores fresh values in `GEN` and then in each of `indexes`, in `file` (after a commit).
    fn store(&self, file: &File, indexes: &[usize]) -> io::Result<()> {
        for index in std::iter::once(GEN).chain(indexes.iter().copied()) {
            self.store_one(file, index)?;
        }
        Ok(())
    }

    /// Stores a fresh value in `index` and then in `GEN` (before a commit: a reader that still
    /// sees its version's `GEN` has seen no changed counter).
    fn store_before_commit(&self, index: usize) -> io::Result<()> {
        self.store_one(&self.file, index)?;
        self.store_one(&self.file, GEN)
    }

    fn store_one(&self, file: &File, index: usize) -> io::Result<()> {
        file.write_all_at(&self.fresh().to_le_bytes(), index as u64 * WORD)
    }

    /// After a commit: the same stores in the file now at the path, when it is another
    /// database's counters file than ours (a process started since it was replaced reads it).
    fn store_at_path(&self, indexes: &[usize]) {
        // By path here (writes only): also a file moved aside with a new one made at its path,
        // which the readers' `fstat` does not notice.
        let ours = std::fs::metadata(&self.path)
            .is_ok_and(|m| (m.dev(), m.ino()) == self.identity && m.len() == BYTES);
        if ours {
            return;
        }
        self.turn_off("replaced at its path");
        let Ok(file) = OpenOptions::new().read(true).write(true).open(&self.path) else {
            return;
        };
        let mut found = [0; 24];
        let ours = file.read_exact_at(&mut found, 0).is_ok()
            && found == header_prefix(&self.database)
            && file.metadata().is_ok_and(|m| m.len() == BYTES);
        if ours && let Err(error) = self.store(&file, indexes) {
            tracing::error!(%error, path = %self.path.display(), "could not update the change counters");
        }
    }
}

/// Permission to cache a read: `GEN` when it was granted.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Ticket(u64);

/// When a cached record was read: the counters it depends on, and a `GEN` under which they
/// were found unchanged (see [`ChangeCounters::is_current`]).
#[derive(Debug)]
pub(crate) struct Version {
    counters: Counters,
    generation: AtomicU64,
}

/// The counters of a session, its user, and `ALL`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Counters {
    session: u64,
    user: u64,
    all: u64,
}

/// A write in progress; dropping it (after the commit) stores again what it named.
pub(crate) struct Writing<'a> {
    counters: &'a ChangeCounters,
    named: RefCell<Vec<usize>>,
}

impl Writing<'_> {
    fn bump(&self, index: usize) {
        let mut named = self.named.borrow_mut();
        if !named.contains(&index) {
            named.push(index);
        }
        let counters = self.counters;
        if let Err(error) = counters.store_before_commit(index) {
            // Other processes' caches may miss this write: ours is off, and this is loud.
            tracing::error!(%error, path = %counters.path.display(), "could not update the change counters");
            counters.turn_off("unwritable");
        }
    }

    /// Whether this write has named any session or user (or everything) so far.
    #[cfg(test)]
    pub(crate) fn names_any(&self) -> bool {
        !self.named.borrow().is_empty()
    }

    /// This write changes the session `id`: bumps its counter now (before the commit) and
    /// again when the write is dropped, and returns what the SQL that changes it takes.
    pub(crate) fn session<'id>(&self, id: &'id str) -> SessionChange<'id> {
        self.bump(slot(id));
        SessionChange { id }
    }

    /// This write changes the user `id` or all their sessions (bumped as for
    /// [`Writing::session`]).
    pub(crate) fn user<'id>(&self, id: &'id str) -> UserChange<'id> {
        self.bump(slot(id));
        UserChange { id }
    }

    /// This write may change any session (bumps `ALL`, as for [`Writing::session`]).
    pub(crate) fn everything(&self) -> AnySessionChange {
        self.bump(ALL);
        AnySessionChange(())
    }
}

// The SQL that changes a session or a user (`queries.rs`) takes one of these instead of an
// id, and reads the id it changes from it. They are made only by [`Writing`], which bumps the
// counter as it makes them, so no statement can change a session or a user that the counters
// were not told about: a forgotten bump would serve a revoked session from the cache.

/// A session whose counter this write has bumped: the only way to name it to SQL that
/// changes it.
#[must_use = "pass it to the SQL that changes the session"]
#[derive(Debug)]
pub(crate) struct SessionChange<'id> {
    id: &'id str,
}

impl<'id> SessionChange<'id> {
    /// The session's id.
    pub(crate) fn id(&self) -> &'id str {
        self.id
    }
}

/// A user whose counter this write has bumped (covering every session of theirs): the only
/// way to name it to SQL that changes the user or all their sessions.
#[must_use = "pass it to the SQL that changes the user"]
#[derive(Debug)]
pub(crate) struct UserChange<'id> {
    id: &'id str,
}

impl<'id> UserChange<'id> {
    /// The user's id.
    pub(crate) fn id(&self) -> &'id str {
        self.id
    }
}

/// `ALL` bumped by this write: what SQL that may change any session (a purge) takes.
#[must_use = "pass it to the SQL that may change any session"]
#[derive(Debug)]
pub(crate) struct AnySessionChange(());

impl Drop for Writing<'_> {
    fn drop(&mut self) {
        let named = self.named.borrow();
        if named.is_empty() {
            return;
        }
        let counters = self.counters;
        if let Err(error) = counters.store(&counters.file, &named) {
            tracing::error!(%error, path = %counters.path.display(), "could not update the change counters");
            counters.turn_off("unwritable");
        }
        counters.store_at_path(&named);
    }
}

/// The counter index of a session or user id: FNV-1a, fixed so every process agrees.
fn slot(id: &str) -> usize {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in id.bytes() {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    // SLOTS is a power of two; the cast keeps the low bits.
    FIRST_SLOT + (hash as usize & (SLOTS - 1))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    struct Dir(PathBuf);
    impl Drop for Dir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
    fn dir() -> Dir {
        let path = std::env::temp_dir().join(format!(
            "tessera-changes-{}",
            tessera_core::random::id().unwrap()
        ));
        std::fs::create_dir_all(&path).unwrap();
        std::fs::write(path.join("t.db"), b"").unwrap();
        Dir(path)
    }
    const DB: [u8; ID_BYTES] = [7; ID_BYTES];

    /// A version of the record of session `s1` and user `u1` read now.
    fn read(counters: &ChangeCounters) -> Option<Version> {
        counters.version(counters.ticket()?, "s1", "u1")
    }

    fn is_current(counters: &ChangeCounters, version: &Version) -> bool {
        counters.is_current(version, "s1", "u1")
    }

    #[test]
    fn a_write_through_another_handle_changes_the_version_and_spoils_tickets() {
        let dir = dir();
        let db = dir.0.join("t.db");
        let here = ChangeCounters::open(&db, DB).unwrap();
        let there = ChangeCounters::open(&db, DB).unwrap();

        let ticket = here.ticket().unwrap();
        let before = here.version(ticket, "s1", "u1").unwrap();
        assert!(is_current(&here, &before));
        {
            let writing = there.writing();
            let _changed = writing.session("s1");
            assert!(
                here.version(ticket, "s1", "u1").is_none(),
                "a write began after the ticket"
            );
            assert!(
                !is_current(&here, &before),
                "the session's counter moved before the commit"
            );
            let during = read(&here).unwrap();
            assert!(is_current(&here, &during));
            drop(writing);
            assert!(
                !is_current(&here, &during),
                "and again after it: a read cached mid-write is refused"
            );
        }
        let before = read(&here).unwrap();
        let _changed = there.writing().user("u1");
        assert!(!is_current(&here, &before), "the user's counter moved");
        let before = read(&here).unwrap();
        let _changed = there.writing().everything();
        assert!(!is_current(&here, &before), "`ALL` moved");
        let before = read(&here).unwrap();
        drop(there.writing());
        assert!(is_current(&here, &before), "a write that names nothing");
        // Another session and user: `GEN` moved, so the counters are read, and they stand.
        assert!(![slot("s1"), slot("u1")].contains(&slot("s2")));
        assert!(![slot("s1"), slot("u1")].contains(&slot("u2")));
        let _changed = there.writing().session("s2");
        let _changed = there.writing().user("u2");
        let (generation, _) = here.header().unwrap();
        assert_ne!(before.generation.load(Ordering::Relaxed), generation);
        assert!(is_current(&here, &before), "writes to others");
        // Found unchanged under the new `GEN`: the next check stops at the header.
        assert_eq!(before.generation.load(Ordering::Relaxed), generation);
        let _changed = there.writing().session("s1");
        assert!(
            !is_current(&here, &before),
            "and a write to it is still seen"
        );
        assert!(!here.is_off() && !there.is_off());
    }

    #[test]
    fn a_writer_that_dies_after_its_commit_still_spoils_what_was_read_before() {
        let dir = dir();
        let db = dir.0.join("t.db");
        let here = ChangeCounters::open(&db, DB).unwrap();
        let there = ChangeCounters::open(&db, DB).unwrap();
        for name in ["session", "user", "everything"] {
            let before = read(&here).unwrap();
            let writing = there.writing();
            match name {
                "session" => drop(writing.session("s1")),
                "user" => drop(writing.user("u1")),
                _ => drop(writing.everything()),
            }
            // No stores after the commit, as when the process dies there.
            std::mem::forget(writing);
            assert!(!is_current(&here, &before), "{name}");
        }
    }

    #[test]
    fn stored_values_never_repeat() {
        let dir = dir();
        let counters = ChangeCounters::open(&dir.0.join("t.db"), DB).unwrap();
        let other = ChangeCounters::open(&dir.0.join("t.db"), DB).unwrap();
        let values: std::collections::HashSet<u64> = (0..10_000)
            .flat_map(|_| [counters.fresh(), other.fresh()])
            .collect();
        assert_eq!(values.len(), 20_000);
    }

    #[test]
    fn a_file_of_another_database_or_layout_is_reinitialised_and_its_users_turn_off() {
        let dir = dir();
        let db = dir.0.join("t.db");
        let first = ChangeCounters::open(&db, DB).unwrap();
        let before = read(&first).unwrap();
        let second = ChangeCounters::open(&db, [8; ID_BYTES]).unwrap();
        assert!(read(&second).is_some());
        assert!(!is_current(&first, &before), "another database's header");
        assert!(first.is_off() && first.ticket().is_none());
        // Garbage (an older layout, say) is rewritten, not refused.
        std::fs::write(counters_path(&db), vec![0x5a; BYTES as usize]).unwrap();
        let third = ChangeCounters::open(&db, DB).unwrap();
        assert!(read(&third).is_some());
    }

    #[test]
    fn removed_replaced_or_resized_files_turn_the_cache_off() {
        let dir = dir();
        let db = dir.0.join("t.db");
        let path = counters_path(&db);
        let removed = ChangeCounters::open(&db, DB).unwrap();
        let before = read(&removed).unwrap();
        std::fs::remove_file(&path).unwrap();
        assert!(!is_current(&removed, &before) && removed.is_off());

        let replaced = ChangeCounters::open(&db, DB).unwrap();
        let before = read(&replaced).unwrap();
        let copy = dir.0.join("copy");
        std::fs::copy(&path, &copy).unwrap();
        std::fs::rename(&copy, &path).unwrap();
        assert!(!is_current(&replaced, &before) && replaced.is_off());

        for length in [0, 8, 40, BYTES - 8, BYTES + 8] {
            let resized = ChangeCounters::open(&db, DB).unwrap();
            let before = read(&resized).unwrap();
            std::fs::OpenOptions::new()
                .write(true)
                .open(&path)
                .unwrap()
                .set_len(length)
                .unwrap();
            assert!(!is_current(&resized, &before), "{length}");
            assert!(resized.is_off() && resized.ticket().is_none(), "{length}");
            // Writing to it does not crash either.
            let _changed = resized.writing().session("s");
        }
    }

    #[test]
    fn a_file_moved_aside_and_made_anew_is_noticed_at_this_process_s_next_write() {
        let dir = dir();
        let db = dir.0.join("t.db");
        let path = counters_path(&db);
        let here = ChangeCounters::open(&db, DB).unwrap();
        let before = read(&here).unwrap();
        // Still linked under another name, and a new file at the path: `fstat` of the open
        // file cannot tell (documented above).
        std::fs::rename(&path, dir.0.join("aside")).unwrap();
        let newcomer = ChangeCounters::open(&db, DB).unwrap();
        assert!(is_current(&here, &before) && !here.is_off());
        // The newcomer's writes go to the new file, which this process does not read...
        let _changed = newcomer.writing().session("s1");
        assert!(is_current(&here, &before), "not noticed by a reader alone");
        // ...until this process writes: it looks at the path, and stops caching.
        let _changed = here.writing().session("s9");
        assert!(here.is_off() && !is_current(&here, &before));
        // And its write reached the file the newcomer reads.
        let seen = read(&newcomer).unwrap();
        let _changed = here.writing().session("s1");
        assert!(!is_current(&newcomer, &seen));
    }

    /// The cost of checking a cached record, for docs/performance.md:
    /// `cargo test -p tessera-store-sqlite --release -- --ignored --nocapture check_cost`.
    #[test]
    #[ignore = "a timing, not a test"]
    fn check_cost() {
        let dir = dir();
        let counters = ChangeCounters::open(&dir.0.join("t.db"), DB).unwrap();
        let rounds = 200_000u32;
        let unchanged = read(&counters).unwrap();
        let started = std::time::Instant::now();
        for _ in 0..rounds {
            std::hint::black_box(is_current(&counters, &unchanged));
        }
        eprintln!(
            "is_current(), no write since: {:?}",
            started.elapsed() / rounds
        );
        let generation = unchanged.generation.load(Ordering::Relaxed);
        let started = std::time::Instant::now();
        for _ in 0..rounds {
            // Checked once after a write: the counters and the header again.
            unchanged.generation.store(!generation, Ordering::Relaxed);
            std::hint::black_box(is_current(&counters, &unchanged));
        }
        eprintln!(
            "is_current(), a write since: {:?}",
            started.elapsed() / rounds
        );
        let started = std::time::Instant::now();
        for _ in 0..rounds {
            std::hint::black_box(counters.still_bound());
        }
        eprintln!("fstat: {:?}", started.elapsed() / rounds);
        let started = std::time::Instant::now();
        for _ in 0..rounds {
            std::hint::black_box(counters.word(FIRST_SLOT));
        }
        eprintln!("pread: {:?}", started.elapsed() / rounds);
    }

    #[test]
    fn the_file_is_private_and_slots_spread() {
        use std::os::unix::fs::PermissionsExt;
        let dir = dir();
        let db = dir.0.join("t.db");
        let _counters = ChangeCounters::open(&db, DB).unwrap();
        let mode = std::fs::metadata(counters_path(&db))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        let used: std::collections::HashSet<usize> =
            (0..1000).map(|i| slot(&format!("id-{i}"))).collect();
        assert!(used.len() > 850, "{}", used.len());
        assert!(used.iter().all(|s| (FIRST_SLOT..WORDS).contains(s)));
    }
}
