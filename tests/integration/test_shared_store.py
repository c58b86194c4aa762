"""phantom.cache.shared over a real redis-server: two stores with links of their own stand
for two processes (workers or hosts) sharing one Redis."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
from conftest import async_test
from redis_server import RedisServer, needs_redis, redis_server

from phantom.cache import policy
from phantom.cache.policy import StorageDecision
from phantom.cache.shared import SharedStore
from phantom.cache.store import CachedResponse, Key
from phantom.config import RedisConfig
from phantom.redis_link import RedisLink

pytestmark = needs_redis
pytest.importorskip("redis", reason="the redis extra is not installed")


def key(target: str, host: str = "example.com") -> Key:
    return policy.store_key(host.encode(), b"GET", target.encode())


def page(body: bytes, clock_now: float, max_age: float = 60.0) -> CachedResponse:
    return CachedResponse(
        status=200,
        reason=b"OK",
        headers=[(b"content-type", b"text/plain")],
        body=body,
        response_time=clock_now,
        decision=StorageDecision(freshness_lifetime=max_age, initial_age=0.0),
    )


@asynccontextmanager
async def process(url: str, server: str = "app", l1_ttl: float = 1.0) -> AsyncIterator[SharedStore]:
    """One process's link and store of server ``server``."""
    link = RedisLink(RedisConfig(url=url, key_prefix="test:", timeout=0.5))
    store = SharedStore(
        link, server, max_entries=100, max_bytes=1 << 20, max_object_bytes=1 << 19,
        l1_ttl=l1_ttl,
    )
    await link.start()
    # On a loaded machine the first attempt may miss the timeout; the retries back off.
    await eventually(lambda: link.up, within=20)
    try:
        yield store
    finally:
        await link.close()


async def eventually(predicate: object, within: float = 2.0) -> float:
    """Seconds until ``predicate()`` holds; AssertionError after ``within``."""
    start = time.monotonic()
    while not predicate():  # type: ignore[operator]
        if time.monotonic() - start > within:
            raise AssertionError("not within the time")
        await asyncio.sleep(0.005)
    return time.monotonic() - start


async def shared_soon(store: SharedStore, target: Key) -> None:
    """Wait for the background write of ``target`` to reach Redis."""
    for _ in range(200):
        if await store.fetch(target):
            return
        await asyncio.sleep(0.005)
    raise AssertionError("never reached Redis")


@async_test(timeout=20)
async def test_what_one_process_stores_another_serves(tmp_path: Path) -> None:
    with redis_server(tmp_path) as redis:
        async with process(redis.url) as a, process(redis.url) as b:
            assert a.put(key("/p"), page(b"hello", a.clock()))
            assert b.variants(key("/p")) == ()  # not in B's first level
            await shared_soon(b, key("/p"))
            (got,) = b.variants(key("/p"))  # now it is
            assert got.body == b"hello"
            assert got.age(b.clock()) < 1
            # Another server's store sees nothing of it.
            async with process(redis.url, server="other") as c:
                assert await c.fetch(key("/p")) == ()


@async_test(timeout=20)
async def test_an_invalidation_reaches_the_other_process_within_100_ms(tmp_path: Path) -> None:
    with redis_server(tmp_path) as redis:
        async with process(redis.url, l1_ttl=60) as a, process(redis.url, l1_ttl=60) as b:
            for path in ("/api/1", "/api/2", "/img/x.png"):
                a.put(key(path), page(path.encode(), a.clock()))
                await shared_soon(b, key(path))
            assert len(b) == 3
            assert await a.purge("GET:/api/*") == 2 + 2  # A's copies, and Redis's
            assert await eventually(lambda: len(b) == 1) < 0.1
            assert await b.fetch(key("/api/1")) == ()
            assert b.variants(key("/img/x.png"))
            # An unsafe method on A (RFC 9111 §4.4) discards the URL everywhere.
            a.discard(key("/img/x.png"))
            assert await eventually(lambda: len(b) == 0) < 0.1
            assert await b.fetch(key("/img/x.png")) == ()
            a.put(key("/z"), page(b"z", a.clock()))
            await shared_soon(b, key("/z"))
            assert await a.purge_all() >= 1
            await eventually(lambda: len(b) == 0)
            assert redis.command("DBSIZE").strip() == b":0"


def publishes(redis: RedisServer) -> int:
    """How many PUBLISH commands the server has run."""
    stats = redis.command("INFO", "commandstats").decode()
    for line in stats.splitlines():
        if line.startswith("cmdstat_publish:"):
            return int(line.split("calls=", 1)[1].split(",", 1)[0])
    return 0


