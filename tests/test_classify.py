"""classify(): every exception lands on exactly one branch, with its cause and without secrets."""

from __future__ import annotations

import asyncio
import dataclasses
import errno
import http.client
import json
import socket
import ssl

import httpx
import pytest
import requests
from hyperliquid.utils.error import ClientError, ServerError
from hypothesis import given
from hypothesis import strategies as st

import resilient_trading as rt
from resilient_trading import (
    AuthenticationError,
    CriticalError,
    ExchangeUnavailableError,
    InsufficientFundsError,
    InvalidRequestError,
    NetworkError,
    NonceError,
    RateLimitedError,
    RequestTimeoutError,
    ResilienceError,
    TransientError,
    classify,
    classify_response,
    register_rule,
)
from resilient_trading._classify import classify_status, parse_retry_after
from resilient_trading._classify_messages import RULES


def _one_branch(err: ResilienceError) -> bool:
    branches = (TransientError, CriticalError, rt.OrderOutcome)
    return sum(isinstance(err, b) for b in branches) == 1


# --- a strategy of real exceptions of every family classify knows, and some it does not ----

statuses = st.integers(min_value=100, max_value=599)
messages = st.text(max_size=60)


def _requests_http_error(status: int, retry_after: str | None) -> requests.HTTPError:
    response = requests.Response()
    response.status_code = status
    if retry_after is not None:
        response.headers["Retry-After"] = retry_after
    return requests.HTTPError(f"{status} error", response=response)


def _httpx_status_error(status: int) -> httpx.HTTPStatusError:
    request = httpx.Request("POST", "http://127.0.0.1/info")
    response = httpx.Response(status, request=request)
    return httpx.HTTPStatusError("status", request=request, response=response)


exceptions = st.one_of(
    st.builds(ConnectionResetError, st.just(104), messages),
    st.builds(ConnectionRefusedError, st.just(111), messages),
    st.builds(BrokenPipeError, messages),
    st.builds(TimeoutError, messages),
    st.builds(socket.gaierror, messages),
    st.builds(http.client.RemoteDisconnected, messages),
    st.builds(ssl.SSLEOFError, messages),
    st.builds(ValueError, messages),
    st.builds(KeyError, messages),
    st.builds(RuntimeError, messages),
    st.builds(OSError, st.integers(min_value=1, max_value=130), messages),
    st.builds(requests.ConnectionError, messages),
    st.builds(requests.ReadTimeout, messages),
    st.builds(requests.ConnectTimeout, messages),
    st.builds(_requests_http_error, statuses, st.none() | st.sampled_from(["1", "abc", "2.5"])),
    st.builds(_httpx_status_error, statuses),
    st.builds(httpx.ConnectError, messages),
    st.builds(httpx.ReadTimeout, messages),
    st.builds(httpx.RemoteProtocolError, messages),
    st.builds(
        ClientError,
        statuses.filter(lambda s: 400 <= s < 500),
        st.none() | messages,
        messages,
        st.none() | st.just({"Content-Type": "application/json"}),
        st.none() | st.just({"Retry-After": "4"}),
    ),
    st.builds(ServerError, statuses.filter(lambda s: s >= 500), messages),
)


@given(exceptions)
def test_every_exception_maps_to_exactly_one_branch(exc: BaseException) -> None:
    err = classify(exc)
    assert isinstance(err, ResilienceError)
    assert _one_branch(err)
    assert err.__cause__ is exc


@given(exceptions)
def test_classify_is_stable_and_idempotent(exc: BaseException) -> None:
    first = classify(exc)
    assert classify(first) is first
    assert type(classify(exc)) is type(first)


@given(
    st.sampled_from(
        [rt.NetworkError, rt.RateLimitedError, rt.AuthenticationError, rt.StateCorruptedError]
    )
)
def test_resilience_errors_round_trip(cls: type[ResilienceError]) -> None:
    err = cls("x", path="p") if cls is rt.StateCorruptedError else cls("x")
    assert classify(err) is err


hex64 = st.text(alphabet="0123456789abcdef", min_size=64, max_size=64)


@given(key=hex64, status=st.sampled_from([400, 401, 403, 422, 429, 500]))
def test_no_secret_from_sdk_headers_or_body(key: str, status: int) -> None:
    headers = {"Authorization": f"Bearer tok{key[:12]}", "X-Signature": "0x" + key}
    exc = ClientError(status, None, f'{{"signature": "0x{key}"}}', headers, headers)
    err = classify(exc, operation=f"Exchange.order key={key}")
    for text in (str(err), repr(err), err.message):
        assert key not in text
        assert f"tok{key[:12]}" not in text


@given(key=hex64)
def test_no_secret_from_plain_exception_text(key: str) -> None:
    for exc in (
        ValueError(f"bad private key 0x{key}"),
        requests.ConnectionError(f"failed sending Authorization: Bearer {key}"),
    ):
        err = classify(exc)
        assert key not in str(err)
        assert key not in repr(err)


