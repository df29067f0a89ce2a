"""The order paths, decided: from an SDK call's arguments to a settlement and a sender.

For each order path (``order``, ``bulk_orders``, ``modify_order``, ``bulk_modify_orders_new``,
``market_open``, ``market_close``, ``cancel``, ``cancel_by_cloid``, ``bulk_cancel``,
``bulk_cancel_by_cloid``) this module builds, without I/O, a :class:`Call`: the
:class:`~._orders.Settlement` of its items (cloids assigned to orders that have none), how to
send a subset of them through the SDK, and what sending weighs (market orders add the reads
the SDK makes inside them). ``_exchange.py`` runs calls; the method signatures here are the
SDK's, so a wrapped ``Exchange`` is used exactly like the SDK's (``_cloids.py`` reads and
checks the cloids in them).

Why this module is long: it mirrors the SDK's ten order-path signatures one for one (the
public methods must accept exactly what ``Exchange`` accepts), each a few lines that name
their arguments; the checks they share are factored into ``_placed``, ``_cancel_item`` and
``_decided``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from resilient_trading._client import RetryLike
from resilient_trading._redact import safe_text
from resilient_trading.presets.hyperliquid._cloids import (
    as_cloid,
    check_unique,
    new_cloid,
    order_request,
    raw_cloid,
)
from resilient_trading.presets.hyperliquid._orders import Item, Settlement
from resilient_trading.presets.hyperliquid._weights import (
    MARKET_CLOSE_READS,
    MARKET_OPEN_READS,
    exchange_weight,
)

__all__ = ["ORDER_PATHS", "Call", "Decisions"]

#: The SDK methods whose items are settled (never sent twice).
ORDER_PATHS = frozenset(
    {
        "order",
        "bulk_orders",
        "modify_order",
        "bulk_modify_orders_new",
        "market_open",
        "market_close",
        "cancel",
        "cancel_by_cloid",
        "bulk_cancel",
        "bulk_cancel_by_cloid",
    }
)
_SLIPPAGE = 0.05  # the SDK's Exchange.DEFAULT_SLIPPAGE


@dataclass(frozen=True)
class Call:
    """One order-path call, decided: its settlement, how to send items, what that weighs."""

    settlement: Settlement
    send: Callable[[tuple[Item, ...]], Any]
    #: Reads the SDK makes inside one send (``market_open`` asks for prices), charged with it.
    reads: int = 0

    def weight(self, batch: Sequence[Item]) -> int:
        """What sending ``batch`` weighs."""
        return exchange_weight(len(batch)) + self.reads


class Decisions:
    """The order paths' decisions; mixed into the wrappers, which provide ``_inner`` (the
    SDK's ``Exchange``), ``_label`` (its class name, for error messages) and ``_retry`` (the
    caller's retry policy: without one, nothing is ever sent twice).

    Every argument is checked here, before the breaker, the limiter or the network see the
    call: a bad one (an unknown coin, a price the SDK cannot write, a malformed cloid, one
    cloid twice in a batch) raises ``ValueError``/``TypeError`` and nothing is sent.
    """

    _inner: Any
    _label: str
    _retry: RetryLike | None

    def _decided(
        self,
        operation: str,
        items: Sequence[Item],
        send: Callable[[tuple[Item, ...]], Any],
        *,
        answer_type: str = "order",
        single: bool,
        reads: int = 0,
    ) -> Call:
        settlement = Settlement(
            items,
            answer_type=answer_type,
            single=single,
            operation=operation,
            resend=self._retry is not None,
        )
        return Call(settlement, send, reads)

    def _asset(self, operation: str, coin: Any) -> int | None:
        """The asset number of ``coin`` (``None`` when the wrapped object cannot say)."""
        name_to_asset = getattr(getattr(self._inner, "info", None), "name_to_asset", None)
        if not callable(name_to_asset):
            return None
        try:
            asset = name_to_asset(coin)
        except (KeyError, TypeError) as exc:
            raise ValueError(
                f"{operation}: unknown coin {safe_text(coin, 60)} (not in the meta this "
                "Exchange was built with); check the name, or build the Exchange again after "
                "a new listing. Nothing was sent."
            ) from exc
        return asset if isinstance(asset, int) else None

    def _check_wire(self, operation: str, index: int, request: Mapping[str, Any]) -> None:
        """Build the order's wire form as the SDK will, so a bad order fails here."""
        from hyperliquid.utils.signing import order_request_to_order_wire

        asset = self._asset(operation, request.get("coin"))
        if asset is None:
            return
        try:
            order_request_to_order_wire(request, asset)
        except (KeyError, TypeError, ValueError) as exc:
            raise ValueError(
                f"{operation}: order {index} cannot be sent as given "
                f"({type(exc).__name__}: {safe_text(exc, 200)}); fix it and call again. "
                "Nothing was sent."
            ) from exc

    def _placed(self, operation: str, index: int, order: Mapping[str, Any]) -> dict[str, Any]:
        """A copy of ``order`` with its cloid (assigned if it has none), checked as the SDK
        will write it."""
        placed = dict(order)
        placed["cloid"] = as_cloid(placed.get("cloid"), "cloid") or new_cloid()
        self._check_wire(operation, index, placed)
        return placed

    def _orders(
        self,
        operation: str,
        requests: Sequence[Mapping[str, Any]],
        builder: Any = None,
        grouping: str = "na",
        *,
        single: bool,
    ) -> Call:
        items = []
        for index, request in enumerate(requests):
            order = self._placed(operation, index, request)
            items.append(Item(index, "order", order, cloid=raw_cloid(order["cloid"])))
        check_unique(operation, [i.cloid for i in items])
        inner = self._inner

        def send(batch: tuple[Item, ...]) -> Any:
            return inner.bulk_orders([i.request for i in batch], builder, grouping)

        return self._decided(operation, items, send, single=single)

    def _modifies(
        self, operation: str, requests: Sequence[Mapping[str, Any]], *, single: bool
    ) -> Call:
        items = []
        for index, request in enumerate(requests):
            order = self._placed(operation, index, request["order"])
            cloid = raw_cloid(order["cloid"])
            target = request["oid"]
            if isinstance(target, bool) or not isinstance(target, int):
                target = as_cloid(target, "oid (the order to modify)")
            ref: int | str | None = target if isinstance(target, int) else raw_cloid(target)
            same = isinstance(ref, str) and ref == cloid
            modify = {"oid": target, "order": order}
            items.append(Item(index, "modify", modify, cloid=cloid, target=ref, lookup=not same))
        check_unique(operation, [i.cloid for i in items])
        inner = self._inner

        def send(batch: tuple[Item, ...]) -> Any:
            return inner.bulk_modify_orders_new([i.request for i in batch])

        return self._decided(operation, items, send, single=single)

    def _cancels(
        self,
        operation: str,
        requests: Sequence[Mapping[str, Any]],
        *,
        by_cloid: bool,
        single: bool,
    ) -> Call:
        items = [
            self._cancel_item(operation, index, request, by_cloid=by_cloid)
            for index, request in enumerate(requests)
        ]
        inner = self._inner

        def send(batch: tuple[Item, ...]) -> Any:
            cancels = [i.request for i in batch]
            return inner.bulk_cancel_by_cloid(cancels) if by_cloid else inner.bulk_cancel(cancels)

        return self._decided(operation, items, send, answer_type="cancel", single=single)

    def _cancel_item(
        self, operation: str, index: int, request: Mapping[str, Any], *, by_cloid: bool
    ) -> Item:
        cancel = dict(request)
        self._asset(operation, cancel.get("coin"))
        if by_cloid:
            cancel["cloid"] = as_cloid(cancel.get("cloid"), "cloid")
            if cancel["cloid"] is None:
                raise TypeError(f"{operation}: cancel {index} has no cloid")
            return Item(index, "cancel", cancel, cloid=raw_cloid(cancel["cloid"]))
        oid = cancel.get("oid")
        if isinstance(oid, bool) or not isinstance(oid, int):
            raise TypeError(f"{operation}: cancel {index}: oid must be an int, got {oid!r}")
        return Item(index, "cancel", cancel, oid=oid)

    def _market(self, operation: str, kwargs: dict[str, Any], *, close: bool, reads: int) -> Call:
        self._asset(operation, kwargs["coin"] if close else kwargs["name"])
        kwargs["cloid"] = as_cloid(kwargs.get("cloid"), "cloid") or new_cloid()
        item = Item(0, "order", dict(kwargs), cloid=raw_cloid(kwargs["cloid"]))
        method = self._inner.market_close if close else self._inner.market_open

        def send(batch: tuple[Item, ...]) -> Any:
            return method(**batch[0].request)

        return self._decided(operation, [item], send, single=True, reads=reads)

    # --- public order methods (decisions only; _settle runs them) -----------------------------

    def _call_order(
        self,
        name: str,
        is_buy: bool,
        sz: float,
        limit_px: float,
        order_type: Any,
        reduce_only: bool = False,
        cloid: Any = None,
        builder: Any = None,
    ) -> Call:
        request = order_request(name, is_buy, sz, limit_px, order_type, reduce_only, cloid)
        return self._orders(self._op("order"), [request], builder, single=True)

    def _call_bulk_orders(
        self, order_requests: Sequence[Mapping[str, Any]], builder: Any = None, grouping: str = "na"
    ) -> Call:
        return self._orders(
            self._op("bulk_orders"), list(order_requests), builder, grouping, single=False
        )

    def _call_modify_order(
        self,
        oid: Any,
        name: str,
        is_buy: bool,
        sz: float,
        limit_px: float,
        order_type: Any,
        reduce_only: bool = False,
        cloid: Any = None,
    ) -> Call:
        order = order_request(name, is_buy, sz, limit_px, order_type, reduce_only, cloid)
        return self._modifies(self._op("modify_order"), [{"oid": oid, "order": order}], single=True)

    def _call_bulk_modify_orders_new(self, modify_requests: Sequence[Mapping[str, Any]]) -> Call:
        return self._modifies(
            self._op("bulk_modify_orders_new"), list(modify_requests), single=False
        )

    def _call_market_open(
        self,
        name: str,
        is_buy: bool,
        sz: float,
        px: float | None = None,
        slippage: float = _SLIPPAGE,
        cloid: Any = None,
        builder: Any = None,
    ) -> Call:
        kwargs = {
            "name": name,
            "is_buy": is_buy,
            "sz": sz,
            "px": px,
            "slippage": slippage,
            "cloid": cloid,
            "builder": builder,
        }
        reads = MARKET_OPEN_READS if px is None else 0
        return self._market(self._op("market_open"), kwargs, close=False, reads=reads)

    def _call_market_close(
        self,
        coin: str,
        sz: float | None = None,
        px: float | None = None,
        slippage: float = _SLIPPAGE,
        cloid: Any = None,
        builder: Any = None,
    ) -> Call:
        kwargs = {
            "coin": coin,
            "sz": sz,
            "px": px,
            "slippage": slippage,
            "cloid": cloid,
            "builder": builder,
        }
        reads = MARKET_CLOSE_READS - (0 if px is None else MARKET_OPEN_READS)
        return self._market(self._op("market_close"), kwargs, close=True, reads=reads)

    def _call_cancel(self, name: str, oid: int) -> Call:
        request = {"coin": name, "oid": oid}
        return self._cancels(self._op("cancel"), [request], by_cloid=False, single=True)

    def _call_cancel_by_cloid(self, name: str, cloid: Any) -> Call:
        request = {"coin": name, "cloid": cloid}
        return self._cancels(self._op("cancel_by_cloid"), [request], by_cloid=True, single=True)

    def _call_bulk_cancel(self, cancel_requests: Sequence[Mapping[str, Any]]) -> Call:
        return self._cancels(
            self._op("bulk_cancel"), list(cancel_requests), by_cloid=False, single=False
        )

    def _call_bulk_cancel_by_cloid(self, cancel_requests: Sequence[Mapping[str, Any]]) -> Call:
        return self._cancels(
            self._op("bulk_cancel_by_cloid"), list(cancel_requests), by_cloid=True, single=False
        )

    def _op(self, name: str) -> str:
        return f"{self._label}.{name}"
