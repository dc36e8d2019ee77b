"""The Redis ledger's server-side scripts (Lua): each step is one script, atomic in Redis.

Every script touches the same twelve keys (:data:`KEY_NAMES`), all named ``{PREFIX}:<name>``: the
``{PREFIX}`` hash tag puts them in one hash slot, so a script is atomic over all of them on a
single server and on Redis Cluster alike (see :mod:`.ledger` for why one slot per ledger).

Amounts are integers of fixed sub-units (10^-18 of the meter's unit: tokens, USD, calls), written
as decimal strings and added and compared exactly by the small arbitrary-precision arithmetic
below (Lua numbers are doubles, exact only to 2^53). A balance row is one field of the ``bal``
hash: ``"<spent> <held>"`` (a missing field is zero).

Instants (``ARGV[1]``) are microseconds since the Unix epoch from the ledger's clock, so expiry
follows the same clock as every other backend. Every script answers a list whose first element
says what happened:

* ``NOGEN``: the ledger's state is missing (a first start, or a Redis that lost its data): the
  caller rebuilds it from the durable store (:func:`tokenward.ledger.redis.drain.rebuild`) and
  runs the script again;
* ``STALE``: the budgets or stop markers changed since the caller read them (the current
  revisions follow): the caller reloads them and runs the script again;
* otherwise the script's own answer (``OK``, ``DENY``, ``EXISTS``, ``DUP``, ``GONE``).
"""

from __future__ import annotations

__all__ = ["EXTEND", "HOLD", "KEY_NAMES", "READ", "REAP", "REBUILD", "RELEASE", "SCALE", "SETTLE", "STOP"]

SCALE = 18
"""Sub-units per unit, as a power of ten: amounts are held in Redis as integers of 10^-18."""

KEY_NAMES = ("gen", "rev", "bal", "res", "rst", "rhd", "exp", "idem", "done", "gc", "stops", "rcl")
"""The keys every script receives, in this order (``{PREFIX}:<name>``):

* ``gen``: the generation of the state (a random token set when it was built); missing = lost;
* ``rev``: hash of revision counters (``budgets``, ``stops``, ``keys``) for the replicas' caches;
* ``bal``: balance rows, field ``["budget","subject_id","window_key"]`` -> ``"spent held"``;
* ``res`` / ``rst`` / ``rhd``: reservations by id: JSON, state, and holds for the scripts; a
  settled or released reservation is deleted at once (with its ``idem`` entry), an expired or
  reclaimed one kept until the retention;
* ``exp``: active reservations by expiry (sorted set, microseconds);
* ``idem``: idempotency key -> reservation id;
* ``done``: request id -> the usage event stored for it (settled once); a key with no ``idem``
  entry but a ``done`` one is the key of a settled call (``DONE``: answered from its event);
* ``gc``: expired and reclaimed reservations (``r<id>``) and requests (``d<id>``) by when they
  finished, forgotten after the retention;
* ``stops``: stop markers, field ``["scope","id"]`` -> JSON;
* ``rcl``: forwarded reservations past their time to live, waiting to be charged their hold
  (sorted set by expiry): the scripts' reaper never releases a forwarded hold, the ledger
  reclaims it (:mod:`tokenward.ledger.reclaim`) with a settlement.
"""