# --- the table, case by case ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("exc", "expected"),
    [
        (ConnectionResetError(104, "Connection reset by peer"), NetworkError),
        (http.client.RemoteDisconnected("Remote end closed connection"), NetworkError),
        (ConnectionRefusedError(111, "refused"), NetworkError),
        (TimeoutError("timed out"), RequestTimeoutError),
        (asyncio.TimeoutError(), RequestTimeoutError),
        (ssl.SSLCertVerificationError("certificate verify failed"), AuthenticationError),
        (ssl.SSLError("wrong version number"), NetworkError),
        (OSError(28, "No space left on device"), CriticalError),
        (requests.exceptions.ChunkedEncodingError("broken"), NetworkError),
        (
            requests.exceptions.JSONDecodeError("Expecting value", "<html>", 0),
            ExchangeUnavailableError,
        ),
        (json.JSONDecodeError("Expecting value", "x", 0), CriticalError),
        (ZeroDivisionError(), CriticalError),
        (ClientError(429, None, "null", None, {"Date": "now"}), RateLimitedError),
        (ClientError(401, None, "unauthorized", None, None), AuthenticationError),
        (
            ClientError(422, None, "Failed to deserialize the JSON body", None, None),
            InvalidRequestError,
        ),
        (ServerError(502, "<html>Bad Gateway</html>"), ExchangeUnavailableError),
        (ServerError(503, "maintenance"), ExchangeUnavailableError),
    ],
)
def test_classification_table(exc: BaseException, expected: type[ResilienceError]) -> None:
    err = classify(exc)
    assert type(err) is expected


def test_plain_critical_for_unknown() -> None:
    assert type(classify(RuntimeError("who knows"))) is CriticalError


def test_sdk_429_takes_retry_after_from_error_data() -> None:
    err = classify(ClientError(429, None, "null", None, {"Retry-After": "7"}))
    assert isinstance(err, RateLimitedError)
    assert err.retry_after == 7.0
    assert err.source == "server"
    assert err.status_code == 429


def test_operation_and_attempt_are_attached() -> None:
    err = classify(ConnectionResetError(), operation="Info.all_mids", attempt=2)
    assert err.operation == "Info.all_mids"
    assert err.attempt == 2
    assert "attempt=2" in str(err)


def test_classify_refuses_non_exceptions() -> None:
    with pytest.raises(TypeError, match="takes an exception"):
        classify("not an exception")  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("message", "expected"),
    [
        ("Insufficient margin to place order.", InsufficientFundsError),
        ("Invalid nonce: duplicate nonce 1700000000000", NonceError),
        ("User or API Wallet 0x" + "1" * 40 + " does not exist.", AuthenticationError),
        ("Too many cumulative requests sent (1234 > 1200) for cumulative volume", RateLimitedError),
        ("Order must have minimum value of $10.", InvalidRequestError),
        ("Price must be divisible by tick size.", InvalidRequestError),
        ("Could not parse JSON: <html>", ExchangeUnavailableError),
        ("Something entirely new", CriticalError),
    ],
)
def test_exchange_messages(message: str, expected: type[ResilienceError]) -> None:
    ok_with_error = {
        "status": "ok",
        "response": {"type": "order", "data": {"statuses": [{"error": message}]}},
    }
    for response in ({"status": "err", "response": message}, ok_with_error):
        err = classify_response(response, operation="Exchange.order")
        assert err is not None
        assert type(err) is expected
        assert err.operation == "Exchange.order"


def test_ok_responses_hold_no_error() -> None:
    assert classify_response({"status": "ok", "response": {"type": "cancel"}}) is None
    resting = {"status": "ok", "response": {"data": {"statuses": [{"resting": {"oid": 1}}]}}}
    assert classify_response(resting) is None
    assert classify_response([1, 2]) is None
    assert classify_response(None) is None


@given(status=statuses)
def test_status_table(status: int) -> None:
    err = classify_status(status)
    assert _one_branch(err)
    if status == 429:
        assert isinstance(err, RateLimitedError)
    elif status >= 500:
        assert isinstance(err, ExchangeUnavailableError)
    elif status in (401, 403):
        assert isinstance(err, AuthenticationError)
    elif status == 408:
        assert isinstance(err, RequestTimeoutError)
    elif 400 <= status < 500:
        assert isinstance(err, InvalidRequestError)
    else:
        assert type(err) is CriticalError


def test_status_refuses_bad_types() -> None:
    with pytest.raises(TypeError):
        classify_status("429")  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("5", 5.0),
        ("0.5", 0.5),
        ("-3", 0.0),
        ("nan", None),
        ("", None),
        (None, None),
        ("soon", None),
        ("Wed, 21 Oct 2015 07:28:00 GMT", 0.0),
    ],
)
def test_parse_retry_after(value: str | None, expected: float | None) -> None:
    assert parse_retry_after(value) == expected


def test_retry_after_http_date_in_future() -> None:
    assert parse_retry_after("Wed, 21 Oct 2015 07:28:30 GMT", now=1445412480.0) == 30.0


class _GatewayDown(Exception):
    pass


def test_registered_rules_win_and_can_be_removed() -> None:
    assert type(classify(_GatewayDown())) is CriticalError
    remove = register_rule(_GatewayDown, lambda e: ExchangeUnavailableError("gateway down"))
    try:
        err = classify(_GatewayDown("x"))
        assert type(err) is ExchangeUnavailableError
        assert isinstance(err.__cause__, _GatewayDown)
    finally:
        remove()
    assert type(classify(_GatewayDown())) is CriticalError


