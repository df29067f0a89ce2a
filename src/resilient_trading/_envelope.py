"""The on-disk envelope of a LockedJsonStore document: a pure codec, no I/O.

::

    {"__resilient_trading__":1,"generation":42,"schema":null,"sha256":"...","data":{...}}\\n

``data`` is serialised with sorted keys and no spaces, so the same document always gives the
same bytes and the checksum covers exactly what :func:`decode` parses. A plain JSON object
without the marker (a file from before the library managed it) decodes as the data of
generation 0. Anything that looks like an envelope but is damaged (a flipped bit in the
marker, a missing field, a checksum mismatch) is an :class:`EnvelopeError`, never legacy data.

:func:`find_unstorable` refuses, before anything is written, what could not be read back:
values JSON cannot hold, non-str keys, cycles, and nesting deeper than :data:`MAX_DEPTH`.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from collections.abc import Callable
from typing import Any

__all__ = [
    "MAGIC",
    "MAX_DEPTH",
    "Decoded",
    "EnvelopeError",
    "Migration",
    "decode",
    "dump_data",
    "encode",
    "find_unstorable",
    "migrate",
]

MAGIC = "__resilient_trading__"
#: The deepest nesting a document may have (a dict or list inside another counts one level).
MAX_DEPTH = 100
_PREFIX = b'{"' + MAGIC.encode() + b'":1,"generation":'
_ENVELOPE_KEYS = frozenset({"generation", "schema", "sha256", "data"})
Migration = Callable[[dict[str, Any], int], dict[str, Any]]


class EnvelopeError(ValueError):
    """The bytes are not a readable document; ``what`` says why (for a message naming the file)."""

    def __init__(self, what: str) -> None:
        self.what = what
        super().__init__(what)


@dataclasses.dataclass(frozen=True, slots=True)
class Decoded:
    """A decoded file: its data, generation and schema version (``None``: unversioned)."""

    data: dict[str, Any]
    generation: int
    schema: int | None


def dump_data(data: dict[str, Any]) -> str:
    """The canonical text of ``data`` (what the checksum covers)."""
    return json.dumps(data, sort_keys=True, separators=(",", ":"), allow_nan=False)


def _checksum(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def encode(data: dict[str, Any], generation: int, schema: int | None) -> bytes:
    """The envelope's bytes. Call :func:`find_unstorable` first: this only serialises."""
    text = dump_data(data)
    return (
        f'{{"{MAGIC}":1,"generation":{generation},"schema":{json.dumps(schema)},'
        f'"sha256":"{_checksum(text)}","data":{text}}}\n'
    ).encode()


def _looks_like_envelope(raw: bytes, doc: dict[str, Any]) -> bool:
    # Our writer's first bytes, with at most a few bytes damaged, or most envelope fields.
    head = raw.lstrip()[: len(_PREFIX)]
    if len(head) == len(_PREFIX) and sum(a != b for a, b in zip(head, _PREFIX, strict=True)) <= 4:
        return True
    return len(_ENVELOPE_KEYS & doc.keys()) >= 3


def decode(raw: bytes) -> Decoded:
    """Parse a file's bytes. Raises :class:`EnvelopeError` for anything damaged."""
    try:
        doc = json.loads(raw)
    except RecursionError as exc:
        raise EnvelopeError("it is nested too deeply to parse") from exc
    except ValueError as exc:
        what = "it is empty" if not raw.strip() else f"it is not valid JSON ({exc})"
        raise EnvelopeError(what) from exc
    if not isinstance(doc, dict):
        raise EnvelopeError(f"its top level is a {type(doc).__name__}, not an object")
    if MAGIC not in doc:
        if _looks_like_envelope(raw, doc):
            raise EnvelopeError("its envelope marker is damaged")
        return Decoded(doc, 0, None)  # a plain JSON object from before the store
    if doc[MAGIC] != 1 or type(doc[MAGIC]) is not int:
        raise EnvelopeError(f"its envelope marker is {doc[MAGIC]!r}, not 1 (damaged or newer)")
    data, generation, schema = doc.get("data"), doc.get("generation"), doc.get("schema")
    if (
        not isinstance(data, dict)
        or type(generation) is not int
        or not (schema is None or type(schema) is int)
        or not isinstance(doc.get("sha256"), str)
    ):
        raise EnvelopeError("its envelope is incomplete")
    if doc["sha256"] != _checksum(dump_data(data)):
        raise EnvelopeError("its checksum does not match its data")
    return Decoded(data, generation, schema)


def migrate(
    decoded: Decoded, schema_version: int | None, migration: Migration | None
) -> dict[str, Any]:
    """The data upgraded to ``schema_version``. Raises :class:`EnvelopeError` for a newer one."""
    if schema_version is None or migration is None:
        return decoded.data
    found = 0 if decoded.schema is None else decoded.schema
    if found > schema_version:
        raise EnvelopeError(f"it has schema {found}, newer than this code's {schema_version}")
    if found == schema_version:
        return decoded.data
    data = migration(decoded.data, found)
    if not isinstance(data, dict):
        raise TypeError(f"migrate() must return a dict, got {type(data).__name__}")
    return data


def find_unstorable(value: Any, path: str = "doc") -> str | None:
    """Describe the first value that could not be stored and read back, or ``None``.

    Iterative (no recursion), so a cyclic or absurdly deep document is described, not a
    ``RecursionError``.
    """
    stack: list[tuple[Any, str, int]] = [(value, path, 0)]
    while stack:
        item, where, depth = stack.pop()
        if item is None or isinstance(item, str | bool | int):
            continue
        if isinstance(item, float):
            if item != item or item in (float("inf"), float("-inf")):
                return f"{where}: {item!r} is not a finite number"
            continue
        if not isinstance(item, dict | list):
            return f"{where}: {type(item).__name__} cannot be stored as JSON"
        if depth >= MAX_DEPTH:
            return f"{where}: nested more than {MAX_DEPTH} levels deep (or a cycle)"
        if isinstance(item, dict):
            for key, child in reversed(list(item.items())):
                if not isinstance(key, str):
                    return f"{where}: key {key!r} is not a str"
                stack.append((child, f"{where}.{key}", depth + 1))
        else:
            for index in range(len(item) - 1, -1, -1):
                stack.append((item[index], f"{where}[{index}]", depth + 1))
    return None
