"""The breaker's pure rules and typed record, tested directly: the JSON layout round-trips and
stays the one on disk; a bad record is a clear error naming where it is; the transitions agree
with a small reference model (stateful), including clock steps and released trials."""

from __future__ import annotations

import dataclasses
import json
import math
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from resilient_trading import StateCorruptedError
from resilient_trading import _breaker_rules as rules
from resilient_trading._breaker_rules import BreakerRecord, BreakerState, Now

times = st.none() | st.floats(-1e9, 1e10, allow_nan=False, allow_infinity=False)
records = st.builds(
    BreakerRecord,
    state=st.sampled_from(list(BreakerState)),
    failures=st.integers(0, 1000),
    latched=st.booleans(),
    reason=st.none() | st.text(max_size=40),
    opened_at=times,
    trial_started=times,
    trips=st.integers(0, 1000),
    successes=st.none() | st.integers(0, 50),
    opened_mono=times,
    trial_mono=times,
)

# A file written by every release so far (the layout the CLI and PybreakerStorage read).
_ON_DISK = {
    "state": "open",
    "failures": 5,
    "latched": True,
    "reason": "InsufficientFundsError: exchange refused: Insufficient margin to place order.",
    "opened_at": 1700000000.5,
    "trial_started": None,
    "trips": 3,
}


@given(records)
def test_record_round_trips_through_json_text(rec: BreakerRecord) -> None:
    text = json.dumps(rec.to_json(), allow_nan=False)
    assert BreakerRecord.from_json(json.loads(text), "x") == rec


def test_the_on_disk_layout_is_unchanged() -> None:
    rec = BreakerRecord.from_json(_ON_DISK, "breakers.json#breakers.exchange")
    assert rec.state is BreakerState.OPEN
    assert rec.latched
    assert rec.to_json() == _ON_DISK
    assert list(rec.to_json()) == list(_ON_DISK)  # same keys, same order
    assert BreakerRecord.from_json(None, "x") == BreakerRecord()
    assert list(BreakerRecord().to_json()) == list(_ON_DISK)


@pytest.mark.parametrize(
    ("value", "says"),
    [
        ([1, 2], "JSON list"),
        ("open", "JSON str"),
        ({k: v for k, v in _ON_DISK.items() if k != "opened_at"}, "opened_at"),
        ({"state": "open"}, "failures, latched, reason, opened_at, trial_started, trips"),
        ({**_ON_DISK, "state": "ajar"}, "unknown state 'ajar'"),
        ({**_ON_DISK, "failures": -1}, "failures=-1"),
        ({**_ON_DISK, "failures": True}, "failures=True"),
        ({**_ON_DISK, "latched": "yes"}, "latched='yes'"),
        ({**_ON_DISK, "reason": 3}, "reason=3"),
        ({**_ON_DISK, "opened_at": "noon"}, "opened_at='noon'"),
        ({**_ON_DISK, "opened_at": math.inf}, "opened_at=inf"),
        ({**_ON_DISK, "trips": 1.5}, "trips=1.5"),
    ],
)
def test_a_bad_record_is_a_typed_error_naming_the_location(value: Any, says: str) -> None:
    with pytest.raises(StateCorruptedError) as info:
        BreakerRecord.from_json(value, "/srv/bot/breakers.json#breakers.exchange")
    message = str(info.value)
    assert "/srv/bot/breakers.json#breakers.exchange" in message
    assert says in message
    assert "breaker reset" in message  # what to do next
    assert info.value.path == "/srv/bot/breakers.json#breakers.exchange"


@given(records, st.floats(0, 1e10, allow_nan=False), st.floats(0.1, 1e4, allow_nan=False))
def test_rules_return_the_same_object_when_nothing_changes(
    rec: BreakerRecord, wall: float, reset_timeout: float
) -> None:
    now = Now(wall)
    new, admission = rules.admit(rec, now, reset_timeout=reset_timeout)
    assert (new is rec) == (not admission.trial)
    if admission.trial:
        assert new.state is BreakerState.HALF_OPEN and new.trial_started == wall
        assert admission.token == wall
    if rec.state is BreakerState.CLOSED:
        assert admission.allowed and not admission.trial
    if rec.latched and rec.state is not BreakerState.CLOSED:
        assert not admission.allowed
    new, change = rules.settle_failure(
        rec, now, critical=False, reason="r", trial=False, fail_max=10**6
    )
    if rec.state is BreakerState.OPEN:  # a late failure while open changes nothing
        assert new is rec and change is None


