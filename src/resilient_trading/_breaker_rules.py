"""The circuit breaker's decisions: a typed record and pure transitions, no I/O.

Every change of a breaker is one of five rules, each a pure function ``rule(record, now,
**options)`` of the stored :class:`BreakerRecord` and the time (:class:`Now`) returning the new
record and what happened:

* :func:`admit` - may a call go ahead, and is it the half-open trial?
* :func:`settle_success` / :func:`settle_failure` - the outcome of an admitted call;
* :func:`release_trial` - a trial that ended without an outcome (cancelled, interrupted);
* :func:`reset` - the operator's action.

The sync and async shells in ``_breaker.py`` only move records between these rules and a
shared-state home. A rule returns the very same record object when nothing changes, so the
home can skip the write.

Time: a record kept per process (memory) carries monotonic readings beside the wall-clock
ones, and durations are measured on them, so a wall-clock step never shortens or stretches an
open period. A record shared through a file or Redis has only wall-clock times; an
``opened_at`` or ``trial_started`` in the future is impossible unless the clock stepped back,
and is treated as due, so a breaker is never wedged by a step.

The JSON layout (``to_json`` / ``from_json``) is the one written since the first release::

    {"state": "open", "failures": 5, "latched": false, "reason": "NetworkError: ...",
     "opened_at": 1700000000.0, "trial_started": null, "trips": 1}

plus ``successes`` for a pybreaker breaker kept by ``PybreakerStorage``.

Why this module is long: the five rules and the record they read and write change together (a rule's
clock handling depends on which times the record keeps), and about a third of it is that record's
checked JSON parser, which must name what is wrong with a damaged entry.
"""

from __future__ import annotations

import enum
import math
from dataclasses import dataclass, replace
from typing import Any, NamedTuple

from resilient_trading._errors import StateCorruptedError

__all__ = [
    "Admission",
    "BreakerRecord",
    "BreakerSnapshot",
    "BreakerState",
    "Change",
    "Now",
    "admit",
    "is_quiet",
    "release_trial",
    "reset",
    "settle_failure",
    "settle_success",
    "snapshot",
]


class BreakerState(str, enum.Enum):
    """The breaker's state, a ``str`` enum: compare with ``"closed"`` etc. directly."""

    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half-open"

    def __str__(self) -> str:
        return self.value


@dataclass(frozen=True)
class BreakerSnapshot:
    """Everything stored about one breaker (what ``breaker status`` prints)."""

    name: str
    state: BreakerState
    failures: int
    latched: bool
    reason: str | None
    opened_at: float | None
    retry_at: float | None
    trips: int


class Now(NamedTuple):
    """The time a rule sees: the wall clock, and the monotonic clock for per-process state."""

    wall: float
    mono: float | None = None


class Change(NamedTuple):
    """A state change, for logs and ``state_change`` listeners."""

    old: BreakerState
    new: BreakerState


_STATES = {state.value: state for state in BreakerState}
_REQUIRED = ("state", "failures", "latched", "reason", "opened_at", "trial_started", "trips")


def _bad(location: str, what: str) -> StateCorruptedError:
    return StateCorruptedError(
        f"breaker record at {location} {what}; fix or delete that entry, or close the breaker "
        "with `resilient-trading breaker reset` (which rewrites it)",
        path=location,
    )


def _count(value: dict[str, Any], key: str, location: str) -> int:
    item = value[key]
    if isinstance(item, bool) or not isinstance(item, int) or item < 0:
        raise _bad(location, f"has {key}={item!r}, not a count >= 0")
    return item


def _time(value: dict[str, Any], key: str, location: str) -> float | None:
    item = value.get(key)
    if item is None:
        return None
    if isinstance(item, bool) or not isinstance(item, int | float) or not math.isfinite(item):
        raise _bad(location, f"has {key}={item!r}, not a time in seconds")
    return float(item)


