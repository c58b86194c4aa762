"""The response cache, observed from outside: what the origin is asked, what the client gets,
and the `Cache-Status` / `Age` headers (issue 2, "The cache")."""

from __future__ import annotations

import asyncio

import pytest
from conftest import (
    RawClient,
    async_test,
    build_request,
    cache_status,
    fetch,
    get,
    proxied,
    sha256,
)
from origin import OriginRequest, Reply, payload, payload_chunks


def counting_reply(cache_control: str | None, *extra: tuple[str, str]) -> Reply:
    headers: list[tuple[str | bytes, str | bytes | int]] = [("Content-Type", "text/plain")]
    if cache_control is not None:
        headers.append(("Cache-Control", cache_control))
    headers += list(extra)
    return Reply(200, headers, b"cacheable body\n")


def assert_miss(response_status: tuple[str, dict[str, str | None]], *, stored: bool) -> None:
    name, params = response_status
    assert name == "phantom", response_status
    assert "hit" not in params, response_status
    assert params.get("fwd") in ("uri-miss", "miss"), response_status
    assert ("stored" in params) is stored, response_status


def assert_hit(response_status: tuple[str, dict[str, str | None]]) -> int:
    name, params = response_status
    assert name == "phantom", response_status
    assert "hit" in params and "fwd" not in params, response_status
    ttl = params.get("ttl")
    assert ttl is not None and ttl.lstrip("-").isdigit(), response_status
    return int(ttl)


@async_test()
async def test_miss_then_hit_origin_asked_once() -> None:
    async with proxied({"/a": counting_reply("max-age=60")}) as (origin, proxy):
        first = await get(proxy.port, "/a")
        assert (first.status, first.body) == (200, b"cacheable body\n")
        assert_miss(cache_status(first), stored=True)

        second = await get(proxy.port, "/a")
        assert (second.status, second.body) == (200, b"cacheable body\n")
        ttl = assert_hit(cache_status(second))
        assert 55 <= ttl <= 60, ttl
        age = second.get("age")
        assert age is not None and age.isdigit() and int(age) <= 2, age
        assert second.get("content-type") == "text/plain"
        assert second.content_length == len(b"cacheable body\n")
        assert origin.requests["/a"] == 1


@async_test()
async def test_hit_age_grows_and_ttl_shrinks() -> None:
    async with proxied({"/a": counting_reply("max-age=60")}) as (origin, proxy):
        await get(proxy.port, "/a")
        await asyncio.sleep(1.2)
        hit = await get(proxy.port, "/a")
        assert int(hit.get("age") or "-1") >= 1, hit.head
        assert assert_hit(cache_status(hit)) <= 59
        assert origin.requests["/a"] == 1


@async_test()
async def test_hits_on_one_keep_alive_connection() -> None:
    async with proxied({"/a": counting_reply("max-age=60")}) as (origin, proxy):
        async with await RawClient.connect(proxy.port) as client:
            for _ in range(5):
                response = await client.request("GET", "/a")
                assert response.body == b"cacheable body\n"
        assert origin.requests["/a"] == 1


@pytest.mark.parametrize(
    ("cache_control", "response_extra", "request_headers"),
    [
        ("no-store", [], []),
        ("no-store, max-age=60", [], []),
        ("private, max-age=60", [], []),
        ("max-age=60", [("Set-Cookie", "session=abc; Path=/")], []),
        ("max-age=60", [], [("Authorization", "Bearer secret-token")]),
    ],
    ids=["no-store", "no-store+max-age", "private", "set-cookie", "authorization"],
)
@async_test()
async def test_responses_not_stored(
    cache_control: str,
    response_extra: list[tuple[str, str]],
    request_headers: list[tuple[str, str]],
) -> None:
    async with proxied({"/p": counting_reply(cache_control, *response_extra)}) as (origin, proxy):
        first = await get(proxy.port, "/p", request_headers)
        second = await get(proxy.port, "/p", request_headers)
        assert origin.requests["/p"] == 2, "the response was served from the cache"
        assert first.status == second.status == 200
        assert_miss(cache_status(first), stored=False)
        assert_miss(cache_status(second), stored=False)
        assert first.get_all("set-cookie") == [v for n, v in response_extra if n == "Set-Cookie"]


