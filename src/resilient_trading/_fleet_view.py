"""Read a fleet's shared state, as it is on disk or in Redis, into one typed view.

Used by ``resilient-trading status`` and ``resilient-trading metrics``: they show budgets,
breakers, address budgets, stores and the halt flag of every bot sharing a state directory
or a Redis, whether or not any bot is running. Nothing is created or changed: each item is
read with its owner's typed reader (``BreakerRecord``, the limiter's parser and
``status_of``, ``AddressStatus.of_record``, the store's envelope), and an item that cannot
be read is reported as a problem naming it, never skipped silently.

A state directory is scanned one level deep (its ``*.json`` files); each file is recognised
by its content: a store's envelope (with a ``breakers`` section: breakers too), or a
shared-state record holding a rate window (the compact ``rl3:`` form or ``"v": 2``), an
address budget (``"version": 1``) or the halt flag.
Files it does not recognise (a nonce floor, your own) are left out. In Redis it reads the
keys the primitives use: ``resilient-trading:breaker:*``, ``resilient-trading:limiter:{*}``,
``address-budget:*`` and ``resilient-trading:halt``.

Why this module is long: it reads every kind of shared item (breakers, rate budgets, address
budgets, stores, the halt flag) from both homes, a directory and Redis, recognising each stored
form, and its typed views are the one contract that ``status --json`` and the metrics read; the
parsing itself stays with each item's owner.
"""

from __future__ import annotations

import dataclasses
import os
import time
from typing import Any

from resilient_trading import _envelope
from resilient_trading._breaker import snapshot_of
from resilient_trading._errors import NetworkError, ResilienceError, StateCorruptedError
from resilient_trading._halt import HALT_FILE, Halt, HaltStatus
from resilient_trading._redact import safe_text
from resilient_trading.backends import FileState, RedisState

__all__ = [
    "AddressView",
    "BreakerView",
    "BudgetView",
    "FleetView",
    "StoreView",
    "read_fleet",
]

_MAX_BYTES = 8 * 1024 * 1024
#: An address runway under this many seconds needs an operator.
RUNWAY_ALERT_SECONDS = 86_400.0


@dataclasses.dataclass(frozen=True)
class BreakerView:
    name: str
    state: str
    latched: bool
    failures: int
    trips: int
    reason: str | None
    opened_at: float | None
    location: str


@dataclasses.dataclass(frozen=True)
class WindowView:
    budget: int
    period_seconds: float
    used: int
    remaining: int


@dataclasses.dataclass(frozen=True)
class BudgetView:
    location: str
    windows: tuple[WindowView, ...]
    paused_until: float | None
    mode: str
    utilisation: float


@dataclasses.dataclass(frozen=True)
class AddressView:
    location: str
    address: str
    used: int
    cap: int
    remaining: int
    per_hour: float
    runway_seconds: float | None
    throttled: bool


@dataclasses.dataclass(frozen=True)
class StoreView:
    path: str
    generation: int
    last_commit: float
    size_bytes: int
    backup_age_seconds: float | None


@dataclasses.dataclass(frozen=True)
class FleetView:
    """Everything read from one state directory and/or one Redis, at ``read_at``."""

    sources: tuple[str, ...]
    read_at: float
    halt: HaltStatus | None
    breakers: tuple[BreakerView, ...] = ()
    budgets: tuple[BudgetView, ...] = ()
    addresses: tuple[AddressView, ...] = ()
    stores: tuple[StoreView, ...] = ()
    problems: tuple[str, ...] = ()

    def needs_operator(self) -> list[str]:
        """Why a person must look now (empty: nothing): halt, latched breakers, an address
        runway under a day, state that cannot be read."""
        out = []
        if self.halt is not None:
            out.append(f"fleet halted since {_iso(self.halt.since)}: {self.halt.reason}")
        for b in self.breakers:
            if b.latched:
                out.append(f"breaker {b.name} latched: {b.reason} (reset it once fixed)")
        for a in self.addresses:
            if a.runway_seconds is not None and a.runway_seconds < RUNWAY_ALERT_SECONDS:
                hours = a.runway_seconds / 3600
                out.append(f"address {a.address} runway {hours:.1f} h (under a day)")
        out.extend(self.problems)
        return out

    def to_json(self) -> dict[str, Any]:
        out = dataclasses.asdict(self)
        out["halt"] = None if self.halt is None else self.halt.to_json()
        out["needs_operator"] = self.needs_operator()
        return out


