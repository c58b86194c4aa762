"""phantom.balancing.pool against real backends on 127.0.0.1: an exchange fails over to
another backend when the first could not be reached or reset the request unanswered, within
`retries`; never for a request that may not be repeated, nor after a timeout; and with every
backend gone it is NoBackend (503) with a Retry-After."""

from __future__ import annotations

import asyncio
from collections import Counter
from typing import Any

import h11
import pytest
from conftest import async_test
from origin import (
    LOCALHOST,
    Reply,
    ScriptedBackend,
    TestOrigin,
    read_request_head,
    reset,
    unused_port,
)

from phantom.balancing.backend import Backend
from phantom.balancing.pool import BackendPool, NoBackend
from phantom.config import config_from_dict
from phantom.errors import BackendError, BackendTimeout
from phantom.upstream import UpstreamConnection


def pool(*urls: str, **options: Any) -> BackendPool:
    data = {"server": {"app": {"backends": [{"url": u} for u in urls], **options}}}
    return BackendPool(config_from_dict(data, "test.toml").servers[0], 1.0, None)


def who(name: str) -> dict[str, Reply]:
    return {"/who": Reply(200, [("Cache-Control", "no-store")], name.encode())}


async def start_get(conn: UpstreamConnection) -> h11.Response:
    conn.send(h11.Request(method=b"GET", target=b"/who", headers=[(b"Host", b"app.test")]))
    conn.send(h11.EndOfMessage())
    return await conn.response_head(0.5)


def status(head: h11.Response) -> int:
    return head.status_code


async def body_of(attempt: tuple[Backend, UpstreamConnection, h11.Response]) -> bytes:
    backend, conn, _ = attempt
    assert backend.inflight >= 1 and conn.leased
    body = await conn.read_body(2.0, 1 << 20)
    assert body is not None
    conn.release()  # its place among the backend's requests in flight goes with it
    assert not conn.leased
    return body


async def get(backends: BackendPool, retry: bool = True) -> bytes:
    return await body_of(await backends.exchange(None, start_get, status, retry=retry))


@async_test()
async def test_spreads_and_fails_over_from_a_refused_backend() -> None:
    dead = f"http://{LOCALHOST}:{unused_port()}"
    async with TestOrigin(who("a")) as a, TestOrigin(who("b")) as b:
        backends = pool(a.url, dead, b.url)
        seen = Counter([await get(backends) for _ in range(30)])
        assert seen == {b"a": 15, b"b": 15}  # the dead one's turns went elsewhere
        counts = backends.balancer.retry_counts
        assert counts["success"] == 5  # then its breaker opened (5 failures)
        down = backends.balancer.backends[1]
        assert down.state(backends.balancer.clock()) == "open"
        assert down.responses[0] == 5 and "cannot connect" in (down.last_error or "")
        assert all(b.inflight == 0 for b in backends.balancer.backends)
        await backends.close()


@async_test()
async def test_a_reset_before_any_answer_is_retried_but_not_a_post() -> None:
    async def rude(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request_head(reader)
        reset(writer)

    async with ScriptedBackend(rude) as broken, TestOrigin(who("ok")) as good:
        backends = pool(f"http://{LOCALHOST}:{broken.port}", good.url)
        assert [await get(backends) for _ in range(4)] == [b"ok"] * 4
        assert broken.connections_accepted == 2
        # Not retried: the caller says the request may not be repeated (a POST, a body).
        failures = 0
        for _ in range(2):
            try:
                await get(backends, retry=False)
            except BackendError as exc:
                assert exc.kind == "reset"
                failures += 1
        assert failures == 1  # the round robin's turn of the broken backend
        await backends.close()


@async_test()
async def test_a_slow_backend_is_not_asked_twice() -> None:
    slow = {"/who": Reply(200, body=b"late", delay=2.0)}
    async with TestOrigin(slow) as a, TestOrigin(who("b")) as b:
        backends = pool(a.url, b.url)
        with pytest.raises(BackendTimeout):
            await get(backends)
        assert a.requests["/who"] == 1 and b.requests["/who"] == 0
        await backends.close()


@async_test()
async def test_retries_stop_at_the_limit_and_everything_down_is_no_backend() -> None:
    urls = [f"http://{LOCALHOST}:{unused_port()}" for _ in range(3)]
    backends = pool(*urls, retries=1, breaker_failures=1, breaker_open=30)
    with pytest.raises(BackendError) as info:
        await get(backends)
    assert info.value.kind == "refused" and not isinstance(info.value, NoBackend)
    assert backends.balancer.retry_counts["failure"] == 1  # one retry, then it gave up
    with pytest.raises(BackendError):
        await get(backends)  # the third backend, alone: no other to retry on
    with pytest.raises(NoBackend) as down:
        await get(backends)
    assert (down.value.status, down.value.retry_after) == (503, 30)
    await backends.close()


@async_test()
async def test_health_checks_run_with_the_pool() -> None:
    routes = {**who("a"), "/healthz": Reply(503)}
    async with TestOrigin(routes) as a, TestOrigin(who("b")) as b:
        b.route("/healthz", Reply(200))
        check = {"path": "/healthz", "interval": 0.05, "timeout": 0.05, "unhealthy_threshold": 1}
        backends = pool(a.url, b.url, health_check=check)
        backends.start()
        try:
            for _ in range(100):
                if not backends.balancer.backends[0].healthy:
                    break
                await asyncio.sleep(0.02)
            assert {await get(backends) for _ in range(4)} == {b"b"}
        finally:
            await backends.close()
