"""A dead man's switch for a Hyperliquid bot: its open orders die with it.

Two modes, chosen when the switch is armed:

- **exchange**: Hyperliquid's ``scheduleCancel`` cancels every open order of the address at a
  time at least 5 s ahead (at most 10 triggers per UTC day). While the process lives, the
  switch keeps that time ``deadline`` ahead, re-arming every ``refresh_every``. Each re-arm
  is an action on the address budget, so with an :class:`AddressBudget` the interval is
  chosen from it (see :func:`refresh_interval`).
- **watchdog**: below $1,000,000 of lifetime volume the exchange refuses ``scheduleCancel``
  (``Cannot set scheduled cancel time until enough volume traded...``), as on a fresh
  testnet account. The switch then writes a heartbeat to ``STATE_DIR/heartbeat.json`` on
  every beat, and a separate small process, ``resilient-trading watchdog --state STATE_DIR``
  (:func:`run_watchdog`), cancels the address's open orders when the heartbeat is older than
  the deadline.

A clean :meth:`DeadMansSwitch.stop` disarms both (the orders stay: stopping is a decision,
not a death). ``kill -9``, a power cut or a hung process stops the beats: the orders go.

Why this module is long: it holds both halves of the switch, the bot's side (arming, re-arming
against the address budget, falling back) and the watchdog process that acts when the bot falls
silent, because both depend on one heartbeat record and one staleness rule.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass
from typing import Any, Literal

from resilient_trading._atomic import atomic_replace
from resilient_trading._classify import classify_response, classify_statuses
from resilient_trading._clock import SYSTEM_CLOCK, Clock
from resilient_trading._errors import (
    ExchangeUnavailableError,
    OrderGone,
    ResilienceError,
    StateCorruptedError,
    TransientError,
)
from resilient_trading._events import AlertEvent, DeadmanEvent, emit, event_text, listening
from resilient_trading._redact import safe_text
from resilient_trading._validate import check_number
from resilient_trading.presets.hyperliquid._address import AddressBudget

__all__ = ["DeadMansSwitch", "Heartbeat", "refresh_interval", "run_watchdog", "stale"]

log = logging.getLogger("resilient_trading.deadman")

#: ``scheduleCancel`` must be at least this far ahead (the SDK's docstring).
MIN_AHEAD = 5.0
#: Triggers per UTC day (the SDK's docstring).
TRIGGERS_PER_DAY = 10
#: The share of the address's paced budget re-arming may use.
BUDGET_SHARE = 0.1
HEARTBEAT = "heartbeat.json"
_VOLUME_REFUSAL = "cannot set scheduled cancel time"

Mode = Literal["exchange", "watchdog"]
_EventKind = Literal["armed", "fallback", "refresh_failed", "disarmed"]


def refresh_interval(deadline: float, budget: AddressBudget | None = None) -> float:
    """Seconds between re-arms: a third of the deadline, but never more than
    :data:`BUDGET_SHARE` of the actions the budget's pace allows.

    With a budget, ``allowed = remaining / time left to the horizon`` actions per second;
    re-arming every ``1 / (BUDGET_SHARE * allowed)`` seconds keeps the switch within a tenth of
    it. The armed time ahead is then ``max(deadline, 2 * interval)``.

    >>> refresh_interval(30.0)
    10.0
    """
    interval = max(1.0, deadline / 3)
    if budget is None:
        return interval
    status = budget.status()
    left = (status.horizon_end.timestamp() - time.time()) or 1.0
    allowed = status.remaining / max(left, 1.0)
    if allowed <= 0:
        return max(interval, 3600.0)
    return max(interval, 1.0 / (BUDGET_SHARE * allowed))


@dataclass(frozen=True)
class Heartbeat:
    """What the switch writes and the watchdog reads (``STATE_DIR/heartbeat.json``)."""

    address: str
    pid: int
    beat_at: float
    deadline: float
    mode: str
    stopped: bool = False
    fired_at: float | None = None

    def to_json(self) -> dict[str, Any]:
        return {**asdict(self), "version": 1}

    @classmethod
    def from_json(cls, raw: Any, *, path: str) -> Heartbeat:
        try:
            if not isinstance(raw, Mapping) or raw.get("version") != 1:
                raise ValueError("not a version-1 heartbeat")
            return cls(
                address=str(raw["address"]),
                pid=int(raw["pid"]),
                beat_at=float(raw["beat_at"]),
                deadline=float(raw["deadline"]),
                mode=str(raw["mode"]),
                stopped=bool(raw["stopped"]),
                fired_at=None if raw.get("fired_at") is None else float(raw["fired_at"]),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise StateCorruptedError(
                f"heartbeat {path} is unreadable ({exc}); delete it and restart the bot",
                path=path,
            ) from exc


def stale(beat: Heartbeat, now: float) -> bool:
    """Whether the watchdog must cancel: not stopped, not already fired for this beat, and
    older than its deadline (a clock stepped back counts as fresh).

    >>> b = Heartbeat("0x", 1, beat_at=100.0, deadline=10.0, mode="watchdog")
    >>> stale(b, 105.0), stale(b, 111.0)
    (False, True)
    """
    if beat.stopped or (beat.fired_at is not None and beat.fired_at >= beat.beat_at):
        return False
    return now - beat.beat_at > beat.deadline


def read_heartbeat(state_dir: str) -> Heartbeat | None:
    path = os.path.join(state_dir, HEARTBEAT)
    try:
        with open(path, "rb") as f:
            raw = json.loads(f.read())
    except FileNotFoundError:
        return None
    except ValueError as exc:
        raise StateCorruptedError(
            f"heartbeat {path} is not JSON ({exc}); delete it and restart the bot", path=path
        ) from exc
    return Heartbeat.from_json(raw, path=path)


def write_heartbeat(state_dir: str, beat: Heartbeat) -> None:
    payload = json.dumps(beat.to_json(), sort_keys=True).encode()
    atomic_replace(os.path.join(state_dir, HEARTBEAT), payload, durable=False)


class DeadMansSwitch:
    """Cancel this bot's open orders when it dies.

    Args:
        exchange: The SDK's ``Exchange`` (or its :func:`wrap_exchange` wrapper): its
            ``schedule_cancel`` is used, and its wallet's address is the one protected.
        deadline: How long after the last beat the orders go (the exchange's switch is
            armed at least 5 s ahead whatever this says; the watchdog honours any deadline).
        state_dir: Where the heartbeat goes (needed for the watchdog mode; created).
        address_budget: Re-arming spends actions: the interval is chosen from this budget.
        refresh_every: Seconds between re-arms (default: :func:`refresh_interval`).
        mode: ``None`` (try the exchange, fall back to the watchdog when refused),
            ``"exchange"`` or ``"watchdog"``.
        clock: Time source.

    Call :meth:`beat` from the bot's loop, or :meth:`start` a background thread that beats
    every ``refresh_every`` (a hung main loop then does not stop the beats: prefer
    :meth:`beat` where the loop's liveness is what matters).

    Example:
        >>> import eth_account, tempfile
        >>> from hyperliquid.exchange import Exchange
        >>> from resilient_trading.presets.hyperliquid import DeadMansSwitch
        >>> from resilient_trading.testing import Simulator
        >>> with Simulator(auto_fund=10_000) as sim:
        ...     switch = DeadMansSwitch(Exchange(eth_account.Account.create(), sim.base_url),
        ...                             deadline=30.0, state_dir=tempfile.mkdtemp())
        ...     switch.arm()
        ...     switch.stop()
        'watchdog'
    """

    def __init__(
        self,
        exchange: Any,
        *,
        deadline: float = 60.0,
        state_dir: str | os.PathLike[str] | None = None,
        address_budget: AddressBudget | None = None,
        refresh_every: float | None = None,
        mode: Mode | None = None,
        clock: Clock = SYSTEM_CLOCK,
    ) -> None:
        self._deadline = check_number("deadline", deadline)
        if mode not in (None, "exchange", "watchdog"):
            raise ValueError(f"mode must be None, 'exchange' or 'watchdog', got {mode!r}")
        if mode == "watchdog" and state_dir is None:
            raise ValueError("the watchdog mode needs state_dir (where the heartbeat goes)")
        self._exchange = exchange
        self._state_dir = None if state_dir is None else os.fspath(state_dir)
        if self._state_dir is not None:
            os.makedirs(self._state_dir, exist_ok=True)
        self._budget = address_budget
        self._refresh = (
            check_number("refresh_every", refresh_every)
            if refresh_every is not None
            else refresh_interval(self._deadline, address_budget)
        )
        self._ahead = max(self._deadline, 2 * self._refresh, MIN_AHEAD)
        self._wanted: Mode | None = mode
        self.mode: Mode | None = None
        self._clock = clock
        self._last_arm = float("-inf")
        self._failing = False  # the last re-arm failed (an alert is out until one succeeds)
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def address(self) -> str:
        inner = getattr(self._exchange, "inner", self._exchange)
        for attr in ("vault_address", "account_address"):
            value = getattr(inner, attr, None)
            if value:
                return str(value).lower()
        return str(inner.wallet.address).lower()

    @property
    def refresh_every(self) -> float:
        return self._refresh

    @property
    def armed_ahead(self) -> float:
        """Seconds ahead ``scheduleCancel`` is set (exchange mode)."""
        return self._ahead

    # --- arming -------------------------------------------------------------------------------

    def _schedule(self, when_ms: int | None) -> Any:
        # A wrap_exchange wrapper with the same budget counts the action itself.
        if self._budget is not None and getattr(self._exchange, "_address_budget", None) is None:
            self._budget.acquire(1)
        try:
            return self._exchange.schedule_cancel(when_ms)
        except ResilienceError as err:  # a wrapper raises refusals: back to the answer
            if isinstance(err, TransientError):
                raise
            return {"status": "err", "response": str(err)}

    def arm(self) -> Mode:
        """Arm the switch (the first beat); returns the mode chosen."""
        with self._lock:
            if self._wanted != "watchdog":
                now = self._clock.time()
                answer = self._schedule(int((now + self._ahead) * 1000))
                if _ok(answer):
                    self.mode, self._last_arm = "exchange", now
                elif self._wanted is None and self._state_dir is not None:
                    log.warning(
                        "scheduleCancel refused for %s (%s): falling back to the local "
                        "watchdog; run `resilient-trading watchdog --state %s` beside the bot",
                        self.address,
                        _text(answer),
                        self._state_dir,
                    )
                    self.mode = "watchdog"
                    if listening():
                        text = event_text(
                            f"scheduleCancel refused ({_text(answer)}): run `resilient-trading "
                            "watchdog` beside the bot, or its orders outlive it"
                        )
                        self._emit("fallback", text, alert="fallback")
                else:
                    raise RuntimeError(
                        f"scheduleCancel refused for {self.address}: {_text(answer)}; pass "
                        "state_dir= to fall back to the local watchdog"
                    )
            else:
                self.mode = "watchdog"
            self._write(stopped=False)
            if listening():
                emit(DeadmanEvent(kind="armed", address=self.address, mode=self.mode))
            return self.mode

    def _emit(self, kind: _EventKind, message: str | None, *, alert: str | None = None) -> None:
        emit(DeadmanEvent(kind=kind, address=self.address, mode=self.mode, message=message))
        if alert is not None:
            subject = f"deadman:{self.address}"
            emit(AlertEvent(subject=subject, state=alert, message=message or kind))

    def beat(self) -> None:
        """Prove the bot is alive: write the heartbeat, re-arm ``scheduleCancel`` when due.

        A failed re-arm is logged, not raised: the time already armed still protects the
        orders until the next beat tries again.
        """
        if self.mode is None:
            self.arm()
            return
        with self._lock:
            now = self._clock.time()
            self._write(stopped=False)
            if self.mode != "exchange" or now - self._last_arm < self._refresh:
                return
            try:
                answer = self._schedule(int((now + self._ahead) * 1000))
            except Exception as exc:  # bookkeeping: the armed time still stands
                log.warning("re-arming scheduleCancel for %s failed: %r", self.address, exc)
                self._refresh_failed(f"{type(exc).__name__}: {exc}")
                return
            if _ok(answer):
                self._last_arm = now
                if self._failing and listening():
                    self._emit("armed", "re-armed after failed refreshes", alert="ok")
                self._failing = False
            else:
                log.warning("re-arming scheduleCancel for %s refused: %s", self.address, answer)
                self._refresh_failed(f"refused: {_text(answer)}")

    def _refresh_failed(self, why: str) -> None:
        self._failing = True
        if listening():
            text = event_text(f"re-arming scheduleCancel failed ({why}); the armed time stands")
            self._emit("refresh_failed", text, alert="refresh_failed")

    def _write(self, *, stopped: bool) -> None:
        if self._state_dir is None:
            return
        beat = Heartbeat(
            address=self.address,
            pid=os.getpid(),
            beat_at=self._clock.time(),
            deadline=self._deadline,
            mode=self.mode or "watchdog",
            stopped=stopped,
        )
        write_heartbeat(self._state_dir, beat)

    # --- a background beat --------------------------------------------------------------------

    def start(self) -> DeadMansSwitch:
        """Arm, then beat every ``refresh_every`` seconds (at most a third of the deadline)
        from a daemon thread until :meth:`stop`."""
        self.arm()
        every = min(self._refresh, self._deadline / 3)

        def loop() -> None:
            while not self._stop.wait(every):
                try:
                    self.beat()
                except Exception as exc:  # keep beating: a missed beat is what kills orders
                    log.warning("dead man's switch beat failed: %r", exc)

        self._thread = threading.Thread(target=loop, daemon=True, name="deadman")
        self._thread.start()
        return self

    def stop(self) -> None:
        """Disarm: the exchange's scheduled cancel is removed, the watchdog told to stand down.

        The open orders stay (a clean stop is a decision, not a death)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        with self._lock:
            if self.mode == "exchange":
                answer = self._schedule(None)
                if not _ok(answer):
                    log.warning("disarming scheduleCancel refused: %s", answer)
            self._write(stopped=True)
            if listening():
                self._emit("disarmed", None)

    def __enter__(self) -> DeadMansSwitch:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _ok(answer: Any) -> bool:
    return isinstance(answer, Mapping) and answer.get("status") == "ok"


def _text(answer: Any) -> str:
    if isinstance(answer, Mapping):
        return str(answer.get("response"))[:200]
    return str(answer)[:200]


# --- the watchdog process --------------------------------------------------------------------


def settle_cancels(answer: Any, count: int) -> int:
    """Read ``bulk_cancel``'s answer for ``count`` cancels: how many it cancelled.

    An order already gone (filled or cancelled meanwhile: ``Order was never placed, already
    canceled, or filled.``) is done, not cancelled. Any refusal raises, so the watchdog tries
    again at its next poll rather than believe the orders are gone.

    Raises:
        ResilienceError: The exchange refused the action (``{"status": "err", ...}``: the
            address throttled, a bad signature...), refused an order's cancel, or answered
            something that does not say what became of every order (classified: a
            :class:`RateLimitedError`, an :class:`ExchangeUnavailableError`...).

    >>> gone = {"error": "Order was never placed, already canceled, or filled. asset=0"}
    >>> settle_cancels({"status": "ok", "response": {"type": "cancel",
    ...     "data": {"statuses": ["success", gone]}}}, 2)
    1
    """
    operation = "watchdog bulk_cancel"
    refused = classify_response(answer, operation=operation)
    if refused is not None:
        raise refused
    statuses = classify_statuses(answer, operation=operation)
    if not (isinstance(answer, Mapping) and answer.get("status") == "ok") or statuses is None:
        raise ExchangeUnavailableError(
            f"bulk_cancel answered {safe_text(answer, 200)}, not one status per order: "
            "the watchdog tries again at its next poll",
            operation=operation,
        )
    if len(statuses) != count:
        raise ExchangeUnavailableError(
            f"bulk_cancel answered {len(statuses)} statuses for {count} cancels: the "
            "watchdog tries again at its next poll",
            operation=operation,
        )
    for status in statuses:
        if status is not None and not isinstance(status, OrderGone):
            raise status  # an outcome other than "gone" (never seen on a cancel): not done
    return statuses.count(None)


def cancel_open_orders(
    exchange: Any, info: Any, address: str, *, keep_reduce_only: bool = True
) -> int:
    """Cancel the open orders of ``address``; the number cancelled (batches of 200).

    Orders already gone when the cancel arrives (filled or cancelled meanwhile) are done and
    not counted. Any refusal raises (see :func:`settle_cancels`) after the batches before it
    went out: the next call lists what is still open and cancels that.

    With ``keep_reduce_only`` (the default) reduce-only orders stay: a dead bot's stop-loss
    and take-profit can only shrink its position, and cancelling them would leave the position
    unprotected until a new bot reconciles. Every order that could open or grow a position
    (entries, plain limits) is cancelled. ``keep_reduce_only=False`` cancels everything, as the
    exchange's ``scheduleCancel`` does.
    """
    if keep_reduce_only:
        listed = info.frontend_open_orders(address)
        orders = [o for o in listed if not o.get("reduceOnly")]
    else:
        orders = info.open_orders(address)
    requests = [{"coin": o["coin"], "oid": int(o["oid"])} for o in orders]
    cancelled = 0
    for start in range(0, len(requests), 200):
        batch = requests[start : start + 200]
        cancelled += settle_cancels(exchange.bulk_cancel(batch), len(batch))
    return cancelled


def run_watchdog(
    state_dir: str,
    *,
    cancel: Callable[[str], int],
    poll: float = 1.0,
    clock: Clock = SYSTEM_CLOCK,
    stop: threading.Event | None = None,
    once: bool = False,
) -> None:
    """Watch ``STATE_DIR/heartbeat.json``; call ``cancel(address)`` when it goes stale.

    Runs until ``stop`` is set, or the heartbeat says the bot stopped cleanly. A fired
    heartbeat is marked (``fired_at``) so a dead bot's orders are cancelled once, and
    watched again when a restarted bot beats.
    """
    stop = stop or threading.Event()
    last_good: Heartbeat | None = None  # a damaged heartbeat counts as the last good one
    unreadable: str | None = None
    while not stop.is_set():
        try:
            beat = read_heartbeat(state_dir)
        except (ResilienceError, OSError) as exc:
            damage = safe_text(exc)
            if unreadable is None:  # once when it turns unreadable, not once per poll
                log.warning(
                    "watchdog: the heartbeat in %s cannot be read (%s); watching the last good "
                    "one: a bot that stops beating is still cancelled after its deadline",
                    state_dir,
                    damage,
                )
                if listening():
                    address = "" if last_good is None else last_good.address
                    emit(DeadmanEvent(kind="watchdog_failed", address=address, message=damage))
            unreadable = damage
            beat = last_good
        else:
            unreadable = None
            if (
                beat is not None
                and last_good is not None
                and last_good.fired_at is not None
                and beat.fired_at is None
                and beat.beat_at == last_good.beat_at
            ):
                beat = last_good  # fired, but the mark could not be written: same death
            if beat is not None:
                last_good = beat
        if beat is not None and beat.stopped:
            log.info("watchdog: the bot at %s stopped cleanly; standing down", state_dir)
            return
        now = clock.time()
        if beat is not None and stale(beat, now):
            log.warning(
                "watchdog: heartbeat of %s (pid %d) is %.1f s old (deadline %.1f s): "
                "cancelling its open orders",
                beat.address,
                beat.pid,
                now - beat.beat_at,
                beat.deadline,
            )
            try:
                count = cancel(beat.address)
            except Exception as exc:  # try again at the next poll
                log.warning("watchdog: cancelling failed (%r); trying again", exc)
                if listening():
                    text = event_text(f"cancelling failed ({type(exc).__name__}: {exc})")
                    emit(DeadmanEvent(kind="watchdog_failed", address=beat.address, message=text))
            else:
                log.warning("watchdog: cancelled %d open orders of %s", count, beat.address)
                if listening():
                    text = (
                        f"heartbeat {now - beat.beat_at:.1f} s old (deadline {beat.deadline:g} s):"
                        f" cancelled {count} open orders"
                    )
                    emit(
                        DeadmanEvent(
                            kind="watchdog_cancelled",
                            address=beat.address,
                            mode=beat.mode,
                            count=count,
                            message=text,
                        )
                    )
                    emit(
                        AlertEvent(
                            subject=f"deadman:{beat.address}",
                            state="watchdog_cancelled",
                            message=text,
                            severity="critical",
                        )
                    )
                fired = Heartbeat(**{**asdict(beat), "fired_at": now})
                last_good = fired  # once per death, even while the file cannot be read
                try:
                    current = read_heartbeat(state_dir)
                except (ResilienceError, OSError):
                    current = None  # still damaged: the mark lives in memory
                if current is not None and current.beat_at == beat.beat_at:
                    try:  # a new beat since? leave it alone
                        write_heartbeat(state_dir, fired)
                    except OSError as exc:  # disk full: the cancels stand, the mark is in memory
                        log.warning(
                            "watchdog: cancelled, but could not mark %s as fired (%s); it is "
                            "marked in this process",
                            state_dir,
                            safe_text(exc),
                        )
        if once:
            return
        stop.wait(poll)
