"""Tunnels up to the file-descriptor limit: how many phantom holds, and what it says at the end.

    benchmarks/.venv/bin/python -m benchmarks.fd_limit [--limit N] [--loop asyncio]

Starts the benchmark origin and ``phantom serve`` (uvloop unless ``--loop asyncio``) with
RLIMIT_NOFILE = ``--limit`` (default 20,000, or the hard limit if lower), then opens upgrade
tunnels to the origin's ``/echo`` through phantom, one after another, until phantom refuses
``--stop-after`` in a row (each tunnel holds two of its descriptors: the client's and the
backend leg), ``--max-tunnels`` are open or ``--timeout`` seconds have passed. With them held it
checks that a sample of the tunnels still echo random bytes unchanged, that phantom logged the
descriptor warning, and that it is alive; then it closes them all and checks that phantom serves
a fresh request and a fresh tunnel. Prints tunnels held, errors by kind and phantom's RSS and
descriptors. Loopback only; ends only the processes it started, by PID. Exit status 1 when a
check fails.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import random
import resource
import socket
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

from benchmarks.run import LOAD_CORE, PROXY_CORE, Endpoint, get, verify_echo
from benchmarks.targets import Target, rss_kib, start_origin

DEFAULT_LIMIT = 20_000
# A refused tunnel costs a connect and a closed socket (uvloop sheds what it cannot accept);
# with --loop asyncio an unaccepted client waits in the backlog, so a short timeout bounds it.
OPEN_TIMEOUT = 3.0
SAMPLE = 200
LOG_LINES = ("running low on file descriptors", "cannot accept connections")
RECOVER_SECONDS = 30.0


@contextlib.contextmanager
def soft_fd_limit(limit: int) -> Iterator[None]:
    """Children started inside inherit ``limit``; this process gets its own back after."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (limit, hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def open_fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def echoes(sock: socket.socket, rng: random.Random) -> bool:
    payload = rng.randbytes(rng.randrange(1, 4096))
    sock.sendall(payload)
    got = b""
    while len(got) < len(payload):
        more = sock.recv(65536)
        if not more:
            return False
        got += more
    return got == payload


def open_tunnels(
    ep: Endpoint, max_tunnels: int, stop_after: int, deadline: float
) -> tuple[list[socket.socket], Counter[str], str]:
    """Tunnels to /echo until ``stop_after`` refusals in a row, the count or the deadline;
    the tunnels, the errors by kind and what stopped it."""
    held: list[socket.socket] = []
    errors: Counter[str] = Counter()
    in_a_row = 0
    while len(held) < max_tunnels and in_a_row < stop_after and time.monotonic() < deadline:
        try:
            sock, _rest = ep.tunnel("/echo", timeout=OPEN_TIMEOUT)
        except (OSError, RuntimeError) as exc:
            in_a_row += 1
            kind = type(exc).__name__
            if isinstance(exc, RuntimeError):
                kind = "502" if " 502 " in str(exc) else "closed before 101"
            errors[kind] += 1
            continue
        in_a_row = 0
        held.append(sock)
        if len(held) % 1000 == 0:
            print(f"  {len(held)} tunnels open", flush=True)
    if in_a_row >= stop_after:
        return held, errors, f"{stop_after} refusals in a row"
    if len(held) >= max_tunnels:
        return held, errors, f"--max-tunnels {max_tunnels}"
    return held, errors, "--timeout"