def _iso(t: float) -> str:
    import datetime

    return datetime.datetime.fromtimestamp(t, datetime.timezone.utc).isoformat(timespec="seconds")


class _Collector:
    def __init__(self, now: float) -> None:
        self.now = now
        self.breakers: list[BreakerView] = []
        self.budgets: list[BudgetView] = []
        self.addresses: list[AddressView] = []
        self.stores: list[StoreView] = []
        self.problems: list[str] = []

    def problem(self, where: str, exc: BaseException) -> None:
        self.problems.append(f"cannot read {where}: {type(exc).__name__}: {safe_text(exc, 300)}")

    def breaker_records(self, records: dict[str, Any], location: str) -> None:
        for name, value in sorted(records.items()):
            where = f"{location}#breakers.{name}" if "#" not in location else location
            try:
                snap = snapshot_of(name, value, None, where, now=self.now)
            except StateCorruptedError as exc:
                self.problem(where, exc)
                continue
            self.breakers.append(
                BreakerView(
                    name=name,
                    state=str(snap.state),
                    latched=snap.latched,
                    failures=snap.failures,
                    trips=snap.trips,
                    reason=snap.reason,
                    opened_at=snap.opened_at,
                    location=where,
                )
            )

    def budget(self, status: Any) -> None:
        windows = tuple(
            WindowView(w.budget, float(w.period), w.used, w.remaining) for w in status.windows
        )
        self.budgets.append(
            BudgetView(
                location=status.location,
                windows=windows,
                paused_until=status.paused_until,
                mode=status.mode,
                utilisation=round(float(status.utilisation), 6),
            )
        )

    def address(self, value: Any, location: str) -> None:
        from resilient_trading.presets.hyperliquid._address_rules import AddressStatus

        st = AddressStatus.of_record(value, location=location, now=self.now)
        self.addresses.append(
            AddressView(
                location=location,
                address=st.address,
                used=st.used,
                cap=st.cap,
                remaining=st.remaining,
                per_hour=st.per_hour,
                runway_seconds=None if st.runway is None else st.runway.total_seconds(),
                throttled=st.throttled,
            )
        )


def _is_limiter(value: Any) -> bool:
    if isinstance(value, str):  # the compact record ("rl3:..."), whatever its version
        head = value[:8]
        return head.startswith("rl") and head[2:].split(":", 1)[0].isdigit() and ":" in head
    return isinstance(value, dict) and value.get("v") == 2 and "rings" in value


def _limiter_status(value: Any, path: str) -> Any:
    """A file budget's status, parsed by the limiter's own reader (either stored form)."""
    from resilient_trading import _limiter_rules as rules
    from resilient_trading._ratelimit import status_of

    parse: Any = rules.from_json
    try:
        from resilient_trading import _limiter_compact

        parse = _limiter_compact.parse
    except ImportError:  # an older limiter: JSON objects only
        pass
    try:
        state = parse(value)
    except (rules.BadState, ValueError) as exc:
        raise StateCorruptedError(
            f"rate budget {path} does not hold a limiter state ({exc}); the next acquire "
            "repairs it, or delete it (it holds only a rate window)",
            path=path,
        ) from exc
    # A per-host budget runs on the monotonic clock (system-wide on Linux), as the limiter.
    return status_of(state, time.monotonic(), time.time(), path)


def _is_address(value: Any) -> bool:
    return isinstance(value, dict) and value.get("version") == 1 and "cap" in value


def _scan_file(c: _Collector, path: str) -> None:
    with open(path, "rb") as f:
        raw = f.read(_MAX_BYTES + 1)
    if not raw.strip():
        return
    if b"\x00" in raw:  # a shared-state record file (FileState)
        state = FileState(path, lock_timeout=5.0)
        try:
            value = state.read()
        finally:
            state.close()
        if _is_limiter(value):
            c.budget(_limiter_status(value, path))
        elif _is_address(value):
            c.address(value, path)
        return
    try:
        decoded = _envelope.decode(raw)
    except _envelope.EnvelopeError as exc:
        raise StateCorruptedError(f"{path}: {exc.what}", path=path) from exc
    data = decoded.data
    if _is_limiter(data):  # a plain-JSON value from before the record format
        c.budget(_limiter_status(data, path))
        return
    if _is_address(data):
        c.address(data, path)
        return
    breakers = data.get("breakers")
    if isinstance(breakers, dict):
        c.breaker_records(breakers, path)
    st = os.stat(path)
    bak = path + ".bak"
    backup_age = c.now - os.stat(bak).st_mtime if os.path.exists(bak) else None
    c.stores.append(StoreView(path, decoded.generation, st.st_mtime, st.st_size, backup_age))