@async_test(timeout=20)
async def test_a_pattern_invalidation_is_announced_once_not_once_per_key(tmp_path: Path) -> None:
    """The process that hears of a pattern drops its matching keys without announcing each
    of them again (which every process would do, for every key it holds)."""
    with redis_server(tmp_path) as redis:
        async with process(redis.url, l1_ttl=60) as a, process(redis.url, l1_ttl=60) as b:
            paths = [f"/api/{n}" for n in range(5)]
            for path in paths:
                a.put(key(path), page(path.encode(), a.clock()))
                await shared_soon(b, key(path))
            before = publishes(redis)
            assert await a.purge("GET:/api/*") == 5 + 5
            await eventually(lambda: len(b) == 0)
            await asyncio.sleep(0.2)  # what B would announce has had its time
            assert publishes(redis) - before == 1


@async_test(timeout=20)
async def test_first_level_copies_expire_after_cache_l1_ttl(tmp_path: Path) -> None:
    with redis_server(tmp_path) as redis:
        async with process(redis.url, l1_ttl=0.2) as a:
            a.put(key("/p"), page(b"v1", a.clock()))
            await asyncio.sleep(0.3)
            assert a.variants(key("/p")) == ()
            assert await a.fetch(key("/p"))  # still in Redis
        async with process(redis.url, l1_ttl=0) as b:
            # Nothing is kept in the first level: each lookup is a Redis round trip.
            b.put(key("/q"), page(b"v2", b.clock()))
            assert b.variants(key("/q")) == ()
            await shared_soon(b, key("/q"))
            (got,) = await b.fetch(key("/q"))
            assert got.body == b"v2" and b.variants(key("/q")) == ()


@async_test(timeout=20)
async def test_fill_lock_one_process_fetches_the_other_waits(tmp_path: Path) -> None:
    with redis_server(tmp_path) as redis:
        async with process(redis.url) as a, process(redis.url) as b:
            assert await a.follow(key("/cold"), 5.0) is None  # A fills it
            waiting = asyncio.ensure_future(b.follow(key("/cold"), 5.0))
            await asyncio.sleep(0.05)
            assert not waiting.done()  # B waits for A
            a.put(key("/cold"), page(b"filled", a.clock()))
            await a.release(key("/cold"))
            (got,) = await asyncio.wait_for(waiting, 2)
            assert got.body == b"filled"
            # A holder that dies: its lock expires and the waiter goes for itself.
            assert await a.follow(key("/dies"), 0.2) is None
            start = time.monotonic()
            assert await b.follow(key("/dies"), 5.0) == ()
            assert time.monotonic() - start < 1.0
            assert await b.follow(key("/dies"), 5.0) is None


@async_test(timeout=30)
async def test_redis_down_costs_nothing_and_sharing_resumes(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, "phantom.redis")
    redis = RedisServer(tmp_path).start()
    try:
        async with process(redis.url) as a, process(redis.url) as b:
            link = a._link
            assert link.up
            redis.stop()
            start = time.monotonic()
            for n in range(20):  # every lookup is answered at once from what is at hand
                assert await a.fetch(key(f"/{n}")) == ()
            assert time.monotonic() - start < 0.5
            assert not link.up and link.errors >= 1
            a.put(key("/local"), page(b"here", a.clock()))
            assert a.variants(key("/local"))  # the first level still serves
            redis.start()
            await eventually(lambda: link.up and b._link.up, within=10)
            a.put(key("/again"), page(b"shared", a.clock()))
            await shared_soon(b, key("/again"))
    finally:
        redis.stop()
    changes = [r.getMessage() for r in caplog.records if r.name == "phantom.redis"]
    unavailable = [m for m in changes if "is unavailable" in m]
    assert len(unavailable) == 2  # once for each of the two processes
    assert sum("connected to" in m for m in changes) == 4  # at start and when back


@async_test(timeout=30)
async def test_a_hung_redis_is_left_alone_and_missed_invalidations_are_done_after(
    tmp_path: Path,
) -> None:
    with redis_server(tmp_path) as redis:
        async with process(redis.url, l1_ttl=60) as a, process(redis.url, l1_ttl=60) as b:
            a.put(key("/p"), page(b"old", a.clock()))
            await shared_soon(b, key("/p"))
            redis.pause()
            start = time.monotonic()
            assert await a.purge("GET:/p") == 1  # A's own copy; Redis did not answer
            assert time.monotonic() - start < 1.0
            assert not a._link.up
            redis.resume()
            await eventually(lambda: a._link.up, within=10)
            # Done again once Redis was back: gone from Redis and from B's first level.
            await eventually(lambda: len(b) == 0)
            assert await b.fetch(key("/p")) == ()
