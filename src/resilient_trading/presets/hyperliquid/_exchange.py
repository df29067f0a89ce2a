"""The safe wrappers: :class:`SafeExchange` (sync) and :class:`AsyncSafeExchange` (asyncio).

Both run the same decisions: the order paths' arguments (``_calls``), the settlement rules
(``_orders``) and one attempt as a generator of I/O (``_attempt``); their shells differ only
by ``await``. Each attempt looks up what is unknown (``orderStatus``, weight 2), sends what is
pending and settles the answer, until the settlement finishes or ends the attempt with an
error; attempts run inside the retry policy and the breaker. Without a retry policy there is
one attempt (no re-send), and its lookups get a few tries of their own (:data:`_READS`).
Actions other than order paths go through :class:`~resilient_trading.RateLimitedClient` and
are retried only when idempotent or named in ``unsafe_retry``. The async wrapper runs each SDK
request in a worker thread (``asyncio.to_thread``: the SDK is synchronous) and awaits budget
and backoff on the loop; a task cancelled while its request is in flight does not unsend it.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Callable, Iterable, Mapping
from typing import Any, TypeVar

from resilient_trading._client import BreakerLike, RateLimitedClient, RetryLike
from resilient_trading._errors import CriticalError, RateLimitedError, ResilienceError
from resilient_trading._ratelimit import RateLimiter
from resilient_trading._retry import RetryPolicy
from resilient_trading.presets.hyperliquid._address import AddressBudget
from resilient_trading.presets.hyperliquid._attempt import (
    IO,
    Driven,
    Spend,
    Steps,
    decide_attempt,
    unknown_noted,
)
from resilient_trading.presets.hyperliquid._calls import ORDER_PATHS, Call, Decisions
from resilient_trading.presets.hyperliquid._orders import Finish, Item
from resilient_trading.presets.hyperliquid._outcomes import check_response
from resilient_trading.presets.hyperliquid._weights import EXCHANGE_WEIGHTS

__all__ = ["IDEMPOTENT_ACTIONS", "AsyncSafeExchange", "SafeExchange"]

#: Actions that may be retried without asking: sending them twice is sending them once
#: (``update_leverage`` sets a value; ``schedule_cancel`` sets a time).
IDEMPOTENT_ACTIONS = frozenset({"update_leverage", "schedule_cancel"})
#: How lookups are retried when the caller gave no retry policy (reads only).
_READS = RetryPolicy(attempts=3, base_delay=0.1, max_delay=1.0)


_E = TypeVar("_E", bound="_ExchangeBase")


class _ExchangeBase(Decisions, RateLimitedClient[Any]):
    """What the sync and async wrappers share: configuration, retry choice, lookups."""

    def __init__(
        self,
        exchange: Any,
        limiter: RateLimiter,
        *,
        breaker: BreakerLike | None = None,
        retry: RetryLike | None = None,
        info: Any = None,
        unsafe_retry: Iterable[str] = (),
        idempotency_checks: Mapping[str, Callable[..., Any]] | None = None,
        default_pause: float = 10.0,
        acquire_timeout: float | None = None,
        address_budget: AddressBudget | None = None,
    ) -> None:
        super().__init__(
            exchange,
            limiter=limiter,
            weights=EXCHANGE_WEIGHTS,
            default_weight=1,
            breaker=breaker,
            retry=retry,
            response_check=check_response,
            idempotency_checks=idempotency_checks,
            default_pause=default_pause,
            acquire_timeout=acquire_timeout,
        )
        if isinstance(unsafe_retry, str):
            raise TypeError("unsafe_retry must be a collection of method names, not a str")
        self._unsafe_retry = frozenset(unsafe_retry)
        for option, names in (
            ("unsafe_retry", self._unsafe_retry),
            ("idempotency_checks", self._checks),
        ):
            wrong = sorted(set(names) & ORDER_PATHS)
            if wrong:
                raise ValueError(
                    f"{option} cannot name order paths ({', '.join(wrong)}): they are settled "
                    "safely by default (looked up, never sent twice); remove them"
                )
        if isinstance(info, RateLimitedClient):
            info = info.inner  # lookups are charged here once, not again by its wrapper
        self._orders_info = info if info is not None else getattr(exchange, "info", None)
        self._address_budget = address_budget
        if address_budget is not None:  # its userRateLimit syncs: this exchange's, this budget
            if address_budget.info is None:
                address_budget.info = self._orders_info
            if address_budget.limiter is None:
                address_budget.limiter = limiter

    # --- the address budget -------------------------------------------------------------------

    def _budget_refused(self, err: ResilienceError) -> None:
        if (
            self._address_budget is not None
            and isinstance(err, RateLimitedError)
            and err.source == "address"
        ):
            self._address_budget.refused(err)

    def _budget_call(self, name: str, method: Callable[..., Any]) -> Callable[..., Any]:
        """A non-order action counted as one action on the address budget (a method of
        weight 0, such as ``set_expires_after``, sends nothing and is not counted)."""
        budget = self._address_budget
        if budget is None or self._weights.get(name) == 0:
            return method

        @functools.wraps(method)
        def counted(*args: Any, **kwargs: Any) -> Any:
            budget.acquire(1)
            answer = method(*args, **kwargs)
            budget.note_answer(answer)
            return answer

        return counted

    # --- which actions may be retried ---------------------------------------------------------

    def _retry_for(self, name: str) -> RetryLike | None:
        if name in IDEMPOTENT_ACTIONS or name in self._unsafe_retry:
            return self._retry
        if name in self._checks:  # the caller gave a check: retry after asking it
            return self._retry
        return None

    # --- lookups ------------------------------------------------------------------------------

    def _address(self) -> str:
        inner = self._inner
        for attr in ("vault_address", "account_address"):
            value = getattr(inner, attr, None)
            if value:
                return str(value)
        wallet = getattr(inner, "wallet", None)
        address = getattr(wallet, "address", None)
        if not address:
            raise CriticalError(
                "cannot look up orders: the wrapped exchange has no wallet address "
                "(wrap the SDK's Exchange)",
                operation="orderStatus",
            )
        return str(address)

    def _lookup(self, item: Item) -> Any:
        info = self._orders_info
        if info is None:
            raise CriticalError(
                "cannot look up an order whose answer was lost: the wrapped exchange has no "
                "`info`; pass info=Info(base_url, skip_ws=True) to wrap_exchange",
                operation="orderStatus",
            )
        if item.cloid is not None:
            from hyperliquid.utils.types import Cloid

            return info.query_order_by_cloid(self._address(), Cloid.from_str(item.cloid))
        return info.query_order_by_oid(self._address(), item.oid)

    # --- the order paths, decided -------------------------------------------------------------

    def _steps(self, call: Call, reads: RetryLike | None) -> Steps:
        """One attempt at ``call``: the I/O a shell runs (see ``_attempt``)."""
        return decide_attempt(
            call,
            lookup=self._lookup,
            reads=reads,
            budget=self._address_budget,
            refused=self._budget_refused,
        )

    def _read_policy(self) -> RetryLike | None:
        """Lookups are reads: without the caller's retry policy they still get a few tries
        of their own (a lost answer is always settled by asking, never by sending again)."""
        return None if self._retry is not None else _READS


def _public_signature(method: Callable[..., Any], name: str) -> None:
    """The public method returns the exchange's answer, not the private decision it wraps."""
    method.__name__ = method.__qualname__ = name
    method.__annotations__ = {**method.__annotations__, "return": "Any"}
    vars(method).pop("__wrapped__", None)


