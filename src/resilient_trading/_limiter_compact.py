"""The limiter state's compact stored form for the file home: packed integers, not JSON lists.

A file budget at steady state holds about a hundred buckets per limit. As JSON objects and
lists, parsing, checking and re-serialising them was most of an acquire; packed as 64-bit
integers (``struct``, C speed) and carried as one base64 JSON string, the
state costs a few microseconds to read and write, whatever the number of admissions.

Layout (little endian), then base64 with the prefix ``"rl3:"``::

    header   q paused_until_ms, q last_ms, q contended_until_ms, d next_ms,
             q queue length, q ring count
    queue    3 q per reservation (t_ms, weight, token)
    per ring q budget, q period_ms, q width_ms, q buckets, then each bucket's index and
             weight

Packing a ring re-packs only its ends when only they changed since it was last packed (the
common acquire: buckets left the front, the last one grew or a new one was added), reusing the
middle as bytes; the ring counts its other changes (``edits``, ``popped``) so a change in the
middle re-packs it whole.

Every field is checked as :func:`resilient_trading._limiter_rules.from_json` checks the JSON
form (:class:`~resilient_trading._limiter_rules.BadState` names the first bad field), and
:func:`parse` still reads the JSON form older versions wrote.
"""

from __future__ import annotations

import base64
import binascii
import math
import operator
import struct
from collections import deque
from itertools import chain
from typing import Any

from resilient_trading import _limiter_rules as rules

__all__ = ["PREFIX", "decode", "encode", "parse"]

PREFIX = "rl3:"
_HEAD = struct.Struct("<qqqdqq")
_RING = struct.Struct("<qqqq")
_MAX = 2**62


def encode(state: rules.LimiterState) -> str:
    """The compact form of ``state`` (a JSON string: what the file home stores)."""
    parts = [
        _HEAD.pack(
            state.paused_until_ms,
            state.last_ms,
            state.contended_until_ms,
            state.next_ms,
            len(state.queue),
            len(state.rings),
        )
    ]
    if state.queue:
        flat = [x for entry in state.queue for x in entry]
        parts.append(struct.pack(f"<{len(flat)}q", *flat))
    for ring in state.rings:
        n = len(ring.buckets)
        parts.append(_RING.pack(ring.budget, ring.period_ms, ring.width_ms, n))
        if n:
            parts.append(_pack_buckets(ring))
    return PREFIX + binascii.b2a_base64(b"".join(parts), newline=False).decode("ascii")


def _pack_buckets(ring: rules.Ring) -> bytes:
    """A ring's buckets packed; re-packs only its ends when it changed only there since the
    last time (the common acquire: a few buckets left the front, one grew or was added at
    the end), which keeps a full window as cheap to store as an empty one."""
    buckets = ring.buckets
    n = len(buckets)
    cache = ring.packed
    data: bytes | None = None
    if cache is not None and cache[0] is buckets and cache[1] == ring.edits:
        _, _, popped, count, old = cache
        dropped = ring.popped - popped
        keep = count - dropped - 1  # cached records still valid (the last one may have grown)
        if dropped >= 0 and 0 <= keep < n:
            fresh = [x for i in range(keep - n, 0) for x in buckets[i]]
            data = old[16 * dropped : 16 * (dropped + keep)] + struct.pack(
                f"<{len(fresh)}q", *fresh
            )
    if data is None:
        data = struct.pack(f"<{2 * n}q", *chain.from_iterable(buckets))
    ring.packed = (buckets, ring.edits, ring.popped, n, data)
    return data


def _ints(raw: bytes, offset: int, count: int, where: str) -> tuple[int, ...]:
    if count < 0 or offset + 8 * count > len(raw):
        raise rules.BadState(where, "the record is cut short")
    values: tuple[int, ...] = struct.unpack_from(f"<{count}q", raw, offset)
    if values and (min(values) < 0 or max(values) > _MAX):
        raise rules.BadState(where, "expected integers between 0 and 2**62")
    return values


def decode(text: str) -> rules.LimiterState:
    """Parse the compact form; :class:`~resilient_trading._limiter_rules.BadState` names the
    first bad field."""
    if not text.startswith(PREFIX):
        raise rules.BadState("state", f"expected the {PREFIX!r} form, found another string")
    try:
        raw = base64.b64decode(text[len(PREFIX) :], validate=True)
    except (binascii.Error, ValueError) as exc:
        raise rules.BadState("state", f"not base64 ({exc})") from exc
    if len(raw) < _HEAD.size:
        raise rules.BadState("state", "the record is cut short")
    paused, last, contended, next_ms, queued, nrings = _HEAD.unpack_from(raw)
    for name, value in (("paused_until", paused), ("last", last), ("contended", contended)):
        if not 0 <= value <= _MAX:
            raise rules.BadState(name, f"value {value!r} is out of range")
    if not (math.isfinite(next_ms) and 0 <= next_ms <= _MAX):
        raise rules.BadState("next", f"expected a finite number in range, found {next_ms!r}")
    offset = _HEAD.size
    flat = _ints(raw, offset, 3 * queued, "queue")
    offset += 24 * queued
    queue = [list(flat[i : i + 3]) for i in range(0, len(flat), 3)]
    if not all(map(operator.le, (q[0] for q in queue), (q[0] for q in queue[1:]))):
        queue.sort(key=lambda entry: entry[0])
    rings = []
    for n in range(nrings):
        where = f"rings[{n}]"
        if offset + _RING.size > len(raw):
            raise rules.BadState(where, "the record is cut short")
        budget, period, width, count = _RING.unpack_from(raw, offset)
        offset += _RING.size
        if budget < 1 or period < 1 or width < 1 or max(budget, period, width) > _MAX:
            raise rules.BadState(where, "budget, period and width must be in 1..2**62")
        pairs = _ints(raw, offset, 2 * count, f"{where}.buckets")
        offset += 16 * count
        index, weight = pairs[0::2], pairs[1::2]
        if not all(map(operator.lt, index, index[1:])):
            raise rules.BadState(f"{where}.index", "bucket indices are not ascending")
        ring = rules.Ring(budget, period, width)
        ring.buckets = deque(map(list, zip(index, weight, strict=True)))
        ring.total = sum(weight)
        ring.packed = (ring.buckets, 0, 0, count, raw[offset - 16 * count : offset])
        rings.append(ring)
    if offset != len(raw):
        raise rules.BadState("state", f"{len(raw) - offset} unexpected bytes at the end")
    return rules.LimiterState(
        rings=rings,
        queue=queue,
        paused_until_ms=paused,
        last_ms=last,
        next_ms=next_ms,
        contended_until_ms=contended,
    )


def parse(data: Any) -> rules.LimiterState:
    """A stored state in either form: the compact string, or the JSON object of older versions."""
    if isinstance(data, str):
        return decode(data)
    return rules.from_json(data)
