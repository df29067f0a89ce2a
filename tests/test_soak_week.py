"""The compressed week (``examples/soak_week.py``): its verdicts, and one short real run.

The pure verdicts (``examples/soak_week_rules.py``: exposure episodes and the grace, time
throttled, actions per day, flatness, the invariants a report breaks, the projection) are
checked against small reference models with hypothesis, the exposure rule also as a state
machine driving bot lives and positions; the projection's arithmetic with the run's own
volume credit (``--actions-per-usd``). The smoke runs are the real thing, shortened: the
simulator, the bot killed with SIGKILL and restarted (each life resting a bait order only
the switch can cancel), the switch's watchdog, the sharer. As shipped it must pass its
invariants and report every field; with ``--no-watchdog`` it must fail (exit 1).
"""

from __future__ import annotations

import doctest
import itertools
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from hypothesis import example, given
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

import examples.soak_week_rules
from examples.soak_week_rules import (
    Exposure,
    Sample,
    actions_by_day,
    broken,
    exposures,
    flat,
    projection,
    runway_days,
    time_throttled,
)

ROOT = Path(__file__).resolve().parents[1]


def sample(t: float, protected: bool, bot_since: float | None = 0.0, **kw: Any) -> Sample:
    fields: dict[str, Any] = {
        "szi": 0.0 if protected else 0.01,
        "open_orders": 0,
        "throttled": False,
        "state_bytes": 500,
        "history_bytes": 0,
    }
    fields.update(kw)
    return Sample(t=t, protected=protected, bot_since=bot_since, **fields)


def test_the_examples_in_the_docstrings_hold() -> None:
    assert doctest.testmod(examples.soak_week_rules).failed == 0


# --- exposures ----------------------------------------------------------------------------------

steps = st.lists(
    st.tuples(
        st.floats(min_value=0.1, max_value=5.0),  # time since the previous sample
        st.booleans(),  # protected
        st.sampled_from(["alive", "dead", "restarted"]),
    ),
    max_size=40,
)


def build(raw: list[tuple[float, bool, str]]) -> list[Sample]:
    samples, t, since = [], 0.0, 0.0
    alive = True
    for dt, protected, bot in raw:
        t += dt
        if bot == "dead":
            alive = False
        elif bot == "restarted" or not alive:
            alive, since = True, t - dt / 2
        samples.append(sample(t, protected, since if alive else None))
    return samples


def reference(samples: list[Sample]) -> list[tuple[float, float, float]]:
    """Brute force: every maximal run of unprotected samples, closed by the next sample;
    charged = the largest ``t - max(run start, bot start)`` over the run and its closer."""
    out = []
    i = 0
    while i < len(samples):
        if samples[i].protected:
            i += 1
            continue
        j = i
        while j < len(samples) and not samples[j].protected:
            j += 1
        closer = j if j < len(samples) else j - 1
        start = samples[i].t
        charged = max(
            (
                s.t - max(start, s.bot_since)
                for s in samples[i : closer + 1]
                if s.bot_since is not None
            ),
            default=0.0,
        )
        out.append((start, samples[closer].t, max(0.0, charged)))
        i = j
    return out


@given(steps)
def test_exposures_match_the_brute_force_model(raw: list[tuple[float, bool, str]]) -> None:
    samples = build(raw)
    got = [(e.start, e.end, e.charged) for e in exposures(samples)]
    assert got == reference(samples)


@given(steps)
def test_every_unprotected_sample_lies_in_exactly_one_episode(
    raw: list[tuple[float, bool, str]],
) -> None:
    samples = build(raw)
    found = exposures(samples)
    for s in samples:
        if not s.protected:
            assert sum(1 for e in found if e.start <= s.t <= e.end) >= 1
    for a, b in itertools.pairwise(found):
        assert a.end <= b.start
    for e in found:
        assert 0.0 <= e.charged <= e.end - e.start + 1e-9


def test_no_bot_alive_charges_nothing() -> None:
    """While no bot lives (killed, the switch cancelled its stop), exposure is excused."""
    samples = [sample(t, t == 10.0, bot_since=None) for t in (0.0, 2.0, 4.0, 10.0)]
    assert exposures(samples) == [Exposure(0.0, 10.0, 0.0)]


def test_a_restart_restarts_the_grace_clock() -> None:
    """Exposed since 0, a bot started at 6 fixes it at 9: it is charged 3 s, not 9."""
    samples = [
        sample(0.0, False, None),
        sample(3.0, False, None),
        sample(6.0, False, 6.0),
        sample(9.0, True, 6.0),
    ]
    assert exposures(samples) == [Exposure(0.0, 9.0, 3.0)]


def test_an_open_episode_at_the_end_is_reported() -> None:
    samples = [sample(0.0, True), sample(2.0, False), sample(30.0, False)]
    assert exposures(samples) == [Exposure(2.0, 30.0, 28.0)]


