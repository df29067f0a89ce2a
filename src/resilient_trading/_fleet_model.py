"""The typed view of a fleet's shared state: what ``status`` shows and ``status --json`` prints.

:func:`resilient_trading._fleet_view.read_fleet` fills a :class:`FleetView` from the state
directories and Redis servers it reads; ``status``, its JSON (:meth:`FleetView.to_json`, the
documented schema :data:`resilient_trading._fleet_schema.STATUS_SCHEMA`) and the exporter
read only these records. Each reason to call a person (:class:`Reason`) and each item that
could not be read (:class:`Problem`) carries a machine-readable ``kind`` beside its text.
"""

from __future__ import annotations

import dataclasses
import datetime
import os
from typing import Any, Literal

from resilient_trading._halt import HaltStatus

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
    "ProblemKind",
    "Reason",
    "ReasonKind",
    "StoreView",
    "WindowView",
]

#: The version of ``status --json`` (:meth:`FleetView.to_json`); bumped on any change that
#: removes or renames a field or changes its meaning (new fields do not bump it).
SCHEMA_VERSION = 1
#: An address runway under this many seconds needs an operator.
RUNWAY_ALERT_SECONDS = 86_400.0

ProblemKind = Literal["unreadable", "halt_unreadable", "source_unavailable", "no_state"]
ReasonKind = Literal[
    "halted",
    "halt_unknown",
    "breaker_latched",
    "runway_low",
    "bot_stale",
    "unreadable",
    "source_unavailable",
    "no_state",
]


@dataclasses.dataclass(frozen=True)
class Problem:
    """Something of ours that could not be read: ``kind`` (see :data:`ProblemKind`), the
    place (``where``: a path, a ``path#breakers.name``, a Redis key or source) and a message
    saying what to do."""

    kind: str
    where: str
    message: str

    def __str__(self) -> str:
        return self.message


@dataclasses.dataclass(frozen=True)
class Reason:
    """Why a person must look now: ``kind`` (see :data:`ReasonKind`), the ``subject`` it is
    about, and a message with the remedy."""

    kind: str
    subject: str
    message: str


@dataclasses.dataclass(frozen=True)
class HaltView:
    """A raised halt flag, and where it was read."""

    location: str
    reason: str
    since: float
    by: str


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
    #: Where the breakers live: the file, or the Redis location (``...#key``).
    store: str = ""


@dataclasses.dataclass(frozen=True)
class WindowView:
    budget: int
    period: float  # seconds, as ``limits status`` says it
    used: int
    remaining: int


@dataclasses.dataclass(frozen=True)
class BudgetView:
    location: str
    windows: tuple[WindowView, ...]
    paused_until: float | None
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
    last_commit: float  # the file's modification time
    size_bytes: int
    backup_age_seconds: float | None


@dataclasses.dataclass(frozen=True)
class BotView:
    """A bot's heartbeat (``heartbeat.json`` of a dead man's switch in watchdog mode)."""

    location: str
    address: str
    pid: int
    beat_at: float
    deadline_seconds: float
    stopped: bool

    def age(self, now: float) -> float:
        return max(0.0, now - self.beat_at)

    def stale(self, now: float) -> bool:
        """Not stopped cleanly, and its last beat is older than its own deadline."""
        return not self.stopped and now - self.beat_at > self.deadline_seconds


