"""The example bot's ``/metrics`` and ``/healthz`` (issue #17, "The bot").

- :func:`assess` (what ``/healthz`` says) against a small reference model, driven by a
  stateful test over a heartbeat, a manual clock and the shared state's findings;
- the endpoint in-process over real HTTP on 127.0.0.1 (a manual clock, a real state
  directory, a real latched breaker): each reason turns it 503 and back, a failing part of the
  exporter is an answer and a log line, never an exception, and connections are bounded;
- the real bot process (``python -m examples.hyperliquid_bot --metrics-port 0``) against the
  bundled simulator: ``/metrics`` parses and carries the shared budget and breakers,
  ``/healthz`` follows ``resilient-trading halt`` / ``resume`` and a latched breaker, and
  hanging scrapers do not slow its loop;
- without ``prometheus-client``, ``--metrics-port`` fails at start naming the extra.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import queue
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import eth_account
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule
from prometheus_client.parser import text_string_to_metric_families

from examples.hyperliquid_bot.bot import apply_overrides, parse_args
from examples.hyperliquid_bot.config import ConfigError, load_config
from examples.hyperliquid_bot.health import (
    CHECKS,
    FeedReading,
    HealthLimits,
    Heartbeat,
    MetricsServer,
    Observed,
    assess,
    report,
)
from resilient_trading import AuthenticationError, CircuitBreaker
from resilient_trading.testing import Simulator

ROOT = Path(__file__).resolve().parents[1]
CONFIG = ROOT / "examples" / "hyperliquid_bot" / "config.toml"
LIMITS = HealthLimits(
    loop_seconds=1.0, stalled_loops=5, feed_stale_seconds=30.0, runway_alert_seconds=86_400.0
)


class FakeClock:
    """A monotonic clock the test moves by hand."""

    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


# --- the decision, against a reference model ------------------------------------------------


class HealthModel(RuleBasedStateMachine):
    """Beats, clock moves, halts, latches, feed ages and runways in any order: the checks
    :func:`assess` fails are exactly the model's, and ``report`` agrees with them."""

    @initialize()
    def start(self) -> None:
        self.clock = FakeClock()
        self.heart = Heartbeat(clock=self.clock)
        self.beats = 0
        self.started = False
        self.halted: str | None = None
        self.latched: dict[str, str] = {}
        self.feed_age: float | None = None
        self.runway: float | None = None
        self.problems: tuple[str, ...] = ()
        self.last_beat_at = self.clock.t

    @rule(started=st.booleans(), halted=st.sampled_from([None, "halted by ops: incident"]))
    def beat(self, started: bool, halted: str | None) -> None:
        self.heart.beat(started=started, halted=halted, degraded="")
        self.beats += 1
        self.started, self.halted = started, halted
        self.last_beat_at = self.clock.t

    @rule(seconds=st.floats(0, 20, allow_nan=False))
    def wait(self, seconds: float) -> None:
        self.clock.t += seconds
        if self.feed_age is not None:
            self.feed_age += seconds

    @rule(name=st.sampled_from(["exchange", "protect"]), latch=st.booleans())
    def breaker(self, name: str, latch: bool) -> None:
        if latch:
            self.latched[name] = "AuthenticationError: key revoked"
        else:
            self.latched.pop(name, None)

    @rule(age=st.one_of(st.none(), st.floats(0, 100, allow_nan=False)))
    def feed(self, age: float | None) -> None:
        self.feed_age = age

    @rule(runway=st.one_of(st.none(), st.floats(0, 1e6, allow_nan=False)))
    def address(self, runway: float | None) -> None:
        self.runway = runway

    @rule(broken=st.booleans())
    def state(self, broken: bool) -> None:
        self.problems = ("cannot read budget.json: StateCorruptedError",) if broken else ()

    def observed(self) -> Observed:
        return Observed(
            now=self.clock.t,
            born=self.heart.born,
            beat=self.heart.last,
            feeds=(FeedReading("allMids", self.feed_age, "live"),),
            latched=tuple(sorted(self.latched.items())),
            runways=() if self.runway is None else (("0xabc", self.runway),),
            problems=self.problems,
        )

    def expected(self) -> set[str]:
        now, born = self.clock.t, self.heart.born
        out = set()
        if not self.started:
            out.add("started")
        if now - self.last_beat_at > LIMITS.stall_seconds:
            out.add("loop")
        if self.halted is not None:
            out.add("halt")
        if self.latched:
            out.add("breaker")
        age = (now - born) if self.feed_age is None else self.feed_age
        if age > LIMITS.feed_stale_seconds:
            out.add("feed")
        if self.runway is not None and self.runway < LIMITS.runway_alert_seconds:
            out.add("runway")
        if self.problems:
            out.add("state")
        return out

    @invariant()
    def checks_match_the_model(self) -> None:
        findings = assess(self.observed(), LIMITS)
        assert {f.check for f in findings} == self.expected()
        assert all(f.check in CHECKS and f.message for f in findings)
        # One finding per latched breaker, each naming it.
        named = [f.message for f in findings if f.check == "breaker"]
        assert len(named) == len(self.latched)
        assert all(any(name in m for m in named) for name in self.latched)

    @invariant()
    def report_agrees(self) -> None:
        body = report(self.observed(), LIMITS)
        expected = self.expected()
        assert body["status"] == ("unavailable" if expected else "ok")
        assert set(body["failing"]) == expected
        assert body["loop"]["loops"] == self.beats
        json.dumps(body)  # the body is JSON as it stands