class ExposureMachine(RuleBasedStateMachine):
    """Bot lives and positions over time; the batch verdict must agree with a running model:
    exposure is charged only while a bot lives, from the later of its start and the
    position's loss of its stop."""

    def __init__(self) -> None:
        super().__init__()
        self.t = 0.0
        self.bot_since: float | None = 0.0
        self.protected = True
        self.samples: list[Sample] = []
        self.exposed_since: float | None = None
        self.worst = 0.0  # the model's largest charge so far

    def _sample(self) -> None:
        s = sample(self.t, self.protected, self.bot_since)
        self.samples.append(s)
        if self.exposed_since is not None and self.bot_since is not None:
            self.worst = max(self.worst, self.t - max(self.exposed_since, self.bot_since))
        if self.protected:
            self.exposed_since = None
        elif self.exposed_since is None:
            self.exposed_since = self.t

    @rule(dt=st.floats(min_value=0.1, max_value=10.0))
    def tick(self, dt: float) -> None:
        self.t += dt
        self._sample()

    @precondition(lambda self: self.bot_since is not None)
    @rule(holding=st.booleans())
    def kill(self, holding: bool) -> None:
        self.bot_since = None
        if holding:
            self.protected = False  # the switch cancels the stop of the position it holds
        self.t += 0.5
        self._sample()

    @precondition(lambda self: self.bot_since is None)
    @rule()
    def restart(self) -> None:
        self.t += 0.5
        self.bot_since = self.t
        self._sample()

    @rule(protected=st.booleans())
    def position_changes(self, protected: bool) -> None:
        self.protected = protected
        self.t += 0.5
        self._sample()

    @invariant()
    def charged_matches_the_model(self) -> None:
        found = exposures(self.samples)
        assert max((e.charged for e in found), default=0.0) == self.worst


TestExposureMachine = ExposureMachine.TestCase


# --- the other verdicts ---------------------------------------------------------------------


@given(st.lists(st.tuples(st.floats(0.1, 5.0), st.booleans()), max_size=30))
def test_time_throttled_sums_the_throttled_intervals(raw: list[tuple[float, bool]]) -> None:
    samples, t = [], 0.0
    for dt, throttled in raw:
        t += dt
        samples.append(sample(t, True, throttled=throttled))
    expected = sum(
        samples[i + 1].t - samples[i].t for i in range(len(samples) - 1) if samples[i].throttled
    )
    assert abs(time_throttled(samples) - expected) < 1e-9
    assert 0.0 <= time_throttled(samples) <= (samples[-1].t - samples[0].t if samples else 0.0)


@given(
    st.lists(st.integers(0, 50), max_size=30),
    st.floats(min_value=1.0, max_value=20.0),
    st.integers(1, 9),
)
def test_actions_by_day_add_up_to_the_last_count(
    increments: list[int], day_seconds: float, days: int
) -> None:
    syncs, used = [], 0
    for i, n in enumerate(increments):
        used += n
        syncs.append((i * 1.7, used))
    per_day = actions_by_day(syncs, day_seconds, days)
    assert len(per_day) == days
    assert all(n >= 0 for n in per_day)
    within = [u for t, u in syncs if t < days * day_seconds]
    assert sum(per_day) == max(within, default=0)


@example(1000.0, 1500.0, 0.0)  # half again: still flat
@example(1000.0, 1600.0, 0.0)  # more: grew
@given(st.floats(0, 1e6), st.floats(0, 1e6), st.floats(0, 1e4))
def test_flat_is_within_half_again_plus_the_slack(start: float, end: float, slack: float) -> None:
    assert flat(start, end, slack=slack) == (end <= 1.5 * start + slack)


GOOD: dict[str, Any] = {
    "duplicate_orders": 0,
    "http_429": 0,
    "positions_unprotected_after_grace": 0,
    "unprotected_worst": None,
    "grace_seconds": 20.0,
    "kills": 5,
    "kills_with_entries_working": 4,
    "kills_switch_missed": 0,
    "orders_left_open_after_kills": 0,
    "state_always_parsed": True,
    "state_ok": True,
    "state_detail": "state matches the exchange",
    "final_bot_exit": 0,
    "state_bytes_start": 600,
    "state_bytes_end": 650,
    "state_bytes_max_day1": 1200,
    "state_bytes_max_last_day": 1300,
    "commit_ms_best_start": 0.7,
    "commit_ms_best_end": 0.8,
}
BAD: dict[str, Any] = {
    "duplicate_orders": 1,
    "http_429": 2,
    "positions_unprotected_after_grace": 1,
    "kills": 0,
    "kills_with_entries_working": 0,  # the switch's cancel never exercised
    "kills_switch_missed": 1,
    "orders_left_open_after_kills": 2,
    "state_always_parsed": False,
    "state_ok": False,
    "final_bot_exit": 1,
    "state_bytes_end": 1_700_000,  # every order of a week kept in the live file
    "state_bytes_max_last_day": 1_700_000,
    "commit_ms_best_end": 148.0,  # the measurement at 10,000 orders
}


