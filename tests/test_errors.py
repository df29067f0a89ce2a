"""The error tree: disjoint branches, context in messages, no secrets anywhere."""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

import resilient_trading as rt
from resilient_trading import (
    CriticalError,
    LockTimeoutError,
    RateLimitedError,
    ResilienceError,
    StateCorruptedError,
    TransientError,
    redact,
)

TRANSIENT = [
    rt.NetworkError,
    rt.RequestTimeoutError,
    rt.RateLimitedError,
    rt.ExchangeUnavailableError,
    rt.NonceError,
]
CRITICAL = [
    rt.AuthenticationError,
    rt.InsufficientFundsError,
    rt.InvalidRequestError,
]

hex_key = st.text(alphabet="0123456789abcdef", min_size=64, max_size=64)


@pytest.mark.parametrize("cls", TRANSIENT)
def test_transient_branch_is_disjoint_from_critical(cls: type[ResilienceError]) -> None:
    err = cls("boom")
    assert isinstance(err, TransientError)
    assert not isinstance(err, CriticalError)
    assert err.retryable


@pytest.mark.parametrize("cls", CRITICAL)
def test_critical_branch_is_disjoint_from_transient(cls: type[ResilienceError]) -> None:
    err = cls("boom")
    assert isinstance(err, CriticalError)
    assert not isinstance(err, TransientError)
    assert not err.retryable


def test_context_appears_in_message() -> None:
    err = RateLimitedError("slow down", retry_after=2.5, operation="Info.meta", attempt=3)
    text = str(err)
    assert "slow down" in text
    assert "operation=Info.meta" in text
    assert "attempt=3" in text
    assert "retry_after=2.5s" in text
    assert repr(err).startswith("RateLimitedError(")


def test_lock_timeout_names_lock_and_holder() -> None:
    err = LockTimeoutError("busy", lock_path="/tmp/x.lock", holder="pid 42", timeout=1.0)
    assert isinstance(err, TransientError)
    assert err.lock_path == "/tmp/x.lock"
    assert err.holder == "pid 42"


def test_state_corrupted_names_backup() -> None:
    err = StateCorruptedError("bad", path="/s.json", backup_path="/s.json.bak")
    assert isinstance(err, CriticalError)
    assert err.backup_path == "/s.json.bak"


@pytest.mark.parametrize("bad", [-1.0, math.nan, math.inf, -math.inf])
def test_retry_after_rejects_bad_values(bad: float) -> None:
    with pytest.raises(ValueError, match="retry_after"):
        TransientError("x", retry_after=bad)


@pytest.mark.parametrize("bad", ["3", True, object()])
def test_retry_after_rejects_wrong_types(bad: object) -> None:
    with pytest.raises(TypeError, match="retry_after"):
        TransientError("x", retry_after=bad)  # type: ignore[arg-type]


@pytest.mark.parametrize("bad", [0, -2, True])
def test_attempt_must_be_positive(bad: int) -> None:
    with pytest.raises(ValueError, match="attempt"):
        ResilienceError("x", attempt=bad)


def test_rate_limited_source_is_checked() -> None:
    assert RateLimitedError("x", source="local").source == "local"
    with pytest.raises(ValueError, match="source"):
        RateLimitedError("x", source="elsewhere")


@given(key=hex_key, prefix=st.sampled_from(["", "0x"]), text=st.text(max_size=40))
def test_no_private_key_survives_in_any_error(key: str, prefix: str, text: str) -> None:
    secret = prefix + key
    for cls in [*TRANSIENT, *CRITICAL, CriticalError, TransientError]:
        err = cls(f"{text} failed with key {secret}", operation=f"sign({secret})")
        assert key not in str(err)
        assert key not in repr(err)
        assert key not in err.message


@given(
    field=st.sampled_from(
        ["Authorization", "authorization", "X-API-Key", "api_key", "password", "token", "secret"]
    ),
    sep=st.sampled_from([": ", "=", '": "', "':'"]),
    value=st.text(
        alphabet="abcdefghijklmnopqrstuvwxyzABCDEF0123456789._-", min_size=6, max_size=40
    ),
)
def test_credential_fields_are_redacted(field: str, sep: str, value: str) -> None:
    quote = '"' if sep == '": "' else ("'" if sep == "':'" else "")
    value = "Zq9" + value
    text = f"headers {quote}{field}{sep}{value}{quote} end"
    assert value not in redact(text)


def test_addresses_are_kept() -> None:
    address = "0x" + "ab" * 20
    assert address in redact(f"User or API Wallet {address} does not exist.")