@given(
    opened_at=st.floats(0, 1e9, allow_nan=False),
    step=st.floats(-1e6, -1e-6, allow_nan=False),
    reset_timeout=st.floats(0.001, 1e5, allow_nan=False),
)
def test_an_opened_at_in_the_future_is_a_clock_step_and_counts_as_due(
    opened_at: float, step: float, reset_timeout: float
) -> None:
    """Issue #11 item 14: after the wall clock steps back, a shared open breaker must not wait
    for a trial that far away: an impossible (future) opened_at is due at once."""
    rec = BreakerRecord(state=BreakerState.OPEN, opened_at=opened_at, trips=1)
    _, admission = rules.admit(rec, Now(opened_at + step), reset_timeout=reset_timeout)
    assert admission.allowed and admission.trial
    half = BreakerRecord(state=BreakerState.HALF_OPEN, opened_at=opened_at, trial_started=opened_at)
    _, again = rules.admit(half, Now(opened_at + step), reset_timeout=reset_timeout)
    assert again.trial  # a trial "started in the future" is stale: never wedged


@given(
    step=st.floats(-1e6, 1e6, allow_nan=False),
    elapsed=st.floats(0, 100, allow_nan=False),
)
def test_per_process_records_measure_on_the_monotonic_clock(step: float, elapsed: float) -> None:
    rec = BreakerRecord(state=BreakerState.OPEN, opened_at=1000.0, opened_mono=50.0)
    _, admission = rules.admit(rec, Now(1000.0 + step, 50.0 + elapsed), reset_timeout=30.0)
    assert admission.allowed == (elapsed >= 30.0)


def test_release_trial_frees_only_its_own_trial() -> None:
    rec = BreakerRecord(state=BreakerState.OPEN, opened_at=0.0, reason="x", trips=1)
    half, admission = rules.admit(rec, Now(40.0), reset_timeout=30.0)
    assert admission.token == 40.0
    assert rules.release_trial(half, Now(41.0), token=39.0) == (half, None)
    freed, change = rules.release_trial(half, Now(41.0), token=40.0)
    assert freed.state is BreakerState.OPEN and freed.trial_started is None
    assert change == rules.Change(BreakerState.HALF_OPEN, BreakerState.OPEN)
    _, next_admission = rules.admit(freed, Now(41.0), reset_timeout=30.0)
    assert next_admission.trial  # due at once: the next call is the new trial
    assert freed.trips == 1 and freed.reason == "x"


def test_reset_keeps_the_trip_count_and_changes_nothing_when_closed() -> None:
    closed = BreakerRecord(trips=4)
    assert rules.reset(closed, Now(0.0)) == (closed, None)
    latched = BreakerRecord(state=BreakerState.OPEN, latched=True, failures=2, trips=4)
    new, change = rules.reset(latched, Now(0.0))
    assert new == BreakerRecord(trips=4)
    assert change == rules.Change(BreakerState.OPEN, BreakerState.CLOSED)
    counting = BreakerRecord(failures=2)
    assert rules.reset(counting, Now(0.0))[0] == BreakerRecord()


def test_snapshot_reports_retry_at_only_when_a_trial_can_come() -> None:
    rec = BreakerRecord(state=BreakerState.OPEN, opened_at=100.0)
    assert rules.snapshot("x", rec, 30.0).retry_at == 130.0
    assert rules.snapshot("x", rec, 30.0, Now(110.0)).retry_at == 130.0
    assert rules.snapshot("x", rec, 30.0, Now(50.0)).retry_at == 50.0  # stepped back: due
    mono = BreakerRecord(state=BreakerState.OPEN, opened_at=100.0, opened_mono=7.0)
    assert rules.snapshot("x", mono, 30.0, Now(-3000.0, 17.0)).retry_at == -2980.0
    assert rules.snapshot("x", mono, 30.0, Now(-3000.0, 99.0)).retry_at == -3000.0
    assert rules.snapshot("x", rec, None).retry_at is None
    latched = BreakerRecord(state=BreakerState.OPEN, latched=True, opened_at=100.0)
    assert rules.snapshot("x", latched, 30.0).retry_at is None
    assert rules.snapshot("x", BreakerRecord(), 30.0).retry_at is None


