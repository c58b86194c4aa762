"""Operator cache controls through a running proxy: cache_strategy, include/exclude paths,
forward_get_only, the 404 negative cache, a custom cache key and filesystem storage."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import brotli
from conftest import async_test, cache_status, fetch, get, proxied, proxy_config, running_proxy
from origin import Reply, TestOrigin

from phantom import RequestInfo, create_proxy


def typed(content_type: str, body: bytes = b"x\n") -> Reply:
    return Reply(200, [("Content-Type", content_type), ("Cache-Control", "max-age=60")], body)


ROUTES = {
    "/page": typed("text/html; charset=utf-8"),
    "/site.css": typed("text/css"),
    "/logo.png": typed("image/png"),
    "/api/data": typed("application/json"),
}


async def origin_hits(strategy: str) -> dict[str, int]:
    async with proxied(dict(ROUTES), cache_strategy=strategy) as (origin, proxy):
        for _ in range(2):
            for path in ROUTES:
                assert (await get(proxy.port, path)).status == 200
        return {path: origin.requests[path] for path in ROUTES}


@async_test()
async def test_cache_strategies() -> None:
    """Each strategy keeps its kind of response (1 origin request) and passes the rest (2)."""
    assert await origin_hits("all") == dict.fromkeys(ROUTES, 1)
    assert await origin_hits("none") == dict.fromkeys(ROUTES, 2)
    assert await origin_hits("only_html") == {
        "/page": 1, "/site.css": 2, "/logo.png": 2, "/api/data": 2
    }
    assert await origin_hits("no_images") == {
        "/page": 1, "/site.css": 1, "/logo.png": 2, "/api/data": 1
    }
    assert await origin_hits("only_images") == {
        "/page": 2, "/site.css": 2, "/logo.png": 1, "/api/data": 2
    }
    assert await origin_hits("only_assets") == {
        "/page": 2, "/site.css": 1, "/logo.png": 1, "/api/data": 1
    }


@async_test()
async def test_include_and_exclude_paths() -> None:
    """include_paths limits the cache to matching paths; exclude_paths wins; bypassed requests
    say fwd=bypass."""
    async with proxied(
        dict(ROUTES), include_paths=["/api/*", "GET *.css"], exclude_paths=["/api/data"]
    ) as (origin, proxy):
        for _ in range(2):
            for path in ROUTES:
                response = await get(proxy.port, path)
        assert cache_status(response)[1]["fwd"] == "bypass"  # /api/data, excluded
        assert {path: origin.requests[path] for path in ROUTES} == {
            "/page": 2, "/site.css": 1, "/logo.png": 2, "/api/data": 2
        }


@async_test()
async def test_forward_get_only_answers_405_with_allow() -> None:
    async with proxied(dict(ROUTES), forward_get_only=True) as (origin, proxy):
        response = await fetch(proxy.port, "POST", "/page", body=b"data")
        assert response.status == 405
        assert response.get("allow") == "GET, HEAD"
        assert (await get(proxy.port, "/page")).status == 200
        assert origin.requests["/page"] == 1


@async_test()
async def test_404_negative_cache_with_its_own_ttl() -> None:
    """404s are cached (at most cache_404_ttl of heuristic freshness when the origin gives
    none) and expire apart from cache_ttl; cache_404_capacity = 0 turns this off."""
    # Last modified long ago: the heuristic (10% of that) is more than either ceiling.
    missing = Reply(404, [("Last-Modified", "Mon, 01 Jan 2001 00:00:00 GMT")], b"missing\n")
    async with proxied({"/nope": missing}, cache_404_ttl=1, cache_ttl=60) as (origin, proxy):
        first = await get(proxy.port, "/nope")
        assert first.status == 404 and "stored" in cache_status(first)[1]
        second = await get(proxy.port, "/nope")
        assert second.status == 404 and "hit" in cache_status(second)[1]
        assert origin.requests["/nope"] == 1
        await asyncio.sleep(1.1)
        await get(proxy.port, "/nope")
        assert origin.requests["/nope"] == 2

    async with proxied({"/nope": missing}, cache_404_capacity=0) as (origin, proxy):
        await get(proxy.port, "/nope")
        await get(proxy.port, "/nope")
        assert origin.requests["/nope"] == 2


@async_test()
async def test_custom_cache_key_function() -> None:
    """create_proxy(config, cache_key=fn): fn(RequestInfo) replaces the key; here the query
    is ignored, and invalidate() matches the custom key."""
    seen: list[RequestInfo] = []

    def path_only(info: RequestInfo) -> str:
        seen.append(info)
        return f"page:{info.path}"

    async with TestOrigin({"/page": typed("text/html")}) as origin:
        config = proxy_config(origin.port)
        async with create_proxy(config, cache_key=path_only) as proxy:
            await get(proxy.port, "/page?utm=1")
            hit = await get(proxy.port, "/page?utm=2")
            assert "hit" in cache_status(hit)[1]
            assert origin.requests["/page"] == 1
            assert (seen[0].method, seen[0].path, seen[0].query) == ("GET", "/page", "utm=1")
            assert ("host", "phantom.test") in seen[0].headers
            assert proxy.cache.invalidate("page:/page") == 1
            await get(proxy.port, "/page")
            assert origin.requests["/page"] == 2


@async_test()
async def test_filesystem_mode_across_a_restart(tmp_path: Path) -> None:
    """cache_storage_mode = "filesystem": bodies in files under cache_directory, served from
    there (identity and brotli clients); metadata is in memory, so a restart starts empty and
    removes the previous run's files."""
    root = tmp_path / "cache"
    directory = root / str(os.getpid())  # each process has its own subdirectory
    body = b"<p>stored on disk</p>" * 100
    options = {"cache_storage_mode": "filesystem", "cache_directory": str(root)}
    async with TestOrigin({"/d": typed("text/html", body)}) as origin:
        async with running_proxy(origin.port, **options) as proxy:
            await get(proxy.port, "/d")
            [name] = os.listdir(directory)
            assert len(name) == 69  # sha256 hex + ".body"
            plain = await get(proxy.port, "/d")
            assert "hit" in cache_status(plain)[1] and plain.body == body
            coded = await get(proxy.port, "/d", [("Accept-Encoding", "br")])
            assert brotli.decompress(coded.body) == body
            assert (directory / name).read_bytes() == coded.body
        assert len(os.listdir(directory)) == 1  # left behind by the stopped proxy

        async with running_proxy(origin.port, **options) as proxy:
            assert os.listdir(directory) == []  # orphans removed at start
            first = await get(proxy.port, "/d")
            assert cache_status(first)[1]["fwd"] == "uri-miss"
            assert "hit" in cache_status(await get(proxy.port, "/d"))[1]
            assert proxy.cache.invalidate("*") == 1
            assert os.listdir(directory) == []
        assert origin.requests["/d"] == 2
