"""TypedStore: dataclasses and Pydantic models as state, validated, with the store's guarantees."""

from __future__ import annotations

import dataclasses
import multiprocessing
from pathlib import Path
from typing import Any

import pydantic
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from resilient_trading import LockedJsonStore, StateCorruptedError, TypedStore


@dataclasses.dataclass
class Counters:
    n: int = 0
    names: list[str] = dataclasses.field(default_factory=list)


class Position(pydantic.BaseModel):
    coin: str = "BTC"
    size: float = 0.0
    orders: dict[str, str] = {}


def test_dataclass_round_trip(tmp_path: Path) -> None:
    store = TypedStore(LockedJsonStore(tmp_path / "s.json"), Counters)
    assert store.read() == Counters()
    with store.transaction() as c:
        c.n += 2
        c.names.append("a")
    assert store.read() == Counters(n=2, names=["a"])


def test_pydantic_round_trip_and_validation(tmp_path: Path) -> None:
    raw = LockedJsonStore(tmp_path / "p.json")
    store = TypedStore(raw, Position)
    with store.transaction() as pos:
        pos.size = 0.5
        pos.orders["0xabc"] = "open"
    assert store.read() == Position(size=0.5, orders={"0xabc": "open"})
    with raw.transaction() as doc:
        doc["size"] = "not a number"
    with pytest.raises(StateCorruptedError, match="does not fit Position"):
        store.read()


def test_exception_writes_nothing(tmp_path: Path) -> None:
    store = TypedStore(LockedJsonStore(tmp_path / "s.json"), Counters)
    with store.transaction() as c:
        c.n = 1
    with pytest.raises(RuntimeError), store.transaction() as c:
        c.n = 99
        raise RuntimeError("abort")
    assert store.read().n == 1


def test_bad_arguments(tmp_path: Path) -> None:
    with pytest.raises(TypeError, match="LockedJsonStore"):
        TypedStore("s.json", Counters)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="decode and encode"):
        TypedStore(LockedJsonStore(tmp_path / "s.json"), int)


def _bump(path: str) -> None:
    store = TypedStore(LockedJsonStore(path, durable=False), Counters)
    for _ in range(100):
        with store.transaction() as c:
            c.n += 1


def test_processes_never_lose_an_update(tmp_path: Path) -> None:
    path = str(tmp_path / "s.json")
    ctx = multiprocessing.get_context("spawn")
    procs = [ctx.Process(target=_bump, args=(path,)) for _ in range(3)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
    assert TypedStore(LockedJsonStore(path), Counters).read().n == 300


@settings(max_examples=30, deadline=None)
@given(size=st.floats(allow_nan=False, allow_infinity=False), coin=st.text(max_size=5))
def test_any_valid_model_round_trips(size: float, coin: str) -> None:
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        store = TypedStore(LockedJsonStore(Path(tmp) / "s.json"), Position)
        with store.transaction() as pos:
            pos.size, pos.coin = size, coin
        got: Any = store.read()
        assert (got.size, got.coin) == (size, coin)