@dataclasses.dataclass(frozen=True)
class FleetView:
    """Everything read from the state directories and/or Redis servers, at ``read_at``."""

    sources: tuple[str, ...]
    read_at: float
    halt: HaltStatus | None
    breakers: tuple[BreakerView, ...] = ()
    budgets: tuple[BudgetView, ...] = ()
    addresses: tuple[AddressView, ...] = ()
    stores: tuple[StoreView, ...] = ()
    #: What could not be read (each with its ``kind``); :attr:`problems` has their messages.
    issues: tuple[Problem, ...] = ()
    halts: tuple[HaltView, ...] = ()
    bots: tuple[BotView, ...] = ()

    @property
    def problems(self) -> tuple[str, ...]:
        """The messages of :attr:`issues`."""
        return tuple(p.message for p in self.issues)

    @property
    def halt_state(self) -> Literal["halted", "unknown", "not_halted"]:
        """``halted`` when any flag is raised; ``unknown`` when none is but one could not be
        read, or a whole source could not (bots treat that as halted); else ``not_halted``."""
        if self.halts or self.halt is not None:
            return "halted"
        if any(p.kind in ("halt_unreadable", "source_unavailable") for p in self.issues):
            return "unknown"
        return "not_halted"

    def reasons(self) -> list[Reason]:
        """Why a person must look now (empty: nothing), each with a machine-readable kind."""
        out: list[Reason] = []
        halts = list(self.halts)
        if not halts and self.halt is not None:
            halts.append(HaltView("", self.halt.reason, self.halt.since, self.halt.by))
        for h in halts:
            out.append(
                Reason(
                    "halted",
                    h.location or "halt",
                    f"fleet halted since {_iso(h.since)}: {h.reason} "
                    f"(`resilient-trading resume {_where_args(h.location)}` once it is safe)",
                )
            )
        for b in self.breakers:
            if b.latched:
                why = b.reason or "no reason stored"
                out.append(
                    Reason(
                        "breaker_latched",
                        b.location,
                        f"breaker {b.name} latched: {why} (once fixed: "
                        f"`resilient-trading breaker reset {_breaker_args(b)} --name {b.name}`)",
                    )
                )
        for a in self.addresses:
            if a.runway_seconds is not None and a.runway_seconds < RUNWAY_ALERT_SECONDS:
                hours = a.runway_seconds / 3600
                out.append(
                    Reason(
                        "runway_low",
                        a.location,
                        f"address {a.address} runway {hours:.1f} h (under a day) at "
                        f"{a.per_hour:.0f} actions/h: slow the bots' actions, or add trading "
                        "volume (each 1 USDC traded buys one more action)",
                    )
                )
        for bot in self.bots:
            if bot.stale(self.read_at):
                out.append(
                    Reason(
                        "bot_stale",
                        bot.location,
                        f"bot {bot.address} (pid {bot.pid}) last beat "
                        f"{bot.age(self.read_at):.0f} s ago, past its "
                        f"{bot.deadline_seconds:.0f} s deadline: it is dead or stuck; check "
                        "it (its watchdog cancels its orders)",
                    )
                )
        for p in self.issues:
            kind = "halt_unknown" if p.kind == "halt_unreadable" else p.kind
            out.append(Reason(kind, p.where, p.message))
        return out

    def needs_operator(self) -> list[str]:
        """The messages of :meth:`reasons`: why a person must look now (empty: nothing)."""
        return [r.message for r in self.reasons()]

    def to_json(self) -> dict[str, Any]:
        """The documented ``status --json`` object (schema :data:`SCHEMA_VERSION`)."""
        now = self.read_at
        return {
            "schema": SCHEMA_VERSION,
            "sources": list(self.sources),
            "read_at": now,
            "halt": {
                "state": self.halt_state,
                "flags": [dataclasses.asdict(h) for h in self.halts],
            },
            "budgets": [
                {
                    "location": b.location,
                    "windows": [dataclasses.asdict(w) for w in b.windows],
                    "paused_until": b.paused_until,
                    "utilisation": b.utilisation,
                }
                for b in self.budgets
            ],
            "breakers": [dataclasses.asdict(k) for k in self.breakers],
            "addresses": [dataclasses.asdict(a) for a in self.addresses],
            "stores": [dataclasses.asdict(s) for s in self.stores],
            "bots": [
                {
                    **dataclasses.asdict(b),
                    "age_seconds": round(b.age(now), 3),
                    "stale": b.stale(now),
                }
                for b in self.bots
            ],
            "problems": [dataclasses.asdict(p) for p in self.issues],
            "needs_operator": [dataclasses.asdict(r) for r in self.reasons()],
        }


def _iso(t: float) -> str:
    return datetime.datetime.fromtimestamp(t, datetime.timezone.utc).isoformat(timespec="seconds")


def _where_args(location: str) -> str:
    """The ``--state-dir``/``--redis`` arguments that reach the flag at ``location``."""
    if location.startswith(("redis://", "rediss://", "unix://")):
        return "--redis URL"
    if location:
        return f"--state-dir {os.path.dirname(location) or '.'}"
    return "--state-dir DIR"


def _breaker_args(b: BreakerView) -> str:
    if b.store.startswith(("redis://", "rediss://", "unix://")):
        return "--redis URL"
    return b.store or "PATH"
