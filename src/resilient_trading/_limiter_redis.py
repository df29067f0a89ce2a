"""The limiter's budget in Redis: one Lua script, one round trip, and a local share in outages.

Every operation (reserve, release, charge, pause, status, merge) is one ``EVALSHA`` of the
script below, which runs :mod:`resilient_trading._limiter_rules` line for line on the server:
it reads the server's ``TIME``, trims, checks every limit with the FIFO reservation rule,
writes and sets expiries. The script is loaded once (``SCRIPT LOAD``) and reloaded on
``NOSCRIPT`` (after a Redis restart). Keys are hash-tagged (``resilient-trading:limiter:{key}``
and ``...:sharers``) so both live on one Redis Cluster slot. The Redis must run with
``maxmemory-policy noeviction``: an evicted budget would forget its window.

When Redis cannot be reached (``on_error="fallback"``, the default), the budget does not raise:

1. It logs one warning and switches to a *local share*: each limit's budget divided by the
   number of sharers seen alive at the last contact (heartbeats in ``...:sharers``). The first
   window after the outage is treated as full (what others admitted just before it is
   unknown), then this process admits at most ``budget // N`` per window.
2. It retries Redis with exponential backoff (0.25 s doubling to 2 s).
3. Back in contact (even with an empty Redis after a restart), it first writes its own
   admissions of the last window back, plus a reserve covering sharers still on their local
   share for one backoff interval and one window, then resumes sharing the budget.

Why this module is long: about half of it is the Lua script, kept next to the Python that
calls it so the argument order of the two cannot drift apart.
"""

from __future__ import annotations

import logging
import math
import secrets
import threading
from collections.abc import Callable
from typing import Any

from resilient_trading import _limiter_rules as rules
from resilient_trading._errors import NetworkError, RateLimitedError, redact
from resilient_trading._limiter_state import Refused

__all__ = ["RedisBudget"]

log = logging.getLogger("resilient_trading.ratelimit")

_BACKOFF_MIN = 0.25
_BACKOFF_MAX = 2.0

