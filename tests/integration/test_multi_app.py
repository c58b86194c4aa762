"""Several apps behind one phantom: path prefixes, hosts, per-server caches, upgrades, Host."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from conftest import async_test, cache_status, get, servers_config
from origin import Reply, TestOrigin, WebSocketBackend
from websockets.asyncio.client import connect

from phantom import create_proxy


def named(name: str) -> Any:
    """A cacheable reply saying which origin answered and the target it saw."""

    def handler(request: Any) -> Reply:
        headers = [("Cache-Control", "max-age=60"), ("X-Origin", name)]
        return Reply(200, headers, name.encode() + b" " + request.target)

    return handler


@asynccontextmanager
async def two_apps(**extra: dict[str, Any]) -> AsyncIterator[tuple[TestOrigin, TestOrigin, Any]]:
    """`web` on "*" and `api` on /api (base path /v1) behind one proxy."""
    web_routes = {p: named("web") for p in ("/", "/apix", "/docs", "/x")}
    api_routes = {p: named("api") for p in ("/v1/", "/v1/users")}
    async with TestOrigin(web_routes) as web, TestOrigin(api_routes) as api:
        servers = {
            "web": {"proxy_url": web.url, "bind_to": "*"},
            "api": {"proxy_url": f"{api.url}/v1", "bind_to": "/api"},
            **extra,
        }
        async with create_proxy(servers_config(servers)) as proxy:
            yield web, api, proxy


@async_test()
async def test_prefix_routes_to_its_backend_with_the_path_rewritten() -> None:
    async with two_apps() as (web, api, proxy):
        users = await get(proxy.port, "/api/users?page=2")
        assert users.body == b"api /v1/users?page=2"
        assert (await get(proxy.port, "/api")).body == b"api /v1/"
        assert (await get(proxy.port, "/apix")).body == b"web /apix"
        assert (await get(proxy.port, "/x")).body == b"web /x"
        assert [r.target for r in api.log] == [b"/v1/users?page=2", b"/v1/"]


@async_test()
async def test_no_route_is_404_and_nothing_is_contacted() -> None:
    async with TestOrigin({"/": named("a")}) as origin:
        servers = {"a": {"proxy_url": origin.url, "bind_to": "/a"}}
        async with create_proxy(servers_config(servers)) as proxy:
            response = await get(proxy.port, "/b")
            assert response.status == 404
            assert (await get(proxy.port, "/a")).body == b"a /"
        assert origin.requests["/"] == 1 and len(origin.log) == 1


@async_test()
async def test_hosts_are_matched_before_paths() -> None:
    async with two_apps() as (web, api, _), TestOrigin({"/api/x": named("site")}) as site:
        servers = {
            "web": {"proxy_url": web.url},
            "api": {"proxy_url": f"{api.url}/v1", "bind_to": "/api"},
            "site": {"proxy_url": site.url, "hosts": ["*.site.test"], "strip_prefix": False},
        }
        async with create_proxy(servers_config(servers)) as proxy:
            claimed = await get(proxy.port, "/api/x", [("Host", "Shop.SITE.test:3000")])
            assert claimed.body == b"site /api/x"
            unclaimed = await get(proxy.port, "/api/users", [("Host", "other.test")])
            assert unclaimed.body == b"api /v1/users"


@async_test()
async def test_each_server_has_its_own_cache_and_settings() -> None:
    async with two_apps() as (web, api, proxy):
        for _ in range(2):
            await get(proxy.port, "/x")
            await get(proxy.port, "/api/users")
        assert (web.requests["/x"], api.requests["/v1/users"]) == (1, 1)
        assert len(proxy.servers["web"].cache) == 1 and len(proxy.servers["api"].cache) == 1
        assert proxy.servers["api"].cache.invalidate("GET:/api/*") == 1
        assert len(proxy.cache) == 1
        _, state = cache_status(await get(proxy.port, "/api/users"))
        assert state.get("fwd") == "uri-miss"
        assert proxy.cache.invalidate_all() == 2


@async_test()
async def test_preserve_host_false_sends_the_backends_host() -> None:
    async with TestOrigin({"/h": named("b")}) as origin:
        servers = {"b": {"proxy_url": origin.url, "preserve_host": False}}
        async with create_proxy(servers_config(servers)) as proxy:
            await get(proxy.port, "/h", [("Host", "public.test")])
            assert origin.last.get("host") == f"127.0.0.1:{origin.port}"
            assert origin.last.get("x-forwarded-host") == "public.test"
        servers = {"b": {"proxy_url": origin.url}}
        async with create_proxy(servers_config(servers)) as proxy:
            await get(proxy.port, "/h", [("Host", "public.test")])
            assert origin.last.get("host") == "public.test"


@async_test()
async def test_websockets_follow_the_same_routes_and_rewriting() -> None:
    async with WebSocketBackend() as docs, WebSocketBackend() as web:
        servers = {
            "web": {"proxy_url": f"http://127.0.0.1:{web.port}"},
            "docs": {
                "proxy_url": f"http://127.0.0.1:{docs.port}",
                "bind_to": "/docs",
                "preserve_host": False,
            },
        }
        async with create_proxy(servers_config(servers)) as proxy:
            url = f"ws://127.0.0.1:{proxy.port}"
            hmr = f"{url}/docs/_next/webpack-hmr?page=1"
            async with connect(hmr, origin="http://a.test") as ws:  # type: ignore[arg-type]
                await ws.send("hmr")
                assert await ws.recv() == "hmr"
            async with connect(f"{url}/socket") as ws:
                await ws.send("root")
                assert await ws.recv() == "root"
        assert docs.paths == ["/_next/webpack-hmr?page=1"]
        assert web.paths == ["/socket"]
        docs_headers = {n.lower(): v for n, v in docs.request_headers[0]}
        assert docs_headers["host"] == f"127.0.0.1:{docs.port}"
        assert docs_headers["origin"] == f"http://127.0.0.1:{docs.port}"
