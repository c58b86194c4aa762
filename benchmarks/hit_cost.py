"""CPU per request (a cache hit by default; ``--path /nc/small`` for pass-through): phantom from
this tree, optionally phantom from another source tree, and nginx, interleaved; the suite's
layout (proxy on core 0, wrk and the origin on core 1).

    git archive main phantom | tar -x -C /tmp/phantom-main   # a baseline, if wanted
    benchmarks/.venv/bin/python -m benchmarks.hit_cost [--baseline /tmp/phantom-main]
        [--seconds 3] [--rounds 3] [--path /small] [--shared-cache]

``--shared-cache`` adds phantom with ``cache_storage_mode = "redis"`` (a redis-server on the
load core): its hits come from the first level, so they should cost what memory hits cost;
and phantom with ``cache_l1_ttl = 0`` (``-l2``; the baseline's too, when there is one), where
every hit is a second-level hit: a Redis GET and the value decoded.

Prints requests/s (``wrk -t1 -c50`` on the path) and the proxy process's own CPU time (user +
system, from ``/proc``) divided by the requests wrk counted. On a machine shared with other work
the rate swings with whatever else runs on the proxy's core; the CPU per hit moves much
less, so it is the figure to compare changes by.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
from pathlib import Path

from benchmarks.run import LOAD_CORE, PROXY_CORE, Endpoint, wrk
from benchmarks.targets import ROOT, Target, shared_cache_tail, start_origin, start_redis

_TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / _TICKS


def measure(
    kind: str,
    source: Path | None,
    origin_port: int,
    workdir: Path,
    seconds: int,
    path: str,
    tail: str = "",
) -> tuple[float, float]:
    """(requests/s, CPU microseconds per request) of one target; phantom runs from
    ``source``, with ``tail`` added to its config."""
    if source is not None:
        os.environ["PYTHONPATH"] = str(source)
    target = Target(kind, config_tail=tail).start(origin_port, workdir, PROXY_CORE)
    try:
        ep = Endpoint(target.port, origin_port, forward_proxy=False)
        wrk(ep, path, 1, workdir, str(LOAD_CORE))  # fill the cache and the pool, warm up
        before = cpu_seconds(target.pid)
        rate = wrk(ep, path, seconds, workdir, str(LOAD_CORE))
        used = cpu_seconds(target.pid) - before
    finally:
        target.stop()
    return rate, used / (rate * seconds) * 1e6


def print_round(n: int, results: dict[str, list[tuple[float, float]]], shape: str) -> None:
    """One line for round ``n``: each target's latest (rate, cost) in ``shape``."""
    line = ", ".join(
        f"{name} " + shape.format(rate=runs[-1][0], cost=runs[-1][1])
        for name, runs in results.items()
    )
    print(f"round {n + 1}: {line}", flush=True)


def medians(
    results: dict[str, list[tuple[float, float]]],
) -> tuple[dict[str, float], dict[str, float]]:
    """Each target's median rate and median cost over the rounds."""
    rate = {name: statistics.median(r for r, _ in runs) for name, runs in results.items()}
    cost = {name: statistics.median(c for _, c in runs) for name, runs in results.items()}
    return rate, cost


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--baseline", type=Path, help="a source tree holding phantom/")
    parser.add_argument("--seconds", type=int, default=3)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--path", default="/small", help="/small (hits) or /nc/small (passed)")
    parser.add_argument("--shared-cache", action="store_true", help="add phantom in redis mode")
    args = parser.parse_args()
    targets: dict[str, tuple[str, Path | None, str]] = {}
    if args.baseline is not None:
        targets["baseline"] = ("phantom", args.baseline.resolve(), "")
    targets["phantom"] = ("phantom", ROOT, "")
    targets["nginx"] = ("nginx", None, "")
    results: dict[str, list[tuple[float, float]]] = {name: [] for name in targets}
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        origin = start_origin(workdir / "origin", LOAD_CORE)
        redis = start_redis(workdir / "redis", LOAD_CORE) if args.shared_cache else None
        if redis is not None:
            targets["phantom-redis"] = ("phantom", ROOT, shared_cache_tail(redis.port))
            second_level = shared_cache_tail(redis.port, l1_ttl=0)
            if args.baseline is not None:
                targets["baseline-redis-l2"] = ("phantom", args.baseline.resolve(), second_level)
            targets["phantom-redis-l2"] = ("phantom", ROOT, second_level)
            results.update((name, []) for name in targets if name not in results)
        try:
            for n in range(args.rounds):
                for name, (kind, source, tail) in targets.items():
                    results[name].append(
                        measure(
                            kind, source, origin.port, workdir / f"{name}{n}", args.seconds,
                            args.path, tail,
                        )
                    )
                print_round(n, results, "{rate:,.0f}/s {cost:.1f} us")
        finally:
            origin.stop()
            if redis is not None:
                redis.stop()
    rate, cost = medians(results)
    for name in targets:
        print(
            f"{name:9s} {rate[name]:9,.0f} req/s ({rate[name] / rate['nginx']:.2f}x nginx)"
            f"  {cost[name]:5.1f} us CPU per request ({cost['nginx'] / cost[name]:.2f}x nginx's"
            " requests per CPU-second)"
        )


if __name__ == "__main__":
    main()
