"""The Prometheus exporter (issue #17): the fleet's shared state, written by other processes,
read by ``resilient-trading metrics`` (a real process on a real socket); and in-process
metrics from events.

Properties: the output parses with ``prometheus_client.parser``; it carries the budget,
breaker, address and store values another process left (none of them running); ``/healthz``
says 503 and why while a breaker is latched, 200 when all is well; the names follow the
documented set; event counters count what the events say.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

pytest.importorskip("prometheus_client")
from prometheus_client import CollectorRegistry
from prometheus_client.parser import text_string_to_metric_families

from resilient_trading import CircuitBreaker, ManualClock, NetworkError, RetryPolicy
from resilient_trading._events import BreakerEvents, EventBus, retry_events
from resilient_trading._metrics import EventMetrics, exposition
from tests._fleet_writer import ADDRESS
from tests.test_status_cli import write_fleet

pytestmark = pytest.mark.timeout(60)
ROOT = Path(__file__).resolve().parents[1]


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def _check(values: dict[tuple[str, tuple[tuple[str, str], ...]], float], budget: str) -> None:
    p = "resilient_trading_"
    label = (("budget", budget), ("period_seconds", "60"))
    assert values[(p + "budget_used_weight", label)] == 300
    assert values[(p + "budget_limit_weight", label)] == 1200
    assert values[(p + "budget_utilisation_ratio", (("budget", budget),))] == 0.25
    orders = (("breaker", "orders"),)
    assert values[(p + "breaker_state", orders)] == 2
    assert values[(p + "breaker_latched", orders)] == 1
    assert values[(p + "breaker_trips_total", orders)] == 1
    assert values[(p + "breaker_state", (("breaker", "info"),))] == 0
    address = (("address", ADDRESS),)
    assert values[(p + "address_actions_used", address)] == 600
    assert 0 < values[(p + "address_runway_seconds", address)] < 86_400
    assert values[(p + "needs_operator", ())] == 1
    assert values[(p + "halted", ())] == 0


def _get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def test_exporter_process_serves_the_state_other_processes_wrote(tmp_path: Path) -> None:
    write_fleet("dir", str(tmp_path))
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    argv = ["--listen", "127.0.0.1:0", "--state-dir", str(tmp_path)]
    proc = subprocess.Popen(
        [sys.executable, "-m", "resilient_trading", "metrics", *argv],
        stdout=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()  # "serving http://127.0.0.1:PORT/metrics ..."
        base = line.split()[1].rsplit("/", 1)[0]
        status, text = _get(base + "/metrics")
        assert status == 200
        values = samples(text)
        _check(values, "budget.json")
        assert values[("resilient_trading_store_generation", (("store", "state.json"),))] == 2
        status, body = _get(base + "/healthz")
        assert status == 503 and "breaker orders latched" in body
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def test_exporter_reads_a_redis_fleet(redis_url: str) -> None:
    write_fleet("redis", redis_url)
    _check(samples(exposition(redis_url=redis_url)), "default")


def test_healthz_is_200_when_all_is_well(tmp_path: Path) -> None:
    import json

    from resilient_trading._metrics import serve

    CircuitBreaker(name="x", state_path=tmp_path / "breaker.json")
    server = serve("127.0.0.1", 0, state_dir=str(tmp_path))
    try:
        status, body = _get(f"http://127.0.0.1:{server.server_port}/healthz")
        assert status == 200
        assert json.loads(body)["status"] == "ok" and json.loads(body)["reasons"] == []
        status, _ = _get(f"http://127.0.0.1:{server.server_port}/nope")
        assert status == 404
    finally:
        server.shutdown()
        server.server_close()


def test_every_name_follows_the_conventions(tmp_path: Path) -> None:
    write_fleet("dir", str(tmp_path))
    for family in text_string_to_metric_families(exposition(state_dir=str(tmp_path))):
        assert family.name.startswith("resilient_trading_")
        if family.type == "counter":
            assert all(s.name.endswith("_total") for s in family.samples)
        for s in family.samples:
            assert set(s.labels) <= {"budget", "period_seconds", "breaker", "address", "store"}


def test_fleet_and_event_metrics_share_one_registry_without_a_family_clash(
    tmp_path: Path,
) -> None:
    """The bot serves both in one registry: a gauge ``x`` beside a counter ``x_total`` would
    be one family twice (OpenMetrics refuses it; the parser merges them)."""
    from resilient_trading._metrics import FleetCollector

    write_fleet("dir", str(tmp_path))
    registry = CollectorRegistry(auto_describe=False)
    registry.register(FleetCollector(state_dir=str(tmp_path)))
    EventMetrics(registry)  # declares every event family (# TYPE lines) at once
    from prometheus_client import generate_latest

    text = generate_latest(registry).decode()
    declared: dict[str, str] = {}
    for line in text.splitlines():
        if line.startswith("# TYPE "):
            _, _, name, kind = line.split(" ", 3)
            base = name[: -len("_total")] if kind == "counter" and name.endswith("_total") else name
            assert base not in declared, f"{name} ({kind}) clashes with {declared[base]}"
            declared[base] = f"{name} ({kind})"
    names = [f.name for f in text_string_to_metric_families(text)]
    assert len(names) == len(set(names))
    assert "resilient_trading_breaker_consecutive_failures" in names


@given(outcomes=st.lists(st.booleans(), max_size=15))
def test_event_counters_count_what_the_events_say(outcomes: list[bool]) -> None:
    registry = CollectorRegistry()
    bus = EventBus()
    bus.add_listener(EventMetrics(registry))
    breaker = CircuitBreaker(
        fail_max=100, clock=ManualClock(), listeners=[BreakerEvents(bus)], name="b"
    )
    failures = 0
    for ok in outcomes:
        if ok:
            breaker.call(lambda: None)
        else:
            failures += 1
            with pytest.raises(NetworkError):
                breaker.call(_raise)
    value = registry.get_sample_value(
        "resilient_trading_breaker_failures_total", {"breaker": "b", "error_kind": "NetworkError"}
    )
    assert (value or 0) == failures


def _raise() -> Any:
    raise NetworkError("down")


def test_retry_events_feed_counter_and_histogram() -> None:
    registry = CollectorRegistry()
    bus = EventBus()
    bus.add_listener(EventMetrics(registry))
    calls: list[int] = []

    def flaky() -> str:
        calls.append(1)
        if len(calls) < 3:
            raise ConnectionResetError("reset")
        return "ok"

    RetryPolicy(clock=ManualClock(), on_retry=retry_events("x", bus)).call(flaky)
    assert (
        registry.get_sample_value("resilient_trading_retries_total", {"error_kind": "NetworkError"})
        == 2
    )
    assert registry.get_sample_value("resilient_trading_retry_delay_seconds_count") == 2


def test_without_the_extra_the_error_says_what_to_install(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setitem(sys.modules, "prometheus_client", None)
    with pytest.raises(ImportError, match=r"resilient-trading\[metrics\]"):
        exposition(state_dir=str(tmp_path))


def test_grafana_dashboard_uses_only_metrics_we_export(tmp_path: Path) -> None:
    import json
    import re

    write_fleet("dir", str(tmp_path))
    names = {
        s.name
        for f in text_string_to_metric_families(exposition(state_dir=str(tmp_path)))
        for s in f.samples
    }
    registry = CollectorRegistry()
    EventMetrics(registry)
    for family in registry.collect():
        suffix = {"counter": "_total", "histogram": "_bucket"}.get(family.type, "")
        names.add(family.name + suffix)
    dashboard = json.loads((ROOT / "docs" / "grafana-dashboard.json").read_text())
    exprs = [t["expr"] for p in dashboard["panels"] for t in p.get("targets", [])]
    used = {m for e in exprs for m in re.findall(r"resilient_trading_\w+", e)}
    assert used and used <= names, used - names
    page = (ROOT / "docs" / "howto" / "operations-fleet.md").read_text()
    undocumented = {n for n in used if n.removesuffix("_bucket") not in page}
    assert not undocumented, undocumented
