"""Start a real ``redis-server`` on 127.0.0.1 for the tests (never a fake)."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager

__all__ = ["RedisServer", "free_port", "redis_server", "start_redis_server"]


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


class RedisServer:
    """A running redis-server process and its URL."""

    def __init__(self, proc: subprocess.Popen[bytes], port: int) -> None:
        self.proc = proc
        self.port = port
        self.url = f"redis://127.0.0.1:{port}/0"

    def flush(self) -> None:
        import redis

        redis.Redis.from_url(self.url).flushall()


def find_redis_server() -> str:
    path = shutil.which("redis-server") or (
        "/usr/bin/redis-server" if os.path.exists("/usr/bin/redis-server") else None
    )
    if path is None:
        raise RuntimeError(
            "redis-server is not installed; `make test` installs it (apt-get install redis-server)"
        )
    return path


def start_redis_server(port: int, workdir: str, *options: str) -> subprocess.Popen[bytes]:
    """Start a redis-server on 127.0.0.1:``port`` (no persistence, ``options`` appended) and
    wait until it answers PING. Raises ``RuntimeError`` (the process stopped) if it does not."""
    proc = subprocess.Popen(
        [
            find_redis_server(),
            "--port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            workdir,
            *options,
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and proc.poll() is None:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2) as conn:
                conn.sendall(b"PING\r\n")
                if conn.recv(16).startswith(b"+PONG"):
                    return proc
        except OSError:
            time.sleep(0.02)
    proc.kill()
    proc.wait()
    raise RuntimeError(f"redis-server did not start on port {port}")


@contextmanager
def redis_server() -> Iterator[RedisServer]:
    """Run a throw-away redis-server (no persistence) for the duration of the block."""
    workdir = tempfile.mkdtemp(prefix="rt-redis-")
    for _ in range(5):
        port = free_port()
        try:
            proc = start_redis_server(port, workdir, "--protected-mode", "yes")
        except RuntimeError:
            continue  # most likely the port was taken meanwhile: try another
        break
    else:  # pragma: no cover
        raise RuntimeError("could not start redis-server")
    try:
        yield RedisServer(proc, port)
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:  # pragma: no cover
            proc.kill()
            proc.wait()
        shutil.rmtree(workdir, ignore_errors=True)