@pytest.mark.parametrize(
    ("cache_control", "response_extra", "request_headers"),
    [
        ("public, max-age=60", [("Set-Cookie", "theme=dark; Path=/")], []),
        ("s-maxage=60", [("Set-Cookie", "theme=dark; Path=/")], []),
        ("public, max-age=60", [], [("Authorization", "Bearer t")]),
        ("s-maxage=60", [], [("Authorization", "Bearer t")]),
    ],
    ids=[
        "set-cookie+public",
        "set-cookie+s-maxage",
        "authorization+public",
        "authorization+s-maxage",
    ],
)
@async_test()
async def test_explicitly_shareable_responses_are_stored(
    cache_control: str,
    response_extra: list[tuple[str, str]],
    request_headers: list[tuple[str, str]],
) -> None:
    async with proxied({"/s": counting_reply(cache_control, *response_extra)}) as (origin, proxy):
        first = await get(proxy.port, "/s", request_headers)
        assert_miss(cache_status(first), stored=True)
        second = await get(proxy.port, "/s", request_headers)
        assert_hit(cache_status(second))
        assert second.body == b"cacheable body\n"
        assert origin.requests["/s"] == 1


@async_test()
async def test_explicit_freshness_overrides_cache_ttl() -> None:
    # origin freshness longer than cache_ttl: still fresh after cache_ttl has passed
    async with proxied({"/long-max-age": counting_reply("max-age=60")}, cache_ttl=1) as (
        origin,
        proxy,
    ):
        await get(proxy.port, "/long-max-age")
        await asyncio.sleep(1.3)
        hit = await get(proxy.port, "/long-max-age")
        assert assert_hit(cache_status(hit)) >= 50
        assert origin.requests["/long-max-age"] == 1

    # origin freshness shorter than cache_ttl (s-maxage wins over max-age in a shared cache)
    routes = {
        "/short-max-age": counting_reply("max-age=1"),
        "/s-maxage-wins": counting_reply("max-age=60, s-maxage=1"),
    }
    async with proxied(routes, cache_ttl=60) as (origin, proxy):
        for path in routes:
            await get(proxy.port, path)
        hit = await get(proxy.port, "/s-maxage-wins")
        assert assert_hit(cache_status(hit)) <= 1
        await asyncio.sleep(1.3)
        for path in routes:
            response = await get(proxy.port, path)
            assert "hit" not in cache_status(response)[1], (path, response.head)
        assert dict(origin.requests) == {"/short-max-age": 2, "/s-maxage-wins": 2}


@async_test()
async def test_cache_ttl_applies_only_without_explicit_freshness() -> None:
    """cache_heuristic = "always": a response that gives no freshness gets cache_ttl."""
    routes = {"/plain": counting_reply(None), "/explicit": counting_reply("max-age=60")}
    async with proxied(routes, cache_ttl=60, cache_heuristic="always") as (origin, proxy):
        for _ in range(2):
            for path in routes:
                await get(proxy.port, path)
        hit = await get(proxy.port, "/plain")
        assert 55 <= assert_hit(cache_status(hit)) <= 60
        assert dict(origin.requests) == {"/plain": 1, "/explicit": 1}


@async_test()
async def test_cache_ttl_zero_does_not_reuse_responses_without_explicit_freshness() -> None:
    routes = {"/plain": counting_reply(None), "/explicit": counting_reply("max-age=60")}
    async with proxied(routes, cache_ttl=0) as (origin, proxy):
        for _ in range(3):
            for path in routes:
                response = await get(proxy.port, path)
                assert response.status == 200
        assert dict(origin.requests) == {"/plain": 3, "/explicit": 1}


