//! Change counters shared by every process that has the database open.
//!
//! The session-record cache ([`crate::cache`]) must never answer for a session after a
//! revocation has returned — whichever process made it: this server, another one on the same
//! file, or the CLI. Asking SQLite costs a read transaction (two `fcntl` calls on the WAL index
//! and a page lookup), which is what the cache exists to avoid. So every process also maps a
//! small file next to the database, `<database>-changes`, and keeps counters in it with atomic
//! operations: reading them is a few loads from shared memory, no system call.
//!
//! # Layout
//! Little-endian `u64` words: `MAGIC`; `begun` and `ended` (writes to sessions or users
//! started and finished, by any process); `all` (writes that may touch any session: purges);
//! then [`SLOTS`] counters, each bumped by writes to a session or a user whose id hashes to it
//! (FNV-1a, the same in every process and build; ids are random, so collisions are spread
//! evenly and only cost extra misses).
//!
//! # Protocol
//! A writer calls [`ChangeCounters::writing`] and, before its transaction commits, names what it
//! changes ([`Writing::session`], [`Writing::user`], [`Writing::everything`]): the first call
//! bumps `begun`, then each bumps its counter. After the commit (or a failure) the [`Writing`]
//! is dropped, which bumps `ended`.
//!
//! A reader that wants to cache what it reads takes a [`Ticket`] before reading — only granted
//! while `begun == ended`, no write in flight — and after reading reads the counters of the
//! record's session and user and `all`, then checks `begun` is still the ticket's. If so, no
//! write began between the ticket and that check, so the counters read are those of the state
//! it read; any later write bumps one of them before it commits, and the cached record is
//! refused from then on. (A write that began before the ticket had finished, with its commit,
//! before the read; one that began during the read fails the final check.)
//!
//! A process that dies between `begun` and `ended` leaves them unequal, which only stops
//! caching (every lookup reads the database, as without a cache). Every process holds a shared
//! `flock` on the file; one that opens it and gets an exclusive lock is alone, and sets `ended`
//! to `begun` before taking its shared lock.
//!
//! Only tessera's own store code bumps the counters: a database edited by other means (the
//! `sqlite3` shell) while a server runs is not seen by its cache until the entry is evicted or
//! the server restarts. Schema version 3 marks databases whose writers all do this.

// The one module of the workspace with unsafe code: building a slice of atomics over the
// shared mapping. Each block says why it is sound.
#![allow(unsafe_code)]

use std::fs::{File, OpenOptions, TryLockError};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering::SeqCst};

use memmap2::MmapRaw;

/// Counters for sessions and users; a power of two, so a slot is the hash's low bits.
pub(crate) const SLOTS: usize = 4096;
/// "tsrchg01": the layout above.
const MAGIC: u64 = u64::from_le_bytes(*b"tsrchg01");
const BEGUN: usize = 1;
const ENDED: usize = 2;
const ALL: usize = 3;
const FIRST_SLOT: usize = 4;
const WORDS: usize = FIRST_SLOT + SLOTS;
const BYTES: usize = WORDS * std::mem::size_of::<u64>();

/// The mapped counters of one database.
pub(crate) struct ChangeCounters {
    map: MmapRaw,
    /// Kept open for the shared lock, which says "a process uses these counters".
    _file: File,
}

impl std::fmt::Debug for ChangeCounters {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChangeCounters").finish_non_exhaustive()
    }
}

/// The path of the counters file of the database at `db`.
pub(crate) fn counters_path(db: &Path) -> PathBuf {
    let mut name = db.as_os_str().to_owned();
    name.push("-changes");
    PathBuf::from(name)
}

impl ChangeCounters {
    /// Opens (creating if needed, mode 0600) and maps the counters file of the database at
    /// `db`.
    ///
    /// # Errors
    /// When the file cannot be created, locked or mapped, or holds something else.
    pub(crate) fn open(db: &Path) -> io::Result<ChangeCounters> {
        let mut options = OpenOptions::new();
        options.read(true).write(true).create(true).truncate(false);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
        let file = options.open(counters_path(db))?;
        let alone = match file.try_lock() {
            Ok(()) => true,
            Err(TryLockError::WouldBlock) => false,
            Err(TryLockError::Error(error)) => return Err(error),
        };
        // Growing only (never truncating: another process may have it mapped); the new bytes
        // are zeros, a valid state of every counter.
        if file.metadata()?.len() < BYTES as u64 {
            file.set_len(BYTES as u64)?;
        }
        let map = MmapRaw::map_raw(&file)?;
        if map.len() < BYTES || map.as_ptr().align_offset(std::mem::align_of::<AtomicU64>()) != 0 {
            return Err(io::Error::other("the change-counters mapping is too small"));
        }
        let counters = ChangeCounters { map, _file: file };
        match counters.word(0).compare_exchange(0, MAGIC, SeqCst, SeqCst) {
            Ok(_) => {}
            Err(found) if found == MAGIC => {}
            Err(_) => {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    "the change-counters file holds something else",
                ));
            }
        }
        if alone {
            // Nobody else has the file open, so no write is in flight: a difference is a
            // process that died mid-write.
            counters
                .word(ENDED)
                .store(counters.word(BEGUN).load(SeqCst), SeqCst);
        }
        counters._file.lock_shared()?;
        Ok(counters)
    }

    fn words(&self) -> &[AtomicU64] {
        // SAFETY: the mapping is at least BYTES long and 8-byte aligned (both checked in
        // `open`), stays mapped as long as `self`, and is only ever accessed through atomic
        // operations, here and in every other process (which map the same file with this same
        // code), so shared references to AtomicU64 over it are sound. MmapRaw hands out a raw
        // pointer, so no `&[u8]` to the same bytes exists. The file is never truncated.
        unsafe { std::slice::from_raw_parts(self.map.as_mut_ptr().cast::<AtomicU64>(), WORDS) }
    }

    fn word(&self, index: usize) -> &AtomicU64 {
        // `index` is one of the constants above or FIRST_SLOT + a slot below SLOTS.
        &self.words()[index]
    }

    /// Starts a write; see the module documentation.
    pub(crate) fn writing(&self) -> Writing<'_> {
        Writing {
            counters: self,
            started: std::cell::Cell::new(false),
        }
    }

    /// A ticket to cache what is read next, when no write is in flight.
    pub(crate) fn ticket(&self) -> Option<Ticket> {
        let begun = self.word(BEGUN).load(SeqCst);
        (self.word(ENDED).load(SeqCst) == begun).then_some(Ticket(begun))
    }

    /// The version of the record of `session_id` and `user_id` read under `ticket`, or `None`
    /// when a write began since the ticket was taken.
    pub(crate) fn version(
        &self,
        ticket: Ticket,
        session_id: &str,
        user_id: &str,
    ) -> Option<Version> {
        let version = self.current(session_id, user_id);
        (self.word(BEGUN).load(SeqCst) == ticket.0).then_some(version)
    }

    /// The counters a record of `session_id` and `user_id` is checked against now.
    pub(crate) fn current(&self, session_id: &str, user_id: &str) -> Version {
        Version {
            session: self.word(slot(session_id)).load(SeqCst),
            user: self.word(slot(user_id)).load(SeqCst),
            all: self.word(ALL).load(SeqCst),
        }
    }
}

