"""NonceSource: strictly increasing millisecond nonces shared by every process of one signer.

Hyperliquid accepts a nonce only once per signer, and only within ``(T - 2 days, T + 1 day)``
of its time ``T``; it keeps the 100 highest and refuses anything below the smallest of them.
Two processes signing with one key must therefore never hand out the same value, and should
hand out increasing ones. :meth:`NonceSource.next` returns ``max(now_ms, last + 1)`` under the
same shared-state seam as the rate budget: this process's memory, a file on this host
(``state_path``), or Redis (``redis_url`` + ``key``, one round trip).

A nonce the exchange would refuse is never handed out: if the shared floor is more than a day
ahead of this host's clock (the clock stepped back a day, or the floor was written by a host
whose clock is a day ahead), :meth:`next` raises :class:`~resilient_trading.CriticalError`
with what to do, instead of signing an action the exchange rejects.
"""

from __future__ import annotations

import math
import os
import threading
from typing import Any

from resilient_trading._clock import SYSTEM_CLOCK, Clock
from resilient_trading._errors import CriticalError, NetworkError, redact
from resilient_trading.backends import FileState

__all__ = ["NonceSource"]

#: Hyperliquid refuses nonces more than a day ahead of its clock.
MAX_AHEAD_MS = 86_400_000
#: Margin kept below that bound (clock disagreement between this host and the exchange).
MARGIN_MS = 300_000

_SCRIPT = """
local last = tonumber(redis.call('GET', KEYS[1]) or '0')
local now = tonumber(ARGV[1])
local n = math.max(now, last + 1)
if n > now + tonumber(ARGV[2]) then return {0, tostring(last)} end
redis.call('SET', KEYS[1], tostring(n))
return {1, tostring(n)}
"""


class NonceSource:
    """Hand out nonces that strictly increase across every process sharing this source.

    Args:
        state_path: Share with every process on this host using this file.
        redis_url: Share with every process on every machine using this Redis and ``key``.
        key: The source's name (one per signing key), used in Redis.
        clock: Wall clock for ``now_ms`` (tests pass ``ManualClock``).
        redis_timeout: Redis socket and connect timeout in seconds.

    Example:
        >>> source = NonceSource()
        >>> a, b = source.next(), source.next()
        >>> b > a
        True
    """

    def __init__(
        self,
        *,
        state_path: str | os.PathLike[str] | None = None,
        redis_url: str | None = None,
        key: str = "default",
        clock: Clock = SYSTEM_CLOCK,
        redis_timeout: float = 2.0,
    ) -> None:
        if state_path is not None and redis_url is not None:
            raise ValueError("give state_path or redis_url, not both")
        if not isinstance(key, str) or not key:
            raise ValueError(f"key must be a non-empty str, got {key!r}")
        self._clock = clock
        self._key = key
        self._lock = threading.Lock()
        self._last = 0
        self._file: FileState | None = None
        self._redis: Any = None
        if state_path is not None:
            self._file = FileState(state_path, clock=clock)
        elif redis_url is not None:
            import redis
            from redis.backoff import NoBackoff
            from redis.retry import Retry

            self._redis = redis.Redis.from_url(
                redis_url,
                socket_timeout=redis_timeout,
                socket_connect_timeout=redis_timeout,
                retry=Retry(NoBackoff(), 0),
            )
            self._script = self._redis.register_script(_SCRIPT)
            self._where = f"{redact(redis_url.split('@')[-1])}#resilient-trading:nonce:{{{key}}}"

    @property
    def location(self) -> str:
        if self._file is not None:
            return self._file.location
        if self._redis is not None:
            return self._where
        return "memory"

    def _now_ms(self) -> int:
        return math.floor(self._clock.time() * 1000)

    def _refuse(self, last: int, now: int) -> CriticalError:
        return CriticalError(
            f"nonce source {self.location}: the last nonce handed out ({last}) is "
            f"{(last - now) / 3_600_000:.1f} h ahead of this host's clock; Hyperliquid refuses "
            "nonces more than a day ahead. Fix the clock (is NTP running?), or, if the clock "
            "is right, reset the source (delete its file or key) once no process is signing",
            operation="NonceSource.next",
        )

    def next(self) -> int:
        """The next nonce: ``max(now_ms, last + 1)``, unique across every sharer."""
        limit = MAX_AHEAD_MS - MARGIN_MS
        if self._redis is not None:
            import redis

            now = self._now_ms()
            try:
                ok, value = self._script(
                    keys=[f"resilient-trading:nonce:{{{self._key}}}"], args=[now, limit]
                )
            except redis.RedisError as exc:
                raise NetworkError(
                    f"Redis at {self.location} failed: {type(exc).__name__}; no nonce was "
                    "handed out",
                    operation="NonceSource.next",
                ) from exc
            if not int(ok):
                raise self._refuse(int(value), now)
            return int(value)
        if self._file is not None:

            def fn(old: Any, _: float) -> tuple[Any, tuple[bool, int, int]]:
                last = old if isinstance(old, int) and not isinstance(old, bool) else 0
                now = self._now_ms()
                n = max(now, last + 1)
                if n > now + limit:
                    return old, (False, last, now)
                return n, (True, n, now)

            ok, value, now = self._file.transact(fn)
            if not ok:
                raise self._refuse(value, now)
            return value
        with self._lock:
            now = self._now_ms()
            n = max(now, self._last + 1)
            if n > now + limit:
                raise self._refuse(self._last, now)
            self._last = n
            return n

    def close(self) -> None:
        """Release the file descriptor or connection."""
        if self._file is not None:
            self._file.close()
        if self._redis is not None:
            self._redis.close()

    def __repr__(self) -> str:
        return f"NonceSource({self.location!r})"