def test_a_late_outcome_of_a_call_admitted_before_the_trial_does_not_settle_the_trial() -> None:
    """A call admitted while closed that ends while another call is the half-open trial:
    its failure must not reopen, its success must not close; only the trial decides."""
    half = BreakerRecord(
        state=BreakerState.HALF_OPEN, opened_at=0.0, trial_started=40.0, failures=3, trips=1
    )
    now = Now(41.0)
    assert rules.settle_success(half, now, trial=False) == (half, None)
    kwargs: dict[str, Any] = {"critical": False, "reason": "late", "fail_max": 3}
    assert rules.settle_failure(half, now, trial=False, **kwargs) == (half, None)
    closed, change = rules.settle_success(half, now, trial=True)
    assert closed.state is BreakerState.CLOSED and change is not None
    reopened, _ = rules.settle_failure(half, now, trial=True, **kwargs)
    assert reopened.state is BreakerState.OPEN and reopened.opened_at == 41.0


def test_trips_count_entries_into_open_not_failures_while_open() -> None:
    now = Now(10.0)
    kwargs: dict[str, Any] = {"reason": "r", "trial": False, "fail_max": 1}
    opened, _ = rules.settle_failure(BreakerRecord(), now, critical=False, **kwargs)
    assert opened.trips == 1
    latched, change = rules.settle_failure(opened, now, critical=True, **kwargs)
    assert latched.trips == 1 and latched.latched  # already open: no new trip
    assert change == rules.Change(BreakerState.OPEN, BreakerState.OPEN)


def test_records_and_snapshots_are_frozen() -> None:
    """A record handed to a listener or kept as "the last one read" cannot change under us."""
    rec = BreakerRecord()
    with pytest.raises(dataclasses.FrozenInstanceError):
        rec.failures = 3  # type: ignore[misc]
    snap = rules.snapshot("x", rec, 30.0)
    with pytest.raises(dataclasses.FrozenInstanceError):
        snap.failures = 3  # type: ignore[misc]
    assert hash(rec) == hash(BreakerRecord())


@given(records)
def test_is_quiet_means_closed_with_no_failure_counted(rec: BreakerRecord) -> None:
    quiet = rules.is_quiet(rec)
    assert quiet is (rec.state is BreakerState.CLOSED and rec.failures == 0)
    if quiet:  # nothing to decide: admitted, and a success changes nothing
        assert rules.admit(rec, Now(0.0), reset_timeout=1.0)[1].allowed
        assert rules.settle_success(rec, Now(0.0), trial=False) == (rec, None)


@given(
    started=st.floats(0, 1e9, allow_nan=False),
    reset_timeout=st.floats(0.001, 1e4, allow_nan=False),
)
def test_a_trial_exactly_reset_timeout_old_is_stale_like_an_open_period(
    started: float, reset_timeout: float
) -> None:
    """The same boundary for both waits: due at ``elapsed >= reset_timeout``."""
    now = Now(started + reset_timeout)
    elapsed = now.wall - started
    half = BreakerRecord(state=BreakerState.HALF_OPEN, opened_at=0.0, trial_started=started)
    opened = BreakerRecord(state=BreakerState.OPEN, opened_at=started)
    half_due = rules.admit(half, now, reset_timeout=reset_timeout)[1].trial
    open_due = rules.admit(opened, now, reset_timeout=reset_timeout)[1].trial
    assert half_due == open_due == (elapsed >= reset_timeout)
    mono = BreakerRecord(state=BreakerState.HALF_OPEN, trial_started=0.0, trial_mono=5.0)
    assert rules.admit(mono, Now(-1e6, 5.0 + 30.0), reset_timeout=30.0)[1].trial
    assert not rules.admit(mono, Now(1e6, 5.0 + 29.5), reset_timeout=30.0)[1].trial


@given(
    opened_at=st.floats(0, 1e9, allow_nan=False),
    later=st.floats(0, 1e6, allow_nan=False),
    mono=st.none() | st.floats(-1e6, 1e6, allow_nan=False),
)
def test_a_shared_records_retry_at_is_opened_at_plus_reset_timeout(
    opened_at: float, later: float, mono: float | None
) -> None:
    """A record without monotonic readings (a file, Redis) reports ``opened_at +
    reset_timeout`` whenever its ``opened_at`` is possible, overdue or not, whatever this
    process's monotonic clock reads."""
    rec = BreakerRecord(state=BreakerState.OPEN, opened_at=opened_at, trips=1)
    snap = rules.snapshot("x", rec, 30.0, Now(opened_at + later, mono))
    assert snap.retry_at == opened_at + 30.0


