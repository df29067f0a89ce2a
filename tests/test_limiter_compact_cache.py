"""The file budget's hot path: a ring re-packed at its ends only, a file not re-read when it
holds exactly what this process wrote, and still the same crash safety.

Properties: the incremental packing of a ring always equals packing it afresh, whatever the
ring went through (adds at the end and in the middle, releases, trims, a clock stepped back,
a deque replaced); ``FileState.transact_cached`` hands the very value it stored while nobody
else wrote, sees every other writer's value, and after a failed write reads the file again;
``kill -9`` of a process hammering a file budget loses at most its in-flight admission and
never lets one more in.
"""

from __future__ import annotations

import errno
import os
import random
import signal
import subprocess
import sys
import time
from collections import deque
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

from resilient_trading import RateLimit, RateLimiter
from resilient_trading import _limiter_compact as compact
from resilient_trading import _limiter_rules as rules
from resilient_trading._errors import CriticalError
from resilient_trading.backends import FileState

pytestmark = pytest.mark.timeout(120)


def fresh_copy(state: rules.LimiterState) -> rules.LimiterState:
    """The same state with no packing cache (rings rebuilt from their buckets)."""
    rings = []
    for ring in state.rings:
        copy = rules.Ring(ring.budget, ring.period_ms, ring.width_ms, total=ring.total)
        copy.buckets = deque([list(b) for b in ring.buckets])
        rings.append(copy)
    return rules.LimiterState(
        rings=rings,
        queue=[list(q) for q in state.queue],
        paused_until_ms=state.paused_until_ms,
        last_ms=state.last_ms,
        next_ms=state.next_ms,
        contended_until_ms=state.contended_until_ms,
    )


class PackingMachine(RuleBasedStateMachine):
    """A two-ring state driven through every way the rule changes a ring, encoded after
    each step: the incremental form must be byte for byte the full one."""

    def __init__(self) -> None:
        super().__init__()
        self.state = rules.LimiterState(rings=[rules.Ring(40, 1000, 10), rules.Ring(8, 100, 1)])
        self.now = 1000.0
        self.reserved: list[rules.Decision] = []
        self.text = compact.encode(self.state)

    @rule(seconds=st.floats(0.0, 0.4))
    def time_passes(self, seconds: float) -> None:
        self.now += seconds
        rules.trim(self.state, self.now)

    @rule(weight=st.integers(1, 8))
    def reserve(self, weight: int) -> None:
        rules.trim(self.state, self.now)
        decision = rules.plan(self.state, self.now, weight, rules.new_token())
        rules.apply(self.state, decision)
        if decision.wait > 0:
            self.reserved.append(decision)

    @rule(weight=st.integers(0, 5), back=st.floats(0.0, 0.5))
    def charge_earlier(self, weight: int, back: float) -> None:
        """A bucket added before the last one (the middle of the ring)."""
        for ring in self.state.rings:
            ring.add(rules.ceil_ms(self.now - back), weight)

    @rule()
    def release(self) -> None:
        if self.reserved:
            d = self.reserved.pop(0)
            rules.release(self.state, d.at_ms, d.weight, d.token)

    @rule(seconds=st.floats(0.001, 0.3))
    def clock_steps_back(self, seconds: float) -> None:
        self.now -= seconds
        rules.trim(self.state, self.now)

    @rule(weight=st.integers(1, 3))
    def append_directly(self, weight: int) -> None:
        ring = self.state.rings[0]
        last = ring.buckets[-1][0] if ring.buckets else 0
        ring.buckets.append([last + 1, weight])
        ring.total += weight

    @rule()
    def replace_the_deque(self) -> None:
        ring = self.state.rings[1]
        ring.buckets = deque([list(b) for b in ring.buckets])

    @rule()
    def decode_again(self) -> None:
        self.state = compact.decode(compact.encode(self.state))

    @invariant()
    def incremental_equals_full(self) -> None:
        text = compact.encode(self.state)
        assert text == compact.encode(fresh_copy(self.state))
        assert compact.decode(text) == self.state


PackingMachine.TestCase.settings = settings(max_examples=60, stateful_step_count=40, deadline=None)
TestPacking = PackingMachine.TestCase


@settings(max_examples=40, deadline=None)
@given(
    steps=st.lists(
        st.tuples(st.sampled_from(["mine", "other"]), st.integers(0, 3000)),
        min_size=1,
        max_size=12,
    )
)
def test_the_cached_view_is_the_file_byte_for_byte(
    tmp_path_factory: pytest.TempPathFactory, steps: list[tuple[str, int]]
) -> None:
    """After each cached write the remembered bytes are the file's bytes; another writer's
    value is always seen (never the remembered one)."""
    path = tmp_path_factory.mktemp("cached") / "s.json"
    mine, other = FileState(path), FileState(path)
    expected: Any = None

    def dumps(value: Any) -> bytes:
        return b'"%s"' % value.encode("ascii")

    for who, size in steps:
        value = "v" * size + who

        def put(old: Any, now: float, v: str = value) -> tuple[str, Any]:
            return v, old

        if who == "mine":
            seen = mine.transact_cached(put, dumps=dumps)
            assert mine._seen is not None and mine._seen[1] == path.read_bytes()
        else:
            seen = other.transact(put)
        assert seen == expected
        expected = value
    assert mine.transact_cached(lambda old, now: (old, old), dumps=dumps) == expected
    mine.close()
    other.close()


def test_a_failed_cached_write_keeps_the_previous_value_and_reads_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "budget.json"
    limiter = RateLimiter(RateLimit(10, 30.0), state_path=path)
    assert limiter.try_acquire(4)
    real = os.pwrite

    def torn(fd: int, data: Any, offset: int) -> int:
        real(fd, bytes(data[: len(data) // 2]), offset)
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(os, "pwrite", torn)
    with pytest.raises(CriticalError, match="previous value is kept"):
        limiter.try_acquire(3)
    monkeypatch.undo()
    assert limiter.status().windows[0].used == 4  # the failed admission counted nowhere
    assert limiter.try_acquire(6)
    assert not limiter.try_acquire(1)
    assert compact.parse(FileState(path).read()).rings[0].total == 10


_HAMMER = """
import sys
from resilient_trading import RateLimit, RateLimiter
limiter = RateLimiter(RateLimit(10**9, 300.0), RateLimit(10**9, 1.0), state_path=sys.argv[1])
print("ready", flush=True)
while True:
    limiter.acquire(1)
    print(1, flush=True)
"""


def test_kill_9_loses_at_most_the_in_flight_admission(tmp_path: Path) -> None:
    """A process admitting as fast as it can, killed at random moments, eight times over:
    the file always reads, counts every acknowledged admission and at most one more."""
    path = tmp_path / "budget.json"
    rng = random.Random(13)
    acknowledged = 0
    for _ in range(8):
        proc = subprocess.Popen(
            [sys.executable, "-c", _HAMMER, str(path)], stdout=subprocess.PIPE, text=True
        )
        assert proc.stdout is not None
        assert proc.stdout.readline().strip() == "ready"
        time.sleep(rng.uniform(0.01, 0.08))  # a random moment, not a wait for a condition
        proc.send_signal(signal.SIGKILL)
        acknowledged += proc.stdout.read().split().count("1")
        proc.wait()
        counted = compact.parse(FileState(path).read()).rings[0].total
        assert acknowledged <= counted <= acknowledged + 1
        acknowledged = counted  # the in-flight one, if it was written, counts from now on