def main() -> int:
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--limit", type=int, default=min(DEFAULT_LIMIT, hard),
                        help="phantom's RLIMIT_NOFILE (default: 20000 or the hard limit)")
    parser.add_argument("--loop", choices=("uvloop", "asyncio"), default="uvloop")
    parser.add_argument("--max-tunnels", type=int, default=0,
                        help="stop opening after this many (default: limit / 2)")
    parser.add_argument("--stop-after", type=int, default=20,
                        help="stop after this many refused tunnels in a row")
    parser.add_argument("--timeout", type=float, default=300.0,
                        help="seconds allowed for opening the tunnels")
    args = parser.parse_args()
    if args.limit > hard:
        sys.exit(f"fd_limit: --limit {args.limit} is above the hard limit {hard}")
    max_tunnels = args.max_tunnels or args.limit // 2
    # This process holds the client side of every tunnel and the origin the backend side.
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    cores = os.sched_getaffinity(0)
    proxy_core, load_core = (PROXY_CORE, LOAD_CORE) if len(cores) > 1 else (min(cores),) * 2
    os.sched_setaffinity(0, {load_core})
    failures: list[str] = []
    with tempfile.TemporaryDirectory(prefix="phantom-fd-limit-") as tmp:
        workdir = Path(tmp)
        origin = start_origin(workdir / "origin", load_core)
        proxy = None
        try:
            with soft_fd_limit(args.limit):
                proxy = Target("phantom", loop=args.loop).start(
                    origin.port, workdir / "phantom", proxy_core
                )
            ep = Endpoint(proxy.port, origin.port, forward_proxy=False)
            time.sleep(0.2)
            rss_before, fds_before = rss_kib(proxy.pid), open_fds(proxy.pid)
            print(f"phantom pid {proxy.pid} ({args.loop}), RLIMIT_NOFILE {args.limit}: "
                  f"{fds_before} descriptors and {rss_before} KiB RSS before", flush=True)
            started = time.monotonic()
            held, errors, stopped_by = open_tunnels(
                ep, max_tunnels, args.stop_after, started + args.timeout
            )
            opened_in = time.monotonic() - started
            try:
                time.sleep(0.5)
                rss_held, fds_held = rss_kib(proxy.pid), open_fds(proxy.pid)
                rng = random.Random(9)
                sample = rng.sample(range(len(held)), min(SAMPLE, len(held)))
                bad = sum(not echoes(held[i], rng) for i in sample)
                if bad:
                    failures.append(f"{bad} of {len(sample)} sampled tunnels did not echo")
                if not proxy.alive():
                    failures.append("phantom died with the tunnels open")
            finally:
                for sock in held:
                    sock.close()
            log = proxy.log.read_text(errors="replace")
            warnings = [line for line in log.splitlines() if any(k in line for k in LOG_LINES)]
            if not warnings:
                failures.append("no descriptor warning in phantom's log")
            if "Traceback" in log:
                failures.append("a traceback in phantom's log")
            recovered = recover(ep, proxy.port)
            if recovered is None:
                failures.append(f"phantom did not serve again within {RECOVER_SECONDS:.0f}s")
            if not proxy.alive():
                failures.append("phantom died after the tunnels closed")
            rss_after = rss_kib(proxy.pid) if proxy.alive() else 0
        finally:
            if proxy is not None:
                proxy.stop()
            origin.stop()
    print(f"tunnels held: {len(held)} (opened in {opened_in:.1f}s), "
          f"stopped by: {stopped_by}")
    print(f"errors opening: {dict(errors) or 0}")
    print(f"sampled echoes: {len(sample) - bad} of {len(sample)} correct")
    print(f"phantom descriptors: {fds_before} before, {fds_held} held (limit {args.limit})")
    print(f"phantom RSS KiB: {rss_before} before, {rss_held} held "
          f"({(rss_held - rss_before) / max(len(held), 1):.1f} per tunnel), {rss_after} after")
    for kind in LOG_LINES:
        lines = [line for line in warnings if kind in line]
        if lines:
            print(f"log ({len(lines)}x): {kind}{lines[0].split(kind, 1)[1]}")
    if recovered is not None:
        print(f"fresh request and tunnel after closing: ok in {recovered:.2f}s")
    for failure in failures:
        print(f"FAILED: {failure}")
    return 1 if failures else 0


def recover(ep: Endpoint, port: int) -> float | None:
    """Seconds until a fresh GET and a fresh tunnel work again, None when they never do."""
    started = time.monotonic()
    while time.monotonic() - started < RECOVER_SECONDS:
        try:
            head, _body = get(port, "/nc/small")
            if head.startswith(b"HTTP/1.1 200"):
                verify_echo(ep)
                return time.monotonic() - started
        except (OSError, RuntimeError):
            pass
        time.sleep(0.1)
    return None


if __name__ == "__main__":
    sys.exit(main())
