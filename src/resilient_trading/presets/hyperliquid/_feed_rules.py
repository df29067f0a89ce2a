"""The feed's decisions, without I/O: backoff, the shared WebSocket caps, staleness, dedupe.

:class:`~resilient_trading.presets.hyperliquid.Feed` (``_feed.py``) is a loop around these.
Each is a pure function of its arguments, so the tests drive them with hypothesis.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Any, Literal

from resilient_trading._errors import TransientError

__all__ = [
    "StaleFeedError",
    "SubState",
    "WatchAction",
    "admit_connection",
    "admit_message",
    "admit_open",
    "backoff_delay",
    "identifier",
    "message_identifier",
    "refresh_open",
    "release_open",
    "watch",
]

#: Hyperliquid's WebSocket limits (*Rate limits and user limits*).
MAX_NEW_CONNECTIONS = 30  # per minute per IP
NEW_CONNECTION_WINDOW = 60.0
MAX_CONNECTIONS = 10
MAX_SUBSCRIPTIONS = 1000
MAX_MESSAGES_PER_MINUTE = 2000  # messages sent, per IP
MESSAGE_WINDOW = 60.0
CONNECTION_TTL = 30.0  # a live-connection slot not refreshed this long is free again
IDLE_CLOSE = 60.0  # the server closes a connection idle this long

SubState = Literal["pending", "live", "stale", "down"]
WatchAction = Literal["ok", "resubscribe", "recycle"]


class StaleFeedError(TransientError):
    """Raised by :meth:`FeedGate.check` while a subscription the strategy depends on is stale.

    Make no new entries; cancels and closes may still go out. The gate opens by itself once
    fresh messages arrive (the feed resubscribes, then reconnects, on its own).
    """


def backoff_delay(
    attempt: int, *, initial: float, maximum: float, jitter: float, rng: random.Random
) -> float:
    """Seconds to wait before reconnect ``attempt`` (0 for the first retry).

    Exponential (``initial * 2**attempt``, capped at ``maximum``) with "equal jitter": a
    uniform draw from ``[base * (1 - jitter), base]``, so a fleet dropped at once does not come
    back at once, and the delay never exceeds ``maximum``.
    """
    base = min(maximum, initial * 2.0 ** min(attempt, 60))
    return rng.uniform(base * (1.0 - jitter), base)


def admit_connection(
    state: Any, now: float, *, limit: int, window: float
) -> tuple[list[float], float]:
    """The shared cap on new connections: ``(new_state, wait)``.

    ``state`` is the list of wall-clock times of the connections opened in the last
    ``window`` seconds by every process sharing it (``None`` at first). ``wait == 0``: admitted,
    ``now`` is recorded. Otherwise wait that many seconds and ask again. A time in the future
    (the wall clock stepped back) is kept as ``now``: a step can delay, never add, connections.
    """
    times = [float(t) for t in state] if isinstance(state, list) else []
    times = [min(t, now) for t in times if t > now - window]
    times.sort()
    if len(times) < limit:
        return [*times, now], 0.0
    return times, max(1e-3, times[len(times) - limit] + window - now)


# The shared state of every feed on one IP is one dict (an older bare list is its "new" part):
#   "new":  wall-clock times of the connections opened in the last window,
#   "sent": wall-clock times of the messages sent in the last window,
#   "open": {token: expiry} of the connections open now (refreshed while connected).


def _part(state: Any, name: str) -> Any:
    if isinstance(state, dict):
        return state.get(name)
    return state if name == "new" else None


def _merge(state: Any, **parts: Any) -> dict[str, Any]:
    merged = {name: _part(state, name) for name in ("new", "sent", "open")}
    merged.update(parts)
    return {name: value for name, value in merged.items() if value is not None}


def _live(state: Any, now: float, ttl: float) -> dict[str, float]:
    """The unexpired slots; an expiry beyond ``now + ttl`` (the clock stepped back) is cut to it."""
    slots = _part(state, "open")
    if not isinstance(slots, dict):
        return {}
    live: dict[str, float] = {}
    for token, expiry in slots.items():
        if isinstance(expiry, int | float) and float(expiry) > now:
            live[str(token)] = min(float(expiry), now + ttl)
    return live


def admit_message(
    state: Any, now: float, *, limit: int, window: float
) -> tuple[dict[str, Any], float]:
    """The shared cap on messages sent: ``(new_state, wait)``, as :func:`admit_connection`
    but over the ``"sent"`` times (Hyperliquid: 2000 per minute per IP)."""
    sent, wait = admit_connection(_part(state, "sent"), now, limit=limit, window=window)
    return _merge(state, sent=sent), wait


def admit_open(
    state: Any,
    now: float,
    token: str,
    *,
    limit: int,
    ttl: float,
    new_limit: int,
    new_window: float,
) -> tuple[dict[str, Any], float]:
    """Admit one connection under both shared caps: ``(new_state, wait)``.

    Open connections (at most ``limit``; Hyperliquid: 10 per IP) are slots expiring ``ttl``
    seconds after their last :func:`refresh_open`, so a killed holder's slot frees itself.
    New connections are capped as :func:`admit_connection`. ``wait == 0``: ``token`` holds a
    slot and the connection is counted; otherwise nothing is recorded, ask again after
    ``wait`` seconds (or sooner: a slot may be released before it expires).
    """
    live = _live(state, now, ttl)
    if len(live) >= limit:
        return _merge(state, open=live), max(1e-3, min(live.values()) - now)
    new, wait = admit_connection(_part(state, "new"), now, limit=new_limit, window=new_window)
    if wait > 0.0:
        return _merge(state, new=new, open=live), wait
    return _merge(state, new=new, open={**live, token: now + ttl}), 0.0


def refresh_open(
    state: Any, now: float, token: str, *, limit: int, ttl: float
) -> tuple[dict[str, Any], bool]:
    """Extend ``token``'s slot by ``ttl``; False if it expired and no slot is free any more
    (the connection must then be closed: keeping it would exceed the cap)."""
    live = _live(state, now, ttl)
    if token not in live and len(live) >= limit:
        return _merge(state, open=live), False
    return _merge(state, open={**live, token: now + ttl}), True


def release_open(state: Any, now: float, token: str, *, ttl: float) -> tuple[dict[str, Any], None]:
    """Free ``token``'s slot (the connection closed)."""
    live = _live(state, now, ttl)
    live.pop(token, None)
    return _merge(state, open=live), None