# --- the rules against a reference model -------------------------------------------------------


class Model:
    """What a breaker should do, written as plainly as possible (wall clock only)."""

    def __init__(self, fail_max: int, reset_timeout: float) -> None:
        self.fail_max, self.reset_timeout = fail_max, reset_timeout
        self.state, self.failures, self.latched = "closed", 0, False
        self.opened_at = 0.0
        self.trial_at: float | None = None
        self.trips = 0

    def _open(self, now: float) -> None:
        self.trips += self.state != "open"
        self.state, self.opened_at, self.trial_at = "open", now, None

    def _due(self, since: float | None, now: float) -> bool:
        return since is None or now < since or now - since >= self.reset_timeout

    def admit(self, now: float) -> tuple[bool, bool]:
        if self.state == "closed":
            return True, False
        if self.latched:
            return False, False
        since = self.opened_at if self.state == "open" else self.trial_at
        if self._due(since, now):
            self.state, self.trial_at = "half-open", now
            return True, True
        return False, False

    def outcome(self, kind: str, now: float, trial: bool) -> None:
        if kind == "critical":
            self._open(now)
            self.latched = True
        elif kind == "transient":
            if self.state == "closed":
                self.failures += 1
                if self.failures >= self.fail_max:
                    self._open(now)
            elif self.state == "half-open" and trial:
                self._open(now)
        elif kind == "success":
            if self.state == "half-open" and trial and not self.latched:
                self.state, self.failures, self.trial_at = "closed", 0, None
            elif self.state == "closed":
                self.failures = 0

    def release(self, token: float | None) -> None:
        if self.state == "half-open" and not self.latched and self.trial_at == token:
            self.state, self.trial_at = "open", None

    def reset(self) -> None:
        self.state, self.failures, self.latched, self.trial_at = "closed", 0, False, None


class RulesMachine(RuleBasedStateMachine):
    """Admit, settle, release and reset through the pure rules, with the wall clock moving
    forward and stepping back; the record must always agree with the model."""

    def __init__(self) -> None:
        super().__init__()
        self.wall = 1_000_000.0
        self.rec = BreakerRecord()
        self.model = Model(3, 10.0)
        self.in_flight: list[tuple[bool, float | None]] = []

    @rule()
    def admit(self) -> None:
        self.rec, admission = rules.admit(self.rec, Now(self.wall), reset_timeout=10.0)
        allowed, trial = self.model.admit(self.wall)
        assert (admission.allowed, admission.trial) == (allowed, trial)
        if allowed:
            self.in_flight.append((trial, admission.token))

    @precondition(lambda self: self.in_flight)
    @rule(kind=st.sampled_from(["success", "transient", "critical", "none"]), pick=st.integers(0))
    def settle(self, kind: str, pick: int) -> None:
        trial, token = self.in_flight.pop(pick % len(self.in_flight))
        now = Now(self.wall)
        if kind == "success":
            self.rec, _ = rules.settle_success(self.rec, now, trial=trial)
        elif kind == "none":
            self.rec, _ = rules.release_trial(self.rec, now, token=token)
            self.model.release(token)
            return
        else:
            self.rec, _ = rules.settle_failure(
                self.rec, now, critical=kind == "critical", reason=kind, trial=trial, fail_max=3
            )
        self.model.outcome(kind, self.wall, trial)

    @rule(seconds=st.floats(0, 15, allow_nan=False))
    def elapse(self, seconds: float) -> None:
        self.wall += seconds

    @rule(seconds=st.floats(-7200, -0.001, allow_nan=False))
    def step_back(self, seconds: float) -> None:
        self.wall += seconds

    @rule()
    def reset(self) -> None:
        self.rec, _ = rules.reset(self.rec, Now(self.wall))
        self.model.reset()

    @invariant()
    def agree(self) -> None:
        assert self.rec.state.value == self.model.state
        assert self.rec.latched == self.model.latched
        assert self.rec.trips == self.model.trips
        if self.model.state == "closed":
            assert self.rec.failures == self.model.failures
        if self.model.state == "half-open":
            assert self.rec.trial_started == self.model.trial_at
        assert BreakerRecord.from_json(self.rec.to_json(), "x") == self.rec


TestRulesMachine = RulesMachine.TestCase
TestRulesMachine.settings = settings(max_examples=150, stateful_step_count=40, deadline=None)
