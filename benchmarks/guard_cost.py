"""CPU per cache hit with the edge guards on, against the same phantom with them off,
interleaved; the suite's layout (proxy on core 0, wrk and the origin on core 1).

    benchmarks/.venv/bin/python -m benchmarks.guard_cost [--seconds 3] [--rounds 5]

Three configurations of one phantom, each serving ``/public/small`` (``public, max-age=3600``)
from a ``[server.guarded]`` mounted on ``/public``, every request carrying the same bearer
token (so the requests are byte for byte the same):

- ``plain``: no guard;
- ``auth``: ``auth_required = true`` (HS256 ``[jwt] secret``): the token is verified once and
  remembered, so each further request costs its look-up;
- ``rate``: ``rate_limit`` with a quota no request reaches (every request is counted, none
  refused);
- ``shared``: the same ``rate_limit`` with ``shared = true`` and a ``[redis]`` table, on a
  redis-server of its own on the load's core: each request one round trip to it (the server
  leaves the fast lane);
- ``unshared``: the same again with ``[redis]`` on a port nothing listens on: the stage still
  waits (off the fast lane) but every request is counted in the process, which separates the
  request loop's cost from the round trip's.

Prints each round and then, per configuration, the median CPU microseconds per request, and
what the guard adds to ``plain``: the median of the rounds' differences (each round runs the
three back to back, so a difference within a round is the least disturbed by whatever else
the machine runs) and the ratio of the medians.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import jwt

from benchmarks.hit_cost import cpu_seconds
from benchmarks.run import LOAD_CORE, PROXY_CORE
from benchmarks.targets import free_port, phantom_config, spawn, start_origin, start_redis

SECRET = "benchmark-secret-that-is-long-enough-for-hs256"
PATH = "/public/small"
GUARDS = {
    "plain": "",
    "auth": "auth_required = true",
    "rate": "rate_limit = { requests = 1_000_000_000, per = 1 }",
    "shared": "rate_limit = { requests = 1_000_000_000, per = 1, shared = true }",
    "unshared": "rate_limit = { requests = 1_000_000_000, per = 1, shared = true }",
}


def config(port: int, origin_port: int, guard: str, redis_port: int) -> str:
    tail = f'[redis]\nurl = "redis://127.0.0.1:{redis_port}/0"\n' if "shared" in guard else ""
    return (
        phantom_config(port, origin_port, 1)
        .replace("[server.bench]", f'[jwt]\nsecret = "{SECRET}"\n\n[server.bench]')
        + f'\n[server.guarded]\nproxy_url = "http://127.0.0.1:{origin_port}"\n'
        'bind_to = "/public"\nstrip_prefix = false\ncompress_strategy = "none"\n'
        + guard
        + "\n"
        + tail
    )


def wrk(port: int, token: str, seconds: int, workdir: Path) -> float:
    script = workdir / "wrk.lua"
    script.write_text(
        f'wrk.path = "{PATH}"\nwrk.headers["Host"] = "bench"\n'
        f'wrk.headers["Authorization"] = "Bearer {token}"\n'
    )
    out = subprocess.run(
        ["taskset", "-c", str(LOAD_CORE), "wrk", "-t1", "-c50", f"-d{seconds}s", "-s",
         str(script), f"http://127.0.0.1:{port}"],
        capture_output=True, text=True, timeout=seconds + 30, check=True,
    ).stdout
    if "Non-2xx" in out or "Socket errors" in out:
        raise RuntimeError(f"wrk saw errors:\n{out}")
    return float(out.split("Requests/sec:")[1].split()[0])


def measure(
    name: str, origin_port: int, redis_port: int, token: str, workdir: Path, seconds: int
) -> float:
    """CPU microseconds per request of phantom with guard ``name``."""
    workdir.mkdir(parents=True)
    port = free_port()
    path = workdir / "phantom.toml"
    if name == "unshared":
        redis_port = free_port()  # nothing listens there: Redis is down throughout
    path.write_text(config(port, origin_port, GUARDS[name], redis_port))
    argv = [sys.executable, "-m", "phantom", "serve", "--config", str(path)]
    proxy = spawn(name, argv, port, workdir, PROXY_CORE, "/nc/small")
    try:
        wrk(port, token, 1, workdir)  # fill the cache, the pool and the token memory
        before = cpu_seconds(proxy.pid)
        rate = wrk(port, token, seconds, workdir)
        used = cpu_seconds(proxy.pid) - before
    finally:
        proxy.stop()
    return used / (rate * seconds) * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=int, default=3)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument(
        "--only", nargs="+", choices=list(GUARDS)[1:], default=list(GUARDS)[1:],
        help="the guards to measure (plain always runs)",
    )
    args = parser.parse_args()
    guards = ["plain", *args.only]
    token = jwt.encode(
        {"sub": "bench", "exp": int(time.time()) + 86400}, SECRET, algorithm="HS256"
    )
    costs: dict[str, list[float]] = {name: [] for name in guards}
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        origin = start_origin(workdir / "origin", LOAD_CORE)
        redis = start_redis(workdir / "redis", LOAD_CORE)
        try:
            for n in range(args.rounds):
                # Rotate the order so no configuration always runs first.
                names = guards[n % len(guards) :] + guards[: n % len(guards)]
                for name in names:
                    cost = measure(
                        name, origin.port, redis.port, token, workdir / f"{name}{n}", args.seconds
                    )
                    costs[name].append(cost)
                line = ", ".join(f"{name} {runs[-1]:.1f} us" for name, runs in costs.items())
                print(f"round {n + 1}: {line}", flush=True)
        finally:
            redis.stop()
            origin.stop()
    plain = statistics.median(costs["plain"])
    for name, runs in costs.items():
        median = statistics.median(runs)
        added = statistics.median(c - p for c, p in zip(runs, costs["plain"], strict=True))
        print(
            f"{name:6s} {median:6.1f} us CPU per request (median of {len(runs)}),"
            f" {added:+5.1f} us against plain in the same round (median),"
            f" {median / plain:.2f}x plain's median"
        )


if __name__ == "__main__":
    main()