SCRIPT = r"""
-- resilient-trading rate budget: one round trip per operation.
-- Mirrors src/resilient_trading/_limiter_rules.py (same rule, same fields).
-- KEYS[1]: the budget's state, MessagePack (`status` returns JSON). Each ring keeps its buckets
-- in one binary string `s` of 16-byte records (index, weight as big-endian doubles; stamp =
-- index * width) and a running `total`: the common call (room now, nobody queued) trims the
-- front and appends at the end of that string without decoding it. Every other path decodes
-- the rings into arrays `i`, `w`, runs the general rule, and encodes them back.
-- KEYS[2]: sharers' heartbeats (sorted set, score = ms).
-- ARGV: op, sharer, nrings, (budget, period_ms, width_ms) * nrings, op arguments...
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + tonumber(t[2]) / 1000   -- ms, fractional
local floor_now, ceil_now = math.floor(now), math.ceil(now)
local op, sharer, nrings = ARGV[1], ARGV[2], tonumber(ARGV[3])
local MAX_AHEAD = 86400000

local raw = redis.call('GET', KEYS[1])
local st, repaired = nil, false
if raw then
  local ok, decoded = pcall(cmsgpack.unpack, raw)
  if ok and type(decoded) == 'table' and decoded.v == 4 and type(decoded.rings) == 'table' then
    st = decoded
  else
    repaired = true
  end
end
local longest = 0
for r = 1, nrings do
  local p = tonumber(ARGV[3 + 3 * r - 1])
  if p > longest then longest = p end
end
if not st then
  st = {v = 4, paused_until = 0, last = floor_now, queue = {}, rings = {}, next = 0, contended = 0}
  if repaired then st.paused_until = ceil_now + longest end
end
local queue = st.queue

local REC = 16
local function decode(ring)  -- binary string -> arrays (idempotent)
  if ring.i then return end
  local ii, ww, s = {}, {}, ring.s
  for k = 1, #s / REC do
    ii[k], ww[k] = struct.unpack('>dd', s, (k - 1) * REC + 1)
  end
  ring.i, ring.w = ii, ww
end
local function encode(ring)  -- arrays -> binary string
  if not ring.i then return end
  local parts = {}
  for k = 1, #ring.i do parts[k] = struct.pack('>dd', ring.i[k], ring.w[k]) end
  ring.s, ring.i, ring.w = table.concat(parts), nil, nil
end
local function decode_all()
  for _, ring in ipairs(st.rings) do decode(ring) end
end

-- a step back of the server clock: move every stored time back with it
local step = 0
if st.last > floor_now then
  step = st.last - floor_now
  decode_all()
  for _, ring in ipairs(st.rings) do
    local ni, nw, n = {}, {}, 0
    for k = 1, #ring.i do
      local idx = math.ceil((ring.i[k] * ring.width - step) / ring.width)
      if n > 0 and ni[n] == idx then
        nw[n] = nw[n] + ring.w[k]
      else
        n = n + 1
        ni[n], nw[n] = idx, ring.w[k]
      end
    end
    ring.i, ring.w = ni, nw
  end
  for _, q in ipairs(queue) do q[1] = q[1] - step end
  if st.paused_until > 0 then st.paused_until = st.paused_until - step end
  if st.next > 0 then st.next = st.next - step end
  if st.contended > 0 then st.contended = st.contended - step end
end
st.last = floor_now

-- the rings this caller needs (others' rings are kept and counted into)
local mine = {}
for r = 1, nrings do
  local budget = tonumber(ARGV[3 + 3 * r - 2])
  local period = tonumber(ARGV[3 + 3 * r - 1])
  local width = tonumber(ARGV[3 + 3 * r])
  local found = nil
  for _, ring in ipairs(st.rings) do
    if ring.budget == budget and ring.period == period then found = ring break end
  end
  if not found then
    found = {budget = budget, period = period, width = width, s = '', total = 0}
    st.rings[#st.rings + 1] = found
  end
  mine[r] = found
end

-- trim: buckets that left the window (from the front), reservations reached
local kept = {}
for _, ring in ipairs(st.rings) do
  if ring.i then
    local ii, ww, n = ring.i, ring.w, #ring.i
    local drop = 0
    while drop < n
        and (ii[drop + 1] * ring.width + ring.period <= floor_now or ww[drop + 1] == 0) do
      drop = drop + 1
    end
    if drop > 0 then
      for k = 1, drop do ring.total = ring.total - ww[k] end
      for k = 1, n - drop do ii[k], ww[k] = ii[k + drop], ww[k + drop] end
      for k = n - drop + 1, n do ii[k], ww[k] = nil, nil end
    end
  else
    local s, n, drop = ring.s, #ring.s / REC, 0
    while drop < n do
      local idx, w = struct.unpack('>dd', s, drop * REC + 1)
      if idx * ring.width + ring.period > floor_now and w > 0 then break end
      ring.total = ring.total - w
      drop = drop + 1
    end
    if drop > 0 then ring.s = string.sub(s, drop * REC + 1) end
  end
  local wanted = false
  for _, m in ipairs(mine) do if m == ring then wanted = true end end
  if wanted or ring.total > 0 then kept[#kept + 1] = ring end
end
st.rings = kept
while #queue > 0 and queue[1][1] <= now do table.remove(queue, 1) end

local function add(ring, stamp, weight)
  local idx = math.ceil(stamp / ring.width)
  local ii, ww = ring.i, ring.w
  local n = #ii
  if n == 0 or ii[n] < idx then
    ii[n + 1], ww[n + 1] = idx, weight
  elseif ii[n] == idx then
    ww[n] = ww[n] + weight
  else
    local pos = n
    while pos > 1 and ii[pos - 1] >= idx do pos = pos - 1 end
    if ii[pos] == idx then
      ww[pos] = ww[pos] + weight
    else
      table.insert(ii, pos, idx)
      table.insert(ww, pos, weight)
    end
  end
  ring.total = ring.total + weight
end

local function ready_at(ring, start, weight)
  local ii, ww, n = ring.i, ring.w, #ring.i
  local used, k = ring.total, 1
  while k <= n and ii[k] * ring.width + ring.period <= start do
    used = used - ww[k]
    k = k + 1
  end
  local excess = used + weight - ring.budget
  if excess <= 0 then return start end
  local freed = 0
  while k <= n do
    freed = freed + ww[k]
    if freed >= excess then return ii[k] * ring.width + ring.period end
    k = k + 1
  end
  return start + ring.period
end

local function fits_at(ring, at, weight)
  local width, period = ring.width, ring.period
  local limit = ring.budget - weight
  local ii, ww, n = ring.i, ring.w, #ring.i
  local cands = {at}  -- windows at the exact send time, not its rounded-up stamp
  for k = 1, n do
    local s = ii[k] * width
    if s > at and s < at + period then cands[#cands + 1] = s end
  end
  local lo, hi, total = 1, 1, 0
  for _, s in ipairs(cands) do
    while hi <= n and ii[hi] * width <= s do total = total + ww[hi]; hi = hi + 1 end
    while lo < hi and ii[lo] * width <= s - period do total = total - ww[lo]; lo = lo + 1 end
    if total > limit then return false end
  end
  return true
end

local function used_now(ring)
  local used = 0
  for k = 1, #ring.i do
    local s = ring.i[k] * ring.width
    if s > now - ring.period and s <= now + ring.width then used = used + ring.w[k] end
  end
  return used
end

local result
local write = true
local extra = 3 + 3 * nrings
local function append_fast(ring, stamp, weight)  -- false when a later bucket exists
  local idx = math.ceil(stamp / ring.width)
  local s = ring.s
  local n = #s / REC
  if n > 0 then
    local last, w = struct.unpack('>dd', s, (n - 1) * REC + 1)
    if last > idx then return false end
    if last == idx then
      ring.s = string.sub(s, 1, (n - 1) * REC) .. struct.pack('>dd', idx, w + weight)
      ring.total = ring.total + weight
      return true
    end
  end
  ring.s = s .. struct.pack('>dd', idx, weight)
  ring.total = ring.total + weight
  return true
end

local fast = false
if op == 'reserve' then
  local weight = tonumber(ARGV[extra + 1])
  local offset = tonumber(ARGV[extra + 4]) or 0
  -- the common case: nobody queued, no pause, not paced, room in every window right now
  if #queue == 0 and offset <= 0 and st.paused_until <= now
      and not (now < st.contended and st.next > now) then
    fast = true
    for _, ring in ipairs(st.rings) do
      if ring.i or ring.total + weight > ring.budget then fast = false break end
    end
    if fast then
      local at_ms = ceil_now
      local last_ok = true
      for _, ring in ipairs(st.rings) do
        local s = ring.s
        local n = #s / REC
        if n > 0 then
          local last = struct.unpack('>dd', s, (n - 1) * REC + 1)
          if last > math.ceil(at_ms / ring.width) then last_ok = false break end
        end
      end
      if last_ok then
        local pace = 0
        for _, ring in ipairs(st.rings) do
          append_fast(ring, at_ms, weight)
          pace = math.max(pace, weight * ring.period / ring.budget)
        end
        st.next = math.max(st.next, now) + pace
        result = {1, tostring(at_ms), tostring(ceil_now), '0', 0, 0, ''}
      else
        fast = false
      end
    end
  end
end
if not fast then decode_all() end

if fast then
  -- done above
elseif op == 'reserve' then
  local weight, max_wait = tonumber(ARGV[extra + 1]), tonumber(ARGV[extra + 2])
  local token = tonumber(ARGV[extra + 3])
  local not_before = now + (tonumber(ARGV[extra + 4]) or 0)  -- a sharer's own local limit
  local tail = 0
  if #queue > 0 then tail = queue[#queue][1] end
  local base = math.max(not_before, st.paused_until)
  if now < st.contended then base = math.max(base, st.next) end  -- paced while contended
  local at = nil
  if tail > base then  -- backfill: a gap before the tail that moves no reservation
    local cands, seen = {base}, {}
    for _, ring in ipairs(st.rings) do
      for k = 1, #ring.i do
        local leaves = ring.i[k] * ring.width + ring.period
        if leaves > base and leaves < tail and not seen[leaves] then
          seen[leaves] = true
          cands[#cands + 1] = leaves
        end
      end
    end
    table.sort(cands)
    for k = 1, math.min(#cands, 8) do
      local fits = true
      for _, ring in ipairs(st.rings) do
        if not fits_at(ring, cands[k], weight) then fits = false break end
      end
      if fits then at = cands[k] break end
    end
  end
  if not at then
    local start = math.max(base, tail)
    at = start
    for _, ring in ipairs(st.rings) do at = math.max(at, ready_at(ring, start, weight)) end
  end
  local ahead, ahead_weight = #queue, 0
  for _, q in ipairs(queue) do ahead_weight = ahead_weight + q[2] end
  local wait = math.max(0, at - now)
  if (max_wait >= 0 and wait > max_wait) or (at - ceil_now > MAX_AHEAD) then
    write = false
    local used = {}
    for r, ring in ipairs(mine) do used[r] = used_now(ring) end
    result = {0, tostring(math.ceil(at)), tostring(ceil_now), tostring(wait), ahead,
              ahead_weight, cjson.encode(used)}
  else
    local at_ms = math.ceil(at)
    local pace = 0
    for _, ring in ipairs(st.rings) do
      add(ring, at_ms, weight)
      pace = math.max(pace, weight * ring.period / ring.budget)
    end
    if at == base then st.next = math.max(st.next, at) + pace end
    if wait > 0 then
      local pos = #queue + 1
      while pos > 1 and queue[pos - 1][1] > at_ms do pos = pos - 1 end
      table.insert(queue, pos, {at_ms, weight, token})
      local longest_all = 0
      for _, ring in ipairs(st.rings) do longest_all = math.max(longest_all, ring.period) end
      st.contended = math.max(st.contended, at_ms + longest_all)
    end
    result = {1, tostring(at_ms), tostring(ceil_now), tostring(wait), ahead, ahead_weight, ''}
  end
elseif op == 'release' then
  local at, weight = tonumber(ARGV[extra + 1]), tonumber(ARGV[extra + 2])
  local token = tonumber(ARGV[extra + 3])
  result = {0}
  for pos, q in ipairs(queue) do
    if q[1] == at and q[3] == token then
      table.remove(queue, pos)
      for _, ring in ipairs(st.rings) do
        local idx = math.ceil(at / ring.width)
        for k = 1, #ring.i do
          if ring.i[k] == idx then
            local taken = math.min(weight, ring.w[k])
            ring.w[k] = ring.w[k] - taken
            ring.total = ring.total - taken
            break
          end
        end
      end
      result = {1}
      break
    end
  end
elseif op == 'charge' then
  local weight = tonumber(ARGV[extra + 1])
  for _, ring in ipairs(st.rings) do add(ring, ceil_now, weight) end
  result = {1}
elseif op == 'pause' then
  local until_ms = math.ceil(now + tonumber(ARGV[extra + 1]))
  if until_ms > st.paused_until then st.paused_until = until_ms end
  result = {1}
elseif op == 'merge' then
  -- a sharer back from an outage: its own admissions (as ages in ms, newest last) and a
  -- reserve for sharers still on their local share, stamped `hold` ms ahead
  local n = tonumber(ARGV[extra + 1])
  for k = 1, n do
    local age, weight = tonumber(ARGV[extra + 2 * k]), tonumber(ARGV[extra + 2 * k + 1])
    for _, ring in ipairs(st.rings) do add(ring, math.max(ceil_now - age, 0), weight) end
  end
  local hold = tonumber(ARGV[extra + 2 * n + 2])
  local others = tonumber(ARGV[extra + 2 * n + 3])
  if others > 0 then
    for _, ring in ipairs(mine) do add(ring, ceil_now + hold, math.ceil(ring.budget * others)) end
  end
  result = {1}
else -- status
  write = false
  result = {1}
end

-- heartbeat: this sharer is alive; count those seen within three windows (at least 10 s)
-- (refreshed at most once a second per sharer; -1 tells the caller nothing changed)
local alive = math.max(3 * longest, 10000)
local sharers = -1
if op ~= 'status' then  -- an observer (the CLI) is not a sharer
  local seen = tonumber(redis.call('ZSCORE', KEYS[2], sharer) or '0')
  if floor_now - seen >= 1000 or op == 'merge' then
    redis.call('ZADD', KEYS[2], floor_now, sharer)
    redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', floor_now - alive)
    redis.call('PEXPIRE', KEYS[2], alive)
    sharers = redis.call('ZCARD', KEYS[2])
  end
else
  sharers = redis.call('ZCARD', KEYS[2])
end

local tail = 0
if #queue > 0 then tail = queue[#queue][1] end
local status_rings = {}
if op == 'status' then
  for r, ring in ipairs(st.rings) do
    status_rings[r] = {budget = ring.budget, period = ring.period, width = ring.width,
                       index = ring.i, weight = ring.w}
  end
end
for _, ring in ipairs(st.rings) do encode(ring) end
if write or repaired or step > 0 then
  local ttl = math.max(tail - floor_now, st.paused_until - floor_now, 0) + 2 * longest + 60000
  redis.call('SET', KEYS[1], cmsgpack.pack(st), 'PX', math.floor(ttl))
end
result[#result + 1] = sharers
result[#result + 1] = tostring(now)
result[#result + 1] = step
if op == 'status' then
  local out = {v = 2, paused_until = st.paused_until, last = st.last, next = st.next,
               contended = st.contended, queue = queue, rings = status_rings}
  result[#result + 1] = cjson.encode(out)
else
  result[#result + 1] = ''
end
return result
"""


