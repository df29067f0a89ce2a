"""Order safety: every order, cancel and modify of one call settles exactly once.

Why this module is long: it is one state machine, the :class:`Settlement` of a call's items,
and its rules (below) read each other's state (an item's lookup decides its re-send, a lost
batch decides its siblings); they are kept in one place so they can be read and tested
together against the exchange's answers. Everything else (arguments, I/O) lives elsewhere.

This module decides; it does no I/O. A :class:`Settlement` holds the items of one call (the
orders of ``bulk_orders``, the cancels of ``bulk_cancel``...) and answers, again and again,
"what next?": :class:`Lookup` (ask the exchange what became of one item), :class:`Send` (send
these items) or :class:`Finish`; or it raises the error that ends the current attempt. One
attempt around it is written once, as a generator of I/O (``_attempt.py``), run by sync and
async shells in ``_exchange.py`` that differ only by ``await``: each attempt of the retry
policy calls :meth:`Settlement.begin_attempt`, then follows :meth:`Settlement.next` until it
finishes or raises. The rules:

- an item whose answer was lost (timeout, reset, 5xx, unreadable body) has an *unknown*
  outcome. Orders and modifies are never sent again before the exchange has been asked
  (``orderStatus`` by cloid, at once, in the same attempt). Cancels are simply sent again
  (cancelling twice is cancelling once), and only when the second answer says "already
  canceled, or filled" is the order looked up, to tell your cancel from a fill;
- an item is sent at most once per attempt, and sent again only when the caller gave a retry
  policy (``resend``): without one, a lost answer is still looked up (reads are always
  allowed), but what the lookup cannot settle is raised, the cloids named;
- orders and modifies: a found order is *adopted* (its status is reported, marked
  ``"adopted"``; a cancelled one as ``canceled``, or as the part of it that filled). A modify
  aimed by oid whose lookup finds that very oid still open was not applied: it goes again.
  When some orders of a lost batch are found, the batch landed and the others were most
  likely refused: they are reported ``"unconfirmed"``, never re-sent; when none is found, the
  batch is sent again under the same cloids;
- ``Duplicate cloid`` (for any order, even on the first send: the caller may re-send its own
  cloid), ``Cannot modify canceled or filled order`` after an unknown outcome, and a
  ``market_close`` that finds nothing to close after an unknown outcome all mean "it landed":
  the item is looked up and adopted, and never sent again. While the reads lag (or have
  forgotten the cloid), each attempt asks once and ends with a transient error, so the retry
  policy bounds it;
- an answer with one status per item settles each item for good: resting and filled orders
  are done, refusals are returned to the caller as they are (a refused order is not retried:
  a fresh attempt is a *new* order, the caller's decision);
- a refusal of the whole action (``{"status": "err"}``) or a 429 means nothing was applied:
  the items may be sent again without asking (next attempt);
- cancels go in batches of at most :data:`MAX_CANCEL_BATCH` (the exchange refuses more).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from typing import Any, Literal

from resilient_trading._classify import classify_message, is_order_gone
from resilient_trading._errors import (
    ExchangeUnavailableError,
    OrderOutcome,
    RateLimitedError,
    ResilienceError,
)
from resilient_trading._redact import safe_text

__all__ = ["MAX_CANCEL_BATCH", "Finish", "Item", "Lookup", "Send", "Settlement"]

ItemKind = Literal["order", "cancel", "modify"]
State = Literal["pending", "unknown", "done"]

#: The most cancels one action may carry: more is refused whole ("Signed action over weight
#: limit of 200."), so larger cancel calls are sent in chunks.
MAX_CANCEL_BATCH = 200

_GONE_TEXT = "Order was never placed, already canceled, or filled."
_MODIFY_GONE_TEXT = "Cannot modify canceled or filled order"
_FILLED = frozenset({"filled", "triggered"})
_NOT_LOOKED = object()


@dataclass(eq=False)
class Item:
    """One order, cancel or modify of a call.

    ``cloid`` (hex) and ``oid`` say how to look it up: an order or modify by the cloid of the
    order it places; a cancel by its target. ``target`` is a modify's target (an oid, or a
    cloid in hex). ``lookup=False`` means re-sending is harmless and no lookup is needed (a
    modify that keeps its target's cloid and is aimed by it).
    """

    index: int
    kind: ItemKind
    request: Any
    cloid: str | None = None
    oid: int | None = None
    target: int | str | None = None
    lookup: bool = True
    state: State = "pending"
    status: Any = None
    ever_unknown: bool = False
    landed: bool = False  # the exchange said it landed: look it up, never send it again
    confirm: bool = False  # a re-sent cancel answered "gone": was it our cancel, or a fill?
    batch: int = 0
    sent_in: int = 0  # the attempt that last sent it (0: never sent)
    looked_in: int = 0  # the attempt that last looked it up
    found: Any = field(default=_NOT_LOOKED, repr=False)


@dataclass(frozen=True)
class Lookup:
    """Ask the exchange (``orderStatus``) what became of ``item``."""

    item: Item


@dataclass(frozen=True)
class Send:
    """Send these items, in one action."""

    items: tuple[Item, ...]


@dataclass(frozen=True)
class Finish:
    """Every item is settled: ``answer`` is what the call returns; for a single-item call,
    ``error`` is the refusal to raise instead (outcomes are returned, never raised)."""

    answer: Any
    error: ResilienceError | None = None

    def result(self) -> Any:
        """What the call returns: ``answer``, or ``error`` raised."""
        if self.error is not None:
            raise self.error
        return self.answer


class Settlement:
    """The decisions for one call; see the module docstring for the rules.

    Args:
        items: The call's items, in order.
        answer_type: ``"order"`` or ``"cancel"``: the ``response.type`` of an assembled answer.
        single: The call was for one item (``order``, ``cancel``...): a refusal that is not
            an outcome is raised, as the SDK user expects.
        operation: The SDK method, for error messages.
        resend: Items may be sent again in a later attempt (the caller gave a retry policy).
            Without it nothing is ever sent twice; lost answers are still looked up.
    """

    def __init__(
        self,
        items: Sequence[Item],
        *,
        answer_type: str,
        single: bool,
        operation: str,
        resend: bool = True,
    ) -> None:
        self.items = list(items)
        self.answer_type = answer_type
        self.single = single
        self.operation = operation
        self.resend = resend
        self._attempt = 0
        self._sends = 0
        self._only_answer: Any = None
        self._none_answer = False
        self._last_error: ResilienceError | None = None

    # --- what next ----------------------------------------------------------------------------

    def begin_attempt(self) -> None:
        """A new attempt of the retry policy starts (the first one included)."""
        self._attempt += 1
        self._last_error = None

    def next(self) -> Lookup | Send | Finish:
        """What to do next; raises the error that ends this attempt when nothing more can be
        done in it (the retry policy decides whether another attempt follows)."""
        attempt = max(self._attempt, 1)
        for item in self.items:
            if item.state == "unknown" and item.found is _NOT_LOOKED and item.looked_in < attempt:
                if not item.lookup:
                    item.state = "pending"
                    continue
                return Lookup(item)
        self._resolve()
        stuck = [i for i in self.items if i.state == "unknown"]  # landed, not found yet
        if stuck:
            raise self._stuck_error(stuck)
        pending = [i for i in self.items if i.state == "pending"]
        if pending:
            again = [i for i in pending if i.sent_in]
            if again and (not self.resend or any(i.sent_in >= attempt for i in again)):
                raise self._attempt_error()
            if self.answer_type == "cancel":
                pending = pending[:MAX_CANCEL_BATCH]
            return Send(tuple(pending))
        return self._finish()

    def unknown_refs(self) -> list[str]:
        """The cloids/oids whose outcome is still unknown (for the error a caller sees)."""
        return [
            str(i.cloid if i.cloid is not None else i.oid)
            for i in self.items
            if i.state != "done" and (i.ever_unknown or i.landed)
        ]

    # --- what happened ------------------------------------------------------------------------

    def looked_up(self, item: Item, answer: Any) -> None:
        """Record the exchange's ``orderStatus`` answer for ``item``."""
        if not isinstance(answer, Mapping) or answer.get("status") not in ("order", "unknownOid"):
            raise ExchangeUnavailableError(
                f"unexpected orderStatus answer while settling {self.operation}: "
                f"{safe_text(answer, 200)}; the outcome is still unknown",
                operation="orderStatus",
            )
        item.looked_in = max(self._attempt, 1)
        item.found = answer.get("order") if answer.get("status") == "order" else None

    def failed(self, items: Sequence[Item], error: ResilienceError) -> None:
        """Sending ``items`` raised ``error``: unknown outcome, unless nothing was applied."""
        self._begin(items)
        self._last_error = error
        if isinstance(error, RateLimitedError):
            return  # refused before it was processed: still pending
        for item in items:
            self._unknown(item)

    def sent(self, items: Sequence[Item], answer: Any) -> None:
        """Record the exchange's answer to sending ``items``; raises the refusal of a whole
        action (nothing applied: the items stay pending for the next attempt)."""
        self._begin(items)
        if answer is None and self.operation.endswith("market_close"):
            # The SDK found no position to close. After an unknown outcome, that is our
            # earlier close having filled: look it up, never report "nothing to close".
            for item in items:
                if item.ever_unknown:
                    self._landed(item)
                else:
                    item.state, item.status = "done", None
                    self._none_answer = True
            return
        if isinstance(answer, Mapping) and answer.get("status") == "err":
            # The whole action was refused: nothing was applied, the items may go again.
            error = classify_message(str(answer.get("response")), operation=self.operation)
            self._last_error = error
            raise error
        statuses = _statuses(answer)
        if statuses is None or len(statuses) != len(items):
            self._last_error = ExchangeUnavailableError(
                f"unreadable answer to {self.operation} ({safe_text(answer, 200)}); the outcome "
                "is unknown and is looked up before anything is sent again",
                operation=self.operation,
            )
            for item in items:
                self._unknown(item)
            return
        for item, status in zip(items, statuses, strict=True):
            message = status.get("error") if isinstance(status, Mapping) else None
            if isinstance(message, str) and self._means_landed(item, message):
                self._landed(item)  # an attempt landed: look it up and adopt it
                continue
            if (
                isinstance(message, str)
                and item.kind == "cancel"
                and item.ever_unknown
                and is_order_gone(message)
            ):
                item.state, item.status = "unknown", status
                item.confirm = True  # our lost cancel, or a fill? one lookup tells
                item.found = _NOT_LOOKED
                item.looked_in = 0
                continue
            item.state, item.status = "done", status
        if (
            self._sends == 1
            and len(items) == len(self.items)
            and all(i.state == "done" for i in self.items)
        ):
            self._only_answer = answer  # one clean round trip: return the exchange's answer

    def _means_landed(self, item: Item, message: str) -> bool:
        if item.kind != "cancel" and "duplicate cloid" in message.lower():
            return True  # the cloid is on the exchange: this order (or the caller's) landed
        return (
            item.kind == "modify" and item.ever_unknown and item.lookup and (is_order_gone(message))
        )

    def _begin(self, items: Sequence[Item]) -> None:
        self._sends += 1
        for item in items:
            item.batch = self._sends
            item.sent_in = max(self._attempt, 1)

    # --- internals ----------------------------------------------------------------------------

    def _unknown(self, item: Item) -> None:
        item.ever_unknown = True
        item.found = _NOT_LOOKED
        item.looked_in = 0  # look it up now, even if it was looked up earlier in this attempt
        if item.kind == "cancel" and self.resend:
            item.state = "pending"  # cancelling twice is cancelling once: no lookup needed
        else:
            item.state = "unknown"

    def _landed(self, item: Item) -> None:
        item.ever_unknown = True
        item.landed = True
        item.state = "unknown"
        item.found = _NOT_LOOKED
        item.looked_in = 0

    def _attempt_error(self) -> ResilienceError:
        if self._last_error is not None:
            return self._last_error
        return ExchangeUnavailableError(
            f"{self.operation}: the outcome of {', '.join(self.unknown_refs()) or 'the call'} "
            "is unknown and nothing more is sent without a retry policy; look it up "
            "(orderStatus) before sending it again",
            operation=self.operation,
        )

    def _stuck_error(self, stuck: Sequence[Item]) -> ResilienceError:
        refs = ", ".join(str(i.cloid if i.cloid is not None else i.oid) for i in stuck)
        return ExchangeUnavailableError(
            f"{self.operation}: {refs} landed on the exchange (it answered that the cloid "
            "exists or that the order is no longer open) but orderStatus does not find it "
            "yet (a lagging read, or an order older than its memory); not sent again, the "
            "outcome is unknown: look it up by its cloid before placing it anew",
            operation=self.operation,
        )

    def _resolve(self) -> None:
        looked = [i for i in self.items if i.state == "unknown" and i.found is not _NOT_LOOKED]
        if not looked:
            return
        landed_batches = {i.batch for i in looked if i.kind == "order" and i.found is not None}
        for item in looked:
            found = item.found
            item.found = _NOT_LOOKED
            if item.kind == "cancel":
                self._resolve_cancel(item, found)
            elif found is not None:
                self._resolve_found(item, found)
            elif item.landed:
                pass  # it landed but the read does not show it yet: stays unknown
            elif item.kind == "order" and item.batch in landed_batches:
                # Its batch landed, so this order was most likely refused (its reason was in
                # the lost answer), unless the read lags. Sending it again could place what
                # the caller never learned was refused: report it, unconfirmed, instead.
                item.state = "done"
                item.status = {
                    "error": f"Order {item.cloid} not found after a lost answer although its "
                    "batch landed: most likely refused (reason lost); not sent again. Look it "
                    "up by its cloid before placing it anew.",
                    "adopted": "unknownOid",
                    "unconfirmed": True,
                }
            else:
                item.state = "pending"  # never arrived: send it again (same cloid)

    @staticmethod
    def _resolve_found(item: Item, found: Any) -> None:
        if item.kind == "modify" and isinstance(item.target, int):
            order = found.get("order") if isinstance(found, Mapping) else None
            oid = order.get("oid") if isinstance(order, Mapping) else None
            if oid == item.target:  # the lookup found the target itself, not a replacement
                status = _order_status(found)
                if status == "open" and not item.landed:
                    item.state = "pending"  # the modify was not applied: send it again
                    return
                item.state = "done"
                item.status = {"error": _MODIFY_GONE_TEXT, "adopted": status or "unknown"}
                return
        item.state, item.status = "done", _adopted(found)

    def _resolve_cancel(self, item: Item, found: Any) -> None:
        status = _order_status(found)
        if item.confirm:  # the exchange said "gone": the lookup only says whose doing
            item.state = "done"
            if status == "canceled":
                item.status = "success"
            else:
                item.status = {"error": _GONE_TEXT, "adopted": status or "unknownOid"}
            return
        if status == "open" or status is None:
            item.state = "pending"  # not cancelled (or not found): send again, if allowed
        elif status == "canceled":
            item.state, item.status = "done", "success"
        else:
            item.state = "done"
            item.status = {"error": _GONE_TEXT, "adopted": status}

    def _finish(self) -> Finish:
        if self._none_answer and len(self.items) == 1:
            return Finish(None)
        answer = self._only_answer
        if answer is None:
            statuses = [item.status for item in self.items]
            answer = {
                "status": "ok",
                "response": {"type": self.answer_type, "data": {"statuses": statuses}},
            }
        error = None
        if self.single and self.items:
            message = self.items[0].status
            message = message.get("error") if isinstance(message, Mapping) else None
            if isinstance(message, str):
                refusal = classify_message(message, operation=self.operation)
                error = None if isinstance(refusal, OrderOutcome) else refusal
        return Finish(answer, error)


def _statuses(answer: Any) -> list[Any] | None:
    if not isinstance(answer, Mapping) or answer.get("status") != "ok":
        return None
    inner = answer.get("response")
    data = inner.get("data") if isinstance(inner, Mapping) else None
    statuses = data.get("statuses") if isinstance(data, Mapping) else None
    return statuses if isinstance(statuses, list) else None


def _order_status(found: Any) -> str | None:
    if not isinstance(found, Mapping):
        return None
    status = found.get("status")
    return status if isinstance(status, str) else None


def _is_cancelled(status: str) -> bool:
    """``canceled``, ``marginCanceled``, ``reduceOnlyCanceled``, ``scheduledCancel``..."""
    lowered = status.lower()
    return lowered.endswith("canceled") or lowered == "scheduledcancel"


def _filled_size(order: Mapping[str, Any]) -> str | None:
    """How much of ``order`` filled (``origSz - sz``), as the exchange writes sizes."""
    try:
        filled = Decimal(str(order.get("origSz"))) - Decimal(str(order.get("sz")))
    except (InvalidOperation, ValueError):
        return None
    return f"{filled.normalize():f}" if filled > 0 else None


def _adopted(found: Any) -> Any:
    """The status an order found by ``orderStatus`` would have had in the lost answer."""
    status = _order_status(found) or "unknown"
    order = found.get("order") if isinstance(found, Mapping) else None
    order = order if isinstance(order, Mapping) else {}
    ref: dict[str, Any] = {"oid": order.get("oid")}
    if order.get("cloid") is not None:
        ref["cloid"] = order.get("cloid")
    if status in _FILLED:
        # orderStatus carries no average price: the limit price bounds it (worst case).
        filled = {"totalSz": order.get("origSz"), "avgPx": order.get("limitPx"), **ref}
        return {"filled": filled, "adopted": status}
    if status == "iocCancelRejected":
        return {
            "error": "Order could not immediately match against any resting orders.",
            "adopted": status,
        }
    if status.endswith("Rejected") or status == "rejected":
        return {"error": f"Order rejected by the exchange ({status}).", "adopted": status}
    if _is_cancelled(status):
        part = _filled_size(order)
        if part is not None:  # e.g. an IOC's rest cancelled after a partial fill
            filled = {"totalSz": part, "avgPx": order.get("limitPx"), **ref}
            return {"filled": filled, "adopted": status}
        return {"canceled": ref, "adopted": status}
    return {"resting": ref, "adopted": status}