def _order_paths(*, awaited: bool) -> Callable[[type[_E]], type[_E]]:
    """Class decorator: one public method per order path (:data:`ORDER_PATHS`) that settles
    what the decision ``_call_<name>`` returns; a coroutine method when ``awaited``."""

    def path(name: str) -> Callable[..., Any]:
        decide = getattr(_ExchangeBase, f"_call_{name}")

        def method(self: SafeExchange, *args: Any, **kwargs: Any) -> Any:
            return self._settle(decide(self, *args, **kwargs))

        async def method_async(self: AsyncSafeExchange, *args: Any, **kwargs: Any) -> Any:
            return await self._settle(decide(self, *args, **kwargs))

        chosen: Callable[..., Any] = functools.wraps(decide)(method_async if awaited else method)
        _public_signature(chosen, name)
        return chosen

    def add(cls: type[_E]) -> type[_E]:
        for name in sorted(ORDER_PATHS):
            setattr(cls, name, path(name))
        return cls

    return add


@_order_paths(awaited=False)
class SafeExchange(_ExchangeBase):
    """An SDK ``Exchange`` whose orders are never sent twice; see :func:`wrap_exchange`.

    Example:
        >>> import eth_account
        >>> from resilient_trading import RateLimiter
        >>> from resilient_trading.presets import hyperliquid as hl
        >>> from resilient_trading.testing import Simulator
        >>> with Simulator(auto_fund=10_000) as sim:
        ...     limiter = RateLimiter(hl.rest_limit())
        ...     raw = hl.make_exchange(eth_account.Account.create(), sim.base_url, limiter)
        ...     answer = hl.wrap_exchange(raw, limiter).market_open("BTC", True, 0.001)
        ...     [outcome.kind for outcome in hl.outcomes(answer)]
        ['filled']
    """

    def _wrap_sync(self, name: str, method: Callable[..., Any]) -> Callable[..., Any]:
        return super()._wrap_sync(name, self._budget_call(name, method))

    def _perform(self, io: IO) -> Any:
        if isinstance(io, Spend):
            return io.budget.acquire(io.count, kind=io.kind)
        send = functools.partial(self._send, io.weight, io.request, io.operation)
        return io.retry.call(send) if io.retry is not None else send()

    def _run(self, steps: Steps) -> Finish:
        driven = Driven(steps)
        while not isinstance(io := driven.next(), Finish):
            try:
                driven.reply(self._perform(io))
            except Exception as exc:  # thrown into the decision: settled there or raised
                driven.fail(exc)
        return io

    def _settle(self, call: Call) -> Any:
        reads = self._read_policy()

        def attempt() -> Finish:
            return self._run(self._steps(call, reads))

        def settle() -> Any:
            with unknown_noted(call.settlement):
                finish = self._retry.call(attempt) if self._retry is not None else attempt()
            return finish.result()

        return self._guarded(None, settle)


