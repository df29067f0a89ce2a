"""One attempt at an order-path call, decided once and run twice.

:func:`decide_attempt` is a generator: it follows the :class:`~._orders.Settlement` of one
call and *yields* the I/O each step needs (a :class:`Request` to the exchange, a
:class:`Spend` from the address budget) instead of doing it. The shells in ``_exchange.py``
run it: :class:`SafeExchange` without ``await``, :class:`AsyncSafeExchange` with it (budget
waits on the loop, SDK requests in a worker thread); :class:`Driven` hands each result (or
error) back into the generator. So every rule of an attempt is written once, and the two
modes cannot drift.
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Callable, Generator, Iterator
from dataclasses import dataclass
from typing import Any

from resilient_trading._client import RetryLike
from resilient_trading._errors import ResilienceError
from resilient_trading.presets.hyperliquid._address import AddressBudget
from resilient_trading.presets.hyperliquid._address_rules import Kind, send_kind
from resilient_trading.presets.hyperliquid._calls import Call
from resilient_trading.presets.hyperliquid._orders import Finish, Item, Lookup, Settlement
from resilient_trading.presets.hyperliquid._weights import info_weight

__all__ = ["IO", "Driven", "Request", "Spend", "Steps", "decide_attempt", "unknown_noted"]

#: What one lookup weighs, and the operation its errors name.
LOOKUP_WEIGHT = info_weight("orderStatus")
READ = "Info.query_order"


@dataclass(frozen=True)
class Request:
    """One SDK request an attempt needs: ``weight`` taken from the limiter, ``request`` made
    (in a worker thread under asyncio), a failure classified; retried by ``retry`` if any."""

    weight: int
    request: Callable[[], Any]
    operation: str
    retry: RetryLike | None = None


@dataclass(frozen=True)
class Spend:
    """Actions an attempt takes from the address budget before it sends."""

    budget: AddressBudget
    count: int
    kind: Kind


IO = Request | Spend
#: One attempt, decided (:func:`decide_attempt`): yields I/O, returns the finish.
Steps = Generator[IO, Any, Finish]


class Driven:
    """An attempt being run by a shell: each I/O's result is sent back into the decision,
    each error thrown into it (which settles it or raises it)."""

    def __init__(self, steps: Steps) -> None:
        self._steps = steps
        self._reply: Any = None
        self._error: Exception | None = None

    def next(self) -> IO | Finish:
        """The next I/O to run, or the attempt's finish."""
        error, self._error = self._error, None
        try:
            return self._steps.throw(error) if error is not None else self._steps.send(self._reply)
        except StopIteration as stop:
            finish: Finish = stop.value
            return finish

    def reply(self, value: Any) -> None:
        self._reply = value

    def fail(self, error: Exception) -> None:
        self._error = error


@contextlib.contextmanager
def unknown_noted(settlement: Settlement) -> Iterator[None]:
    """A :class:`ResilienceError` leaving the block names the items whose outcome is still
    unknown (``unknown_cloids`` and a note): the caller must look them up before resending."""
    try:
        yield
    except ResilienceError as error:
        refs = settlement.unknown_refs()
        if refs:
            error.unknown_cloids = tuple(refs)
            note = (
                f"outcome unknown for {', '.join(refs)}: look them up (orderStatus) before "
                "sending them again"
            )
            add_note = getattr(error, "add_note", None)  # Python 3.11+
            if add_note is not None and note not in getattr(error, "__notes__", ()):
                add_note(note)
        raise


def decide_attempt(
    call: Call,
    *,
    lookup: Callable[[Item], Any],
    reads: RetryLike | None,
    budget: AddressBudget | None,
    refused: Callable[[ResilienceError], None],
) -> Steps:
    """One attempt at ``call``, decided: the I/O it needs is yielded for a shell to run,
    which sends back each result or throws in each error; returns the :class:`~._orders.Finish`,
    or raises what ends the attempt. ``lookup`` asks the exchange about one item (retried by
    ``reads``); ``refused`` hears the address budget's refusals."""
    settlement = call.settlement
    settlement.begin_attempt()
    while True:
        io = settlement.next()  # raises what ends this attempt
        if isinstance(io, Finish):
            return io
        if isinstance(io, Lookup):
            answer = yield Request(LOOKUP_WEIGHT, functools.partial(lookup, io.item), READ, reads)
            settlement.looked_up(io.item, answer)
            continue
        if budget is not None:
            requests = [item.request for item in io.items]
            kind = send_kind(settlement.operation, settlement.answer_type, requests)
            yield Spend(budget, len(io.items), kind)
        send = functools.partial(call.send, io.items)
        try:
            sent = yield Request(call.weight(io.items), send, settlement.operation)
        except ResilienceError as err:
            settlement.failed(io.items, err)  # looked up next, or raised by next()
            continue
        try:
            settlement.sent(io.items, sent)
        except ResilienceError as err:
            refused(err)
            raise