@dataclass(frozen=True)
class WatchInput:
    """What :func:`watch` looks at for one subscription."""

    state: SubState
    since: float  # last message (or subscribe, or resubscribe) time, monotonic
    max_silence: float | None
    resubscribed: bool  # already resubscribed once since the last message


def watch(sub: WatchInput, now: float) -> WatchAction:
    """The staleness watchdog for one subscription on an open connection.

    Silent for longer than ``max_silence``: first ``"resubscribe"``; still silent for
    ``max_silence`` after that: ``"recycle"`` the connection.
    """
    if sub.max_silence is None or sub.state == "down":
        return "ok"
    if now - sub.since <= sub.max_silence:
        return "ok"
    return "recycle" if sub.resubscribed else "resubscribe"


def identifier(subscription: dict[str, Any]) -> str:
    """A subscription's identity; the same as :func:`message_identifier` of its messages."""
    kind = str(subscription.get("type"))
    if kind in ("l2Book", "trades", "bbo", "activeAssetCtx"):
        return f"{kind}:{str(subscription.get('coin', '')).lower()}"
    if kind == "candle":
        return f"candle:{str(subscription.get('coin', '')).lower()},{subscription.get('interval')}"
    if kind in ("userFills", "userFundings", "userNonFundingLedgerUpdates", "webData2"):
        return f"{kind}:{str(subscription.get('user', '')).lower()}"
    return kind  # allMids, orderUpdates, userEvents (one per connection, like the SDK)


def message_identifier(message: dict[str, Any]) -> str | None:
    """Which subscription a server message belongs to (``None``: not a subscription's)."""
    channel = message.get("channel")
    data = message.get("data")
    if channel in ("allMids", "orderUpdates"):
        return str(channel)
    if channel == "user":
        return "userEvents"
    if not isinstance(data, dict | list):
        return None
    if channel == "trades" and isinstance(data, list):
        return f"trades:{str(data[0].get('coin', '')).lower()}" if data else None
    if not isinstance(data, dict):
        return None
    if channel in ("l2Book", "bbo", "activeAssetCtx"):
        return f"{channel}:{str(data.get('coin', '')).lower()}"
    if channel == "candle":
        return f"candle:{str(data.get('s', '')).lower()},{data.get('i')}"
    if channel in ("userFills", "userFundings", "userNonFundingLedgerUpdates", "webData2"):
        return f"{channel}:{str(data.get('user', '')).lower()}"
    return None
