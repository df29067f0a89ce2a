"""The Redis rate budget's Lua script and its wire form: one ``EVALSHA`` per operation.

The script runs :mod:`resilient_trading._limiter_rules` on the Redis server (same rule, same
fields, line for line), reading the server's ``TIME``. It is kept in this module with the
Python that encodes its arguments (:class:`Command`), so the two cannot drift apart.

Layout in Redis (every key carries the hash tag ``{KEY}``, so all live on one Cluster slot):

``resilient-trading:limiter:{KEY}`` (the *header*, a small binary string)
    ``"RL5:"``, then big-endian doubles: ``paused_until, last, next, contended, expires_at,
    queued, rings``; per ring ``budget, period, width, total, head, length, first, last,
    last_weight, pending``; per reservation not yet reached ``t_ms, weight, token``.
    ``total`` is the ring's running sum, ``first`` its oldest bucket's index, and its newest
    bucket (``last``, ``last_weight``) is kept here, *pending*, until a later one begins.
``resilient-trading:limiter:{KEY}:r:BUDGET:PERIOD`` (one per limit: its *log*)
    The ring's older buckets: 16-byte records ``index, weight`` (big-endian doubles; stamp =
    index * width), ascending. Bytes before ``head`` have left the window; ``length`` is the
    log's length (bytes beyond it are a stale tail, ignored).
``resilient-trading:limiter:{KEY}:sharers``
    Sharers' heartbeats (a sorted set, score = server milliseconds).

The common call (room now in every window, nobody queued, no pause) is decided and recorded
in the header alone: ``TIME``, ``GET`` and ``SET``. Its weight goes into each ring's pending
bucket; when a new bucket begins, the pending one is ``APPEND``-ed to the log (whose returned
length proves the log is still there); when the first bucket has left the window, the log is
trimmed by moving ``head`` past the records read with one ``GETRANGE``. It answers with one
integer, whatever the number of admissions in the window. Every other call decodes the logs
(plus the pending buckets), runs the general rule and writes them back (still one round
trip). A log is cut (its dead front dropped) once the dead part is at least 4 KiB and half
the string. Every key expires at one shared ``expires_at``, refreshed about every ten
seconds, at least two windows and a minute after anything stored.

A header written by the previous layout (MessagePack, ``v = 4``) is read and converted on the
first call. A header that is not one, or a log that is not what the header says (deleted,
evicted: noticed when it is next appended to or read), is repaired conservatively: the budget
counts as spent for one window. So is a missing header when the caller says it wrote the
budget lately (Redis restarted empty, ``FLUSHDB``, the key deleted): every key outlives the
last write by two windows and a minute, so only a loss explains it; it stays paused at least
2.5 s, so sharers on their local share (backoff up to 2 s) merge before anyone admits. A
status read never writes: it repairs and converts in its answer only.

Why this module is long: the script mirrors the whole rule (about 400 lines of Lua).
"""

from __future__ import annotations

import hashlib
from typing import Any

__all__ = ["SCRIPT", "SHA", "Command"]