def test_rule_returning_none_falls_through() -> None:
    remove = register_rule(ConnectionError, lambda e: None)
    try:
        assert type(classify(ConnectionResetError())) is NetworkError
    finally:
        remove()


def test_register_rule_checks_arguments() -> None:
    with pytest.raises(TypeError):
        register_rule("ConnectionError", lambda e: None)  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        register_rule(ValueError, 5)  # type: ignore[arg-type]


# --- every exchange text, by Hyperliquid's own error type ---------------------------------------
# Each rule (and each alternative inside a rule) has a text here that only it classifies right,
# so deleting any of them fails this table.

EXCHANGE_TEXTS: list[tuple[str, str, type[ResilienceError]]] = [
    # nonces (recorded from the exchange)
    ("Invalid nonce: nonce too high 1791572677029 > 1791486156858", "NonceTooHigh", CriticalError),
    ("Invalid nonce: duplicate nonce 1791399877207", "DuplicateNonce", rt.NonceError),
    ("Invalid nonce: nonce too low 1791140676851 < 1791227196699", "NonceTooLow", rt.NonceError),
    ("Nonce mismatch.", "Nonce", rt.NonceError),
    ("Action already expired", "Expired", rt.NonceError),
    # budgets
    (
        "Too many cumulative requests sent (97460 > 97456) for cumulative volume traded "
        "$87457.46. Place taker orders to free up 1 request per USDC traded.",
        "CumulativeRequests",
        RateLimitedError,
    ),
    ("rate limit exceeded", "RateLimited", RateLimitedError),
    ("Too many requests, slow down", "RateLimited", RateLimitedError),
    # signing
    (
        "User or API Wallet 0x" + "12" * 20 + " does not exist.",
        "UnknownSigner",
        AuthenticationError,
    ),
    (
        "L1 error: User or API Wallet 0x" + "34" * 20 + " does not exist.",
        "UnknownSigner",
        AuthenticationError,
    ),
    (
        "Must deposit before performing actions. User: 0x" + "56" * 20,
        "UnknownSigner",
        AuthenticationError,
    ),
    (
        "Mainnet and testnet require different signature.",
        "WrongNetwork",
        AuthenticationError,
    ),
    ("Unable to recover signer.", "BadSignature", AuthenticationError),
    ("Invalid signature", "BadSignature", AuthenticationError),
    ("Unauthorized", "BadSignature", AuthenticationError),
    ("Forbidden", "BadSignature", AuthenticationError),
    # money (Error responses: PerpMargin, InsufficientSpotBalance; recorded transfer texts)
    ("Insufficient margin to place order. asset=0", "PerpMargin", InsufficientFundsError),
    (
        "Order has insufficient spot balance to trade",
        "InsufficientSpotBalance",
        InsufficientFundsError,
    ),
    ("Insufficient spot balance", "InsufficientSpotBalance", InsufficientFundsError),
    ("Insufficient balance for token transfer", "InsufficientBalance", InsufficientFundsError),
    (
        "Insufficient quote token (e.g., 1 USDC or USDT) balance for token transfer gas.",
        "InsufficientBalance",
        InsufficientFundsError,
    ),
    ("Insufficient funds", "InsufficientBalance", InsufficientFundsError),
    ("not enough collateral", "InsufficientBalance", InsufficientFundsError),
    # the exchange struggling
    ("Could not parse JSON: <html>502</html>", "Unparsable", ExchangeUnavailableError),
    ("Exchange under maintenance", "Maintenance", ExchangeUnavailableError),
    ("Service temporarily unavailable", "Maintenance", ExchangeUnavailableError),
    ("Please try again", "Maintenance", ExchangeUnavailableError),
    # outcomes (Error responses: IocCancel, MarketOrderNoLiquidity, BadAloPx, ReduceOnly,
    # the open-interest caps, MissingOrder)
    (
        "Order could not immediately match against any resting orders. asset=0",
        "IocCancel",
        rt.OrderNotFilled,
    ),
    ("No liquidity available for market order.", "MarketOrderNoLiquidity", rt.OrderNotFilled),
    (
        "Post only order would have immediately matched, bbo was 42000.5. asset=0",
        "BadAloPx",
        rt.OrderNotPlaced,
    ),
    ("Reduce only order would increase position. asset=0", "ReduceOnly", rt.OrderNotPlaced),
    (
        "Order would increase open interest while open interest is capped",
        "OpenInterestCap",
        rt.OrderNotPlaced,
    ),
    (
        "Order rejected due to price more aggressive than oracle while at open interest cap",
        "OpenInterestCap",
        rt.OrderNotPlaced,
    ),
    ("Order would increase open interest too quickly", "OpenInterestCap", rt.OrderNotPlaced),
    (
        "Order was never placed, already canceled, or filled. asset=3",
        "MissingOrder",
        rt.OrderGone,
    ),
    ("Order was never placed, already cancelled, or filled.", "MissingOrder", rt.OrderGone),
    ("Cannot modify canceled or filled order", "CannotModify", rt.OrderGone),
    (
        "Order price cannot be more than 95% away from the reference price",
        "PriceBand",
        InvalidRequestError,
    ),
    ("Unexpected number of trigger orders", "InvalidRequest", InvalidRequestError),
    # the request is wrong (Tick, MinTradeNtl, MinTradeSpotNtl, BadTriggerPx, Oracle,
    # PerpMaxPosition; recorded: invalid size; others)
    ("Price must be divisible by tick size. asset=0", "Tick", InvalidRequestError),
    ("Order must have minimum value of $10. asset=0", "MinTradeNtl", InvalidRequestError),
    ("Order must have minimum value of 10 USDC. asset=10000", "MinTradeNtl", InvalidRequestError),
    ("Invalid TP/SL price.", "BadTriggerPx", InvalidRequestError),
    ("Order price too far from oracle", "Oracle", InvalidRequestError),
    (
        "Order would cause position to exceed margin tier limit at current leverage",
        "PerpMaxPosition",
        InvalidRequestError,
    ),
    ("Duplicate cloid: 0x" + "ab" * 16, "DuplicateCloid", InvalidRequestError),
    (
        "Cannot set scheduled cancel time until enough volume traded. Required: $1000000. "
        "Traded: $167.22.",
        "ScheduleCancelVolume",
        InvalidRequestError,
    ),
    ("Signed action over weight limit of 200.", "WeightLimit", InvalidRequestError),
    ("Order has invalid size.", "InvalidRequest", InvalidRequestError),
    ("Order has invalid price.", "InvalidRequest", InvalidRequestError),
    ("Order has zero size.", "InvalidRequest", InvalidRequestError),
    ("Reduce only orders cannot be placed here", "InvalidRequest", InvalidRequestError),
    ("Post only orders are disabled", "InvalidRequest", InvalidRequestError),
    ("Duplicate order", "InvalidRequest", InvalidRequestError),
    ("Limit price too far from mark", "InvalidRequest", InvalidRequestError),
    ("Too many open orders", "InvalidRequest", InvalidRequestError),
    ("Leverage must be between 1 and 50", "InvalidRequest", InvalidRequestError),
    ("Asset is not a valid perp", "InvalidRequest", InvalidRequestError),
    ("Unknown asset 999", "InvalidRequest", InvalidRequestError),
    ("Unknown coin FOO", "InvalidRequest", InvalidRequestError),
    ("Unknown token PURR", "InvalidRequest", InvalidRequestError),
    ("Vault not registered: 0x" + "11" * 20, "InvalidRequest", InvalidRequestError),
    (
        "Failed to deserialize the JSON body into the target type",
        "InvalidRequest",
        InvalidRequestError,
    ),
    ("Failed to parse the request body as JSON", "InvalidRequest", InvalidRequestError),
]


