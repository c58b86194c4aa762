"""The benchmark suite: phantom against direct-to-origin, nginx, HAProxy and proxy.py.

    benchmarks/bench.sh [--quick] [--repeats N] [--targets a,b,...]

Layout (2 cores): each proxy pinned to core 0, the load generator (wrk, or this process for the
socket figures) and the origin on core 1; the echo round trip with everything on core 0, where
the proxy's own cost per message shows. Every target is started fresh for each repeat and the
targets take turns within a repeat (interleaved), so a noisy neighbour spreads over all of them.
Before timing: a cache hit must not reach the origin and tunnels must echo bytes unchanged.

Results: a table of medians (spread = (max - min) / median) and ratios to direct and to nginx on
stdout, and ``benchmarks/results/latest.json`` / ``latest.png``.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import resource
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from benchmarks.targets import ROOT, Process, Target, pin, rss_kib, start_origin

PROXY_CORE = 0
LOAD_CORE = 1
RESULTS = ROOT / "benchmarks" / "results"
IO_TIMEOUT = 60.0
CHUNK = 1024 * 1024
MiB = 1024 * 1024


@dataclass(frozen=True)
class Figure:
    key: str
    title: str
    unit: str
    higher_is_better: bool


FIGURES = [
    Figure("hit_rps", "cache-hit req/s", "req/s", True),
    Figure("pass_rps", "pass-through req/s", "req/s", True),
    Figure("up_mbps", "tunnel MB/s client->server", "MB/s", True),
    Figure("down_mbps", "tunnel MB/s server->client", "MB/s", True),
    Figure("rtt_us", "echo RTT p50, one core (us)", "us", False),
    Figure("idle_kib", "RSS per idle tunnel (KiB)", "KiB", False),
    Figure("startup_s", "startup to first request (s)", "s", False),
]
SCALING = [
    Figure("hit_rps", "cache-hit req/s (proxy on both cores)", "req/s", True),
    Figure("pass_rps", "pass-through req/s (proxy on both cores)", "req/s", True),
]


@dataclass(frozen=True)
class Settings:
    repeats: int
    wrk_seconds: int
    tunnel_bytes: int
    echo_count: int
    idle_tunnels: int


QUICK = Settings(repeats=3, wrk_seconds=1, tunnel_bytes=512 * MiB, echo_count=2000,
                 idle_tunnels=1000)
FULL = Settings(repeats=5, wrk_seconds=5, tunnel_bytes=2048 * MiB, echo_count=20000,
                idle_tunnels=5000)

ALL_TARGETS = {
    "direct": Target("direct", cached=False),
    "phantom": Target("phantom"),
    "phantom-asyncio": Target("phantom-asyncio", loop="asyncio"),
    "nginx": Target("nginx"),
    "haproxy": Target("haproxy"),
    "proxy.py": Target("proxy.py", cached=False, forward_proxy=True),
}
QUICK_TARGETS = ["direct", "phantom", "nginx", "haproxy", "proxy.py"]
# proxy.py moves a few hundred MB/s: a sixteenth of the bytes keeps the run bounded.
SLOW_TUNNEL_DIVISOR = {"proxy.py": 16}
# ... and it opens a tunnel in about 30 ms: a tenth of the idle tunnels.
SLOW_IDLE_DIVISOR = {"proxy.py": 10}


# -- talking to a target -----------------------------------------------------------------------


class Endpoint:
    """Where a figure is measured: a port, and for a forward proxy the origin behind it."""

    def __init__(self, port: int, origin_port: int, forward_proxy: bool) -> None:
        self.port = port
        self.origin_port = origin_port
        self.forward_proxy = forward_proxy

    def url_path(self, path: str) -> str:
        if self.forward_proxy:
            return f"http://127.0.0.1:{self.origin_port}{path}"
        return path

    def tunnel(self, path: str, timeout: float = IO_TIMEOUT) -> tuple[socket.socket, bytes]:
        """An upgraded connection to ``path`` and the bytes that came after the 101."""
        sock = socket.create_connection(("127.0.0.1", self.port), timeout=timeout)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        rest = b""
        if self.forward_proxy:
            where = f"127.0.0.1:{self.origin_port}"
            sock.sendall(f"CONNECT {where} HTTP/1.1\r\nHost: {where}\r\n\r\n".encode())
            head, rest = read_head(sock, rest)
            if b" 200 " not in head.split(b"\r\n")[0] + b" ":
                raise RuntimeError(f"CONNECT refused: {head[:80]!r}")
        sock.sendall(
            f"GET {path} HTTP/1.1\r\nHost: bench\r\nConnection: Upgrade\r\n"
            "Upgrade: bench\r\n\r\n".encode()
        )
        head, rest = read_head(sock, rest)
        if not head.startswith(b"HTTP/1.1 101"):
            raise RuntimeError(f"upgrade to {path} refused: {head[:80]!r}")
        return sock, rest


def read_head(sock: socket.socket, buffered: bytes) -> tuple[bytes, bytes]:
    data = buffered
    while b"\r\n\r\n" not in data:
        more = sock.recv(65536)
        if not more:
            raise RuntimeError(f"connection closed before a response head: {data[:80]!r}")
        data += more
    head, _, rest = data.partition(b"\r\n\r\n")
    return head, rest


def get(port: int, path: str) -> tuple[bytes, bytes]:
    """One GET on a fresh connection: (head, body)."""
    with socket.create_connection(("127.0.0.1", port), timeout=IO_TIMEOUT) as sock:
        sock.sendall(f"GET {path} HTTP/1.1\r\nHost: bench\r\nConnection: close\r\n\r\n".encode())
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    return head, body


def origin_count(origin_port: int, path: str) -> int:
    _head, body = get(origin_port, "/__stats")
    return int(json.loads(body).get(path, 0))


# -- the figures -------------------------------------------------------------------------------


def wrk(ep: Endpoint, path: str, seconds: int, workdir: Path, cores: str) -> float:
    script = workdir / "wrk.lua"
    script.write_text(f'wrk.path = "{ep.url_path(path)}"\nwrk.headers["Host"] = "bench"\n')
    out = subprocess.run(
        ["taskset", "-c", cores, "wrk", "-t1", "-c50", f"-d{seconds:.0f}s", "-s", str(script),
         f"http://127.0.0.1:{ep.port}"],
        capture_output=True, text=True, timeout=seconds + 30, check=True,
    ).stdout
    if "Non-2xx" in out or "Socket errors" in out:
        raise RuntimeError(f"wrk saw errors on {path}:\n{out}")
    match = re.search(r"Requests/sec:\s*([\d.]+)", out)
    if match is None:
        raise RuntimeError(f"no Requests/sec in wrk output:\n{out}")
    return float(match.group(1))


def verify_cache_hits(ep: Endpoint, target: Target) -> None:
    """Prime /small, then prove that further GETs of it never reach the origin."""
    if not target.cached:
        return
    # Each worker has its own cache; new connections spread over workers by their ports.
    for _ in range(10 * target.workers):
        head, body = get(ep.port, "/small")
        if not head.startswith(b"HTTP/1.1 200") or len(body) != 1024:
            raise RuntimeError(f"{target.name}: bad /small: {head[:80]!r}")
    before = origin_count(ep.origin_port, "/small")
    for _ in range(20):
        get(ep.port, "/small")
    if origin_count(ep.origin_port, "/small") != before:
        raise RuntimeError(f"{target.name}: cache hits reached the origin")


def assert_no_origin_hits(ep: Endpoint, target: Target, before: int) -> None:
    if target.cached and origin_count(ep.origin_port, "/small") != before:
        raise RuntimeError(f"{target.name}: the timed cache-hit run reached the origin")


def verify_echo(ep: Endpoint) -> None:
    sock, rest = ep.tunnel("/echo")
    with sock:
        rng = random.Random(5)
        for _ in range(16):
            piece = rng.randbytes(16384)
            sock.sendall(piece)
            got = rest
            while len(got) < len(piece):
                more = sock.recv(65536)
                if not more:
                    raise RuntimeError("echo tunnel closed early")
                got += more
            if got != piece:
                raise RuntimeError("echo tunnel changed the bytes")
            rest = b""


def tunnel_up(ep: Endpoint, size: int) -> float:
    size -= size % CHUNK
    sock, _rest = ep.tunnel(f"/sink?n={size}")
    with sock:
        chunk = memoryview(b"u" * CHUNK)
        started = time.perf_counter()
        for _ in range(size // CHUNK):
            sock.sendall(chunk)
        ack = b""
        while not ack.endswith(b"\n"):
            more = sock.recv(64)
            if not more:
                raise RuntimeError("sink tunnel closed before the ack")
            ack += more
        elapsed = time.perf_counter() - started
    if ack != b"ok %d\n" % size:
        raise RuntimeError(f"sink acknowledged {ack!r}, expected {size}")
    return size / 1e6 / elapsed


def tunnel_down(ep: Endpoint, size: int) -> float:
    sock, rest = ep.tunnel(f"/source?n={size}")
    with sock:
        buf = bytearray(CHUNK)
        got = len(rest)
        started = time.perf_counter()
        while got < size:
            count = sock.recv_into(buf)
            if not count:
                raise RuntimeError(f"source tunnel closed after {got} of {size} bytes")
            got += count
        elapsed = time.perf_counter() - started
    return size / 1e6 / elapsed


def echo_rtt(ep: Endpoint, count: int) -> float:
    sock, _rest = ep.tunnel("/echo")
    message = b"e" * 64
    samples: list[int] = []
    with sock:
        for i in range(count + 100):
            started = time.perf_counter_ns()
            sock.sendall(message)
            got = 0
            while got < 64:
                more = sock.recv(64 - got)
                if not more:
                    raise RuntimeError("echo tunnel closed")
                got += len(more)
            if i >= 100:  # the first hundred warm up
                samples.append(time.perf_counter_ns() - started)
    return statistics.median(samples) / 1000


def idle_tunnel_kib(ep: Endpoint, pid: int, count: int) -> float:
    """RSS growth of ``pid`` while ``count`` idle tunnels are open, per tunnel."""
    time.sleep(0.2)
    before = rss_kib(pid)
    socks = []
    try:
        for _ in range(count):
            socks.append(ep.tunnel("/echo")[0])
        time.sleep(0.5)
        after = rss_kib(pid)
        # Still alive and serving with all of them open.
        verify_echo(ep)
    finally:
        for sock in socks:
            sock.close()
    return (after - before) / count


# -- one run -----------------------------------------------------------------------------------

Results = dict[str, dict[str, list[float]]]


def measure(
    target: Target,
    proc: Process,
    origin: Process,
    settings: Settings,
    workdir: Path,
    record: Callable[[str, float], None],
) -> None:
    ep = Endpoint(proc.port, origin.port, target.forward_proxy)
    verify_cache_hits(ep, target)
    verify_echo(ep)
    load = str(LOAD_CORE)
    before = origin_count(origin.port, "/small")
    record("hit_rps", wrk(ep, "/small", settings.wrk_seconds, workdir, load))
    assert_no_origin_hits(ep, target, before)
    record("pass_rps", wrk(ep, "/nc/small", settings.wrk_seconds, workdir, load))
    size = settings.tunnel_bytes // SLOW_TUNNEL_DIVISOR.get(target.name, 1)
    record("up_mbps", tunnel_up(ep, size))
    record("down_mbps", tunnel_down(ep, size))
    # Everything on one core for the round trip.
    pin(proc.pid, {PROXY_CORE})
    pin(origin.pid, {PROXY_CORE})
    os.sched_setaffinity(0, {PROXY_CORE})
    try:
        record("rtt_us", echo_rtt(ep, settings.echo_count))
    finally:
        os.sched_setaffinity(0, {LOAD_CORE})
        pin(origin.pid, {LOAD_CORE})
        if proc is not origin:
            pin(proc.pid, {PROXY_CORE})
    idle = settings.idle_tunnels // SLOW_IDLE_DIVISOR.get(target.name, 1)
    record("idle_kib", idle_tunnel_kib(ep, proc.pid, idle))
    record("startup_s", proc.startup)


def run_suite(names: list[str], settings: Settings, workdir: Path) -> Results:
    results: Results = {name: {} for name in names}
    origin = start_origin(workdir / "origin", LOAD_CORE)
    try:
        for rep in range(settings.repeats):
            # Rotate the order so no target always runs first (or last) in a repeat.
            order = names[rep % len(names):] + names[: rep % len(names)]
            for name in order:
                target = ALL_TARGETS[name]
                started = time.perf_counter()
                if name == "direct":
                    proc = origin
                else:
                    proc = target.start(origin.port, workdir / f"{name}-{rep}", PROXY_CORE)

                def record(key: str, value: float, name: str = name) -> None:
                    results[name].setdefault(key, []).append(value)

                try:
                    measure(target, proc, origin, settings, workdir, record)
                finally:
                    if proc is not origin:
                        proc.stop()
                print(f"  repeat {rep + 1}/{settings.repeats} {name}: "
                      f"{time.perf_counter() - started:.1f}s", file=sys.stderr, flush=True)
    finally:
        origin.stop()
    return results


def run_scaling(settings: Settings, workdir: Path) -> Results:
    """phantom with 1 and 2 workers, every process free to use both cores."""
    results: Results = {"phantom-w1": {}, "phantom-w2": {}}
    both = f"{PROXY_CORE},{LOAD_CORE}"
    origin = start_origin(workdir / "origin-scaling", LOAD_CORE)
    pin(origin.pid, {PROXY_CORE, LOAD_CORE})
    try:
        for rep in range(settings.repeats):
            for workers in (1, 2):
                name = f"phantom-w{workers}"
                target = Target(name, workers=workers)
                proc = target.start(origin.port, workdir / f"{name}-{rep}", PROXY_CORE)
                try:
                    pin(proc.pid, {PROXY_CORE, LOAD_CORE})
                    ep = Endpoint(proc.port, origin.port, False)
                    verify_cache_hits(ep, target)
                    for key, path in (("hit_rps", "/small"), ("pass_rps", "/nc/small")):
                        value = wrk(ep, path, settings.wrk_seconds, workdir, both)
                        results[name].setdefault(key, []).append(value)
                finally:
                    proc.stop()
    finally:
        origin.stop()
    return results


# -- reporting ---------------------------------------------------------------------------------


def summary(samples: list[float]) -> tuple[float, float]:
    median = statistics.median(samples)
    spread = (max(samples) - min(samples)) / median if median else 0.0
    return median, spread


def fmt(value: float, unit: str) -> str:
    if unit == "req/s" and value >= 1000:
        return f"{value / 1000:.1f}k"
    if unit == "s":
        return f"{value:.3f}"
    if value >= 100:
        return f"{value:,.0f}"
    return f"{value:.1f}"


def table(results: Results, figures: list[Figure]) -> str:
    names = [n for n in results if results[n]]
    lines = [
        "| figure | " + " | ".join(names) + " |",
        "|---|" + "---|" * len(names),
    ]
    for fig in figures:
        cells = []
        for name in names:
            samples = results[name].get(fig.key)
            if not samples:
                cells.append("-")
                continue
            median, spread = summary(samples)
            cell = f"{fmt(median, fig.unit)} ±{spread * 100:.0f}%"
            ratios = []
            for ref in ("direct", "nginx"):
                ref_samples = results.get(ref, {}).get(fig.key)
                if ref_samples and ref != name and statistics.median(ref_samples):
                    ratios.append(f"{median / statistics.median(ref_samples):.2f}x {ref[0]}")
            if ratios:
                cell += " (" + ", ".join(ratios) + ")"
            cells.append(cell)
        lines.append(f"| {fig.title} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def plot(results: Results, scaling: Results, path: Path) -> bool:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    panels = [(fig, results) for fig in FIGURES] + [(fig, scaling) for fig in SCALING]
    panels = [(fig, res) for fig, res in panels if any(fig.key in v for v in res.values())]
    cols = 3
    rows = (len(panels) + cols - 1) // cols
    figure, axes = plt.subplots(rows, cols, figsize=(5 * cols, 3.4 * rows), squeeze=False)
    for ax, (fig, res) in zip(axes.flat, panels, strict=False):
        names = [n for n in res if res[n].get(fig.key)]
        medians = [statistics.median(res[n][fig.key]) for n in names]
        low = [m - min(res[n][fig.key]) for m, n in zip(medians, names, strict=False)]
        high = [max(res[n][fig.key]) - m for m, n in zip(medians, names, strict=False)]
        colors = ["tab:red" if n.startswith("phantom") else "tab:gray" for n in names]
        ax.bar(names, medians, yerr=[low, high], color=colors, capsize=3)
        better = "higher" if fig.higher_is_better else "lower"
        ax.set_title(f"{fig.title} ({better} is better)", fontsize=9)
        ax.tick_params(axis="x", labelsize=8, rotation=20)
    for ax in list(axes.flat)[len(panels):]:
        ax.axis("off")
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    return True


def main() -> None:
    parser = argparse.ArgumentParser(description="phantom vs nginx, HAProxy, proxy.py")
    parser.add_argument("--quick", action="store_true", help="fewer, shorter repeats (< 2 min)")
    parser.add_argument("--repeats", type=int, help="override the number of repeats")
    parser.add_argument("--targets", help=f"comma-separated subset of {', '.join(ALL_TARGETS)}")
    parser.add_argument("--no-scaling", action="store_true", help="skip the 1 vs 2 workers run")
    args = parser.parse_args()
    settings = QUICK if args.quick else FULL
    if args.repeats:
        settings = Settings(args.repeats, settings.wrk_seconds, settings.tunnel_bytes,
                            settings.echo_count, settings.idle_tunnels)
    if shutil.which("wrk") is None or shutil.which("taskset") is None:
        sys.exit("benchmarks: wrk and taskset are needed (apt-get install -y wrk util-linux)")
    if len(os.sched_getaffinity(0)) < 2:
        sys.exit("benchmarks: needs two cores (proxy on one, load and origin on the other)")
    names = args.targets.split(",") if args.targets else (
        QUICK_TARGETS if args.quick else list(ALL_TARGETS))
    runnable = []
    for name in names:
        why = ALL_TARGETS[name].available()
        if why:
            print(f"skipping {name}: {why}", file=sys.stderr)
        else:
            runnable.append(name)
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    os.sched_setaffinity(0, {LOAD_CORE})
    started = time.perf_counter()
    mode = "quick" if args.quick else "full"
    scaling: Results = {}
    with tempfile.TemporaryDirectory(prefix="phantom-bench-") as tmp:
        results = run_suite(runnable, settings, Path(tmp))
        save(mode, settings, time.perf_counter() - started, results, scaling)
        if not args.no_scaling:
            scaling = run_scaling(settings, Path(tmp))
    elapsed = time.perf_counter() - started
    print(f"\n{mode} run, {settings.repeats} repeats, {elapsed:.0f}s; median ±spread "
          "(x d = ratio to direct, x n = ratio to nginx)\n")
    print(table(results, FIGURES))
    if scaling:
        print("\nworkers scaling (proxy, wrk and origin share both cores)\n")
        print(table(scaling, SCALING))
    save(mode, settings, elapsed, results, scaling)
    if plot(results, scaling, RESULTS / "latest.png"):
        print(f"\nwrote {RESULTS / 'latest.json'} and latest.png")


def save(mode: str, settings: Settings, elapsed: float, results: Results,
         scaling: Results) -> None:
    RESULTS.mkdir(exist_ok=True)
    document = {
        "mode": mode,
        "settings": settings.__dict__,
        "seconds": elapsed,
        "figures": {f.key: f.title for f in FIGURES},
        "results": results,
        "scaling": scaling,
        "medians": {n: {k: statistics.median(v) for k, v in r.items()}
                    for n, r in {**results, **scaling}.items()},
    }
    (RESULTS / "latest.json").write_text(json.dumps(document, indent=2))


if __name__ == "__main__":
    main()