SCRIPT = r"""
-- resilient-trading rate budget: one round trip per operation.
-- Mirrors src/resilient_trading/_limiter_rules.py (same rule, same fields).
-- KEYS[1]: the header; KEYS[2]: sharers' heartbeats; KEYS[3..]: the caller's limits' logs,
-- each named KEYS[1]..':r:'..budget..':'..period (logs of others' limits: the same names)
-- ARGV: op, sharer, flags, nrings, (budget, period_ms, width_ms) * nrings, op args
-- flags: 1 = heartbeat (count this sharer); 2 = the caller wrote this budget recently, so
-- its header must exist (every key outlives the last write by two windows and a minute)
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + tonumber(t[2]) / 1000   -- ms, fractional
local floor_now, ceil_now = math.floor(now), math.ceil(now)
local flags = tonumber(ARGV[3])
local op, sharer, beat, nrings = ARGV[1], ARGV[2], flags % 2 == 1, tonumber(ARGV[4])
local expect = flags >= 2
local extra = 4 + 3 * nrings
local MAX_AHEAD = 86400000
local REC = 16
local MAGIC = 'RL5:'
-- a budget found lost stays paused at least this long (ms): a sharer on its local share
-- retries within 2 s (its longest backoff) and writes its admissions back when it does
local LOST_HOLD = 2500
local HEAD, HEAD_SIZE = '>c4ddddddd', 60
local RING, RING_SIZE = '>dddddddddd', 80

local function ring_key(budget, period)
  return KEYS[1] .. ':r:' .. string.format('%d', budget) .. ':' .. string.format('%d', period)
end
local function new_ring(budget, period, width)
  return {budget = budget, period = period, width = width, total = 0, head = 0, len = 0,
          first = 0, last = 0, last_w = 0, pend = 0, key = ring_key(budget, period)}
end

local longest = 0
for r = 1, nrings do
  local p = tonumber(ARGV[4 + 3 * r - 1])
  if p > longest then longest = p end
end

-- the header
local raw = redis.call('GET', KEYS[1])
local st, repaired, migrated, lost = nil, false, false, false
if raw then
  if string.sub(raw, 1, 4) == MAGIC and #raw >= HEAD_SIZE then
    local _, paused, last, nxt, contended, expires, nq, nr = struct.unpack(HEAD, raw)
    if #raw == HEAD_SIZE + nr * RING_SIZE + nq * 24 then
      st = {paused_until = paused, last = last, next = nxt, contended = contended,
            expires = expires, rings = {}, queue = {}}
      local pos = HEAD_SIZE + 1
      for r = 1, nr do
        local b, p, w, total, head, len, first, last, last_w, pend =
          struct.unpack(RING, raw, pos)
        st.rings[r] = {budget = b, period = p, width = w, total = total, head = head,
                       len = len, first = first, last = last, last_w = last_w, pend = pend,
                       key = false, flush = false}
        pos = pos + RING_SIZE
      end
      for q = 1, nq do
        local at, w, token = struct.unpack('>ddd', raw, pos)
        st.queue[q] = {at, w, token}
        pos = pos + 24
      end
    end
  else  -- the previous layout: one MessagePack value, each ring's buckets in a string `s`
    local ok, old = pcall(cmsgpack.unpack, raw)
    if ok and type(old) == 'table' and old.v == 4 and type(old.rings) == 'table'
        and type(old.queue) == 'table' then
      st = {paused_until = old.paused_until, last = old.last, next = old.next,
            contended = old.contended, expires = 0, rings = {}, queue = old.queue}
      for r, o in ipairs(old.rings) do
        local ring = new_ring(o.budget, o.period, o.width)
        local ii, ww, s = {}, {}, o.s
        for k = 1, #s / REC do ii[k], ww[k] = struct.unpack('>dd', s, (k - 1) * REC + 1) end
        ring.i, ring.w, ring.total = ii, ww, o.total
        st.rings[r] = ring
      end
      migrated = true
    end
  end
  if not st then repaired = true end
elseif expect then
  -- the header is gone though this caller wrote it lately: Redis restarted empty, was
  -- flushed or the key deleted. What was admitted in the window is unknown: repaired, and
  -- paused until the sharers that saw the restart as an outage have merged
  repaired, lost = true, true
end
if not st then
  st = {paused_until = 0, last = floor_now, next = 0, contended = 0, expires = 0, rings = {},
        queue = {}}
  if repaired then st.paused_until = ceil_now + longest end
end
local queue = st.queue

-- the rings this caller needs (others' rings are kept and counted into)
local mine = {}
for r = 1, nrings do
  local budget = tonumber(ARGV[4 + 3 * r - 2])
  local period = tonumber(ARGV[4 + 3 * r - 1])
  local found = nil
  for _, ring in ipairs(st.rings) do
    if ring.budget == budget and ring.period == period then found = ring break end
  end
  if not found then
    found = new_ring(budget, period, tonumber(ARGV[4 + 3 * r]))
    found.i, found.w = {}, {}
    found.seed = #st.rings > 0  -- a limit new to this key: seeded below, not empty
    st.rings[#st.rings + 1] = found
  end
  found.key = KEYS[2 + r]  -- the caller names its own logs (the same names as ring_key)
  mine[r] = found
end
for _, ring in ipairs(st.rings) do  -- logs of limits only other sharers configured
  if not ring.key then ring.key = ring_key(ring.budget, ring.period) end
end

-- trim a ring from the front without decoding it: move its log's `head` past what left the
-- window, then the pending bucket if it left too (the first bucket, `first`, always has
-- weight > 0). False when the log is not what the header says (a key lost): the state is
-- then repaired.
local function trim_log(ring)
  if ring.i or ring.pend == 0 or ring.first * ring.width + ring.period > floor_now then
    return true
  end
  while ring.head < ring.len do
    local chunk = redis.call('GETRANGE', ring.key, ring.head,
                             math.min(ring.head + 8 * REC, ring.len) - 1)
    local n = #chunk / REC
    if n < 1 or #chunk % REC ~= 0 then return false end
    for k = 0, n - 1 do
      local idx, w = struct.unpack('>dd', chunk, k * REC + 1)
      if idx * ring.width + ring.period > floor_now and w > 0 then
        ring.first = idx
        return true
      end
      ring.total = ring.total - w
      ring.head = ring.head + REC
    end
  end
  ring.head, ring.len = 0, 0  -- the log emptied: the pending bucket is the only one left
  if ring.last * ring.width + ring.period > floor_now and ring.last_w > 0 then
    ring.first = ring.last
  else
    ring.total, ring.pend, ring.last, ring.last_w = 0, 0, 0, 0
  end
  return true
end

-- the common call, decided from the header: room now in every window, nobody queued, no
-- pause, not paced, no bucket later than now, the clock not stepped back
local result
local fast = false
if (op == 'reserve' or op == 'charge') and not repaired and not migrated
    and st.last <= floor_now then
  fast = true
  local weight = tonumber(ARGV[extra + 1])
  if op == 'reserve' then
    fast = #queue == 0 and (tonumber(ARGV[extra + 4]) or 0) <= 0
      and st.paused_until <= now and not (now < st.contended and st.next > now)
  end
  if fast then
    for _, ring in ipairs(st.rings) do
      if ring.i then fast = false break end  -- created just now: the general path
      if not trim_log(ring) then repaired = true fast = false break end
      if ring.total == 0 then
        local wanted = false
        for _, m in ipairs(mine) do if m == ring then wanted = true end end
        if not wanted then fast = false break end  -- dropped by the general path
      end
      if op == 'reserve' and ring.total + weight > ring.budget then fast = false break end
      if ring.pend == 1 and ring.last > math.ceil(ceil_now / ring.width) then
        fast = false break  -- a bucket ahead of now: the general path inserts before it
      end
    end
  end
  if fast then
    for _, ring in ipairs(st.rings) do
      local idx = math.ceil(ceil_now / ring.width)
      if ring.pend == 1 and ring.last == idx then
        ring.last_w = ring.last_w + weight  -- the header alone changes
      else
        if ring.pend == 1 then  -- the pending bucket is complete: onto the log
          local rec = struct.pack('>dd', ring.last, ring.last_w)
          if ring.len == 0 then
            ring.flush = rec  -- a fresh log, written whole below
          elseif redis.call('APPEND', ring.key, rec) ~= ring.len + REC then
            repaired = true fast = false break  -- the log was lost
          end
          ring.len = ring.len + REC
        else
          ring.first = idx
        end
        ring.last, ring.last_w, ring.pend = idx, weight, 1
      end
      ring.total = ring.total + weight
    end
  end
  if fast then
    local pace = 0
    for _, ring in ipairs(st.rings) do
      pace = math.max(pace, weight * ring.period / ring.budget)
    end
    if op == 'reserve' then
      st.next = math.max(st.next, now) + pace
      result = ceil_now
    else
      result = 1
    end
    st.last = floor_now
  end
end

-- the general path: every log decoded into arrays `i`, `w` (a log shorter than its header
-- says, a key lost, is repaired like a bad header)
if not fast and not repaired then
  for _, ring in ipairs(st.rings) do
    if not ring.i then
      local ii, ww = {}, {}
      if ring.len > ring.head then
        local s = redis.call('GETRANGE', ring.key, ring.head, ring.len - 1)
        if #s ~= ring.len - ring.head then repaired = true break end
        for k = 1, #s / REC do ii[k], ww[k] = struct.unpack('>dd', s, (k - 1) * REC + 1) end
      end
      if ring.pend == 1 then ii[#ii + 1], ww[#ww + 1] = ring.last, ring.last_w end
      ring.i, ring.w = ii, ww
    end
  end
end

-- a limit new to this key counts what the key admitted already: the buckets of the longest
-- existing limit (every admission is counted in every limit), stamps rounded up to its width
if not repaired then
  local src = nil
  for _, ring in ipairs(st.rings) do
    if not ring.seed and ring.i and (not src or ring.period > src.period) then src = ring end
  end
  for _, ring in ipairs(st.rings) do
    if ring.seed and src then
      local ii, ww, n = ring.i, ring.w, 0
      for k = 1, #src.i do
        local idx = math.ceil(src.i[k] * src.width / ring.width)
        if n > 0 and ii[n] == idx then
          ww[n] = ww[n] + src.w[k]
        else
          n = n + 1
          ii[n], ww[n] = idx, src.w[k]
        end
        ring.total = ring.total + src.w[k]
      end
    end
  end
end

if repaired then  -- a lost log: start afresh, the budget spent for one window
  local hold = longest
  if lost then hold = math.max(longest, LOST_HOLD) end
  local fresh = {paused_until = ceil_now + hold, last = floor_now, next = 0, contended = 0,
                 expires = 0, rings = {}, queue = {}}
  st, queue = fresh, fresh.queue
  for r = 1, nrings do
    local ring = new_ring(mine[r].budget, mine[r].period, mine[r].width)
    ring.i, ring.w = {}, {}
    st.rings[r], mine[r] = ring, ring
  end
end

local step = 0
local write = true
if not fast then

  -- a step back of the server clock: move every stored time back with it
  if st.last > floor_now then
    step = st.last - floor_now
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
    if st.expires > 0 then st.expires = st.expires - step end
  end
  st.last = floor_now

  -- trim: buckets that left the window (from the front), reservations reached
  local kept = {}
  for _, ring in ipairs(st.rings) do
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
    local wanted = false
    for _, m in ipairs(mine) do if m == ring then wanted = true end end
    -- an empty ring nobody here wants is dropped, but never by a status read: an idle window
    -- is still a window of the budget
    if wanted or ring.total > 0 or op == 'status' then kept[#kept + 1] = ring end
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

  if op == 'reserve' then
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
        -- the pacing cursor moves back by this reservation's pace
        local pace = 0
        for _, ring in ipairs(st.rings) do
          pace = math.max(pace, weight * ring.period / ring.budget)
        end
        if st.next > 0 then st.next = math.max(0, st.next - pace) end
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
      -- one reserve for the fleet, not one per sharer back: what earlier merges reserved
      -- (weight ahead of now beyond the queued reservations) counts toward this one
      local queued = 0
      for _, q in ipairs(queue) do if q[1] > ceil_now then queued = queued + q[2] end end
      for _, ring in ipairs(mine) do
        local ahead = 0
        for k = 1, #ring.i do
          if ring.i[k] * ring.width > ceil_now then ahead = ahead + ring.w[k] end
        end
        local want = math.ceil(ring.budget * others) - math.max(0, ahead - queued)
        if want > 0 then add(ring, ceil_now + hold, want) end
      end
    end
    result = {1}
  else -- status
    write = false
    result = {1}
  end
end

-- every key expires together, at least two windows and a minute after anything stored;
-- moved about every ten seconds, not on every call
local tail = 0
if #queue > 0 then tail = queue[#queue][1] end
local latest, longest_all = math.max(tail, st.paused_until, floor_now), 0
for _, ring in ipairs(st.rings) do
  longest_all = math.max(longest_all, ring.period)
  if ring.i then
    if #ring.i > 0 then latest = math.max(latest, ring.i[#ring.i] * ring.width) end
  elseif ring.pend == 1 then
    latest = math.max(latest, ring.last * ring.width)
  end
end
local refresh = false
if latest + 2 * longest_all + 60000 > st.expires then
  st.expires = latest + 2 * longest_all + 70000
  refresh = true
end
local ttl = st.expires - floor_now

-- a status read never writes: it reports what it found (repaired or converted in its
-- answer only), so it can neither undo a repair nor make one
if op ~= 'status' and (fast or write or repaired or migrated or step > 0) then
  local parts = {}
  for r, ring in ipairs(st.rings) do
    if ring.i then  -- rewrite the decoded log whole, without zero buckets in front
      local ii, ww, n = ring.i, ring.w, #ring.i
      local s = 1
      while s <= n and ww[s] == 0 do s = s + 1 end
      if s <= n then  -- the newest bucket stays pending in the header, the rest is the log
        if s < n then
          local recs = {}
          for k = s, n - 1 do recs[#recs + 1] = struct.pack('>dd', ii[k], ww[k]) end
          redis.call('SET', ring.key, table.concat(recs), 'PX', ttl)
        end
        ring.head, ring.len, ring.first, ring.last, ring.last_w, ring.pend =
          0, (n - s) * REC, ii[s], ii[n], ww[n], 1
      else
        ring.head, ring.len, ring.first, ring.last, ring.last_w, ring.pend = 0, 0, 0, 0, 0, 0
      end
    else
      if ring.flush then
        redis.call('SET', ring.key, ring.flush, 'PX', ttl)
      end
      if ring.head >= 4096 and 2 * ring.head >= ring.len then  -- cut the dead front off
        local live = redis.call('GETRANGE', ring.key, ring.head, ring.len - 1)
        redis.call('SET', ring.key, live, 'PX', ttl)
        ring.head, ring.len = 0, #live
      elseif refresh and ring.len > 0 then
        redis.call('PEXPIRE', ring.key, ttl)
      end
    end
    parts[r] = struct.pack(RING, ring.budget, ring.period, ring.width, ring.total, ring.head,
                           ring.len, ring.first, ring.last, ring.last_w, ring.pend)
  end
  for q = 1, #queue do
    parts[#parts + 1] = struct.pack('>ddd', queue[q][1], queue[q][2], queue[q][3])
  end
  redis.call('SET', KEYS[1], struct.pack(HEAD, MAGIC, st.paused_until, st.last, st.next,
             st.contended, st.expires, #queue, #st.rings) .. table.concat(parts), 'PX', ttl)
end

-- heartbeat: this sharer is alive (the caller asks at most once a second); count those seen
-- within three windows (at least 10 s); -1 tells the caller nothing was counted
local sharers = -1
if op == 'status' then
  sharers = redis.call('ZCARD', KEYS[2])
elseif beat or op == 'merge' then
  local alive = math.max(3 * longest, 10000)
  redis.call('ZADD', KEYS[2], floor_now, sharer)
  redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', floor_now - alive)
  redis.call('PEXPIRE', KEYS[2], alive)
  sharers = redis.call('ZCARD', KEYS[2])
end

if fast and sharers < 0 then return result end  -- the common answer: one integer
if fast then result = {1, tostring(result), tostring(ceil_now), '0', 0, 0, ''} end
-- the list answer ends with: sharers, server time, clock step, status, repaired (1/0)
result[#result + 1] = sharers
result[#result + 1] = tostring(now)
result[#result + 1] = step
if op == 'status' then
  local status_rings = {}
  for r, ring in ipairs(st.rings) do
    status_rings[r] = {budget = ring.budget, period = ring.period, width = ring.width,
                       index = ring.i, weight = ring.w}
  end
  local out = {v = 2, paused_until = st.paused_until, last = st.last, next = st.next,
               contended = st.contended, queue = queue, rings = status_rings}
  result[#result + 1] = cjson.encode(out)
else
  result[#result + 1] = ''
end
result[#result + 1] = repaired and 1 or 0
return result
"""

