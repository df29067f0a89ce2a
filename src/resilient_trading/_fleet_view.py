"""Read a fleet's shared state, as it is on disk or in Redis, into one typed view.

Used by ``resilient-trading status`` and ``resilient-trading metrics``: they show budgets,
breakers, address budgets, stores, bots' heartbeats and the halt flag of every bot sharing
one or more state directories and/or Redis servers, whether or not any bot is running.
Nothing is changed: each item is read with its owner's typed reader (``BreakerRecord``, the
limiter's parser and ``status_of``, ``AddressStatus.of_record``, the store's envelope,
``Heartbeat``), and an item of ours that cannot be read is a :class:`Problem` naming it
(with a machine-readable ``kind``), never skipped silently.

A state directory is scanned one level deep (its ``*.json`` files). A file is ours when it
carries one of our markers: shared-state records (``FileState``: a NUL byte and ``RTS1``
headers), a store's envelope (``"__resilient_trading__"``), or, as plain JSON from before
those formats, a rate window (``"v": 2`` with ``rings``), an address budget
(``"version": 1`` with ``cap``), a breakers file (an object whose ``breakers`` is an object)
or a heartbeat (``"version": 1`` with ``beat_at``). Anything else (your own JSON, a list, a
text that is not JSON at all) is not ours and is left out: never a problem, never a store.
Records of ours that this view does not show (a nonce floor) are left out too.
In Redis it reads the keys the primitives use: ``resilient-trading:breaker:*``,
``resilient-trading:limiter:{*}``, ``address-budget:*`` and ``resilient-trading:halt``.

A source with nothing of ours in it (an empty or mistyped directory, an unmounted volume, an
empty or wrong Redis database) is a problem of kind ``no_state``: a health check must not be
green because it looked in the wrong place. A directory that is missing, or a Redis that
cannot be reached, is ``source_unavailable``; a halt flag that cannot be read is
``halt_unreadable`` and the halt is shown as *unknown* (a bot treats that as halted).

The typed views it fills live in :mod:`resilient_trading._fleet_model`.

Why this module is long: it reads every kind of shared item (breakers, rate budgets, address
budgets, stores, heartbeats, the halt flag) from both homes, a directory and Redis,
recognising each stored form; the parsing itself stays with each item's owner.
"""

from __future__ import annotations

import functools
import json
import logging
import os
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

from resilient_trading import _envelope
from resilient_trading._breaker import snapshot_of
from resilient_trading._errors import NetworkError, ResilienceError, StateCorruptedError
from resilient_trading._fleet_model import (
    RUNWAY_ALERT_SECONDS,
    SCHEMA_VERSION,
    AddressView,
    BotView,
    BreakerView,
    BudgetView,
    FleetView,
    HaltView,
    Problem,
    Reason,
    StoreView,
    WindowView,
)
from resilient_trading._halt import HALT_FILE, Halt, HaltStatus
from resilient_trading._redact import safe_text
from resilient_trading.backends import FileState, RedisState

__all__ = [
    "RUNWAY_ALERT_SECONDS",
    "SCHEMA_VERSION",
    "AddressView",
    "BotView",
    "BreakerView",
    "BudgetView",
    "FleetView",
    "HaltView",
    "Problem",
    "Reason",
    "StoreView",
    "WindowView",
    "read_fleet",
]

log = logging.getLogger("resilient_trading.fleet")

_MAX_BYTES = 8 * 1024 * 1024
_STORE_MARK = _envelope.MAGIC.encode()
_RECORD_MARK = b"\x00RTS1 "


class _Collector:
    def __init__(self, now: float) -> None:
        self.now = now
        self.found = 0  # items of ours seen in the current source
        self.breakers: list[BreakerView] = []
        self.budgets: list[BudgetView] = []
        self.addresses: list[AddressView] = []
        self.stores: list[StoreView] = []
        self.bots: list[BotView] = []
        self.halts: list[HaltView] = []
        self.problems: list[Problem] = []

    def problem(self, where: str, exc: BaseException, kind: str = "unreadable") -> None:
        self.problems.append(
            Problem(
                kind, where, f"cannot read {where}: {type(exc).__name__}: {safe_text(exc, 400)}"
            )
        )

    def breaker_records(self, records: dict[str, Any], location: str) -> None:
        self.found += 1
        store = location.split("#", 1)[0] if "#breakers" in location else location
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
                    # stored by any writer: redacted on the way out, whoever wrote it
                    reason=None if snap.reason is None else safe_text(snap.reason, 500),
                    opened_at=snap.opened_at,
                    location=where,
                    store=store,
                )
            )

    def budget(self, status: Any) -> None:
        self.found += 1
        windows = tuple(
            WindowView(w.budget, float(w.period), w.used, w.remaining) for w in status.windows
        )
        self.budgets.append(
            BudgetView(
                location=status.location,
                windows=windows,
                paused_until=status.paused_until,
                utilisation=round(float(status.utilisation), 6),
            )
        )

    def address(self, value: Any, location: str) -> None:
        from resilient_trading.presets.hyperliquid._address_rules import AddressStatus

        self.found += 1
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

    def heartbeat(self, value: Any, location: str) -> None:
        from resilient_trading.presets.hyperliquid._deadman import Heartbeat

        self.found += 1
        beat = Heartbeat.from_json(value, path=location)
        self.bots.append(
            BotView(
                location=location,
                address=safe_text(beat.address, 100),
                pid=beat.pid,
                beat_at=beat.beat_at,
                deadline_seconds=beat.deadline,
                stopped=beat.stopped,
            )
        )

    def halt(self, status: HaltStatus | None, location: str) -> None:
        self.found += 1
        if status is not None:
            self.halts.append(HaltView(location, status.reason, status.since, status.by))


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


