"""Counted when the exchange counts it: a real HTTP server audits arrivals in a sliding window.

The server on 127.0.0.1 answers 429 to any request that would put more than the budget into
its window of arrivals. Three processes share one budget through a file with no safety
margin, sending a mix of fast requests and slow ones (a pause between admission and sending,
like signing an action): with ``in_flight`` covering that pause, the server never sees more
than the budget, so there is not a single 429.
"""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from collections import deque
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

pytestmark = pytest.mark.timeout(60)

BUDGET, PERIOD, SLOW = 30, 0.5, 0.15
IN_FLIGHT = SLOW + 0.05

_CLIENT = """
import json, random, sys, time, urllib.error, urllib.request
from resilient_trading import RateLimit, RateLimiter
url, path, in_flight = sys.argv[1], sys.argv[2], float(sys.argv[3])
start, end = float(sys.argv[4]), float(sys.argv[5])
limiter = RateLimiter(RateLimit(30, 0.5), state_path=path, in_flight=in_flight)
rng = random.Random()
time.sleep(max(0.0, start - time.time()))
sent = refused = 0
while time.time() < end:
    weight = rng.choice([1, 1, 2, 5])
    limiter.acquire(weight)
    if rng.random() < 0.5:
        time.sleep(rng.uniform(0.0, 0.15))  # a slow request: signing, building, connecting
    request = urllib.request.Request(url, data=b"{}", headers={"X-Weight": str(weight)})
    try:
        urllib.request.urlopen(request, timeout=5).read()
        sent += weight
    except urllib.error.HTTPError as exc:
        assert exc.code == 429, exc.code
        refused += 1
print(json.dumps({"sent": sent, "refused": refused}))
"""


class Auditor:
    """Arrivals in a sliding window; over budget is a 429 (and is not counted)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.window: deque[tuple[float, int]] = deque()
        self.used = 0
        self.refused = 0

    def arrive(self, weight: int) -> bool:
        with self.lock:
            now = time.monotonic()
            while self.window and self.window[0][0] <= now - PERIOD:
                self.used -= self.window.popleft()[1]
            if self.used + weight > BUDGET:
                self.refused += 1
                return False
            self.window.append((now, weight))
            self.used += weight
            return True


@pytest.fixture
def auditor() -> Iterator[tuple[str, Auditor]]:
    audit = Auditor()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            self.rfile.read(int(self.headers.get("Content-Length", "0")))
            ok = audit.arrive(int(self.headers["X-Weight"]))
            self.send_response(200 if ok else 429)
            self.send_header("Content-Length", "2")
            self.end_headers()
            self.wfile.write(b"{}")

        def log_message(self, *args: object) -> None:
            return None

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/info", audit
    finally:
        server.shutdown()
        server.server_close()


def test_no_429_from_an_auditing_server_with_mixed_slow_requests(
    auditor: tuple[str, Auditor], tmp_path: Path
) -> None:
    url, audit = auditor
    start = time.time() + 1.5
    end = start + 3.0
    procs = [
        subprocess.Popen(
            [
                sys.executable,
                "-c",
                _CLIENT,
                url,
                str(tmp_path / "budget.json"),
                str(IN_FLIGHT),
                str(start),
                str(end),
            ],
            stdout=subprocess.PIPE,
        )
        for _ in range(3)
    ]
    results = []
    for proc in procs:
        out, _ = proc.communicate(timeout=60)
        assert proc.returncode == 0
        results.append(json.loads(out))
    assert audit.refused == 0
    assert sum(r["refused"] for r in results) == 0
    # saturated: the budget (counted over period + in_flight) was nearly all used
    sent = sum(r["sent"] for r in results)
    assert sent >= 0.8 * BUDGET * 3.0 / (PERIOD + IN_FLIGHT)
