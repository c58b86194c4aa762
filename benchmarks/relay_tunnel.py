"""One public tunnel through ``phantom relay`` + ``phantom expose`` against a direct phantom tunnel,
and the first byte of a new public connection with warm data connections against phantom alone.

    benchmarks/.venv/bin/python -m benchmarks.relay_tunnel [--mib N] [--repeats N] [--requests N]

Starts, as processes on 127.0.0.1: an app (this module with ``app``: an upgrade answered with
101 and then ``--mib`` MiB as fast as the socket takes them; any other request answered ``200
ok``, keep-alive), ``phantom serve`` in front of it, and ``phantom relay`` with one
``phantom expose`` agent (``--warm 2``) for it; and, as the yardstick for one more process on
the path, a second ``phantom serve`` whose backend is a forwarder (this module with ``hop``: a
bare uvloop protocol that copies bytes between each accepted connection and a connection of its
own to the app, as the agent's splice does) in front of the same app. Then:

* throughput: an upgrade through each path, the client counting the bytes until the app closes:
  MB/s, median of ``--repeats``;
* first byte: ``--requests`` rounds of a new connection and ``GET /`` (then an upgrade) through
  each path, in a new random order each round, the time from ``connect()`` to the first
  response byte: median and 90th percentile. What the relay adds to phantom serve is set
  against the loopback round trip measured in the same rounds (a keep-alive ``GET /`` to the
  app over an established connection, one per round), and against what the forwarder, one
  more process woken on the way there and back, adds to phantom serve (the agent's share of
  a relayed request is exactly that); and the CPU time each proxy process spent per
  connection meanwhile (its main thread's, from ``/proc/PID/schedstat``): phantom serve, the
  relay, the agent.

Logs are off (``log_level = "warning"``, ``access_log = "off"``). Ends only the processes it
started, by PID.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import cast

from benchmarks.targets import ROOT, free_port

MiB = 1024 * 1024
CHUNK = 256 * 1024
TOKEN = "bench-token-0123456789abcdef"
DOMAIN = "relay.bench"
NAME = "bench"
START_TIMEOUT = 20.0
LABELS = ("app itself", "phantom serve", "serve + hop", "relay")


# -- the app -----------------------------------------------------------------------------------


async def _serve_app(port: int, size: int) -> None:
    block = os.urandom(CHUNK)

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                if b"\r\nupgrade:" not in head.lower():
                    writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
                    continue
                writer.write(b"HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\n"
                             b"Upgrade: bench\r\n\r\n")  # fmt: skip
                left = 0 if b"/latency" in head else size
                while left > 0:
                    writer.write(block[: min(CHUNK, left)])
                    left -= CHUNK
                    await writer.drain()
                break
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", port)
    async with server:
        await server.serve_forever()


async def _serve_hop(port: int, app: int) -> None:
    """The forwarder: for each accepted connection, a connection to the app, and the bytes
    copied both ways from the sockets' callbacks (what arrives before that connection is up
    waits for it)."""
    loop = asyncio.get_running_loop()

    class Leg(asyncio.Protocol):
        def __init__(self, peer: asyncio.Transport | None = None) -> None:
            self.peer = peer
            self.early: list[bytes] = []

        def data_received(self, data: bytes) -> None:
            if self.peer is None:
                self.early.append(data)
            else:
                self.peer.write(data)

        def connection_lost(self, exc: Exception | None) -> None:
            if self.peer is not None:
                self.peer.close()

    dialling: set[asyncio.Task[None]] = set()  # (the loop keeps only weak references)

    class Accepted(Leg):
        def connection_made(self, transport: asyncio.BaseTransport) -> None:
            task = loop.create_task(self._dial(cast(asyncio.Transport, transport)))
            dialling.add(task)
            task.add_done_callback(dialling.discard)

        async def _dial(self, accepted: asyncio.Transport) -> None:
            out, _ = await loop.create_connection(lambda: Leg(accepted), "127.0.0.1", app)
            self.peer = out
            for data in self.early:
                out.write(data)

    server = await loop.create_server(Accepted, "127.0.0.1", port)
    async with server:
        await server.serve_forever()


# -- the processes -----------------------------------------------------------------------------


def _wait_port(port: int, proc: subprocess.Popen[bytes], what: str) -> None:
    deadline = time.monotonic() + START_TIMEOUT
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"{what} did not start") from None
            time.sleep(0.02)


@contextmanager
def _started(
    argv: list[str], log: Path, env: dict[str, str] | None = None
) -> Iterator[subprocess.Popen[bytes]]:
    proc = subprocess.Popen(argv, cwd=ROOT, stdout=log.open("wb"), stderr=subprocess.STDOUT,
                            env={**os.environ, **(env or {})})  # fmt: skip
    try:
        yield proc
    finally:
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGTERM)
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                os.kill(proc.pid, signal.SIGKILL)
                proc.wait()


@dataclass(frozen=True)
class Paths:
    app: int  # the app's port
    serve: int  # phantom serve in front of the app
    hop: int  # phantom serve in front of the forwarder in front of the app
    relay: int  # phantom relay, whose agent is in front of the app
    pids: dict[str, int]  # of phantom serve, the relay and the agent


@contextmanager
def _paths(size: int) -> Iterator[Paths]:
    work = Path(tempfile.mkdtemp(prefix="relay-bench-"))
    app, serve, forwarder, hop, relay = (free_port() for _ in range(5))
    quiet = 'log_level = "warning"\naccess_log = "off"\nmax_connections = 0\n'
    for name, port, backend in (("serve", serve, app), ("hop", hop, forwarder)):
        (work / f"{name}.toml").write_text(
            f'{quiet}http_port = {port}\n[server.app]\nproxy_url = "http://127.0.0.1:{backend}"\n'
        )
    (work / "relay.toml").write_text(
        f'{quiet}http_port = {relay}\n[relay]\nrelay_domain = "{DOMAIN}"\nmax_connections = 0\n'
        f'[relay.tokens]\n"{TOKEN}" = ["{NAME}"]\n'
    )
    python = [sys.executable, "-m"]
    this = [*python, "benchmarks.relay_tunnel"]
    phantom = [*python, "phantom"]

    def run(command: str, name: str) -> list[str]:
        return [*phantom, command, "--config", str(work / f"{name}.toml")]

    with (
        _started([*this, "app", str(app), str(size)], work / "app.log") as a,
        _started([*this, "hop", str(forwarder), str(app)], work / "forwarder.log") as f,
        _started(run("serve", "serve"), work / "serve.log") as s,
        _started(run("serve", "hop"), work / "hop.log") as h,
        _started(run("relay", "relay"), work / "relay.log") as r,
    ):
        for port, proc, what in (
            (app, a, "app"), (forwarder, f, "forwarder"), (serve, s, "phantom serve"),
            (hop, h, "phantom serve + forwarder"), (relay, r, "relay"),
        ):  # fmt: skip
            _wait_port(port, proc, what)
        agent = [*phantom, "expose", str(app), "--relay", f"http://127.0.0.1:{relay}",
                 "--name", NAME, "--log-level", "warning"]  # fmt: skip
        with _started(agent, work / "agent.log", {"PHANTOM_RELAY_TOKEN": TOKEN}) as e:
            deadline = time.monotonic() + START_TIMEOUT
            while not (work / "agent.log").read_text().startswith("http://"):
                if e.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError("phantom expose did not register")
                time.sleep(0.02)
            time.sleep(0.5)  # the warm pool fills
            yield Paths(app, serve, hop, relay, {"phantom serve": s.pid, "relay": r.pid,
                                                  "agent": e.pid})  # fmt: skip


# -- the measurements --------------------------------------------------------------------------


def _connect(port: int) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port))
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


def throughput(port: int, host: str, size: int) -> float:
    """MB/s of ``size`` bytes from the app through one tunnel."""
    with _connect(port) as sock:
        start = time.perf_counter()
        sock.sendall(f"GET / HTTP/1.1\r\nHost: {host}\r\nConnection: Upgrade\r\n"
                     "Upgrade: bench\r\n\r\n".encode())  # fmt: skip
        received = 0
        while data := sock.recv(CHUNK):
            received += len(data)
        elapsed = time.perf_counter() - start
    assert received > size, f"{received} bytes from {host}"
    return size / elapsed / 1e6


def first_byte(port: int, host: str, upgrade: bool) -> float:
    """Seconds from connect() to the first byte of the answer to a request on a new connection:
    ``GET /`` (phantom serve reaches the app on a pooled connection) or an upgrade (phantom
    opens a new connection to the app, as the agent always does)."""
    request = f"GET / HTTP/1.1\r\nHost: {host}\r\n\r\n"
    if upgrade:
        request = (f"GET /latency HTTP/1.1\r\nHost: {host}\r\nConnection: Upgrade\r\n"
                   "Upgrade: bench\r\n\r\n")  # fmt: skip
    start = time.perf_counter()
    with _connect(port) as sock:
        sock.sendall(request.encode())
        sock.recv(1)
        return time.perf_counter() - start


def cpu_seconds(pid: int) -> float:
    """CPU time of a process's main thread so far (where phantom's event loop runs)."""
    return int(Path(f"/proc/{pid}/schedstat").read_text().split()[0]) / 1e9


def round_trip(sock: socket.socket) -> float:
    """One round trip to another process over an established loopback connection: a
    keep-alive ``GET /`` to the app and its 40-byte answer."""
    start = time.perf_counter()
    sock.sendall(b"GET / HTTP/1.1\r\nHost: app\r\n\r\n")
    answer = b""
    while not answer.endswith(b"ok"):
        answer += sock.recv(4096)
    return time.perf_counter() - start


def main() -> None:
    if sys.argv[1:2] == ["app"]:
        asyncio.run(_serve_app(int(sys.argv[2]), int(sys.argv[3])))
        return
    if sys.argv[1:2] == ["hop"]:
        import uvloop

        uvloop.run(_serve_hop(int(sys.argv[2]), int(sys.argv[3])))
        return
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mib", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--requests", type=int, default=300)
    args = parser.parse_args()
    size = args.mib * MiB
    relay_host = f"{NAME}.{DOMAIN}"
    with _paths(size) as paths:
        direct, relayed = [], []
        for _ in range(args.repeats):
            direct.append(throughput(paths.serve, "app", size))
            relayed.append(throughput(paths.relay, relay_host, size))
        d, r = statistics.median(direct), statistics.median(relayed)
        print(f"throughput, one tunnel, {args.mib} MiB, median of {args.repeats}:")
        print(f"  phantom serve  {d:8.0f} MB/s")
        print(f"  relay + agent  {r:8.0f} MB/s   ratio {r / d:.2f}")
        targets = list(zip(LABELS, (paths.app, paths.serve, paths.hop, paths.relay),
                           ("app", "app", "app", relay_host), strict=True))  # fmt: skip
        for upgrade in (False, True):
            kind = "an upgrade (101)" if upgrade else "GET /"
            times: dict[str, list[float]] = {label: [] for label in LABELS}
            trips: list[float] = []
            cpu = {name: cpu_seconds(pid) for name, pid in paths.pids.items()}
            with _connect(paths.app) as established:
                for _ in range(args.requests):
                    random.shuffle(targets)
                    trips.append(round_trip(established))
                    for label, port, host in targets:
                        times[label].append(first_byte(port, host, upgrade))
            spent = {name: cpu_seconds(pid) - cpu[name] for name, pid in paths.pids.items()}
            print(f"first byte of {kind} on a new connection, {args.requests} each, median / p90:")
            median = {label: statistics.median(samples) for label, samples in times.items()}
            for label, samples in times.items():
                p90 = statistics.quantiles(samples, n=10)[-1]
                print(f"  {label:13}  {median[label] * 1e6:6.0f} us / {p90 * 1e6:6.0f} us")
            extra = median["relay"] - median["phantom serve"]
            hop = median["serve + hop"] - median["phantom serve"]
            rtt = statistics.median(trips)
            print(f"  relay - phantom serve: {extra * 1e6:.0f} us = {extra / rtt:.2f} x a "
                  f"loopback round trip ({rtt * 1e6:.0f} us), {extra / hop:.2f} x what the "
                  f"forwarder adds ({hop * 1e6:.0f} us)")  # fmt: skip
            print("  CPU per connection: " + ", ".join(
                f"{name} {seconds / args.requests * 1e6:.0f} us" for name, seconds in spent.items()
            ))  # fmt: skip


if __name__ == "__main__":
    main()
