"""The limiter's budget in Redis: one Lua script, one round trip, and a local share in outages.

Every operation (reserve, release, charge, pause, status, merge) is one ``EVALSHA`` of the
script in :mod:`resilient_trading._limiter_lua`, which runs
:mod:`resilient_trading._limiter_rules` line for line on the server: it reads the server's
``TIME``, trims, checks every limit with the FIFO reservation rule, writes and sets expiries.
The script is loaded on the first ``NOSCRIPT`` (and again after a Redis restart). Keys are
hash-tagged (``resilient-trading:limiter:{key}`` and suffixes of it) so all live on one Redis
Cluster slot. The Redis must run with ``maxmemory-policy noeviction``: an evicted budget would
forget its window.

The hot path skips what redis-py does per command: the command is sent as bytes encoded once
(:class:`~resilient_trading._limiter_lua.Command`) on one connection this budget keeps (taken
from redis-py's pool, so connecting, timeouts and TLS are redis-py's), and the common answer
is a single integer.

When Redis cannot be reached, or refuses writes (out of memory, read-only, ``MISCONF``)
(``on_error="fallback"``, the default), the budget does not raise:

1. It logs one warning and switches to a *local share*: each limit's budget divided by the
   most sharers this process ever counted alive (heartbeats in ``...:sharers``), at least
   ``expected_sharers`` (a sharer that never reached Redis has counted nobody). The first
   window after the outage is treated as full (what others admitted just before it is
   unknown), then this process admits at most ``budget // N`` per window.
2. It retries Redis with exponential backoff (0.25 s doubling to 2 s).
3. Back in contact (even with an empty Redis after a restart), it first writes its own
   admissions of the last window back, plus a reserve covering sharers still on their local
   share for one backoff interval and one window (one reserve for the fleet: later merges top
   it up), then resumes sharing the budget.
4. A sharer that wrote the budget lately and finds its header gone (Redis restarted empty
   unseen, ``FLUSHDB``, the key deleted) has the script repair it: spent for one window.

Why this module is long: the outage mode (local share, backoff, merge, grace window) is
most of it; the script and its argument encoding live in :mod:`resilient_trading._limiter_lua`.
"""

from __future__ import annotations

import logging
import math
import os
import re
import secrets
import threading
import time
from collections.abc import Callable
from typing import Any

from resilient_trading import _limiter_rules as rules
from resilient_trading._errors import NetworkError, RateLimitedError, redact
from resilient_trading._limiter_lua import SCRIPT, Command
from resilient_trading._limiter_state import Refused

__all__ = ["RedisBudget"]

log = logging.getLogger("resilient_trading.ratelimit")

