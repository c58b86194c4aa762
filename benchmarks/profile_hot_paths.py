"""Profile phantom's hot paths: py-spy samples the phantom process while wrk loads one path.

    benchmarks/.venv/bin/python -m benchmarks.profile_hot_paths [--seconds 8] [--path /small]

Same layout as the suite (phantom on core 0, wrk and the origin on core 1). Prints the wrk
rate and py-spy's top functions by own time and by total time; the raw py-spy output is kept
in ``benchmarks/results/profile-<path>.txt``.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
from pathlib import Path

from benchmarks.run import LOAD_CORE, PROXY_CORE, RESULTS, Endpoint, wrk
from benchmarks.targets import Target, start_origin

PY_SPY = Path(sys.executable).parent / "py-spy"


def profile(path: str, seconds: int, workdir: Path) -> str:
    origin = start_origin(workdir / "origin", LOAD_CORE)
    proxy = Target("phantom").start(origin.port, workdir / "phantom", PROXY_CORE)
    try:
        ep = Endpoint(proxy.port, origin.port, forward_proxy=False)
        wrk(ep, path, 1, workdir, str(LOAD_CORE))  # warm the cache and the pool
        spy = subprocess.Popen(
            [
                str(PY_SPY), "record", "-r", "250", "-f", "raw", "-o",
                str(workdir / "raw.txt"), "-d", str(seconds + 1), "-p", str(proxy.pid),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        rate = wrk(ep, path, seconds, workdir, str(LOAD_CORE))
        spy.wait(timeout=seconds + 30)
    finally:
        proxy.stop()
        origin.stop()
    raw = (workdir / "raw.txt").read_text()
    name = path.strip("/").replace("/", "-") or "root"
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / f"profile-{name}.txt").write_text(raw)
    return f"{path}: {rate:,.0f} req/s under py-spy\n" + summarise(raw)


def summarise(raw: str, top: int = 25) -> str:
    """Own and total share per function from py-spy's collapsed stacks."""
    own: dict[str, int] = {}
    total: dict[str, int] = {}
    samples = 0
    for line in raw.splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack:
            continue
        count = int(count_text)
        samples += count
        frames = [_short(frame) for frame in stack.split(";")]
        own[frames[-1]] = own.get(frames[-1], 0) + count
        for frame in set(frames):
            total[frame] = total.get(frame, 0) + count
    lines = [f"{samples} samples", "own time:"]
    for frame, count in sorted(own.items(), key=lambda item: -item[1])[:top]:
        lines.append(f"  {100 * count / samples:5.1f}%  {frame}")
    lines.append("total time:")
    for frame, count in sorted(total.items(), key=lambda item: -item[1])[:top]:
        lines.append(f"  {100 * count / samples:5.1f}%  {frame}")
    return "\n".join(lines)


def _short(frame: str) -> str:
    """``func (/long/path/module.py:12)`` -> ``func (module.py)``."""
    function, _, where = frame.partition(" (")
    return f"{function} ({where.split(':')[0].rsplit('/', 1)[-1]})"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=int, default=8)
    parser.add_argument("--path", action="append", help="default: /small and /nc/small")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="phantom-profile-") as tmp:
        for path in args.path or ["/small", "/nc/small"]:
            print(profile(path, args.seconds, Path(tmp) / path.strip("/").replace("/", "-")))


if __name__ == "__main__":
    main()
