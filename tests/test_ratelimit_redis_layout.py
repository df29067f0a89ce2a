"""The Redis budget's layout: a small header, one log per limit, one integer per common call.

Properties: the header always agrees with the logs (running sums, head, length); a log stays
bounded however many admissions it saw (its dead front is cut off); no sliding window of the
server's clock ever holds more than its budget, on the common path and the general one; a
budget written by the previous layout (one MessagePack value) is read and converted; a lost
log or a damaged header is repaired conservatively (the budget counts as spent); a forked
child never shares its parent's connection; a flushed script cache is reloaded.
"""

from __future__ import annotations

import itertools
import os
import struct
import time
from typing import Any

import pytest
import redis
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule

from resilient_trading import RateLimit, RateLimitedError, RateLimiter

pytestmark = pytest.mark.timeout(120)

_keys = itertools.count()
HEAD = struct.Struct(">4s7d")
RING = struct.Struct(">10d")
FIELDS = ("budget", "period", "width", "total", "head", "len", "first", "last", "last_w", "pend")


def header(client: redis.Redis, key: str) -> dict[str, Any]:
    """The stored header, parsed (the layout documented in ``_limiter_lua``)."""
    raw = client.get(f"resilient-trading:limiter:{{{key}}}")
    assert isinstance(raw, bytes) and raw[:4] == b"RL5:"
    _, paused, last, _next, _contended, _expires, queued, nrings = HEAD.unpack_from(raw)
    rings = [
        dict(zip(FIELDS, RING.unpack_from(raw, HEAD.size + RING.size * n), strict=True))
        for n in range(int(nrings))
    ]
    assert len(raw) == HEAD.size + RING.size * nrings + 24 * queued
    return {"paused": paused, "last": last, "queued": int(queued), "rings": rings}


def log_name(key: str, ring: dict[str, Any]) -> str:
    return f"resilient-trading:limiter:{{{key}}}:r:{int(ring['budget'])}:{int(ring['period'])}"


def buckets_of(client: redis.Redis, key: str, ring: dict[str, Any]) -> list[tuple[float, float]]:
    """A ring's buckets: its log's live records, then the pending one kept in the header."""
    raw = client.get(log_name(key, ring)) or b""
    assert isinstance(raw, bytes) and len(raw) >= ring["len"]  # beyond: a stale tail
    live = raw[int(ring["head"]) : int(ring["len"])]
    records = [struct.unpack_from(">dd", live, i) for i in range(0, len(live), 16)]
    assert ring["pend"] == 1 or not records  # the newest bucket is always the pending one
    if ring["pend"] == 1:
        records.append((ring["last"], ring["last_w"]))
    return records


def check_consistent(client: redis.Redis, key: str) -> None:
    """Every ring's running total and first bucket agree with its buckets."""
    if not client.exists(f"resilient-trading:limiter:{{{key}}}"):
        return  # nothing stored yet
    for ring in header(client, key)["rings"]:
        records = buckets_of(client, key, ring)
        assert ring["total"] == sum(w for _, w in records)
        if records:
            assert ring["first"] == records[0][0] and records[0][1] > 0
            assert [i for i, _ in records] == sorted({i for i, _ in records})


def server_ms(client: redis.Redis) -> float:
    sec, usec = client.time()
    return sec * 1000 + usec / 1000


def windows_within(admits: list[tuple[float, int]], budget: int, period_ms: float) -> bool:
    """No window ``(t - period, t]`` of reserved instants holds more than ``budget``."""
    ordered = sorted(admits)
    for i, (start, _) in enumerate(ordered):
        if sum(w for t, w in ordered[i:] if t < start + period_ms) > budget:
            return False
    return True


class RedisLayoutMachine(RuleBasedStateMachine):
    """Short windows on the server's real clock, so admissions leave the window while the
    machine runs: the common path trims its logs by moving their head, the general path
    (queued reservations, charges) rewrites them; the header must always match the logs."""

    LIMITS = (RateLimit(24, 0.06), RateLimit(10, 0.02))

    def __init__(self) -> None:
        super().__init__()
        self.admits: list[tuple[float, int]] = []
        self.limiter: RateLimiter | None = None
        self.key = ""

    @initialize()
    def start(self) -> None:
        self.key = f"layout-{next(_keys)}"
        self.client = redis.Redis.from_url(URL)
        self.limiter = RateLimiter(*self.LIMITS, redis_url=URL, key=self.key)

    @rule(weight=st.integers(1, 10))
    def try_acquire(self, weight: int) -> None:
        assert self.limiter is not None
        if self.limiter.try_acquire(weight):
            at = self.limiter.last_admitted_at
            assert at is not None
            self.admits.append((at * 1000, weight))

    @rule(weight=st.integers(1, 10))
    def acquire_soon(self, weight: int) -> None:
        assert self.limiter is not None
        try:
            self.limiter.acquire(weight, timeout=0.03)
        except RateLimitedError:
            return
        at = self.limiter.last_admitted_at
        assert at is not None
        self.admits.append((at * 1000, weight))

    @invariant()
    def header_matches_logs(self) -> None:
        if self.limiter is not None:
            check_consistent(self.client, self.key)

    @invariant()
    def no_window_over_budget(self) -> None:
        for lim in self.LIMITS:
            assert windows_within(self.admits, lim.budget, lim.period * 1000)

    def teardown(self) -> None:
        if self.limiter is not None:
            self.limiter.close()
            self.client.close()


