//! The Lua scripts that make each multi-step bus operation atomic in Redis.
//!
//! Every change to a delivery (ack, extend, give back, bury) first checks
//! that the delivery is still the caller's: the entry is pending for the same
//! consumer with the same delivery count. A reclaim by any consumer bumps the
//! count, so a consumer that lost a message to the visibility timeout can no
//! longer ack, extend or bury it: a late ack does nothing, as the trait asks.
//!
//! Errors that mean "the stream or group is gone" are caught with
//! `redis.pcall` and either answered (a delivery whose group vanished is
//! settled: there is nothing left to settle) or returned as the server's own
//! error reply, so the caller sees `NOGROUP` and recreates the group.
//! [`redis::Script`] runs them with `EVALSHA` and loads them again after a
//! restart (`NOSCRIPT`).

use redis::Script;

/// Settles one delivery if it is still the caller's (see the module doc).
///
/// KEYS: stream, dead-letter stream. ARGV: op (`ack`, `extend`, `retry`,
/// `dead`), group, consumer, entry id, delivery count; for `retry`: envelope,
/// deliveries so far; for `dead`: envelope, deliveries, reason, time (ms),
/// dead-letter cap, `1` if malformed else `0`. Returns 1 if settled, 0 if the
/// delivery was no longer the caller's.
const SETTLE: &str = r"
local p = redis.pcall('XPENDING', KEYS[1], ARGV[2], ARGV[4], ARGV[4], 1)
if type(p) ~= 'table' or p.err or #p == 0 then return 0 end
local e = p[1]
if e[2] ~= ARGV[3] or tostring(e[4]) ~= ARGV[5] then return 0 end
local op = ARGV[1]
if op == 'extend' then
  redis.call('XCLAIM', KEYS[1], ARGV[2], ARGV[3], 0, ARGV[4], 'JUSTID')
  return 1
elseif op == 'retry' then
  redis.call('XADD', KEYS[1], '*', 'envelope', ARGV[6], 'group', ARGV[2], 'deliveries', ARGV[7])
elseif op == 'dead' then
  redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[10], '*',
    'group', ARGV[2], 'reason', ARGV[8], 'deliveries', ARGV[7], 'at', ARGV[9],
    'source', ARGV[4], 'malformed', ARGV[11], 'envelope', ARGV[6])
elseif op ~= 'ack' then
  return redis.error_reply('ERR unknown settle operation ' .. op)
end
redis.call('XACK', KEYS[1], ARGV[2], ARGV[4])
return 1
";

/// Claims one entry of the group that has been pending longer than the
/// visibility timeout, and says how often it was delivered.
///
/// KEYS: stream. ARGV: group, consumer, min idle (ms), cursor. Returns
/// `{cursor}` or `{cursor, entry, delivery count}`. Scans at most 200
/// pending entries per call (20 `XAUTOCLAIM ... COUNT 1` steps).
const RECLAIM: &str = r"
local cursor = ARGV[4]
for _ = 1, 20 do
  local r = redis.pcall('XAUTOCLAIM', KEYS[1], ARGV[1], ARGV[2], ARGV[3], cursor, 'COUNT', 1)
  if r.err then return r end
  cursor = r[1]
  local e = r[2][1]
  if type(e) == 'table' then
    local p = redis.call('XPENDING', KEYS[1], ARGV[1], e[1], e[1], 1)
    local count = 1
    if type(p[1]) == 'table' then count = p[1][4] end
    return {cursor, e, count}
  end
  if cursor == '0-0' then break end
end
return {cursor}
";

/// Claims again one entry pending for this consumer that it does not hold
/// (a read whose reply was lost when the caller dropped `next`, or a
/// previous process with the same consumer name).
///
/// KEYS: stream. ARGV: group, consumer, ids held. Returns `{}` or
/// `{entry, delivery count}`; the claim counts as a delivery.
const RECOVER: &str = r"
local held = {}
for i = 3, #ARGV do held[ARGV[i]] = true end
local p = redis.pcall('XPENDING', KEYS[1], ARGV[1], '-', '+', 1000, ARGV[2])
if p.err then return p end
for _, row in ipairs(p) do
  if not held[row[1]] then
    local c = redis.call('XCLAIM', KEYS[1], ARGV[1], ARGV[2], 0, row[1])
    if type(c[1]) == 'table' then return {c[1], row[4] + 1} end
  end
end
return {}
";

/// Creates a consumer group: at the stream's start if it is the topic's
/// first group (so messages published before any group wait for it) or if
/// asked (recreating a group that vanished), else at its end (a new group
/// gets what is published from now on). An existing group is left alone.
/// A group created at the end is told how many entries the stream ever had
/// (`ENTRIESREAD`, Redis 7), so that Redis can report its lag.
///
/// KEYS: stream. ARGV: group, `1` to start at the beginning regardless.
/// Returns 1 if created, 0 if it existed.
const CREATE_GROUP: &str = r"
local start = '$'
if ARGV[2] == '1' then
  start = '0'
else
  local g = redis.pcall('XINFO', 'GROUPS', KEYS[1])
  if g.err or #g == 0 then start = '0' end
