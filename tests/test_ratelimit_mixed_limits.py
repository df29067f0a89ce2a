"""Sharers of one key with different limits (review item 10, mixed_limits2.py).

Property: a limit new to a key counts what the key admitted already within its window (as
far back as the key's longest limit remembers), so no window of any sharer's limit holds
more than its budget. Before,
the new limit's ring started empty: A (40 per 10 s) spent 30, then B (20 per 10 s) got 10
more, 40 in B's window while B's status said 10/20.
"""

from __future__ import annotations

import itertools
import tempfile
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from resilient_trading import ManualClock, RateLimit, RateLimiter

pytestmark = pytest.mark.timeout(120)

_keys = itertools.count()


def _drain(limiter: RateLimiter) -> int:
    n = 0
    while n < 200 and limiter.try_acquire(1):
        n += 1
    return n


@settings(max_examples=25, deadline=None)
@given(
    a_budget=st.integers(min_value=1, max_value=40),
    b_budget=st.integers(min_value=1, max_value=40),
    a_period=st.sampled_from([1.0, 5.0, 10.0]),
    b_period=st.sampled_from([1.0, 5.0, 10.0]),
    spent=st.integers(min_value=0, max_value=40),
    gap=st.sampled_from([0.0, 0.4, 2.0]),
)
def test_a_limit_new_to_a_file_budget_counts_what_was_admitted(
    a_budget: int, b_budget: int, a_period: float, b_period: float, spent: int, gap: float
) -> None:
    spent = min(spent, a_budget)
    clock = ManualClock(start=1000.0)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "budget"
        a = RateLimiter(RateLimit(a_budget, a_period), state_path=path, clock=clock)
        for _ in range(spent):
            assert a.try_acquire(1)
        clock.advance(gap)
        b = RateLimiter(RateLimit(b_budget, b_period), state_path=path, clock=clock)
        # the key remembers as far back as its longest limit: A's admissions are still
        # known to B while they are inside both windows (see the how-to)
        in_window = spent if gap < min(a_period, b_period) else 0
        admitted = _drain(b)
        assert admitted <= max(0, b_budget - in_window)  # A's spending counts for B
        a.close()
        b.close()


@pytest.mark.parametrize("b_period", [10.0, 5.0, 20.0])
def test_a_limit_new_to_a_redis_budget_counts_what_was_admitted(
    redis_url: str, b_period: float
) -> None:
    key = f"mixed{next(_keys)}"
    a = RateLimiter(RateLimit(40, 10.0), redis_url=redis_url, key=key)
    for _ in range(30):
        assert a.try_acquire(1)
    b = RateLimiter(RateLimit(20, b_period), redis_url=redis_url, key=key)
    assert _drain(b) == 0  # 30 already in B's window (all just now)
    a.close()
    b.close()