#: The script's SHA-1, as ``EVALSHA`` wants it (``SCRIPT LOAD`` returns the same).
SHA = hashlib.sha1(SCRIPT.encode(), usedforsecurity=False).hexdigest()


def _bulk(value: Any) -> bytes:
    data = value if isinstance(value, bytes) else str(value).encode()
    return b"$%d\r\n%s\r\n" % (len(data), data)


class Command:
    """``EVALSHA`` frames for one budget, in the Redis protocol, with the static part
    (script, keys, sharer, limits) encoded once.

    Example:
        >>> cmd = Command(["k{a}", "k{a}:sharers"], "ab12", [(10, 1000, 10)])
        >>> frame = cmd.frame("pause", False, 500)  # 13 items: EVALSHA sha 2 keys.. argv..
        >>> frame[:21], frame[-9:]
        (b'*13\\r\\n$7\\r\\nEVALSHA\\r\\n$40', b'$3\\r\\n500\\r\\n')
    """

    def __init__(self, keys: list[str], sharer: str, rings: list[tuple[int, int, int]]) -> None:
        flat: list[Any] = [len(rings)]
        for budget, period_ms, width_ms in rings:
            flat += [budget, period_ms, width_ms]
        self._head = _bulk(b"EVALSHA") + _bulk(SHA) + _bulk(len(keys)) + b"".join(map(_bulk, keys))
        self._sharer = _bulk(sharer)
        self._rings = b"".join(map(_bulk, flat))
        self._count = 3 + len(keys) + 3 + len(flat)  # EVALSHA sha n keys.. op sharer beat rings..
        self._ops: dict[tuple[str, int, int], bytes] = {}

    def frame(self, op: str, beat: bool, *args: Any, expect: bool = False) -> bytes:
        """The whole command for ``op`` with its arguments (``beat``: count this sharer;
        ``expect``: the caller wrote the budget lately, so a missing header means it was lost)."""
        flags = (1 if beat else 0) + (2 if expect else 0)
        key = (op, flags, len(args))
        prefix = self._ops.get(key)
        if prefix is None:
            prefix = (
                b"*%d\r\n" % (self._count + len(args))
                + self._head
                + _bulk(op)
                + self._sharer
                + _bulk(flags)
                + self._rings
            )
            self._ops[key] = prefix
        return prefix + b"".join(map(_bulk, args))

    def load(self, script: str) -> bytes:
        """``SCRIPT LOAD`` of ``script`` (after ``NOSCRIPT``)."""
        return b"*3\r\n" + _bulk(b"SCRIPT") + _bulk(b"LOAD") + _bulk(script.encode())