def test_a_good_report_breaks_nothing() -> None:
    assert broken(GOOD) == []


@given(st.sampled_from(sorted(BAD)))
def test_each_broken_invariant_is_reported(field: str) -> None:
    """Any one invariant broken is a failure line (and so exit 1)."""
    report = {**GOOD, field: BAD[field]}
    assert len(broken(report)) == 1


RUN: dict[str, Any] = {
    "bot_alive_seconds": 864.0,  # 1/100 of a day: every rate below is x100 per day
    "bot_lives": 16,
    "kills": 15,
    "orders_cancelled_by_switch": 16,
    "stops_rearmed": 14,
    "orders_placed": 20,
    "actions_cap": 8696,
    "address_buffer": 700,
    "actions_per_usd": 1.0,
    "history_bytes_per_order": 248.5,
    "state_bytes_max_last_day": 754,
}


def test_the_projection_shows_its_arithmetic() -> None:
    """The worked example of docs/howto/week.md: 6 entry orders in 1/100 day -> 600 a day;
    a restart costs (16 leverage + 16 cancelled + 14 re-armed) / 15 kills = 3.07 actions."""
    p = projection(RUN, restarts_per_day=4.0)
    assert p["restart_actions"] == 3.07
    assert p["trading_actions_per_day"] == 600
    assert p["actions_per_day"] == 612  # 600 + 4 x 3.07
    assert p["actions_week"] == 4286
    assert p["volume_usd_per_day"] == 799_600  # (8696 - 700) x 100
    assert p["cap_week"] == 10_000 + 7 * 799_600
    assert p["runway_days_without_volume"] == 16.3  # 10,000 / 612.3
    assert p["history_bytes_per_day"] == 497_000  # 20 x 100 x 248.5
    assert p["state_bytes"] == 754


def test_the_projection_undoes_the_runs_compressed_volume_credit() -> None:
    """H34's D6a: at 0.0005 actions per USDC, the 7,996 actions the cap earned are
    7,996 / 0.0005 = $15.99M traded in 1/100 day, not $7,996: the real week (one action per
    USDC) earns 2,000 x what the run's cap did."""
    p = projection({**RUN, "actions_per_usd": 0.0005})
    assert p["volume_usd_per_day"] == 1_599_200_000  # 7996 / 0.0005 x 100
    assert p["cap_week"] == 10_000 + 7 * 1_599_200_000


def test_the_soaks_bait_is_no_restart_cost() -> None:
    """16 orders cancelled by the switch, 10 of them the soak's bait: a real restart costs
    (16 leverage + 6 cancelled + 14 re-armed) / 15 kills = 2.4 actions."""
    assert projection({**RUN, "kills_with_bait": 10})["restart_actions"] == 2.4


@given(
    st.integers(min_value=1, max_value=100_000),  # the run's buffer
    st.integers(min_value=0, max_value=100_000),  # actions its cap earned
    st.floats(min_value=1e-6, max_value=10.0),  # the run's actions per USDC
    st.floats(min_value=1.0, max_value=1e6),  # seconds alive
)
def test_the_projected_volume_is_the_earned_credit_over_the_runs_rate(
    buffer: int, earned: int, actions_per_usd: float, alive: float
) -> None:
    """Volume per day = (cap - buffer) / actions_per_usd x 86,400 / alive; the real week's
    cap = 10,000 + 7 x that volume (the exchange's one action per USDC): the run's own rate
    cancels out, whatever it was compressed to."""
    run = {
        **RUN,
        "address_buffer": buffer,
        "actions_cap": buffer + earned,
        "actions_per_usd": actions_per_usd,
        "bot_alive_seconds": alive,
    }
    p = projection(run)
    volume = earned / actions_per_usd * 86_400 / alive
    assert abs(p["volume_usd_per_day"] - volume) <= 0.5 + 1e-9 * volume
    assert abs(p["cap_week"] - (10_000 + 7 * volume)) <= 0.5 + 1e-9 * volume
    # Twice the run's credit per USDC is half the volume for the same earned actions.
    doubled = projection({**run, "actions_per_usd": 2 * actions_per_usd})
    assert abs(doubled["volume_usd_per_day"] - volume / 2) <= 0.5 + 1e-9 * volume


@given(
    st.integers(min_value=-3, max_value=10_000),
    st.one_of(st.none(), st.floats(min_value=0.0, max_value=1e7)),
    st.floats(min_value=0.1, max_value=1e5),
)
def test_the_runway_is_null_until_an_action_is_counted(
    used: int, runway_s: float | None, day_seconds: float
) -> None:
    """H34's nit 6: no actions, no pace, no runway (not 80 days at used=0)."""
    got = runway_days(used, runway_s, day_seconds)
    if used <= 0 or runway_s is None:
        assert got is None
    else:
        assert got == round(runway_s / day_seconds, 1)


