"""A real ``redis-server`` for the tests: on a free loopback port, persistence off, KEYS
disabled (phantom must never need it), stopped by the test that started it.

Tests that use it skip with a reason when the program is missing; CI installs it (.ci/run).
"""

from __future__ import annotations

import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from origin import LOCALHOST, unused_port

REDIS_SERVER = shutil.which("redis-server")
needs_redis = pytest.mark.skipif(
    REDIS_SERVER is None, reason="redis-server is not installed (apt-get install redis-server)"
)
START_SECONDS = 10.0


class RedisServer:
    def __init__(self, directory: Path, port: int | None = None) -> None:
        self.directory = directory
        self.port = port or unused_port()
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://{LOCALHOST}:{self.port}/0"

    def start(self) -> RedisServer:
        assert REDIS_SERVER is not None
        log = (self.directory / f"redis-{self.port}.log").open("ab")
        self.process = subprocess.Popen(
            [
                REDIS_SERVER, "--port", str(self.port), "--bind", LOCALHOST,
                "--save", "", "--appendonly", "no", "--dir", str(self.directory),
                "--rename-command", "KEYS", "",
            ],
            stdout=log, stderr=subprocess.STDOUT,
        )
        log.close()
        deadline = time.monotonic() + START_SECONDS
        while not self.answers():
            if self.process.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise AssertionError("redis-server did not start")
            time.sleep(0.02)
        return self

    def answers(self) -> bool:
        try:
            with socket.create_connection((LOCALHOST, self.port), timeout=1) as sock:
                sock.sendall(b"PING\r\n")
                return sock.recv(16).startswith(b"+PONG")
        except OSError:
            return False

    def command(self, *words: str) -> bytes:
        """One command over a raw connection; the raw reply."""
        with socket.create_connection((LOCALHOST, self.port), timeout=2) as sock:
            request = b"*%d\r\n" % len(words) + b"".join(
                b"$%d\r\n%s\r\n" % (len(w.encode()), w.encode()) for w in words
            )
            sock.sendall(request)
            return sock.recv(65536)

    def pause(self) -> None:
        """A Redis that hangs: accepts nothing, answers nothing (SIGSTOP)."""
        assert self.process is not None
        self.process.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGCONT)

    def stop(self) -> None:
        """Kill it (as a crash would: no shutdown, nothing saved)."""
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGCONT)
            self.process.kill()
            self.process.wait(START_SECONDS)
        self.process = None


@contextmanager
def redis_server(directory: Path) -> Iterator[RedisServer]:
    server = RedisServer(directory).start()
    try:
        yield server
    finally:
        server.stop()
