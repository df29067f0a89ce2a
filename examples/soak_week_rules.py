"""The compressed week's verdicts (``examples/soak_week.py``): pure functions of its samples.

What the samples of a run say, decided with no I/O and no clock, so that each rule is tested
on its own (``tests/test_soak_week.py``): the episodes of a position without a stop and the
time a live bot had to fix each (:func:`exposures`; the grace is ``docs/howto/week.md``'s),
time throttled, actions per compressed day, what "flat" means for the state file, the
invariants a report breaks (:func:`broken`) and the projection for a real week
(:func:`projection`).
"""

from __future__ import annotations

import dataclasses
import itertools
from collections.abc import Sequence
from typing import Any

__all__ = [
    "FLAT_BYTES",
    "FLAT_COMMIT_MS",
    "FLAT_RATIO",
    "REAL_ACTIONS_PER_USD",
    "REAL_BUFFER",
    "Exposure",
    "Sample",
    "actions_by_day",
    "broken",
    "exposures",
    "flat",
    "projection",
    "runway_days",
    "time_throttled",
]

#: Flat: the end's value is at most ``FLAT_RATIO`` x the start's plus a constant.
FLAT_RATIO = 1.5
FLAT_BYTES = 4096
FLAT_COMMIT_MS = 5.0

#: Hyperliquid's address budget: 10,000 actions to start, plus one per USDC traded.
REAL_BUFFER = 10_000
REAL_ACTIONS_PER_USD = 1.0


@dataclasses.dataclass(frozen=True)
class Sample:
    """One look at the exchange and the files, ``t`` seconds after the week started."""

    t: float
    szi: float
    protected: bool
    open_orders: int
    #: When the bot process alive at ``t`` was started (``None``: no bot alive).
    bot_since: float | None
    throttled: bool
    state_bytes: int
    history_bytes: int


@dataclasses.dataclass(frozen=True)
class Exposure:
    """A run of samples showing a position without a working stop.

    ``charged``: the longest time within it that one live bot process had to see and fix it
    (from the later of the episode's start and that process's start). Past ``grace``, the
    position counts as unprotected after a reconcile: an invariant broken.
    """

    start: float
    end: float
    charged: float


def exposures(samples: Sequence[Sample]) -> list[Exposure]:
    """The episodes of unprotected samples (ended by the first protected or flat sample,
    whose time counts: the position may have been exposed until then).

    >>> s = [Sample(t, 0.1, p, 0, 0.0, False, 0, 0) for t, p in [(0, True), (2, False), (4, True)]]
    >>> exposures(s)
    [Exposure(start=2, end=4, charged=2)]
    """
    found: list[Exposure] = []
    start: float | None = None
    charged = 0.0
    for sample in samples:
        if start is not None and sample.bot_since is not None:
            charged = max(charged, sample.t - max(start, sample.bot_since))
        if sample.protected:
            if start is not None:
                found.append(Exposure(start, sample.t, charged))
                start, charged = None, 0.0
            continue
        if start is None:
            start, charged = sample.t, 0.0
    if start is not None:
        found.append(Exposure(start, samples[-1].t, charged))
    return found


def time_throttled(samples: Sequence[Sample]) -> float:
    """Seconds during which the address was throttled (each sample holds until the next)."""
    return sum(b.t - a.t for a, b in itertools.pairwise(samples) if a.throttled)


def actions_by_day(syncs: Sequence[tuple[float, int]], day_seconds: float, days: int) -> list[int]:
    """Actions the exchange counted in each compressed day, from ``(t, used)`` at each sync.

    >>> actions_by_day([(0.0, 0), (5.0, 7), (12.0, 9), (25.0, 20)], 10.0, 3)
    [7, 2, 11]
    """
    out = []
    before = 0
    for day in range(days):
        seen = [used for t, used in syncs if t < (day + 1) * day_seconds]
        now = max(seen, default=before)
        out.append(max(0, now - before))
        before = max(before, now)
    return out


def runway_days(used: int, runway_seconds: float | None, day_seconds: float) -> float | None:
    """The runway at a sync in compressed days; ``None`` when no action was counted yet (no
    pace to project) or the budget reports none.

    >>> runway_days(0, 3200.0, 40.0), runway_days(5, 240.0, 40.0)
    (None, 6.0)
    """
    if used <= 0 or runway_seconds is None:
        return None
    return round(runway_seconds / day_seconds, 1)


def flat(start: float, end: float, *, slack: float) -> bool:
    """``end <= 1.5 * start + slack``: grew by no more than noise and a constant."""
    return end <= FLAT_RATIO * start + slack