@dataclass(frozen=True)
class BreakerRecord:
    """One breaker's stored state, parsed and checked (see the module docstring for the JSON).

    ``opened_mono`` and ``trial_mono`` are monotonic readings kept only by a per-process home;
    they are never written to a file or Redis.
    """

    state: BreakerState = BreakerState.CLOSED
    failures: int = 0
    latched: bool = False
    reason: str | None = None
    opened_at: float | None = None
    trial_started: float | None = None
    trips: int = 0
    successes: int | None = None
    opened_mono: float | None = None
    trial_mono: float | None = None

    @classmethod
    def from_json(cls, value: Any, location: str) -> BreakerRecord:
        """Parse a stored value (``None``: never written, a closed breaker).

        Raises:
            StateCorruptedError: The value is not a breaker record; the message names
                ``location`` and what is wrong.
        """
        if value is None:
            return cls()
        if isinstance(value, BreakerRecord):
            return value
        if not isinstance(value, dict):
            raise _bad(location, f"holds a JSON {type(value).__name__}, not a breaker record")
        missing = [key for key in _REQUIRED if key not in value]
        if missing:
            raise _bad(location, f"lacks the field(s) {', '.join(missing)}")
        state = _STATES.get(value["state"]) if isinstance(value["state"], str) else None
        if state is None:
            raise _bad(location, f"has an unknown state {value['state']!r}")
        latched = value["latched"]
        if not isinstance(latched, bool):
            raise _bad(location, f"has latched={latched!r}, not true or false")
        reason = value["reason"]
        if reason is not None and not isinstance(reason, str):
            raise _bad(location, f"has reason={reason!r}, not a string or null")
        return cls(
            state=state,
            failures=_count(value, "failures", location),
            latched=latched,
            reason=reason,
            opened_at=_time(value, "opened_at", location),
            trial_started=_time(value, "trial_started", location),
            trips=_count(value, "trips", location),
            successes=None if "successes" not in value else _count(value, "successes", location),
            opened_mono=_time(value, "opened_mono", location),
            trial_mono=_time(value, "trial_mono", location),
        )

    def to_json(self) -> dict[str, Any]:
        """The stored form: the same keys, in the same order, as ever."""
        out: dict[str, Any] = {
            "state": self.state.value,
            "failures": self.failures,
            "latched": self.latched,
            "reason": self.reason,
            "opened_at": self.opened_at,
            "trial_started": self.trial_started,
            "trips": self.trips,
        }
        if self.successes is not None:
            out["successes"] = self.successes
        if self.opened_mono is not None:
            out["opened_mono"] = self.opened_mono
        if self.trial_mono is not None:
            out["trial_mono"] = self.trial_mono
        return out


class Admission(NamedTuple):
    """What :func:`admit` decided. ``record`` is the record it saw (for a refusal's message);
    ``token`` identifies the trial (its start time) when ``trial`` is true."""

    allowed: bool
    trial: bool
    record: BreakerRecord
    token: float | None = None


def is_quiet(rec: BreakerRecord) -> bool:
    """Closed with no failure counted: a call is admitted and a success changes nothing."""
    return rec.state is BreakerState.CLOSED and rec.failures == 0


def _elapsed(since: float | None, since_mono: float | None, now: Now) -> float:
    """Seconds since ``since``; an impossible (future) wall time counts as long ago."""
    if since_mono is not None and now.mono is not None:
        return now.mono - since_mono
    if since is None:
        return math.inf
    elapsed = now.wall - since
    return elapsed if elapsed >= 0 else math.inf


def admit(rec: BreakerRecord, now: Now, *, reset_timeout: float) -> tuple[BreakerRecord, Admission]:
    """Closed: go. Latched: refuse. Open and due, or half-open with a stale trial: one trial."""
    if rec.state is BreakerState.CLOSED:
        return rec, Admission(True, False, rec)
    if rec.latched:
        return rec, Admission(False, False, rec)
    if rec.state is BreakerState.OPEN:
        due = _elapsed(rec.opened_at, rec.opened_mono, now) >= reset_timeout
    else:
        due = _elapsed(rec.trial_started, rec.trial_mono, now) >= reset_timeout
    if not due:
        return rec, Admission(False, False, rec)
    new = replace(rec, state=BreakerState.HALF_OPEN, trial_started=now.wall, trial_mono=now.mono)
    return new, Admission(True, True, rec, token=now.wall)


