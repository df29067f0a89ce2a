"""What each order, cancel or modify of an ``/exchange`` answer came to, as typed values.

Hyperliquid answers a batch with one status per item: ``{"resting": {...}}``,
``{"filled": {...}}``, ``"success"`` (a cancel) or ``{"error": "..."}``. Some errors are
*outcomes*, the normal life of an order rather than a fault
(:class:`~resilient_trading.OrderOutcome`: an IOC that found nothing to match, a post-only
order that would have crossed, a cancel that raced a fill). They are returned to the caller,
never retried and never counted against a breaker.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

from resilient_trading._classify import classify_message, classify_response
from resilient_trading._errors import (
    OrderGone,
    OrderNotFilled,
    OrderOutcome,
    ResilienceError,
)
from resilient_trading._redact import safe_text

__all__ = ["Outcome", "OutcomeKind", "check_response", "outcomes"]


def check_response(method: str, result: Any) -> None:
    """Raise the classified error carried by a Hyperliquid answer with HTTP 200, if any
    (an answer holding only order outcomes is a result, not an error)."""
    err = classify_response(result, operation=method)
    if err is not None:
        raise err


#: ``resting``/``filled``: the order is on the book or filled; ``success``: a cancel took
#: effect; ``not_filled``: an IOC or market order found no match (nothing traded);
#: ``not_placed``: the market refused it as it stands (a post-only that would cross, a
#: reduce-only that would grow the position); ``gone``: the order to cancel or modify was
#: already filled, cancelled or never placed; ``unconfirmed``: the answer was lost, the
#: order's batch landed but this order was not found (most likely refused; not sent again);
#: ``canceled``: the answer was lost and the order, found by asking the exchange, was already
#: cancelled with nothing filled (by you, another process, or the exchange: margin,
#: reduce-only, a scheduled cancel; ``raw["adopted"]`` says which);
#: ``error``: any other refusal (see ``error``).
OutcomeKind = Literal[
    "resting",
    "filled",
    "waiting",
    "success",
    "not_filled",
    "not_placed",
    "gone",
    "unconfirmed",
    "canceled",
    "error",
]


@dataclass(frozen=True)
class Outcome:
    """One item of an ``/exchange`` answer.

    Attributes:
        kind: What happened (:data:`OutcomeKind`).
        oid: The exchange's order id, when the answer carries one.
        cloid: The client order id (hex), when the answer carries one.
        error: The classified refusal for ``not_filled``, ``not_placed``, ``gone`` and
            ``error`` (an :class:`~resilient_trading.OrderOutcome` for the first three).
        adopted: ``True`` when the answer to the call was lost and this status was found by
            asking the exchange (``orderStatus``) instead of sending again.
        raw: The status exactly as it appears in the answer.

    Example:
        >>> answer = {"status": "ok", "response": {"type": "order", "data": {"statuses": [
        ...     {"error": "Order could not immediately match against any resting orders."}]}}}
        >>> outcomes(answer)[0].kind
        'not_filled'
    """

    kind: OutcomeKind
    oid: int | None = None
    cloid: str | None = None
    error: ResilienceError | None = None
    adopted: bool = False
    raw: Any = None


def _kind_of(error: ResilienceError) -> OutcomeKind:
    if isinstance(error, OrderGone):
        return "gone"
    if isinstance(error, OrderNotFilled):
        return "not_filled"
    if isinstance(error, OrderOutcome):
        return "not_placed"
    return "error"


_WAITING = ("waitingForFill", "waitingForTrigger")


def _one(status: Any, operation: str | None) -> Outcome:
    adopted = isinstance(status, Mapping) and "adopted" in status
    if status == "success":
        return Outcome("success", raw=status)
    if status in _WAITING:
        # A take-profit or stop-loss grouped with its entry (``normalTpsl``/``positionTpsl``):
        # accepted, and waiting for the entry's fill or for its trigger.
        return Outcome("waiting", adopted=adopted, raw=status)
    if isinstance(status, Mapping):
        for key in ("filled", "resting", "canceled"):
            body = status.get(key)
            if isinstance(body, Mapping):
                oid = body.get("oid")
                cloid = body.get("cloid")
                kind: OutcomeKind = (
                    "filled" if key == "filled" else "resting" if key == "resting" else "canceled"
                )
                return Outcome(
                    kind,
                    oid=oid if isinstance(oid, int) else None,
                    cloid=cloid if isinstance(cloid, str) else None,
                    adopted=adopted,
                    raw=status,
                )
        message = status.get("error")
        if isinstance(message, str) and status.get("unconfirmed"):
            return Outcome("unconfirmed", adopted=True, raw=status)
        if isinstance(message, str):
            error = classify_message(message, operation=operation)
            return Outcome(_kind_of(error), error=error, adopted=adopted, raw=status)
    error = classify_message(
        safe_text(f"unrecognised status: {status!r}", 200), operation=operation
    )
    return Outcome("error", error=error, raw=status)


def outcomes(answer: Any, *, operation: str | None = None) -> list[Outcome]:
    """The typed outcome of every item of an ``/exchange`` answer (empty if it has none)."""
    if not isinstance(answer, Mapping):
        return []
    inner = answer.get("response")
    data = inner.get("data") if isinstance(inner, Mapping) else None
    statuses = data.get("statuses") if isinstance(data, Mapping) else None
    if not isinstance(statuses, list):
        return []
    return [_one(status, operation) for status in statuses]
