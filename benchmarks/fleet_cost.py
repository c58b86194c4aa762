"""What the shared cache costs a hit: phantom with ``workers = 2`` in memory mode, in redis mode
served from the first level (``cache_l1_ttl`` 1 s, the default), and in redis mode with
``cache_l1_ttl = 0`` (every hit a second-level hit: one Redis round trip), interleaved.

    benchmarks/.venv/bin/python -m benchmarks.fleet_cost [--seconds 3] [--rounds 3]
        [--connections 50]

The proxy's workers run on core 0; wrk (``-t1 --latency``), the origin and redis-server on
core 1. Prints hits/s and the p50 latency of each, and the p50 a mode adds to memory mode's:
with ``--connections 1`` the latency of one hit at a time, with 50 the throughput (and a p50
that is mostly queueing).
"""

from __future__ import annotations

import argparse
import re
import subprocess
import tempfile
from pathlib import Path

from benchmarks.hit_cost import medians, print_round
from benchmarks.run import LOAD_CORE, PROXY_CORE, Endpoint
from benchmarks.targets import Target, shared_cache_tail, start_origin, start_redis

_UNITS = {"us": 1e-6, "ms": 1e-3, "s": 1.0}


def wrk_latency(
    port: int, path: str, seconds: int, workdir: Path, connections: int
) -> tuple[float, float]:
    """(requests/s, p50 latency in microseconds) of ``wrk --latency`` on ``path``."""
    script = workdir / "wrk.lua"
    script.write_text(f'wrk.path = "{path}"\nwrk.headers["Host"] = "bench"\n')
    out = subprocess.run(
        ["taskset", "-c", str(LOAD_CORE), "wrk", "-t1", f"-c{connections}", f"-d{seconds}s",
         "--latency",
         "-s", str(script), f"http://127.0.0.1:{port}"],
        capture_output=True, text=True, timeout=seconds + 30, check=True,
    ).stdout
    if "Non-2xx" in out or "Socket errors" in out:
        raise RuntimeError(f"wrk saw errors:\n{out}")
    rate = re.search(r"Requests/sec:\s*([\d.]+)", out)
    p50 = re.search(r"50%\s+([\d.]+)(us|ms|s)", out)
    if rate is None or p50 is None:
        raise RuntimeError(f"unexpected wrk output:\n{out}")
    return float(rate.group(1)), float(p50.group(1)) * _UNITS[p50.group(2)] * 1e6


def measure(
    target: Target, origin_port: int, workdir: Path, seconds: int, connections: int
) -> tuple[float, float]:
    proxy = target.start(origin_port, workdir, PROXY_CORE)
    try:
        ep = Endpoint(proxy.port, origin_port, forward_proxy=False)
        wrk_latency(ep.port, "/small", 1, workdir, 50)  # fill the caches and pools, warm up
        return wrk_latency(ep.port, "/small", seconds, workdir, connections)
    finally:
        proxy.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=int, default=3)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--connections", type=int, default=50)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        origin = start_origin(workdir / "origin", LOAD_CORE)
        redis = start_redis(workdir / "redis", LOAD_CORE)
        targets = {
            "memory": Target("phantom", workers=2),
            "redis-l1": Target("phantom", workers=2, config_tail=shared_cache_tail(redis.port)),
            "redis-l2": Target(
                "phantom", workers=2, config_tail=shared_cache_tail(redis.port, l1_ttl=0)
            ),
        }
        results: dict[str, list[tuple[float, float]]] = {name: [] for name in targets}
        try:
            for n in range(args.rounds):
                for name, target in targets.items():
                    run = measure(
                        target, origin.port, workdir / f"{name}{n}", args.seconds,
                        args.connections,
                    )
                    results[name].append(run)
                print_round(n, results, "{rate:,.0f}/s p50 {cost:.0f} us")
        finally:
            redis.stop()
            origin.stop()
    rate, p50 = medians(results)
    for name in targets:
        print(
            f"{name:9s} {rate[name]:9,.0f} hits/s ({rate[name] / rate['memory']:.2f}x memory)"
            f"  p50 {p50[name]:6.0f} us ({p50[name] - p50['memory']:+.0f} us vs memory)"
        )


if __name__ == "__main__":
    main()