def _closed(rec: BreakerRecord) -> BreakerRecord:
    return BreakerRecord(trips=rec.trips)


def settle_success(
    rec: BreakerRecord, now: Now, *, trial: bool
) -> tuple[BreakerRecord, Change | None]:
    """A call succeeded: clear the failure run; a successful trial closes the breaker."""
    if rec.state is BreakerState.CLOSED:
        return (rec, None) if rec.failures == 0 else (replace(rec, failures=0), None)
    if trial and rec.state is BreakerState.HALF_OPEN and not rec.latched:
        return _closed(rec), Change(rec.state, BreakerState.CLOSED)
    return rec, None


def settle_failure(
    rec: BreakerRecord,
    now: Now,
    *,
    critical: bool,
    reason: str,
    trial: bool,
    fail_max: int,
) -> tuple[BreakerRecord, Change | None]:
    """A call failed: a critical error latches; ``fail_max`` transient ones in a row, or a
    failed trial, open the breaker."""

    def opened(**changes: Any) -> BreakerRecord:
        return replace(
            rec,
            state=BreakerState.OPEN,
            reason=reason,
            opened_at=now.wall,
            opened_mono=now.mono,
            trial_started=None,
            trial_mono=None,
            trips=rec.trips + (rec.state is not BreakerState.OPEN),
            **changes,
        )

    if critical:
        return opened(latched=True), Change(rec.state, BreakerState.OPEN)
    if rec.state is BreakerState.CLOSED:
        failures = rec.failures + 1
        if failures >= fail_max:
            return opened(failures=failures), Change(rec.state, BreakerState.OPEN)
        return replace(rec, failures=failures), None
    if rec.state is BreakerState.HALF_OPEN and trial:
        return opened(), Change(rec.state, BreakerState.OPEN)
    return rec, None


def release_trial(
    rec: BreakerRecord, now: Now, *, token: float | None
) -> tuple[BreakerRecord, Change | None]:
    """The trial ``token`` ended without an outcome: back to open, due at once, so the next
    call gets a fresh trial (nothing else is touched: another trial is not ours to free)."""
    if rec.state is not BreakerState.HALF_OPEN or rec.latched or rec.trial_started != token:
        return rec, None
    new = replace(rec, state=BreakerState.OPEN, trial_started=None, trial_mono=None)
    return new, Change(rec.state, BreakerState.OPEN)


def reset(rec: BreakerRecord, now: Now) -> tuple[BreakerRecord, Change | None]:
    """The operator's reset: closed, no failures, no latch (the trip count is kept)."""
    if rec.state is BreakerState.CLOSED and rec.failures == 0:
        return rec, None
    return _closed(rec), Change(rec.state, BreakerState.CLOSED)


def snapshot(
    name: str, rec: BreakerRecord, reset_timeout: float | None, now: Now | None = None
) -> BreakerSnapshot:
    """Describe a record; ``retry_at`` needs the breaker's ``reset_timeout``.

    With ``now``, ``retry_at`` is on today's wall clock even after a step: measured on the
    monotonic clock for a per-process record, and ``now`` for an impossible (future)
    ``opened_at``, which :func:`admit` treats as due.
    """
    retry_at = None
    if (
        rec.state is not BreakerState.CLOSED
        and not rec.latched
        and rec.opened_at is not None
        and reset_timeout
    ):
        retry_at = rec.opened_at + reset_timeout
        if now is not None:
            elapsed = _elapsed(rec.opened_at, rec.opened_mono, now)
            if math.isinf(elapsed):
                retry_at = now.wall
            elif rec.opened_mono is not None and now.mono is not None:
                retry_at = now.wall + max(0.0, reset_timeout - elapsed)
    return BreakerSnapshot(
        name=name,
        state=rec.state,
        failures=rec.failures,
        latched=rec.latched,
        reason=rec.reason,
        opened_at=rec.opened_at,
        retry_at=retry_at,
        trips=rec.trips,
    )
