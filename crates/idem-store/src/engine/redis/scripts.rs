//! The Lua scripts: each operation is one script, so it is atomic on the
//! server. `redis::Script` sends EVALSHA and falls back to EVAL (loading the
//! script) when the server does not know it yet.
//!
//! Every script touches only keys of one shard (one hash tag), so each
//! runs unchanged on Redis Cluster. A record is a hash with these fields
//! (numbers in decimal, times in milliseconds since the epoch on the
//! store's clock, see below):
//!
//! | field | meaning |
//! |---|---|
//! | `st` | state code: 1 in flight, 2 completed, 3 outcome unknown, 4 released |
//! | `tok` | fencing token |
//! | `fpv`, `fpd` | fingerprint version and 32-byte digest |
//! | `lease`, `exp`, `tomb`, `at` | lease, retention, tombstone horizons; claim time |
//! | `hr`, `status` | whether there is a response (1/0), its status |
//! | `hdr`, `body` | encoded headers, body; absent when there are none |
//! | `w` | present once a gateway waits on the claim (`in_flight = wait`) |
//! | `att` | the claim's attempt nonce (absent in records from before: 0) |
//! | `hold` | the lease holder: the claiming instance's name (absent when it gave none) |
//!
//! Time is the server's: each script that decides or writes a time reads
//! `TIME` itself (`clock`, below), and the caller sends its horizons as
//! distances from its own reading, so a gateway's clock skews nothing. With
//! `StoreClock::Caller` the caller's reading is sent instead and used as
//! the clock. A sweep is handed the server's time read at its start.
//!
//! Beside the records, each shard has a sorted set (its "due index")
//! scoring each record with the earliest time a sweep may act on it
//! (`due` in the scripts): the sweep reads only what is due.
//!
//! The decisions are ports of the shared rules, kept line for line:
//! `Record::effective` and `decide_claim` (only "may this be claimed?":
//! when not, the record is returned and `decide_claim` itself answers in
//! Rust), `owner_may_write`, `apply_*` and `sweep_action`. The shared
//! conformance suite runs against them.
//!
//! Lua numbers are doubles: times and tokens are exact below 2^53, which
//! the engine checks (tokens are the claim time in ms × 1000, so that holds
//! until the year 2255). Numbers are always formatted with `%d` before
//! they go back to Redis: every number written is an integer within
//! ±2^53 (or, for a renewed horizon, a few times that), which Lua's `%d`
//! (a C `long` here) prints exactly, and it costs the server a fraction of
//! `%.0f`'s floating-point formatting, measured at 7% of its CPU under load.

use ::redis::Script;
use std::sync::LazyLock;

/// Shared by the scripts: the earliest time `sweep_action` acts on a
/// record that is not acted on now (a claim in flight carries no payload);
/// the store's clock (`arg` is '' for the server's `TIME`, else the
/// caller's reading); a horizon `d` ms from `now`, kept within the
/// integers a Lua number holds exactly; `first_token`.
const DUE: &str = r"
local MAXN = 9007199254740991
local function fmt(n) return string.format('%d', n) end
local function clock(arg)
  if arg ~= '' then return tonumber(arg) end
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end
local function at(now, d) return math.max(math.min(now + d, MAXN), -MAXN) end
local function first_token(now) return math.max(math.max(now, 0) * 1000, 1) end
local function due(st, lease, exp, tomb, payload)
  if st == 1 then return math.max(lease, tomb) end
  if st == 4 then return math.min(lease, tomb) end
  if payload then return math.min(exp, tomb) end
  return tomb
end
";

/// Shared by the owner's final writes: announces the record to the
/// gateways that wait on it, if any marked it ([`MARK_WAITED`]: `marked`
/// is its `w` field as the script read it), by publishing its key on
/// `channel` with `cmd` (`PUBLISH` on one server, `SPUBLISH` on a shard
/// channel of the record's slot on a cluster). A failed publish never
/// fails the write (`pcall`): waiters also poll.
const ANNOUNCE: &str = r"
local function announce(marked, key, channel, cmd)
  if marked then redis.pcall(cmd, channel, key) end
end
";

