"""After many connections of mixed kinds, half of them aborted at random points, phantom holds
no more file descriptors and tasks than when idle (issue 6, "Resources"). The 20,000-connection
run and RSS over time are benchmarks/soak.py's job; this is the bounded version for CI."""

from __future__ import annotations

import asyncio
import os

import pytest
from conftest import async_test, running_proxy
from load import run_mixed
from origin import UpgradeBackend

FD_DIR = "/proc/self/fd"


def open_fds() -> int:
    return len(os.listdir(FD_DIR))


@pytest.mark.skipif(not os.path.isdir(FD_DIR), reason="needs /proc to count descriptors")
@async_test(60)
async def test_fds_and_tasks_return_to_baseline_after_mixed_aborted_load() -> None:
    # The backend's answers give no freshness: "always" stores them, so /hit is a hit.
    async with (
        UpgradeBackend() as backend,
        running_proxy(backend.port, cache_heuristic="always") as proxy,
    ):
        await run_mixed(proxy.port, 20, abort_ratio=0.0)  # warm up: cache, pool, lazy imports
        await asyncio.sleep(0.2)
        fds, tasks = open_fds(), len(asyncio.all_tasks())

        outcomes = await run_mixed(proxy.port, 600, abort_ratio=0.5, seed=1)
        errors = {k: v for k, v in outcomes.items() if k.startswith("error")}
        assert not errors, outcomes
        assert sum(v for k, v in outcomes.items() if k.endswith(":aborted")) > 200

        async with asyncio.timeout(10):
            while proxy.open_connections or proxy.open_tunnels:
                await asyncio.sleep(0.05)
            # The backend sees the last aborted legs close a moment later.
            while open_fds() > fds or len(asyncio.all_tasks()) > tasks:
                await asyncio.sleep(0.05)
