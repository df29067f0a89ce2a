"""classify(): every exception lands on exactly one branch, with its cause and without secrets."""

from __future__ import annotations

import asyncio
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


def _one_branch(err: ResilienceError) -> bool:
    return isinstance(err, TransientError) != isinstance(err, CriticalError)


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
    with pytest.raises(TypeError):
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
        ("Order could not immediately match against any resting orders. asset=0", TransientError),
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
