"""What the exchange's error texts mean: Hyperliquid's answers mapped onto the error tree.

Hyperliquid reports business errors inside HTTP 200 answers, as text. Each rule below names
the error by Hyperliquid's own type (``kind``), recognises its text, and says which branch of
the tree it belongs to and what to do next. The first rule that matches wins, so the specific
rules come before the generic ones.

Sources of the texts: Hyperliquid's "Error responses" page (every per-order and cancel error
type: Tick, MinTradeNtl, MinTradeSpotNtl, PerpMargin, ReduceOnly, BadAloPx, IocCancel,
BadTriggerPx, MarketOrderNoLiquidity, PositionIncreaseAtOpenInterestCap,
PositionFlipAtOpenInterestCap, TooAggressiveAtOpenInterestCap, OpenInterestIncrease,
InsufficientSpotBalance, Oracle, PerpMaxPosition, MissingOrder), its "Rate limits" page (the
address budget's refusal), and texts recorded from the exchange (the three nonce refusals,
``Action already expired``, ``Must deposit before performing actions``, ``Unable to recover
signer.``, ``Mainnet and testnet require different signature.``, ``Order has invalid size.``,
``Cannot modify canceled or filled order``, ``Order price cannot be more than 95% away from the
reference price``, ``Unexpected number of trigger orders``).
docs/classification.md lists them all with their class.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from resilient_trading._errors import (
    AuthenticationError,
    CriticalError,
    ExchangeUnavailableError,
    InsufficientFundsError,
    InvalidRequestError,
    NonceError,
    OrderGone,
    OrderNotFilled,
    OrderNotPlaced,
    RateLimitedError,
    ResilienceError,
)

__all__ = ["RULES", "MessageRule", "find_rule"]

#: Hyperliquid's pace for an address over its cumulative budget: one action per 10 seconds.
ADDRESS_THROTTLE_SECONDS = 10.0


@dataclass(frozen=True)
class MessageRule:
    """One kind of exchange answer: how to recognise it, what it is, what to do next."""

    kind: str
    pattern: re.Pattern[str]
    error: type[ResilienceError]
    advice: str
    extra: dict[str, Any] = field(default_factory=dict)

    def build(self, message: str, operation: str | None) -> ResilienceError:
        return self.error(
            f"exchange refused: {message} ({self.advice})", operation=operation, **self.extra
        )


def _rule(
    kind: str, pattern: str, error: type[ResilienceError], advice: str, **extra: Any
) -> MessageRule:
    return MessageRule(kind, re.compile(pattern, re.I), error, advice, extra)


_RESIGN = "nothing was done: sign again with a fresh nonce"
_INVALID = "the exchange will never accept this request as it is: fix the code or configuration"

RULES: tuple[MessageRule, ...] = (
    # --- signing: nonce and expiry ---------------------------------------------------------------
    _rule(
        "NonceTooHigh",
        r"nonce too high",
        CriticalError,
        "the host clock is more than a day ahead of the exchange's: fix the clock (NTP); "
        "a fresh nonce from the same clock cannot help",
    ),
    _rule("DuplicateNonce", r"duplicate nonce", NonceError, _RESIGN),
    _rule(
        "NonceTooLow",
        r"nonce too low",
        NonceError,
        _RESIGN + " above the signer's recent ones; if it repeats, the host clock may be more "
        "than two days behind",
    ),
    _rule("Nonce", r"\bnonce\b", NonceError, _RESIGN),
    _rule(
        "Expired",
        r"already expired",
        NonceError,
        "nothing was done: sign again with a later expiresAfter",
    ),
    # --- budgets ---------------------------------------------------------------------------------
    _rule(
        "CumulativeRequests",
        r"too many cumulative requests",
        RateLimitedError,
        "this address has used its action budget: one action per 10 s until more volume is "
        "traded; cancels have their own allowance",
        source="address",
        retry_after=ADDRESS_THROTTLE_SECONDS,
    ),
    _rule(
        "RateLimited",
        r"rate limit|too many requests",
        RateLimitedError,
        "wait before any sharer of the budget calls again",
    ),
    # --- who is signing --------------------------------------------------------------------------
    _rule(
        "UnknownSigner",
        r"user or api wallet .* does not exist|must deposit before performing actions",
        AuthenticationError,
        "the key signs for a wallet the exchange does not know (wrong key, an API wallet not "
        "approved, or the wrong network): check the key and the account",
    ),
    _rule(
        "WrongNetwork",
        r"mainnet and testnet require different signature",
        AuthenticationError,
        "signed for the other network: check the base URL against the key's network",
    ),
    _rule(
        "BadSignature",
        r"unable to recover signer|signature|unauthori[sz]ed|forbidden",
        AuthenticationError,
        "the signature was refused: check the key, the account and the SDK version",
    ),
    # --- money -----------------------------------------------------------------------------------
    _rule(
        "PerpMargin",
        r"insufficient margin",
        InsufficientFundsError,
        "not enough margin for this order: stop and check the account and the sizing",
    ),
    _rule(
        "InsufficientSpotBalance",
        r"insufficient spot balance",
        InsufficientFundsError,
        "not enough spot balance for this order: stop and check the account",
    ),
    _rule(
        "InsufficientBalance",
        r"insufficient (?:balance|funds|quote token)|not enough",
        InsufficientFundsError,
        "not enough balance: stop and check the account",
    ),
    # --- the exchange struggling -----------------------------------------------------------------
    _rule(
        "Unparsable",
        r"could not parse json",
        ExchangeUnavailableError,
        "the answer was not JSON (a gateway page?): retry later",
    ),
    _rule(
        "Maintenance",
        r"maintenance|temporarily unavailable|try again",
        ExchangeUnavailableError,
        "retry later",
    ),
    # --- outcomes: the order did not rest or trade; nothing is broken ----------------------------
    _rule(
        "IocCancel",
        r"could not immediately match",
        OrderNotFilled,
        "the IOC order found nothing to match: nothing traded; a new order is a new decision",
    ),
    _rule(
        "MarketOrderNoLiquidity",
        r"no liquidity available for market order",
        OrderNotFilled,
        "nothing to match the market order: nothing traded; a new order is a new decision",
    ),
    _rule(
        "BadAloPx",
        r"post only order would have immediately matched",
        OrderNotPlaced,
        "the post-only price crossed the book: nothing was placed; re-price it",
    ),
    _rule(
        "ReduceOnly",
        r"reduce only order would increase position",
        OrderNotPlaced,
        "the position is already closed or smaller: nothing was placed; re-read the position",
    ),
    _rule(
        "OpenInterestCap",
        r"open interest",
        OrderNotPlaced,
        "the asset is at its open-interest cap: nothing was placed; try later or smaller",
    ),
    _rule(
        "MissingOrder",
        r"never placed, already cancell?ed, or filled",
        OrderGone,
        "the order is not open (filled, cancelled, or never placed): nothing to cancel",
    ),
    _rule(
        "CannotModify",
        r"cannot modify cancell?ed or filled order",
        OrderGone,
        "the order to modify is no longer open (filled or cancelled): place a new one if needed",
    ),
    # --- the request is wrong --------------------------------------------------------------------
    _rule(
        "Tick",
        r"tick size",
        InvalidRequestError,
        "round the price to the asset's tick size (5 significant figures)",
    ),
    _rule(
        "MinTradeNtl",
        r"minimum value",
        InvalidRequestError,
        "orders must be worth at least $10 (10 quote tokens on spot): raise the size",
    ),
    _rule(
        "BadTriggerPx",
        r"invalid tp/sl price",
        InvalidRequestError,
        "the trigger price is on the wrong side of the market: fix it",
    ),
    _rule(
        "Oracle",
        r"too far from oracle",
        InvalidRequestError,
        "the price is too far from the oracle price: fix the price",
    ),
    _rule(
        "PerpMaxPosition",
        r"margin tier limit",
        InvalidRequestError,
        "the position would exceed the margin tier at this leverage: size down or lower leverage",
    ),
    _rule(
        "PriceBand",
        r"away from the reference price",
        InvalidRequestError,
        "the price is outside the exchange's band around the reference price: fix the price",
    ),
    _rule("DuplicateCloid", r"duplicate cloid", InvalidRequestError, "use a fresh cloid"),
    _rule(
        "ScheduleCancelVolume",
        r"cannot set scheduled cancel time",
        InvalidRequestError,
        "the dead man's switch needs more traded volume: use a local watchdog",
    ),
    _rule(
        "WeightLimit",
        r"over weight limit",
        InvalidRequestError,
        "the batch is too large: split it",
    ),
    _rule(
        "InvalidRequest",
        r"invalid|zero size|reduce only|post only|duplicate|too (?:far|many open)|must be|"
        r"not (?:a )?valid|unknown (?:asset|coin|token)|not registered|deserialize|"
        r"failed to parse|unexpected number of",
        InvalidRequestError,
        _INVALID,
    ),
)


def find_rule(message: str) -> MessageRule | None:
    """The first rule whose pattern matches ``message``, or ``None``."""
    for rule in RULES:
        if rule.pattern.search(message):
            return rule
    return None
