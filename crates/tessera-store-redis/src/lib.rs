//! tessera's session store on Redis: sessions, refresh-token families and throttling counters,
//! shared by every tessera instance, with users and keys kept in a durable store (compose the
//! two with [`tessera_store::ByAbility::split`]; the durable store's users are given to
//! [`RedisSessions::connect`]).
//!
//! # One store per lookup
//!
//! Each session carries a snapshot of what a session check needs of its user (username,
//! roles, permissions, disabled flag; never the password hash), written by `create_session`,
//! so a lookup — every `/v1/verify` — reads Redis alone and never the durable store. Why the
//! snapshot cannot be stale for a live session is the contract of
//! [`tessera_store::SessionStore`]: `create_session` writes the session, then reads the user
//! back from the durable store and replaces the snapshot if it differs (or removes the session
//! if the user is gone), and every later change to the user revokes all its sessions. A
//! session written by an older version has no snapshot; its user is read from the durable store
//! as before (so a rolling upgrade logs nobody out), until it ends.
//!
//! A lookup by session id (a JWT's `sid`) is one request (`HGETALL`). A lookup by opaque
//! token is one request on a single node (standalone, Sentinel: a script reads the token's
//! pointer and the session it names) and two on a cluster, where the pointer and the session
//! hash to different slots. [`RedisSessions::round_trips`] counts them.
//!
//! # Modes
//!
//! [`RedisSessions::connect`] takes `redis://host:6379/0`, `redis+sentinel://host:26379,…/master`
//! or `redis+cluster://host:7000,host:7001,…`, each optionally with `?prefix=NAME` (default
//! `tessera`) so several deployments can share one Redis.
//!
//! # TLS
//!
//! `rediss://`, `rediss+sentinel://` and `rediss+cluster://` connect with TLS (rustls);
//! [`RedisSessions::connect_with_tls`] takes the CA and an optional client certificate
//! ([`RedisTls`]). Sentinels with credentials of their own get them as
//! `?sentinel_username=…&sentinel_password=…`; the URL's own credentials go to the data nodes.
//!
//! # Key layout
//!
//! ```text
//! P:s:{sid}   hash   the session: u (user id), c, l, i, a, r (times), ip, ua, ah (access hash),
//!                    m (how the user signed in: `Methods::bits` in decimal; a session written
//!                    before it has none and was a password login),
//!                    and its user's snapshot: un (username), ro (roles), pe (permissions),
//!                    d ("1" when disabled; absent otherwise), lists as `<len>:<item>…`
//! P:f:{sid}   hash   its refresh family: token hash -> "0" (current) | "used_at:sealed successor"
//! P:a:<hash>  string pointer from an opaque access token's SHA-256 (hex) to its sid
//! P:r:<hash>  string pointer from a refresh token's SHA-256 (hex) to its sid
//! P:u:<uid>   zset   a user's session ids, scored by absolute expiry
//! P:all       zset   every session id, scored by absolute expiry
//! P:c:<key>   hash   a throttling counter
//! P:{P:rl}:n   string the revocation log's counter: the last number handed out
//! P:{P:rl}:log zset   the revocation log: members `seq:revoked_at:sid`, scored by seq
//! P:{P:rl}:at  zset   the same members, scored by revoked_at (for purging by time)
//! ```
//!
//! The session and its family share the hash tag `{sid}`, so every atomic change (a Lua script)
//! touches one cluster slot; so do the three keys of the revocation log, with the tag `{P:rl}`
//! (the prefix in it keeps deployments sharing a cluster apart). Pointers and indexes are
//! written before the session and are only hints: a lookup follows a pointer and then checks
//! the session itself (its current access hash, its family), so a stale or dangling pointer
//! finds nothing.
//!
//! The revocation log is appended to and read by one script each, so numbers become visible in
//! the order they are handed out (a reader never finds an entry below one it has seen).
//!
//! # Expiry
//!
//! Redis drops every key on its own: a session (and its family) at its idle or absolute expiry,
//! whichever is first, plus [`ENDED_SESSION_RETENTION`]; a revoked one that long after its
//! revocation; pointers at the absolute expiry plus the retention. The retention lets a client
//! be told `token_expired`/`token_revoked` rather than "unknown" for a few minutes; after it, a
//! token whose session is gone is refused all the same. Expiry times come from the session
//! record (`EXPIREAT`), compared with the Redis server's clock.
//!
//! The revocation log is emptied by `purge_revocations` (exactly by time, through its time
//! index); as a backstop when nothing purges, the log and its index expire
//! [`REVOCATION_LOG_TTL`] after the latest append. The log's counter never expires (one small
//! key): numbers must never be handed out twice.
//!
//! # Fail closed
//!
//! Every operation is bounded by [`OP_TIMEOUT`]; a connection that broke is re-established in
//! the background and operations fail with [`StoreError::Unavailable`] until it is.
//!
//! # Durability
//!
//! A session store must not lose an acknowledged revocation. Run Redis with `appendonly yes`
//! and `appendfsync always` (every write is on disk before Redis answers); with replicas, also
//! `min-replicas-to-write 1`. See the README.

#![warn(unreachable_pub)]
#![deny(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod conn;
mod scripts;

use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use redis::{AsyncCommands, RedisError, Script};
use tessera_core::UnixTime;
use tessera_core::assurance::Methods;
use tessera_core::ids::{SessionId, UserId};
use tessera_core::opaque::TokenHash;
use tessera_core::session::{SessionTimes, Touch};
use tessera_store::{
    Counter, CounterStore, Health, NewSession, RefreshOutcome, RevocationEntry, RevocationPage,
    Rotation, Session, SessionRecord, SessionStore, StoreError, StoreResult, User, UserStore,
    UserSummary,
};