def projection(result: dict[str, Any], *, restarts_per_day: float = 4.0) -> dict[str, Any]:
    """A real 7-day run at the pace the bot traded here, from this run's numbers.

    The bot trades at the demo's market pace (one-minute candles compressed by the simulator's
    speed), so each rate is per second the bot was alive, times 86,400. Restarts are the
    soak's doing (one every few seconds): each costs ``restart_actions`` (the leverage set at
    connect, the switch's cancels of the bot's own orders, the stop re-armed after; not the
    soak's bait), counted here at ``restarts_per_day``.

    The volume comes from what the run's cap earned: the simulator adds ``actions_per_usd``
    actions per USDC traded, so the run traded ``(cap - buffer) / actions_per_usd`` USDC. The
    real week is then projected with the exchange's own rule (:data:`REAL_BUFFER` actions
    plus :data:`REAL_ACTIONS_PER_USD` per USDC), whatever the run compressed it to.
    """
    alive = max(float(result["bot_alive_seconds"]), 1.0)
    lives, kills = int(result["bot_lives"]), max(int(result["kills"]), 1)
    rearmed = int(result["stops_rearmed"])
    # The soak's bait (one per life, cancelled by the switch) is no cost of a real bot's restart.
    cancelled = int(result["orders_cancelled_by_switch"]) - int(result.get("kills_with_bait", 0))
    restart_actions = (lives + max(0, cancelled) + rearmed) / kills
    entry_orders = max(0, int(result["orders_placed"]) - rearmed)
    per_day = 86_400 / alive
    trading = entry_orders * per_day
    actions = trading + restarts_per_day * restart_actions
    earned = int(result["actions_cap"]) - int(result["address_buffer"])
    volume = max(0, earned) / float(result["actions_per_usd"]) * per_day
    orders = int(result["orders_placed"]) * per_day
    return {
        "restart_actions": round(restart_actions, 2),
        "trading_actions_per_day": round(trading),
        "actions_per_day": round(actions),
        "actions_week": round(7 * actions),
        "volume_usd_per_day": round(volume),
        "cap_week": round(REAL_BUFFER + 7 * volume * REAL_ACTIONS_PER_USD),
        "runway_days_without_volume": round(REAL_BUFFER / actions, 1) if actions else None,
        "history_bytes_per_day": round(orders * float(result["history_bytes_per_order"])),
        "state_bytes": int(result["state_bytes_max_last_day"]),
    }


def broken(result: dict[str, Any]) -> list[str]:
    """The invariants a report breaks, one line each (empty: the week passed)."""
    failures = []
    if result["duplicate_orders"]:
        failures.append(f"{result['duplicate_orders']} duplicate orders at the exchange")
    if result["http_429"]:
        failures.append(f"the exchange answered 429 {result['http_429']} times")
    if result["positions_unprotected_after_grace"]:
        worst = result["unprotected_worst"] or {}
        failures.append(
            f"{result['positions_unprotected_after_grace']} positions unprotected past the "
            f"{result['grace_seconds']:g}s grace (worst: {worst.get('charged', 0):.1f}s from "
            f"{worst.get('start', 0):.1f}s)"
        )
    if not result["kills"]:
        failures.append("the bot was never killed: run longer (--day-seconds)")
    if result["kills"] and not result["kills_with_entries_working"]:
        failures.append(
            "no kill left an order the switch had to cancel: its cancel was never exercised"
        )
    if result["kills_switch_missed"]:
        failures.append(f"the switch did not fire after {result['kills_switch_missed']} kills")
    if result["orders_left_open_after_kills"]:
        failures.append(f"{result['orders_left_open_after_kills']} orders of killed bots left open")
    if not result["state_always_parsed"]:
        failures.append("the state file did not parse after a kill")
    if not result["state_ok"]:
        failures.append(f"state does not match the exchange: {result['state_detail']}")
    if result["final_bot_exit"] != 0:
        failures.append(f"the final bot run exited {result['final_bot_exit']}")
    if not flat(result["state_bytes_start"], result["state_bytes_end"], slack=FLAT_BYTES):
        failures.append("the live state file grew over the week")
    day1, last = result["state_bytes_max_day1"], result["state_bytes_max_last_day"]
    if not flat(day1, last, slack=FLAT_BYTES):
        failures.append("the live state file grew from the first day to the last")
    commits = result["commit_ms_best_start"], result["commit_ms_best_end"]
    if not flat(*commits, slack=FLAT_COMMIT_MS):
        failures.append("a commit got slower over the week")
    return failures
