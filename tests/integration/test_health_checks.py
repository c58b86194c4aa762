"""phantom.balancing.health against real backends on 127.0.0.1: down within interval x
threshold, back after it returns, and what a check sends."""

from __future__ import annotations

import asyncio
import time

from conftest import async_test
from origin import Reply, TestOrigin

from phantom.balancing import Balancer
from phantom.balancing.backend import Backend
from phantom.balancing.health import HealthChecker
from phantom.config import ServerConfig, config_from_dict
from phantom.upstream import Upstream, UpstreamConnection

INTERVAL = 0.1


def server(*origins: TestOrigin, **check: object) -> ServerConfig:
    data = {
        "server": {
            "app": {
                "backends": [{"url": origin.url} for origin in origins],
                "health_check": {
                    "path": "/healthz",
                    "interval": INTERVAL,
                    "timeout": INTERVAL,
                    "unhealthy_threshold": 3,
                    "healthy_threshold": 2,
                    **check,
                },
            }
        }
    }
    return config_from_dict(data, "test.toml").servers[0]


async def connect(backend: Backend) -> UpstreamConnection:
    return await Upstream(backend.url, 1.0).connect()


def checker(config: ServerConfig) -> tuple[Balancer, HealthChecker]:
    assert config.health_check is not None
    balancer = Balancer(config)
    return balancer, HealthChecker(balancer, config.health_check, connect)


async def until(condition: object, limit: float) -> float:
    """Seconds until ``condition()`` holds; fails after ``limit``."""
    started = time.monotonic()
    while not condition():  # type: ignore[operator]
        assert time.monotonic() - started < limit, "did not happen in time"
        await asyncio.sleep(0.01)
    return time.monotonic() - started


@async_test(timeout=20)
async def test_down_within_interval_times_threshold_and_back_after_it_returns() -> None:
    healthz = {"/healthz": Reply(200, body=b"ok")}
    async with TestOrigin(healthz) as a, TestOrigin(healthz) as b:
        balancer, checks = checker(server(a, b))
        checks.start()
        try:
            first, second = balancer.backends
            await until(lambda: a.requests["/healthz"] >= 2, 2)
            assert first.healthy and second.healthy
            await a.close()  # connection refused from now on
            took = await until(lambda: not first.healthy, 3)
            assert took <= INTERVAL * 3 + 0.5
            assert "cannot connect" in (first.last_error or "")
            assert second.healthy
            assert {balancer.pick() for _ in range(4)} == {second}
            await a.start()  # the same port again
            took = await until(lambda: first.healthy, 3)
            assert took <= INTERVAL * 2 + 0.5
        finally:
            await checks.close()


@async_test()
async def test_a_status_outside_expect_status_or_a_silent_backend_fails() -> None:
    async with TestOrigin({"/healthz": Reply(503)}) as failing, TestOrigin(
        {"/healthz": Reply(200)}, mode="silent"
    ) as silent:
        balancer, checks = checker(
            server(failing, silent, unhealthy_threshold=1, expect_status="200,204")
        )
        checks.start()
        try:
            await until(lambda: not any(b.healthy for b in balancer.backends), 3)
            assert [b.last_error for b in balancer.backends] == [
                "health check: answered 503",
                "health check: no answer within 0.1s",
            ]
            assert balancer.pick() is None
        finally:
            await checks.close()


@async_test()
async def test_what_a_check_sends() -> None:
    async with TestOrigin({"/up": Reply(204)}) as origin:
        balancer, checks = checker(server(origin, path="/up?deep=1", host="app.example.com"))
        assert await checks.probe(balancer.backends[0]) is None
        request = origin.last
        assert (request.method, request.target) == (b"GET", b"/up?deep=1")
        assert request.get("host") == "app.example.com"
        assert request.get("user-agent") == "phantom-health-check"
        assert request.get("connection") == "close"
        await until(lambda: origin.open_connections == 0, 2)  # nothing left open