_PRELUDE = r"""
local K_GEN, K_REV, K_BAL, K_RES, K_RST, K_RHD, K_EXP, K_IDEM, K_DONE, K_GC, K_STOPS, K_RCL =
    KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5], KEYS[6], KEYS[7], KEYS[8], KEYS[9], KEYS[10], KEYS[11],
    KEYS[12]
local NOW = tonumber(ARGV[1])
local RETAIN = tonumber(ARGV[2])

-- exact integers: sign and base-10^7 limbs, least significant first
local BASE = 10000000
local function parse(s)
    local neg = false
    if string.byte(s, 1) == 45 then neg = true; s = string.sub(s, 2) end
    local d = {}
    local i = #s
    while i >= 1 do
        local j = i - 6
        if j < 1 then j = 1 end
        d[#d + 1] = tonumber(string.sub(s, j, i))
        i = j - 1
    end
    local n = #d
    while n > 1 and d[n] == 0 do d[n] = nil; n = n - 1 end
    if n == 0 then d[1] = 0; n = 1 end
    if n == 1 and d[1] == 0 then neg = false end
    return {neg = neg, d = d}
end
local ZERO = parse('0')
local function cmpabs(a, b)
    if #a ~= #b then if #a < #b then return -1 else return 1 end end
    for i = #a, 1, -1 do
        if a[i] ~= b[i] then if a[i] < b[i] then return -1 else return 1 end end
    end
    return 0
end
local function addabs(a, b)
    local r, carry = {}, 0
    local n = #a
    if #b > n then n = #b end
    for i = 1, n do
        local s = (a[i] or 0) + (b[i] or 0) + carry
        if s >= BASE then r[i] = s - BASE; carry = 1 else r[i] = s; carry = 0 end
    end
    if carry > 0 then r[n + 1] = carry end
    return r
end
local function subabs(a, b)
    local r, borrow = {}, 0
    for i = 1, #a do
        local s = a[i] - (b[i] or 0) - borrow
        if s < 0 then r[i] = s + BASE; borrow = 1 else r[i] = s; borrow = 0 end
    end
    local n = #r
    while n > 1 and r[n] == 0 do r[n] = nil; n = n - 1 end
    return r
end
local function add(x, y)
    if x.neg == y.neg then return {neg = x.neg, d = addabs(x.d, y.d)} end
    local c = cmpabs(x.d, y.d)
    if c == 0 then return ZERO end
    if c > 0 then return {neg = x.neg, d = subabs(x.d, y.d)} end
    return {neg = y.neg, d = subabs(y.d, x.d)}
end
local function neg(x)
    if #x.d == 1 and x.d[1] == 0 then return x end
    return {neg = not x.neg, d = x.d}
end
local function cmp(x, y)
    if x.neg ~= y.neg then if x.neg then return -1 else return 1 end end
    local c = cmpabs(x.d, y.d)
    if x.neg then return -c end
    return c
end
local function str(x)
    local parts = {string.format('%d', x.d[#x.d])}
    for i = #x.d - 1, 1, -1 do parts[#parts + 1] = string.format('%07d', x.d[i]) end
    local s = table.concat(parts)
    if x.neg then s = '-' .. s end
    return s
end
local function iszero(x) return #x.d == 1 and x.d[1] == 0 end

-- balance rows
local function getrow(f)
    local v = redis.call('HGET', K_BAL, f)
    if not v then return ZERO, ZERO end
    local sp = string.find(v, ' ', 1, true)
    return parse(string.sub(v, 1, sp - 1)), parse(string.sub(v, sp + 1))
end
local function setrow(f, s, h)
    if iszero(s) and iszero(h) then redis.call('HDEL', K_BAL, f)
    else redis.call('HSET', K_BAL, f, str(s) .. ' ' .. str(h)) end
end
local function addrow(f, ds, dh)
    local s, h = getrow(f)
    setrow(f, add(s, ds), add(h, dh))
end
local function values(fields)
    local out = {}
    if #fields == 0 then return out end
    local got = redis.call('HMGET', K_BAL, unpack(fields))
    for i = 1, #fields do out[i] = got[i] or '' end
    return out
end

-- reservations
local function drop_holds(rid)
    local hd = redis.call('HGET', K_RHD, rid)
    if not hd then return end
    local d = cjson.decode(hd)
    for _, h in ipairs(d.h) do addrow(h[1], ZERO, neg(parse(h[2]))) end
end
local function finish(rid, state)
    redis.call('HSET', K_RST, rid, state)
    redis.call('ZREM', K_EXP, rid)
    redis.call('ZREM', K_RCL, rid)
    redis.call('ZADD', K_GC, NOW, 'r' .. rid)
end
-- a settled or released reservation: nothing of it is kept (its call's record is its event)
local function forget(rid)
    local hd = redis.call('HGET', K_RHD, rid)
    if hd then
        local d = cjson.decode(hd)
        if d.k and redis.call('HGET', K_IDEM, d.k) == rid then redis.call('HDEL', K_IDEM, d.k) end
    end
    redis.call('HDEL', K_RES, rid)
    redis.call('HDEL', K_RST, rid)
    redis.call('HDEL', K_RHD, rid)
    redis.call('ZREM', K_EXP, rid)
    redis.call('ZREM', K_RCL, rid)
end
-- expire reservations past their time to live: release the holds of those never forwarded; move
-- forwarded ones (holds JSON "f") to the reclaim queue, their holds kept until they are charged
local function reap(limit)
    local ids = redis.call('ZRANGEBYSCORE', K_EXP, '-inf', NOW, 'LIMIT', 0, limit)
    for _, rid in ipairs(ids) do
        local hd = redis.call('HGET', K_RHD, rid)
        if hd and cjson.decode(hd).f then
            redis.call('ZREM', K_EXP, rid)
            redis.call('ZADD', K_RCL, NOW, rid)
        else
            drop_holds(rid)
            finish(rid, 'expired')
        end
    end
    return #ids
end
local function gc(limit)
    local old = redis.call('ZRANGEBYSCORE', K_GC, '-inf', NOW - RETAIN, 'LIMIT', 0, limit)
    for _, m in ipairs(old) do
        local id = string.sub(m, 2)
        if string.sub(m, 1, 1) == 'r' then
            local hd = redis.call('HGET', K_RHD, id)
            if hd then
                local d = cjson.decode(hd)
                if d.k and redis.call('HGET', K_IDEM, d.k) == id then redis.call('HDEL', K_IDEM, d.k) end
            end
            redis.call('HDEL', K_RES, id)
            redis.call('HDEL', K_RST, id)
            redis.call('HDEL', K_RHD, id)
        else
            redis.call('HDEL', K_DONE, id)
        end
        redis.call('ZREM', K_GC, m)
    end
end
local function existing(rid)
    return {'EXISTS', rid, redis.call('HGET', K_RES, rid) or '', redis.call('HGET', K_RST, rid) or ''}
end
-- what an idempotency key already stands for: its reservation, else its settled call's event
local function earlier(key)
    local rid = redis.call('HGET', K_IDEM, key)
    if rid then return existing(rid) end
    local done = redis.call('HGET', K_DONE, key)
    if done then return {'DONE', done} end
    return nil
end

-- every step starts here: the state must exist, and the caller's budgets must be current
local gen = redis.call('GET', K_GEN)
if not gen then return {'NOGEN'} end
if ARGV[3] ~= '' or ARGV[4] ~= '' then
    local revs = redis.call('HMGET', K_REV, 'budgets', 'stops')
    local b, s = revs[1] or '0', revs[2] or '0'
    if (ARGV[3] ~= '' and ARGV[3] ~= b) or (ARGV[4] ~= '' and ARGV[4] ~= s) then return {'STALE', b, s} end
end
local i = 5
local function arg() local v = ARGV[i]; i = i + 1; return v end
local function list() local n = tonumber(arg()); local out = {}; for k = 1, n do out[k] = arg() end; return out end
-- checks: n, then per check: limit, amount, count of field indices, the indices (1-based)
local function check(vals)
    local n = tonumber(arg())
    local ok = true
    for c = 1, n do
        local limit, amount, m = parse(arg()), parse(arg()), tonumber(arg())
        local total = amount
        for k = 1, m do
            local v = vals[tonumber(arg())]
            if v ~= '' then
                local sp = string.find(v, ' ', 1, true)
                total = add(total, add(parse(string.sub(v, 1, sp - 1)), parse(string.sub(v, sp + 1))))
            end
        end
        if cmp(total, limit) > 0 then ok = false end
    end
    return ok
end
"""

