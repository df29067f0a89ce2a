"""The Redis Lua script mirrors the Python rule: the same operations, the same decisions.

Windows are long (seconds) so the few milliseconds between the two calls of a step never
change a decision: whatever differs is a difference between the script and the rule (waits
may differ by one bucket width: the two clocks put bucket edges at different phases).
"""

from __future__ import annotations

import itertools

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from resilient_trading import RateLimit, RateLimiter

pytestmark = pytest.mark.timeout(120)

LIMITS = (RateLimit(30, 20.0), RateLimit(12, 10.0))
WIDTH = max(lim.period for lim in LIMITS) / 100  # the widest bucket, in seconds
_keys = itertools.count()

op = st.one_of(
    st.tuples(st.just("try"), st.integers(1, 12)),
    st.tuples(st.just("charge"), st.integers(0, 6)),
    st.tuples(st.just("late"), st.integers(1, 12)),  # acquire with a short timeout
)


@settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(ops=st.lists(op, min_size=1, max_size=25))
def test_script_and_rule_decide_alike(redis_url: str, ops: list[tuple[str, int]]) -> None:
    local = RateLimiter(*LIMITS)
    shared = RateLimiter(*LIMITS, redis_url=redis_url, key=f"mirror-{next(_keys)}")
    try:
        for name, weight in ops:
            if name == "try":
                assert local.try_acquire(weight) == shared.try_acquire(weight), (name, weight)
            elif name == "charge":
                local.charge(weight)
                shared.charge(weight)
            else:
                outcomes = []
                for limiter in (local, shared):
                    try:
                        outcomes.append(round(limiter.acquire(weight, timeout=0.05), 1))
                    except Exception as exc:  # the refusal and its retry_after must agree
                        outcomes.append(round(getattr(exc, "retry_after", -1.0), 1))
                # bucket edges fall at different phases on the two clocks: one width apart at most
                assert outcomes[0] == pytest.approx(outcomes[1], abs=WIDTH + 0.05), (name, weight)
            a, b = local.status(), shared.status()
            assert [w.used for w in a.windows] == [w.used for w in b.windows]
            assert a.queued == b.queued and a.reserved == b.reserved
    finally:
        local.close()
        shared.close()
