"""One address's action budget on Hyperliquid, shared by every process that signs for it.

Besides the IP's 1200 weight a minute, Hyperliquid counts *actions* per address
(docs: *Rate limits and user limits*): 10,000 to start plus one per USDC traded; cancels may
go on to ``min(cap + 100000, 2 * cap)``; a batch of n counts n; over the cap, one action per
10 s. ``userRateLimit`` (``/info``, weight 20) says where an address stands:
``{cumVlm, nRequestsUsed, nRequestsCap, nRequestsSurplus}``.

:class:`AddressBudget` counts the actions it admits, syncs from ``userRateLimit`` at the first
action and every ``sync_every`` seconds, and paces ordinary actions so the budget lasts a
horizon (``lasts``): a token bucket of ``burst`` actions refilled at
``remaining / time left``. Cancels (within their allowance) and reduce-only closes (within
the cap) are never paced. Once the exchange refuses (``Too many cumulative requests``) or the
count reaches the cap, the address is *throttled*: one action per ``throttle_interval``
(11 s, one more than the exchange's 10), cancels and closes first, until a sync shows
headroom. The decisions are pure functions of the stored record (:func:`decide`); the state
lives behind :func:`resilient_trading.backends.open_state` (memory, a file, Redis).

Why this module is long: it models one exchange rule end to end: the stored record with its checked
JSON form, the pure pacing and throttling decisions, the status that ``status`` and the metrics
read, and the shell that runs the decisions on shared state.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from datetime import datetime, timedelta, timezone
from typing import Any, Literal

from resilient_trading._clock import SYSTEM_CLOCK, Clock
from resilient_trading._errors import RateLimitedError, StateCorruptedError
from resilient_trading._events import AddressEvent, AlertEvent, emit, event_text, listening
from resilient_trading._validate import check_int, check_number
from resilient_trading.backends import SharedState, open_state

__all__ = ["AddressBudget", "AddressState", "AddressStatus", "Decision", "decide", "send_kind"]

log = logging.getLogger("resilient_trading.address")

#: Hyperliquid's numbers (docs, *Rate limits and user limits*).
INITIAL_BUFFER = 10_000
CANCEL_HEADROOM = 100_000
EXCHANGE_THROTTLE_SECONDS = 10.0
USER_RATE_LIMIT_WEIGHT = 20

Kind = Literal["action", "cancel", "close"]
_KINDS = ("action", "cancel", "close")
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
            return cls(
                address=str(raw.get("address", "")),
                used=int(raw["used"]),
                cap=int(raw["cap"]),
                cum_vlm=float(raw["cum_vlm"]),
                started_at=float(raw["started_at"]),
                horizon_end=float(raw["horizon_end"]),
                synced_at=None if raw["synced_at"] is None else float(raw["synced_at"]),
                sync_claimed_at=(
                    None if raw["sync_claimed_at"] is None else float(raw["sync_claimed_at"])
                ),
                tokens=float(raw["tokens"]),
                tokens_at=float(raw["tokens_at"]),
                throttled=bool(raw["throttled"]),
                next_slot=float(raw["next_slot"]),
                warned=bool(raw["warned"]),
                minutes=tuple((int(m), int(c)) for m, c in raw["minutes"]),
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


class AddressBudget:
    """One Hyperliquid address's action budget, paced to last ``lasts``.

    Share one budget between every process signing for the address by giving them the same
    ``state_path`` (one host) or ``redis_url`` (many hosts); without either it lives in
    this process.

    Args:
        address: The address the exchange counts actions for (the account, or the vault).
        info: An SDK ``Info`` for ``userRateLimit`` (synced at the first action, then every
            ``sync_every`` s; every 60 s while throttled). ``wrap_exchange`` supplies the
            exchange's own when this is ``None``.
        limiter: The IP budget each sync (weight 20) is charged to.
        lasts: The horizon: spend at most ``remaining / time left``.
        burst: Actions that may go at once within that pace.
        state_path: A file shared by the processes of this host.
        redis_url: A Redis shared by processes on many hosts (key ``address-budget:ADDR``).
        sync_every: Seconds between syncs.
        throttle_interval: Seconds between actions when throttled (the exchange allows one
            per 10 s).
        clock: Time source and sleep.

    Example:
        >>> from datetime import timedelta
        >>> from resilient_trading.presets.hyperliquid import AddressBudget
        >>> budget = AddressBudget("0x" + "ab" * 20, lasts=timedelta(days=7))
        >>> budget.acquire(1)
        0.0
        >>> budget.status().used
        1
    """

    def __init__(
        self,
        address: str,
        *,
        info: Any = None,
        limiter: Any = None,
        lasts: timedelta = timedelta(days=7),
        burst: int = 20,
        state_path: str | os.PathLike[str] | None = None,
        redis_url: str | None = None,
        sync_every: float = 300.0,
        throttle_interval: float = 11.0,
        clock: Clock = SYSTEM_CLOCK,
    ) -> None:
        if not isinstance(address, str) or not address.startswith("0x") or len(address) != 42:
            raise ValueError(f"address must be a 0x-prefixed 42-character address, got {address!r}")
        if not isinstance(lasts, timedelta) or lasts <= timedelta(0):
            raise ValueError(f"lasts must be a positive timedelta, got {lasts!r}")
        self.address = address.lower()
        self._pace = Pace(
            lasts=lasts.total_seconds(),
            burst=check_int("burst", burst, minimum=1),
            throttle_interval=check_number("throttle_interval", throttle_interval),
        )
        self._sync_every = check_number("sync_every", sync_every)
        self._clock = clock
        self.info = info
        self.limiter = limiter
        self._state: SharedState = open_state(
            state_path=state_path,
            redis_url=redis_url,
            key=f"address-budget:{self.address}",
            clock=clock,
        )

    # --- the record ---------------------------------------------------------------------------

    def _load(self, raw: Any, now: float) -> AddressState:
        if raw is None:
            return start(now, self._pace, self.address)
        return AddressState.from_json(raw, where=self._state.location)

    def _run(self, fn: Any) -> Any:
        def transition(raw: Any, now: float) -> tuple[Any, Any]:
            state = self._load(raw, now)
            new, result = fn(state, now)
            return (raw if new is state and raw is not None else new.to_json()), result

        return self._state.transact(transition)

    # --- deciding -----------------------------------------------------------------------------

    def _decide(self, n: int, kind: Kind) -> Decision:
        check_int("n", n, minimum=1)
        if kind not in _KINDS:
            raise ValueError(f"kind must be one of {_KINDS}, got {kind!r}")

        def step(
            s: AddressState, now: float
        ) -> tuple[AddressState, tuple[Decision, timedelta | None, bool]]:
            new, decision = decide(s, now, n, kind, self._pace)
            entered = new.throttled and not s.throttled  # entered throttled mode (the cap)
            if not decision.admitted or new.warned:
                return new, (decision, None, entered)
            runway = new.runway(now)
            if runway is None or runway >= timedelta(days=1):
                return new, (decision, None, entered)
            return replace(new, warned=True), (decision, runway, entered)  # once, for all

        decision: Decision
        runway: timedelta | None
        decision, runway, entered = self._run(step)
        if entered and listening():
            self._emit_throttled("the action count reached the cap")
        if runway is not None:
            if listening():
                status = self.status()
                text = f"the action budget runs out in {runway} at the last hour's pace"
                emit(
                    AddressEvent(
                        kind="runway_low",
                        address=self.address,
                        used=status.used,
                        cap=status.cap,
                        runway_seconds=runway.total_seconds(),
                        message=text,
                    )
                )
                emit(
                    AlertEvent(subject=f"address:{self.address}", state="runway_low", message=text)
                )
            log.warning(
                "address %s: the action budget runs out in %s at the last hour's pace "
                "(%s); trade volume (one action per USDC) or slow down",
                self.address,
                runway,
                self.status().summary(),
            )
        return decision

    def _emit_throttled(self, why: str) -> None:
        text = (
            f"throttled ({why}): one action per {self._pace.throttle_interval:g} s, cancels "
            "and closes first, until a sync shows headroom"
        )
        emit(AddressEvent(kind="throttled", address=self.address, message=text))
        emit(AlertEvent(subject=f"address:{self.address}", state="throttled", message=text))

    def _emit_waited(self, waited: float) -> float:
        if waited > 0 and listening():
            emit(AddressEvent(kind="waited", address=self.address, seconds=waited))
        return waited

    def acquire(self, n: int = 1, *, kind: Kind = "action") -> float:
        """Wait until ``n`` actions of ``kind`` may go, count them; the seconds waited.

        ``kind``: ``"cancel"`` (never paced while within the cancel allowance), ``"close"``
        (a reduce-only close: never paced while within the cap), ``"action"`` (everything
        else: paced to the horizon).
        """
        self._sync_if_due()
        waited = 0.0
        while True:
            decision = self._decide(n, kind)
            if decision.wait > 0:
                self._clock.sleep(decision.wait)
                waited += decision.wait
            if decision.admitted:
                return self._emit_waited(waited)

    async def acquire_async(self, n: int = 1, *, kind: Kind = "action") -> float:
        """:meth:`acquire` for ``asyncio``: waits without blocking the loop."""
        import asyncio

        await asyncio.to_thread(self._sync_if_due)
        waited = 0.0
        while True:
            decision = await asyncio.to_thread(self._decide, n, kind)
            if decision.wait > 0:
                await self._clock.sleep_async(decision.wait)
                waited += decision.wait
            if decision.admitted:
                return self._emit_waited(waited)

    def refused(self, error: RateLimitedError | None = None) -> None:
        """Record that the exchange refused an action for this address: throttled mode."""
        wait = self._pace.throttle_interval
        if error is not None and error.retry_after is not None:
            wait = max(wait, error.retry_after)
        was_throttled: bool = self._run(lambda s, now: (refused(s, now, wait), s.throttled))
        if listening():
            message = event_text(error) if error is not None else None
            emit(AddressEvent(kind="refused", address=self.address, seconds=wait, message=message))
            if not was_throttled:
                self._emit_throttled("the exchange refused an action")
        log.warning(
            "address %s: the exchange refused an action (cumulative budget spent); throttled "
            "to one action per %.0f s, cancels and closes first, until a sync shows headroom",
            self.address,
            self._pace.throttle_interval,
        )

    def note_answer(self, answer: Any) -> None:
        """Look at an ``/exchange`` answer: a cumulative-budget refusal means throttled mode."""
        if (
            isinstance(answer, Mapping)
            and answer.get("status") == "err"
            and "too many cumulative requests" in str(answer.get("response")).lower()
        ):
            self.refused()

    # --- syncing ------------------------------------------------------------------------------

    def _sync_if_due(self) -> None:
        if self.info is None:
            return

        def claim(s: AddressState, now: float) -> tuple[AddressState, bool]:
            every = min(self._sync_every, 60.0) if s.throttled else self._sync_every
            if s.synced_at is not None and 0 <= now - s.synced_at < every:
                return s, False  # (a sync "in the future" is a clock step: sync again)
            if s.sync_claimed_at is not None and 0 <= now - s.sync_claimed_at < 30.0:
                return s, False  # another process is syncing
            return replace(s, sync_claimed_at=now), True

        if self._run(claim):
            try:
                self.sync()
            except Exception as exc:  # bookkeeping: never replaces the caller's action
                log.warning("address %s: userRateLimit sync failed: %r", self.address, exc)
                if listening():
                    text = event_text(f"{type(exc).__name__}: {exc}")
                    emit(AddressEvent(kind="sync_failed", address=self.address, message=text))

    def sync(self) -> AddressStatus:
        """Read ``userRateLimit`` now (weight 20, charged to ``limiter``) and store it."""
        if self.info is None:
            raise ValueError(
                "AddressBudget.sync needs an Info: pass info= (or wrap_exchange supplies one)"
            )
        if self.limiter is not None:
            self.limiter.acquire(USER_RATE_LIMIT_WEIGHT)
        answer = self.info.user_rate_limit(self.address)
        if not isinstance(answer, Mapping) or "nRequestsUsed" not in answer:
            raise RateLimitedError(
                f"userRateLimit for {self.address} answered {str(answer)[:120]!r}, not the "
                "expected {cumVlm, nRequestsUsed, nRequestsCap}; the local count stands",
                source="address",
            )
        was_throttled: bool = self._run(lambda s, now: (synced(s, now, answer), s.throttled))
        status = self.status()
        if listening():
            emit(
                AddressEvent(kind="synced", address=self.address, used=status.used, cap=status.cap)
            )
            if was_throttled and not status.throttled:
                text = f"headroom again ({status.used} of {status.cap} actions used)"
                emit(AlertEvent(subject=f"address:{self.address}", state="ok", message=text))
        return status

    # --- status -------------------------------------------------------------------------------

    def status(self) -> AddressStatus:
        """Used, cap, remaining, actions per hour and runway (no request is sent)."""
        now = self._state.time()
        raw = self._state.read()
        record = raw if raw is not None else start(now, self._pace, self.address).to_json()
        return AddressStatus.of_record(record, location=self._state.location, now=now)

    def close(self) -> None:
        self._state.close()

    def __repr__(self) -> str:
        return f"AddressBudget({self.address!r}, location={self._state.location!r})"