TestHealthModel = HealthModel.TestCase
TestHealthModel.settings = settings(max_examples=40, stateful_step_count=25, deadline=None)


@given(
    seen=st.builds(
        Observed,
        now=st.floats(0, 1e4, allow_nan=False),
        born=st.just(0.0),
        beat=st.none(),
        feeds=st.lists(
            st.builds(
                FeedReading,
                subscription=st.sampled_from(["allMids", "candle:btc,1m"]),
                age=st.one_of(st.none(), st.floats(0, 1e3, allow_nan=False)),
                state=st.sampled_from(["live", "stale", "down", "pending"]),
            ),
            max_size=2,
        ).map(tuple),
    ),
    later=st.floats(0, 1e3, allow_nan=False),
)
def test_more_silence_never_makes_the_bot_healthier(seen: Observed, later: float) -> None:
    """Time passing with nothing else changing only ever adds reasons."""
    aged = Observed(
        now=seen.now + later,
        born=seen.born,
        beat=seen.beat,
        feeds=tuple(
            FeedReading(f.subscription, None if f.age is None else f.age + later, f.state)
            for f in seen.feeds
        ),
    )
    before = {f.check for f in assess(seen, LIMITS)}
    after = {f.check for f in assess(aged, LIMITS)}
    assert before <= after


# --- the configuration and the command line -------------------------------------------------


@given(port=st.integers(-100, 70_000))
def test_metrics_port_is_validated_like_the_file(port: int) -> None:
    config = load_config(CONFIG)
    args = parse_args(["--config", str(CONFIG), "--metrics-port", str(port)])
    if 0 <= port <= 65535:
        assert apply_overrides(config, args).metrics.port == port
    else:
        with pytest.raises(ConfigError) as err:
            apply_overrides(config, args)
        assert any(line.startswith("metrics.port") for line in err.value.lines)


def test_the_shipped_config_serves_nothing_unless_asked(tmp_path: Path) -> None:
    config = load_config(CONFIG)
    assert config.metrics.port is None and config.metrics.host == "127.0.0.1"
    bad = tmp_path / "bad.toml"
    bad.write_text('[metrics]\nport = 9465\nhost = ""\nstalled_loops = 1\nsurprise = 1\n')
    with pytest.raises(ConfigError) as err:
        load_config(bad)
    wrong = {line.split(":")[0] for line in err.value.lines}
    assert wrong == {"metrics.host", "metrics.stalled_loops", "metrics.surprise"}


# --- the endpoint in-process, over real HTTP ------------------------------------------------


def get(url: str, timeout: float = 5.0) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as answer:
            return int(answer.status), bytes(answer.read())
    except urllib.error.HTTPError as exc:
        return int(exc.code), bytes(exc.read())


