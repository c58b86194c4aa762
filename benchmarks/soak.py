"""Soak: a real `phantom serve` process under mixed load for a while; errors must stay 0, and its
open descriptors and RSS must not drift.

    python benchmarks/soak.py --duration 60 --concurrency 20

Load (tests/integration/load.py): cache hits, misses, POSTs, upgrade tunnels opening and closing,
half of the clients vanishing (RST) at a random point. Prints fd count and RSS of the phantom
process every --interval seconds, then a summary; exit status 1 when any request failed or the
fd count after the run is above the idle baseline. Linux only (reads /proc).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests" / "integration"))

from load import run_mixed  # noqa: E402
from origin import LOCALHOST, UpgradeBackend  # noqa: E402


def fds_and_rss(pid: int) -> tuple[int, float]:
    """Open descriptors and resident memory (MiB) of process `pid`."""
    fds = len(os.listdir(f"/proc/{pid}/fd"))
    status = Path(f"/proc/{pid}/status").read_text()
    match = re.search(r"VmRSS:\s+(\d+) kB", status)
    return fds, int(match[1]) / 1024 if match else 0.0


async def soak(duration: float, concurrency: int, interval: float, abort_ratio: float) -> int:
    async with UpgradeBackend() as backend:
        with tempfile.TemporaryDirectory() as tmp:
            config = Path(tmp) / "phantom.toml"
            config.write_text(
                f'listen = "{LOCALHOST}"\nhttp_port = 0\n'
                f'[server.app]\nproxy_url = "http://{LOCALHOST}:{backend.port}"\n'
                # The backend gives no freshness: store its answers, as tests/integration/load.py
                # expects.
                'cache_heuristic = "always"\n'
            )
            env = dict(os.environ, PYTHONPATH=str(ROOT))
            process = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "phantom", "serve", "--config", str(config),
                env=env, stderr=asyncio.subprocess.PIPE,
            )  # fmt: skip
            try:
                return await _drive(process, duration, concurrency, interval, abort_ratio)
            finally:
                if process.returncode is None:
                    process.terminate()  # our own child, by its pid
                    await process.wait()


async def _drive(
    process: asyncio.subprocess.Process,
    duration: float,
    concurrency: int,
    interval: float,
    abort_ratio: float,
) -> int:
    assert process.stderr is not None
    while True:
        line = (await process.stderr.readline()).decode()
        if not line:
            raise SystemExit("phantom exited before listening")
        match = re.search(r"listening on http://[^ ]*:(\d+)", line)
        if match:
            port = int(match[1])
            break
    # Keep reading its log so a full pipe never blocks phantom; show warnings and errors.
    drain = asyncio.ensure_future(_echo_log(process.stderr))
    try:
        return await _measure(process, port, duration, concurrency, interval, abort_ratio)
    finally:
        drain.cancel()


async def _echo_log(stream: asyncio.StreamReader) -> None:
    while line := await stream.readline():
        text = line.decode()
        if " WARNING " in text or " ERROR " in text:
            sys.stderr.write("phantom: " + text)


async def _measure(
    process: asyncio.subprocess.Process,
    port: int,
    duration: float,
    concurrency: int,
    interval: float,
    abort_ratio: float,
) -> int:
    await run_mixed(port, 50, abort_ratio=0.0)  # warm up
    await asyncio.sleep(0.5)
    base_fds, base_rss = fds_and_rss(process.pid)
    print(f"{'t (s)':>6} {'connections':>11} {'errors':>6} {'fds':>5} {'RSS MiB':>8}")
    print(f"{0:>6.0f} {0:>11} {0:>6} {base_fds:>5} {base_rss:>8.1f}")
    totals: Counter[str] = Counter()
    started = last = time.monotonic()
    batch = 0
    while time.monotonic() - started < duration:
        batch += 1
        outcomes = await run_mixed(
            port, concurrency * 10, concurrency=concurrency, abort_ratio=abort_ratio, seed=batch
        )
        totals.update(outcomes)
        if time.monotonic() - last >= interval:
            last = time.monotonic()
            fds, rss = fds_and_rss(process.pid)
            errors = sum(v for k, v in totals.items() if k.startswith("error"))
            done = sum(totals.values())
            print(f"{last - started:>6.0f} {done:>11} {errors:>6} {fds:>5} {rss:>8.1f}")
    elapsed = time.monotonic() - started
    await asyncio.sleep(1.0)  # let the last aborted connections be noticed
    end_fds, end_rss = fds_and_rss(process.pid)
    errors = {k: v for k, v in totals.items() if k.startswith("error")}
    tunnels = sum(v for k, v in totals.items() if k.startswith("tunnel:"))
    print()
    print(f"duration {elapsed:.0f} s, connections {sum(totals.values())}, tunnels {tunnels}")
    print("by kind:", ", ".join(f"{k}={v}" for k, v in sorted(totals.items())))
    print(f"errors {sum(errors.values())} {errors or ''}")
    print(f"fds idle {base_fds} -> after {end_fds} (drift {end_fds - base_fds:+d})")
    print(f"RSS idle {base_rss:.1f} MiB -> after {end_rss:.1f} MiB ({end_rss - base_rss:+.1f})")
    return 1 if errors or end_fds > base_fds else 0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=float, default=60.0, help="seconds (default 60)")
    parser.add_argument("--concurrency", type=int, default=20, help="clients at once")
    parser.add_argument("--interval", type=float, default=10.0, help="seconds between samples")
    parser.add_argument("--abort-ratio", type=float, default=0.5, help="share of vanishing clients")
    args = parser.parse_args()
    code = asyncio.run(soak(args.duration, args.concurrency, args.interval, args.abort_ratio))
    raise SystemExit(code)


if __name__ == "__main__":
    main()