pub use crate::conn::RedisTls;
use crate::conn::{Conn, Source, Target};

/// Longest any operation may take before it fails as unavailable.
///
/// The contract is a 503 within one second end to end (SPEC §7); a request makes at most one
/// Redis call before it can fail, so 650 ms leaves 350 ms for the HTTP round trip, the rest of
/// the request and a loaded machine (1 s here answered after ~1,002 ms, issue 11 #10).
pub const OP_TIMEOUT: Duration = Duration::from_millis(650);

/// Seconds an ended session (revoked, idle or past its absolute expiry) is kept before Redis
/// drops it.
pub const ENDED_SESSION_RETENTION: i64 = 300;

/// Seconds the revocation log (and its time index) lives after the latest append, when nothing
/// purges it: far longer than entries need keeping (an access token's lifetime), so only a log
/// nobody purges and nobody appended to for this long expires.
pub const REVOCATION_LOG_TTL: i64 = 30 * 24 * 3600;

/// Revocation-log entries one purge script removes; a purge runs as many as it needs, so no
/// single script blocks Redis for long.
const PURGE_BATCH: u64 = 1000;

/// The Redis [`SessionStore`].
pub struct RedisSessions {
    source: Source,
    prefix: String,
    scripts: Scripts,
    /// The durable store's users: read when a session is created (to confirm its snapshot)
    /// and for sessions written without a snapshot, never for a lookup of one that has it.
    users: Arc<dyn UserStore>,
    /// Requests sent to Redis (see [`RedisSessions::round_trips`]).
    round_trips: AtomicU64,
    /// One server holds every key (standalone, Sentinel), so a script may read a key it finds
    /// (an access token's session) in the same request; not in a cluster.
    one_node: bool,
}

struct Scripts {
    create: Script,
    snapshot: Script,
    by_access: Script,
    index: Script,
    touch: Script,
    revoke: Script,
    delete: Script,
    by_refresh: Script,
    rotate: Script,
    hit: Script,
    release: Script,
    log_revocations: Script,
    revocations_after: Script,
    purge_revocations: Script,
}

impl std::fmt::Debug for RedisSessions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisSessions")
            .field("prefix", &self.prefix)
            .finish_non_exhaustive()
    }
}

/// Classifies a Redis error: our own mistakes (a script error, an unexpected reply) are
/// corrupt; everything else (connection, timeouts, failover, loading) is unavailable.
fn failure(error: RedisError) -> StoreError {
    use redis::ErrorKind;
    let ours = matches!(
        error.kind(),
        ErrorKind::UnexpectedReturnType | ErrorKind::Parse
    ) || matches!(
        error.code(),
        Some("ERR" | "CROSSSLOT" | "WRONGTYPE" | "NOSCRIPT")
    );
    if ours {
        StoreError::Corrupt(error.to_string())
    } else {
        StoreError::Unavailable(Box::new(error))
    }
}

fn corrupt(detail: impl Into<String>) -> StoreError {
    StoreError::Corrupt(detail.into())
}

/// The script that reads a session by its access hash on one node (KEYS: the access pointer
/// `<prefix>:a:<hex>`; ARGV: `<prefix>:s:{`, the hex hash): what a verify sends, for
/// benchmarks that time the same script sent straight by the same client library.
pub const LOOKUP_BY_ACCESS_SCRIPT: &str = scripts::BY_ACCESS;

/// A token hash as the store writes it into keys and fields: 64 lowercase hex digits.
pub fn hex(hash: &TokenHash) -> String {
    use std::fmt::Write;
    hash.as_bytes()
        .iter()
        .fold(String::with_capacity(64), |mut out, b| {
            let _ = write!(out, "{b:02x}");
            out
        })
}

/// The fields of a session's hash, in the order `create_session` writes them
/// (bulk loaders, such as the benchmarks' seeding, write the same): the session's own, then
/// its user's snapshot.
pub fn session_fields(new: &NewSession) -> Vec<(&'static str, String)> {
    let (s, times) = (&new.session, &new.session.times);
    let mut fields = vec![
        ("u", s.user_id.to_string()),
        ("c", times.created_at.to_string()),
        ("l", times.last_seen_at.to_string()),
        ("i", times.idle_expires_at.to_string()),
        ("a", times.absolute_expires_at.to_string()),
        ("m", s.amr.bits().to_string()),
    ];
    if let Some(revoked) = times.revoked_at {
        fields.push(("r", revoked.to_string()));
    }
    if let Some(ip) = &s.ip {
        fields.push(("ip", ip.clone()));
    }
    if let Some(jkt) = &s.jkt {
        fields.push(("k", jkt.clone()));
    }
    if let Some(key) = &s.device_key {
        fields.push(("dk", key.clone()));
    }
    if let Some(ua) = &s.user_agent {
        fields.extend(USER_AGENT_FIELDS.iter().copied().zip(compact_parts(ua)));
    }
    if let Some(access) = &new.access_hash {
        fields.push(("ah", hex(access)));
    }
    fields.extend(snapshot_fields(&new.user));
    fields
}

/// The longest value Redis keeps a hash compact for (`hash-max-listpack-value`, 64 bytes by
/// default): a single longer value turns the whole hash into a hash table, about twice the
/// memory (a session's hash with a browser's user agent: 1104 bytes instead of 504).
const LISTPACK_VALUE_BYTES: usize = 64;

/// The fields a user agent is stored in, one part of at most [`LISTPACK_VALUE_BYTES`] each:
/// `ua`, then `ua1`, `ua2`… Sixteen hold the 256 characters the server keeps of one
/// (`MAX_USER_AGENT_CHARS`, at most 1024 bytes); anything longer is cut there.
const USER_AGENT_FIELDS: [&str; 16] = [
    "ua", "ua1", "ua2", "ua3", "ua4", "ua5", "ua6", "ua7", "ua8", "ua9", "ua10", "ua11", "ua12",
    "ua13", "ua14", "ua15",
];

