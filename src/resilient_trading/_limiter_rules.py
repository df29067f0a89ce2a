"""The rate limiter's one decision: when may a request of weight ``w`` go? Pure, no I/O.

Every backend (process memory, a file, and the Redis Lua script that mirrors this module line
for line) runs the same rule inside one state transaction:

* **Reserve, first come first served.** A request reserves the earliest time ``t`` at which its
  weight fits every window, with ``t`` no earlier than now, than a pause, and than every
  reservation already made (the *tail*). Nobody overtakes; a heavy request is never starved by
  light ones. The caller then sleeps until ``t``.
* **Bounded state.** Each limit keeps a fixed ring of buckets (``width`` = its period / 100,
  stamps rounded *up*, so an entry expires later than it must, never earlier) and a running
  sum; reservations not yet reached are kept in a short queue so a cancelled waiter can give
  its reservation back. Cost does not grow with the number of admissions.
* **Integer milliseconds.** Stored times are integer milliseconds (exact in JSON and in the
  Redis Lua ``cjson``); ``now`` is floored for trimming and ceiled for reserving, so rounding
  never lets an entry leave the window early.

An entry counts ``period + in_flight`` after its reserved time (see :class:`Ring`), so a
request still travelling to the exchange stays in our window until the exchange has counted it.

Why this module is long: the rule, its bounded state and that state's validated JSON form
must change together (the Redis script mirrors all three); about a third is the JSON checks.
"""

from __future__ import annotations

import math
import operator
import os
import random
from bisect import bisect_left, bisect_right
from collections import deque
from dataclasses import dataclass, field
from typing import Any

__all__ = [
    "BUCKETS",
    "MAX_AHEAD_MS",
    "Decision",
    "LimiterState",
    "Ring",
    "apply",
    "charge",
    "new_token",
    "pause",
    "plan",
    "release",
    "trim",
]

_TOKENS = random.Random()  # seeded from os.urandom once; reseeded below after fork

if hasattr(os, "register_at_fork"):  # a forked child must not draw its parent's tokens
    os.register_at_fork(after_in_child=_TOKENS.seed)


def new_token() -> int:
    """A reservation's token: unique enough among the reservations of one budget (40 bits, so
    it stays exact in the Redis script's JSON), drawn without a system call."""
    return _TOKENS.getrandbits(40)


#: Buckets per window: stamps are rounded up by at most period / BUCKETS (1% of a window).
BUCKETS = 100
#: No reservation further ahead than this (and no pause longer): a wait of more than a day
#: is a misconfiguration, and a larger stored time means the clock stepped back.
MAX_AHEAD_MS = 86_400_000