URL = ""


@pytest.fixture
def url(redis_url: str) -> str:
    global URL
    URL = redis_url
    return redis_url


def test_header_and_logs_agree_and_no_window_is_over_budget(url: str) -> None:
    RedisLayoutMachine.TestCase.settings = settings(
        max_examples=15,
        stateful_step_count=40,
        deadline=None,
        suppress_health_check=[HealthCheck.function_scoped_fixture],
    )
    RedisLayoutMachine.TestCase().runTest()


def test_a_log_stays_bounded_however_many_admissions_it_saw(url: str) -> None:
    """Two seconds of admissions on a 0.2 s window: the log's dead front is cut off, so the
    stored bytes stay about one window's buckets, and the sums still match."""
    client = redis.Redis.from_url(url)
    limiter = RateLimiter(RateLimit(10**9, 0.2), redis_url=url, key="bounded")
    end = time.monotonic() + 2.0
    longest = 0
    while time.monotonic() < end:
        for _ in range(50):
            limiter.acquire(1)
        ring = header(client, "bounded")["rings"][0]
        longest = max(longest, int(ring["len"]))
    check_consistent(client, "bounded")
    # about 100 live buckets of 16 bytes, plus at most a 4 KiB dead front before a cut
    assert longest <= 2 * 4096 + 16 * 110
    limiter.close()


def test_the_window_empties_on_the_servers_clock(url: str) -> None:
    """The common path trims by the server's clock: a full window admits again only once
    its first admission is a period old, and then exactly the budget again."""
    client = redis.Redis.from_url(url)
    limiter = RateLimiter(RateLimit(5, 0.2), redis_url=url, key="empties")
    first = server_ms(client)
    assert all(limiter.try_acquire(1) for _ in range(5))
    assert not limiter.try_acquire(1)
    deadline = time.monotonic() + 5.0
    while not limiter.try_acquire(1):
        assert time.monotonic() < deadline
    assert server_ms(client) - first >= 200 - 1
    assert sum(limiter.try_acquire(1) for _ in range(10)) <= 4
    check_consistent(client, "empties")


def test_an_idle_window_stays_in_the_status_read_from_outside(url: str) -> None:
    """A status read (``limits status``, the fleet view: no limits of its own) lists every
    window of the budget, an idle one included, as used 0; it never drops it."""
    from resilient_trading._fleet_view import read_fleet

    RateLimiter(RateLimit(10, 0.2), RateLimit(100, 60.0), redis_url=url, key="idle").acquire(3)

    def windows() -> list[tuple[float, int]]:
        (budget,) = [b for b in read_fleet(redis_url=url).budgets if "{idle}" in b.location]
        return sorted((w.period, w.used) for w in budget.windows)

    assert windows() == [(0.2, 3), (60.0, 3)]
    deadline = time.monotonic() + 5.0
    while windows() != [(0.2, 0), (60.0, 3)]:
        assert len(windows()) == 2, "an idle window vanished from the status"
        assert time.monotonic() < deadline
    assert windows() == [(0.2, 0), (60.0, 3)]  # and it stays listed


def test_a_budget_in_the_previous_layout_is_read_and_converted(url: str) -> None:
    """Old state (one MessagePack value, v4) keeps counting: nothing it admitted is lost."""
    client = redis.Redis.from_url(url)
    key = "resilient-trading:limiter:{old}"
    # the previous layout, written on the server's clock: 8 of 10 used now
    client.eval(
        """
        local t = redis.call('TIME')
        local now = math.floor(tonumber(t[1]) * 1000 + tonumber(t[2]) / 1000)
        local idx = math.ceil(now / 200)
        local st = {v = 4, paused_until = 0, last = now, queue = {}, next = 0, contended = 0,
                    rings = {{budget = 10, period = 20000, width = 200,
                              s = struct.pack('>dd', idx, 8), total = 8}}}
        redis.call('SET', KEYS[1], cmsgpack.pack(st), 'PX', 600000)
        """,
        1,
        key,
    )
    limiter = RateLimiter(RateLimit(10, 20.0), redis_url=url, key="old")
    assert limiter.status().windows[0].used == 8
    assert not limiter.try_acquire(3)
    assert limiter.try_acquire(2)
    assert header(client, "old")["rings"][0]["total"] == 10
    check_consistent(client, "old")