/// `value` cut into parts of at most [`LISTPACK_VALUE_BYTES`], on character boundaries; an
/// empty value is one empty part (it is stored, as it was given).
fn compact_parts(value: &str) -> Vec<String> {
    if value.is_empty() {
        return vec![String::new()];
    }
    let mut parts = Vec::new();
    let mut rest = value;
    while !rest.is_empty() {
        let mut end = rest.len().min(LISTPACK_VALUE_BYTES);
        while !rest.is_char_boundary(end) {
            end -= 1;
        }
        let (part, tail) = rest.split_at(end);
        parts.push(part.to_owned());
        rest = tail;
    }
    parts
}

/// The user agent stored by [`session_fields`]: its parts joined in order.
fn joined_user_agent(fields: &HashMap<String, String>) -> Option<String> {
    let mut parts = USER_AGENT_FIELDS.iter().map_while(|name| fields.get(*name));
    let mut joined = parts.next()?.clone();
    parts.for_each(|part| joined.push_str(part));
    Some(joined)
}

/// The snapshot fields of a user (`d` only when disabled).
fn snapshot_fields(user: &UserSummary) -> Vec<(&'static str, String)> {
    let mut fields = vec![
        ("un", user.username.clone()),
        ("ro", encode_list(&user.roles)),
        ("pe", encode_list(&user.permissions)),
    ];
    if user.disabled {
        fields.push(("d", "1".to_owned()));
    }
    fields
}

/// A list as `<byte length>:<item>` for each item, concatenated: lossless for any strings
/// (roles stored before the name rules may hold commas or line breaks).
fn encode_list(items: &[String]) -> String {
    items.iter().fold(String::new(), |mut out, item| {
        out.push_str(&item.len().to_string());
        out.push(':');
        out.push_str(item);
        out
    })
}

/// The items of an [`encode_list`] string; `None` when it is not one.
fn decode_list(mut encoded: &str) -> Option<Vec<String>> {
    let mut items = Vec::new();
    while !encoded.is_empty() {
        let (len, rest) = encoded.split_once(':')?;
        let len: usize = len.parse().ok()?;
        items.push(rest.get(..len)?.to_owned());
        encoded = rest.get(len..)?;
    }
    Some(items)
}

/// When Redis should drop a session with these times: its end plus the retention.
fn expire_at(times: &SessionTimes) -> i64 {
    let end = times.idle_expires_at.min(times.absolute_expires_at);
    let end = times.revoked_at.map_or(end, |r| end.min(r));
    end.saturating_add(ENDED_SESSION_RETENTION)
}

fn text(bytes: Vec<u8>) -> StoreResult<String> {
    String::from_utf8(bytes).map_err(|_| corrupt("a session field is not UTF-8"))
}

/// A session as Redis keeps it: with its user's snapshot, or without one when an older version
/// wrote it.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Stored {
    session: Session,
    user: Option<UserSummary>,
}

/// A session from its hash fields (HGETALL, flat); `None` for an empty reply (no session).
fn session_from(id: &str, flat: Vec<Vec<u8>>) -> StoreResult<Option<Session>> {
    Ok(stored_from(id, flat)?.map(|stored| stored.session))
}

/// A session and its user's snapshot from its hash fields (HGETALL, flat); `None` for an empty
/// reply (no session).
fn stored_from(id: &str, flat: Vec<Vec<u8>>) -> StoreResult<Option<Stored>> {
    if flat.is_empty() {
        return Ok(None);
    }
    let mut fields: HashMap<String, String> = HashMap::new();
    let mut items = flat.into_iter();
    while let (Some(k), Some(v)) = (items.next(), items.next()) {
        fields.insert(text(k)?, text(v)?);
    }
    let time = |name: &str| -> StoreResult<i64> {
        fields
            .get(name)
            .and_then(|v| v.parse().ok())
            .ok_or_else(|| corrupt(format!("session field {name} is missing or not a number")))
    };
    let user_id: UserId = fields
        .get("u")
        .cloned()
        .ok_or_else(|| corrupt("session without a user"))?
        .into();
    let session = Session {
        id: id.to_owned().into(),
        user_id: user_id.clone(),
        times: SessionTimes {
            created_at: time("c")?,
            last_seen_at: time("l")?,
            idle_expires_at: time("i")?,
            absolute_expires_at: time("a")?,
            revoked_at: match fields.get("r") {
                Some(_) => Some(time("r")?),
                None => None,
            },
        },
        ip: fields.get("ip").cloned(),
        user_agent: joined_user_agent(&fields),
        // Sessions written before `m` existed were all password logins.
        amr: match fields.get("m") {
            None => Methods::PASSWORD,
            Some(bits) => bits
                .parse()
                .map(Methods::from_bits)
                .map_err(|_| corrupt("session field m is not a number from 0 to 255"))?,
        },
        jkt: fields.get("k").cloned(),
        device_key: fields.get("dk").cloned(),
    };
    // A session has a snapshot when it has a username; then it has all of it.
    let user = match fields.get("un") {
        None => None,
        Some(username) => {
            let list = |name: &str| {
                fields
                    .get(name)
                    .and_then(|v| decode_list(v))
                    .ok_or_else(|| corrupt(format!("session field {name} is missing or invalid")))
            };
            Some(UserSummary {
                id: user_id,
                username: username.clone(),
                roles: list("ro")?,
                permissions: list("pe")?,
                disabled: match fields.get("d").map(String::as_str) {
                    None => false,
                    Some("1") => true,
                    Some(_) => return Err(corrupt("session field d is not 1")),
                },
            })
        }
    };
    Ok(Some(Stored { session, user }))
}