end
local r
local added = nil
if start == '$' then
  local info = redis.pcall('XINFO', 'STREAM', KEYS[1])
  if not info.err then
    for i = 1, #info, 2 do
      if info[i] == 'entries-added' then added = info[i + 1] end
    end
  end
end
if added then
  r = redis.pcall('XGROUP', 'CREATE', KEYS[1], ARGV[1], start, 'MKSTREAM', 'ENTRIESREAD', added)
else
  r = redis.pcall('XGROUP', 'CREATE', KEYS[1], ARGV[1], start, 'MKSTREAM')
end
if r.err then
  if string.sub(r.err, 1, 9) == 'BUSYGROUP' then return 0 end
  return r
end
return 1
";

/// Trims the stream of entries every group has acknowledged: those older
/// than the oldest entry any group still holds pending or has yet to read.
/// Trimming is approximate (`MINID ~`): Redis frees whole nodes only, and
/// never an entry at or after the bound. A stream without groups is kept
/// whole (its messages wait for the first group). Also removes consumers
/// with nothing pending that have not read for the given time.
///
/// KEYS: stream. ARGV: idle time (ms) after which a consumer with nothing
/// pending is removed. Returns how many entries were removed.
const TRIM: &str = r"
local groups = redis.pcall('XINFO', 'GROUPS', KEYS[1])
if groups.err or #groups == 0 then return 0 end
local forget_after = tonumber(ARGV[1])
local best, best_ms, best_seq = nil, 0, 0
for _, g in ipairs(groups) do
  local info = {}
  for i = 1, #g, 2 do info[g[i]] = g[i + 1] end
  local bound = info['last-delivered-id']
  if info['pending'] > 0 then
    bound = redis.call('XPENDING', KEYS[1], info['name'])[2]
  end
  local ms, seq = string.match(bound, '^(%d+)-(%d+)$')
  ms, seq = tonumber(ms), tonumber(seq)
  if best == nil or ms < best_ms or (ms == best_ms and seq < best_seq) then
    best, best_ms, best_seq = bound, ms, seq
  end
  for _, c in ipairs(redis.call('XINFO', 'CONSUMERS', KEYS[1], info['name'])) do
    local consumer = {}
    for i = 1, #c, 2 do consumer[c[i]] = c[i + 1] end
    if consumer['pending'] == 0 and consumer['idle'] > forget_after then
      redis.call('XGROUP', 'DELCONSUMER', KEYS[1], info['name'], consumer['name'])
    end
  end
end
if best == nil or best == '0-0' then return 0 end
return redis.call('XTRIM', KEYS[1], 'MINID', '~', best)
";

/// Counts the messages waiting to be delivered, summed over the groups
/// (each group's `lag`), or the stream's length when it has no group yet.
/// Where Redis cannot tell a group's lag (Redis 6.2, or after entries were
/// deleted by hand) its unread entries are counted, up to 10 000.
///
/// KEYS: stream. Returns the count.
const DEPTH: &str = r"
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
local groups = redis.call('XINFO', 'GROUPS', KEYS[1])
if #groups == 0 then return redis.call('XLEN', KEYS[1]) end
local total = 0
for _, g in ipairs(groups) do
  local info = {}
  for i = 1, #g, 2 do info[g[i]] = g[i + 1] end
  local lag = info['lag']
  if type(lag) ~= 'number' then
    local after = '(' .. info['last-delivered-id']
    lag = #redis.call('XRANGE', KEYS[1], after, '+', 'COUNT', 10000)
  end
  total = total + lag
end
return total
";

/// Moves one dead letter back to its topic, for its group only, unless
/// another caller already did.
///
/// KEYS: dead-letter stream, stream. ARGV: dead-letter entry id, envelope,
/// group. Returns 1 if moved, 0 if it was gone.
const REQUEUE: &str = r"
if redis.call('XDEL', KEYS[1], ARGV[1]) == 0 then return 0 end
redis.call('XADD', KEYS[2], '*', 'envelope', ARGV[2], 'group', ARGV[3])
return 1
";

/// The bus's scripts, hashed once.
#[derive(Debug)]
pub(crate) struct Scripts {
    /// See [`SETTLE`].
    pub(crate) settle: Script,
    /// See [`RECLAIM`].
    pub(crate) reclaim: Script,
    /// See [`RECOVER`].
    pub(crate) recover: Script,
    /// See [`CREATE_GROUP`].
    pub(crate) create_group: Script,
    /// See [`TRIM`].
    pub(crate) trim: Script,
    /// See [`DEPTH`].
    pub(crate) depth: Script,
    /// See [`REQUEUE`].
    pub(crate) requeue: Script,
}

impl Scripts {
    /// Hashes every script.
    pub(crate) fn new() -> Self {
        Self {
            settle: Script::new(SETTLE),
            reclaim: Script::new(RECLAIM),
            recover: Script::new(RECOVER),
            create_group: Script::new(CREATE_GROUP),
            trim: Script::new(TRIM),
            depth: Script::new(DEPTH),
            requeue: Script::new(REQUEUE),
        }
    }
}
