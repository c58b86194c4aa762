"""The library example in docs/library.md runs as written (a real backend, a real proxy)."""

from __future__ import annotations

import asyncio
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import async_test, get, proxied
from origin import Reply

REPO = Path(__file__).resolve().parents[2]


def test_library_example_runs(tmp_path: Path) -> None:
    text = (REPO / "docs" / "library.md").read_text()
    example = re.findall(r"```python\n(.*?)```", text, re.S)[0]
    script = tmp_path / "example.py"
    script.write_text(example)
    result = subprocess.run(
        [sys.executable, str(script)], capture_output=True, text=True, timeout=30, check=False
    )
    assert result.returncode == 0, result.stderr
    miss, hit, flushed = result.stdout.splitlines()
    assert miss == "Cache-Status: phantom; fwd=uri-miss; fwd-status=200; stored"
    assert re.fullmatch(r"Cache-Status: phantom; hit; ttl=5\d", hit)
    assert flushed == "flushed 1 entry"


needs_curl = pytest.mark.skipif(shutil.which("curl") is None, reason="needs curl")


def tour_step(number: int) -> str:
    readme = (REPO / "README.md").read_text()
    tour = readme.split("## A 5-minute tour", 1)[1].split("\n## ", 1)[0]
    return re.split(r"^\d+\. ", tour, flags=re.M)[number]


async def curl(command: str, documented: str, port: int) -> str:
    """Run a documented curl command line against ``port`` instead of the ``documented``
    address; its output (it must succeed, 2xx)."""
    argv = shlex.split(command.replace(documented, f"127.0.0.1:{port}"))
    result = await asyncio.to_thread(
        subprocess.run, [*argv, "-sS", "--fail"], capture_output=True, text=True, timeout=10
    )
    assert result.returncode == 0, (command, result.stderr)
    return result.stdout


@needs_curl
@async_test(timeout=30)
async def test_the_tour_control_calls_run_as_written() -> None:
    """Step 4 of the README's tour: the keys it sets and its curl commands, against a proxy."""
    step = tour_step(4)
    found = re.search(r'`control_port = (\d+)` and `control_auth = "(\w+)"`', step)
    assert found, "the tour sets control_port and control_auth"
    address, token = f"127.0.0.1:{found[1]}", found[2]
    commands = re.findall(r"`(curl [^`]+)`", step)
    assert [c.rpartition(" ")[2] for c in commands] == [
        f"{address}/invalidate_all",
        f"{address}/metrics",
    ]
    cached = Reply(200, [("Cache-Control", "max-age=60")], b"a")
    async with proxied({"/a": cached}, control_port=0, control_auth=token) as (_, proxy):
        await get(proxy.port, "/a")
        flushed, metrics = [await curl(c, address, proxy.control_port) for c in commands]
        assert flushed == '{"invalidated": 1}\n'
        assert "phantom_cache_lookups_total" in metrics


@needs_curl
@async_test(timeout=30)
async def test_the_control_api_examples_run_as_written() -> None:
    """docs/control-api.md's curl lines: with the token, and the one without control_auth."""
    text = (REPO / "docs" / "control-api.md").read_text()
    found = re.search(r"```sh\n(.*?)```", text, re.S)
    assert found
    with_token, without = found[1].split("# without control_auth:")
    for lines, auth in ((with_token, {"control_auth": "TOKEN"}), (without, {})):
        async with proxied({}, control_port=0, **auth) as (_, proxy):
            for line in lines.strip().splitlines():
                await curl(line, "127.0.0.1:9000", proxy.control_port)
