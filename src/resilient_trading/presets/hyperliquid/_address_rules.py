"""The pure rules of one address's action budget (Hyperliquid's per-address limit).

The stored record (:class:`AddressState`, with its checked JSON form), the pacing and
throttling decisions (:func:`decide`, :func:`synced`, :func:`refused`) and the status that
``status`` and the metrics read (:class:`AddressStatus`). No I/O and no clock: every function
takes ``now``; :class:`~resilient_trading.presets.hyperliquid.AddressBudget` (``_address.py``)
runs them on shared state. The exchange's rule is described in ``_address.py``.

Why this module is over 300 lines: the record's JSON form is checked field by field (a
corrupted record is refused with a typed error, never read as zeros), and the status carries
its own rendering for the CLI.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from datetime import datetime, timedelta, timezone
from typing import Any, Literal

from resilient_trading._errors import StateCorruptedError

__all__ = [
    "CANCEL_HEADROOM",
    "EXCHANGE_THROTTLE_SECONDS",
    "INITIAL_BUFFER",
    "KINDS",
    "USER_RATE_LIMIT_WEIGHT",
    "AddressState",
    "AddressStatus",
    "Decision",
    "Kind",
    "Pace",
    "cancel_cap",
    "decide",
    "refused",
    "send_kind",
    "start",
    "synced",
]

#: Hyperliquid's numbers (docs, *Rate limits and user limits*).
INITIAL_BUFFER = 10_000
CANCEL_HEADROOM = 100_000
EXCHANGE_THROTTLE_SECONDS = 10.0
USER_RATE_LIMIT_WEIGHT = 20

Kind = Literal["action", "cancel", "close"]
KINDS = ("action", "cancel", "close")
_HOUR_MINUTES = 60
#: More throttled slots than this reserved ahead means the wall clock stepped back.
_MAX_RESERVED = 100


def send_kind(operation: str, answer_type: str, requests: Sequence[Any]) -> Kind:
    """How an order-path send counts: cancels, reduce-only closes, or ordinary actions.

    >>> send_kind("Exchange.bulk_orders", "order", [{"reduce_only": True}])
    'close'
    """
    if answer_type == "cancel":
        return "cancel"
    if operation.endswith("market_close"):
        return "close"
    if requests and all(isinstance(r, Mapping) and r.get("reduce_only") for r in requests):
        return "close"
    return "action"


def cancel_cap(cap: int) -> int:
    """How far cancels may go: ``min(cap + 100000, 2 * cap)``.

    >>> cancel_cap(10_000), cancel_cap(500_000)
    (20000, 600000)
    """
    return min(cap + CANCEL_HEADROOM, 2 * cap)


@dataclass(frozen=True)
class AddressState:
    """The stored record of one address's budget (JSON in a file or Redis)."""

    address: str = ""
    used: int = 0
    cap: int = INITIAL_BUFFER
    cum_vlm: float = 0.0
    started_at: float = 0.0
    horizon_end: float = 0.0
    synced_at: float | None = None
    sync_claimed_at: float | None = None
    tokens: float = 0.0
    tokens_at: float = 0.0
    throttled: bool = False
    next_slot: float = 0.0
    warned: bool = False
    minutes: tuple[tuple[int, int], ...] = field(default_factory=tuple)  # (minute, actions)

    def to_json(self) -> dict[str, Any]:
        out = asdict(self)
        out["minutes"] = [list(pair) for pair in self.minutes]
        out["version"] = 1
        return out

    @classmethod
    def from_json(cls, raw: Any, *, where: str) -> AddressState:
        if not isinstance(raw, Mapping) or raw.get("version") != 1:
            raise StateCorruptedError(
                f"the address budget at {where} is not a version-1 record ({str(raw)[:80]}); "
                "delete it: the next sync from userRateLimit rebuilds it",
                path=where,
            )
        try:
            minutes = raw["minutes"]
            if not isinstance(minutes, list | tuple):
                raise TypeError(f"minutes is {type(minutes).__name__}, not a list")
            return cls(
                address=_text(raw.get("address", ""), "address"),
                used=_stored_count(raw["used"], "used"),
                cap=_stored_count(raw["cap"], "cap"),
                cum_vlm=_real(raw["cum_vlm"], "cum_vlm"),
                started_at=_real(raw["started_at"], "started_at"),
                horizon_end=_real(raw["horizon_end"], "horizon_end"),
                synced_at=_maybe_real(raw["synced_at"], "synced_at"),
                sync_claimed_at=_maybe_real(raw["sync_claimed_at"], "sync_claimed_at"),
                tokens=_real(raw["tokens"], "tokens"),
                tokens_at=_real(raw["tokens_at"], "tokens_at"),
                throttled=_flag(raw["throttled"], "throttled"),
                next_slot=_real(raw["next_slot"], "next_slot"),
                warned=_flag(raw["warned"], "warned"),
                minutes=tuple(_minute(item) for item in minutes),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise StateCorruptedError(
                f"the address budget at {where} has a bad field ({exc}); delete it: the next "
                "sync from userRateLimit rebuilds it",
                path=where,
            ) from exc

    # --- derived ------------------------------------------------------------------------------

    @property
    def remaining(self) -> int:
        return max(0, self.cap - self.used)

    def per_hour(self, now: float) -> float:
        """Actions in the last hour (scaled up while the budget is younger than an hour)."""
        minute = int(now // 60)
        recent = sum(c for m, c in self.minutes if m > minute - _HOUR_MINUTES)
        age = max(60.0, min(3600.0, now - self.started_at))
        return recent * 3600.0 / age

    def runway(self, now: float) -> timedelta | None:
        """Time until the cap at the last hour's pace (``None``: no actions, no end)."""
        rate = self.per_hour(now)
        if rate <= 0:
            return None
        return timedelta(hours=self.remaining / rate)


@dataclass(frozen=True)
class Decision:
    """What :func:`decide` says: ``admitted`` (counted; send after ``wait`` seconds) or not
    (ask again after ``wait`` seconds)."""

    admitted: bool
    wait: float
    throttled: bool


@dataclass(frozen=True)
class Pace:
    """The pacing configuration :func:`decide` reads."""

    lasts: float
    burst: int
    throttle_interval: float


def start(now: float, pace: Pace, address: str = "") -> AddressState:
    return AddressState(
        address=address,
        started_at=now,
        horizon_end=now + pace.lasts,
        tokens=float(pace.burst),
        tokens_at=now,
        next_slot=now,
    )


def _count(state: AddressState, now: float, n: int) -> AddressState:
    minute = int(now // 60)
    kept = [(m, c) for m, c in state.minutes if m > minute - _HOUR_MINUTES]
    if kept and kept[-1][0] == minute:
        kept[-1] = (minute, kept[-1][1] + n)
    else:
        kept.append((minute, n))
    return replace(state, used=state.used + n, minutes=tuple(kept))


def decide(
    state: AddressState, now: float, n: int, kind: Kind, pace: Pace
) -> tuple[AddressState, Decision]:
    """Admit ``n`` actions of ``kind`` now, later, or after waiting for a throttled slot.

    Pure: no I/O, no clock but ``now``.

    >>> pace = Pace(lasts=3600.0, burst=2, throttle_interval=11.0)
    >>> s = start(0.0, pace)
    >>> s, d = decide(s, 0.0, 2, "action", pace)
    >>> d.admitted, s.used
    (True, 2)
    >>> s, d = decide(s, 0.0, 1, "action", pace)   # the burst is spent: wait for the pace
    >>> d.admitted, round(d.wait, 1)
    (False, 0.4)
    >>> s, d = decide(s, 0.0, 1, "cancel", pace)   # cancels are never paced
    >>> d.admitted, d.wait
    (True, 0.0)
    """
    if state.next_slot > now + _MAX_RESERVED * pace.throttle_interval:
        state = replace(state, next_slot=now)  # the wall clock stepped back: forget the slots
    cap_for_kind = cancel_cap(state.cap) if kind == "cancel" else state.cap
    within = state.used + n <= cap_for_kind
    if kind == "cancel" and within:
        return _count(state, now, n), Decision(True, 0.0, state.throttled)
    if not state.throttled and within:
        if kind == "close":
            return _count(state, now, n), Decision(True, 0.0, False)
        time_left = state.horizon_end - now
        if time_left <= 0:
            return _count(state, now, n), Decision(True, 0.0, False)
        rate = max(state.remaining, 1) / time_left  # actions per second
        tokens = min(float(pace.burst), state.tokens + rate * max(0.0, now - state.tokens_at))
        need = float(min(n, pace.burst))
        if tokens >= need:
            paid = replace(state, tokens=tokens - n, tokens_at=now)
            return _count(paid, now, n), Decision(True, 0.0, False)
        refilled = replace(state, tokens=tokens, tokens_at=now)
        return refilled, Decision(False, (need - tokens) / rate, False)
    # Throttled (refused by the exchange, or at the cap): one action per slot.
    throttled = replace(state, throttled=True)
    if kind in ("cancel", "close"):  # priority: reserve the next slot now
        slot = max(state.next_slot, now)
        reserved = replace(throttled, next_slot=slot + pace.throttle_interval)
        return _count(reserved, now, n), Decision(True, slot - now, True)
    if state.next_slot <= now:
        taken = replace(throttled, next_slot=now + pace.throttle_interval)
        return _count(taken, now, n), Decision(True, 0.0, True)
    return throttled, Decision(False, state.next_slot - now, True)


def synced(state: AddressState, now: float, answer: Mapping[str, Any]) -> AddressState:
    """The record after a ``userRateLimit`` answer; headroom ends throttled mode."""
    used = int(answer["nRequestsUsed"])
    cap = int(answer["nRequestsCap"])
    return replace(
        state,
        used=used,
        cap=cap,
        cum_vlm=float(answer["cumVlm"]),
        synced_at=now,
        sync_claimed_at=None,
        throttled=state.throttled and used >= cap,
    )


def refused(state: AddressState, now: float, interval: float) -> AddressState:
    """The record after the exchange refused an action: throttled, the next slot later."""
    return replace(
        state,
        used=max(state.used, state.cap),
        throttled=True,
        next_slot=max(state.next_slot, now + interval),
    )


@dataclass(frozen=True)
class AddressStatus:
    """Where an address stands: ``used`` of ``cap`` actions, ``cancel_cap`` for cancels,
    ``per_hour`` (the last hour's pace), ``runway`` (time until the cap at that pace;
    ``None``: no actions lately), ``throttled``, ``horizon_end``, ``synced_at``."""

    address: str
    used: int
    cap: int
    cancel_cap: int
    remaining: int
    per_hour: float
    runway: timedelta | None
    throttled: bool
    horizon_end: datetime
    synced_at: datetime | None
    location: str

    @classmethod
    def of_record(cls, raw: Any, *, location: str, now: float) -> AddressStatus:
        """The status of a stored record (for ``resilient-trading limits status``): an
        :class:`AddressBudget`'s file or Redis value, read without creating anything."""
        state = AddressState.from_json(raw, where=location)
        return cls(
            address=state.address,
            used=state.used,
            cap=state.cap,
            cancel_cap=cancel_cap(state.cap),
            remaining=state.remaining,
            per_hour=state.per_hour(now),
            runway=state.runway(now),
            throttled=state.throttled,
            horizon_end=_utc(state.horizon_end),
            synced_at=None if state.synced_at is None else _utc(state.synced_at),
            location=location,
        )

    def to_json(self) -> dict[str, Any]:
        out = asdict(self)
        out["runway_seconds"] = None if self.runway is None else self.runway.total_seconds()
        del out["runway"]
        out["horizon_end"] = self.horizon_end.isoformat()
        out["synced_at"] = None if self.synced_at is None else self.synced_at.isoformat()
        return out

    def summary(self) -> str:
        """``used 120/10000, runway 5d 3h`` (for a log line)."""
        if self.runway is None:
            runway = "unbounded"
        else:
            hours = self.runway.total_seconds() / 3600
            runway = f"{int(hours // 24)}d {int(hours % 24)}h"
        mode = ", throttled" if self.throttled else ""
        return f"used {self.used}/{self.cap}, runway {runway}{mode}"


def _utc(ts: float) -> datetime:
    return datetime.fromtimestamp(ts, tz=timezone.utc)


def _stored_count(value: Any, name: str) -> int:
    """A stored count: a non-negative int (never a bool, a float or a string)."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(f"{name} must be a non-negative integer, got {value!r}")
    return value


def _real(value: Any, name: str) -> float:
    """A stored time or amount: a finite number (never a bool, a string, NaN or infinity)."""
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ValueError(f"{name} must be a finite number, got {value!r}")
    return float(value)


def _maybe_real(value: Any, name: str) -> float | None:
    return None if value is None else _real(value, name)


def _flag(value: Any, name: str) -> bool:
    """A stored flag: exactly true or false (the string "false" is not false)."""
    if not isinstance(value, bool):
        raise ValueError(f"{name} must be true or false, got {value!r}")
    return value


def _text(value: Any, name: str) -> str:
    if not isinstance(value, str):
        raise ValueError(f"{name} must be a string, got {value!r}")
    return value


def _minute(item: Any) -> tuple[int, int]:
    """One ``[minute, count]`` pair of the last hour's counts."""
    if not isinstance(item, list | tuple) or len(item) != 2:
        raise ValueError(f"a minute count must be [minute, count], got {item!r}")
    minute, count = item
    if isinstance(minute, bool) or not isinstance(minute, int):
        raise ValueError(f"a minute must be an integer, got {minute!r}")
    return minute, _stored_count(count, "a minute's count")