fn live(session: &Session, now: UnixTime) -> bool {
    session.times.revoked_at.is_none()
        && session.times.idle_expires_at > now
        && session.times.absolute_expires_at > now
}

impl RedisSessions {
    /// Connects to the Redis of `url` (see the crate documentation) and checks that it answers.
    ///
    /// # Errors
    /// [`StoreError::Corrupt`] for a URL that does not parse, [`StoreError::Unavailable`] when
    /// Redis does not answer within [`OP_TIMEOUT`].
    ///
    /// Sessions are returned with their users as `users` (the durable store) has them.
    pub async fn connect(
        url: &str,
        users: Arc<dyn UserStore>,
    ) -> Result<RedisSessions, StoreError> {
        RedisSessions::connect_with_tls(url, users, &RedisTls::default()).await
    }

    /// As [`RedisSessions::connect`], with the CA and client certificate of a `rediss://` URL
    /// (with none set, the system's roots are trusted and no client certificate is sent).
    ///
    /// # Errors
    /// As [`RedisSessions::connect`]; [`StoreError::Corrupt`] also when `tls` is set for a URL
    /// without TLS. PEM that does not parse and a server certificate that does not verify are
    /// [`StoreError::Unavailable`] (the connection cannot be made).
    pub async fn connect_with_tls(
        url: &str,
        users: Arc<dyn UserStore>,
        tls: &RedisTls,
    ) -> Result<RedisSessions, StoreError> {
        let target = Target::parse(url)?;
        if tls.is_set() && !target.mode.tls() {
            return Err(corrupt(
                "a CA or client certificate is set for Redis, but the sessions URL is not rediss…",
            ));
        }
        let source = tokio::time::timeout(OP_TIMEOUT * 2, Source::connect(&target.mode, tls))
            .await
            .map_err(|e| StoreError::Unavailable(Box::new(e)))?
            .map_err(failure)?;
        let store = RedisSessions {
            source,
            prefix: target.prefix,
            scripts: Scripts {
                create: Script::new(scripts::CREATE),
                snapshot: Script::new(scripts::SNAPSHOT),
                by_access: Script::new(scripts::BY_ACCESS),
                index: Script::new(scripts::INDEX),
                touch: Script::new(scripts::TOUCH),
                revoke: Script::new(scripts::REVOKE),
                delete: Script::new(scripts::DELETE),
                by_refresh: Script::new(scripts::BY_REFRESH),
                rotate: Script::new(scripts::ROTATE),
                hit: Script::new(scripts::HIT),
                release: Script::new(scripts::RELEASE),
                log_revocations: Script::new(scripts::LOG_REVOCATIONS),
                revocations_after: Script::new(scripts::REVOCATIONS_AFTER),
                purge_revocations: Script::new(scripts::PURGE_REVOCATIONS),
            },
            users,
            round_trips: AtomicU64::new(0),
            one_node: !matches!(target.mode, conn::Mode::Cluster { .. }),
        };
        Health::ping(&store).await?;
        Ok(store)
    }

    /// The key prefix in use.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// How many requests this store has sent to Redis since it connected: each command,
    /// pipeline or script is one network round trip (whether or not it was answered). For
    /// measurements and tests.
    pub fn round_trips(&self) -> u64 {
        self.round_trips.load(Ordering::Relaxed)
    }

    fn session_key(&self, sid: &str) -> String {
        format!("{}:s:{{{sid}}}", self.prefix)
    }

    fn family_key(&self, sid: &str) -> String {
        format!("{}:f:{{{sid}}}", self.prefix)
    }

    fn access_key(&self, hash: &str) -> String {
        format!("{}:a:{hash}", self.prefix)
    }

    fn refresh_key(&self, hash: &str) -> String {
        format!("{}:r:{hash}", self.prefix)
    }

    fn user_key(&self, user_id: &str) -> String {
        format!("{}:u:{user_id}", self.prefix)
    }

    fn all_key(&self) -> String {
        format!("{}:all", self.prefix)
    }

    fn counter_key(&self, key: &str) -> String {
        format!("{}:c:{key}", self.prefix)
    }

    /// The revocation log's keys: counter, log, time index (one hash tag, one cluster slot).
    fn revocation_keys(&self) -> [String; 3] {
        let p = &self.prefix;
        ["n", "log", "at"].map(|name| format!("{p}:{{{p}:rl}}:{name}"))
    }

