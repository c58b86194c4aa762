"""Backpressure over real sockets, on a real ``phantom serve`` process: a client that asks and
never reads its answers costs phantom no more than the transport's write buffer, however
many requests it pipelines, and other clients are served meanwhile (issue 11, item 6)."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from origin import LOCALHOST, payload, unused_port
from test_serve_process import linux_only, serve, wait_for

BIG = payload(1024 * 1024, seed=6)
MIB = 1024 * 1024
PIPELINED = 800
# How far above its idle figure phantom's RSS may go while a client pipelines GETs of BIG and
# never reads them.
RSS_ALLOWANCE = 32 * MIB


class _Origin(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_GET(self) -> None:
        body = BIG if self.path == "/big" else b"small"
        self.send_response(200)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Cache-Control", "max-age=600")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        pass


@contextmanager
def origin() -> Iterator[int]:
    server = ThreadingHTTPServer((LOCALHOST, 0), _Origin)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server.server_address[1]
    finally:
        server.shutdown()
        server.server_close()


def rss(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


def request(path: str, extra: str = "") -> bytes:
    return f"GET {path} HTTP/1.1\r\nHost: t\r\n{extra}\r\n".encode()


# The attack's requests: simple ones, answered by the fast lane from data_received, and ones
# outside its subset (a Content-Length field), answered by the request loop through h11.
ATTACKS = {"fast-lane": "", "loop": "Content-Length: 0\r\n"}


class Answers:
    """Reads Content-Length framed answers off a socket, one after the other."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.buffer = b""

    def _more(self) -> None:
        data = self.sock.recv(MIB)
        if not data:
            raise AssertionError("connection closed before the answer was complete")
        self.buffer += data

    def next(self) -> tuple[int, bytes]:
        while b"\r\n\r\n" not in self.buffer:
            self._more()
        head, _, self.buffer = self.buffer.partition(b"\r\n\r\n")
        fields = (line.partition(b":") for line in head.split(b"\r\n")[1:])
        length = next(int(v) for n, _, v in fields if n.lower() == b"content-length")
        while len(self.buffer) < length:
            self._more()
        body, self.buffer = self.buffer[:length], self.buffer[length:]
        return int(head.split(b" ", 2)[1]), body


def fetch(port: int, path: str) -> tuple[int, bytes]:
    """One GET on a new connection: the status and the body."""
    with socket.create_connection((LOCALHOST, port), timeout=10) as sock:
        sock.sendall(request(path))
        return Answers(sock).next()


@linux_only
@pytest.mark.timeout(60)
@pytest.mark.parametrize(
    "loop, attack", [("asyncio", "fast-lane"), ("uvloop", "fast-lane"), ("uvloop", "loop")]
)
def test_a_client_that_never_reads_costs_no_more_than_the_write_buffer(
    tmp_path: Path, loop: str, attack: str
) -> None:
    if loop == "uvloop":
        pytest.importorskip("uvloop")
    port = unused_port()
    with origin() as origin_port:
        config = tmp_path / "phantom.toml"
        config.write_text(
            f'http_port = {port}\naccess_log = "off"\nlog_level = "warning"\n'
            f'[server.app]\nproxy_url = "http://{LOCALHOST}:{origin_port}"\n'
        )
        with serve(config, "--loop", loop) as proc:
            wait_for(lambda: _answers(port), "phantom to answer")
            for _ in range(3):  # warm: the object is stored, then served as hits
                assert fetch(port, "/big") == (200, BIG)
            time.sleep(0.3)
            idle = rss(proc.pid)
            with socket.create_connection((LOCALHOST, port)) as attacker:
                attacker.sendall(request("/big", ATTACKS[attack]) * PIPELINED)  # and never reads
                peak = idle
                deadline = time.monotonic() + 3.0
                while time.monotonic() < deadline:
                    peak = max(peak, rss(proc.pid))
                    time.sleep(0.02)
                # Another client is served meanwhile.
                assert fetch(port, "/big") == (200, BIG)
                assert fetch(port, "/small") == (200, b"small")
                peak = max(peak, rss(proc.pid))
                # And the attacker, once it reads, gets every answer: reading resumed.
                attacker.settimeout(10)
                answers = Answers(attacker)
                for _ in range(PIPELINED):
                    assert answers.next() == (200, BIG)
            print(f"{loop}, {attack}: RSS idle {idle / MIB:.1f} MiB, peak {peak / MIB:.1f} MiB")
            assert peak - idle < RSS_ALLOWANCE, (
                f"RSS grew from {idle / MIB:.1f} to {peak / MIB:.1f} MiB"
            )


def _answers(port: int) -> bool:
    try:
        return fetch(port, "/small")[0] == 200
    except OSError:
        return False