def next_bucket(client: redis.Redis, width_ms: float) -> None:
    """Poll the server's clock until a new bucket of ``width_ms`` begins."""
    start = server_ms(client) // width_ms
    deadline = time.monotonic() + 5.0
    while server_ms(client) // width_ms == start:
        assert time.monotonic() < deadline


@pytest.mark.parametrize("damage", ["lost log", "bad header"])
def test_damaged_state_is_repaired_as_spent_never_as_empty(url: str, damage: str) -> None:
    """A log deleted under the budget is noticed when it is next written (or read), a header
    that is not one at once: the budget then counts as spent for a window, never as empty."""
    client = redis.Redis.from_url(url)
    limiter = RateLimiter(RateLimit(10, 2.0), redis_url=url, key="hurt")  # 20 ms buckets
    assert limiter.try_acquire(3)
    next_bucket(client, 20)
    assert limiter.try_acquire(2)  # the first bucket goes onto the log
    if damage == "lost log":
        assert client.delete("resilient-trading:limiter:{hurt}:r:10:2000") == 1
        next_bucket(client, 20)
    else:
        client.set("resilient-trading:limiter:{hurt}", b"not a header")
    assert not limiter.try_acquire(1)  # no exception, and nothing admitted for a window
    status = limiter.status()
    assert status.paused_until is not None and status.paused_until > time.time() + 1.5
    check_consistent(client, "hurt")


def test_a_forked_child_talks_on_its_own_connection(url: str) -> None:
    limiter = RateLimiter(RateLimit(10**6, 60.0), redis_url=url, key="fork")
    assert limiter.try_acquire(1)
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child reports by its exit status
        ok = all(limiter.try_acquire(1) for _ in range(200))
        os._exit(0 if ok else 1)
    parent_ok = all(limiter.try_acquire(1) for _ in range(200))
    _, status = os.waitpid(pid, 0)
    assert parent_ok and os.waitstatus_to_exitcode(status) == 0
    assert limiter.status().windows[0].used == 401


def test_a_flushed_script_cache_is_reloaded(url: str) -> None:
    client = redis.Redis.from_url(url)
    limiter = RateLimiter(RateLimit(10, 20.0), redis_url=url, key="noscript")
    assert limiter.try_acquire(1)
    client.script_flush()
    assert limiter.try_acquire(1)
    assert limiter.status().windows[0].used == 2


def test_sharers_with_different_limits_count_into_each_others_logs(url: str) -> None:
    """A log named by one sharer (from its own limits) is the log another sharer reaches by
    name from the header: every admission counts in every limit stored."""
    client = redis.Redis.from_url(url)
    a = RateLimiter(RateLimit(10, 20.0), redis_url=url, key="mixed")
    b = RateLimiter(RateLimit(12, 20.0), RateLimit(6, 10.0), redis_url=url, key="mixed")
    assert b.try_acquire(2) and a.try_acquire(4)
    assert not a.try_acquire(1)  # b's 6 per 10 s is full: a's admissions count there too
    totals = {(r["budget"], r["period"]): r["total"] for r in header(client, "mixed")["rings"]}
    # a's limit, new to the key, started from b's 2 already admitted (the longest limit's)
    assert totals == {(12, 20000): 6, (6, 10000): 6, (10, 20000): 6}
    check_consistent(client, "mixed")


def test_a_connection_closed_while_idle_is_reopened_not_an_outage(
    url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The server (or a proxy) closing an idle connection is not Redis going away: the next
    call reconnects and stays on the shared budget instead of falling back to a local share."""
    from resilient_trading import _limiter_redis

    client = redis.Redis.from_url(url)
    limiter = RateLimiter(RateLimit(10, 20.0), redis_url=url, key="idle")
    assert limiter.try_acquire(1)
    monkeypatch.setattr(_limiter_redis, "_IDLE_RECHECK", 0.0)  # "idle": any time since
    assert client.client_kill_filter(_type="normal", skipme=True) >= 1
    assert limiter.try_acquire(1)
    assert limiter.status().mode == "shared"
    assert limiter.status().windows[0].used == 2