    /// Runs one operation on a connection within [`OP_TIMEOUT`].
    async fn run<T, F, Fut>(&self, work: F) -> StoreResult<T>
    where
        F: FnOnce(Conn) -> Fut,
        Fut: Future<Output = Result<T, RedisError>>,
    {
        let attempt = async {
            let conn = self.source.get().await?;
            self.round_trips.fetch_add(1, Ordering::Relaxed);
            work(conn).await
        };
        match tokio::time::timeout(OP_TIMEOUT, attempt).await {
            Ok(Ok(value)) => Ok(value),
            Ok(Err(error)) => {
                self.source.failed(&error);
                Err(failure(error))
            }
            Err(elapsed) => {
                self.source.failed(&RedisError::from(std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    "redis did not answer in time",
                )));
                Err(StoreError::Unavailable(Box::new(elapsed)))
            }
        }
    }

    async fn hgetall(&self, sid: &str) -> StoreResult<Option<Session>> {
        let flat = self.fields(sid).await?;
        session_from(sid, flat)
    }

    /// Replaces the user snapshot of session `sid`, if it still exists (a session deleted or
    /// revoked meanwhile stays so).
    async fn rewrite_snapshot(&self, sid: &str, user: &UserSummary) -> StoreResult<()> {
        let key = self.session_key(sid);
        let (roles, permissions) = (encode_list(&user.roles), encode_list(&user.permissions));
        self.run(|mut c| async move {
            self.scripts
                .snapshot
                .key(key)
                .arg(&user.username)
                .arg(roles)
                .arg(permissions)
                .arg(if user.disabled { "1" } else { "" })
                .invoke_async::<()>(&mut c)
                .await
        })
        .await
    }

    /// Removes a session that could not be confirmed, with its pointers and index entries.
    async fn discard(&self, session: &Session) -> StoreResult<()> {
        self.delete_session(&session.id).await?;
        let (user_key, all) = (self.user_key(&session.user_id), self.all_key());
        let sid = session.id.as_str();
        self.run(|mut c| async move { c.zrem::<_, _, ()>(user_key, sid).await })
            .await?;
        self.run(|mut c| async move { c.zrem::<_, _, ()>(all, sid).await })
            .await
    }

    /// The session `pointer` (an access or refresh pointer key) leads to.
    async fn follow(&self, pointer: String) -> StoreResult<Option<String>> {
        self.run(|mut c| async move { c.get(pointer).await }).await
    }

    /// Deletes one session and its pointers. Returns the owner when the session existed.
    async fn delete_session(&self, sid: &str) -> StoreResult<Option<String>> {
        let (s, f) = (self.session_key(sid), self.family_key(sid));
        let out: Vec<String> = self
            .run(
                |mut c| async move { self.scripts.delete.key(s).key(f).invoke_async(&mut c).await },
            )
            .await?;
        let mut items = out.into_iter();
        let Some(user_id) = items.next() else {
            return Ok(None);
        };
        let mut pointers = Vec::new();
        if let Some(access) = items.next().filter(|a| !a.is_empty()) {
            pointers.push(self.access_key(&access));
        }
        pointers.extend(items.map(|r| self.refresh_key(&r)));
        // One key per command: pointers hash to different cluster slots.
        for pointer in pointers {
            self.run(|mut c| async move { c.del::<_, ()>(pointer).await })
                .await?;
        }
        Ok(Some(user_id))
    }

    /// Ids in an index sorted set, between `min` and `max` (Redis score syntax).
    async fn index(&self, key: String, min: &str, max: &str) -> StoreResult<Vec<String>> {
        self.run(|mut c| async move { c.zrangebyscore(key, min, max).await })
            .await
    }

    async fn sessions(&self, ids: Vec<String>, now: UnixTime) -> StoreResult<Vec<Session>> {
        let mut sessions = Vec::new();
        for id in ids {
            if let Some(session) = self.hgetall(&id).await?
                && live(&session, now)
            {
                sessions.push(session);
            }
        }
        sessions.sort_by(|a, b| {
            b.times
                .created_at
                .cmp(&a.times.created_at)
                .then_with(|| b.id.cmp(&a.id))
        });
        Ok(sessions)
    }
}

/// The session operations on sessions as Redis keeps them (with their user's snapshot, if any).
impl RedisSessions {
    /// The session with its user: the snapshot it carries, or for a session written without
    /// one (by an older version), the user as the durable store has it now; `None` when that
    /// user is gone.
    async fn with_user(&self, stored: Option<Stored>) -> StoreResult<Option<SessionRecord>> {
        let Some(Stored { session, user }) = stored else {
            return Ok(None);
        };
        let user = match user {
            Some(snapshot) => snapshot,
            // Older sessions are read as before rather than refused, so an upgrade logs no one
            // out; they are as safe as before (the current user, read on every lookup).
            None => match self.users.user_by_id(&session.user_id).await? {
                Some(user) => summary(user),
                None => return Ok(None),
            },
        };
        Ok(Some(SessionRecord { session, user }))
    }

    /// The fields of the session with this id (HGETALL, flat).
    async fn fields(&self, sid: &str) -> StoreResult<Vec<Vec<u8>>> {
        let key = self.session_key(sid);
        self.run(|mut c| async move { c.hgetall(key).await }).await
    }

    async fn stored_by_access_hash(&self, hash: &TokenHash) -> StoreResult<Option<Stored>> {
        let hash = hex(hash);
        if self.one_node {
            // One request: the pointer and the session it names, read together.
            let pointer = self.access_key(&hash);
            let sessions = format!("{}:s:{{", self.prefix);
            let reply: Vec<Vec<u8>> = self
                .run(|mut c| async move {
                    self.scripts
                        .by_access
                        .key(pointer)
                        .arg(sessions)
                        .arg(&hash)
                        .invoke_async(&mut c)
                        .await
                })
                .await?;
            let mut items = reply.into_iter();
            let Some(sid) = items.next() else {
                return Ok(None);
            };
            return stored_from(&text(sid)?, items.collect());
        }
        let Some(sid) = self.follow(self.access_key(&hash)).await? else {
            return Ok(None);
        };
        let flat = self.fields(&sid).await?;
        let current = flat
            .chunks(2)
            .find(|pair| pair.first().map(Vec::as_slice) == Some(b"ah".as_slice()))
            .and_then(|pair| pair.get(1));
        // The pointer is a hint: only the session's current access hash is authoritative
        // (after a rotation the old pointer may linger until it expires).
        if current.map(Vec::as_slice) != Some(hash.as_bytes()) {
            return Ok(None);
        }
        stored_from(&sid, flat)
    }

    async fn stored_by_id(&self, id: &str) -> StoreResult<Option<Stored>> {
        let flat = self.fields(id).await?;
        stored_from(id, flat)
    }

