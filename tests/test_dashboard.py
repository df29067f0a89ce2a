"""The Grafana dashboard (docs/grafana-dashboard.json) and its picture (issue #17, H28).

Properties: the JSON has the shape Grafana imports (panels with unique ids on a 24-column
grid with no overlap, a ``datasource`` variable every query uses); every panel query parses
in the renderer's PromQL subset and reads only metric names a real exporter exposes (the
fleet exporter process over a state written by other processes, and ``EventMetrics``), and
returns data there; the evaluator agrees with Prometheus' rules (grouping, rate/increase with
resets and extrapolation, histogram quantiles, staleness) and refuses what it does not know;
the SVG is well-formed with one group per panel, and the checked-in picture was drawn from
the JSON as it is now.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import itertools
import json
import math
import os
import signal
import subprocess
import sys
import urllib.request
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

pytest.importorskip("prometheus_client")
from prometheus_client import CollectorRegistry, generate_latest

from resilient_trading import EventMetrics
from tests.test_status_cli import write_fleet
from tools.dashboard.panels import (
    DashboardError,
    check_dashboard,
    fmt_value,
    legend,
    panel_series,
)
from tools.dashboard.promql import (
    QueryError,
    Selector,
    bucket_quantile,
    evaluate,
    extrapolated_rate,
    metric_names,
    parse_query,
)
from tools.dashboard.samples import Labels, Samples, exposed_names, labels_of, parse_exposition
from tools.dashboard.svg import panel_digest, render_svg

pytestmark = pytest.mark.timeout(60)
ROOT = Path(__file__).resolve().parents[1]
DASHBOARD: dict[str, Any] = json.loads((ROOT / "docs" / "grafana-dashboard.json").read_text())
PICTURE = ROOT / "docs" / "_static" / "dashboard.svg"
PANELS = [p for p in DASHBOARD["panels"] if p["type"] != "row"]
IN_PROCESS_ROW = "In-process"


def _row_of(panel: dict[str, Any]) -> str:
    """The title of the row a panel sits under (rows are full-width panels above it)."""
    rows = [p for p in DASHBOARD["panels"] if p["type"] == "row"]
    above = [r for r in rows if r["gridPos"]["y"] < panel["gridPos"]["y"]]
    return str(max(above, key=lambda r: r["gridPos"]["y"])["title"])


# --- the JSON's shape ----------------------------------------------------------------------


def test_dashboard_json_has_the_shape_grafana_imports() -> None:
    panels = check_dashboard(DASHBOARD)  # ids, types, grid, overlaps, datasource, queries
    assert DASHBOARD["uid"] and DASHBOARD["title"] and isinstance(DASHBOARD["schemaVersion"], int)
    (variable,) = DASHBOARD["templating"]["list"]
    assert (variable["name"], variable["type"], variable["query"]) == (
        "datasource",
        "datasource",
        "prometheus",
    )
    assert "__inputs" not in DASHBOARD  # no import-time input: provisioning works as well
    for panel in panels:
        ref_ids = [t["refId"] for t in panel.get("targets", [])]
        assert len(ref_ids) == len(set(ref_ids)), panel["title"]
    kinds = {p["type"] for p in panels}
    assert {"row", "stat", "timeseries", "state-timeline"} == kinds


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda d: d["panels"][1].update(type="piechart"), "this renderer draws"),
        (lambda d: d["panels"][2]["gridPos"].update(x=2), "overlaps"),
        (lambda d: d["panels"][2]["gridPos"].update(x=22), "outside the 24-column grid"),
        (lambda d: d["panels"][3].update(id=2), "unique integer id"),
        (lambda d: d["templating"].update(list=[]), "datasource"),
        (lambda d: d["panels"][1].update(datasource={"uid": "abc"}), "datasource must be"),
    ],
)
def test_a_dashboard_the_renderer_cannot_draw_is_refused(change: Any, message: str) -> None:
    broken = copy.deepcopy(DASHBOARD)
    change(broken)
    with pytest.raises(DashboardError, match=message):
        check_dashboard(broken)


def test_an_unsupported_query_fails_loudly_naming_the_panel() -> None:
    broken = copy.deepcopy(DASHBOARD)
    broken["panels"][1]["targets"][0]["expr"] = "topk(3, resilient_trading_halted)"
    with pytest.raises(QueryError, match=r"panel 2 \('Halted'\).*`topk` is not supported"):
        render_svg(broken, Samples())


# --- the queries: the subset, and the names a real exporter exposes ------------------------


@pytest.mark.parametrize(
    ("panel", "expr"),
    [(p, t["expr"]) for p in PANELS for t in p["targets"]],
    ids=[f"{p['id']}-{t['refId']}" for p in PANELS for t in p["targets"]],
)
def test_every_panel_query_parses_in_the_renderers_subset(panel: dict[str, Any], expr: str) -> None:
    names = metric_names(parse_query(expr))
    assert names, f"{panel['title']}: {expr} reads no metric"
    assert all(n.startswith("resilient_trading_") for n in names)


@dataclasses.dataclass(frozen=True)
class Scraped:
    fleet: str  # the fleet exporter's last exposition
    events: str  # EventMetrics' exposition (what a bot serves besides)
    samples: Samples  # three scrapes of the fleet exporter


@pytest.fixture(scope="module")
def exporter(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Scraped]:
    """The ``resilient-trading metrics`` process serving a state other processes wrote,
    scraped three times, and the exposition of ``EventMetrics`` (a bot's own registry)."""
    state = tmp_path_factory.mktemp("fleet")
    write_fleet("dir", str(state))  # a process that exits: the state outlives it
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "resilient_trading",
            "metrics",
            "--listen",
            "127.0.0.1:0",
            "--state-dir",
            str(state),
        ],
        stdout=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        assert proc.stdout is not None
        url = proc.stdout.readline().split()[1]  # "serving http://127.0.0.1:PORT/metrics ..."
        samples = Samples()
        text = ""
        for n in range(3):
            with urllib.request.urlopen(url, timeout=10) as response:
                text = response.read().decode()
            at = 1_000.0 + 15.0 * n  # the scrape times a 15 s Prometheus would record
            samples.add_scrape(at, parse_exposition(text, job="fleet", instance="x:1"), "x:1")
        registry = CollectorRegistry()
        EventMetrics(registry)
        yield Scraped(text, generate_latest(registry).decode(), samples)
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def test_queries_read_only_names_the_exporters_expose(exporter: Scraped) -> None:
    fleet, events = exposed_names(exporter.fleet), exposed_names(exporter.events)
    assert "resilient_trading_breaker_trips_total" in fleet
    assert "resilient_trading_limiter_wait_seconds_bucket" in events
    for panel in PANELS:
        exposed = events if _row_of(panel).startswith(IN_PROCESS_ROW) else fleet
        for target in panel["targets"]:
            missing = metric_names(parse_query(target["expr"])) - exposed
            assert not missing, f"panel {panel['title']!r} reads {missing}: no exporter has them"


