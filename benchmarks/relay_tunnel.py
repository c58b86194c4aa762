"""One public tunnel through ``phantom relay`` + ``phantom expose`` against a direct phantom tunnel,
and the first byte of a new public connection with warm data connections against phantom alone.

    benchmarks/.venv/bin/python -m benchmarks.relay_tunnel [--mib N] [--repeats N] [--requests N]

Starts, as processes on 127.0.0.1: an app (this module with ``app``: an upgrade answered with
101 and then ``--mib`` MiB as fast as the socket takes them; any other request answered ``200
ok``, keep-alive), ``phantom serve`` in front of it, and ``phantom relay`` with one
``phantom expose`` agent (``--warm 2``) for it. Then, interleaved:

* throughput: an upgrade through each path, the client counting the bytes until the app closes:
  MB/s, median of ``--repeats``;
* first byte: ``--requests`` times, a new connection and ``GET /`` (then an upgrade) through
  each path, the time from ``connect()`` to the first response byte: median and 90th
  percentile, against the median round trip of a loopback TCP ping-pong measured in the same
  run; and the CPU time each proxy process spent per connection meanwhile (its main thread's,
  from ``/proc/PID/schedstat``, in nanoseconds): phantom serve, the relay, the agent.

Logs are off (``log_level = "warning"``, ``access_log = "off"``). Ends only the processes it
started, by PID.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from benchmarks.targets import ROOT, free_port

MiB = 1024 * 1024
CHUNK = 256 * 1024
TOKEN = "bench-token-0123456789abcdef"
DOMAIN = "relay.bench"
NAME = "bench"
START_TIMEOUT = 20.0


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


@contextmanager
def _paths(size: int) -> Iterator[tuple[int, int, int, dict[str, int]]]:
    """(the app's port, phantom serve's port, the relay's port, the PIDs of phantom serve, the
    relay and the agent by name)."""
    work = Path(tempfile.mkdtemp(prefix="relay-bench-"))
    app, serve, relay = free_port(), free_port(), free_port()
    quiet = 'log_level = "warning"\naccess_log = "off"\nmax_connections = 0\n'
    (work / "serve.toml").write_text(
        f'{quiet}http_port = {serve}\n[server.app]\nproxy_url = "http://127.0.0.1:{app}"\n'
    )
    (work / "relay.toml").write_text(
        f'{quiet}http_port = {relay}\n[relay]\nrelay_domain = "{DOMAIN}"\nmax_connections = 0\n'
        f'[relay.tokens]\n"{TOKEN}" = ["{NAME}"]\n'
    )
    python = [sys.executable, "-m"]
    app_argv = [*python, "benchmarks.relay_tunnel", "app", str(app), str(size)]
    serve_argv = [*python, "phantom", "serve", "--config", str(work / "serve.toml")]
    relay_argv = [*python, "phantom", "relay", "--config", str(work / "relay.toml")]
    with (
        _started(app_argv, work / "app.log") as a,
        _started(serve_argv, work / "serve.log") as s,
        _started(relay_argv, work / "relay.log") as r,
    ):
        for port, proc, what in ((app, a, "app"), (serve, s, "phantom serve"), (relay, r, "relay")):
            _wait_port(port, proc, what)
        agent = [*python, "phantom", "expose", str(app), "--relay", f"http://127.0.0.1:{relay}",
                 "--name", NAME, "--log-level", "warning"]  # fmt: skip
        with _started(agent, work / "agent.log", {"PHANTOM_RELAY_TOKEN": TOKEN}) as e:
            deadline = time.monotonic() + START_TIMEOUT
            while not (work / "agent.log").read_text().startswith("http://"):
                if e.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError("phantom expose did not register")
                time.sleep(0.02)
            time.sleep(0.5)  # the warm pool fills
            yield app, serve, relay, {"phantom serve": s.pid, "relay": r.pid, "agent": e.pid}


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


def loopback_rtt(port: int, samples: int = 300) -> float:
    """Median round trip to another process over an established loopback connection: a
    keep-alive ``GET /`` to the app and its 40-byte answer."""
    times = []
    with _connect(port) as sock:
        for _ in range(samples):
            start = time.perf_counter()
            sock.sendall(b"GET / HTTP/1.1\r\nHost: app\r\n\r\n")
            answer = b""
            while not answer.endswith(b"ok"):
                answer += sock.recv(4096)
            times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    if sys.argv[1:2] == ["app"]:
        asyncio.run(_serve_app(int(sys.argv[2]), int(sys.argv[3])))
        return
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mib", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--requests", type=int, default=300)
    args = parser.parse_args()
    size = args.mib * MiB
    relay_host = f"{NAME}.{DOMAIN}"
    with _paths(size) as (app, serve, relay, pids):
        direct, relayed = [], []
        for _ in range(args.repeats):
            direct.append(throughput(serve, "app", size))
            relayed.append(throughput(relay, relay_host, size))
        d, r = statistics.median(direct), statistics.median(relayed)
        print(f"throughput, one tunnel, {args.mib} MiB, median of {args.repeats}:")
        print(f"  phantom serve  {d:8.0f} MB/s")
        print(f"  relay + agent  {r:8.0f} MB/s   ratio {r / d:.2f}")
        rtt = loopback_rtt(app)
        for upgrade in (False, True):
            kind = "an upgrade (101)" if upgrade else "GET /"
            times: dict[str, list[float]] = {"app itself": [], "phantom serve": [], "relay": []}
            cpu = {name: cpu_seconds(pid) for name, pid in pids.items()}
            for _ in range(args.requests):
                times["app itself"].append(first_byte(app, "app", upgrade))
                times["phantom serve"].append(first_byte(serve, "app", upgrade))
                times["relay"].append(first_byte(relay, relay_host, upgrade))
            print(f"first byte of {kind} on a new connection, {args.requests} each, median / p90:")
            for label, samples in times.items():
                p90 = statistics.quantiles(samples, n=10)[-1]
                median = statistics.median(samples)
                print(f"  {label:13}  {median * 1e6:6.0f} us / {p90 * 1e6:6.0f} us")
            spent = {name: cpu_seconds(pid) - cpu[name] for name, pid in pids.items()}
            extra = statistics.median(times["relay"]) - statistics.median(times["phantom serve"])
            print(f"  relay - phantom serve: {extra * 1e6:.0f} us")
            print("  CPU per connection: " + ", ".join(
                f"{name} {seconds / args.requests * 1e6:.0f} us" for name, seconds in spent.items()
            ))  # fmt: skip
        print(f"loopback round trip to another process: {rtt * 1e6:.0f} us")


if __name__ == "__main__":
    main()