def _strip_credentials(url: str) -> str:
    scheme, sep, rest = url.partition("://")
    if "@" in rest:
        rest = "***@" + rest.split("@", 1)[1]
    return f"{scheme}{sep}{rest}"


class RedisBudget:
    """A budget shared through Redis (see the module docstring)."""

    def __init__(
        self,
        url: str,
        key: str,
        rings: list[rules.Ring],
        *,
        base: Callable[[], float],
        on_error: str = "fallback",
        timeout: float = 2.0,
    ) -> None:
        try:
            import redis
        except ImportError as exc:  # pragma: no cover - only without the extra
            raise ImportError(
                "redis_url needs the redis package: pip install 'resilient-trading[redis]'"
            ) from exc
        if not isinstance(url, str) or not url.startswith(("redis://", "rediss://", "unix://")):
            raise ValueError("redis_url must be a redis://, rediss:// or unix:// URL")
        self._redis = redis
        from redis.backoff import NoBackoff
        from redis.retry import Retry

        # no hidden retries: a dead Redis must fail within ``timeout``, not after backoffs
        self._client = redis.Redis.from_url(
            url,
            socket_timeout=timeout,
            socket_connect_timeout=timeout,
            retry=Retry(NoBackoff(), 0),
        )
        self._url = url
        self._keys = [
            f"resilient-trading:limiter:{{{key}}}",
            f"resilient-trading:limiter:{{{key}}}:sharers",
        ]
        self._rings = rings
        self._ring_args: list[Any] = [len(rings)]
        for ring in rings:
            self._ring_args += [ring.budget, ring.period_ms, ring.width_ms]
        self._base = base
        self._on_error = on_error
        self._sharer = secrets.token_hex(8)
        self._sha: str | None = None
        self._lock = threading.RLock()
        # this process's own admissions, on the local time base (for the merge after an outage)
        self._mine = rules.LimiterState(
            rings=[rules.Ring(r.budget, r.period_ms, r.width_ms) for r in rings]
        )
        self._sharers = 1
        self._local: rules.LimiterState | None = None  # set while on the local share
        self._grace: rules.LimiterState | None = None  # the local share, one window after
        self._grace_until = 0.0
        self._retry_at = 0.0
        self._backoff = _BACKOFF_MIN

    @property
    def location(self) -> str:
        return f"{redact(_strip_credentials(self._url))}#{self._keys[0]}"

    @property
    def mode(self) -> str:
        return "shared" if self._local is None else "fallback"

    @property
    def sharers(self) -> int:
        """Sharers seen alive at the last contact with Redis."""
        return self._sharers

    def close(self) -> None:
        self._client.close()

    # --- one round trip ---------------------------------------------------------------------

    def _eval(self, op: str, *args: Any) -> list[Any]:
        argv = [op, self._sharer, *self._ring_args, *args]
        if self._sha is None:
            self._sha = self._client.script_load(SCRIPT)
        try:
            reply = self._client.evalsha(self._sha, 2, *self._keys, *argv)
        except self._redis.exceptions.NoScriptError:
            self._sha = self._client.script_load(SCRIPT)
            reply = self._client.evalsha(self._sha, 2, *self._keys, *argv)
        if int(reply[-4]) > 0:  # -1: the heartbeat was fresh, the count not re-read
            self._sharers = int(reply[-4])
        step = int(reply[-2])
        if step:
            log.warning(
                "rate budget %s: the Redis server's clock stepped back %.3fs; stored times "
                "moved back with it",
                self.location,
                step / 1000,
            )
        return list(reply)

    def _try_recover(self) -> bool:
        """On the local share: retry Redis when the backoff allows. True when shared again."""
        with self._lock:
            if self._local is None:
                return True
            if self._base() < self._retry_at:
                return False
            try:
                self._recover()
            except (self._redis.ConnectionError, self._redis.TimeoutError):
                self._retry_at = self._base() + self._backoff
                self._backoff = min(_BACKOFF_MAX, self._backoff * 2)
                return False
            return True

    def _shared(self, op: str, *args: Any) -> list[Any] | None:
        """Run ``op`` on Redis; ``None`` when Redis is unreachable and the fallback applies."""
        with self._lock:
            if not self._try_recover():
                return None
            try:
                return self._eval(op, *args)
            except (self._redis.ConnectionError, self._redis.TimeoutError) as exc:
                if self._on_error == "raise":
                    raise NetworkError(
                        f"Redis at {self.location} failed: {type(exc).__name__}; the shared "
                        "rate budget cannot be reached"
                    ) from exc
                self._enter_fallback(exc)
                return None
            except self._redis.RedisError as exc:
                raise NetworkError(
                    f"Redis at {self.location} failed: {type(exc).__name__}: "
                    f"{redact(str(exc))[:200]}"
                ) from exc

    def _enter_fallback(self, exc: Exception) -> None:
        now = self._base()
        n = self._sharers
        rings = [rules.Ring(max(1, r.budget // n), r.period_ms, r.width_ms) for r in self._rings]
        local = rules.LimiterState(rings=rings)
        rules.trim(local, now)
        # what the others admitted just before the outage is unknown: one full window first
        local.paused_until_ms = rules.ceil_ms(now) + max(r.period_ms for r in rings)
        self._local = local
        self._retry_at = now + _BACKOFF_MIN
        self._backoff = _BACKOFF_MIN * 2
        log.warning(
            "rate budget %s: Redis unreachable (%s); admitting on a local share of 1/%d of "
            "each limit until it is back",
            self.location,
            type(exc).__name__,
            n,
        )

    def _recover(self) -> None:
        now = self._base()
        rules.trim(self._mine, now)
        # own admissions of the last window, as ages (the server stamps them on its clock)
        ring = max(self._mine.rings, key=lambda r: r.period_ms)
        pairs: list[int] = []
        now_ms = rules.floor_ms(now)
        for index, weight in ring.buckets:
            if weight:
                pairs += [max(0, now_ms - index * ring.width_ms), weight]
        others = (self._sharers - 1) / self._sharers
        hold = math.ceil(_BACKOFF_MAX * 1000)
        self._eval("merge", len(pairs) // 2, *pairs, hold, others)
        # for one more window this process also keeps to its local share: what it admitted
        # on it just before is in the shared window now, and others may still be on theirs
        self._grace = self._local
        self._grace_until = now + max(r.period_ms for r in self._rings) / 1000
        self._local = None
        self._backoff = _BACKOFF_MIN
        log.warning("rate budget %s: Redis is back; sharing the budget again", self.location)

    # --- the budget operations --------------------------------------------------------------

    def reserve(
        self, weight: int, max_wait: Callable[[float], float | None], started: float
    ) -> rules.Decision | Refused:
        token = rules.new_token()
        limit = max_wait(started)
        self._try_recover()  # first, so a sharer just back keeps to its share (the grace)
        grace = self._grace
        not_before = 0.0
        if grace is not None:
            now = self._base()
            if now >= self._grace_until or weight > min(r.budget for r in grace.rings):
                self._grace = grace = None
            else:
                rules.trim(grace, now)
                not_before = rules.plan(grace, now, weight).wait
        reply = self._shared(
            "reserve", weight, -1 if limit is None else limit * 1000, token, not_before * 1000
        )
        if reply is None:
            return self._reserve_locally(weight, limit, token)
        ok, at, start, wait = int(reply[0]), int(reply[1]), int(reply[2]), float(reply[3]) / 1000
        decision = rules.Decision(
            at_ms=at,
            start_ms=start,
            exact_ms=float(at),
            wait=wait,
            weight=weight,
            token=token,
            ahead=int(reply[4]),
            ahead_weight=int(reply[5]),
        )
        if not ok:
            import json

            return Refused(decision, tuple(int(u) for u in json.loads(reply[6] or "[]")))
        mine = rules.Decision(
            at_ms=rules.ceil_ms(self._base() + wait),
            start_ms=0,
            exact_ms=0.0,
            wait=wait,
            weight=weight,
            token=token,
            ahead=0,
            ahead_weight=0,
        )
        with self._lock:
            for ring in self._mine.rings:
                ring.add(mine.at_ms, weight)
            rules.trim(self._mine, self._base())
            if grace is not None:
                for ring in grace.rings:
                    ring.add(mine.at_ms, weight)
        return decision

    def _reserve_locally(
        self, weight: int, limit: float | None, token: int
    ) -> rules.Decision | Refused:
        with self._lock:
            local = self._local
            if local is None:  # Redis came back in between: go round again
                return self.reserve(weight, lambda _: limit, 0.0)
            now = self._base()
            rules.trim(local, now)
            if weight > min(r.budget for r in local.rings):
                raise RateLimitedError(
                    f"Redis at {self.location} is unreachable and weight {weight} exceeds "
                    f"this process's local share of the budget (1/{self._sharers}); retry "
                    "when Redis is back",
                    retry_after=self._backoff,
                    source="local",
                )
            decision = rules.plan(local, now, weight, token)
            if (limit is not None and decision.wait > limit) or (
                decision.at_ms - decision.start_ms > rules.MAX_AHEAD_MS
            ):
                used = tuple(r.used_at(now * 1000) for r in local.rings)
                return Refused(decision, used)
            rules.apply(local, decision)
            for ring in self._mine.rings:
                ring.add(decision.at_ms, weight)
            return decision

    def release(self, decision: rules.Decision) -> bool:
        with self._lock:
            local = self._local
        if local is not None:
            with self._lock:
                return rules.release(local, decision.at_ms, decision.weight, decision.token)
        reply = self._shared("release", decision.at_ms, decision.weight, decision.token)
        return bool(reply and int(reply[0]))

    def charge(self, weight: int) -> None:
        if self._shared("charge", weight) is None:
            with self._lock:
                if self._local is not None:
                    rules.charge(self._local, self._base(), weight)
        with self._lock:
            rules.charge(self._mine, self._base(), weight)

    def pause(self, seconds: float) -> None:
        if self._shared("pause", seconds * 1000) is None:
            with self._lock:
                if self._local is not None:
                    rules.pause(self._local, self._base(), seconds)

    def snapshot(self) -> tuple[rules.LimiterState, float]:
        import json

        reply = self._shared("status")
        if reply is None:
            with self._lock:
                assert self._local is not None
                return rules.from_json(rules.to_json(self._local)), self._base()
        return rules.from_json(json.loads(reply[-1])), float(reply[-3]) / 1000
