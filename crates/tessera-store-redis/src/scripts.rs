//! The Lua scripts that make multi-step changes atomic. Each touches only keys of one session
//! (`…:s:{sid}` and `…:f:{sid}`, one hash tag, so one cluster slot), the keys of the revocation
//! log (`P:{P:rl}:…`, one hash tag) or a single key.
//!
//! Times are Unix seconds passed as decimal strings and formatted back with `%d`, so they
//! survive Lua's floating-point numbers exactly (they are far below 2^53).

/// Creates a session. KEYS: session, family. ARGV: expire-at, first refresh hash or '', then
/// field/value pairs. Returns 0 when the id is taken.
pub(crate) const CREATE: &str = r"
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
redis.call('HSET', KEYS[1], unpack(ARGV, 3))
redis.call('EXPIREAT', KEYS[1], ARGV[1])
if ARGV[2] ~= '' then
  redis.call('HSET', KEYS[2], ARGV[2], '0')
  redis.call('EXPIREAT', KEYS[2], ARGV[1])
end
return 1
";

/// Replaces a session's user snapshot. KEYS: session. ARGV: username, roles, permissions (as
/// `session_fields` writes them), '1' when disabled or ''. Never creates a session; leaves its
/// times and revocation alone.
pub(crate) const SNAPSHOT: &str = r"
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
redis.call('HSET', KEYS[1], 'un', ARGV[1], 'ro', ARGV[2], 'pe', ARGV[3])
if ARGV[4] == '1' then
  redis.call('HSET', KEYS[1], 'd', '1')
else
  redis.call('HDEL', KEYS[1], 'd')
end
return 1
";

/// Adds a session to a user's index. KEYS: index. ARGV: session id, score (absolute expiry),
/// expire-at. The index lives as long as its longest-lived session.
pub(crate) const INDEX: &str = r"
redis.call('ZADD', KEYS[1], ARGV[2], ARGV[1])
local t = redis.call('EXPIRETIME', KEYS[1])
if t < tonumber(ARGV[3]) then redis.call('EXPIREAT', KEYS[1], ARGV[3]) end
return 1
";

/// Writes activity. KEYS: session, family. ARGV: last seen, idle expiry, retention. Never
/// creates a session; a revoked one keeps its (shorter) expiry.
pub(crate) const TOUCH: &str = r"
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
redis.call('HSET', KEYS[1], 'l', ARGV[1], 'i', ARGV[2])
if redis.call('HEXISTS', KEYS[1], 'r') == 0 then
  local a = tonumber(redis.call('HGET', KEYS[1], 'a'))
  local e = string.format('%d', math.min(tonumber(ARGV[2]), a) + tonumber(ARGV[3]))
  redis.call('EXPIREAT', KEYS[1], e)
  redis.call('EXPIREAT', KEYS[2], e)
end
return 1
";

/// Revokes a session. KEYS: session, family. ARGV: now, retention. Returns 1 when it was live
/// (not revoked before). The session is kept `retention` seconds more, never longer than it
/// would have been.
pub(crate) const REVOKE: &str = r"
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
if redis.call('HEXISTS', KEYS[1], 'r') == 1 then return 0 end
redis.call('HSET', KEYS[1], 'r', ARGV[1])
local e = tonumber(ARGV[1]) + tonumber(ARGV[2])
local t = redis.call('EXPIRETIME', KEYS[1])
if t < 0 or e < t then
  redis.call('EXPIREAT', KEYS[1], string.format('%d', e))
  redis.call('EXPIREAT', KEYS[2], string.format('%d', e))
end
return 1
";

/// Deletes a session. KEYS: session, family. Returns {} when it did not exist, else
/// {user id, access hash or '', refresh hashes…} so the caller can drop the pointers.
pub(crate) const DELETE: &str = r"
if redis.call('EXISTS', KEYS[1]) == 0 then
  redis.call('DEL', KEYS[2])
  return {}