/// Permission to cache a read: `begun` when it was granted.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Ticket(u64);

/// The counters a cached record was read under; equal to [`ChangeCounters::current`] while
/// nothing it depends on has changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Version {
    session: u64,
    user: u64,
    all: u64,
}

/// A write in progress; dropping it (after the commit) marks it finished.
pub(crate) struct Writing<'a> {
    counters: &'a ChangeCounters,
    started: std::cell::Cell<bool>,
}

impl Writing<'_> {
    fn bump(&self, index: usize) {
        if !self.started.replace(true) {
            self.counters.word(BEGUN).fetch_add(1, SeqCst);
        }
        self.counters.word(index).fetch_add(1, SeqCst);
    }

    /// This write changes the session `id` (before the commit).
    pub(crate) fn session(&self, id: &str) {
        self.bump(slot(id));
    }

    /// This write changes the user `id` or all their sessions (before the commit).
    pub(crate) fn user(&self, id: &str) {
        self.bump(slot(id));
    }

    /// This write may change any session (before the commit).
    pub(crate) fn everything(&self) {
        self.bump(ALL);
    }
}

impl Drop for Writing<'_> {
    fn drop(&mut self) {
        if self.started.get() {
            self.counters.word(ENDED).fetch_add(1, SeqCst);
        }
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
        Dir(path)
    }

    #[test]
    fn a_write_in_another_mapping_changes_the_version_and_blocks_tickets_until_it_ends() {
        let dir = dir();
        let db = dir.0.join("t.db");
        let here = ChangeCounters::open(&db).unwrap();
        let there = ChangeCounters::open(&db).unwrap();

        let ticket = here.ticket().unwrap();
        let read = here.version(ticket, "s1", "u1").unwrap();
        assert_eq!(here.current("s1", "u1"), read);
        {
            let writing = there.writing();
            writing.session("s1");
            assert!(
                here.ticket().is_none(),
                "no ticket while a write is in flight"
            );
            assert!(
                here.version(ticket, "s1", "u1").is_none(),
                "began after the ticket"
            );
            assert_ne!(
                here.current("s1", "u1"),
                read,
                "the session's counter moved"
            );
        }
        let ticket = here.ticket().unwrap();
        let read = here.version(ticket, "s1", "u1").unwrap();
        there.writing().user("u1");
        assert_ne!(here.current("s1", "u1"), read, "the user's counter moved");
        let read = here.current("s1", "u1");
        there.writing().everything();
        assert_ne!(here.current("s1", "u1"), read, "`all` moved");
        let read = here.current("s1", "u1");
        drop(there.writing());
        assert_eq!(here.current("s1", "u1"), read, "a write that names nothing");
        assert!(here.ticket().is_some());
    }

    #[test]
    fn a_write_left_unfinished_is_settled_by_the_next_process_alone() {
        let dir = dir();
        let db = dir.0.join("t.db");
        let crashed = ChangeCounters::open(&db).unwrap();
        let writing = crashed.writing();
        writing.session("s1");
        std::mem::forget(writing);
        let other = ChangeCounters::open(&db).unwrap();
        assert!(other.ticket().is_none(), "not alone: the difference stays");
        drop(crashed);
        drop(other);
        let fresh = ChangeCounters::open(&db).unwrap();
        assert!(fresh.ticket().is_some(), "alone: settled");
    }

    #[test]
    fn a_file_holding_something_else_is_refused() {
        let dir = dir();
        let db = dir.0.join("t.db");
        std::fs::write(counters_path(&db), vec![0x5a; BYTES]).unwrap();
        assert!(ChangeCounters::open(&db).is_err());
    }

    #[cfg(unix)]
    #[test]
    fn the_file_is_private_and_slots_spread() {
        use std::os::unix::fs::PermissionsExt;
        let dir = dir();
        let db = dir.0.join("t.db");
        let _counters = ChangeCounters::open(&db).unwrap();
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
