"""The dashboard's panels: the JSON checked, each panel's series evaluated, and Grafana's
units, thresholds and value mappings."""

from __future__ import annotations

import dataclasses
import math
import re
from collections.abc import Mapping
from typing import Any

from tools.dashboard.promql import QueryError, parse_query, range_query
from tools.dashboard.samples import Labels, Point, Samples


class DashboardError(ValueError):
    """The dashboard JSON has a shape this renderer does not draw (an unknown panel type,
    a panel without ``gridPos``...): the message names the panel and what to change."""


PANEL_TYPES = ("row", "stat", "timeseries", "state-timeline")
DATASOURCE = {"type": "prometheus", "uid": "${datasource}"}


@dataclasses.dataclass(frozen=True)
class Series:
    legend: str
    points: list[Point]


def check_dashboard(dashboard: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The panels of ``dashboard``, checked for what Grafana and this renderer need: each has
    a unique ``id``, a known ``type``, a ``gridPos`` inside the 24-column grid that overlaps
    no other panel, and (but rows) the ``${datasource}`` variable and parseable targets.

    Raises:
        DashboardError: The first problem found, naming the panel.
        QueryError: A target's query outside the supported subset, naming the panel.
    """
    variables = dashboard.get("templating", {}).get("list", [])
    if not any(v.get("name") == "datasource" and v.get("type") == "datasource" for v in variables):
        raise DashboardError("no `datasource` variable of type datasource in templating.list")
    panels = dashboard.get("panels")
    if not isinstance(panels, list) or not panels:
        raise DashboardError("the dashboard has no `panels` list")
    ids: set[int] = set()
    cells: dict[tuple[int, int], str] = {}
    for panel in panels:
        title = panel.get("title", "?")
        where = f"panel {panel.get('id')} ({title!r})"
        if panel.get("type") not in PANEL_TYPES:
            raise DashboardError(
                f"{where} has type {panel.get('type')!r}: this renderer draws {PANEL_TYPES}; "
                "teach tools/render_dashboard.py that type or use one of these"
            )
        if not isinstance(panel.get("id"), int) or panel["id"] in ids:
            raise DashboardError(f"{where}: every panel needs a unique integer id")
        ids.add(panel["id"])
        pos = panel.get("gridPos", {})
        if not all(isinstance(pos.get(k), int) for k in "xywh"):
            raise DashboardError(f"{where}: gridPos needs integers x, y, w, h")
        if pos["x"] < 0 or pos["y"] < 0 or pos["w"] < 1 or pos["h"] < 1 or pos["x"] + pos["w"] > 24:
            raise DashboardError(f"{where}: gridPos {pos} is outside the 24-column grid")
        for cx in range(pos["x"], pos["x"] + pos["w"]):
            for cy in range(pos["y"], pos["y"] + pos["h"]):
                if (cx, cy) in cells:
                    raise DashboardError(f"{where} overlaps {cells[(cx, cy)]} at {(cx, cy)}")
                cells[(cx, cy)] = where
        if panel["type"] == "row":
            continue
        if panel.get("datasource") != DATASOURCE:
            raise DashboardError(f"{where}: datasource must be {DATASOURCE}")
        targets = panel.get("targets") or []
        if not targets:
            raise DashboardError(f"{where} has no targets")
        for target in targets:
            if target.get("datasource") != DATASOURCE:
                raise DashboardError(f"{where} target {target.get('refId')}: datasource")
            try:
                parse_query(str(target.get("expr", "")))
            except QueryError as exc:
                raise QueryError(f"{where} target {target.get('refId')}: {exc}") from exc
    return list(panels)


def legend(fmt: str, labels: Labels, expr: str) -> str:
    """Grafana's series name: ``legendFormat`` with ``{{label}}`` filled in, else the labels,
    else the query."""
    d = dict(labels)
    if fmt:
        return re.sub(r"\{\{\s*([A-Za-z_][A-Za-z0-9_]*)\s*\}\}", lambda m: d.get(m[1], ""), fmt)
    shown = {k: v for k, v in d.items() if k != "__name__"}
    if not shown:
        return d.get("__name__", expr)
    inner = ", ".join(f'{k}="{v}"' for k, v in shown.items())
    return f"{d.get('__name__', '')}{{{inner}}}"


def panel_series(panel: Mapping[str, Any], samples: Samples) -> list[Series]:
    """Every series the panel's targets give over the scrapes' times, in target order."""
    out: list[Series] = []
    for target in panel.get("targets", []):
        expr_text = str(target["expr"])
        result = range_query(parse_query(expr_text), samples, samples.times)
        fmt = str(target.get("legendFormat", ""))
        for key in sorted(result):
            out.append(Series(legend(fmt, key, expr_text), result[key]))
    return out


COLORS = {
    "green": "#73BF69",
    "red": "#F2495C",
    "orange": "#FF9830",
    "yellow": "#FADE2A",
    "blue": "#5794F2",
    "purple": "#B877D9",
    "text": "#CCCCDC",
}
#: Grafana's classic palette, the default colour scheme of a time series.
PALETTE = (
    "#7EB26D",
    "#EAB839",
    "#6ED0E0",
    "#EF843C",
    "#E24D42",
    "#1F78C1",
    "#BA43A9",
    "#705DA0",
    "#508642",
    "#CCA300",
)


def color(name: str) -> str:
    return COLORS.get(name, name)


def _trim(x: float, decimals: int) -> str:
    text = f"{x:.{decimals}f}"
    return text.rstrip("0").rstrip(".") if "." in text else text


def _decimals(x: float) -> int:
    ax = abs(x)
    if ax == 0 or ax >= 100:
        return 0
    return 1 if ax >= 10 else 2


def fmt_value(value: float, unit: str | None) -> str:
    """``value`` in Grafana's words for ``unit`` (``s``, ``percentunit`` or short numbers)."""
    if math.isinf(value):
        return "∞" if value > 0 else "-∞"
    if unit == "percentunit":
        pct = value * 100
        return f"{_trim(pct, _decimals(pct))}%"
    if unit == "s":
        ax = abs(value)
        for size, name in ((31_536_000.0, "year"), (604_800.0, "week"), (86_400.0, "day")):
            if ax >= size:
                return f"{_trim(value / size, 2)} {name}"
        if ax >= 3600:
            return f"{_trim(value / 3600, 2)} hour"
        if ax >= 60:
            return f"{_trim(value / 60, 1)} min"
        if ax >= 1 or ax == 0:
            return f"{_trim(value, _decimals(value))} s"
        return f"{_trim(value * 1000, _decimals(value * 1000))} ms"
    ax = abs(value)
    for size, suffix in ((1e9, " Bil"), (1e6, " Mil"), (1e3, " K")):
        if ax >= size:
            return f"{_trim(value / size, 2)}{suffix}"
    return _trim(value, _decimals(value))


def threshold_color(value: float, defaults: Mapping[str, Any], fallback: str) -> str:
    steps = defaults.get("thresholds", {}).get("steps") or []
    chosen = fallback
    for step in steps:
        if step.get("value") is None or value >= float(step["value"]):
            chosen = color(str(step.get("color", fallback)))
    return chosen


def mapped(value: float, defaults: Mapping[str, Any]) -> tuple[str, str] | None:
    """The value mapping for ``value``: (text, colour or "")."""
    key = _trim(value, 6)
    for mapping in defaults.get("mappings") or []:
        if mapping.get("type") != "value":
            continue
        option = mapping.get("options", {}).get(key)
        if option is not None:
            return str(option.get("text", key)), color(str(option.get("color", "")))
    return None


#: Durations a time axis ticks in (seconds), as Grafana's ``s`` unit does.
_DURATION_UNITS = (604_800.0, 86_400.0, 3600.0, 60.0, 1.0)


def nice_ticks(lo: float, hi: float, count: int = 5, *, unit: str | None = None) -> list[float]:
    """About ``count`` round tick values covering ``[lo, hi]`` (round durations for ``s``)."""
    if hi <= lo:
        hi = lo + 1
    if unit == "s":
        size = next((u for u in _DURATION_UNITS if max(abs(lo), abs(hi)) >= 2 * u), 1.0)
        return [t * size for t in nice_ticks(lo / size, hi / size, count)]
    raw = (hi - lo) / count
    mag = 10 ** math.floor(math.log10(raw))
    step = next(m * mag for m in (1, 2, 2.5, 5, 10) if m * mag >= raw)
    ticks = [round(math.floor(lo / step) * step, 10)]
    while ticks[-1] < hi - step * 1e-9:
        ticks.append(round(ticks[-1] + step, 10))
    return ticks