def _scan_dir(c: _Collector, state_dir: str) -> HaltStatus | None:
    if not os.path.isdir(state_dir):
        raise ValueError(f"state directory {state_dir!r} does not exist or is not a directory")
    for name in sorted(os.listdir(state_dir)):
        path = os.path.join(state_dir, name)
        if name == HALT_FILE or not name.endswith(".json") or not os.path.isfile(path):
            continue  # logs, locks, backups, journals: not state
        try:
            _scan_file(c, path)
        except (ResilienceError, OSError, ValueError) as exc:
            c.problem(path, exc)
    if not os.path.exists(os.path.join(state_dir, HALT_FILE)):
        return None
    with Halt(state_dir=state_dir) as halt:
        return halt.halted()


def _scan_redis(c: _Collector, url: str) -> HaltStatus | None:
    import redis

    from resilient_trading._cli_limits import read_redis_status

    client = redis.Redis.from_url(url, socket_timeout=5.0, socket_connect_timeout=5.0)
    try:
        keys = sorted(
            k.decode()
            for pattern in ("resilient-trading:*", "address-budget:*")
            for k in client.scan_iter(match=pattern, count=1000)
        )
    except redis.RedisError as exc:
        raise NetworkError(f"cannot list keys in Redis: {type(exc).__name__}") from exc
    finally:
        client.close()
    for key in keys:
        try:
            if key.startswith("resilient-trading:breaker:"):
                with _redis_state(url, key) as state:
                    value = state.read()
                    c.breaker_records({key.split(":", 2)[2]: value}, state.location)
            elif key.startswith("resilient-trading:limiter:{") and key.endswith("}"):
                c.budget(read_redis_status(url, key[len("resilient-trading:limiter:{") : -1]))
            elif key.startswith("address-budget:"):
                with _redis_state(url, key) as state:
                    c.address(state.read(), state.location)
        except (ResilienceError, ValueError) as exc:
            c.problem(f"Redis key {key}", exc)
    with Halt(redis_url=url) as halt:
        return halt.halted()


class _redis_state:  # noqa: N801 - a tiny context manager
    def __init__(self, url: str, key: str) -> None:
        self.state = RedisState(url, key)

    def __enter__(self) -> RedisState:
        return self.state

    def __exit__(self, *exc: object) -> None:
        self.state.close()


def read_fleet(state_dir: str | None = None, redis_url: str | None = None) -> FleetView:
    """Read everything shared in ``state_dir`` and/or ``redis_url`` (at least one).

    Raises:
        ValueError: Neither given, or ``state_dir`` is not a directory.
    """
    if state_dir is None and redis_url is None:
        raise ValueError("give a state directory (--state-dir) or a Redis URL (--redis)")
    c = _Collector(time.time())
    halts: list[HaltStatus] = []
    sources: list[str] = []
    if state_dir is not None:
        sources.append(os.path.abspath(state_dir))
        try:
            found = _scan_dir(c, state_dir)
        except (ResilienceError, OSError) as exc:
            c.problem(os.path.join(state_dir, HALT_FILE), exc)
            found = None
        if found is not None:
            halts.append(found)
    if redis_url is not None:
        from resilient_trading.backends._redis import _strip_credentials

        sources.append(safe_text(_strip_credentials(redis_url)))
        try:
            found = _scan_redis(c, redis_url)
        except ResilienceError as exc:
            c.problem("Redis", exc)
            found = None
        if found is not None:
            halts.append(found)
    return FleetView(
        sources=tuple(sources),
        read_at=c.now,
        halt=halts[0] if halts else None,
        breakers=tuple(c.breakers),
        budgets=tuple(c.budgets),
        addresses=tuple(c.addresses),
        stores=tuple(c.stores),
        problems=tuple(c.problems),
    )