@pytest.mark.parametrize(
    ("message", "kind", "expected"), EXCHANGE_TEXTS, ids=[t[0][:48] for t in EXCHANGE_TEXTS]
)
def test_every_exchange_text(message: str, kind: str, expected: type[ResilienceError]) -> None:
    err = rt.classify_message(message, operation="Exchange.order")
    assert type(err) is expected
    assert rt.exchange_error_kind(message) == kind
    assert err.operation == "Exchange.order"
    assert message in err.message
    assert "(" in err.message.removeprefix("exchange refused: " + message)  # the advice


# What a person reads next to each kind: "what to do next" is the point of the message, so the
# advice is pinned here word for word (changing it is a deliberate change to this table).
ADVICE: dict[str, str] = {
    "NonceTooHigh": "the host clock is more than a day ahead of the exchange's: fix the clock "
    "(NTP); a fresh nonce from the same clock cannot help",
    "DuplicateNonce": "nothing was done: sign again with a fresh nonce",
    "NonceTooLow": "nothing was done: sign again with a fresh nonce above the signer's recent "
    "ones; if it repeats, the host clock may be more than two days behind",
    "Nonce": "nothing was done: sign again with a fresh nonce",
    "Expired": "nothing was done: sign again with a later expiresAfter",
    "CumulativeRequests": "this address has used its action budget: one action per 10 s until "
    "more volume is traded; cancels have their own allowance",
    "RateLimited": "wait before any sharer of the budget calls again",
    "UnknownSigner": "the key signs for a wallet the exchange does not know (wrong key, an API "
    "wallet not approved, or the wrong network): check the key and the account",
    "WrongNetwork": "signed for the other network: check the base URL against the key's network",
    "BadSignature": "the signature was refused: check the key, the account and the SDK version",
    "PerpMargin": "not enough margin for this order: stop and check the account and the sizing",
    "InsufficientSpotBalance": "not enough spot balance for this order: stop and check the account",
    "InsufficientBalance": "not enough balance: stop and check the account",
    "Unparsable": "the answer was not JSON (a gateway page?): retry later",
    "Maintenance": "retry later",
    "IocCancel": "the IOC order found nothing to match: nothing traded; a new order is a new "
    "decision",
    "MarketOrderNoLiquidity": "nothing to match the market order: nothing traded; a new order "
    "is a new decision",
    "BadAloPx": "the post-only price crossed the book: nothing was placed; re-price it",
    "ReduceOnly": "the position is already closed or smaller: nothing was placed; re-read the "
    "position",
    "OpenInterestCap": "the asset is at its open-interest cap: nothing was placed; try later or "
    "smaller",
    "MissingOrder": "the order is not open (filled, cancelled, or never placed): nothing to cancel",
    "CannotModify": "the order to modify is no longer open (filled or cancelled): place a new "
    "one if needed",
    "Tick": "round the price to the asset's tick size (5 significant figures)",
    "MinTradeNtl": "orders must be worth at least $10 (10 quote tokens on spot): raise the size",
    "BadTriggerPx": "the trigger price is on the wrong side of the market: fix it",
    "Oracle": "the price is too far from the oracle price: fix the price",
    "PerpMaxPosition": "the position would exceed the margin tier at this leverage: size down "
    "or lower leverage",
    "PriceBand": "the price is outside the exchange's band around the reference price: fix the "
    "price",
    "DuplicateCloid": "use a fresh cloid",
    "ScheduleCancelVolume": "the dead man's switch needs more traded volume: use a local watchdog",
    "WeightLimit": "the batch is too large: split it",
    "InvalidRequest": "the exchange will never accept this request as it is: fix the code or "
    "configuration",
}


