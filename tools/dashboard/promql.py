"""The PromQL subset the dashboard uses, evaluated over scraped :class:`Samples`.

Selectors with ``=``/``!=`` matchers, ``rate``/``increase`` over a range (extrapolated as
Prometheus does), ``sum``/``min``/``max``/``count``/``avg`` with ``by (...)``,
``histogram_quantile``, ``time()``, ``vector(n)``, ``+ - * /``, comparisons as filters and
``or``. Anything else raises :class:`QueryError`: the picture never shows a query it did not
understand.
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import math
import re
from collections.abc import Callable, Iterable, Sequence
from typing import Union

from tools.dashboard.samples import LOOKBACK_SECONDS, Labels, Point, Samples, without_name


class QueryError(ValueError):
    """A panel's query is outside the subset this renderer evaluates (or is malformed).

    Raised with the query and what is not supported; fix the dashboard JSON (or teach this
    renderer the construct, with a test), then render again.
    """


@dataclasses.dataclass(frozen=True)
class Number:
    value: float


@dataclasses.dataclass(frozen=True)
class Selector:
    name: str
    matchers: tuple[tuple[str, str, str], ...] = ()  # (label, "=" or "!=", value)


@dataclasses.dataclass(frozen=True)
class RangeCall:
    func: str  # rate | increase
    selector: Selector
    seconds: float


@dataclasses.dataclass(frozen=True)
class Aggregate:
    op: str  # sum | min | max | count | avg
    by: tuple[str, ...] | None
    expr: Expr


@dataclasses.dataclass(frozen=True)
class Call:
    func: str  # histogram_quantile | time | vector
    args: tuple[Expr, ...]


@dataclasses.dataclass(frozen=True)
class Binary:
    op: str
    lhs: Expr
    rhs: Expr


Expr = Union[Number, Selector, RangeCall, Aggregate, Call, Binary]  # noqa: UP007 - a runtime alias
Vector = dict[Labels, float]
Value = Union[float, Vector]  # noqa: UP007 - a scalar, or an instant vector

AGGREGATIONS = ("sum", "min", "max", "count", "avg")
RANGE_FUNCTIONS = ("rate", "increase")
COMPARISONS = ("==", "!=", ">=", "<=", ">", "<")
#: Words of PromQL this renderer does not evaluate: named so the error can say which.
UNSUPPORTED_WORDS = frozenset(
    {
        "and",
        "unless",
        "offset",
        "bool",
        "on",
        "ignoring",
        "group_left",
        "group_right",
        "without",
        "topk",
        "bottomk",
        "quantile",
        "stddev",
        "stdvar",
        "count_values",
        "group",
    }
)
_TOKEN = re.compile(
    r"""\s*(?:
      (?P<duration>(?<=\[)\d+[smhdw](?=\]))
    | (?P<number>\d+(?:\.\d*)?(?:[eE][+-]?\d+)?|\.\d+(?:[eE][+-]?\d+)?)
    | (?P<ident>[A-Za-z_:][A-Za-z0-9_:]*)
    | (?P<string>"(?:[^"\\]|\\.)*")
    | (?P<op>==|!=|>=|<=|=~|!~|[-+*/%^(){}\[\],=<>@])
    )""",
    re.VERBOSE,
)
_DURATION = {"s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, "w": 604800.0}


def _tokens(query: str) -> list[tuple[str, str]]:
    out: list[tuple[str, str]] = []
    pos = 0
    text = query.rstrip()
    while pos < len(text):
        m = _TOKEN.match(text, pos)
        if m is None or m.end() == pos:
            raise QueryError(f"cannot read {query!r} at {text[pos : pos + 10]!r}")
        kind = m.lastgroup
        assert kind is not None
        out.append((kind, m.group(kind)))
        pos = m.end()
    return out


class _Parser:
    """Recursive descent, lowest precedence first: ``or``; comparisons; ``+ -``; ``* /``."""

    def __init__(self, query: str) -> None:
        self.query = query
        self.toks = _tokens(query)
        self.i = 0

    def fail(self, what: str) -> QueryError:
        return QueryError(
            f"{what} in {self.query!r}: this renderer evaluates selectors, rate/increase, "
            "sum/min/max/count/avg [by (...)], histogram_quantile, time(), vector(), "
            "+ - * /, comparisons and `or`; change the query or teach tools/render_dashboard.py"
        )

    def peek(self) -> tuple[str, str] | None:
        return self.toks[self.i] if self.i < len(self.toks) else None

    def take(self, value: str | None = None, kind: str | None = None) -> str:
        tok = self.peek()
        if tok is None or (value is not None and tok[1] != value) or (kind and tok[0] != kind):
            want = value or kind or "more"
            raise self.fail(f"expected {want!r}, found {tok[1] if tok else 'the end'!r}")
        self.i += 1
        return tok[1]

    def at(self, *values: str) -> bool:
        tok = self.peek()
        return tok is not None and tok[0] in ("op", "ident") and tok[1] in values

    def parse(self) -> Expr:
        expr = self.or_expr()
        if self.peek() is not None:
            raise self.fail(f"unexpected {self.peek()[1]!r}")  # type: ignore[index]
        return expr

    def or_expr(self) -> Expr:
        lhs = self.comparison()
        while self.at("or"):
            self.take()
            lhs = Binary("or", lhs, self.comparison())
        return lhs

    def comparison(self) -> Expr:
        lhs = self.additive()
        if self.at(*COMPARISONS):
            op = self.take()
            if self.at("bool"):
                raise self.fail("the `bool` modifier is not supported")
            lhs = Binary(op, lhs, self.additive())
            if self.at(*COMPARISONS):
                raise self.fail("chained comparisons are not supported")
        return lhs

    def additive(self) -> Expr:
        lhs = self.multiplicative()
        while self.at("+", "-"):
            lhs = Binary(self.take(), lhs, self.multiplicative())
        return lhs

    def multiplicative(self) -> Expr:
        lhs = self.primary()
        while self.at("*", "/"):
            lhs = Binary(self.take(), lhs, self.primary())
        return lhs

    def primary(self) -> Expr:
        tok = self.peek()
        if tok is None:
            raise self.fail("unexpected end")
        kind, value = tok
        if kind == "number":
            self.take()
            return Number(float(value))
        if value == "(":
            self.take()
            inner = self.or_expr()
            self.take(")")
            return inner
        if kind != "ident":
            raise self.fail(f"unexpected {value!r}")
        if value in UNSUPPORTED_WORDS:
            raise self.fail(f"`{value}` is not supported")
        if value in AGGREGATIONS:
            return self.aggregate()
        nxt = self.toks[self.i + 1] if self.i + 1 < len(self.toks) else None
        if nxt is not None and nxt[1] == "(":
            return self.call()
        return self.selector()

    def labels_list(self) -> tuple[str, ...]:
        self.take("(")
        names: list[str] = []
        while not self.at(")"):
            names.append(self.take(kind="ident"))
            if not self.at(")"):
                self.take(",")
        self.take(")")
        return tuple(names)

    def aggregate(self) -> Expr:
        op = self.take()
        by: tuple[str, ...] | None = None
        if self.at("by"):
            self.take()
            by = self.labels_list()
        if self.at("without"):
            raise self.fail("`without` is not supported")
        self.take("(")
        inner = self.or_expr()
        self.take(")")
        if self.at("by"):
            if by is not None:
                raise self.fail("`by` given twice")
            self.take()
            by = self.labels_list()
        if self.at("without"):
            raise self.fail("`without` is not supported")
        return Aggregate(op, by, inner)

    def call(self) -> Expr:
        func = self.take()
        self.take("(")
        if func in RANGE_FUNCTIONS:
            sel = self.selector(in_range=True)
            self.take("[")
            tok = self.take(kind="duration")
            self.take("]")
            self.take(")")
            return RangeCall(func, sel, float(tok[:-1]) * _DURATION[tok[-1]])
        if func == "time":
            self.take(")")
            return Call("time", ())
        if func == "vector":
            arg = self.or_expr()
            self.take(")")
            return Call("vector", (arg,))
        if func == "histogram_quantile":
            q = self.or_expr()
            self.take(",")
            v = self.or_expr()
            self.take(")")
            return Call("histogram_quantile", (q, v))
        raise self.fail(f"the function `{func}` is not supported")

    def selector(self, *, in_range: bool = False) -> Selector:
        name = self.take(kind="ident")
        if name in UNSUPPORTED_WORDS or name in AGGREGATIONS:
            raise self.fail(f"`{name}` where a metric name was expected")
        matchers: list[tuple[str, str, str]] = []
        if self.at("{"):
            self.take()
            while not self.at("}"):
                label = self.take(kind="ident")
                op = self.take()
                if op not in ("=", "!="):
                    raise self.fail(f"the matcher {op!r} is not supported (only = and !=)")
                raw = self.take(kind="string")
                matchers.append((label, op, json.loads(raw)))
                if not self.at("}"):
                    self.take(",")
            self.take("}")
        if self.at("offset", "@"):
            raise self.fail(f"`{self.peek()[1]}` is not supported")  # type: ignore[index]
        if self.at("[") and not in_range:
            raise self.fail("a range selector outside rate()/increase() is not supported")
        return Selector(name, tuple(matchers))


def parse_query(query: str) -> Expr:
    """Parse ``query`` in the supported subset.

    Raises:
        QueryError: Outside the subset, or malformed; the message says what and where.
    """
    if not query.strip():
        raise QueryError("an empty query: give the panel target an expr")
    return _Parser(query).parse()


def metric_names(expr: Expr) -> set[str]:
    """The metric names ``expr`` reads."""
    if isinstance(expr, Selector):
        return {expr.name}
    if isinstance(expr, RangeCall):
        return {expr.selector.name}
    if isinstance(expr, Aggregate):
        return metric_names(expr.expr)
    if isinstance(expr, Call):
        return set().union(*(metric_names(a) for a in expr.args)) if expr.args else set()
    if isinstance(expr, Binary):
        return metric_names(expr.lhs) | metric_names(expr.rhs)
    return set()


def _matches(labels: Labels, sel: Selector) -> bool:
    d = dict(labels)
    if d.get("__name__") != sel.name:
        return False
    return all((d.get(label, "") == value) == (op == "=") for label, op, value in sel.matchers)


def _instant(samples: Samples, sel: Selector, at: float) -> Vector:
    out: Vector = {}
    for key, points in samples.series.items():
        if not _matches(key, sel):
            continue
        latest: tuple[float, float | None] | None = None
        for t, v in points:  # short series: a scan is plenty
            if t > at:
                break
            latest = (t, v)
        if latest is not None and latest[1] is not None and at - latest[0] <= LOOKBACK_SECONDS:
            out[key] = latest[1]
    return out


def extrapolated_rate(
    points: Sequence[tuple[float, float]], start: float, end: float, *, is_rate: bool
) -> float | None:
    """Prometheus' ``rate``/``increase`` of one counter's ``points`` in ``(start, end]``:
    resets compensated, extrapolated to the range's edges as Prometheus does
    (promql/functions.go ``extrapolatedRate``). ``None`` with fewer than two points."""
    if len(points) < 2:
        return None
    result = points[-1][1] - points[0][1]
    for (_, prev), (_, cur) in itertools.pairwise(points):
        if cur < prev:
            result += prev  # a counter reset: the counter restarted from zero
    to_start = points[0][0] - start
    to_end = end - points[-1][0]
    sampled = points[-1][0] - points[0][0]
    if sampled <= 0:
        return None
    average = sampled / (len(points) - 1)
    if result > 0 and points[0][1] >= 0:
        to_zero = sampled * (points[0][1] / result)
        to_start = min(to_start, to_zero)
    threshold = average * 1.1
    interval = sampled
    interval += to_start if to_start < threshold else average / 2
    interval += to_end if to_end < threshold else average / 2
    result *= interval / sampled
    return result / (end - start) if is_rate else result


def _range_call(samples: Samples, call: RangeCall, at: float) -> Vector:
    out: Vector = {}
    start = at - call.seconds
    for key, points in samples.series.items():
        if not _matches(key, call.selector):
            continue
        window = [(t, v) for t, v in points if start < t <= at and v is not None]
        value = extrapolated_rate(window, start, at, is_rate=call.func == "rate")
        if value is not None:
            out[without_name(key)] = value
    return out


def _aggregate(op: str, by: tuple[str, ...] | None, vector: Vector) -> Vector:
    groups: dict[Labels, list[float]] = {}
    for key, value in vector.items():
        d = dict(key)
        group = tuple(sorted((k, d[k]) for k in (by or ()) if k in d))
        groups.setdefault(group, []).append(value)
    reduce: dict[str, Callable[[list[float]], float]] = {
        "sum": lambda xs: math.fsum(xs),
        "min": min,
        "max": max,
        "count": lambda xs: float(len(xs)),
        "avg": lambda xs: math.fsum(xs) / len(xs),
    }
    return {group: reduce[op](values) for group, values in groups.items()}


def bucket_quantile(q: float, buckets: Sequence[tuple[float, float]]) -> float:
    """Prometheus' ``histogram_quantile`` of one histogram's ``(le, cumulative count)``
    buckets (promql/quantile.go ``bucketQuantile``): linear within the bucket."""
    if q < 0:
        return -math.inf
    if q > 1:
        return math.inf
    ordered = sorted(buckets)
    if len(ordered) < 2 or not math.isinf(ordered[-1][0]):
        return math.nan
    counts = [c for _, c in ordered]
    for i in range(1, len(counts)):  # ensure monotonicity, as Prometheus does
        counts[i] = max(counts[i], counts[i - 1])
    total = counts[-1]
    if total == 0:
        return math.nan
    rank = q * total
    b = next(i for i, c in enumerate(counts) if c >= rank)
    if b == len(ordered) - 1:
        return ordered[-2][0]
    if b == 0 and ordered[0][0] <= 0:
        return ordered[0][0]
    start = 0.0 if b == 0 else ordered[b - 1][0]
    end = ordered[b][0]
    below = 0.0 if b == 0 else counts[b - 1]
    in_bucket = counts[b] - below
    return start + (end - start) * ((rank - below) / in_bucket)


def _histogram_quantile(q: float, vector: Vector) -> Vector:
    groups: dict[Labels, list[tuple[float, float]]] = {}
    for key, value in vector.items():
        d = dict(key)
        if "le" not in d:
            continue
        group = tuple(kv for kv in key if kv[0] not in ("le", "__name__"))
        groups.setdefault(group, []).append((float(d["le"]), value))
    return {group: bucket_quantile(q, buckets) for group, buckets in groups.items()}


def _arith(op: str, a: float, b: float) -> float:
    if op == "+":
        return a + b
    if op == "-":
        return a - b
    if op == "*":
        return a * b
    if b == 0:
        return math.nan if a == 0 else math.copysign(math.inf, a)
    return a / b


def _compare(op: str, a: float, b: float) -> bool:
    return {
        "==": a == b,
        "!=": a != b,
        ">": a > b,
        "<": a < b,
        ">=": a >= b,
        "<=": a <= b,
    }[op]


def _binary(op: str, lhs: Value, rhs: Value) -> Value:
    if op == "or":
        if not isinstance(lhs, dict) or not isinstance(rhs, dict):
            raise QueryError("`or` needs an instant vector on both sides")
        seen = {without_name(k) for k in lhs}
        return {**lhs, **{k: v for k, v in rhs.items() if without_name(k) not in seen}}
    comparison = op in COMPARISONS
    if not isinstance(lhs, dict) and not isinstance(rhs, dict):
        if comparison:
            raise QueryError("a comparison of two scalars needs `bool` (not supported)")
        return _arith(op, lhs, rhs)
    if isinstance(lhs, dict) and not isinstance(rhs, dict):
        if comparison:
            return {k: v for k, v in lhs.items() if _compare(op, v, rhs)}
        return {without_name(k): _arith(op, v, rhs) for k, v in lhs.items()}
    if not isinstance(lhs, dict) and isinstance(rhs, dict):
        if comparison:
            return {k: v for k, v in rhs.items() if _compare(op, lhs, v)}
        return {without_name(k): _arith(op, lhs, v) for k, v in rhs.items()}
    assert isinstance(lhs, dict)
    assert isinstance(rhs, dict)
    right: dict[Labels, float] = {}
    for k, v in rhs.items():
        if without_name(k) in right:
            raise QueryError(f"many-to-one matching on the right of {op!r} is not supported")
        right[without_name(k)] = v
    out: Vector = {}
    for k, v in lhs.items():
        match = without_name(k)
        if match not in right:
            continue
        if comparison:
            if _compare(op, v, right[match]):
                out[k] = v
        else:
            if match in out:
                raise QueryError(f"many-to-one matching on the left of {op!r} is not supported")
            out[match] = _arith(op, v, right[match])
    return out


def evaluate(expr: Expr, samples: Samples, at: float) -> Value:
    """``expr`` as an instant query at ``at`` over ``samples``: a scalar or a vector."""
    if isinstance(expr, Number):
        return expr.value
    if isinstance(expr, Selector):
        return _instant(samples, expr, at)
    if isinstance(expr, RangeCall):
        return _range_call(samples, expr, at)
    if isinstance(expr, Aggregate):
        inner = evaluate(expr.expr, samples, at)
        if not isinstance(inner, dict):
            raise QueryError(f"`{expr.op}` needs an instant vector, got a scalar")
        return _aggregate(expr.op, expr.by, inner)
    if isinstance(expr, Call):
        if expr.func == "time":
            return at
        args = [evaluate(a, samples, at) for a in expr.args]
        if expr.func == "vector":
            if isinstance(args[0], dict):
                raise QueryError("vector() needs a scalar")
            return {(): args[0]}
        q, vector = args
        if isinstance(q, dict) or not isinstance(vector, dict):
            raise QueryError("histogram_quantile(scalar, vector) expected")
        return _histogram_quantile(q, vector)
    return _binary(expr.op, evaluate(expr.lhs, samples, at), evaluate(expr.rhs, samples, at))


def range_query(expr: Expr, samples: Samples, times: Iterable[float]) -> dict[Labels, list[Point]]:
    """``expr`` at each of ``times`` (a Grafana range query): one point list per series."""
    out: dict[Labels, list[Point]] = {}
    for at in times:
        value = evaluate(expr, samples, at)
        vector = value if isinstance(value, dict) else {(): value}
        for key, v in vector.items():
            if not math.isnan(v):
                out.setdefault(key, []).append((at, v))
    return out
