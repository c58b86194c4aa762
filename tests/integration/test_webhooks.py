"""Webhooks against a real webhook server (a TestOrigin): blocking, notify, cache_key."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pytest
from conftest import async_test, cache_status, get, servers_config
from origin import Reply, TestOrigin, WebSocketBackend, unused_port
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidStatus

from phantom import create_proxy


def page(request: Any) -> Reply:
    return Reply(200, [("Cache-Control", "max-age=60")], b"page " + request.target)


@asynccontextmanager
async def behind_hooks(
    hooks: list[dict[str, Any]], backend_url: str | None = None
) -> AsyncIterator[tuple[TestOrigin, Any]]:
    async with TestOrigin({"/p": page, "/q": page}) as origin:
        server = {"proxy_url": backend_url or origin.url, "webhooks": hooks}
        async with create_proxy(servers_config({"app": server})) as proxy:
            yield origin, proxy


@async_test()
async def test_blocking_webhook_allows_and_sees_the_request() -> None:
    async with TestOrigin({"/check": Reply(204)}) as hook:
        hooks = [{"url": f"{hook.url}/check", "type": "blocking"}]
        async with behind_hooks(hooks) as (origin, proxy):
            response = await get(proxy.port, "/p?a=1", [("X-Token", "t"), ("X-Token", "u")])
            assert response.status == 200 and response.body == b"page /p?a=1"
            sent = json.loads(hook.last.body)
            assert hook.last.method == b"POST"
            assert (sent["method"], sent["path"], sent["query"]) == ("GET", "/p", "a=1")
            assert sent["headers"]["x-token"] == "t, u"
            assert sent["headers"]["host"] == "phantom.test"
            await get(proxy.port, "/p?a=1")  # a cache hit is still checked first
            assert hook.requests["/check"] == 2 and origin.requests["/p"] == 1


@async_test()
async def test_blocking_webhook_denials() -> None:
    deny = Reply(403, [("Content-Type", "application/json")], b'{"error": "no"}')
    login = Reply(302, [("Location", "/login"), ("X-Secret", "kept-back")])
    async with TestOrigin({"/deny": deny, "/login": login, "/ok": Reply(200)}) as hook:
        hooks = [
            {"url": f"{hook.url}/ok", "type": "blocking"},
            {"url": f"{hook.url}/deny", "type": "blocking"},
            {"url": f"{hook.url}/login", "type": "blocking"},
        ]
        async with behind_hooks(hooks) as (origin, proxy):
            denied = await get(proxy.port, "/p")
            assert (denied.status, denied.body) == (403, b'{"error": "no"}')
            assert denied.get("content-type") == "application/json"
            assert hook.requests["/login"] == 0  # the first denial stops the chain
        async with behind_hooks(hooks[2:]) as (origin, proxy):
            redirected = await get(proxy.port, "/p")
            assert (redirected.status, redirected.get("location")) == (302, "/login")
            assert not redirected.has("x-secret")
            assert len(origin.log) == 0


@async_test()
async def test_blocking_webhook_unreachable_or_slow_is_503() -> None:
    hooks = [{"url": f"http://127.0.0.1:{unused_port()}/", "type": "blocking"}]
    async with behind_hooks(hooks) as (origin, proxy):
        assert (await get(proxy.port, "/p")).status == 503
    async with TestOrigin({"/slow": Reply(silent=True)}) as hook:
        hooks = [{"url": f"{hook.url}/slow", "type": "blocking", "timeout_ms": 200}]
        async with behind_hooks(hooks) as (origin, proxy):
            started = time.monotonic()
            assert (await get(proxy.port, "/p")).status == 503
            assert time.monotonic() - started < 3
            assert len(origin.log) == 0


@async_test()
async def test_blocking_webhook_denies_a_websocket() -> None:
    async with WebSocketBackend() as ws_backend, TestOrigin({"/deny": Reply(401)}) as hook:
        hooks = [{"url": f"{hook.url}/deny", "type": "blocking"}]
        async with behind_hooks(hooks, f"http://127.0.0.1:{ws_backend.port}") as (_, proxy):
            with pytest.raises(InvalidStatus) as info:
                async with connect(f"ws://127.0.0.1:{proxy.port}/socket"):
                    pass
            assert info.value.response.status_code == 401
            assert json.loads(hook.last.body)["path"] == "/socket"
        assert ws_backend.paths == []


@async_test()
async def test_notify_never_delays_the_request() -> None:
    seen: asyncio.Queue[bytes] = asyncio.Queue()

    async def slow(request: Any) -> Reply:
        await seen.put(request.body)
        return Reply(200, delay=3)

    async with TestOrigin({"/n": slow}) as hook:
        hooks = [{"url": f"{hook.url}/n", "type": "notify"}]
        async with behind_hooks(hooks) as (_, proxy):
            started = time.monotonic()
            assert (await get(proxy.port, "/p")).status == 200
            assert time.monotonic() - started < 2
            sent = json.loads(await asyncio.wait_for(seen.get(), 5))
            assert sent["path"] == "/p"


@async_test()
async def test_cache_key_webhook_sets_the_key_and_failure_falls_back() -> None:
    async with TestOrigin({"/key": Reply(200, [], b"  shared-page \n")}) as hook:
        hooks = [{"url": f"{hook.url}/key", "type": "cache_key"}]
        async with behind_hooks(hooks) as (origin, proxy):
            first = await get(proxy.port, "/p?utm=1")
            second = await get(proxy.port, "/p?utm=2")
            assert second.body == first.body == b"page /p?utm=1"
            assert cache_status(second)[1].keys() >= {"hit"}
            assert proxy.cache.invalidate("shared-page") == 1
    hooks = [{"url": f"http://127.0.0.1:{unused_port()}/", "type": "cache_key"}]
    async with behind_hooks(hooks) as (origin, proxy):
        await get(proxy.port, "/q?x=1")
        await get(proxy.port, "/q?x=2")
        await get(proxy.port, "/q?x=1")
        assert origin.requests["/q"] == 2  # default keys: path and query
