"""LockedJsonStore against SQLite doing the same increment, measured in the same run.

Prints: durable commit (ours vs SQLite WAL + synchronous=FULL), non-durable commit, the
contended case (4 processes), a read of an unchanged file, a read of an unchanged
20-position document (a bot's state: 20 positions, each with an order), and FileState's
transition (the rate limiter's hot path). ``python benchmarks/bench_store.py reads`` runs
only the last two.
"""

from __future__ import annotations

import multiprocessing
import os
import sqlite3
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from resilient_trading import LockedJsonStore

N = 300


def per_op(fn: Callable[[], object], n: int) -> float:
    fn()
    start = time.perf_counter()
    for _ in range(n):
        fn()
    return (time.perf_counter() - start) / n


def store_incr(path: str, durable: bool) -> Callable[[], None]:
    store = LockedJsonStore(path, durable=durable)

    def run() -> None:
        with store.transaction() as doc:
            doc["n"] = doc.get("n", 0) + 1

    return run


def sqlite_incr(path: str, synchronous: str) -> Callable[[], None]:
    conn = sqlite3.connect(path, isolation_level=None, timeout=30)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute(f"PRAGMA synchronous={synchronous}")
    conn.execute("CREATE TABLE IF NOT EXISTS kv (k TEXT PRIMARY KEY, v INTEGER)")
    conn.execute("INSERT OR IGNORE INTO kv VALUES ('n', 0)")

    def run() -> None:
        conn.execute("BEGIN IMMEDIATE")
        (value,) = conn.execute("SELECT v FROM kv WHERE k='n'").fetchone()
        conn.execute("UPDATE kv SET v=? WHERE k='n'", (value + 1,))
        conn.execute("COMMIT")

    return run


def _worker(kind: str, path: str, n: int) -> None:
    fn = store_incr(path, True) if kind == "store" else sqlite_incr(path, "FULL")
    for _ in range(n):
        fn()


def contended(kind: str, path: str, procs: int = 4, n: int = 100) -> float:
    ctx = multiprocessing.get_context("fork")
    workers = [ctx.Process(target=_worker, args=(kind, path, n)) for _ in range(procs)]
    start = time.perf_counter()
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    return (time.perf_counter() - start) / (procs * n)


def positions_doc() -> dict[str, object]:
    """A bot's state: 20 positions, each with one resting order (about 2.6 KB of JSON)."""
    return {
        "positions": {
            f"C{i}": {
                "coin": f"C{i}",
                "size": 1.5 + i,
                "entry_px": 100.25 * i,
                "side": "long",
                "opened_at": 1700000000.5 + i,
                "orders": [{"oid": 1000 + i, "cloid": "0x" + "ab" * 16, "px": 99.5, "sz": 0.1}],
            }
            for i in range(20)
        },
        "n": 5,
        "paused": False,
    }


def reads(tmp: str) -> None:
    from resilient_trading.backends import FileState

    path = os.path.join(tmp, "positions.json")
    with LockedJsonStore(path).transaction() as doc:
        doc.update(positions_doc())
    store = LockedJsonStore(path)
    read = per_op(lambda: store.read() and None, 20000)
    print(f"{'read, unchanged 20-position document':40} {read * 1e6:10.1f}us")
    if hasattr(store, "snapshot"):
        view = per_op(lambda: store.snapshot() and None, 20000)
        print(f"{'snapshot (read-only), same document':40} {view * 1e6:10.1f}us")
    state = FileState(os.path.join(tmp, "limiter.state"))
    window = {"hits": [1700000000.0 + i for i in range(40)], "paused_until": 0.0}

    def admit() -> None:
        state.transact(lambda old, now: (dict(window, n=(old or {}).get("n", 0) + 1), None))

    transact = per_op(admit, 5000)
    print(f"{'FileState.transact (limiter hot path)':40} {transact * 1e6:10.1f}us")


def main() -> None:
    tmp = tempfile.mkdtemp(prefix="rt-bench-store-")
    if sys.argv[1:] == ["reads"]:
        reads(tmp)
        return
    rows = []
    ours = per_op(store_incr(os.path.join(tmp, "a.json"), True), N)
    sqlite = per_op(sqlite_incr(os.path.join(tmp, "a.db"), "FULL"), N)
    rows.append(("durable commit", ours, sqlite))
    ours_nd = per_op(store_incr(os.path.join(tmp, "b.json"), False), N)
    sqlite_nd = per_op(sqlite_incr(os.path.join(tmp, "b.db"), "OFF"), N)
    rows.append(("non-durable commit (sqlite sync=OFF)", ours_nd, sqlite_nd))
    ours_c = contended("store", os.path.join(tmp, "c.json"))
    sqlite_c = contended("sqlite", os.path.join(tmp, "c.db"))
    rows.append(("contended, 4 processes, durable", ours_c, sqlite_c))

    store = LockedJsonStore(os.path.join(tmp, "a.json"))
    conn = sqlite3.connect(os.path.join(tmp, "a.db"))
    read_ours = per_op(lambda: store.read() and None, 20000)
    read_sqlite = per_op(
        lambda: conn.execute("SELECT v FROM kv WHERE k='n'").fetchone() and None, 20000
    )
    rows.append(("read of an unchanged file", read_ours, read_sqlite))

    print(f"{'operation':40} {'ours':>12} {'SQLite':>12} {'ours/SQLite':>12}")
    for name, a, b in rows:
        print(f"{name:40} {a * 1e6:10.1f}us {b * 1e6:10.1f}us {a / b:11.2f}x")
    reads(tmp)


if __name__ == "__main__":
    main()
