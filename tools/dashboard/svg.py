"""The dashboard drawn as one SVG: every panel at its ``gridPos``, in a dark Grafana-like theme."""

from __future__ import annotations

import hashlib
import html
import json
import math
import time
from collections.abc import Mapping, Sequence
from typing import Any

from tools.dashboard.panels import (
    COLORS,
    PALETTE,
    Series,
    check_dashboard,
    color,
    fmt_value,
    mapped,
    nice_ticks,
    panel_series,
    threshold_color,
)
from tools.dashboard.samples import Samples

#: A panel's box on the page: x, y, width, height in px.
Box = tuple[float, float, float, float]

BG = "#111217"
PANEL_BG = "#181B1F"
BORDER = "#2A2D33"
GRID = "#2C3035"
MUTED = "#8E8E99"
FONT = "Inter, 'Helvetica Neue', Helvetica, Arial, 'DejaVu Sans', sans-serif"
WIDTH = 1600
PAD = 16
HEADER = 92
CELL_H = 30
GAP = 8
TITLE_H = 30
COL_W = (WIDTH - 2 * PAD - 23 * GAP) / 24


def esc(text: str) -> str:
    return html.escape(text, quote=True)


def text_width(text: str, size: float) -> float:
    """A rough width of ``text`` at ``size`` px (no font metrics in pure Python)."""
    narrow, wide = "ijlrtf.,:;|!' ()[]", "mwMW%"
    return size * sum(
        0.34 if c in narrow else 0.9 if c in wide else 0.7 if c.isupper() else 0.64 for c in text
    )


def fit(text: str, size: float, width: float) -> str:
    if text_width(text, size) <= width:
        return text
    while text and text_width(text + "…", size) > width:
        text = text[:-1]
    return text + "…"


def panel_box(pos: Mapping[str, int]) -> tuple[float, float, float, float]:
    x = PAD + pos["x"] * (COL_W + GAP)
    y = HEADER + pos["y"] * (CELL_H + GAP)
    return x, y, pos["w"] * COL_W + (pos["w"] - 1) * GAP, pos["h"] * CELL_H + (pos["h"] - 1) * GAP


