"""The file budget's compact form: exact round trip, every bad record named, no stale cache."""

from __future__ import annotations

import base64
import struct
from collections import deque
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from resilient_trading import RateLimit, RateLimiter
from resilient_trading import _limiter_compact as compact
from resilient_trading import _limiter_rules as rules
from resilient_trading._clock import ManualClock
from resilient_trading.backends import FileState

BIG = 2**62
ints = st.integers(0, BIG)


@st.composite
def rings(draw: st.DrawFn) -> rules.Ring:
    ring = rules.Ring(
        draw(st.integers(1, BIG)), draw(st.integers(1, BIG)), draw(st.integers(1, BIG))
    )
    index = sorted(draw(st.sets(ints, max_size=20)))
    weight = draw(st.lists(st.integers(0, 2**40), min_size=len(index), max_size=len(index)))
    ring.buckets = deque([i, w] for i, w in zip(index, weight, strict=True))
    ring.total = sum(weight)
    return ring


@st.composite
def states(draw: st.DrawFn) -> rules.LimiterState:
    queue = sorted(draw(st.lists(st.lists(ints, min_size=3, max_size=3), max_size=5)))
    return rules.LimiterState(
        rings=draw(st.lists(rings(), max_size=3)),
        queue=queue,
        paused_until_ms=draw(ints),
        last_ms=draw(ints),
        next_ms=draw(st.floats(0, BIG)),
        contended_until_ms=draw(ints),
    )


@given(states())
def test_the_compact_form_round_trips_exactly(state: rules.LimiterState) -> None:
    text = compact.encode(state)
    assert text.startswith(compact.PREFIX) and text.isascii()
    back = compact.parse(text)
    assert back == state
    assert compact.encode(back) == text


def test_the_json_form_of_older_versions_is_still_read() -> None:
    state = rules.LimiterState(rings=[rules.ring_for(10, 1.0, 0.0)], queue=[[5, 2, 7]])
    state.rings[0].add(5, 2)
    assert compact.parse(rules.to_json(state)) == state


def _packed(state: rules.LimiterState) -> bytes:
    return base64.b64decode(compact.encode(state)[len(compact.PREFIX) :])


def _text(raw: bytes) -> str:
    return compact.PREFIX + base64.b64encode(raw).decode()


def _one_ring() -> rules.LimiterState:
    state = rules.LimiterState(rings=[rules.Ring(10, 1000, 10)], queue=[[9, 1, 3]])
    state.rings[0].add(5, 2)
    state.rings[0].add(25, 3)
    return state


HEAD = struct.calcsize("<qqqdqq")


@pytest.mark.parametrize(
    ("make", "where"),
    [
        (lambda raw: "v3:" + _text(raw)[4:], "state"),  # another prefix
        (lambda raw: compact.PREFIX + "not base64!", "state"),
        (lambda raw: _text(raw[: HEAD - 1]), "state"),  # header cut short
        (lambda raw: _text(raw[:-8]), "rings[0].buckets"),  # buckets cut short
        (lambda raw: _text(raw[: HEAD + 24 + 16]), "rings[0]"),  # ring header cut short
        (lambda raw: _text(raw[: HEAD + 8]), "queue"),  # queue cut short
        (lambda raw: _text(raw + b"\0" * 8), "state"),  # trailing bytes
        (lambda raw: _text(struct.pack("<q", -1) + raw[8:]), "paused_until"),
        (lambda raw: _text(raw[:8] + struct.pack("<q", -1) + raw[16:]), "last"),
        (lambda raw: _text(raw[:16] + struct.pack("<q", -1) + raw[24:]), "contended"),
        (lambda raw: _text(raw[:24] + struct.pack("<d", float("nan")) + raw[32:]), "next"),
        (lambda raw: _text(raw[:24] + struct.pack("<d", -1.0) + raw[32:]), "next"),
        (lambda raw: _text(raw[:24] + struct.pack("<d", 2.0**63) + raw[32:]), "next"),
        (lambda raw: _text(raw[:32] + struct.pack("<q", -1) + raw[40:]), "queue"),
        (lambda raw: _text(raw[:32] + struct.pack("<q", 9) + raw[40:]), "queue"),
        (lambda raw: _text(raw[:40] + struct.pack("<q", 2) + raw[48:]), "rings[1]"),
        (lambda raw: _text(raw[: HEAD + 24] + struct.pack("<q", 0) + raw[HEAD + 32 :]), "rings[0]"),
        (lambda raw: _text(raw[: HEAD + 32] + struct.pack("<q", 0) + raw[HEAD + 40 :]), "rings[0]"),
        (lambda raw: _text(raw[: HEAD + 40] + struct.pack("<q", 0) + raw[HEAD + 48 :]), "rings[0]"),
        (
            lambda raw: _text(raw[: HEAD + 40] + struct.pack("<q", 2**63 - 1) + raw[HEAD + 48 :]),
            "rings[0]",
        ),
        (
            lambda raw: _text(raw[: HEAD + 48] + struct.pack("<q", 3) + raw[HEAD + 56 :]),
            "rings[0].buckets",
        ),
        (
            lambda raw: _text(raw[: HEAD + 72] + struct.pack("<q", 0) + raw[HEAD + 80 :]),
            "rings[0].index",
        ),
        (
            lambda raw: _text(raw[: HEAD + 72] + struct.pack("<q", 1) + raw[HEAD + 80 :]),
            "rings[0].index",
        ),
        (
            lambda raw: _text(raw[: HEAD + 80] + struct.pack("<q", -2) + raw[HEAD + 88 :]),
            "rings[0].buckets",
        ),
    ],
)
def test_a_bad_record_names_its_field(make: object, where: str) -> None:
    raw = _packed(_one_ring())
    text = make(raw)  # type: ignore[operator]
    with pytest.raises(rules.BadState) as info:
        compact.parse(text)
    assert info.value.where == where


def test_an_unsorted_queue_is_read_sorted() -> None:
    state = _one_ring()
    state.queue = [[9, 1, 3], [4, 2, 5]]
    assert compact.decode(compact.encode(state)).queue == [[4, 2, 5], [9, 1, 3]]


def test_a_sharer_never_reuses_its_own_copy_after_another_wrote(tmp_path: Path) -> None:
    """The decode is skipped only while the file holds exactly what this process wrote."""
    path = tmp_path / "budget.json"
    clock = ManualClock(100.0)
    a = RateLimiter(RateLimit(10, 1.0), state_path=path, clock=clock)
    b = RateLimiter(RateLimit(10, 1.0), state_path=path, clock=clock)
    assert a.try_acquire(6)
    assert a.try_acquire(1)  # a's own copy, still current
    assert b.try_acquire(3)
    assert not a.try_acquire(1)  # counts b's 3: 10 used
    assert not a.try_acquire(1)  # after a refusal (nothing stored) too
    clock.advance(1.01)
    assert a.try_acquire(10)
    assert not b.try_acquire(1)
    assert compact.decode(FileState(path).read()).rings[0].total == 10
