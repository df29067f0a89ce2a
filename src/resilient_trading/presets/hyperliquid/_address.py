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

The pure rules (the record, :func:`decide`, the status) are in ``_address_rules.py``; this
module is the shell that runs them on shared state, syncs and emits events.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from dataclasses import replace
from datetime import timedelta
from typing import Any

from resilient_trading._clock import SYSTEM_CLOCK, Clock
from resilient_trading._errors import RateLimitedError
from resilient_trading._events import AddressEvent, AlertEvent, emit, event_text, listening
from resilient_trading._validate import check_int, check_number
from resilient_trading.backends import SharedState, open_state
from resilient_trading.presets.hyperliquid._address_rules import (
    KINDS,
    USER_RATE_LIMIT_WEIGHT,
    AddressState,
    AddressStatus,
    Decision,
    Kind,
    Pace,
    decide,
    refused,
    start,
    synced,
)

__all__ = ["AddressBudget"]

log = logging.getLogger("resilient_trading.address")


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
        if kind not in KINDS:
            raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")

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