    async fn stored_by_refresh_hash(&self, hash: &TokenHash) -> StoreResult<Option<Stored>> {
        let hash = hex(hash);
        let Some(sid) = self.follow(self.refresh_key(&hash)).await? else {
            return Ok(None);
        };
        let (s, f) = (self.session_key(&sid), self.family_key(&sid));
        let flat: Vec<Vec<u8>> = self
            .run(|mut c| async move {
                self.scripts
                    .by_refresh
                    .key(s)
                    .key(f)
                    .arg(&hash)
                    .invoke_async(&mut c)
                    .await
            })
            .await?;
        stored_from(&sid, flat)
    }

    async fn rotate_stored(&self, rotation: &Rotation) -> StoreResult<RefreshOutcome<Stored>> {
        let presented = hex(&rotation.presented);
        let Some(sid) = self.follow(self.refresh_key(&presented)).await? else {
            return Ok(RefreshOutcome::Unknown);
        };
        let Some(session) = self.hgetall(&sid).await? else {
            return Ok(RefreshOutcome::Unknown);
        };
        // The successor's pointers go in before the rotation takes effect, so the moment any
        // client holds the new pair (this one, or a concurrent repeat) it can be looked up. A
        // losing attempt's pointers lead to hashes the family does not hold, and are removed.
        let pointer_until = u64::try_from(
            session
                .times
                .absolute_expires_at
                .saturating_add(ENDED_SESSION_RETENTION),
        )
        .unwrap_or(0)
        .max(1);
        let successor = hex(&rotation.successor);
        let new_access = rotation.new_access_hash.as_ref().map(hex);
        let mut written = vec![self.refresh_key(&successor)];
        if let Some(access) = &new_access {
            written.push(self.access_key(access));
        }
        let sid_ref = sid.as_str();
        for pointer in &written {
            self.run(|mut c| async move {
                redis::cmd("SET")
                    .arg(pointer)
                    .arg(sid_ref)
                    .arg("EXAT")
                    .arg(pointer_until)
                    .query_async::<()>(&mut c)
                    .await
            })
            .await?;
        }
        let (s, f) = (self.session_key(&sid), self.family_key(&sid));
        let access_arg = new_access.clone().unwrap_or_default();
        let reply: Vec<Vec<u8>> = self
            .run(|mut c| async move {
                self.scripts
                    .rotate
                    .key(s)
                    .key(f)
                    .arg(&presented)
                    .arg(&successor)
                    .arg(rotation.sealed_successor.as_slice())
                    .arg(access_arg)
                    .arg(rotation.grace)
                    .arg(rotation.idle_timeout)
                    .arg(rotation.now)
                    .arg(ENDED_SESSION_RETENTION)
                    .invoke_async(&mut c)
                    .await
            })
            .await?;
        let mut items = reply.into_iter();
        let status = items.next().map(text).transpose()?.unwrap_or_default();
        let outcome = match status.as_str() {
            "rotated" => {
                let old_access = items.next().map(text).transpose()?.unwrap_or_default();
                let session = stored_from(&sid, items.collect())?
                    .ok_or_else(|| corrupt("a rotated session has no fields"))?;
                if !old_access.is_empty() && new_access.is_some() {
                    let old = self.access_key(&old_access);
                    // Best effort: the old pointer no longer matches the session anyway.
                    let _ = self
                        .run(|mut c| async move { c.del::<_, ()>(old).await })
                        .await;
                }
                return Ok(RefreshOutcome::Rotated(session));
            }
            "repeated" => {
                let sealed_successor = items
                    .next()
                    .ok_or_else(|| corrupt("a repeat without its sealed successor"))?;
                let record = stored_from(&sid, items.collect())?
                    .ok_or_else(|| corrupt("a repeated session has no fields"))?;
                RefreshOutcome::Repeated {
                    sealed_successor,
                    record,
                }
            }
            "reuse" => RefreshOutcome::ReuseDetected {
                session_id: sid.clone().into(),
            },
            "ended" => RefreshOutcome::SessionEnded {
                revoked: items.next().as_deref() == Some(b"1".as_slice()),
            },
            "unknown" => RefreshOutcome::Unknown,
            other => return Err(corrupt(format!("unexpected rotation reply {other:?}"))),
        };
        for pointer in written {
            let _ = self
                .run(|mut c| async move { c.del::<_, ()>(pointer).await })
                .await;
        }
        Ok(outcome)
    }
}

fn summary(user: User) -> UserSummary {
    UserSummary {
        id: user.id,
        username: user.username,
        roles: user.roles,
        permissions: user.permissions,
        disabled: user.disabled,
    }
}