READ = (
    _PRELUDE
    + r"""
-- ARGV[5..]: idempotency key ('' for none), then the fields to read.
-- Reaps expired reservations first (as every admission does). Answers EXISTS (the key's
-- reservation), DONE (the event of the call settled under the key) or OK followed by the
-- fields' values ('' when missing).
reap(200)
gc(100)
local key = arg()
if key ~= '' then
    local found = earlier(key)
    if found then return found end
end
local out = values(list())
table.insert(out, 1, 'OK')
return out
"""
)

HOLD = (
    _PRELUDE
    + r"""
-- ARGV[5..]: idempotency key, reservation id, reservation JSON, holds JSON ({"k": key|false,
-- "h": [[field, units], ...]}), expiry (us), fields to read, checks.
-- Reaps, then holds every amount on every budget row or nothing: DENY (with the values read)
-- when a check fails (sum over its fields of spent + held, plus the amount, above the limit);
-- EXISTS or DONE (as READ) when the key was used before.
reap(200)
gc(100)
local key, rid, res, holds, expires = arg(), arg(), arg(), arg(), arg()
if key ~= '' then
    local found = earlier(key)
    if found then return found end
end
if redis.call('HEXISTS', K_RST, rid) == 1 then return existing(rid) end
local vals = values(list())
if not check(vals) then
    table.insert(vals, 1, 'DENY')
    return vals
end
redis.call('HSET', K_RES, rid, res)
redis.call('HSET', K_RST, rid, 'active')
redis.call('HSET', K_RHD, rid, holds)
redis.call('ZADD', K_EXP, tonumber(expires), rid)
if key ~= '' then redis.call('HSET', K_IDEM, key, rid) end
for _, h in ipairs(cjson.decode(holds).h) do addrow(h[1], ZERO, parse(h[2])) end
table.insert(vals, 1, 'OK')
return vals
"""
)