def health(url: str) -> tuple[int, dict[str, Any]]:
    status, body = get(url + "/healthz")
    parsed: dict[str, Any] = json.loads(body)
    return status, parsed


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of a Prometheus text exposition by (name, labels); it must parse."""
    out = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            out[(sample.name, tuple(sorted(sample.labels.items())))] = float(sample.value)
    return out


class Feeds:
    def __init__(self) -> None:
        self.readings: list[FeedReading] = []
        self.fail = False

    def __call__(self) -> list[FeedReading]:
        if self.fail:
            raise RuntimeError("the feed is gone")
        return list(self.readings)


@contextlib.contextmanager
def endpoint(
    state_dir: Path, clock: FakeClock, feeds: Feeds, **options: Any
) -> Iterator[tuple[MetricsServer, Heartbeat]]:
    heart = Heartbeat(clock=clock)
    server = MetricsServer(
        state_dir=state_dir, heartbeat=heart, limits=LIMITS, feeds=feeds, **options
    ).start()
    try:
        yield server, heart
    finally:
        server.close()


def latch(state_dir: Path) -> CircuitBreaker:
    breaker = CircuitBreaker(name="exchange", state_path=state_dir / "breaker.json")

    def refused() -> None:
        raise AuthenticationError("API wallet unknown")

    with contextlib.suppress(AuthenticationError):
        breaker.call(refused)
    assert breaker.latched
    return breaker


def test_each_reason_turns_healthz_503_and_back(tmp_path: Path) -> None:
    clock, feeds = FakeClock(), Feeds()
    with endpoint(tmp_path, clock, feeds) as (server, heart):
        status, body = health(server.url)
        assert status == 503 and body["failing"] == ["started"], body
        heart.beat(started=True, halted=None, degraded="")
        assert health(server.url)[0] == 200
        # The loop stops completing steps: 503 once 5 loop intervals have passed.
        clock.t += 5.5
        status, body = health(server.url)
        assert status == 503 and body["failing"] == ["loop"], body
        assert "has not completed a step for 6 s" in body["reasons"][0]
        heart.beat(started=True, halted="halted by ops: incident", degraded="")
        status, body = health(server.url)
        assert status == 503 and body["failing"] == ["halt"], body
        heart.beat(started=True, halted=None, degraded="")
        feeds.readings = [FeedReading("allMids", 31.0, "stale")]
        status, body = health(server.url)
        assert status == 503 and body["failing"] == ["feed"], body
        assert "allMids silent for 31 s" in body["reasons"][0]
        feeds.readings = [FeedReading("allMids", 0.5, "live")]
        assert health(server.url)[0] == 200
        breaker = latch(tmp_path)
        status, body = health(server.url)
        assert status == 503 and body["failing"] == ["breaker"], body
        assert "breaker exchange latched: AuthenticationError" in body["reasons"][0]
        metrics = samples(get(server.url + "/metrics")[1].decode())
        assert metrics[("resilient_trading_breaker_latched", (("breaker", "exchange"),))] == 1
        assert metrics[("resilient_trading_bot_healthy", ())] == 0
        assert metrics[("resilient_trading_bot_check_failing", (("check", "breaker"),))] == 1
        breaker.reset()
        assert health(server.url)[0] == 200
        metrics = samples(get(server.url + "/metrics")[1].decode())
        assert metrics[("resilient_trading_bot_healthy", ())] == 1
        assert metrics[("resilient_trading_bot_loops_total", ())] == 3


def test_a_failing_exporter_answers_and_logs_never_raises(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    clock, feeds = FakeClock(), Feeds()
    state = tmp_path / "state"
    state.mkdir()
    with endpoint(state, clock, feeds) as (server, heart), caplog.at_level(logging.WARNING):
        heart.beat(started=True, halted=None, degraded="")
        feeds.fail = True
        status, body = health(server.url)
        assert status == 503 and body["failing"] == ["state"], body
        assert "cannot read the feed's status: RuntimeError" in body["reasons"][0]
        feeds.fail = False
        state.rmdir()  # the state directory is gone: the fleet view cannot be read
        status, body = health(server.url)
        assert status == 503 and "state" in body["failing"], body
        code, text = get(server.url + "/metrics")
        assert code == 200 and samples(text.decode())[("resilient_trading_bot_healthy", ())] == 0
        assert get(server.url + "/nowhere")[0] == 404
        state.mkdir()
        assert health(server.url)[0] == 200
    assert "cannot read the feed's status" in caplog.text
    assert f"cannot read {state}" in caplog.text


def test_connections_are_bounded_and_an_idle_one_is_dropped(tmp_path: Path) -> None:
    clock, feeds = FakeClock(), Feeds()
    with endpoint(tmp_path, clock, feeds, max_connections=3, client_timeout=0.5) as (server, _):
        idle = [socket.create_connection(("127.0.0.1", server.port)) for _ in range(3)]
        extra = socket.create_connection(("127.0.0.1", server.port))
        extra.settimeout(3.0)
        assert extra.recv(100) == b""  # closed at once: every slot is taken
        for conn in idle:  # each idle client is dropped after client_timeout
            conn.settimeout(3.0)
            assert conn.recv(100) == b""
            conn.close()
        extra.close()
        assert health(server.url)[0] == 503  # answers again (not started: no beat yet)


# --- the real bot process against the simulator ---------------------------------------------


class BotProcess:
    """``python -m examples.hyperliquid_bot --metrics-port 0`` and its stdout lines."""

    def __init__(self, url: str, state_dir: Path, config: Path, *extra: str) -> None:
        env = {
            **os.environ,
            "HYPERLIQUID_PRIVATE_KEY": eth_account.Account.create().key.hex(),
            "PYTHONUNBUFFERED": "1",
        }
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "examples.hyperliquid_bot",
                "--config",
                str(config),
                "--base-url",
                url,
                "--state-dir",
                str(state_dir),
                "--metrics-port",
                "0",
                *extra,
            ],
            cwd=ROOT,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
        )
        self.lines: queue.Queue[str] = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.put(line)

    def metrics_url(self, timeout: float = 30.0) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                line = self.lines.get(timeout=0.2)
            except queue.Empty:
                assert self.proc.poll() is None, f"the bot exited ({self.proc.returncode})"
                continue
            if line.startswith("[bot] metrics: "):
                return line.split()[2].removesuffix("/metrics")
        raise AssertionError("the bot never said where its metrics are")


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "resilient_trading", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )


def wait_health(url: str, want: int, timeout: float = 15.0) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        status, body = health(url)
        if status == want:
            return body
        assert time.monotonic() < deadline, f"/healthz stayed {status}: {body}"
        time.sleep(0.1)


@pytest.mark.timeout(90)
def test_the_bot_serves_metrics_and_health_that_follow_the_operator(tmp_path: Path) -> None:
    config = tmp_path / "config.toml"
    config.write_text(CONFIG.read_text().replace("loop_seconds = 2.0", "loop_seconds = 0.5"))
    state = tmp_path / "state"
    with Simulator(seed=5, speed=60, auto_fund=10_000) as sim:
        bot = BotProcess(sim.base_url, state, config)
        try:
            url = bot.metrics_url()
            assert url.startswith("http://127.0.0.1:")
            wait_health(url, 200, timeout=30.0)

            # /metrics: the shared budget and breakers, as the operator's CLI reads them.
            text = get(url + "/metrics")[1].decode()
            metrics = samples(text)
            fleet = json.loads(cli("status", "--state-dir", str(state), "--json").stdout)
            (budget,) = fleet["budgets"]
            (window,) = budget["windows"]
            key = (("budget", "budget.json"), ("period_seconds", "60"))
            assert metrics[("resilient_trading_budget_limit_weight", key)] == window["budget"]
            assert 0 < metrics[("resilient_trading_budget_used_weight", key)] <= window["budget"]
            breakers = {b["name"]: b for b in fleet["breakers"]}
            assert set(breakers) == {"exchange", "protect"}
            for name, view in breakers.items():
                label = (("breaker", name),)
                assert metrics[("resilient_trading_breaker_state", label)] == 0
                assert view["state"] == "closed"
                assert metrics[("resilient_trading_breaker_latched", label)] == 0
            assert metrics[("resilient_trading_bot_healthy", ())] == 1

            # The operator halts the fleet: 503 naming the halt, 200 again after resume.
            assert (
                cli("halt", "--state-dir", str(state), "--reason", "test incident").returncode == 0
            )
            body = wait_health(url, 503)
            assert body["failing"] == ["halt"], body
            assert "test incident" in body["reasons"][0]
            assert cli("resume", "--state-dir", str(state)).returncode == 0
            wait_health(url, 200)

            # A critical error latches the exchange breaker (here: another process's call).
            latch(state)
            body = wait_health(url, 503)
            assert body["failing"] == ["breaker"], body
            assert "breaker exchange latched" in body["reasons"][0]
            reset = cli("breaker", "reset", str(state / "breaker.json"), "--name", "exchange")
            assert reset.returncode == 0, reset.stderr
            wait_health(url, 200)

            # Hanging scrapers: silent, half a request, a request never read. The loop goes on.
            port = int(url.rsplit(":", 1)[1])
            hung = [socket.create_connection(("127.0.0.1", port)) for _ in range(4)]
            hung[1].sendall(b"GET /metr")
            hung[2].sendall(b"GET /metrics HTTP/1.0\r\n")
            hung[3].sendall(b"GET /metrics HTTP/1.0\r\n\r\n")  # its answer is never read
            try:
                first = health(url)[1]["loop"]["loops"]
                started = time.monotonic()
                while True:
                    asked = time.monotonic()
                    status, body = health(url)
                    # Blocked by the hung clients, it would wait for their 5 s timeout.
                    assert time.monotonic() - asked < 2.5, "/healthz slowed by hung scrapers"
                    assert status == 200, body
                    if body["loop"]["loops"] >= first + 4:
                        break
                    assert time.monotonic() - started < 8.0, "the loop stalled"
                    time.sleep(0.1)
            finally:
                for conn in hung:
                    conn.close()
            bot.proc.send_signal(signal.SIGTERM)
            assert bot.proc.wait(timeout=30) == 0
        finally:
            if bot.proc.poll() is None:
                bot.proc.kill()
                bot.proc.wait(timeout=10)


NO_PROMETHEUS = """
import sys
sys.modules["prometheus_client"] = None  # as if the extra were not installed
sys.path.insert(0, sys.argv[1])
from examples.hyperliquid_bot.bot import main
sys.exit(main(sys.argv[2:]))
"""


def run_bot(*args: str, code: str | None = None) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "HYPERLIQUID_PRIVATE_KEY": "0x" + "11" * 32}
    command = ["-c", code, str(ROOT)] if code else ["-m", "examples.hyperliquid_bot"]
    return subprocess.run(
        [sys.executable, *command, "--config", str(CONFIG), *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_without_prometheus_client_the_port_fails_at_start_naming_the_extra(
    tmp_path: Path,
) -> None:
    state = tmp_path / "state"
    args = ("--base-url", "http://127.0.0.1:9", "--state-dir", str(state))
    done = run_bot(*args, "--metrics-port", "0", code=NO_PROMETHEUS)
    assert done.returncode == 2, done.stderr
    assert "pip install 'resilient-trading[metrics]'" in done.stderr
    assert not state.exists()  # nothing started: no state, no connection
    # Without a metrics port the bot does not need the extra.
    ran = run_bot(*args, "--duration", "0", code=NO_PROMETHEUS)
    assert ran.returncode == 0, ran.stderr


def test_a_taken_port_fails_at_start_with_a_clear_message(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        done = run_bot(
            "--base-url",
            "http://127.0.0.1:9",
            "--state-dir",
            str(tmp_path),
            "--metrics-port",
            str(port),
        )
    assert done.returncode == 2, done.stderr
    assert f"cannot serve metrics on 127.0.0.1:{port}" in done.stderr
    assert "--metrics-port" in done.stderr
