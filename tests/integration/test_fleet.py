"""Two phantom processes ("hosts" A and B) sharing one real redis-server
(``cache_storage_mode = "redis"``): what one stores the other serves, an invalidation on one
reaches the other, a cold URL reaches the origin once across both, and Redis dying costs no
answer."""

from __future__ import annotations

import asyncio
import subprocess
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

import pytest
from conftest import async_test, fetch, get
from origin import LOCALHOST, Reply, TestOrigin, unused_port
from redis_server import needs_redis, redis_server
from test_serve_process import linux_only, serve
from test_workers_control import control, samples, until

pytestmark = [needs_redis, linux_only]
pytest.importorskip("redis", reason="the redis extra is not installed")

PAGE = Reply(200, [("Cache-Control", "max-age=600")], b"shared page")
READY_SECONDS = 25.0


class Host:
    def __init__(self, port: int, control_port: int, process: subprocess.Popen[bytes]) -> None:
        self.port = port
        self.control_port = control_port
        self.process = process

    async def metric(self, name: str) -> float:
        status, text = await control(self.control_port, "GET", "/metrics")
        assert status == 200
        return sum(samples(text, name).values())


@contextmanager
def hosts(
    tmp_path: Path,
    redis_url: str,
    backend: int,
    count: int = 2,
    server: str = 'cache_storage_mode = "redis"\n',
) -> Iterator[list[Host]]:
    """``count`` phantom processes on ``redis_url``, each with ``[server.app]`` in front of
    ``backend`` and the lines ``server``."""
    with ExitStack() as stack:
        started = []
        for index in range(count):
            port, control_port = unused_port(), unused_port()
            config = tmp_path / f"host{index}.toml"
            config.write_text(
                f"http_port = {port}\ncontrol_port = {control_port}\n"
                f'[redis]\nurl = "{redis_url}"\ntimeout = 0.5\n'
                f'[server.app]\nproxy_url = "http://{LOCALHOST}:{backend}"\n{server}'
            )
            process = stack.enter_context(serve(config))
            started.append(Host(port, control_port, process))
        yield started
    for index in range(count):
        assert "Traceback" not in (tmp_path / f"host{index}.log").read_text()


async def ready(*fleet: Host) -> None:
    for host in fleet:
        async def up(host: Host = host) -> bool:
            try:
                return await host.metric("phantom_redis_up") == 1
            except OSError:
                return False

        # Generous: on a loaded machine a connection attempt may miss the timeout, and the
        # retries back off up to 5 s.
        deadline = asyncio.get_running_loop().time() + READY_SECONDS
        while not await up():
            if asyncio.get_running_loop().time() > deadline:
                raise AssertionError("a host never connected to Redis")
            await asyncio.sleep(0.05)


@async_test(timeout=60)
async def test_a_miss_on_a_is_a_hit_on_b_and_an_invalidation_on_a_reaches_b(
    tmp_path: Path,
) -> None:
    with redis_server(tmp_path) as redis:
        async with TestOrigin({"/page": PAGE}) as origin:
            with hosts(tmp_path, redis.url, origin.port) as (a, b):
                await ready(a, b)
                assert (await get(a.port, "/page")).body == b"shared page"
                await until(lambda: redis.command("DBSIZE").strip() == b":1", "the write")
                response = await get(b.port, "/page")
                assert response.body == b"shared page"
                assert origin.requests["/page"] == 1
                assert await b.metric('phantom_cache_lookups_total{server="app",result="hit"}') \
                    == 1
                status, body = await control(
                    a.control_port, "POST", "/invalidate", {"pattern": "GET:/page"}
                )
                assert status == 200 and body["invalidated"] >= 1
                await asyncio.sleep(0.1)  # within 100 ms, B's first level is cleared too
                assert (await get(b.port, "/page")).status == 200
                assert origin.requests["/page"] == 2
                # A POST through A (RFC 9111 §4.4) invalidates the URL on B as well.
                await until(lambda: redis.command("DBSIZE").strip() == b":1", "B's write")
                assert (await fetch(a.port, "POST", "/page", body=b"x")).status == 200
                assert origin.requests["/page"] == 3
                await asyncio.sleep(0.1)
                assert (await get(b.port, "/page")).status == 200
                assert origin.requests["/page"] == 4


@async_test(timeout=60)
async def test_fifty_concurrent_misses_over_two_hosts_reach_the_origin_once(
    tmp_path: Path,
) -> None:
    slow = Reply(200, [("Cache-Control", "max-age=600")], b"cold", delay=0.5)
    with redis_server(tmp_path) as redis:
        async with TestOrigin({"/cold": slow}) as origin:
            with hosts(tmp_path, redis.url, origin.port) as (a, b):
                await ready(a, b)
                answers = await asyncio.gather(
                    *(get((a, b)[n % 2].port, "/cold") for n in range(50))
                )
                assert [r.body for r in answers] == [b"cold"] * 50
                assert origin.requests["/cold"] == 1


@async_test(timeout=60)
async def test_redis_killed_mid_run_every_request_is_answered_and_sharing_resumes(
    tmp_path: Path,
) -> None:
    with redis_server(tmp_path) as redis:
        async with TestOrigin({"/page": PAGE, "/after": PAGE}) as origin:
            with hosts(tmp_path, redis.url, origin.port) as (a, b):
                await ready(a, b)

                async def load() -> list[int]:
                    statuses = []
                    for n in range(60):
                        host = (a, b)[n % 2]
                        statuses.append((await get(host.port, f"/page?{n % 5}")).status)
                        await asyncio.sleep(0.01)
                    return statuses

                running = asyncio.ensure_future(load())
                await asyncio.sleep(0.2)
                redis.stop()
                assert await running == [200] * 60
                assert await a.metric("phantom_redis_up") == 0
                assert await a.metric("phantom_redis_errors_total") >= 1
                redis.start()
                await ready(a, b)
                assert (await get(a.port, "/after")).status == 200
                await until(lambda: b"after" in redis.command("SCAN", "0", "COUNT", "100"),
                            "the write")
                assert (await get(b.port, "/after")).status == 200
                assert origin.requests["/after"] == 1
    log = (tmp_path / "host0.log").read_text()
    assert log.count("is unavailable") == 1
    assert log.count("connected to") == 2