@dataclass
class Ring:
    """One limit's window: ``budget`` weight per ``period_ms``, kept as buckets of ``width_ms``.

    ``period_ms`` already includes the in-flight bound. ``buckets`` holds ``[index, weight]``
    pairs in ascending index order (stamp = index * width_ms); ``total`` is their sum.

    Change ``buckets`` through the methods (or by appending, or replacing the deque): they
    count what they change (``edits`` in the middle, ``popped`` from the front), so the file
    home re-packs only the ends of a ring (``packed``, see
    :mod:`resilient_trading._limiter_compact`).
    """

    budget: int
    period_ms: int
    width_ms: int
    buckets: deque[list[int]] = field(default_factory=deque)
    total: int = 0
    edits: int = field(default=0, compare=False, repr=False)
    popped: int = field(default=0, compare=False, repr=False)
    packed: Any = field(default=None, compare=False, repr=False)

    def add(self, stamp_ms: int, weight: int) -> None:
        """Count ``weight`` at ``stamp_ms`` (rounded up to this ring's bucket)."""
        index = -(-stamp_ms // self.width_ms)
        self.total += weight
        buckets = self.buckets
        if not buckets or buckets[-1][0] < index:
            buckets.append([index, weight])
            return
        if buckets[-1][0] == index:
            buckets[-1][1] += weight
            return
        # an earlier bucket (a backfill or a charge): the last one is later, so pos < len
        self.edits += 1
        pos = bisect_left([b[0] for b in buckets], index)
        if buckets[pos][0] == index:
            buckets[pos][1] += weight
        else:
            buckets.insert(pos, [index, weight])

    def remove(self, stamp_ms: int, weight: int) -> None:
        """Give back ``weight`` counted at ``stamp_ms`` (a released reservation)."""
        index = -(-stamp_ms // self.width_ms)
        self.edits += 1
        keys = [b[0] for b in self.buckets]
        pos = bisect_left(keys, index)
        if pos < len(keys) and keys[pos] == index:
            bucket = self.buckets[pos]
            taken = min(weight, bucket[1])
            bucket[1] -= taken
            self.total -= taken

    def ready_at(self, start_ms: float, weight: int) -> float:
        """The earliest time ``>= start_ms`` at which ``weight`` more fits this ring."""
        width, period = self.width_ms, self.period_ms
        used = self.total
        buckets = self.buckets
        i = 0
        # buckets whose stamp + period <= start have left the window by start
        while i < len(buckets) and buckets[i][0] * width + period <= start_ms:
            used -= buckets[i][1]
            i += 1
        excess = used + weight - self.budget
        if excess <= 0:
            return start_ms
        freed = 0
        while i < len(buckets):
            freed += buckets[i][1]
            if freed >= excess:
                return buckets[i][0] * width + period
            i += 1
        return start_ms + period  # a weight over this ring's budget (another sharer's limit)

    def fits_at(self, t_ms: float, weight: int) -> bool:
        """True when ``weight`` sent at ``t_ms`` keeps every window it falls in within budget,
        counting every admission and every future reservation (for backfilling).

        The windows are taken at the exact time ``t_ms``, not at its rounded-up stamp: the
        request is sent at ``t_ms``, and an entry stamped just after ``t_ms - period`` is
        still in its window."""
        period = self.period_ms
        width = self.width_ms
        limit = self.budget - weight
        stamps = [(index * width, w) for index, w in self.buckets]
        candidates = [t_ms] + [s for s, _ in stamps if t_ms < s < t_ms + period]
        lo = hi = total = 0
        for s in candidates:
            while hi < len(stamps) and stamps[hi][0] <= s:
                total += stamps[hi][1]
                hi += 1
            while lo < hi and stamps[lo][0] <= s - period:
                total -= stamps[lo][1]
                lo += 1
            if total > limit:
                return False
        return True

    def trim(self, floor_ms: int) -> None:
        """Forget buckets that left the window before ``floor_ms``."""
        width, period, buckets = self.width_ms, self.period_ms, self.buckets
        while buckets and (buckets[0][0] * width + period <= floor_ms or buckets[0][1] == 0):
            self.total -= buckets.popleft()[1]
            self.popped += 1

    def used_at(self, now_ms: float) -> int:
        """Weight counted in the window at ``now_ms`` (reserved future weight excluded)."""
        width, period = self.width_ms, self.period_ms
        return sum(w for i, w in self.buckets if now_ms - period < i * width <= now_ms + width)


@dataclass
class LimiterState:
    """Everything a budget stores: rings, the reservation queue, a pause, the last time seen.

    ``queue`` holds ``[t_ms, weight, token]`` for reservations not yet reached, ascending.
    """

    rings: list[Ring]
    queue: list[list[int]] = field(default_factory=list)
    paused_until_ms: int = 0
    last_ms: int = 0
    next_ms: float = 0.0
    contended_until_ms: int = 0

    @property
    def tail_ms(self) -> int:
        """The latest reservation: a request goes after it unless it backfills a gap."""
        return self.queue[-1][0] if self.queue else 0

    def reserved(self) -> int:
        """Weight reserved for the future."""
        return sum(entry[1] for entry in self.queue)


@dataclass(slots=True)
class Decision:
    """What :func:`plan` decided: the reserved time and how long the caller waits for it.

    Treat it as read-only (it is not frozen only because this is the hot path)."""

    at_ms: int
    start_ms: int
    wait: float
    exact_ms: float
    weight: int
    token: int
    ahead: int
    ahead_weight: int
    paced: bool = True


def floor_ms(now: float) -> int:
    return math.floor(now * 1000)


def ceil_ms(now: float) -> int:
    return math.ceil(now * 1000)


def trim(state: LimiterState, now: float) -> int:
    """Drop what has left every window and reservations reached; heal a backward clock step.

    Returns the backward step in milliseconds that was healed (0 normally). On a step back,
    every stored time moves back by the step, so ages are kept exactly and nothing expires
    early or waits an hour.
    """
    floor = floor_ms(now)
    step = 0
    if state.last_ms > floor:
        step = state.last_ms - floor
        _shift(state, -step)
    state.last_ms = floor
    for ring in state.rings:
        ring.trim(floor)
    while state.queue and state.queue[0][0] <= now * 1000:
        state.queue.pop(0)
    return step


def _shift(state: LimiterState, delta_ms: int) -> None:
    for ring in state.rings:
        # every index moves by delta / width, rounded up (later, never earlier): the same
        # whole number of buckets for all, so they stay distinct and in order
        moved = -(-delta_ms // ring.width_ms)
        ring.buckets = deque([index + moved, weight] for index, weight in ring.buckets)
    for entry in state.queue:
        entry[0] += delta_ms
    if state.paused_until_ms:
        state.paused_until_ms += delta_ms
    if state.next_ms:
        state.next_ms += delta_ms
    if state.contended_until_ms:
        state.contended_until_ms += delta_ms


def plan(state: LimiterState, now: float, weight: int, token: int = 0) -> Decision:
    """The earliest time ``weight`` may go without delaying any earlier reservation. Reads only.

    First come, first served: the request goes after every reservation already made (the
    tail), at the earliest time its weight fits every window. One exception that delays
    nobody (*backfilling*): if the weight fits in every window at a time before the tail,
    counting every reservation ahead, it goes then, in a gap a waiting heavier request cannot
    use anyway (the first :data:`BACKFILL_TRIES` gaps are tried).
    Earlier reservations keep their times, so nobody is ever starved or delayed by a later
    arrival. ``state`` must have been :func:`trim`-med at ``now``. The reserved time is exact
    (it may be now, to the microsecond); it is stored rounded up to the millisecond.
    """
    now_ms = now * 1000
    if (
        not state.queue
        and state.paused_until_ms <= now_ms
        and state.contended_until_ms <= now_ms
        and all(ring.total + weight <= ring.budget for ring in state.rings)
    ):  # the common case, decided without a scan: room now in every ring, nobody waiting
        at_ms = math.ceil(now_ms)
        return Decision(at_ms, at_ms, 0.0, now_ms, weight, token, 0, 0)
    base = max(now_ms, state.paused_until_ms)
    if now_ms < state.contended_until_ms:  # contended: admissions paced at the average rate
        base = max(base, state.next_ms)
    tail = state.tail_ms
    gap = _backfill(state, base, tail, weight) if tail > base else None
    if gap is not None:
        at = gap  # backfill: fits beside every reservation ahead without moving one
    else:
        start = max(base, tail)
        at = start
        for ring in state.rings:
            at = max(at, ring.ready_at(start, weight))
    return Decision(
        at_ms=math.ceil(at),
        start_ms=ceil_ms(now),
        exact_ms=at,
        wait=max(0.0, (at - now * 1000) / 1000),
        weight=weight,
        token=token,
        ahead=len(state.queue),
        ahead_weight=state.reserved(),
        paced=at == base,
    )


#: How many gaps before the tail a request looks at before queueing behind it (bounds cost).
BACKFILL_TRIES = 8


def _backfill(state: LimiterState, base: float, tail: int, weight: int) -> float | None:
    """The earliest time in ``[base, tail)`` at which ``weight`` fits every window without
    moving a reservation: ``base`` itself or a moment an admission leaves a window."""
    candidates = {base}
    for ring in state.rings:
        for index, _ in ring.buckets:
            leaves = index * ring.width_ms + ring.period_ms
            if base < leaves < tail:
                candidates.add(leaves)
    for t in sorted(candidates)[:BACKFILL_TRIES]:
        if all(ring.fits_at(t, weight) for ring in state.rings):
            return t
    return None


def apply(state: LimiterState, decision: Decision) -> None:
    """Record the reservation :func:`plan` decided (in every ring, and queued if ahead).

    A reservation that had to wait marks the budget *contended* for one window: while it is,
    admissions are paced at each limit's average rate (``weight * period / budget`` apart), so
    a window freed all at once is shared in arrival order instead of going, in one burst, to
    whichever process asks fastest. (A reservation whose time was set by a window freeing, a
    heavy request waiting for room, does not move the pace: lighter requests may backfill.)
    Pacing only ever delays, so windows stay within budget; at saturation the average rate is
    exactly the budget, so nothing is lost.
    """
    pace = 0.0
    for ring in state.rings:
        ring.add(decision.at_ms, decision.weight)
        pace = max(pace, decision.weight * ring.period_ms / ring.budget)
    if decision.paced:  # a time set by a window freeing (a heavy request) does not pace others
        state.next_ms = max(state.next_ms, decision.exact_ms) + pace
    if decision.wait > 0:
        longest = max(ring.period_ms for ring in state.rings)
        state.contended_until_ms = max(state.contended_until_ms, decision.at_ms + longest)
        entry = [decision.at_ms, decision.weight, decision.token]
        keys = [q[0] for q in state.queue]  # a short queue; after any reservation at that time
        state.queue.insert(bisect_right(keys, decision.at_ms), entry)


def release(state: LimiterState, at_ms: int, weight: int, token: int) -> bool:
    """Give back a reservation not yet reached (a cancelled waiter). True when found.

    The pacing cursor moves back by the pace the reservation took, so waiters that gave up
    hold nobody back. Pacing only ever delays (every window is still checked, and a newcomer
    still goes after the reservations queued), so moving it back cannot put a window over
    budget nor let anyone overtake.
    """
    for pos, entry in enumerate(state.queue):
        if entry[0] == at_ms and entry[2] == token:
            del state.queue[pos]
            pace = 0.0
            for ring in state.rings:
                ring.remove(at_ms, weight)
                pace = max(pace, weight * ring.period_ms / ring.budget)
            if state.next_ms:
                state.next_ms = max(0.0, state.next_ms - pace)
            return True
    return False


def charge(state: LimiterState, now: float, weight: int) -> None:
    """Count weight spent now without waiting (known only after a call)."""
    at = ceil_ms(now)
    for ring in state.rings:
        ring.add(at, weight)


def pause(state: LimiterState, now: float, seconds: float) -> None:
    """Nobody is admitted before ``now + seconds`` (``seconds`` already capped)."""
    until = ceil_ms(now + seconds)
    state.paused_until_ms = max(state.paused_until_ms, until)


def ring_for(budget: int, period: float, in_flight: float) -> Ring:
    """A fresh ring for ``budget`` per ``period`` seconds counted ``in_flight`` seconds longer."""
    period_ms = math.ceil(round((period + in_flight) * 1000, 6))
    return Ring(budget=budget, period_ms=period_ms, width_ms=max(1, period_ms // BUCKETS))


def sync_rings(state: LimiterState, wanted: list[Ring]) -> list[Ring]:
    """Make sure every wanted ring exists; return the state's rings matching ``wanted``.

    Rings other sharers configured stay (every admission is counted in all of them, which is
    only ever conservative); an empty ring nobody here wants is dropped. A ring new to the
    state starts with the buckets of the longest existing ring (stamps rounded up to its own
    width), so a limit new to a key counts what the key admitted already; trim afterwards.
    """
    source = max(state.rings, key=lambda r: r.period_ms, default=None)
    mine: list[Ring] = []
    for want in wanted:
        for ring in state.rings:
            if ring.budget == want.budget and ring.period_ms == want.period_ms:
                mine.append(ring)
                break
        else:
            fresh = Ring(want.budget, want.period_ms, want.width_ms)
            if source is not None:
                for index, weight in source.buckets:
                    fresh.add(index * source.width_ms, weight)
            state.rings.append(fresh)
            mine.append(fresh)
    state.rings = [r for r in state.rings if r.total > 0 or any(r is m for m in mine)]
    return mine


# --- JSON form --------------------------------------------------------------------------------


class BadState(ValueError):
    """A stored state that is not a limiter state; ``where`` names the field."""

    def __init__(self, where: str, problem: str) -> None:
        super().__init__(f"{where}: {problem}")
        self.where = where


def _int(value: Any, where: str, *, minimum: int = 0) -> int:
    whole_float = isinstance(value, float) and math.isfinite(value) and value.is_integer()
    if (isinstance(value, bool) or not isinstance(value, int)) and not whole_float:
        raise BadState(where, f"expected an integer, found {value!r}")
    if value < minimum:
        raise BadState(where, f"expected an integer >= {minimum}, found {value!r}")
    if value > 2**62:
        raise BadState(where, f"value {value!r} is out of range")
    return int(value)


def _float(value: Any, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise BadState(where, f"expected a finite number, found {value!r}")
    if not 0 <= value <= 2**62:
        raise BadState(where, f"value {value!r} is out of range")
    return float(value)


def _list(value: Any, where: str, length: int | None = None) -> list[Any]:
    if value == {}:  # Redis' cjson writes an empty list as {}
        value = []
    if not isinstance(value, list):
        raise BadState(where, f"expected a list, found {type(value).__name__}")
    if length is not None and len(value) != length:
        raise BadState(where, f"expected {length} items, found {len(value)}")
    return value


def _flat_buckets(index: Any, weight: Any) -> tuple[deque[list[int]], int] | None:
    """Parallel lists of bucket indices and weights, checked with C-speed builtins."""
    index = [] if index == {} else index  # Redis' cjson writes an empty list as {}
    weight = [] if weight == {} else weight
    if type(index) is not list or type(weight) is not list or len(index) != len(weight):
        return None
    if not set(map(type, index)) <= {int} or not set(map(type, weight)) <= {int}:
        return None
    if index and (index[0] < 0 or index[-1] > 2**62 or min(weight) < 0 or max(weight) > 2**62):
        return None
    if not all(map(operator.lt, index, index[1:])):
        return None
    return deque(map(list, zip(index, weight, strict=True))), sum(weight)


def to_json(state: LimiterState) -> dict[str, Any]:
    """The stored form (the Lua script reads and writes the same shape)."""
    return {
        "v": 2,
        "paused_until": state.paused_until_ms,
        "last": state.last_ms,
        "next": state.next_ms,
        "contended": state.contended_until_ms,
        "queue": state.queue,
        "rings": [
            {
                "budget": r.budget,
                "period": r.period_ms,
                "width": r.width_ms,
                "index": [b[0] for b in r.buckets],
                "weight": [b[1] for b in r.buckets],
            }
            for r in state.rings
        ],
    }


def from_json(data: Any) -> LimiterState:
    """Parse a stored state; :class:`BadState` names the first bad field."""
    if data is None:
        return LimiterState(rings=[])
    if not isinstance(data, dict):
        raise BadState("state", f"expected an object, found {type(data).__name__}")
    if data.get("v") != 2:
        raise BadState("v", f"expected version 2, found {data.get('v')!r}")
    rings = []
    for n, raw in enumerate(_list(data.get("rings"), "rings")):
        where = f"rings[{n}]"
        if not isinstance(raw, dict):
            raise BadState(where, "expected an object")
        ring = Ring(
            budget=_int(raw.get("budget"), f"{where}.budget", minimum=1),
            period_ms=_int(raw.get("period"), f"{where}.period", minimum=1),
            width_ms=_int(raw.get("width"), f"{where}.width", minimum=1),
        )
        if "index" in raw:  # the compact form this module writes
            flat = _flat_buckets(raw.get("index"), raw.get("weight"))
            if flat is None:
                raise BadState(f"{where}.index", "expected ascending in-range integers")
            ring.buckets, ring.total = flat
            rings.append(ring)
            continue
        buckets = _list(raw.get("buckets"), f"{where}.buckets")
        last = None
        for m, pair in enumerate(buckets):
            pw = f"{where}.buckets[{m}]"
            pair = _list(pair, pw, 2)
            index, weight = _int(pair[0], pw), _int(pair[1], pw)
            if last is not None and index <= last:
                raise BadState(pw, "bucket indices are not ascending")
            last = index
            ring.buckets.append([index, weight])
            ring.total += weight
        rings.append(ring)
    queue = []
    for m, entry in enumerate(_list(data.get("queue", []), "queue")):
        entry = _list(entry, f"queue[{m}]", 3)
        queue.append([_int(x, f"queue[{m}]") for x in entry])
    return LimiterState(
        rings=rings,
        queue=sorted(queue, key=lambda entry: entry[0]),
        paused_until_ms=_int(data.get("paused_until", 0), "paused_until"),
        last_ms=_int(data.get("last", 0), "last"),
        next_ms=_float(data.get("next", 0), "next"),
        contended_until_ms=_int(data.get("contended", 0), "contended"),
    )
