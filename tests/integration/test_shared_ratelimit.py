"""``rate_limit.shared = true`` over a real redis-server: the Lua script against the
process's own GCRA, and two phantom processes ("hosts") sharing one budget, falling back to
their own when Redis dies and sharing again when it is back."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from conftest import async_test, get
from origin import Reply, TestOrigin
from redis_server import needs_redis, redis_server
from test_fleet import Host, hosts, ready
from test_serve_process import linux_only
from test_shared_store import eventually

from phantom.bearer import TokenPlaces
from phantom.config import RateLimitConfig, RedisConfig
from phantom.ratelimit import Limiter
from phantom.redis_link import RedisLink
from phantom.sharedlimit import SCRIPT_SHA, SharedLimiter
from phantom.stages.base import RequestView
from phantom.stages.ratelimit import RateStage, SharedRateStage

pytestmark = needs_redis
pytest.importorskip("redis", reason="the redis extra is not installed")

BUDGET = 5
SHARED = f"rate_limit = {{ requests = {BUDGET}, per = 60, shared = true }}\n"


@async_test(timeout=20)
async def test_the_script_decides_as_the_local_limiter_does(tmp_path: Path) -> None:
    quota = RateLimitConfig(requests=3, per=30, burst=3)
    with redis_server(tmp_path) as redis:
        link = RedisLink(RedisConfig(url=redis.url, key_prefix="test:", timeout=0.5))
        await link.start()
        await eventually(lambda: link.up, within=15)
        try:
            local = Limiter(quota, 100, clock=lambda: 1000.0)  # the same instant throughout
            shared = SharedLimiter(link, "app", local.quota)
            for _ in range(5):
                wait, full_in = await shared.take("ip:192.0.2.1")
                expected = local.take("ip:192.0.2.1")
                assert (wait > 0) == (expected > 0)
                assert wait == pytest.approx(expected, abs=0.05)
                assert full_in == pytest.approx(local.full_in("ip:192.0.2.1"), abs=0.05)
            # Three taken: refused for one interval (10 s), the bucket full again in 30 s.
            assert (wait, full_in) == (pytest.approx(10, abs=0.05), pytest.approx(30, abs=0.05))
            # One key per rate key, under the prefix and the server, gone when the bucket is.
            ttl = int(redis.command("PTTL", "test:rl:app:ip:192.0.2.1")[1:].strip())
            assert 29_000 < ttl <= 30_000
            # A Redis that forgot the script (a restart, SCRIPT FLUSH): EVAL runs and loads it.
            assert redis.command("SCRIPT", "FLUSH").startswith(b"+OK")
            assert (await shared.take("ip:192.0.2.2"))[0] == 0.0
            assert redis.command("SCRIPT", "EXISTS", SCRIPT_SHA)[-3:-2] == b"1"
            # A quota of a billion a second: an interval far below a µs, a key of 1 ms.
            fast = SharedLimiter(link, "app", Limiter(RateLimitConfig(10**9, 1, 10**9), 1).quota)
            assert [(await fast.take("ip:192.0.2.3"))[0] for _ in range(3)] == [0.0] * 3
            assert link.up and link.errors == 0
        finally:
            await link.close()


async def statuses(fleet: tuple[Host, ...], count: int) -> list[int]:
    """``count`` requests, one after another, spread over ``fleet``; each 429 checked."""
    answers = []
    for n in range(count):
        response = await get(fleet[n % len(fleet)].port, "/")
        if response.status == 429:
            retry = response.get("retry-after")
            assert retry is not None and int(retry) >= 1
        answers.append(response.status)
    return answers


@linux_only
@async_test(timeout=90)
async def test_two_hosts_share_one_budget_and_fall_back_to_their_own_without_redis(
    tmp_path: Path,
) -> None:
    with redis_server(tmp_path) as redis:
        async with TestOrigin({"/": Reply(200, [], b"ok")}) as origin:
            with hosts(tmp_path, redis.url, origin.port, server=SHARED) as (a, b):
                await ready(a, b)
                assert await statuses((a, b), 2 * BUDGET) == [200] * BUDGET + [429] * BUDGET
                assert origin.requests["/"] == BUDGET

                redis.stop()
                for host in (a, b):
                    await eventually_metric(host, "phantom_redis_up", 0)
                # Each host answers under its own limit meanwhile: never blocked, never a 5xx.
                assert await statuses((a,), BUDGET + 2) == [200] * BUDGET + [429] * 2
                assert await statuses((b,), BUDGET + 1) == [200] * BUDGET + [429]

                redis.start()  # empty: every key starts with a full bucket
                await ready(a, b)
                assert await statuses((a, b), 2 * BUDGET) == [200] * BUDGET + [429] * BUDGET
    log = (tmp_path / "host0.log").read_text()
    assert log.count("rate_limit counted in this process while Redis is unavailable") == 1
    assert log.count("rate_limit shared through Redis again") == 1


async def eventually_metric(host: Host, name: str, value: float) -> None:
    for _ in range(400):
        if await host.metric(name) == value:
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"{name} never became {value}")


@async_test(timeout=20)
async def test_a_hung_redis_costs_one_timeout_then_nothing_and_the_local_limit_decides(
    tmp_path: Path,
) -> None:
    config = RateLimitConfig(requests=2, per=60, burst=2, shared=True)
    with redis_server(tmp_path) as redis:
        link = RedisLink(RedisConfig(url=redis.url, key_prefix="test:", timeout=0.2))
        await link.start()
        await eventually(lambda: link.up, within=15)
        try:
            places = TokenPlaces(None, None)
            local = RateStage(Limiter(config, 100), "client_ip", (), False, None, places)
            stage = SharedRateStage(local, SharedLimiter(link, "app", local.limiter.quota), "app")
            view = RequestView(b"GET", b"/", [], "192.0.2.9")
            assert await stage.check(view) is None  # shared: one of the two taken in Redis
            redis.pause()
            started = asyncio.get_running_loop().time()
            answers = [await stage.check(view) for _ in range(3)]
            took = asyncio.get_running_loop().time() - started
            assert took < 0.2 + 0.3  # the first waits out the timeout, the others not at all
            assert [a is None or a.status for a in answers] == [True, True, 429]
        finally:
            redis.resume()
            await link.close()