@async_test()
async def test_head_answered_from_stored_get() -> None:
    body = b"stored for head\n" * 10
    reply = Reply(200, [("Cache-Control", "max-age=60"), ("Content-Type", "text/plain")], body)
    async with proxied({"/h": reply}) as (origin, proxy):
        await get(proxy.port, "/h")
        async with await RawClient.connect(proxy.port) as client:
            head = await client.request("HEAD", "/h")
            assert head.status == 200
            assert head.content_length == len(body)
            assert head.get("content-type") == "text/plain"
            assert_hit(cache_status(head))
            # no body bytes after the HEAD answer: the next response on the connection parses
            again = await client.request("GET", "/h")
            assert again.body == body
        assert [r.method for r in origin.log] == [b"GET"]


@async_test()
async def test_post_never_cached_and_never_answers_a_get() -> None:
    def post_reply(request: OriginRequest) -> Reply:
        return Reply(200, [("Cache-Control", "public, max-age=60")], b"post:" + request.body)

    async with proxied({"/form": post_reply}) as (origin, proxy):
        first = await fetch(proxy.port, "POST", "/form", body=b"one")
        second = await fetch(proxy.port, "POST", "/form", body=b"two")
        assert (first.body, second.body) == (b"post:one", b"post:two")
        assert "hit" not in cache_status(second)[1]
        got = await get(proxy.port, "/form")
        assert got.body == b"post:"  # from the origin, not a stored POST answer
        assert [r.method for r in origin.log] == [b"POST", b"POST", b"GET"]


@async_test()
async def test_object_larger_than_cache_max_object_bytes_streams_and_is_not_stored() -> None:
    size = 1024 * 1024 + 5
    big = payload(size, seed=7)
    chunked_sha = sha256(b"".join(payload_chunks(size, seed=8, chunk=100_000)))

    def chunked(request: OriginRequest) -> Reply:
        return Reply(200, [("Cache-Control", "max-age=60")], payload_chunks(size, 8, 100_000))

    routes = {
        "/big": Reply(200, [("Cache-Control", "max-age=60")], big),
        "/big-chunked": chunked,
        "/small": Reply(200, [("Cache-Control", "max-age=60")], b"small"),
    }
    async with proxied(routes, cache_max_object_bytes=64 * 1024) as (origin, proxy):
        for _ in range(2):
            response = await get(proxy.port, "/big")
            assert response.complete and len(response.body) == size
            assert response.sha256 == sha256(big)
            assert "hit" not in cache_status(response)[1]
            assert "stored" not in cache_status(response)[1], "Content-Length > max object size"

            response = await get(proxy.port, "/big-chunked")
            assert response.complete and response.sha256 == chunked_sha
            assert "hit" not in cache_status(response)[1]

            await get(proxy.port, "/small")
        assert dict(origin.requests) == {"/big": 2, "/big-chunked": 2, "/small": 1}


@async_test()
async def test_cache_bounded_by_max_entries_and_max_bytes() -> None:
    routes = {f"/{i}": Reply(200, [("Cache-Control", "max-age=60")], b"x" * 1000) for i in range(6)}
    async with proxied(routes, cache_max_entries=2) as (origin, proxy):
        for i in range(3):
            await get(proxy.port, f"/{i}")
        assert len(proxy.cache) == 2
        for i in range(3):
            await get(proxy.port, f"/{i}")
        assert sum(origin.requests.values()) > 3, "three entries served with room for two"
    async with proxied(routes, cache_max_bytes=3500) as (origin, proxy):
        for i in range(6):
            response = await get(proxy.port, f"/{i}")
            assert response.body == b"x" * 1000
        assert 1 <= len(proxy.cache) <= 3
        assert proxy.cache.total_bytes <= 3500


