"""Shared state in Redis: one value shared by processes on many machines.

Each transition is an optimistic transaction: ``WATCH key``, read the server's ``TIME`` and the
value, run the transition in this process, then ``MULTI``/``SET``/``EXEC``; if another client
changed the key in between, ``EXEC`` fails and the transition runs again on the new value.
Time comes from the Redis server, so machines whose clocks disagree still share one window.

Needs the ``redis`` extra (``pip install resilient-trading[redis]``); the package is imported
only when a :class:`RedisState` is created.
"""

from __future__ import annotations

import json
import math
from typing import Any, TypeVar

from resilient_trading._errors import LockTimeoutError, NetworkError, StateCorruptedError, redact
from resilient_trading.backends._base import JsonValue, Transition

__all__ = ["RedisState"]

T = TypeVar("T")

_MAX_CONFLICTS = 1000


def _connect(url: str, timeout: float) -> Any:
    try:
        import redis
    except ImportError as exc:  # pragma: no cover - exercised only without the extra
        raise ImportError(
            "redis_url needs the redis package: pip install 'resilient-trading[redis]'"
        ) from exc
    from redis.backoff import NoBackoff
    from redis.retry import Retry

    # No hidden retries with backoff: a dead or hung Redis fails within ``timeout`` (a caller's
    # own timeout, e.g. ``acquire(timeout=1)``, must bound the call, not redis-py's retries).
    return redis.Redis.from_url(
        url,
        socket_timeout=timeout,
        socket_connect_timeout=timeout,
        retry=Retry(NoBackoff(), 0),
    )


class RedisState:
    """A :class:`~resilient_trading.backends.SharedState` stored under one Redis key.

    Args:
        url: A Redis URL (``redis://host:6379/0``). Credentials in it never appear in messages.
        key: The key holding the value (namespaced by the caller, e.g. ``rt:limiter:default``).
        ttl: Expire the key this many seconds after the last write (``None``: never).
        socket_timeout: Seconds before a Redis call (or connecting) fails with
            :class:`NetworkError`; redis-py's own retries are off, so this bounds each call.
    """

    def __init__(
        self,
        url: str,
        key: str,
        *,
        ttl: float | None = None,
        socket_timeout: float = 5.0,
    ) -> None:
        if not isinstance(url, str) or not url.startswith(("redis://", "rediss://", "unix://")):
            raise ValueError("redis_url must be a redis://, rediss:// or unix:// URL")
        if not isinstance(key, str) or not key:
            raise ValueError(f"key must be a non-empty str, got {key!r}")
        if ttl is not None and (not isinstance(ttl, int | float) or math.isnan(ttl) or ttl <= 0):
            raise ValueError(f"ttl must be a positive number of seconds or None, got {ttl!r}")
        self._url = url
        self._key = key
        self._ttl_ms = None if ttl is None else max(1, math.ceil(ttl * 1000))
        self._client = _connect(url, socket_timeout)

    @property
    def location(self) -> str:
        return f"{redact(_strip_credentials(self._url))}#{self._key}"

    @property
    def key(self) -> str:
        return self._key

    def _fail(self, exc: Exception) -> NetworkError:
        return NetworkError(f"Redis at {self.location} failed: {type(exc).__name__}")

    @staticmethod
    def _time(pipe: Any) -> float:
        seconds, micros = pipe.time()
        return float(seconds) + float(micros) / 1_000_000

    def _decode(self, raw: Any) -> JsonValue:
        if raw is None:
            return None
        try:
            return json.loads(raw)
        except ValueError as exc:
            raise StateCorruptedError(
                f"Redis key {self.location} does not hold JSON ({exc})", path=self.location
            ) from exc

    def transact(self, fn: Transition[T]) -> T:
        import redis

        try:
            with self._client.pipeline() as pipe:
                for _ in range(_MAX_CONFLICTS):
                    try:
                        pipe.watch(self._key)
                        now = self._time(pipe)
                        old = self._decode(pipe.get(self._key))
                        new, result = fn(old, now)
                        if new is old:
                            pipe.unwatch()
                            return result
                        data = json.dumps(new, separators=(",", ":"), allow_nan=False)
                        pipe.multi()
                        if self._ttl_ms is None:
                            pipe.set(self._key, data)
                        else:
                            pipe.set(self._key, data, px=self._ttl_ms)
                        pipe.execute()
                        return result
                    except redis.WatchError:
                        continue
        except redis.RedisError as exc:
            raise self._fail(exc) from exc
        raise LockTimeoutError(
            f"Redis key {self.location} changed under {_MAX_CONFLICTS} transactions in a row",
            lock_path=self.location,
        )

    def read(self) -> JsonValue:
        import redis

        try:
            raw = self._client.get(self._key)
        except redis.RedisError as exc:
            raise self._fail(exc) from exc
        return self._decode(raw)

    def time(self) -> float:
        import redis

        try:
            seconds, micros = self._client.time()
        except redis.RedisError as exc:
            raise self._fail(exc) from exc
        return float(seconds) + float(micros) / 1_000_000

    def close(self) -> None:
        self._client.close()

    def __repr__(self) -> str:
        return f"RedisState({self.location!r})"


def _strip_credentials(url: str) -> str:
    scheme, sep, rest = url.partition("://")
    if "@" in rest:
        rest = "***@" + rest.split("@", 1)[1]
    return f"{scheme}{sep}{rest}"