def test_every_fleet_panel_shows_data_for_a_real_fleet(exporter: Scraped) -> None:
    samples = exporter.samples
    for panel in PANELS:
        if _row_of(panel).startswith(IN_PROCESS_ROW):
            continue  # those come from a bot's own registry, tested by the evaluator's tests
        series = panel_series(panel, samples)
        assert series, f"panel {panel['title']!r} has no data for a real fleet's state"
    (stat,) = panel_series(next(p for p in PANELS if p["title"] == "Latched breakers"), samples)
    assert stat.points[-1][1] == 1  # the writer latched `orders`
    (opened,) = panel_series(next(p for p in PANELS if p["title"] == "Open breakers"), samples)
    assert opened.points[-1][1] == 1


# --- the evaluator against Prometheus' rules -----------------------------------------------

label_values = st.sampled_from(["a", "b", "c"])
vectors = st.dictionaries(
    st.tuples(label_values, label_values), st.integers(-5, 50), min_size=0, max_size=9
)


def _samples_of(vector: dict[tuple[str, str], int], name: str = "m") -> Samples:
    s = Samples()
    s.add_scrape(10.0, {labels_of(name, {"x": x, "y": y}): v for (x, y), v in vector.items()}, "i")
    return s


@given(vectors)
def test_aggregations_group_as_prometheus_does(vector: dict[tuple[str, str], int]) -> None:
    s = _samples_of(vector)
    by_x = evaluate(parse_query("sum by (x) (m)"), s, 10.0)
    want: dict[Labels, float] = {}
    for (x, _), v in vector.items():
        want[(("x", x),)] = want.get((("x", x),), 0) + v
    assert by_x == want
    total = evaluate(parse_query("sum(m)"), s, 10.0)
    assert total == ({(): float(sum(vector.values()))} if vector else {})
    count = evaluate(parse_query("count(m > 3) or vector(0)"), s, 10.0)
    assert count == {(): float(sum(v > 3 for v in vector.values()))}
    if vector:
        assert evaluate(parse_query("max(m)"), s, 10.0) == {(): max(vector.values())}
        assert evaluate(parse_query("min(m)"), s, 10.0) == {(): min(vector.values())}
        ratio = evaluate(parse_query("m / m * 2"), s, 10.0)
        assert isinstance(ratio, dict)
        assert all(v == 2 or math.isnan(v) for v in ratio.values())
        assert evaluate(parse_query("time() - m"), s, 12.0) == {
            (("x", x), ("y", y)): 12.0 - v for (x, y), v in vector.items()
        }