def test_every_rule_has_pinned_advice() -> None:
    assert [rule.kind for rule in RULES] == list(ADVICE)
    assert {kind for _, kind, _ in EXCHANGE_TEXTS} == set(ADVICE)


@pytest.mark.parametrize(
    ("message", "kind", "expected"), EXCHANGE_TEXTS, ids=[t[0][:48] for t in EXCHANGE_TEXTS]
)
def test_each_text_says_what_to_do_next(
    message: str, kind: str, expected: type[ResilienceError]
) -> None:
    err = rt.classify_message(message, operation="Exchange.order")
    assert err.message == f"exchange refused: {message} ({ADVICE[kind]})"
    assert str(err).startswith(f"{err.message} [operation=Exchange.order")


def test_the_rule_table_cannot_be_changed_at_run_time() -> None:
    # RULES is shared by every thread and every classify() call: a rule is a frozen value.
    rule = RULES[0]
    with pytest.raises(dataclasses.FrozenInstanceError):
        rule.kind = "Other"  # type: ignore[misc]
    assert rule.kind == "NonceTooHigh"


def test_unknown_text_is_critical_and_has_no_kind() -> None:
    err = rt.classify_message("Unexpected error (code=148)")
    assert type(err) is CriticalError
    assert rt.exchange_error_kind("Unexpected error (code=148)") is None


def test_nonce_too_high_says_fix_the_clock() -> None:
    err = rt.classify_message("Invalid nonce: nonce too high 1791572677029 > 1791486156858")
    assert not err.retryable
    assert "clock" in err.message


def test_address_budget_refusal_waits_ten_seconds_for_this_address_only() -> None:
    err = rt.classify_message("Too many cumulative requests sent (97460 > 97456)")
    assert isinstance(err, RateLimitedError)
    assert err.source == "address"
    assert err.retry_after == 10.0


def test_is_order_gone() -> None:
    assert rt.is_order_gone("Order was never placed, already canceled, or filled. asset=0")
    assert not rt.is_order_gone("Order could not immediately match against any resting orders.")
    assert not rt.is_order_gone("Insufficient margin to place order.")
    with pytest.raises(TypeError):
        rt.is_order_gone(None)  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        rt.exchange_error_kind(5)  # type: ignore[arg-type]


def test_outcomes_are_never_retried() -> None:
    calls = []

    def ioc() -> None:
        calls.append(1)
        raise rt.classify_message("Order could not immediately match against any resting orders.")

    policy = rt.RetryPolicy(attempts=4, base_delay=0)
    with pytest.raises(rt.OrderNotFilled):
        policy.call(ioc)
    assert calls == [1]


# --- answers with several orders: the worst error wins; outcomes alone are no error ------------


def _answer(*statuses: object) -> dict[str, object]:
    return {"status": "ok", "response": {"type": "order", "data": {"statuses": list(statuses)}}}


FILLED = {"filled": {"oid": 1, "totalSz": "0.1", "avgPx": "100"}}
RESTING = {"resting": {"oid": 2}}
IOC = {"error": "Order could not immediately match against any resting orders. asset=0"}
GONE = {"error": "Order was never placed, already canceled, or filled. asset=0"}
MARGIN = {"error": "Insufficient margin to place order. asset=0"}
TICK = {"error": "Price must be divisible by tick size. asset=0"}
BUSY = {"error": "Exchange under maintenance"}


@pytest.mark.parametrize(
    ("statuses", "expected"),
    [
        ((FILLED, RESTING, "success"), None),
        ((IOC,), None),
        ((GONE, GONE), None),
        ((FILLED, IOC), None),
        ((IOC, MARGIN), InsufficientFundsError),
        ((MARGIN, IOC), InsufficientFundsError),
        ((IOC, BUSY), ExchangeUnavailableError),
        ((BUSY, TICK), InvalidRequestError),
        ((TICK, MARGIN), InvalidRequestError),
        ((MARGIN, TICK), InsufficientFundsError),
    ],
)
def test_classify_response_takes_the_worst(
    statuses: tuple[object, ...], expected: type[ResilienceError] | None
) -> None:
    err = classify_response(_answer(*statuses))
    assert (None if err is None else type(err)) is expected