end
local out = {redis.call('HGET', KEYS[1], 'u') or '', redis.call('HGET', KEYS[1], 'ah') or ''}
for _, h in ipairs(redis.call('HKEYS', KEYS[2])) do table.insert(out, h) end
redis.call('DEL', KEYS[1], KEYS[2])
return out
";

/// The session of an opaque access token, in one request: for a single node (standalone or
/// Sentinel) only. KEYS: the access pointer. ARGV: the session keys' prefix (`P:s:{`), the
/// token's hash (hex). Returns {sid, the session's fields…}, or {} when the pointer leads to no
/// session whose current access hash is this one.
///
/// The session key is not declared: it is named by the pointer's value, which only this
/// script can read atomically with it. Redis requires declared keys only to route a script in
/// a cluster; on one node every key is on the server that runs it (and ACL key rules still
/// apply to the commands inside). A cluster does the same in two requests (the pointer, then
/// the session on its own slot).
pub(crate) const BY_ACCESS: &str = r"
local sid = redis.call('GET', KEYS[1])
if not sid then return {} end
local s = ARGV[1] .. sid .. '}'
if redis.call('HGET', s, 'ah') ~= ARGV[2] then return {} end
local out = {sid}
for _, v in ipairs(redis.call('HGETALL', s)) do table.insert(out, v) end
return out
";

/// The session of a refresh token. KEYS: session, family. ARGV: refresh hash. Returns the
/// session's fields (HGETALL), or {} when the token is not in the session's family.
pub(crate) const BY_REFRESH: &str = r"
if redis.call('HEXISTS', KEYS[2], ARGV[1]) == 0 then return {} end
return redis.call('HGETALL', KEYS[1])
";

/// Rotates a refresh token. KEYS: session, family. ARGV: presented, successor, sealed
/// successor, new access hash or '', grace, idle timeout, now, retention.
///
/// Returns {'unknown'}, {'ended', '1'|'0'} (revoked or expired), {'reuse'} (the session is now
/// revoked), {'repeated', sealed, fields…} or {'rotated', old access hash or '', fields…}.
/// The decision is `tessera_store::Rotation::decide`'s, written again in Lua because read,
/// decide and write must be one atomic step in Redis; the conformance check
/// `rotation_outcomes_follow_the_decision_rule` runs a table of states and times through this
/// script and compares every outcome with that function.
pub(crate) const ROTATE: &str = r"
local s, f = KEYS[1], KEYS[2]
if redis.call('EXISTS', s) == 0 then return {'unknown'} end
local st = redis.call('HGET', f, ARGV[1])
if not st then return {'unknown'} end
local h = redis.call('HMGET', s, 'r', 'a', 'i')
local now = tonumber(ARGV[7])
local a = tonumber(h[2])
if h[1] then return {'ended', '1'} end
if now >= a or now >= tonumber(h[3]) then return {'ended', '0'} end
if st ~= '0' then
  local colon = string.find(st, ':', 1, true)
  local used = tonumber(string.sub(st, 1, colon - 1))
  if now - used <= tonumber(ARGV[5]) then
    local out = {'repeated', string.sub(st, colon + 1)}
    for _, v in ipairs(redis.call('HGETALL', s)) do table.insert(out, v) end
    return out
  end
  redis.call('HSET', s, 'r', ARGV[7])
  local e = now + tonumber(ARGV[8])
  local t = redis.call('EXPIRETIME', s)
  if t < 0 or e < t then
    redis.call('EXPIREAT', s, string.format('%d', e))
    redis.call('EXPIREAT', f, string.format('%d', e))
  end
  return {'reuse'}
end
redis.call('HSET', f, ARGV[1], ARGV[7] .. ':' .. ARGV[3])
redis.call('HSET', f, ARGV[2], '0')
local old = redis.call('HGET', s, 'ah') or ''
if ARGV[4] ~= '' then redis.call('HSET', s, 'ah', ARGV[4]) end
local idle = math.min(now + tonumber(ARGV[6]), a)
redis.call('HSET', s, 'l', ARGV[7], 'i', string.format('%d', idle))
local e = string.format('%d', math.min(idle, a) + tonumber(ARGV[8]))
redis.call('EXPIREAT', s, e)
redis.call('EXPIREAT', f, e)
local out = {'rotated', old}
for _, v in ipairs(redis.call('HGETALL', s)) do table.insert(out, v) end
return out
";

