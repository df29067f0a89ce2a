"""The store's envelope codec, pure: round trips, migrations, damage, unstorable documents."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from resilient_trading._envelope import (
    MAX_DEPTH,
    Decoded,
    EnvelopeError,
    decode,
    encode,
    find_unstorable,
    migrate,
)

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
    max_leaves=20,
)
documents = st.dictionaries(st.text(), json_values, max_size=6)
schemas = st.none() | st.integers(min_value=0, max_value=10**6)


@given(data=documents, generation=st.integers(min_value=0, max_value=2**62), schema=schemas)
def test_encode_then_decode_round_trips(
    data: dict[str, Any], generation: int, schema: int | None
) -> None:
    assert find_unstorable(data) is None
    raw = encode(data, generation, schema)
    assert raw.endswith(b"\n") and raw.isascii()
    assert decode(raw) == Decoded(data, generation, schema)


@given(data=documents)
def test_encoding_is_canonical(data: dict[str, Any]) -> None:
    shuffled = dict(reversed(list(data.items())))
    assert encode(data, 1, None) == encode(shuffled, 1, None)


@given(data=documents)
def test_plain_json_without_the_marker_is_legacy_generation_0(data: dict[str, Any]) -> None:
    data = {k: v for k, v in data.items() if k not in ("generation", "sha256", "data", "schema")}
    data.pop("__resilient_trading__", None)
    assert decode(json.dumps(data).encode()) == Decoded(data, 0, None)


@pytest.mark.parametrize(
    ("raw", "what"),
    [
        (b"", "empty"),
        (b"{", "not valid JSON"),
        (b"[]", "top level"),
        (b'{"__resilient_trading__":2,"generation":1,"data":{}}', "marker"),
        (b'{"__resilient_trading__":true,"generation":1,"data":{}}', "marker"),
        (b'{"__resilient_trading__":1,"generation":"1","sha256":"x","data":{}}', "incomplete"),
        (
            b'{"__resilient_trading_X":1,"generation":1,"schema":null,"sha256":"x","data":{}}',
            "damaged",
        ),
        (b'{"generation":1,"schema":null,"sha256":"x","data":{}}', "damaged"),
        (b"[" * 50_000 + b"]" * 50_000, "nested too deeply"),
    ],
)
def test_damage_is_an_envelope_error_never_legacy_data(raw: bytes, what: str) -> None:
    with pytest.raises(EnvelopeError, match=what):
        decode(raw)


def test_migrate_upgrades_older_and_refuses_newer() -> None:
    def to_v3(data: dict[str, Any], version: int) -> dict[str, Any]:
        return {**data, "from": version}

    assert migrate(Decoded({"a": 1}, 5, 1), 3, to_v3) == {"a": 1, "from": 1}
    assert migrate(Decoded({"a": 1}, 5, None), 3, to_v3) == {"a": 1, "from": 0}
    assert migrate(Decoded({"a": 1}, 5, 3), 3, to_v3) == {"a": 1}
    with pytest.raises(EnvelopeError, match="newer"):
        migrate(Decoded({"a": 1}, 5, 4), 3, to_v3)
    with pytest.raises(TypeError, match="must return a dict"):
        migrate(Decoded({}, 1, 1), 2, lambda data, version: [])  # type: ignore[arg-type,return-value]


@given(depth=st.integers(min_value=0, max_value=MAX_DEPTH + 20))
def test_depth_limit_is_exact(depth: int) -> None:
    value: Any = 0
    for _ in range(depth):
        value = [value]
    doc = {"v": value}  # the document itself is one level
    found = find_unstorable(doc)
    if depth + 1 > MAX_DEPTH:
        assert found is not None and "nested more than" in found
    else:
        assert found is None
        assert decode(encode(doc, 1, None)).data == doc