@given(st.floats(min_value=10.0, max_value=1e6), st.floats(min_value=1.0, max_value=10.0))
def test_a_longer_life_for_the_same_work_projects_less(alive: float, longer: float) -> None:
    short = projection({**RUN, "bot_alive_seconds": alive})
    long_ = projection({**RUN, "bot_alive_seconds": alive * longer})
    assert long_["actions_per_day"] <= short["actions_per_day"]
    assert long_["history_bytes_per_day"] <= short["history_bytes_per_day"]
    assert abs(short["actions_week"] - 7 * short["actions_per_day"]) <= 4  # rounding only


# --- the real thing, short -----------------------------------------------------------------------

FIELDS = {
    "actions_spent",
    "actions_cap",
    "actions_by_day",
    "runway_at_syncs",
    "time_throttled_seconds",
    "kills",
    "kills_with_entries_working",
    "kills_with_bait",
    "orders_cancelled_by_switch",
    "orders_left_open_after_kills",
    "stops_kept_by_switch",
    "positions_unprotected_after_grace",
    "unprotected_longest_with_bot_seconds",
    "duplicate_orders",
    "http_429",
    "state_bytes_start",
    "state_bytes_end",
    "commit_ms_start",
    "commit_ms_end",
    "history_bytes_end",
    "state_ok",
    "invariants_ok",
    "failures",
}


def week(run: Path, *extra: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, str(ROOT / "examples" / "soak_week.py"), "--dir", str(run), *extra],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[int, str, dict[str, Any]]]:
    """Two short weeks at once (each has its own simulator): one as shipped, one with no
    watchdog. Each life of the bot rests a bait order only the switch can cancel, so the
    watchdog's cancel is exercised in both. Kills come after 4-6 s: the bait is on the book
    by then (about 2 s into a life)."""
    base = tmp_path_factory.mktemp("weeks")
    short = ("--kill-min", "4", "--kill-max", "6")
    procs = {
        "week": week(
            base / "week", "--days", "2", "--day-seconds", "8", "--final-seconds", "4", *short
        ),
        "no_watchdog": week(
            base / "no_watchdog",
            *("--days", "1", "--day-seconds", "10", "--final-seconds", "3", "--no-watchdog"),
            *short,
        ),
    }
    out = {}
    for name, proc in procs.items():
        stdout, _ = proc.communicate(timeout=150)
        report = json.loads((base / name / "week_report.json").read_text())
        out[name] = (proc.returncode, stdout, report)
    return out


def test_a_short_compressed_week_passes_and_reports_every_field(
    runs: dict[str, tuple[int, str, dict[str, Any]]],
) -> None:
    code, stdout, report = runs["week"]
    assert code == 0, (report["failures"], stdout[-2000:])
    assert not FIELDS - set(report), "fields missing from the report"
    assert report["invariants_ok"] and report["failures"] == []
    assert report["kills"] >= 1
    assert report["duplicate_orders"] == 0 and report["http_429"] == 0
    assert report["positions_unprotected_after_grace"] == 0
    assert report["orders_left_open_after_kills"] == 0
    # kill -9 stopped the beats and the watchdog fired: the switch lives in the bot's process.
    assert report["switch_seconds_max"] is not None
    assert report["kills_switch_missed"] == 0
    # The switch had something to cancel (the bait at least) and cancelled it.
    assert report["kills_with_bait"] >= 1
    assert report["orders_cancelled_by_switch"] >= report["kills_with_bait"]
    # The final clean exit cancelled its own bait: the exchange holds only the bot's orders.
    assert report["state_ok"], report["state_detail"]
    assert report["runway_at_syncs"], "no userRateLimit sync was recorded"
    assert all(s["runway_days"] is None for s in report["runway_at_syncs"] if s["used"] == 0)
    assert "=== compressed week ===" in stdout
    assert "invariants: all hold" in stdout


def test_without_the_watchdog_the_killed_bots_orders_stay_and_the_week_fails(
    runs: dict[str, tuple[int, str, dict[str, Any]]],
) -> None:
    """The invariant can fail: with no watchdog, the killed bot's bait stays on the book."""
    code, stdout, report = runs["no_watchdog"]
    assert code == 1, stdout[-2000:]
    assert report["watchdog"] is False and report["kills_with_bait"] >= 1
    assert report["orders_left_open_after_kills"] >= 1
    assert report["orders_cancelled_by_switch"] == 0
    assert any("orders of killed bots left open" in f for f in report["failures"])
    assert "invariants: BROKEN" in stdout