@async_test()
async def test_cache_key_has_host_path_and_query() -> None:
    async with proxied({"/k": counting_reply("max-age=60")}) as (origin, proxy):
        await get(proxy.port, "/k?a=1", [("Host", "one.test")])
        await get(proxy.port, "/k?a=1", [("Host", "ONE.test")])  # host is case-insensitive
        assert origin.requests["/k"] == 1
        await get(proxy.port, "/k?a=2", [("Host", "one.test")])
        assert origin.requests["/k"] == 2
        await get(proxy.port, "/k?a=1", [("Host", "two.test")])
        assert origin.requests["/k"] == 3


@async_test()
async def test_invalidate_pattern_and_invalidate_all() -> None:
    routes = {p: counting_reply("max-age=60") for p in ("/a1", "/a2", "/b", "/q")}
    async with proxied(routes) as (origin, proxy):
        for target in ("/a1", "/a2", "/b", "/q?x=1", "/q?x=2"):
            await get(proxy.port, target)
        for target in ("/a1", "/a2", "/b", "/q?x=1", "/q?x=2"):
            assert_hit(cache_status(await get(proxy.port, target)))

        assert proxy.cache.invalidate("GET:/a*") == 2
        assert proxy.cache.invalidate("GET:/a*") == 0
        assert proxy.cache.invalidate("GET:/q?x=1") == 1
        response = await get(proxy.port, "/a1")
        assert_miss(cache_status(response), stored=True)
        assert_hit(cache_status(await get(proxy.port, "/b")))
        assert_hit(cache_status(await get(proxy.port, "/q?x=2")))
        assert_miss(cache_status(await get(proxy.port, "/q?x=1")), stored=True)
        assert dict(origin.requests) == {"/a1": 2, "/a2": 1, "/b": 1, "/q": 3}

        # stored now: /a1, /b, /q?x=1, /q?x=2
        assert proxy.cache.invalidate_all() == 4
        assert proxy.cache.invalidate_all() == 0
        assert_miss(cache_status(await get(proxy.port, "/b")), stored=True)
        assert origin.requests["/b"] == 2


@async_test()
async def test_get_and_head_with_a_body_are_neither_stored_nor_answered_from_the_cache() -> None:
    """Issue 11 item 2 ("fat GET" poisoning): a GET or HEAD carrying a body (Content-Length
    above 0, or chunked) is forwarded with its body, and its answer, which may depend on that
    body, is neither stored for others nor taken from what is stored; on a fresh connection
    (where the fast lane reads first) and pipelined behind a fast-lane hit alike."""

    def by_body(request: OriginRequest) -> Reply:
        return Reply(
            200,
            [("Content-Type", "text/html"), ("Cache-Control", "max-age=60")],
            b"page for [" + request.body + b"]",
        )

    async with proxied({"/p": by_body}) as (origin, proxy):
        evil = b"<script src=//evil.example>"
        poisoned = await fetch(proxy.port, "GET", "/p", body=evil)
        assert poisoned.body == b"page for [" + evil + b"]"
        assert cache_status(poisoned)[1].get("fwd") == "bypass"
        clean = await get(proxy.port, "/p")
        assert clean.body == b"page for []"
        assert_miss(cache_status(clean), stored=True)
        assert_hit(cache_status(await get(proxy.port, "/p")))

        for method, kwargs in (
            ("GET", {"body": b"x=1"}),
            ("GET", {"chunks": [b"x=", b"2"]}),
            ("HEAD", {"body": b"x=3"}),
        ):
            response = await fetch(proxy.port, method, "/p", **kwargs)
            assert "hit" not in cache_status(response)[1], (method, kwargs)
        async with await RawClient.connect(proxy.port) as client:
            await client.send(
                build_request("GET", "/p") + build_request("GET", "/p", body=b"x=4")
            )
            assert_hit(cache_status(await client.read_response()))
            fat = await client.read_response()
            assert fat.body == b"page for [x=4]" and "hit" not in cache_status(fat)[1]
        assert [r.body for r in origin.requests_for("/p")] == [
            evil, b"", b"x=1", b"x=2", b"x=3", b"x=4"
        ]
        assert_hit(cache_status(await get(proxy.port, "/p")))