counters = st.lists(st.integers(0, 20), min_size=2, max_size=30).map(
    lambda steps: list(itertools.accumulate(steps))
)


@st.composite
def restarted_counters(draw: st.DrawFn) -> tuple[list[int], list[int]]:
    """A counter's values, and the same counts from a process that restarted mid-way (its
    counter began again at zero, and the drop is visible: the first value after the restart
    is below the last one before it)."""
    before = draw(counters.filter(lambda v: v[-1] > 0))
    first = draw(st.integers(0, before[-1] - 1))
    after = [first + v for v in draw(counters.map(lambda c: [v - c[0] for v in c]))]
    return before + [before[-1] + v for v in after], before + after


@given(restarted_counters(), st.sampled_from([1.0, 5.0, 15.0]))
def test_rate_compensates_a_counter_reset(
    pair: tuple[list[int], list[int]], interval: float
) -> None:
    """A restarted bot's counter has the increase of the counter that did not restart."""
    values, restarted = pair
    end = len(values) * interval
    start = end - (len(values) + 1) * interval
    want = extrapolated_rate([(i * interval, float(v)) for i, v in enumerate(values)],
                             start, end, is_rate=False)  # fmt: skip
    got = extrapolated_rate([(i * interval, float(v)) for i, v in enumerate(restarted)],
                            start, end, is_rate=False)  # fmt: skip
    assert got is not None and want is not None
    assert math.isclose(got, want, rel_tol=1e-9, abs_tol=1e-9)


@given(st.floats(0.1, 100), st.integers(3, 40))
def test_rate_of_a_steady_counter_is_its_slope(slope: float, n: int) -> None:
    """Sampled every second over a whole window, a counter rising ``slope`` a second has
    that rate, and an increase of ``slope`` times the window (Prometheus' extrapolation)."""
    s = Samples()
    for i in range(n + 1):
        s.add_scrape(float(i), {labels_of("c_total", {}): 1000 + slope * i}, "i")
    window = f"{n}s"
    rate = evaluate(parse_query(f"rate(c_total[{window}])"), s, float(n))
    assert isinstance(rate, dict)
    assert math.isclose(rate[()], slope, rel_tol=1e-9)
    inc = evaluate(parse_query(f"increase(c_total[{window}]) * 60"), s, float(n))
    assert isinstance(inc, dict)
    assert math.isclose(inc[()], slope * n * 60, rel_tol=1e-9)