#[async_trait]
impl SessionStore for RedisSessions {
    async fn create_session(&self, new: &NewSession) -> StoreResult<()> {
        let s = &new.session;
        let times = &s.times;
        let pointer_until = times
            .absolute_expires_at
            .saturating_add(ENDED_SESSION_RETENTION);
        // Pointers and indexes first: once the session exists it is findable and listed (so a
        // revoke-all can find it); if a later step fails, what was written leads nowhere.
        let mut pointers = Vec::new();
        if let Some(access) = &new.access_hash {
            pointers.push(self.access_key(&hex(access)));
        }
        if let Some(refresh) = &new.refresh_hash {
            pointers.push(self.refresh_key(&hex(refresh)));
        }
        for pointer in pointers {
            let at = u64::try_from(pointer_until).unwrap_or(0);
            self.run(|mut c| async move {
                redis::cmd("SET")
                    .arg(pointer)
                    .arg(s.id.as_str())
                    .arg("EXAT")
                    .arg(at.max(1))
                    .query_async::<()>(&mut c)
                    .await
            })
            .await?;
        }
        let user_key = self.user_key(&s.user_id);
        self.run(|mut c| async move {
            self.scripts
                .index
                .key(user_key)
                .arg(s.id.as_str())
                .arg(times.absolute_expires_at)
                .arg(pointer_until)
                .invoke_async::<()>(&mut c)
                .await
        })
        .await?;
        let all = self.all_key();
        self.run(|mut c| async move {
            c.zadd::<_, _, _, ()>(all, s.id.as_str(), times.absolute_expires_at)
                .await
        })
        .await?;

        let fields = session_fields(new);
        let refresh = new.refresh_hash.as_ref().map(hex).unwrap_or_default();
        let (sk, fk) = (self.session_key(&s.id), self.family_key(&s.id));
        let created: i64 = self
            .run(|mut c| async move {
                let mut invocation = self.scripts.create.key(sk);
                invocation.key(fk).arg(expire_at(times)).arg(refresh);
                for (name, value) in &fields {
                    invocation.arg(*name).arg(value);
                }
                invocation.invoke_async(&mut c).await
            })
            .await?;
        if created == 0 {
            return Err(StoreError::Conflict);
        }
        // The session is now in its user's index, so any revocation of the user's sessions
        // from here on finds it. Read the user back: a change committed before this read (and
        // whose revocation may have run before the session existed) is taken into the
        // snapshot; a change after it revokes the session. Without this, a login that read the
        // user just before an administrator changed or disabled it would keep the old state.
        let confirmed = match self.users.user_by_id(&s.user_id).await {
            Ok(user) => user.map(summary),
            Err(error) => {
                // Unconfirmed: the caller hands out no token for it; remove it all the same.
                let _ = self.discard(s).await;
                return Err(error);
            }
        };
        match confirmed {
            Some(user) if user == new.user => Ok(()),
            Some(user) => self.rewrite_snapshot(&s.id, &user).await,
            None => {
                self.delete_user_sessions(&s.user_id).await?;
                Err(corrupt(format!("no user {} for a new session", s.user_id)))
            }
        }
    }

    async fn session_by_access_hash(&self, hash: &TokenHash) -> StoreResult<Option<SessionRecord>> {
        let stored = self.stored_by_access_hash(hash).await?;
        self.with_user(stored).await
    }

    async fn session_by_id(&self, id: &SessionId) -> StoreResult<Option<SessionRecord>> {
        let stored = self.stored_by_id(id).await?;
        self.with_user(stored).await
    }

    async fn session_by_refresh_hash(
        &self,
        hash: &TokenHash,
    ) -> StoreResult<Option<SessionRecord>> {
        let stored = self.stored_by_refresh_hash(hash).await?;
        self.with_user(stored).await
    }

    async fn rotate_refresh(&self, rotation: &Rotation) -> StoreResult<RefreshOutcome> {
        let outcome = self.rotate_stored(rotation).await?;
        let record = match outcome.record() {
            Some(stored) => self.with_user(Some(stored.clone())).await?,
            None => None,
        };
        // A session whose user is gone is unknown, as in a single store where it was deleted.
        Ok(outcome.try_map(|_| record))
    }

    async fn touch_session(&self, id: &SessionId, touch: Touch) -> StoreResult<()> {
        let (s, f) = (self.session_key(id), self.family_key(id));
        self.run(|mut c| async move {
            self.scripts
                .touch
                .key(s)
                .key(f)
                .arg(touch.last_seen_at)
                .arg(touch.idle_expires_at)
                .arg(ENDED_SESSION_RETENTION)
                .invoke_async::<()>(&mut c)
                .await
        })
        .await
    }

    async fn revoke_session(&self, id: &SessionId, now: UnixTime) -> StoreResult<bool> {
        let (s, f) = (self.session_key(id), self.family_key(id));
        let revoked: i64 = self
            .run(|mut c| async move {
                self.scripts
                    .revoke
                    .key(s)
                    .key(f)
                    .arg(now)
                    .arg(ENDED_SESSION_RETENTION)
                    .invoke_async(&mut c)
                    .await
            })
            .await?;
        Ok(revoked == 1)
    }

    async fn revoke_user_sessions(
        &self,
        user_id: &UserId,
        except: Option<&SessionId>,
        now: UnixTime,
    ) -> StoreResult<Vec<SessionId>> {
        let ids = self.index(self.user_key(user_id), "-inf", "+inf").await?;
        let mut revoked = Vec::new();
        // Each session's revocation is one script that reports whether it was live, so an id
        // is returned by the one call that revoked it.
        for id in ids
            .into_iter()
            .map(SessionId::from)
            .filter(|id| Some(id) != except)
        {
            if self.revoke_session(&id, now).await? {
                revoked.push(id);
            }
        }
        Ok(revoked)
    }

    async fn delete_user_sessions(&self, user_id: &UserId) -> StoreResult<()> {
        let user_key = self.user_key(user_id);
        let ids = self.index(user_key.clone(), "-inf", "+inf").await?;
        for id in &ids {
            self.delete_session(id).await?;
        }
        let all = self.all_key();
        self.run(|mut c| async move {
            if !ids.is_empty() {
                c.zrem::<_, _, ()>(all, &ids).await?;
            }
            c.del::<_, ()>(user_key).await
        })
        .await
    }

    async fn list_sessions(
        &self,
        user_id: Option<&UserId>,
        now: UnixTime,
    ) -> StoreResult<Vec<Session>> {
        // Only sessions whose absolute expiry is after `now` can be live.
        let min = format!("({now}");
        let key = match user_id {
            Some(user_id) => self.user_key(user_id),
            None => self.all_key(),
        };
        let ids = self.index(key, &min, "+inf").await?;
        self.sessions(ids, now).await
    }

