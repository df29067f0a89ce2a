"""Cancelled waiters hold nobody back (review item 8, cancel_pace.py).

Property: giving back reservations moves the pacing cursor back by the pace each one took,
so after every waiter queued since some moment gave up, a newcomer waits no longer than it
would have at that moment; windows still hold (pacing only ever delays). Checked on the pure
rule and, end to end, on the Redis script (the same rule on the server).
"""

from __future__ import annotations

import asyncio
import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from resilient_trading import RateLimit, RateLimiter
from resilient_trading import _limiter_rules as rules


def _contended(budget: int) -> tuple[rules.LimiterState, float]:
    """A budget spent at 0 and one request that waited for the window: contended at 1 s."""
    state = rules.LimiterState(rings=[rules.Ring(budget, 1000, 10)])
    rules.apply(state, rules.plan(state, 0.0, budget))
    waited = rules.plan(state, 0.0, 1)
    rules.apply(state, waited)
    now = waited.at_ms / 1000
    rules.trim(state, now)
    return state, now


@settings(max_examples=40, deadline=None)
@given(
    budget=st.integers(min_value=2, max_value=20),
    waiters=st.integers(min_value=1, max_value=19),
    order=st.randoms(use_true_random=False),
)
def test_waiters_that_gave_up_move_the_pacing_cursor_back(
    budget: int, waiters: int, order: object
) -> None:
    import random

    assert isinstance(order, random.Random)
    state, now = _contended(budget)
    reference, _ = _contended(budget)  # the same budget where nobody queued and gave up
    decisions = []
    for _ in range(min(waiters, budget - 1)):
        d = rules.plan(state, now, 1, rules.new_token())
        rules.apply(state, d)
        decisions.append(d)
        if d.wait == 0:
            rules.apply(reference, d)
    order.shuffle(decisions)
    for d in decisions:
        if d.wait > 0:
            assert rules.release(state, d.at_ms, d.weight, d.token)
    after = rules.plan(state, now, 1)
    # the newcomer waits no longer than if those waiters had never come
    assert after.wait <= rules.plan(reference, now, 1).wait + 1e-9
    # and never over budget: what is admitted plus the newcomer fits the window
    assert all(r.fits_at(after.exact_ms, 1) for r in state.rings)


@pytest.mark.timeout(60)
def test_a_fresh_acquire_after_cancelled_waiters_on_redis_is_not_held_back(redis_url: str) -> None:
    async def main() -> float:
        lim = RateLimiter(RateLimit(10, 2.0), redis_url=redis_url, key="cpace")
        lim.acquire(10)
        lim.acquire(1)  # waited for the window: the budget is paced, 200 ms a unit
        tasks = [asyncio.create_task(lim.acquire_async(1)) for _ in range(9)]
        deadline = time.monotonic() + 10.0
        # wait until most are queued (paced 200 ms apart over 1.8 s); on a loaded machine the
        # first may already be admitted when we look: that is fine, they are not cancelled
        while lim.status().queued < 5:
            assert time.monotonic() < deadline, "the waiters never queued"
            await asyncio.sleep(0.005)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        waited = await lim.acquire_async(1)
        lim.close()
        return waited

    # nothing ahead, most of the budget free: at most one pace step (200 ms), not the whole
    # queue the cancelled waiters had reserved (1.6 s before the fix)
    assert asyncio.run(main()) < 0.35