/// Counts a hit. KEYS: counter. ARGV: now, window. Returns {count, window start, last}.
/// A counter whose window has passed starts over; the key lives `window` seconds past the
/// latest hit, which is past its window's end.
pub(crate) const HIT: &str = r"
local h = redis.call('HMGET', KEYS[1], 'n', 's')
local now = tonumber(ARGV[1])
local w = tonumber(ARGV[2])
local n, s
if (not h[1]) or (now - tonumber(h[2]) >= w) then
  n = 1
  s = now
else
  n = tonumber(h[1]) + 1
  s = tonumber(h[2])
end
local ns, ss = string.format('%d', n), string.format('%d', s)
redis.call('HSET', KEYS[1], 'n', ns, 's', ss, 'l', ARGV[1])
redis.call('EXPIRE', KEYS[1], string.format('%d', math.max(w, 1)))
return {ns, ss, ARGV[1]}
";

/// Takes back one hit. KEYS: counter. ARGV: window start of the hit. Only in that window (a
/// restarted one has another start) and never below 0; the expiry and `l` stay as they are.
pub(crate) const RELEASE: &str = r"
local h = redis.call('HMGET', KEYS[1], 'n', 's')
if h[1] and tonumber(h[2]) == tonumber(ARGV[1]) and tonumber(h[1]) > 0 then
  redis.call('HINCRBY', KEYS[1], 'n', -1)
end
return 0
";

/// Appends to the revocation log. KEYS: counter, log, time index. ARGV: now, TTL of the log
/// and its index, then the session ids. Each id gets the next number from the counter, in
/// order; its member is `seq:revoked_at:sid`, scored by seq in the log and by revoked_at in
/// the index. One script, so numbers become visible in the order they are handed out. Returns
/// the last number handed out.
pub(crate) const LOG_REVOCATIONS: &str = r"
local count = #ARGV - 2
if count < 1 then return tonumber(redis.call('GET', KEYS[1]) or '0') end
local last = redis.call('INCRBY', KEYS[1], count)
for i = 1, count do
  local seq = string.format('%d', last - count + i)
  local member = seq .. ':' .. ARGV[1] .. ':' .. ARGV[i + 2]
  redis.call('ZADD', KEYS[2], seq, member)
  redis.call('ZADD', KEYS[3], ARGV[1], member)
end
redis.call('EXPIRE', KEYS[2], ARGV[2])
redis.call('EXPIRE', KEYS[3], ARGV[2])
return last
";

/// A page of the revocation log. KEYS: counter, log. ARGV: after, limit (> 0, or no entries
/// are read). Returns {last number handed out, members numbered above `after`, ascending…}.
pub(crate) const REVOCATIONS_AFTER: &str = r"
local out = {redis.call('GET', KEYS[1]) or '0'}
if tonumber(ARGV[2]) > 0 then
  local page = redis.call('ZRANGEBYSCORE', KEYS[2], '(' .. ARGV[1], '+inf', 'LIMIT', 0, ARGV[2])
  for _, m in ipairs(page) do table.insert(out, m) end
end
return out
";

/// Drops up to a batch of revocation-log entries revoked before a time. KEYS: log, time index.
/// ARGV: before, batch size. Returns how many were dropped (fewer than the batch: no more).
pub(crate) const PURGE_REVOCATIONS: &str = r"
local old = redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', '(' .. ARGV[1], 'LIMIT', 0, ARGV[2])
if #old > 0 then
  redis.call('ZREM', KEYS[1], unpack(old))
  redis.call('ZREM', KEYS[2], unpack(old))
end
return #old
";