SETTLE = (
    _PRELUDE
    + r"""
-- ARGV[5..]: request key, event JSON, reservation id ('' for none), the reservation's state
-- after ('' for settled: it is forgotten; reclaimed: kept), charges (n, then field and signed units each), fields to
-- read, checks (a direct charge that must fit: else DENY), watched spans (n, then per span: count
-- and fields). Answers OK, the reservation's state before, the generation, and each watched
-- span's spent after the charge. Once per request key: a repeated one answers DUP and the event
-- stored the first time (a reclaim then drops the reservation's hold).
local req, event, rid, final = arg(), arg(), arg(), arg()
local stored = redis.call('HGET', K_DONE, req)
if stored then
    -- reclaiming a hold whose call was settled already (under another reservation: one admitted
    -- unchecked while this hold was still on its way to a stalled Redis): nothing more is owed,
    -- only the hold is left to drop (else the reclaim would answer DUP for ever, the hold kept)
    if final == 'reclaimed' and rid ~= '' and redis.call('HGET', K_RST, rid) == 'active' then
        drop_holds(rid)
        finish(rid, 'reclaimed')
    end
    return {'DUP', stored}
end
local n = tonumber(arg())
local charges = {}
for c = 1, n do charges[c] = {arg(), arg()} end
local reads = list()
if #reads > 0 then reap(200) end
local vals = values(reads)
if not check(vals) then
    table.insert(vals, 1, 'DENY')
    return vals
end
local before = ''
if rid ~= '' then
    before = redis.call('HGET', K_RST, rid) or ''
    if final == 'reclaimed' and before ~= 'active' then
        -- a reclaim of a reservation finished meanwhile: nothing to charge
        redis.call('ZREM', K_RCL, rid)
        return {'GONE', before}
    end
    if before == 'active' then drop_holds(rid) end
    if before ~= '' then
        if final == '' then forget(rid) else finish(rid, final) end
    end
end
for _, c in ipairs(charges) do addrow(c[1], parse(c[2]), ZERO) end
redis.call('HSET', K_DONE, req, event)
redis.call('ZADD', K_GC, NOW, 'd' .. req)
local out = {'OK', before, gen}
local w = tonumber(arg())
for s = 1, w do
    local total = ZERO
    for _, f in ipairs(list()) do
        local sp = getrow(f)
        total = add(total, sp)
    end
    out[#out + 1] = str(total)
end
return out
"""
)