def _is_heartbeat(value: Any) -> bool:
    return isinstance(value, dict) and value.get("version") == 1 and "beat_at" in value


def _is_breakers(value: Any) -> bool:
    return isinstance(value, dict) and isinstance(value.get("breakers"), dict)


def _read_record_file(path: str) -> Any:
    """The current value of a ``FileState`` file, read by its owner's reader (a torn last
    write falls back to the record before it, as the owner would)."""
    state = FileState(path, lock_timeout=5.0)
    try:
        value = state.read()
    finally:
        state.close()
    if value is None:
        raise StateCorruptedError(
            f"shared state {path} holds no complete record (a write torn by a crash or a "
            "full disk, or damage); its owner starts it afresh on its next write, or delete "
            "it (it holds only a rate window, an address budget or a nonce floor)",
            path=path,
        )
    return value


def _scan_file(c: _Collector, path: str) -> None:
    with open(path, "rb") as f:  # sized to the file: no 8 MB buffer for a 200 B record
        raw = f.read(min(os.fstat(f.fileno()).st_size, _MAX_BYTES) + 1)
    if not raw:
        c.found += 1  # what a FileState creates before its first write: nothing to show
        return
    if _RECORD_MARK in raw:  # shared-state records (FileState)
        value = _read_record_file(path)
        if _is_limiter(value):
            c.budget(_limiter_status(value, path))
        elif _is_address(value):
            c.address(value, path)
        else:
            c.found += 1  # a nonce floor, or a record of ours this view does not show
        return
    ours = _STORE_MARK in raw
    if len(raw) > _MAX_BYTES:
        if ours:
            raise StateCorruptedError(
                f"store {path} is larger than the {_MAX_BYTES} bytes this view reads; "
                "a store that large is not one of a bot's",
                path=path,
            )
        return
    if not ours:
        try:
            data = json.loads(raw)
        except (ValueError, RecursionError):
            return  # not JSON, and no marker of ours: not ours
        if _is_limiter(data):  # a plain-JSON value from before the record format
            c.budget(_limiter_status(data, path))
        elif _is_address(data):
            c.address(data, path)
        elif _is_heartbeat(data):
            c.heartbeat(data, path)
        elif _is_breakers(data):
            c.breaker_records(data["breakers"], path)
        return  # anything else is the user's own JSON
    try:
        decoded = _envelope.decode(raw)
    except _envelope.EnvelopeError as exc:
        raise StateCorruptedError(
            f"store {path}: {exc.what}; `resilient-trading state restore {path}` puts its "
            f"last good copy ({os.path.basename(path)}.bak) back and keeps the damaged file",
            path=path,
        ) from exc
    c.found += 1
    data = decoded.data
    if _is_breakers(data):
        c.breaker_records(data["breakers"], path)
    st = os.stat(path)
    try:
        backup_age: float | None = c.now - os.stat(path + ".bak").st_mtime
    except FileNotFoundError:
        backup_age = None
    c.stores.append(StoreView(path, decoded.generation, st.st_mtime, st.st_size, backup_age))


def _scan_dir(c: _Collector, state_dir: str) -> None:
    if not os.path.isdir(state_dir):
        raise FileNotFoundError(
            f"state directory {state_dir} does not exist or is not a directory (unmounted? "
            "a typo?); give the bots' state_dir"
        )
    for name in sorted(os.listdir(state_dir)):
        path = os.path.join(state_dir, name)
        if name == HALT_FILE or not name.endswith(".json") or not os.path.isfile(path):
            continue  # logs, locks, backups, journals: not state
        try:
            _scan_file(c, path)
        except (ResilienceError, OSError, ValueError) as exc:
            c.found += 1  # ours (or it would have been left out), if unreadable
            c.problem(path, exc)
    halt_path = os.path.join(state_dir, HALT_FILE)
    if not os.path.exists(halt_path):
        return
    try:
        with Halt(state_dir=state_dir) as halt:
            status = halt.peek()
    except (ResilienceError, OSError, ValueError) as exc:
        c.found += 1
        c.problem(halt_path, exc, "halt_unreadable")
        return
    c.halt(status, halt_path)