def test_top_level_outcome_is_no_error_either() -> None:
    assert classify_response({"status": "err", "response": IOC["error"]}) is None
    assert classify_response({"error": GONE["error"]}) is None


def test_classify_statuses_settles_each_order() -> None:
    result = rt.classify_statuses(_answer(FILLED, IOC, "success", MARGIN, GONE), operation="bulk")
    assert result is not None
    kinds = [None if r is None else type(r) for r in result]
    assert kinds == [None, rt.OrderNotFilled, None, InsufficientFundsError, rt.OrderGone]
    assert all(r is None or r.operation == "bulk" for r in result)
    assert rt.classify_statuses({"status": "err", "response": "Invalid nonce"}) is None
    assert rt.classify_statuses(None) is None
    assert rt.classify_statuses({"status": "ok", "response": {"data": {"statuses": "x"}}}) is None


@given(
    st.lists(
        st.sampled_from([FILLED, RESTING, "success", IOC, GONE, MARGIN, TICK, BUSY]), max_size=8
    )
)
def test_response_and_statuses_agree(statuses: list[object]) -> None:
    per_order = rt.classify_statuses(_answer(*statuses))
    assert per_order is not None and len(per_order) == len(statuses)
    worst = classify_response(_answer(*statuses))
    errors = [e for e in per_order if e is not None and not isinstance(e, rt.OrderOutcome)]
    if not errors:
        assert worst is None
    else:
        assert worst is not None
        critical = [e for e in errors if isinstance(e, CriticalError)]
        assert type(worst) is type((critical or errors)[0])


# --- Retry-After: capped, said in the log, never critical ---------------------------------------