RELEASE = (
    _PRELUDE
    + r"""
-- ARGV[5]: reservation id. Drops its holds and forgets it if it is active; answers OK and 1 or 0.
-- An id never seen is marked released (until the retention), so that its hold, if it is still on
-- its way (sent by a caller that gave up waiting for a stalled Redis), is never applied.
local rid = arg()
local state = redis.call('HGET', K_RST, rid)
if not state then
    redis.call('HSET', K_RST, rid, 'released')
    redis.call('ZADD', K_GC, NOW, 'r' .. rid)
    return {'OK', 0}
end
if state ~= 'active' then return {'OK', 0} end
drop_holds(rid)
forget(rid)
return {'OK', 1}
"""
)

EXTEND = (
    _PRELUDE
    + r"""
-- ARGV[5]: reservation id, ARGV[6]: its new expiry (microseconds), ARGV[7]: the same as ISO text.
-- Pushes an active reservation's expiry later (never earlier); answers OK and 1, or OK and 0 when
-- it is not active or already past its expiry (the reaper may release it any moment).
local rid, at, text = arg(), tonumber(arg()), arg()
if redis.call('HGET', K_RST, rid) ~= 'active' then return {'OK', 0} end
local current = redis.call('ZSCORE', K_EXP, rid)
if not current or tonumber(current) <= NOW then return {'OK', 0} end
if at > tonumber(current) then
    redis.call('ZADD', K_EXP, at, rid)
    local data = string.gsub(redis.call('HGET', K_RES, rid), '"expires_at":"[^"]*"', '"expires_at":"' .. text .. '"', 1)
    redis.call('HSET', K_RES, rid, data)
end
return {'OK', 1}
"""
)

REAP = (
    _PRELUDE
    + r"""
-- ARGV[5]: at most how many. Expires reservations past their time to live; answers OK and the count.
local n = reap(tonumber(arg()))
gc(1000)
return {'OK', n}
"""
)

STOP = (
    _PRELUDE
    + r"""
-- ARGV[5..]: n, then field and marker JSON each. Keeps markers that exist; bumps the stops
-- revision when one is new. Answers OK and how many were new.
local n = tonumber(arg())
local new = 0
for c = 1, n do
    local f, m = arg(), arg()
    new = new + redis.call('HSETNX', K_STOPS, f, m)
end
if new > 0 then redis.call('HINCRBY', K_REV, 'stops', 1) end
return {'OK', new}
"""
)

REBUILD = r"""
-- ARGV: generation token, revision base, rows (n, then field and spent units each), stop markers
-- (n, then field and JSON each). Builds the state from the durable store's figures, only if it
-- is missing (another replica may have rebuilt it meanwhile): answers OK or EXISTS.
if redis.call('EXISTS', KEYS[1]) == 1 then return {'EXISTS'} end
for k = 2, #KEYS do redis.call('DEL', KEYS[k]) end
local i = 3
local n = tonumber(ARGV[i]); i = i + 1
for c = 1, n do
    redis.call('HSET', KEYS[3], ARGV[i], ARGV[i + 1] .. ' 0')
    i = i + 2
end
n = tonumber(ARGV[i]); i = i + 1
for c = 1, n do
    redis.call('HSET', KEYS[11], ARGV[i], ARGV[i + 1])
    i = i + 2
end
redis.call('HSET', KEYS[2], 'budgets', ARGV[2], 'stops', ARGV[2], 'keys', ARGV[2])
redis.call('SET', KEYS[1], ARGV[1])
return {'OK'}
"""
