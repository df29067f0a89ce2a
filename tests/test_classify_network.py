"""classify() on exceptions raised by real sockets on 127.0.0.1, through requests, httpx and the
Hyperliquid SDK's own HTTP layer."""

from __future__ import annotations

import socket
import ssl
from http.server import BaseHTTPRequestHandler

import httpx
import pytest
import requests
from hyperliquid.api import API

from resilient_trading import (
    MAX_RETRY_AFTER,
    ExchangeUnavailableError,
    InvalidRequestError,
    NetworkError,
    RateLimitedError,
    RequestTimeoutError,
    classify,
)
from tests._http import closed_port, http_server, reset_server, stall_server

pytestmark = pytest.mark.timeout(30)


def _answer(status: int, headers: dict[str, str], body: bytes):  # type: ignore[no-untyped-def]
    def respond(_: BaseHTTPRequestHandler) -> tuple[int, dict[str, str], bytes]:
        return status, headers, body

    return respond


def test_refused_connection_socket_requests_httpx() -> None:
    port = closed_port()
    with pytest.raises(ConnectionRefusedError) as raw:
        socket.create_connection(("127.0.0.1", port), timeout=2)
    with pytest.raises(requests.ConnectionError) as via_requests:
        requests.get(f"http://127.0.0.1:{port}/", timeout=2)
    with pytest.raises(httpx.ConnectError) as via_httpx:
        httpx.get(f"http://127.0.0.1:{port}/", timeout=2)
    for info in (raw, via_requests, via_httpx):
        err = classify(info.value)
        assert isinstance(err, NetworkError), repr(err)
        assert err.__cause__ is info.value


def test_stalled_server_is_a_timeout() -> None:
    with stall_server() as url:
        host, port = url.removeprefix("http://").split(":")
        with socket.create_connection((host, int(port)), timeout=2) as conn:
            conn.settimeout(0.2)
            with pytest.raises(TimeoutError) as raw:
                conn.recv(10)
        with pytest.raises(requests.ReadTimeout) as via_requests:
            requests.get(url, timeout=0.3)
        with pytest.raises(httpx.ReadTimeout) as via_httpx:
            httpx.get(url, timeout=0.3)
        with pytest.raises(requests.ReadTimeout) as via_sdk:
            API(url, timeout=0.3).post("/info", {"type": "meta"})
    for info in (raw, via_requests, via_httpx, via_sdk):
        assert isinstance(classify(info.value), RequestTimeoutError)


def test_reset_connection_is_a_network_error() -> None:
    with reset_server() as url:
        with pytest.raises(requests.ConnectionError) as via_requests:
            requests.post(url, json={}, timeout=2)
        with pytest.raises((httpx.ReadError, httpx.RemoteProtocolError)) as via_httpx:
            httpx.post(url, json={}, timeout=2)
        with pytest.raises(requests.ConnectionError) as via_sdk:
            API(url, timeout=2).post("/exchange", {"action": {}})
    for info in (via_requests, via_httpx, via_sdk):
        assert isinstance(classify(info.value), NetworkError)


def test_429_with_retry_after_through_requests_and_httpx() -> None:
    with http_server(_answer(429, {"Retry-After": "7"}, b"slow down")) as url:
        response = requests.get(url, timeout=2)
        with pytest.raises(requests.HTTPError) as via_requests:
            response.raise_for_status()
        with pytest.raises(httpx.HTTPStatusError) as via_httpx:
            httpx.get(url, timeout=2).raise_for_status()
    for info in (via_requests, via_httpx):
        err = classify(info.value)
        assert isinstance(err, RateLimitedError)
        assert err.retry_after == 7.0
        assert err.status_code == 429


def test_hyperliquid_style_429_through_the_sdk() -> None:
    # The real exchange answers 429 with the body `null` and no Retry-After.
    with (
        http_server(_answer(429, {"Content-Type": "application/json"}, b"null")) as url,
        pytest.raises(Exception) as info,
    ):
        API(url, timeout=2).post("/info", {"type": "allMids"})
    assert type(info.value).__name__ == "ClientError"
    err = classify(info.value)
    assert isinstance(err, RateLimitedError)
    assert err.retry_after is None


def test_503_through_requests_httpx_and_sdk() -> None:
    with http_server(_answer(503, {"Retry-After": "2"}, b"<html>maintenance</html>")) as url:
        with pytest.raises(requests.HTTPError) as via_requests:
            requests.get(url, timeout=2).raise_for_status()
        with pytest.raises(httpx.HTTPStatusError) as via_httpx:
            httpx.get(url, timeout=2).raise_for_status()
        with pytest.raises(Exception) as via_sdk:
            API(url, timeout=2).post("/info", {"type": "meta"})
    assert type(via_sdk.value).__name__ == "ServerError"
    for info in (via_requests, via_httpx, via_sdk):
        err = classify(info.value)
        assert isinstance(err, ExchangeUnavailableError)
        assert err.status_code == 503


def test_tls_to_a_plain_http_server_is_a_network_error() -> None:
    with http_server(_answer(200, {}, b"ok")) as url:
        host, port = url.removeprefix("http://").split(":")
        context = ssl.create_default_context()
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
        with (
            socket.create_connection((host, int(port)), timeout=2) as raw,
            pytest.raises(ssl.SSLError) as info,
        ):
            context.wrap_socket(raw, server_hostname=host)
    assert isinstance(classify(info.value), NetworkError)


def test_a_day_long_retry_after_from_a_real_server_is_capped() -> None:
    two_days = str(2 * 86400)
    with http_server(_answer(429, {"Retry-After": two_days}, b"slow down")) as url:
        with pytest.raises(requests.HTTPError) as via_requests:
            requests.get(url, timeout=2).raise_for_status()
        with pytest.raises(httpx.HTTPStatusError) as via_httpx:
            httpx.get(url, timeout=2).raise_for_status()
    for info in (via_requests, via_httpx):
        err = classify(info.value)
        assert isinstance(err, RateLimitedError)  # slowed down, never critical
        assert err.retry_after == MAX_RETRY_AFTER


def test_a_key_in_a_real_error_body_never_survives_the_cut() -> None:
    key = "4c0883a69102937d6231471b5dbb6204fe5129617082792ae468d01a3f362318"
    for before in (150, 170, 190):
        body = ("e" * before + key).encode()
        with (
            http_server(_answer(400, {"Content-Type": "text/plain"}, body)) as url,
            pytest.raises(Exception) as info,
        ):
            API(url, timeout=2).post("/exchange", {"action": {}})
        err = classify(info.value)
        assert isinstance(err, InvalidRequestError)
        for i in range(len(key) - 15):
            assert key[i : i + 16] not in str(err)
