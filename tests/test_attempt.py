"""One order-path attempt, decided once (``_attempt.decide_attempt``), run by two shells.

The attempt is a generator of I/O; :class:`SafeExchange` runs it without ``await`` and
:class:`AsyncSafeExchange` with it. These tests drive both shells with the same generators
and require the same replies, errors, weights and finish from each, so the two cannot drift.
The helpers the order paths share (``_cloids``) are checked against the SDK they mirror.
"""

from __future__ import annotations

import asyncio
import functools
import inspect
from collections.abc import Generator
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from resilient_trading import NetworkError, RateLimit, RateLimiter, ResilienceError, classify
from resilient_trading.presets.hyperliquid import AsyncSafeExchange, SafeExchange
from resilient_trading.presets.hyperliquid._attempt import IO, Request
from resilient_trading.presets.hyperliquid._cloids import (
    as_cloid,
    check_unique,
    order_request,
    raw_cloid,
)
from resilient_trading.presets.hyperliquid._orders import Finish

MODES = ["sync", "async"]
#: What a request does: answer this int, or raise this exception (a lost answer).
Outcome = int | type[Exception]
outcomes = st.lists(
    st.one_of(st.integers(0, 99), st.sampled_from([ConnectionError, TimeoutError])), max_size=6
)


class _Sdk:
    """A stand-in for the SDK's ``Exchange``: the shells under test never call it."""

    info = None


def _run(mode: str, steps: Generator[IO, Any, Finish]) -> tuple[Finish, int]:
    """Run ``steps`` through the ``mode`` shell; its finish and the weight it charged."""
    limiter = RateLimiter(RateLimit(10_000, 60.0))
    if mode == "sync":
        finish = SafeExchange(_Sdk(), limiter)._run(steps)
    else:
        finish = asyncio.run(AsyncSafeExchange(_Sdk(), limiter)._run(steps))
    return finish, limiter.status().windows[0].used


def _request(outcome: Outcome) -> Any:
    if isinstance(outcome, int):
        return outcome
    raise outcome("the answer was lost")


def _recording(plan: list[Outcome], *, catch: bool = True) -> Generator[IO, Any, Finish]:
    """Asks for one request per outcome (weight ``i + 1``); records what comes back."""
    seen: list[tuple[str, Any]] = []
    for i, outcome in enumerate(plan):
        try:
            answer = yield Request(i + 1, functools.partial(_request, outcome), f"op{i}")
        except ResilienceError as err:
            if not catch:
                raise
            seen.append(("error", (type(err).__name__, type(err.__cause__))))
            continue
        seen.append(("answer", answer))
    return Finish(seen)


@pytest.mark.parametrize("mode", MODES)
@settings(max_examples=25, deadline=None)
@given(plan=outcomes)
def test_each_result_or_classified_error_is_handed_back_in_order(
    mode: str, plan: list[Outcome]
) -> None:
    """Both shells send each answer back into the decision and throw each failure in,
    classified and chained to what was raised; every request's weight is charged once."""
    finish, used = _run(mode, _recording(plan))
    expected = [
        ("answer", o) if isinstance(o, int) else ("error", (type(classify(o())).__name__, o))
        for o in plan
    ]
    assert finish.answer == expected
    assert used == sum(range(1, len(plan) + 1))


@pytest.mark.parametrize("mode", MODES)
def test_an_error_the_decision_does_not_settle_ends_the_run(mode: str) -> None:
    """What the decision re-raises leaves the shell as it is (nothing swallowed)."""
    with pytest.raises(NetworkError) as caught:
        _run(mode, _recording([1, ConnectionError, 2], catch=False))
    assert isinstance(caught.value.__cause__, ConnectionError)


@given(st.one_of(st.integers(), st.text(max_size=5)), st.none() | st.builds(ValueError))
def test_a_finish_returns_its_answer_or_raises_its_error(
    answer: Any, error: ValueError | None
) -> None:
    refusal = None if error is None else ResilienceError(str(error))
    finish = Finish(answer, refusal)
    if refusal is None:
        assert finish.result() == answer
    else:
        with pytest.raises(ResilienceError) as caught:
            finish.result()
        assert caught.value is refusal


def test_an_order_request_names_the_sdks_fields_in_exchange_orders_order() -> None:
    """``order``/``modify_order`` pass their arguments positionally to ``order_request``:
    the SDK's ``Exchange.order`` must take them in that order, ``OrderRequest`` by those keys."""
    from hyperliquid.exchange import Exchange
    from hyperliquid.utils.signing import OrderRequest

    params = list(inspect.signature(Exchange.order).parameters)[1:8]
    request = order_request(*params)
    assert list(request.values()) == params
    assert set(request) == set(OrderRequest.__annotations__)
    assert request["coin"] == "name"  # the SDK's one renamed argument
    with pytest.raises(ValueError):
        order_request(*params[:-1])  # a missing field is an error, never a short request


@given(st.lists(st.none() | st.sampled_from(["0xa", "0xb", "0xc", "0xd"]), max_size=6))
def test_one_cloid_twice_in_a_call_is_refused_before_sending(cloids: list[str | None]) -> None:
    named = [c for c in cloids if c is not None]
    if len(set(named)) == len(named):
        check_unique("Exchange.bulk_orders", cloids)
    else:
        with pytest.raises(ValueError, match="appears twice"):
            check_unique("Exchange.bulk_orders", cloids)


@given(st.from_regex(r"0x[0-9a-f]{32}", fullmatch=True))
def test_a_cloid_read_from_its_raw_form_gives_that_form_back(raw: str) -> None:
    assert raw_cloid(as_cloid(raw, "cloid")) == raw
    assert raw_cloid(None) is None