/// Shared by the writes that set a response (the owner's completion, an
/// operator's write): writes the fields in `set` (name, value, ...) with
/// the encoded headers `hdr` ('' for none) and the body (when `has_body`
/// is '1') in one `HSET`, and deletes in one `HDEL` the fields in `drop`
/// with the headers and body the record has (`had_hdr`, `had_body`, as
/// the script read them) and the response has not; then the key lives
/// until the later of lease and tombstone plus `grace` (ms), and the due
/// index scores it for state `st`. One command each, not one per field:
/// every call costs the server a command and a key lookup.
const PAYLOAD: &str = r"
local function write_payload(key, index, now, st, lease, exp, tomb, set, drop, had_hdr, had_body, hdr, has_body, body, grace)
  local payload = false
  if hdr ~= '' then
    set[#set + 1] = 'hdr'
    set[#set + 1] = hdr
    payload = true
  elseif had_hdr then
    drop[#drop + 1] = 'hdr'
  end
  if has_body == '1' then
    set[#set + 1] = 'body'
    set[#set + 1] = body
    payload = true
  elseif had_body then
    drop[#drop + 1] = 'body'
  end
  redis.call('HSET', key, unpack(set))
  if #drop > 0 then redis.call('HDEL', key, unpack(drop)) end
  local horizon = math.max(lease, tomb)
  redis.call('PEXPIRE', key, fmt(math.max(horizon - now, 0) + tonumber(grace)))
  redis.call('ZADD', index, fmt(due(st, lease, exp, tomb, payload)), key)
end
";

/// KEYS: record, due index.
/// ARGV: clock ('' for the server's, else the caller's reading), fp
/// version, fp digest, reclaim_unknown ('1'/'0'), attempt, and the
/// distances of lease_until, expires_at, tombstone_until from the caller's
/// reading, TTL grace (ms), holder ('' for none).
/// Returns `{1, token, now}` when claimed, `{0, HGETALL, now}` when not,
/// `now` being the clock the decision was made at.
///
/// A claim replaces the whole record: what is left of an earlier one (its
/// payload, a waiter's mark, its holder) goes with it. A new key has none
/// of the fields read, and then there is nothing to delete; any field
/// present (a record without `st` is damaged) means there is. The fields
/// read are the short ones, so a replay never copies a body twice.
const CLAIM: &str = r"
local now = clock(ARGV[1])
local f = redis.call('HMGET', KEYS[1], 'st', 'tok', 'fpv', 'fpd', 'lease', 'exp', 'tomb', 'att',
  'at', 'hr', 'status', 'w', 'hold')
local lease = at(now, tonumber(ARGV[6]))
local exp = at(now, tonumber(ARGV[7]))
local tomb = at(now, tonumber(ARGV[8]))
local grace = tonumber(ARGV[9])
local token
if not f[1] then
  token = first_token(now)
else
  local st, last = tonumber(f[1]), tonumber(f[2])
  local olease, oexp, otomb = tonumber(f[5]), tonumber(f[6]), tonumber(f[7])
  if not (st and last and olease and oexp and otomb) then
    return redis.error_reply('idem: damaged record ' .. KEYS[1])
  end
  local same = f[3] == ARGV[2] and f[4] == ARGV[3]
  -- decide_claim, is_own_claim: the claim's own attempt, still in flight
  -- (whatever its lease says), is claimed again with its own token;
  -- refresh_own_claim: its horizons only move forward.
  if st == 1 and ARGV[5] ~= '0' and f[8] == ARGV[5] and same then
    local l, e, t = math.max(olease, lease), math.max(oexp, exp), math.max(otomb, tomb)
    redis.call('HSET', KEYS[1], 'lease', fmt(l), 'exp', fmt(e), 'tomb', fmt(t))
    redis.call('PEXPIRE', KEYS[1], fmt(math.max(math.max(l, t) - now, 0) + grace))
    redis.call('ZADD', KEYS[2], fmt(due(1, l, 0, t, false)), KEYS[1])
    return {1, f[2], now}
  end
  -- Record::effective
  local eff
  if st == 4 then eff = 'absent'
  elseif st == 1 and now < olease then eff = 'in-flight'
  elseif now >= otomb then eff = 'absent'
  elseif now >= oexp then eff = 'tombstone'
  elseif st == 1 or st == 3 then eff = 'unknown'
  elseif st == 2 then eff = 'completed'
  else return redis.error_reply('idem: unknown state code ' .. f[1] .. ' in ' .. KEYS[1]) end
  -- decide_claim: absent is claimed whatever the fingerprint; unknown only
  -- with upstream_dedupes and the same fingerprint; everything else is
  -- answered from the record.
  if not (eff == 'absent' or (eff == 'unknown' and same and ARGV[4] == '1')) then
    return {0, redis.call('HGETALL', KEYS[1]), now}
  end
  if last >= MAXN then
    return redis.error_reply('idem: fencing token out of range in ' .. KEYS[1])
  end
  token = math.max(last + 1, first_token(now))
end
if token > MAXN then
  return redis.error_reply('idem: the clock is beyond the range of fencing tokens')
end
local tok = fmt(token)
for i = 1, #f do
  if f[i] then
    redis.call('DEL', KEYS[1])
    break
  end
end
local rec = {'st', '1', 'tok', tok, 'fpv', ARGV[2], 'fpd', ARGV[3],
  'lease', fmt(lease), 'exp', fmt(exp), 'tomb', fmt(tomb), 'at', fmt(now), 'hr', '0',
  'att', ARGV[5]}
if ARGV[10] ~= '' then
  rec[#rec + 1] = 'hold'
  rec[#rec + 1] = ARGV[10]
end
redis.call('HSET', KEYS[1], unpack(rec))
local horizon = math.max(lease, tomb)
redis.call('PEXPIRE', KEYS[1], fmt(math.max(horizon - now, 0) + grace))
redis.call('ZADD', KEYS[2], fmt(due(1, lease, 0, tomb, false)), KEYS[1])
return {1, tok, now}
";

/// KEYS: record, due index. ARGV: token, the distance of lease_until from
/// the caller's reading, clock ('' for the server's).
/// Returns 1 (written) or 0 (fenced).
const RENEW: &str = r"
local f = redis.call('HMGET', KEYS[1], 'st', 'tok', 'lease', 'exp', 'tomb')
if f[1] ~= '1' or f[2] ~= ARGV[1] then return 0 end
local now = clock(ARGV[3])
local old, new = tonumber(f[3]), at(now, tonumber(ARGV[2]))
local exp, tomb = tonumber(f[4]), tonumber(f[5])
if new > old then
  -- apply_renew: the retention and tombstone horizons move with the lease.
  local moved = new - old
  redis.call('HSET', KEYS[1], 'lease', fmt(new), 'exp', fmt(exp + moved), 'tomb', fmt(tomb + moved))
  -- The key lives until the later of lease and tombstone (plus grace):
  -- move its expiry by as much as that horizon moved.
  local grow = math.max(new, tomb + moved) - math.max(old, tomb)
  if grow > 0 then
    local ttl = redis.call('PTTL', KEYS[1])
    if ttl > 0 then redis.call('PEXPIRE', KEYS[1], fmt(ttl + grow)) end
  end
  redis.call('ZADD', KEYS[2], fmt(due(1, new, 0, tomb + moved, false)), KEYS[1])
end
return 1
";

/// KEYS: record, due index. ARGV: token, clock ('' for the server's),
/// status, encoded headers ('' for none), has body ('1'/'0'), body, the
/// distances of expires_at and tombstone_until from the caller's reading,
/// TTL grace (ms), announcement channel, publish command. Returns 1
/// (written) or 0 (fenced).
const COMPLETE: &str = r"
local f = redis.call('HMGET', KEYS[1], 'st', 'tok', 'lease', 'w', 'hdr', 'body')
if f[1] ~= '1' or f[2] ~= ARGV[1] then return 0 end
local now, lease = clock(ARGV[2]), tonumber(f[3])
local exp, tomb = at(now, tonumber(ARGV[7])), at(now, tonumber(ARGV[8]))
local set = {'st', '2', 'hr', '1', 'status', ARGV[3], 'exp', fmt(exp), 'tomb', fmt(tomb)}
write_payload(KEYS[1], KEYS[2], now, 2, lease, exp, tomb, set, {}, f[5], f[6],
  ARGV[4], ARGV[5], ARGV[6], ARGV[9])
announce(f[4], KEYS[1], ARGV[10], ARGV[11])
return 1
";

/// KEYS: record, due index. ARGV: token, announcement channel, publish
/// command. Returns 1 or 0.
const MARK_UNKNOWN: &str = r"
local f = redis.call('HMGET', KEYS[1], 'st', 'tok', 'lease', 'exp', 'tomb', 'w')
if f[1] ~= '1' or f[2] ~= ARGV[1] then return 0 end
redis.call('HSET', KEYS[1], 'st', '3')
local due_at = due(3, tonumber(f[3]), tonumber(f[4]), tonumber(f[5]), false)
redis.call('ZADD', KEYS[2], fmt(due_at), KEYS[1])
announce(f[6], KEYS[1], ARGV[2], ARGV[3])
return 1
";

/// KEYS: record, due index. ARGV: token, announcement channel, publish
/// command. Returns 1 or 0.
const RELEASE: &str = r"
local f = redis.call('HMGET', KEYS[1], 'st', 'tok', 'lease', 'exp', 'tomb', 'w')
if f[1] ~= '1' or f[2] ~= ARGV[1] then return 0 end
redis.call('HSET', KEYS[1], 'st', '4')
local due_at = due(4, tonumber(f[3]), tonumber(f[4]), tonumber(f[5]), false)
redis.call('ZADD', KEYS[2], fmt(due_at), KEYS[1])
announce(f[6], KEYS[1], ARGV[2], ARGV[3])
return 1
";

/// KEYS: record. A gateway waits on the record: marks it (field `w`) so
/// the owner's final write announces it, if it is still in flight. Returns
/// 1 (marked, still in flight) or 0 (finished or gone: no need to wait).
/// The claim script's `DEL` clears the mark with the claim it was for.
const MARK_WAITED: &str = r"
if redis.call('HGET', KEYS[1], 'st') ~= '1' then return 0 end
redis.call('HSET', KEYS[1], 'w', '1')
return 1
";

/// KEYS: due index, then the records it lists as due (all of one shard).
/// ARGV: now (the store's clock as the sweep read it at its start: the
/// same reading chose the candidates, so every candidate kept is re-scored
/// past it and never chosen again by this sweep). Applies `sweep_action` to each record and re-scores what it
/// keeps. Returns `{tombstoned, deleted}`.
const SWEEP: &str = r"
local now = tonumber(ARGV[1])
local tombstoned, deleted = 0, 0
for i = 2, #KEYS do
  local k = KEYS[i]
  local f = redis.call('HMGET', k, 'st', 'lease', 'exp', 'tomb')
  local st, lease, exp, tomb = tonumber(f[1]), tonumber(f[2]), tonumber(f[3]), tonumber(f[4])
  if not (st and lease and exp and tomb) then
    -- Gone already (its TTL ran out), or damaged (its TTL still bounds it).
    redis.call('ZREM', KEYS[1], k)
  else
    local payload = redis.call('HEXISTS', k, 'body') == 1 or redis.call('HEXISTS', k, 'hdr') == 1
    -- sweep_action
    if st == 1 and now < lease then
      redis.call('ZADD', KEYS[1], fmt(due(st, lease, exp, tomb, payload)), k)
    elseif now >= tomb or (st == 4 and now >= lease) then
      redis.call('DEL', k)
      redis.call('ZREM', KEYS[1], k)
      deleted = deleted + 1
    elseif now >= exp and payload then
      -- to_tombstone: status and times stay, headers and body go.
      redis.call('HDEL', k, 'body', 'hdr')
      redis.call('ZADD', KEYS[1], fmt(due(st, lease, exp, tomb, false)), k)
      tombstoned = tombstoned + 1
    else
      redis.call('ZADD', KEYS[1], fmt(due(st, lease, exp, tomb, payload)), k)
    end
  end
end
return {tombstoned, deleted}
";

/// KEYS: record. ARGV: clock ('' for the server's). An operator's read:
/// returns `{HGETALL, now}`, `now` being the clock `decide_operator` then
/// decides at (in Rust; [`OPERATOR_WRITE`] writes its answer).
const OPERATOR_READ: &str = r"
return {redis.call('HGETALL', KEYS[1]), clock(ARGV[1])}
";

/// KEYS: record, due index. ARGV: clock ('' for the server's); the `st`,
/// `tok`, `lease`, `exp`, `tomb` read by [`OPERATOR_READ`]; the new `st`,
/// `tok`, `lease`, `exp`, `tomb`, `hr`, status ('' for none), encoded
/// headers ('' for none), has body ('1'/'0'), body; TTL grace (ms);
/// announcement channel, publish command.
///
/// A compare-and-set: the decision was made in Rust on what was read, so
/// it is written only if none of the fields that any other write changes
/// moved since (an owner's writes and a claim change `st`, `tok` or the
/// horizons; a sweep deletes the record or drops a payload that the
/// operator's record replaces anyway). Returns 1 (written) or 0 (changed:
/// read and decide again). Key expiry and the due index follow the new
/// horizons as in the other scripts; waiters are announced, since the
/// claim they wait on is settled now, and the mark goes with it.
const OPERATOR_WRITE: &str = r"
local f = redis.call('HMGET', KEYS[1], 'st', 'tok', 'lease', 'exp', 'tomb', 'w', 'status')
for i = 1, 5 do
  if tonumber(f[i]) == nil or tonumber(f[i]) ~= tonumber(ARGV[i + 1]) then return 0 end
end
local now = clock(ARGV[1])
local st, lease, exp, tomb = tonumber(ARGV[7]), tonumber(ARGV[9]), tonumber(ARGV[10]), tonumber(ARGV[11])
local set = {'st', ARGV[7], 'tok', ARGV[8], 'lease', ARGV[9], 'exp', ARGV[10],
  'tomb', ARGV[11], 'hr', ARGV[12]}
local drop = {}
if ARGV[13] ~= '' then
  set[#set + 1] = 'status'
  set[#set + 1] = ARGV[13]
elseif f[7] then
  drop[#drop + 1] = 'status'
end
if f[6] then drop[#drop + 1] = 'w' end
local had_hdr = redis.call('HEXISTS', KEYS[1], 'hdr') == 1
local had_body = redis.call('HEXISTS', KEYS[1], 'body') == 1
write_payload(KEYS[1], KEYS[2], now, st, lease, exp, tomb, set, drop, had_hdr, had_body,
  ARGV[14], ARGV[15], ARGV[16], ARGV[17])
announce(f[6], KEYS[1], ARGV[18], ARGV[19])
return 1
";

/// KEYS: records of one shard (from its due index). For the listing:
/// each record's HGETALL if it is in flight or marked outcome-unknown
/// (state 1 or 3), else `false`, in the order of KEYS.
const LIST: &str = r"
local out = {}
for i = 1, #KEYS do
  local st = redis.call('HGET', KEYS[i], 'st')
  if st == '1' or st == '3' then
    out[i] = redis.call('HGETALL', KEYS[i])
  else
    out[i] = false
  end
end
return out
";

/// The scripts, each prefixed with the shared helpers it calls (each
/// helper is a closure made on every run, so a script carries only its
/// own).
pub(super) struct Scripts {
    pub(super) claim: Script,
    pub(super) renew: Script,
    pub(super) complete: Script,
    pub(super) mark_unknown: Script,
    pub(super) release: Script,
    pub(super) sweep: Script,
    pub(super) mark_waited: Script,
    pub(super) operator_read: Script,
    pub(super) operator_write: Script,
    pub(super) list: Script,
}

pub(super) static SCRIPTS: LazyLock<Scripts> = LazyLock::new(|| {
    let with = |helpers: &[&str], body: &str| Script::new(&format!("{}{body}", helpers.concat()));
    Scripts {
        claim: with(&[DUE], CLAIM),
        renew: with(&[DUE], RENEW),
        complete: with(&[DUE, ANNOUNCE, PAYLOAD], COMPLETE),
        mark_unknown: with(&[DUE, ANNOUNCE], MARK_UNKNOWN),
        release: with(&[DUE, ANNOUNCE], RELEASE),
        sweep: with(&[DUE], SWEEP),
        mark_waited: Script::new(MARK_WAITED),
        operator_read: with(&[DUE], OPERATOR_READ),
        operator_write: with(&[DUE, ANNOUNCE, PAYLOAD], OPERATOR_WRITE),
        list: Script::new(LIST),
    }
});

#[cfg(test)]
mod tests {
    use super::*;
    use idem_core::RecordState;

    #[test]
    fn state_codes_in_the_scripts_are_the_record_states() {
        assert_eq!(RecordState::InFlight.code(), 1);
        assert_eq!(RecordState::Completed.code(), 2);
        assert_eq!(RecordState::OutcomeUnknown.code(), 3);
        assert_eq!(RecordState::Released.code(), 4);
        // Owner writes are fenced exactly like owner_may_write: same token,
        // still in flight.
        for script in [RENEW, COMPLETE, MARK_UNKNOWN, RELEASE] {
            assert!(
                script.contains("if f[1] ~= '1' or f[2] ~= ARGV[1] then return 0 end"),
                "{script}"
            );
        }
        // Times come from the store's clock, read in the script.
        for script in [CLAIM, RENEW, COMPLETE] {
            assert!(script.contains("clock(ARGV["), "{script}");
        }
        assert!(DUE.contains("redis.call('TIME')"));
    }
}
