"""A stateful hypothesis model of LockedJsonStore: transactions, failures, reads, reopenings,
corruption and restores, checked against a plain dict."""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path
from typing import Any

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from resilient_trading import LockedJsonStore, StateCorruptedError

keys = st.sampled_from(["a", "b", "c", "nested"])
values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(10**6), 10**6)
    | st.text(max_size=8)
    | st.floats(allow_nan=False, allow_infinity=False),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=4), inner, max_size=3)
    ),
    max_leaves=6,
)


class StoreMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.dir = Path(tempfile.mkdtemp(prefix="rt-store-"))
        self.path = self.dir / "state.json"
        self.store = LockedJsonStore(self.path, durable=False)
        self.model: dict[str, Any] = {}
        self.previous: dict[str, Any] | None = None  # what the backup holds
        self.corrupt = False

    def teardown(self) -> None:
        shutil.rmtree(self.dir, ignore_errors=True)

    def _committed(self, new: dict[str, Any]) -> None:
        if self.path.exists():
            self.previous = self.model
        self.model = new

    @precondition(lambda self: not self.corrupt)
    @rule(key=keys, value=values)
    def set_value(self, key: str, value: Any) -> None:
        existed = self.path.exists()
        with self.store.transaction() as doc:
            doc[key] = value
        if existed:
            self.previous = self.model
        self.model = {**self.model, key: value}

    @precondition(lambda self: not self.corrupt)
    @rule(key=keys)
    def delete_value(self, key: str) -> None:
        existed = self.path.exists()
        with self.store.transaction() as doc:
            doc.pop(key, None)
        if existed:
            self.previous = self.model
        self.model = {k: v for k, v in self.model.items() if k != key}

    @precondition(lambda self: not self.corrupt)
    @rule(key=keys, value=values)
    def failing_transaction(self, key: str, value: Any) -> None:
        with pytest.raises(KeyError), self.store.transaction() as doc:
            doc[key] = value
            raise KeyError("abort")

    @precondition(lambda self: not self.corrupt)
    @rule(key=keys)
    def unstorable_value(self, key: str) -> None:
        with pytest.raises(ValueError), self.store.transaction() as doc:
            doc[key] = float("nan")

    @rule()
    def reopen(self) -> None:
        self.store = LockedJsonStore(self.path, durable=False)

    @precondition(lambda self: self.path.exists() and not self.corrupt)
    @rule(cut=st.integers(min_value=0, max_value=40))
    def corrupt_file(self, cut: int) -> None:
        raw = self.path.read_bytes()
        self.path.write_bytes(raw[: min(cut, len(raw) - 1)])
        self.corrupt = True

    @precondition(lambda self: self.corrupt)
    @rule()
    def corrupt_file_is_refused(self) -> None:
        with pytest.raises(StateCorruptedError):
            self.store.read()
        with pytest.raises(StateCorruptedError), self.store.transaction():
            pass

    @precondition(lambda self: self.corrupt)
    @rule()
    def restore(self) -> None:
        if self.previous is None:
            with pytest.raises(StateCorruptedError):
                self.store.restore_backup()
            self.path.unlink()  # the operator starts afresh
            self.model = {}
        else:
            self.store.restore_backup()
            self.model = self.previous
        self.corrupt = False

    @invariant()
    def file_matches_model(self) -> None:
        if not self.corrupt:
            assert self.store.read() == self.model
            assert LockedJsonStore(self.path).read() == self.model


TestStoreMachine = StoreMachine.TestCase
TestStoreMachine.settings = settings(max_examples=40, stateful_step_count=25, deadline=None)