@given(st.floats(0.1, 100), st.integers(3, 120))
def test_increase_over_a_longer_window_extrapolates_half_an_interval(slope: float, n: int) -> None:
    """A series younger than the window (the dashboard's `increase(...[1h])` over a fresh
    fleet) is extrapolated by half a scrape interval at its start, not to the window's start."""
    s = Samples()
    for i in range(n + 1):
        s.add_scrape(float(i), {labels_of("c_total", {}): 1000 + slope * i}, "i")
    inc = evaluate(parse_query("increase(c_total[1h])"), s, float(n))
    assert isinstance(inc, dict)
    assert math.isclose(inc[()], slope * (n + 0.5), rel_tol=1e-9)


@pytest.mark.parametrize(
    ("q", "buckets", "want"),
    [
        (0.5, [(1.0, 0.0), (2.0, 10.0), (math.inf, 10.0)], 1.5),  # linear inside (1, 2]
        (0.95, [(0.1, 90.0), (1.0, 100.0), (math.inf, 100.0)], 0.55),
        (0.5, [(0.5, 4.0), (math.inf, 10.0)], 0.5),  # in +Inf: the highest finite bound
        (0.25, [(2.0, 8.0), (math.inf, 8.0)], 0.5),  # the first bucket starts at 0
        (0.5, [(1.0, 0.0), (math.inf, 0.0)], math.nan),  # no observations
        (0.5, [(1.0, 3.0)], math.nan),  # no +Inf bucket
    ],
)
def test_histogram_quantile_matches_prometheus_examples(
    q: float, buckets: list[tuple[float, float]], want: float
) -> None:
    got = bucket_quantile(q, buckets)
    assert (math.isnan(got) and math.isnan(want)) or math.isclose(got, want, rel_tol=1e-9)


@given(st.lists(st.floats(0.0, 10.0), min_size=1, max_size=60), st.floats(0.01, 1.0))
def test_histogram_quantile_lands_in_the_bucket_of_the_true_quantile(
    observed: list[float], q: float
) -> None:
    bounds = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 7.5, 10.0, math.inf]
    buckets = [(b, float(sum(o <= b for o in observed))) for b in bounds]
    got = bucket_quantile(q, buckets)
    ordered = sorted(observed)
    true = ordered[max(0, math.ceil(q * len(ordered)) - 1)]
    upper = next(b for b in bounds if true <= b)
    lower = max([0.0] + [b for b in bounds if b < upper])
    assert lower - 1e-9 <= got <= upper + 1e-9
    s = Samples()
    for le, count in buckets:
        s.add_scrape(0.0, {labels_of("h_bucket", {"le": f"{le}", "limiter": "l"}): count}, "i")
    by = evaluate(parse_query(f"histogram_quantile({q}, sum by (le, limiter) (h_bucket))"), s, 0)
    assert by == {(("limiter", "l"),): got} or math.isnan(got)


@pytest.mark.parametrize(
    "query",
    [
        "topk(3, m)",
        "m offset 5m",
        "m[5m]",
        "sum without (a) (m)",
        "m and n",
        "m unless n",
        "label_replace(m, 'a', 'b', 'c', 'd')",
        'm{a=~"x.*"}',
        "m > bool 1",
        "deriv(m[5m])",
        "m / on (a) n",
        "1 > 2",
        "sum(m",
        "",
        "m @ 100",
    ],
)
def test_what_is_outside_the_subset_is_refused(query: str) -> None:
    with pytest.raises(QueryError):
        evaluate(parse_query(query), Samples(), 0.0)


TOKENS = ["m", "n", "sum", "by", "(", ")", "[5m]", "rate", "or", "vector", "==", "2", "*", "/"]
TOKENS += ["+", "-", "{", "}", 'a="x"', ",", "time", "offset", "0.9", "histogram_quantile"]


