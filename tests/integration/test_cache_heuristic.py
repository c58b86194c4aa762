"""Heuristic freshness through a running proxy (issue 11, item 1): with the default
``cache_heuristic = "last-modified"`` a response that gives no freshness is reused only when it
has Last-Modified, never when it answered a request with Cookie or Authorization or sets a
cookie; "always" and "off" are the two other modes (RFC 9111 §4.2.2)."""

from __future__ import annotations

import email.utils
import time

import pytest
from conftest import async_test, cache_status, fetch, get, proxied
from origin import OriginRequest, Reply

COOKIE = ("Cookie", "session=alice")


def modified_ago(seconds: float) -> tuple[str, str]:
    return ("Last-Modified", email.utils.formatdate(time.time() - seconds, usegmt=True))


def page(name: str, *headers: tuple[str, str]) -> Reply:
    return Reply(200, [("Content-Type", "text/html"), *headers], f"page of {name}\n".encode())


@pytest.mark.parametrize("mode", ["last-modified", "always", "off"])
@async_test()
async def test_a_page_answered_to_a_cookie_is_never_shared(mode: str) -> None:
    """The issue's case: a bare page to ``Cookie: session=alice`` was stored for cache_ttl and
    served as a hit to the next client, cookie or not. Whatever the mode, now it is not, even
    with Last-Modified."""

    def personal(request: OriginRequest) -> Reply:
        return page(request.get("cookie") or "nobody", modified_ago(100_000))

    async with proxied({"/account": personal}, cache_heuristic=mode) as (origin, proxy):
        alice = await get(proxy.port, "/account", [COOKIE])
        assert alice.body == b"page of session=alice\n"
        bob = await get(proxy.port, "/account", [("Cookie", "session=bob")])
        anonymous = await get(proxy.port, "/account")
        assert bob.body == b"page of session=bob\n"
        assert anonymous.body == b"page of nobody\n"
        for response in (alice, bob):
            assert "hit" not in cache_status(response)[1]
        assert origin.requests["/account"] == 3


@async_test()
async def test_a_page_setting_a_cookie_is_never_given_heuristic_freshness() -> None:
    """Even where store_set_cookie lets such a response be stored, a Set-Cookie response
    that gives no freshness is revalidated on every use, never a hit."""
    reply = page("alice", ("Set-Cookie", "session=alice"), modified_ago(100_000))
    async with proxied({"/login": reply}, store_set_cookie=True, cache_heuristic="always") as (
        origin,
        proxy,
    ):
        for _ in range(3):
            response = await get(proxy.port, "/login")
            assert "hit" not in cache_status(response)[1]
        assert origin.requests["/login"] == 3


@async_test()
async def test_bare_responses_are_not_reused_by_default() -> None:
    """The issue's cases: a bare 200, a bare 404 (a dev server's favicon that then appears) and
    a bare 204 standing where a page was: each goes to the origin again."""
    state = {"favicon": False, "empty": True}

    def favicon(request: OriginRequest) -> Reply:
        if state["favicon"]:
            return Reply(200, [("Content-Type", "image/x-icon")], b"icon")
        return Reply(404, [("Content-Type", "text/plain")], b"not yet\n")

    def sometimes_empty(request: OriginRequest) -> Reply:
        return Reply(204) if state["empty"] else page("home")

    routes = {"/bare": page("bare"), "/favicon.ico": favicon, "/home": sometimes_empty}
    async with proxied(routes) as (origin, proxy):
        for _ in range(2):
            response = await get(proxy.port, "/bare")
            assert response.body == b"page of bare\n"
            assert "hit" not in cache_status(response)[1]
        assert origin.requests["/bare"] == 2

        assert (await get(proxy.port, "/favicon.ico")).status == 404
        state["favicon"] = True
        assert (await get(proxy.port, "/favicon.ico")).body == b"icon"

        assert (await get(proxy.port, "/home")).status == 204
        state["empty"] = False
        assert (await get(proxy.port, "/home")).body == b"page of home\n"


@async_test()
async def test_last_modified_gives_a_tenth_of_its_age_at_most_cache_ttl() -> None:
    """RFC 9111 §4.2.2: 10% of (Date - Last-Modified): 100 s for a page last changed 1,000 s
    ago, at most cache_ttl (30 s) for one changed long ago."""
    routes = {
        "/recent": page("recent", modified_ago(1_000)),
        "/old": page("old", modified_ago(100_000)),
    }
    async with proxied(routes, cache_ttl=300) as (origin, proxy):
        await get(proxy.port, "/recent")
        ttl = cache_status(await get(proxy.port, "/recent"))[1]
        assert "hit" in ttl and 95 <= int(ttl["ttl"] or 0) <= 100, ttl
    async with proxied(routes, cache_ttl=30) as (origin, proxy):
        await get(proxy.port, "/old")
        ttl = cache_status(await get(proxy.port, "/old"))[1]
        assert "hit" in ttl and 25 <= int(ttl["ttl"] or 0) <= 30, ttl


@async_test()
async def test_heuristic_modes_always_and_off() -> None:
    """"always" gives a bare page cache_ttl (the behaviour before cache_heuristic); "off"
    gives no heuristic freshness at all: a page with Last-Modified is revalidated on each use.
    The backend's explicit freshness counts in every mode."""
    routes = {
        "/bare": page("bare"),
        "/modified": page("modified", modified_ago(100_000)),
        "/explicit": page("explicit", ("Cache-Control", "max-age=60")),
    }
    async with proxied(routes, cache_heuristic="always") as (origin, proxy):
        for path in routes:
            await get(proxy.port, path)
            assert "hit" in cache_status(await get(proxy.port, path))[1], path
    async with proxied(routes, cache_heuristic="off") as (origin, proxy):
        for path in routes:
            await get(proxy.port, path)
            await get(proxy.port, path)
        assert dict(origin.requests) == {"/bare": 2, "/modified": 2, "/explicit": 1}
        assert origin.requests_for("/modified")[1].has("if-modified-since")


@async_test()
async def test_no_stale_copy_of_a_personal_page_stands_in_for_an_error() -> None:
    """serve_stale_on_error is reuse the origin did not ask for: a page answered to a cookie,
    stored only because it can be revalidated, is never served to another client when the
    origin then fails."""
    state = {"down": False}

    def personal(request: OriginRequest) -> Reply:
        if state["down"]:
            return Reply(503, [], b"down\n")
        return page(request.get("cookie") or "nobody", modified_ago(100_000))

    async with proxied({"/account": personal}, serve_stale_on_error=300) as (origin, proxy):
        await fetch(proxy.port, "GET", "/account", [COOKIE])
        state["down"] = True
        response = await get(proxy.port, "/account")
        assert (response.status, response.body) == (503, b"down\n")