    async fn purge_sessions(&self, before: UnixTime) -> StoreResult<u64> {
        let max = format!("({before}");
        let ids = self.index(self.all_key(), "-inf", &max).await?;
        let mut count = 0;
        for id in &ids {
            if let Some(user_id) = self.delete_session(id).await? {
                count += 1;
                let user_key = self.user_key(&user_id);
                self.run(|mut c| async move { c.zrem::<_, _, ()>(user_key, id).await })
                    .await?;
            }
        }
        let all = self.all_key();
        self.run(|mut c| async move {
            c.zrembyscore::<_, _, _, ()>(all, "-inf", max.as_str())
                .await
        })
        .await?;
        Ok(count)
    }

    async fn log_revocations(&self, session_ids: &[SessionId], now: UnixTime) -> StoreResult<()> {
        if session_ids.is_empty() {
            return Ok(());
        }
        let [counter, log, at] = self.revocation_keys();
        let _last: i64 = self
            .run(|mut c| async move {
                let mut invocation = self.scripts.log_revocations.key(counter);
                invocation.key(log).key(at).arg(now).arg(REVOCATION_LOG_TTL);
                for id in session_ids {
                    invocation.arg(id.as_str());
                }
                invocation.invoke_async(&mut c).await
            })
            .await?;
        Ok(())
    }

    async fn revocations_after(&self, after: u64, limit: usize) -> StoreResult<RevocationPage> {
        let [counter, log, _] = self.revocation_keys();
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let reply: Vec<Vec<u8>> = self
            .run(|mut c| async move {
                self.scripts
                    .revocations_after
                    .key(counter)
                    .key(log)
                    .arg(after)
                    .arg(limit)
                    .invoke_async(&mut c)
                    .await
            })
            .await?;
        let mut items = reply.into_iter();
        let last_seq = items
            .next()
            .map(text)
            .transpose()?
            .and_then(|n| n.parse().ok())
            .ok_or_else(|| corrupt("the revocation log's counter is not a number"))?;
        let entries = items
            .map(|member| revocation_entry(&text(member)?))
            .collect::<StoreResult<Vec<_>>>()?;
        Ok(RevocationPage { entries, last_seq })
    }

    async fn purge_revocations(&self, before: UnixTime) -> StoreResult<u64> {
        let [_, log, at] = self.revocation_keys();
        let mut purged = 0;
        loop {
            let (log, at) = (log.clone(), at.clone());
            let dropped: u64 = self
                .run(|mut c| async move {
                    self.scripts
                        .purge_revocations
                        .key(log)
                        .key(at)
                        .arg(before)
                        .arg(PURGE_BATCH)
                        .invoke_async(&mut c)
                        .await
                })
                .await?;
            purged += dropped;
            if dropped < PURGE_BATCH {
                return Ok(purged);
            }
        }
    }

    fn drops_expired_sessions(&self) -> bool {
        true
    }
}

/// A revocation-log entry from its member, `seq:revoked_at:sid`.
fn revocation_entry(member: &str) -> StoreResult<RevocationEntry> {
    let mut parts = member.splitn(3, ':');
    let (Some(seq), Some(revoked_at), Some(sid)) = (parts.next(), parts.next(), parts.next())
    else {
        return Err(corrupt("a revocation-log entry is not seq:revoked_at:sid"));
    };
    Ok(RevocationEntry {
        seq: seq
            .parse()
            .map_err(|_| corrupt("a revocation-log entry's number is not a number"))?,
        session_id: sid.into(),
        revoked_at: revoked_at
            .parse()
            .map_err(|_| corrupt("a revocation-log entry's time is not a number"))?,
    })
}

#[async_trait]
impl CounterStore for RedisSessions {
    async fn hit_counter(&self, key: &str, now: UnixTime, window: i64) -> StoreResult<Counter> {
        let key = self.counter_key(key);
        let reply: Vec<i64> = self
            .run(|mut c| async move {
                self.scripts
                    .hit
                    .key(key)
                    .arg(now)
                    .arg(window)
                    .invoke_async(&mut c)
                    .await
            })
            .await?;
        match reply.as_slice() {
            [count, start, last] => Ok(Counter {
                count: u32::try_from(*count).map_err(|_| corrupt("counter out of range"))?,
                window_start: *start,
                last_at: *last,
            }),
            _ => Err(corrupt("unexpected counter reply")),
        }
    }

    async fn counter(&self, key: &str, now: UnixTime, window: i64) -> StoreResult<Option<Counter>> {
        let key = self.counter_key(key);
        let (count, start, last): (Option<u32>, Option<i64>, Option<i64>) = self
            .run(|mut c| async move {
                redis::cmd("HMGET")
                    .arg(key)
                    .arg("n")
                    .arg("s")
                    .arg("l")
                    .query_async(&mut c)
                    .await
            })
            .await?;
        Ok(match (count, start, last) {
            (Some(count), Some(window_start), Some(last_at))
                if now.saturating_sub(window_start) < window =>
            {
                Some(Counter {
                    count,
                    window_start,
                    last_at,
                })
            }
            _ => None,
        })
    }

    async fn release_counter(&self, key: &str, window_start: UnixTime) -> StoreResult<()> {
        let key = self.counter_key(key);
        self.run(|mut c| async move {
            self.scripts
                .release
                .key(key)
                .arg(window_start)
                .invoke_async::<()>(&mut c)
                .await
        })
        .await
    }

    async fn clear_counter(&self, key: &str) -> StoreResult<()> {
        let key = self.counter_key(key);
        self.run(|mut c| async move { c.del::<_, ()>(key).await })
            .await
    }
}

#[async_trait]
impl Health for RedisSessions {
    async fn ping(&self) -> StoreResult<()> {
        self.run(|mut c| async move { redis::cmd("PING").query_async::<()>(&mut c).await })
            .await
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests;
