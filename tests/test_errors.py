"""The error tree: disjoint branches, context in messages, no secrets anywhere."""

from __future__ import annotations

import concurrent.futures
import copy
import inspect
import math
import pickle
from typing import Any

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


# --- outcomes: a third branch, neither retried nor critical ------------------------------------

OUTCOMES = [rt.OrderNotFilled, rt.OrderNotPlaced, rt.OrderGone]


@pytest.mark.parametrize("cls", OUTCOMES)
def test_outcomes_are_neither_transient_nor_critical(cls: type[ResilienceError]) -> None:
    err = cls("IOC found nothing")
    assert isinstance(err, rt.OrderOutcome)
    assert not isinstance(err, TransientError)
    assert not isinstance(err, CriticalError)
    assert not err.retryable


def test_rate_limited_sources() -> None:
    assert RateLimitedError("x", source="address", retry_after=10).source == "address"
    with pytest.raises(ValueError, match="address"):
        RateLimitedError("x", source="ip")


# --- messages: redacted first, then cut ---------------------------------------------------------


@given(key=hex_key, before=st.integers(min_value=1900, max_value=2100))
def test_a_key_at_the_message_limit_never_survives(key: str, before: int) -> None:
    err = ResilienceError("x" * before + key)
    assert len(err.message) <= rt._errors.MESSAGE_LIMIT
    for i in range(len(key) - 15):
        assert key[i : i + 16] not in str(err)


def test_text_attributes_are_redacted() -> None:
    secret = "Zq9SeCrEt"
    lock = LockTimeoutError(
        "busy", lock_path=f"redis://:{secret}@h:6379#k", holder=f"pid 1 token={secret}"
    )
    opened = rt.CircuitOpenError(
        "open",
        name="orders",
        latched=True,
        reason=f"AuthenticationError: Authorization: Bearer {secret}",
        opened_at=1.0,
        retry_at=None,
        operation=f"POST /exchange?key={secret}",
    )
    for value in (lock.lock_path, lock.holder, opened.reason, opened.operation):
        assert value is not None
        assert secret not in value


# --- every error pickles with its attributes (a ProcessPoolExecutor must not break) --------------


def _all_error_classes() -> list[type[ResilienceError]]:
    found: list[type[ResilienceError]] = []
    todo: list[type[ResilienceError]] = [ResilienceError]
    while todo:
        cls = todo.pop()
        if cls.__module__.startswith("resilient_trading"):
            found.append(cls)
        todo.extend(cls.__subclasses__())
    return sorted(set(found), key=lambda c: c.__name__)


ALL_ERRORS = _all_error_classes()


def _value_for(name: str, annotation: str) -> st.SearchStrategy[object]:
    special: dict[str, st.SearchStrategy[object]] = {
        "attempt": st.none() | st.integers(min_value=1, max_value=100),
        "source": st.sampled_from(rt._errors.RATE_LIMIT_SOURCES),
        "retry_after": st.none() | st.floats(min_value=0, max_value=3600),
        "status_code": st.none() | st.integers(min_value=100, max_value=599),
    }
    if name in special:
        return special[name]
    text = st.text(max_size=30)
    number = st.floats(min_value=0, max_value=1e9)
    kinds: list[tuple[str, st.SearchStrategy[object]]] = [
        ("bool", st.booleans()),
        ("float", number),
        ("int", st.integers(min_value=0, max_value=10**9)),
        ("str", text),
    ]
    for word, strategy in kinds:
        if word in annotation:
            return st.none() | strategy if "None" in annotation else strategy
    return text


@st.composite
def any_error(draw: st.DrawFn) -> ResilienceError:
    cls = draw(st.sampled_from(ALL_ERRORS))
    params = list(inspect.signature(cls.__init__).parameters.values())[1:]
    kwargs: dict[str, Any] = {
        p.name: draw(_value_for(p.name, str(p.annotation)))
        for p in params
        if p.name != "message" and p.kind is p.KEYWORD_ONLY
    }
    return cls(draw(st.text(max_size=60)), **kwargs)


def test_the_tree_has_every_class() -> None:
    names = {cls.__name__ for cls in ALL_ERRORS}
    assert {"LockTimeoutError", "StateCorruptedError", "CircuitOpenError", "OrderGone"} <= names


@given(any_error())
def test_every_error_pickles_with_its_attributes(err: ResilienceError) -> None:
    for copy_ in (pickle.loads(pickle.dumps(err)), copy.deepcopy(err)):
        assert type(copy_) is type(err)
        assert copy_.__dict__ == err.__dict__
        assert copy_.args == err.args
        assert str(copy_) == str(err)
        assert repr(copy_) == repr(err)


def _raise(name: str) -> None:
    cls = next(c for c in _all_error_classes() if c.__name__ == name)
    params = list(inspect.signature(cls.__init__).parameters.values())[1:]
    kwargs: dict[str, Any] = {}
    for p in params:
        if p.kind is p.KEYWORD_ONLY and p.default is p.empty:
            kwargs[p.name] = 7 if "int" in str(p.annotation) else f"{p.name}-value"
    raise cls(f"raised in a worker: {name}", **kwargs)


def test_every_error_crosses_a_process_pool() -> None:
    names = [cls.__name__ for cls in ALL_ERRORS]
    with concurrent.futures.ProcessPoolExecutor(max_workers=1) as pool:
        futures = [pool.submit(_raise, name) for name in names]
        for name, future in zip(names, futures, strict=True):
            err = future.exception(timeout=30)
            assert type(err).__name__ == name
            assert isinstance(err, ResilienceError)
            assert err.message == f"raised in a worker: {name}"