@given(st.lists(st.sampled_from(TOKENS), max_size=12))
def test_any_text_either_parses_or_is_refused_with_a_query_error(words: list[str]) -> None:
    query = " ".join(words)
    s = _samples_of({("a", "b"): 1})
    with contextlib.suppress(QueryError):  # refused, with a message naming the query
        evaluate(parse_query(query), s, 10.0)


class ScrapeMachine(RuleBasedStateMachine):
    """Scrapes of two targets, each series present or not: an instant selector at any scrape
    time sees exactly what the latest scrape of each target up to then had (a series a
    target stopped exposing is stale at once, as in Prometheus)."""

    def __init__(self) -> None:
        super().__init__()
        self.samples = Samples()
        self.model: list[tuple[float, str, dict[Labels, float]]] = []
        self.now = 0.0

    @rule(
        who=st.sampled_from(["t1:1", "t2:1"]),
        present=st.dictionaries(st.sampled_from(["a", "b", "c"]), st.integers(0, 9)),
        gap=st.sampled_from([1.0, 15.0, 400.0]),
    )
    def scrape(self, who: str, present: dict[str, int], gap: float) -> None:
        self.now += gap
        scraped = {labels_of("m", {"k": k, "instance": who}): float(v) for k, v in present.items()}
        self.samples.add_scrape(self.now, scraped, who)
        self.model.append((self.now, who, scraped))

    @invariant()
    def selector_sees_the_latest_scrape_of_each_target(self) -> None:
        for at in [t for t, _, _ in self.model[-3:]]:
            want: dict[Labels, float] = {}
            for target in ("t1:1", "t2:1"):
                mine = [(t, s) for t, tg, s in self.model if tg == target and t <= at]
                if mine and at - mine[-1][0] <= 300:
                    want.update(mine[-1][1])
            assert evaluate(Selector("m"), self.samples, at) == want


TestScrapeMachine = ScrapeMachine.TestCase


# --- units and names, as Grafana writes them -----------------------------------------------


def test_units_and_legends_read_as_grafana_writes_them() -> None:
    assert fmt_value(0.25, "percentunit") == "25%"
    assert fmt_value(1.5 * 86_400, "s") == "1.5 day"
    assert fmt_value(90, "s") == "1.5 min"
    assert fmt_value(1200, None) == "1.2 K"
    assert legend("{{budget}} /{{period_seconds}}s", labels_of("m", {"budget": "b",
                  "period_seconds": "60"}), "m") == "b /60s"  # fmt: skip
    assert legend("", (), "max(m)") == "max(m)"


# --- the picture ---------------------------------------------------------------------------


def _panel_groups(svg: str) -> list[ET.Element]:
    root = ET.fromstring(svg)
    return [g for g in root.iter("{http://www.w3.org/2000/svg}g") if g.get("class") == "panel"]


def test_svg_is_well_formed_with_one_group_per_panel(exporter: Scraped) -> None:
    groups = _panel_groups(render_svg(DASHBOARD, exporter.samples, subtitle="Last 30 s"))
    assert [int(g.get("data-panel-id", "0")) for g in groups] == [
        p["id"] for p in DASHBOARD["panels"]
    ]
    assert [g.get("data-type") for g in groups] == [p["type"] for p in DASHBOARD["panels"]]


def test_the_checked_in_picture_is_drawn_from_the_json_as_it_is() -> None:
    """Regenerate with `make dashboard` after changing docs/grafana-dashboard.json."""
    groups = _panel_groups(PICTURE.read_text())
    assert [(int(g.get("data-panel-id", "0")), g.get("data-digest")) for g in groups] == [
        (p["id"], panel_digest(p)) for p in DASHBOARD["panels"]
    ], "docs/_static/dashboard.svg is older than the dashboard JSON: run `make dashboard`"
