"""The limiter's budget on a :class:`~resilient_trading.backends.SharedState` (memory or file).

Each operation is one :meth:`SharedState.transact`: parse the stored state (or, in memory, use
the typed state itself), trim it, run the rule from :mod:`resilient_trading._limiter_rules`,
store the result. On a file it is :meth:`FileState.transact_cached`: while the file holds,
byte for byte, what this process wrote last, neither the file nor the state is parsed again
(this process's own copy is used), and the compact form re-packs only the ends of each ring.

A stored state that is not a limiter state is repaired conservatively: the budget is treated as
spent for one full window (never over budget), and a warning names the file and the bad field.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from resilient_trading import _limiter_compact as compact
from resilient_trading import _limiter_rules as rules
from resilient_trading._errors import LockTimeoutError, RateLimitedError
from resilient_trading.backends import FileState, MemoryState, SharedState

__all__ = ["Refused", "StateBudget"]

log = logging.getLogger("resilient_trading.ratelimit")


@dataclass(frozen=True)
class Refused:
    """A reservation that would wait longer than allowed: nothing was reserved."""

    decision: rules.Decision
    used: tuple[int, ...]


def _dumps(text: str) -> bytes:
    """The JSON text of a compact state: base64 after an ASCII prefix needs no escaping."""
    return b'"%s"' % text.encode("ascii")


class StateBudget:
    """A budget whose state lives behind the :class:`SharedState` seam."""

    def __init__(self, state: SharedState, rings: list[rules.Ring], *, base: Any) -> None:
        self._state = state
        self._rings = rings
        self._keys = [(r.budget, r.period_ms) for r in rings]  # this limiter's rings come first
        self._typed = isinstance(state, MemoryState)
        self._base = base  # Callable[[], float]: the clock transitions are timed on
        # The file home: the compact text this process wrote last and the state it encodes.
        # While the file still holds exactly that text, nobody else wrote: skip the decode.
        self._written: str | None = None
        self._cached: rules.LimiterState | None = None
        self._checked: list[rules.Ring] | None = None  # a rings list already in our order
        self._file = state if isinstance(state, FileState) else None

    @property
    def location(self) -> str:
        return self._state.location

    @property
    def state(self) -> SharedState:
        return self._state

    def _load(self, old: Any, now: float) -> rules.LimiterState:
        if self._typed and isinstance(old, rules.LimiterState):
            state = old
        elif self._cached is not None and old is self._written:
            state, self._cached = self._cached, None  # ours until stored again
        else:
            try:
                state = compact.parse(old)
            except rules.BadState as exc:
                state = self._repair(exc, now)
        step = rules.trim(state, now)
        if step:
            log.warning(
                "rate budget %s: the clock stepped back %.3fs; stored times moved back with it",
                self.location,
                step / 1000,
            )
        rings = state.rings
        if rings is self._checked:  # the very list checked last time (only _load replaces it)
            return state
        if len(rings) < len(self._keys) or any(
            (r.budget, r.period_ms) != key for r, key in zip(rings, self._keys, strict=False)
        ):
            mine = rules.sync_rings(
                state, [rules.Ring(r.budget, r.period_ms, r.width_ms) for r in self._rings]
            )
            state.rings = mine + [r for r in state.rings if not any(r is m for m in mine)]
            rules.trim(state, now)  # a new ring seeded from a longer one: what left its window
        self._checked = state.rings
        return state

    def _repair(self, exc: rules.BadState, now: float) -> rules.LimiterState:
        longest = max(r.period_ms for r in self._rings)
        log.warning(
            "rate budget %s holds no valid limiter state (%s); treating the budget as spent "
            "for one window (%.3fs) and starting afresh",
            self.location,
            exc,
            longest / 1000,
        )
        state = rules.LimiterState(rings=[])
        state.paused_until_ms = rules.ceil_ms(now) + longest
        state.last_ms = rules.floor_ms(now)
        return state

    def _store(self, state: rules.LimiterState) -> Any:
        if self._typed:
            return state
        self._written = compact.encode(state)
        self._cached = state
        return self._written

    def _transact(self, fn: Any, lock_timeout: float | None = None) -> Any:
        if self._file is not None:  # skips the parse while the file holds our last write
            return self._file.transact_cached(fn, dumps=_dumps, lock_timeout=lock_timeout)
        return self._state.transact(fn)

    def reserve(self, weight: int, max_wait: Any, started: float) -> rules.Decision | Refused:
        """Reserve ``weight``; refuse when the wait exceeds ``max_wait(now_base)`` seconds."""
        token = rules.new_token()

        def fn(old: Any, now: float) -> tuple[Any, rules.Decision | Refused]:
            state = self._load(old, now)
            decision = rules.plan(state, now, weight, token)
            limit = max_wait(started)
            if (limit is not None and decision.wait > limit) or (
                decision.at_ms - decision.start_ms > rules.MAX_AHEAD_MS
            ):
                used = tuple(r.used_at(now * 1000) for r in state.rings[: len(self._rings)])
                return old, Refused(decision, used)
            rules.apply(state, decision)
            return self._store(state), decision

        # The caller's timeout is wall time from its call: waiting for another process's
        # lock counts against it too.
        left = max_wait(started)
        try:
            result: rules.Decision | Refused = self._transact(fn, left)
        except LockTimeoutError as exc:
            if left is None:
                raise
            raise RateLimitedError(
                f"rate budget {self.location}: its file stayed locked by another process "
                f"({exc.holder or 'unknown holder'}) past this call's {left:.3f}s timeout; "
                "nothing was reserved",
                retry_after=0.01,
                source="local",
            ) from exc
        return result

    def release(self, decision: rules.Decision) -> bool:
        def fn(old: Any, now: float) -> tuple[Any, bool]:
            state = self._load(old, now)
            found = rules.release(state, decision.at_ms, decision.weight, decision.token)
            return self._store(state), found

        found: bool = self._transact(fn)
        return found

    def charge(self, weight: int) -> None:
        def fn(old: Any, now: float) -> tuple[Any, None]:
            state = self._load(old, now)
            rules.charge(state, now, weight)
            return self._store(state), None

        self._transact(fn)

    def pause(self, seconds: float) -> None:
        def fn(old: Any, now: float) -> tuple[Any, None]:
            state = self._load(old, now)
            rules.pause(state, now, seconds)
            return self._store(state), None

        self._transact(fn)

    def snapshot(self) -> tuple[rules.LimiterState, float]:
        """A parsed copy of the stored state and the time it was read at (no write)."""
        raw = self._state.read()
        now = self._base()
        if isinstance(raw, rules.LimiterState):
            raw = compact.encode(raw)
        try:
            state = compact.parse(raw)
        except rules.BadState:
            state = rules.LimiterState(rings=[])
        return state, now
