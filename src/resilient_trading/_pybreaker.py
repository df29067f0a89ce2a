"""PybreakerStorage: a plain ``pybreaker.CircuitBreaker`` keeps its state in our homes.

Imported lazily (``resilient_trading.PybreakerStorage`` loads this module on first use), so
pybreaker is needed only by those who use this adapter.
"""

from __future__ import annotations

import dataclasses
import datetime
import os
from typing import Any

try:
    import pybreaker
except ImportError as exc:  # pragma: no cover - exercised only without pybreaker
    raise ImportError(
        "PybreakerStorage needs pybreaker: pip install 'resilient-trading[pybreaker]' "
        "(or pip install pybreaker)"
    ) from exc

from resilient_trading._breaker import _home
from resilient_trading._breaker_rules import BreakerRecord, BreakerState
from resilient_trading._clock import SYSTEM_CLOCK

__all__ = ["PybreakerStorage"]


class PybreakerStorage(pybreaker.CircuitBreakerStorage):
    """Keep a plain ``pybreaker.CircuitBreaker``'s state in one of our homes.

    For code that already uses pybreaker: its state, failure counter and opening time go to
    a :class:`LockedJsonStore` file (``state_path``) or Redis (``redis_url``), each change an
    atomic transition, in the same layout as :class:`CircuitBreaker` (so
    ``resilient-trading breaker status`` shows it). pybreaker's own semantics apply: no
    classification, no latch, and its lock around the whole call.

    Example:
        >>> import pybreaker, tempfile, os
        >>> path = os.path.join(tempfile.mkdtemp(), "breakers.json")
        >>> cb = pybreaker.CircuitBreaker(state_storage=PybreakerStorage("api", state_path=path))
        >>> cb.current_state
        'closed'
    """

    def __init__(
        self,
        name: str = "default",
        *,
        state_path: str | os.PathLike[str] | None = None,
        redis_url: str | None = None,
        lock_timeout: float | None = 10.0,
    ) -> None:
        super().__init__(name)
        if state_path is not None and redis_url is not None:
            raise ValueError("give state_path or redis_url, not both")
        self._home = _home(name, state_path, redis_url, SYSTEM_CLOCK, lock_timeout)

    def _get(self) -> BreakerRecord:
        return BreakerRecord.from_json(self._home.read(), self._home.location)

    def _change(self, **changes: Any) -> None:
        location = self._home.location

        def fn(old: Any, now: float) -> tuple[Any, None]:
            rec = BreakerRecord.from_json(old, location)
            return dataclasses.replace(rec, **changes).to_json(), None

        self._home.transact(fn)

    def _add(self, key: str, amount: int | None) -> None:
        location = self._home.location

        def fn(old: Any, now: float) -> tuple[Any, None]:
            rec = BreakerRecord.from_json(old, location)
            value = 0 if amount is None else int(getattr(rec, key) or 0) + amount
            changes: dict[str, Any] = {key: value}
            return dataclasses.replace(rec, **changes).to_json(), None

        self._home.transact(fn)

    @property
    def state(self) -> str:
        return self._get().state.value

    @state.setter
    def state(self, state: str) -> None:
        self._change(state=BreakerState(str(state)))

    def increment_counter(self) -> None:
        self._add("failures", 1)

    def reset_counter(self) -> None:
        self._add("failures", None)

    def increment_success_counter(self) -> None:
        self._add("successes", 1)

    def reset_success_counter(self) -> None:
        self._add("successes", None)

    @property
    def counter(self) -> int:
        return self._get().failures

    @property
    def success_counter(self) -> int:
        return self._get().successes or 0

    @property
    def opened_at(self) -> datetime.datetime | None:
        value = self._get().opened_at
        if value is None:
            return None
        return datetime.datetime.fromtimestamp(value, tz=datetime.timezone.utc)

    @opened_at.setter
    def opened_at(self, value: datetime.datetime) -> None:
        self._change(opened_at=value.timestamp())