@_order_paths(awaited=True)
class AsyncSafeExchange(_ExchangeBase):
    """:class:`SafeExchange` for ``asyncio``: every method is a coroutine; SDK requests run
    in a worker thread, waits are awaited. See :func:`wrap_exchange_async`."""

    def _wrap(self, name: str, method: Callable[..., Any]) -> Callable[..., Any]:
        counted = self._budget_call(name, method)
        return self._wrap_async(name, functools.partial(asyncio.to_thread, counted))

    async def _perform(self, io: IO) -> Any:
        if isinstance(io, Spend):
            return await io.budget.acquire_async(io.count, kind=io.kind)
        in_thread = functools.partial(asyncio.to_thread, io.request)
        send = functools.partial(self._send_async, io.weight, in_thread, io.operation)
        return await (io.retry.call_async(send) if io.retry is not None else send())

    async def _run(self, steps: Steps) -> Finish:
        driven = Driven(steps)
        while not isinstance(io := driven.next(), Finish):
            try:
                driven.reply(await self._perform(io))
            except Exception as exc:  # thrown into the decision: settled there or raised
                driven.fail(exc)
        return io

    async def _settle(self, call: Call) -> Any:
        reads = self._read_policy()

        async def attempt() -> Finish:
            return await self._run(self._steps(call, reads))

        async def settle() -> Any:
            with unknown_noted(call.settlement):
                finish = await (
                    self._retry.call_async(attempt) if self._retry is not None else attempt()
                )
            return finish.result()

        return await self._guarded_async(None, settle)