def _scan_redis(c: _Collector, url: str) -> None:
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
        raise NetworkError(
            f"cannot list keys in Redis: {type(exc).__name__}: {safe_text(exc, 200)}; bots "
            "using it run on their fallback (budgets) or refuse (breakers, halt) until it is "
            "back"
        ) from exc
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
            c.found += 1
            c.problem(f"Redis key {key}", exc)
    try:
        with Halt(redis_url=url) as halt:
            status = halt.peek()
            location = halt.location
    except (ResilienceError, OSError, ValueError) as exc:
        c.found += 1
        c.problem("Redis key resilient-trading:halt", exc, "halt_unreadable")
        return
    if status is not None or "resilient-trading:halt" in keys:
        c.halt(status, location)


class _redis_state:  # noqa: N801 - a tiny context manager
    def __init__(self, url: str, key: str) -> None:
        self.state = RedisState(url, key)

    def __enter__(self) -> RedisState:
        return self.state

    def __exit__(self, *exc: object) -> None:
        self.state.close()


_gone: set[str] = set()  # sources this process saw unavailable: logged once per change
_gone_lock = threading.Lock()


def _log_availability(where: str, problem: Problem | None) -> None:
    """One WARNING when a source becomes unavailable, one INFO when it is back: an exporter
    scraped every 15 s does not log the same outage at every scrape."""
    with _gone_lock:
        if problem is not None and where not in _gone:
            _gone.add(where)
            log.warning("%s", problem.message)
        elif problem is None and where in _gone:
            _gone.discard(where)
            log.info("%s can be read again", where)


def _many(value: str | Sequence[str] | None) -> list[str]:
    if value is None:
        return []
    if isinstance(value, str):
        return [value]
    return list(value)


def _read_source(
    c: _Collector,
    where: str,
    label: str,
    scan: Callable[[], None],
    empty_hint: str,
    expect_state: bool,
) -> None:
    """Scan one source into ``c``: unavailable or (with ``expect_state``) empty is a problem."""
    c.found = 0
    try:
        scan()
    except (ResilienceError, OSError, ValueError) as exc:
        c.problem(label, exc, "source_unavailable")
        _log_availability(where, c.problems[-1])
        return
    _log_availability(where, None)
    if expect_state and not c.found:
        c.problems.append(
            Problem("no_state", where, f"no shared state found in {label}: {empty_hint}")
        )


def read_fleet(
    state_dir: str | Sequence[str] | None = None,
    redis_url: str | Sequence[str] | None = None,
    *,
    expect_state: bool = False,
) -> FleetView:
    """Read everything shared in ``state_dir`` and/or ``redis_url`` (one or several each).

    Never raises for the state it reads: a missing directory, an unreachable Redis or an
    unreadable item is a :class:`Problem` of the view. With ``expect_state`` (what the
    ``status`` and ``metrics`` commands pass), so is a source with nothing of ours in it
    (``no_state``); a bot reading its own, still empty, state directory leaves it False.

    Raises:
        ValueError: Neither given.
    """
    dirs, urls = _many(state_dir), _many(redis_url)
    if not dirs and not urls:
        raise ValueError("give a state directory (--state-dir) or a Redis URL (--redis)")
    c = _Collector(time.time())
    sources: list[str] = []
    for d in dirs:
        where = os.path.abspath(d)
        sources.append(where)
        _read_source(
            c,
            where,
            where,
            functools.partial(_scan_dir, c, d),
            "no bot has written there (a typo, an unmounted volume?); give the directory the "
            "bots use as state_dir",
            expect_state,
        )
    for url in urls:
        from resilient_trading.backends._redis import _strip_credentials

        where = safe_text(_strip_credentials(url))
        sources.append(where)
        _read_source(
            c,
            where,
            f"Redis {where}",
            functools.partial(_scan_redis, c, url),
            "no resilient-trading keys (a wrong host or database number?); give the bots' "
            "redis_url",
            expect_state,
        )
    first = c.halts[0] if c.halts else None
    return FleetView(
        sources=tuple(sources),
        read_at=c.now,
        halt=None if first is None else HaltStatus(first.reason, first.since, first.by),
        breakers=tuple(c.breakers),
        budgets=tuple(c.budgets),
        addresses=tuple(c.addresses),
        stores=tuple(c.stores),
        issues=tuple(c.problems),
        halts=tuple(c.halts),
        bots=tuple(c.bots),
    )