def panel_digest(panel: Mapping[str, Any]) -> str:
    """A digest of what the picture of ``panel`` depends on in the JSON (so a test can tell a
    checked-in picture drawn from an older dashboard)."""
    blob = json.dumps(panel, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def _path(points: Sequence[tuple[float, float]]) -> str:
    return " ".join(f"{'M' if i == 0 else 'L'}{x:.1f},{y:.1f}" for i, (x, y) in enumerate(points))


class Canvas:
    """The SVG being written, as a list of lines."""

    def __init__(self) -> None:
        self.parts: list[str] = []

    def add(self, text: str) -> None:
        self.parts.append(text)

    def text(
        self,
        x: float,
        y: float,
        content: str,
        *,
        size: float = 12,
        fill: str = COLORS["text"],
        anchor: str = "start",
        weight: int = 400,
    ) -> None:
        self.add(
            f'<text x="{x:.1f}" y="{y:.1f}" font-size="{size:g}" fill="{fill}" '
            f'text-anchor="{anchor}" font-weight="{weight}">{esc(content)}</text>'
        )


def _time_label(t: float) -> str:
    return time.strftime("%H:%M:%S", time.gmtime(t))


def draw_stat(c: Canvas, panel: Mapping[str, Any], series: list[Series], box: Box) -> None:
    x, y, w, h = box
    defaults = panel.get("fieldConfig", {}).get("defaults", {})
    unit = defaults.get("unit")
    if not series:
        c.text(x + w / 2, y + h / 2 + 6, "No data", size=16, fill=MUTED, anchor="middle")
        return
    cell_w = w / len(series)
    for i, s in enumerate(series):
        value = s.points[-1][1]
        fill = threshold_color(value, defaults, COLORS["green"])
        shown = fmt_value(value, unit)
        hit = mapped(value, defaults)
        if hit is not None:
            shown, mcolor = hit
            fill = mcolor or fill
        cx = x + cell_w * (i + 0.5)
        values = [v for _, v in s.points]
        if len(values) > 1:  # the sparkline under the value (graphMode "area")
            lo, hi = min(values), max(values)
            span = hi - lo or 1.0
            t0, t1 = s.points[0][0], s.points[-1][0]
            px = [
                (
                    x + cell_w * i + (t - t0) / (t1 - t0 or 1) * cell_w,
                    y + h - 2 - (v - lo) / span * (h * 0.35),
                )
                for t, v in s.points
            ]
            area = _path(px) + f" L{px[-1][0]:.1f},{y + h:.1f} L{px[0][0]:.1f},{y + h:.1f} Z"
            c.add(f'<path d="{area}" fill="{fill}" fill-opacity="0.12" stroke="none"/>')
            c.add(f'<path d="{_path(px)}" fill="none" stroke="{fill}" stroke-width="1.5"/>')
        size = min(40.0, h * 0.42, cell_w / max(1.0, text_width(shown, 1.0)) * 0.8)
        c.text(
            cx,
            y + h * 0.42 + size * 0.35,
            shown,
            size=round(size, 1),
            fill=fill,
            anchor="middle",
            weight=500,
        )
        if len(series) > 1:
            c.text(cx, y + 14, fit(s.legend, 10, cell_w - 8), size=10, fill=MUTED, anchor="middle")


def _legend_rows(c: Canvas, names: Sequence[tuple[str, str]], x: float, y: float, w: float) -> int:
    """Legend entries (name, colour) left to right, wrapping; returns the rows used."""
    cx, row = x, 0
    for name, fill in names:
        label = fit(name, 11, w - 24)
        width = text_width(label, 11) + 30
        if cx + width > x + w and cx > x:
            cx, row = x, row + 1
        ly = y + row * 16
        c.add(f'<rect x="{cx:.1f}" y="{ly - 5:.1f}" width="14" height="3" rx="1" fill="{fill}"/>')
        c.text(cx + 19, ly, label, size=11)
        cx += width
    return row + 1


def _legend_height(names: Sequence[str], w: float) -> int:
    cx, rows = 0.0, 1
    for name in names:
        width = text_width(fit(name, 11, w - 24), 11) + 30
        if cx + width > w and cx > 0:
            cx, rows = 0.0, rows + 1
        cx += width
    return rows


def _time_axis(c: Canvas, t0: float, t1: float, left: float, right: float, base: float) -> None:
    span = t1 - t0 or 1.0
    step = next(
        s
        for s in (5, 10, 15, 20, 30, 60, 120, 300, 600, 900, 1800, 3600)
        if span / s <= max(2, (right - left) / 90)
    )
    t = math.ceil(t0 / step) * step
    half = text_width("00:00:00", 10) / 2
    while t <= t1:
        px = left + (t - t0) / span * (right - left)
        if px + half > right + 8 or px - half < left - 40:  # a label would leave the panel
            t += step
            continue
        c.add(
            f'<line x1="{px:.1f}" y1="{base - 1:.1f}" x2="{px:.1f}" y2="{base + 3:.1f}" '
            f'stroke="{GRID}"/>'
        )
        c.text(px, base + 15, _time_label(t), size=10, fill=MUTED, anchor="middle")
        t += step


def draw_timeseries(
    c: Canvas, panel: Mapping[str, Any], series: list[Series], box: Box, span: tuple[float, float]
) -> None:
    x, y, w, h = box
    defaults = panel.get("fieldConfig", {}).get("defaults", {})
    unit = defaults.get("unit")
    if not series:
        c.text(x + w / 2, y + h / 2, "No data", size=16, fill=MUTED, anchor="middle")
        return
    names = [s.legend for s in series]
    legend_h = _legend_height(names, w - 16) * 16 + 6
    values = [v for s in series for _, v in s.points]
    lo, hi = min(0.0, min(values)), max(values)
    ticks = nice_ticks(lo, hi if hi > lo else lo + 1, unit=unit)
    lo, hi = ticks[0], ticks[-1]
    labels = [fmt_value(t, unit) for t in ticks]
    left = x + 10 + max(text_width(s, 10) for s in labels) + 6
    right = x + w - 12
    top, base = y + 6, y + h - legend_h - 22
    for t, label in zip(ticks, labels, strict=True):
        py = base - (t - lo) / (hi - lo) * (base - top)
        c.add(
            f'<line x1="{left:.1f}" y1="{py:.1f}" x2="{right:.1f}" y2="{py:.1f}" '
            f'stroke="{GRID}" stroke-width="1"/>'
        )
        c.text(left - 6, py + 3.5, label, size=10, fill=MUTED, anchor="end")
    t0, t1 = span
    _time_axis(c, t0, t1, left, right, base)
    c.add(
        f'<clipPath id="clip{panel["id"]}"><rect x="{left:.1f}" y="{top - 2:.1f}" '
        f'width="{right - left:.1f}" height="{base - top + 4:.1f}"/></clipPath>'
    )
    entries: list[tuple[str, str]] = []
    for i, s in enumerate(series):
        fill = PALETTE[i % len(PALETTE)]
        entries.append((s.legend, fill))
        px = [
            (
                left + (t - t0) / ((t1 - t0) or 1) * (right - left),
                base - (v - lo) / (hi - lo) * (base - top),
            )
            for t, v in s.points
        ]
        if len(px) == 1:
            c.add(f'<circle cx="{px[0][0]:.1f}" cy="{px[0][1]:.1f}" r="2" fill="{fill}"/>')
            continue
        c.add(
            f'<path d="{_path(px)}" fill="none" stroke="{fill}" stroke-width="1.5" '
            f'stroke-linejoin="round" clip-path="url(#clip{panel["id"]})"/>'
        )
    _legend_rows(c, entries, x + 10, base + 34, w - 16)


def draw_state_timeline(
    c: Canvas, panel: Mapping[str, Any], series: list[Series], box: Box, span: tuple[float, float]
) -> None:
    x, y, w, h = box
    defaults = panel.get("fieldConfig", {}).get("defaults", {})
    if not series:
        c.text(x + w / 2, y + h / 2, "No data", size=16, fill=MUTED, anchor="middle")
        return
    names = [s.legend for s in series]
    label_w = min(w * 0.3, max(text_width(n, 11) for n in names) + 16)
    left, right = x + 8 + label_w, x + w - 12
    entries: dict[str, str] = {}
    for mapping in defaults.get("mappings") or []:
        for key, option in sorted(mapping.get("options", {}).items()):
            fill = color(str(option.get("color", ""))) or threshold_color(
                float(key), defaults, PALETTE[0]
            )
            entries[str(option.get("text", key))] = fill
    legend_h = 22 if entries else 0
    top, base = y + 4, y + h - legend_h - 22
    row_h = (base - top) / len(series)
    t0, t1 = span
    scale = (right - left) / ((t1 - t0) or 1)
    for i, s in enumerate(series):
        ry = top + i * row_h + row_h * 0.1
        rh = row_h * 0.8
        c.text(x + 10, ry + rh / 2 + 4, fit(s.legend, 11, label_w - 12), size=11)
        runs: list[tuple[float, float, float]] = []  # (start, end, value)
        for j, (t, v) in enumerate(s.points):
            end = s.points[j + 1][0] if j + 1 < len(s.points) else t1
            if runs and runs[-1][2] == v and abs(runs[-1][1] - t) < 1e-6:
                runs[-1] = (runs[-1][0], end, v)
            else:
                runs.append((t, end, v))
        for start, end, v in runs:
            hit = mapped(v, defaults)
            text, fill = hit if hit is not None else (fmt_value(v, defaults.get("unit")), "")
            fill = fill or threshold_color(v, defaults, PALETTE[0])
            rx = left + (start - t0) * scale
            rw = max(1.0, (end - start) * scale - 1)
            c.add(
                f'<rect x="{rx:.1f}" y="{ry:.1f}" width="{rw:.1f}" height="{rh:.1f}" '
                f'fill="{fill}" fill-opacity="0.75" stroke="{fill}" stroke-width="1" rx="1"/>'
            )
            if text_width(text, 11) + 8 < rw:
                c.text(rx + rw / 2, ry + rh / 2 + 4, text, size=11, fill="#FFFFFF", anchor="middle")
    _time_axis(c, t0, t1, left, right, base)
    if entries:
        _legend_rows(c, list(entries.items()), x + 10, y + h - 10, w - 16)


def render_svg(
    dashboard: Mapping[str, Any], samples: Samples, *, subtitle: str = "", rendered_by: str = ""
) -> str:
    """The dashboard drawn from ``samples``: one ``<g class="panel">`` per panel of the JSON.

    Raises:
        DashboardError: A panel the renderer does not draw.
        QueryError: A query outside the supported subset.
    """
    panels = check_dashboard(dashboard)
    bottom = max(p["gridPos"]["y"] + p["gridPos"]["h"] for p in panels)
    height = HEADER + bottom * (CELL_H + GAP) + PAD
    span = (samples.times[0], samples.times[-1]) if samples.times else (0.0, 1.0)
    c = Canvas()
    c.add('<?xml version="1.0" encoding="UTF-8"?>')
    c.add(
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{height:.0f}" '
        f'viewBox="0 0 {WIDTH} {height:.0f}" font-family="{esc(FONT)}">'
    )
    title = str(dashboard.get("title", "dashboard"))
    c.add(f"<title>{esc(title)}</title>")
    if rendered_by:
        c.add(f"<desc>{esc(rendered_by)}</desc>")
    c.add(f'<rect width="{WIDTH}" height="{height:.0f}" fill="{BG}"/>')
    c.add('<g class="header">')
    c.text(PAD, 33, "Dashboards  /", size=16, fill=MUTED)
    c.text(PAD + text_width("Dashboards  /", 16) + 6, 33, title, size=16, weight=500)
    right_text = f"{subtitle}   ⟳ {dashboard.get('refresh', '')}".strip()
    c.text(WIDTH - PAD, 33, right_text, size=12, fill=MUTED, anchor="end")
    vx = float(PAD)
    for variable in dashboard.get("templating", {}).get("list", []):  # the variables' bar
        label = str(variable.get("label") or variable.get("name", ""))
        value = "Prometheus" if variable.get("type") == "datasource" else "All"
        lw, vw = text_width(label, 12) + 20, text_width(value, 12) + 36
        c.add(
            f'<rect x="{vx}" y="50" width="{lw:.1f}" height="26" rx="2" fill="#22252B" '
            f'stroke="{BORDER}"/>'
        )
        c.text(vx + 10, 67, label, size=12)
        c.add(
            f'<rect x="{vx + lw:.1f}" y="50" width="{vw:.1f}" height="26" rx="2" '
            f'fill="{BG}" stroke="{BORDER}"/>'
        )
        c.text(vx + lw + 10, 67, value, size=12)
        c.text(vx + lw + vw - 16, 67, "⌄", size=12, fill=MUTED)
        vx += lw + vw + 8
    c.add("</g>")
    for panel in panels:
        box = panel_box(panel["gridPos"])
        x, y, w, h = box
        kind = panel["type"]
        pid = panel["id"]
        c.add(
            f'<g class="panel" id="panel-{pid}" data-panel-id="{pid}" data-type="{kind}" '
            f'data-digest="{panel_digest(panel)}">'
        )
        c.add(f"<title>{esc(str(panel.get('title', '')))}</title>")
        if kind == "row":
            c.text(x + 2, y + 20, "⌄  " + str(panel.get("title", "")), size=14, weight=500)
            c.add("</g>")
            continue
        c.add(
            f'<rect x="{x:.1f}" y="{y:.1f}" width="{w:.1f}" height="{h:.1f}" rx="2" '
            f'fill="{PANEL_BG}" stroke="{BORDER}"/>'
        )
        c.text(x + 10, y + 20, fit(str(panel.get("title", "")), 13, w - 20), size=13, weight=500)
        series = panel_series(panel, samples)
        inner = (x, y + TITLE_H, w, h - TITLE_H)
        if kind == "stat":
            draw_stat(c, panel, series, inner)
        elif kind == "timeseries":
            draw_timeseries(c, panel, series, inner, span)
        else:
            draw_state_timeline(c, panel, series, inner, span)
        c.add("</g>")
    c.add("</svg>")
    return "\n".join(c.parts) + "\n"