_BACKOFF_MIN = 0.25
_BACKOFF_MAX = 2.0
#: A sharer's heartbeat is refreshed at most this often (seconds, on its own clock).
_BEAT_EVERY = 1.0
#: A connection idle this long (seconds) is tried once more when it fails (see ``_call``).
_IDLE_RECHECK = 1.0
#: Error codes of a Redis that is up but cannot serve the budget now (out of memory with
#: ``noeviction``, a read-only replica after a failover, a failed snapshot, still loading):
#: handled like an unreachable Redis, never raised to every caller.
_UNAVAILABLE = re.compile(r"\b(OOM|READONLY|MISCONF|LOADING|MASTERDOWN|NOREPLICAS|TRYAGAIN)\b")
#: Local share divisor of a sharer that never counted the others (it started during an
#: outage): see ``expected_sharers`` of :class:`RedisBudget`.
DEFAULT_EXPECTED_SHARERS = 4


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
        expected_sharers: int = DEFAULT_EXPECTED_SHARERS,
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
        self._base = base
        self._on_error = on_error
        self._conn: Any = None  # one connection from the pool, this process's, under _lock
        self._pid = 0
        self._new_sharer()
        self._used_at = -math.inf  # when the connection last answered (time.monotonic)
        self._beat_at = -math.inf  # when this sharer's heartbeat was last sent (base clock)
        self._wrote_at = -math.inf  # when this sharer last wrote the budget (base clock)
        # a write keeps every key two windows and a minute (see _limiter_lua): within that, a
        # missing header was lost, not expired
        self._keeps = 2 * max((r.period_ms for r in rings), default=0) / 1000 + 60.0
        self._lock = threading.RLock()
        # this process's own admissions, on the local time base (for the merge after an outage)
        self._mine = rules.LimiterState(
            rings=[rules.Ring(r.budget, r.period_ms, r.width_ms) for r in rings]
        )
        self._untrimmed = 0  # admissions logged in _mine since it was last trimmed
        self._sharers = 1
        # the local share's divisor: the most sharers ever counted here, at least the expected
        # number (a sharer idle > 10 s drops out of the count; one that never reached Redis
        # has no count at all)
        self._expected = expected_sharers
        self._sharers_peak = 0
        self._lost = False  # the budget was found lost (repaired) by the last call
        self._local: rules.LimiterState | None = None  # set while on the local share
        self._grace: rules.LimiterState | None = None  # the local share, one window after
        self._grace_until = 0.0
        self._retry_at = 0.0
        self._backoff = _BACKOFF_MIN

    def _new_sharer(self) -> None:
        """A fresh sharer id and the command encoding it (at start and in a forked child:
        a child sharing its parent's id would be counted as one sharer)."""
        key = self._keys[0]
        self._sharer = secrets.token_hex(8)
        # every key a call touches is named (Redis Cluster routes by them): the header, the
        # heartbeats and this limiter's logs (logs of limits only other sharers configured
        # are reached by name from the header, on the same slot)
        logs = [f"{key}:r:{r.budget}:{r.period_ms}" for r in self._rings]
        self._cmd = Command(
            [*self._keys, *logs],
            self._sharer,
            [(r.budget, r.period_ms, r.width_ms) for r in self._rings],
        )
        self._owner = os.getpid()
        self._beat_at = -math.inf

    def _is_outage(self, exc: Exception) -> bool:
        """Redis unreachable, or up but unable to serve the budget now (handled alike)."""
        errors = self._redis.exceptions
        if isinstance(
            exc,
            (
                errors.ConnectionError,  # BusyLoadingError (LOADING) too
                errors.TimeoutError,
                errors.OutOfMemoryError,
                errors.ReadOnlyError,
                errors.MasterDownError,
                errors.TryAgainError,
            ),
        ):
            return True
        # codes redis-py has no class for stay in the message (MISCONF, NOREPLICAS)
        return isinstance(exc, errors.ResponseError) and bool(_UNAVAILABLE.search(str(exc)[:120]))

    def _share_divisor(self) -> int:
        """How many sharers the local share assumes (see ``_enter_fallback``)."""
        return max(self._sharers_peak, self._sharers, self._expected)

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

    @property
    def share(self) -> int:
        """The local share's divisor in an outage: the most sharers ever counted here, at
        least ``expected_sharers``."""
        return self._share_divisor()

    def close(self) -> None:
        with self._lock:
            conn, self._conn = self._conn, None
            if conn is not None and self._pid == os.getpid():
                self._client.connection_pool.release(conn)
        self._client.close()

    # --- one round trip ---------------------------------------------------------------------

    def _call(self, frame: bytes) -> Any:
        """Send one packed command and read its answer, on this process's own connection
        (a forked child takes a fresh one: the pool resets itself after a fork)."""
        conn = self._conn
        if conn is None or self._pid != os.getpid():
            conn = self._conn = self._client.connection_pool.get_connection()
            self._pid = os.getpid()
        try:
            conn.send_packed_command((frame,), check_health=False)
            reply = conn.read_response()
        except self._redis.ConnectionError:
            if time.monotonic() - self._used_at < _IDLE_RECHECK:
                raise
            # A connection that sat idle may have been closed by the server or a proxy, or
            # Redis restarted meanwhile: once more, on a fresh connection (redis-py reconnects
            # a closed one). Safe even if the first attempt ran: an operation counted twice
            # only ever wastes budget, it never admits more.
            conn.send_packed_command((frame,), check_health=False)
            reply = conn.read_response()
        self._used_at = time.monotonic()
        return reply

    def _eval(self, op: str, *args: Any) -> Any:
        """One ``EVALSHA``: an ``int`` for the common reserve or charge, else the list."""
        if self._owner != os.getpid():  # a forked child: its own sharer, counted apart
            self._new_sharer()
        now = self._base()
        beat = op != "status" and now - self._beat_at >= _BEAT_EVERY
        # wrote lately: the header must be there, a missing one was lost (restart, flush)
        expect = op != "status" and now - self._wrote_at < self._keeps
        frame = self._cmd.frame(op, beat, *args, expect=expect)
        try:
            reply = self._call(frame)
        except self._redis.exceptions.NoScriptError:  # first use, or Redis restarted
            self._call(self._cmd.load(SCRIPT))
            reply = self._call(frame)
        if beat:
            self._beat_at = now
        if type(reply) is int:
            self._wrote_at = now
            return reply
        # the list ends with: sharers, server time, clock step, status, repaired
        if op != "status" and not (op == "reserve" and not int(reply[0])):
            self._wrote_at = now  # written (a refused reserve and a status read are not)
        if int(reply[-5]) > 0:  # -1: no heartbeat this call, the count not re-read
            self._sharers = int(reply[-5])
            self._sharers_peak = max(self._sharers_peak, self._sharers)
        self._lost = op != "status" and bool(int(reply[-1]))
        if self._lost:
            log.warning(
                "rate budget %s: the shared budget in Redis was lost or damaged (Redis "
                "restarted empty, flushed, or a key deleted or overwritten); it counts as "
                "spent for one window",
                self.location,
            )
        step = int(reply[-3])
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
            except self._redis.RedisError as exc:
                if not self._is_outage(exc):
                    raise
                self._retry_at = self._base() + self._backoff
                self._backoff = min(_BACKOFF_MAX, self._backoff * 2)
                return False
            return True

    def _shared(self, op: str, *args: Any) -> Any:
        """Run ``op`` on Redis; ``None`` when Redis is unreachable and the fallback applies."""
        with self._lock:
            if not self._try_recover():
                return None
            try:
                return self._eval(op, *args)
            except self._redis.RedisError as exc:
                if self._is_outage(exc):
                    if self._on_error == "raise":
                        raise NetworkError(
                            f"Redis at {self.location} failed: {type(exc).__name__}; the "
                            "shared rate budget cannot be reached"
                        ) from exc
                    self._enter_fallback(exc)
                    return None
                raise NetworkError(
                    f"Redis at {self.location} failed: {type(exc).__name__}: "
                    f"{redact(str(exc))[:200]}"
                ) from exc

    def _enter_fallback(self, exc: Exception) -> None:
        now = self._base()
        n = self._share_divisor()
        rings = [rules.Ring(max(1, r.budget // n), r.period_ms, r.width_ms) for r in self._rings]
        local = rules.LimiterState(rings=rings)
        rules.trim(local, now)
        # what the others admitted just before the outage is unknown: one full window first
        local.paused_until_ms = rules.ceil_ms(now) + max(r.period_ms for r in rings)
        self._local = local
        self._retry_at = now + _BACKOFF_MIN
        self._backoff = _BACKOFF_MIN * 2
        log.warning(
            "rate budget %s: Redis unreachable or refusing writes (%s); admitting on a local "
            "share of 1/%d of "
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
        n = self._share_divisor()
        others = (n - 1) / n
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
        if type(reply) is int:  # the common answer: admitted now, at this server millisecond
            decision = rules.Decision(reply, reply, 0.0, float(reply), weight, token, 0, 0)
            self._count_mine(decision, grace)
            return decision
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
        self._count_mine(decision, grace)
        return decision

    def _count_mine(self, decision: rules.Decision, grace: rules.LimiterState | None) -> None:
        """Log an admission on the local clock too (written back after an outage)."""
        with self._lock:
            now = self._base()
            at_ms = rules.ceil_ms(now + decision.wait)
            for ring in self._mine.rings:
                ring.add(at_ms, decision.weight)
            self._untrimmed += 1
            if self._untrimmed >= 64:  # what left the window, forgotten in batches
                rules.trim(self._mine, now)
                self._untrimmed = 0
            if grace is not None:
                for ring in grace.rings:
                    ring.add(at_ms, decision.weight)

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
                    f"this process's local share of the budget (1/{self._share_divisor()}); retry "
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
        return bool(reply is not None and int(reply[0]))

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
        return rules.from_json(json.loads(reply[-2])), float(reply[-4]) / 1000