@pytest.mark.parametrize("value", ["86401", "172800", "1e9", "Wed, 21 Oct 2099 07:28:00 GMT"])
def test_a_long_retry_after_is_capped_and_logged(
    value: str, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level("WARNING", logger="resilient_trading.classify"):
        err = classify_status(429, headers={"Retry-After": value}, operation="Info.meta")
    assert isinstance(err, RateLimitedError)
    assert err.retry_after == rt.MAX_RETRY_AFTER == 3600.0
    assert "Retry-After" in caplog.text
    assert "3600" in caplog.text
    assert "Info.meta" in caplog.text


@given(st.floats(min_value=0, max_value=1e12, allow_nan=False))
def test_retry_after_is_never_above_the_cap(seconds: float) -> None:
    for status in (429, 503):
        err = classify_status(status, headers={"Retry-After": repr(seconds)})
        assert isinstance(err, TransientError)
        assert err.retry_after == min(seconds, rt.MAX_RETRY_AFTER)


def test_a_day_long_retry_after_can_pause_a_limiter() -> None:
    err = classify(ClientError(429, None, "null", None, {"Retry-After": str(7 * 86400)}))
    assert isinstance(err, RateLimitedError)
    assert err.retry_after is not None
    rt.RateLimiter(rt.RateLimit(10, 1.0)).pause(err.retry_after)  # must not raise


# --- statuses, one by one (a hypothesis sample may miss any single one) --------------------------


@pytest.mark.parametrize(
    ("status", "expected"),
    [
        (400, InvalidRequestError),
        (401, AuthenticationError),
        (403, AuthenticationError),
        (404, InvalidRequestError),
        (408, RequestTimeoutError),
        (415, InvalidRequestError),
        (422, InvalidRequestError),
        (429, RateLimitedError),
        (499, InvalidRequestError),
        (500, ExchangeUnavailableError),
        (502, ExchangeUnavailableError),
        (503, ExchangeUnavailableError),
        (599, ExchangeUnavailableError),
        (399, CriticalError),
        (600, CriticalError),
        (200, CriticalError),
    ],
)
def test_each_status(status: int, expected: type[ResilienceError]) -> None:
    assert type(classify_status(status)) is expected
    assert classify_status(status).status_code == status


@pytest.mark.parametrize("status", [401, 403, 408, 429])
def test_sdk_statuses_that_ignore_the_body(status: int) -> None:
    # "Insufficient margin" in the body of a 403 is still a 403: credentials refused.
    err = classify(ClientError(status, None, "Insufficient margin to place order.", None, None))
    assert type(err) is type(classify_status(status))


def test_sdk_4xx_with_a_known_message_uses_the_message() -> None:
    err = classify(ClientError(400, None, "Insufficient margin to place order.", None, None))
    assert type(err) is InsufficientFundsError
    assert err.status_code == 400
    unknown = classify(ClientError(400, None, "something new", None, None))
    assert type(unknown) is InvalidRequestError


# --- exception families, one by one --------------------------------------------------------------


class _OwnOSError(OSError):
    """An OSError subclass keeps its errno (OSError itself maps errnos to subclasses)."""


NETWORK_ERRNOS = [
    errno.ECONNREFUSED,
    errno.ECONNRESET,
    errno.ECONNABORTED,
    errno.EPIPE,
    errno.ENETDOWN,
    errno.ENETUNREACH,
    errno.ENETRESET,
    errno.EHOSTDOWN,
    errno.EHOSTUNREACH,
    errno.ETIMEDOUT,
    errno.EAGAIN,
]


@pytest.mark.parametrize("code", NETWORK_ERRNOS, ids=[errno.errorcode[c] for c in NETWORK_ERRNOS])
def test_network_errnos(code: int) -> None:
    assert type(classify(_OwnOSError(code, "x"))) is NetworkError


@pytest.mark.parametrize("code", [errno.ENETDOWN, errno.ENETUNREACH, errno.EHOSTUNREACH])
def test_plain_oserror_with_a_network_errno(code: int) -> None:
    assert type(classify(OSError(code, "x"))) is NetworkError


@pytest.mark.parametrize("code", [errno.ENOSPC, errno.EACCES, errno.ENOENT, errno.EIO])
def test_other_errnos_are_critical(code: int) -> None:
    assert type(classify(_OwnOSError(code, "x"))) is CriticalError


def _urllib3_errors() -> list[BaseException]:
    import urllib3.exceptions as u3

    return [
        u3.ProtocolError("Connection aborted."),
        u3.NewConnectionError(None, "refused"),  # type: ignore[arg-type]
        u3.MaxRetryError(None, "/info"),  # type: ignore[arg-type]
        u3.ReadTimeoutError(None, "/info", "read timed out"),  # type: ignore[arg-type]
        u3.ConnectTimeoutError("connect timed out"),
    ]


FAMILIES: list[tuple[BaseException, type[ResilienceError]]] = [
    (requests.Timeout("t"), RequestTimeoutError),
    (httpx.ConnectTimeout("t"), RequestTimeoutError),
    (httpx.PoolTimeout("t"), RequestTimeoutError),
    (requests.exceptions.ContentDecodingError("gzip"), NetworkError),
    (requests.exceptions.ChunkedEncodingError("chunk"), NetworkError),
    (httpx.ProxyError("proxy"), NetworkError),
    (httpx.RemoteProtocolError("peer closed connection"), NetworkError),
    (socket.gaierror(-2, "Name or service not known"), NetworkError),
    (http.client.RemoteDisconnected("closed"), NetworkError),
    (ssl.SSLEOFError(8, "EOF occurred in violation of protocol"), NetworkError),
    (ssl.SSLWantWriteError(), NetworkError),
    (httpx.ReadError("read"), NetworkError),
    (http.client.IncompleteRead(b"x"), NetworkError),
    (socket.herror("host"), NetworkError),
    (ssl.SSLZeroReturnError(), NetworkError),
    (ssl.SSLWantReadError(), NetworkError),
    (ssl.SSLSyscallError(), NetworkError),
    (httpx.DecodingError("bad gzip"), ExchangeUnavailableError),
    (requests.exceptions.InvalidJSONError("bad json"), ExchangeUnavailableError),
]


@pytest.mark.parametrize(("exc", "expected"), FAMILIES, ids=[type(e).__name__ for e, _ in FAMILIES])
def test_exception_families(exc: BaseException, expected: type[ResilienceError]) -> None:
    assert type(classify(exc)) is expected


def test_urllib3_families() -> None:
    expected = [NetworkError, NetworkError, NetworkError, RequestTimeoutError, RequestTimeoutError]
    got = [type(classify(e)) for e in _urllib3_errors()]
    assert got == expected


# --- redact first, then cut: no key half survives a cut message ----------------------------------


@given(key=hex64, before=st.integers(min_value=200, max_value=320))
def test_a_key_near_the_cut_never_survives_in_an_exception_text(key: str, before: int) -> None:
    err = classify(ValueError("x" * before + key))
    for i in range(len(key) - 15):
        assert key[i : i + 16] not in str(err)


@given(key=hex64, before=st.integers(min_value=150, max_value=220))
def test_a_key_near_the_cut_never_survives_in_a_body(key: str, before: int) -> None:
    err = classify(ClientError(400, None, "y" * before + key, None, None))
    assert isinstance(err, InvalidRequestError)
    for i in range(len(key) - 15):
        assert key[i : i + 16] not in str(err)


# --- edges that mutation testing showed untested (tools/mutate.py) ------------------------------


def test_exception_text_is_cut_at_300_characters_after_the_type_name() -> None:
    err = classify(ValueError("v" * 1000))
    assert err.message == "unrecognised error ValueError: " + "v" * 299 + "…"
    exact = classify(ValueError("w" * 300))
    assert exact.message == "unrecognised error ValueError: " + "w" * 300


def test_body_is_cut_at_200_characters() -> None:
    err = classify_status(400, body="z" * 1000)
    assert err.message == "HTTP 400: request refused: " + "z" * 199 + "…"
    exact = classify_status(400, body="y" * 200)
    assert exact.message == "HTTP 400: request refused: " + "y" * 200


def test_message_names_the_type_and_its_text() -> None:
    assert classify(ValueError("boom")).message == "unrecognised error ValueError: boom"
    assert classify(ValueError()).message == "unrecognised error ValueError"


@pytest.mark.parametrize("body", [None, "", "   ", "null", " null "])
def test_an_empty_or_null_body_adds_nothing(body: str | None) -> None:
    assert classify_status(400, body=body).message == "HTTP 400: request refused"


def test_a_body_is_shown() -> None:
    assert classify_status(502, body="<html>Bad Gateway</html>").message == (
        "HTTP 502 from the exchange: <html>Bad Gateway</html>"
    )
    err = classify(ServerError(502, "<html>Bad Gateway</html>"))
    assert err.message == "HTTP 502 from the exchange: <html>Bad Gateway</html>"


def test_status_refuses_a_bool() -> None:
    with pytest.raises(TypeError, match="status must be an int"):
        classify_status(True)


def test_the_newest_rule_wins() -> None:
    first = register_rule(_GatewayDown, lambda e: ExchangeUnavailableError("first"))
    second = register_rule(_GatewayDown, lambda e: NetworkError("second"))
    try:
        assert type(classify(_GatewayDown())) is NetworkError
        second()
        second()  # removing twice is harmless
        assert type(classify(_GatewayDown())) is ExchangeUnavailableError
    finally:
        first()
        second()


def test_a_rule_must_return_a_resilience_error() -> None:
    remove = register_rule(_GatewayDown, lambda e: "down")  # type: ignore[arg-type,return-value]
    try:
        with pytest.raises(TypeError, match="not a ResilienceError"):
            classify(_GatewayDown())
    finally:
        remove()


def test_register_rule_refuses_a_class_that_is_no_exception() -> None:
    with pytest.raises(TypeError, match="exception class"):
        register_rule(int, lambda e: None)  # type: ignore[arg-type]


def test_an_attempt_set_by_a_rule_is_kept() -> None:
    remove = register_rule(_GatewayDown, lambda e: NetworkError("down", attempt=1))
    try:
        assert classify(_GatewayDown(), attempt=3).attempt == 1
        assert classify(ValueError(), attempt=3).attempt == 3
        assert classify(ValueError()).attempt is None
    finally:
        remove()


@pytest.mark.parametrize(
    "call",
    [rt.classify_message, rt.exchange_error_kind, rt.is_order_gone],
    ids=lambda f: f.__name__,
)
def test_message_functions_say_they_take_text(call: object) -> None:
    assert callable(call)
    with pytest.raises(TypeError, match="message must be a str"):
        call(5)


def test_an_unknown_text_is_not_an_order_gone() -> None:
    assert rt.is_order_gone("Something entirely new") is False


def test_top_level_error_text_is_classified() -> None:
    # The SDK's own answer for a body it cannot parse.
    err = classify_response({"error": "Could not parse JSON: <html>502</html>"})
    assert type(err) is ExchangeUnavailableError
    assert "Could not parse JSON" in err.message


@pytest.mark.parametrize("value", ["inf", "-inf", "Infinity", "nan"])
def test_an_infinite_retry_after_is_no_retry_after(value: str) -> None:
    assert parse_retry_after(value) is None


def test_retry_after_header_name_in_lower_case() -> None:
    err = classify_status(429, headers={"retry-after": "5"})
    assert isinstance(err, RateLimitedError) and err.retry_after == 5.0


def test_headers_that_cannot_be_read_are_no_headers(caplog: pytest.LogCaptureFixture) -> None:
    class Broken:
        def get(self, name: str) -> str:
            raise RuntimeError(f"cannot read {name}")

    with caplog.at_level("DEBUG", logger="resilient_trading.classify"):
        err = classify_status(429, headers=Broken())
    assert isinstance(err, RateLimitedError)
    assert err.retry_after is None
    assert "could not read header Retry-After" in caplog.text


def test_a_retry_after_at_the_cap_is_not_reported_as_capped(
    caplog: pytest.LogCaptureFixture,
) -> None:
    with caplog.at_level("WARNING", logger="resilient_trading.classify"):
        err = classify_status(429, headers={"Retry-After": "3600"})
    assert isinstance(err, RateLimitedError) and err.retry_after == 3600.0
    assert caplog.text == ""


def test_sdk_retry_after_from_the_header_argument() -> None:
    # The SDK passes the response headers as ``header`` for a JSON error body.
    err = classify(ClientError(429, None, "null", {"Retry-After": "4"}, None))
    assert isinstance(err, RateLimitedError) and err.retry_after == 4.0
    err = classify(ClientError(429, None, "null", {"Retry-After": "4"}, "some data"))
    assert isinstance(err, RateLimitedError) and err.retry_after == 4.0
    err = classify(ClientError(429, None, "null", None, "not headers"))
    assert isinstance(err, RateLimitedError) and err.retry_after is None


def test_python_310_asyncio_timeout_is_recognised_by_name() -> None:
    # Before 3.11 asyncio.TimeoutError was its own class in asyncio.exceptions.
    old = type("TimeoutError", (Exception,), {"__module__": "asyncio.exceptions"})
    assert type(classify(old())) is RequestTimeoutError
