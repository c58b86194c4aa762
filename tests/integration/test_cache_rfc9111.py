"""RFC 9111 behaviour of the running proxy over real sockets: request coalescing, revalidation
and 304 flows, Vary variants, invalidation, stale-while-revalidate, stale-if-error."""

from __future__ import annotations

import asyncio
import time

from conftest import RawClient, async_test, build_request, cache_status, fetch, get, proxied
from origin import OriginRequest, Reply


def versioned(version: str, cache_control: str) -> Reply:
    headers: list[tuple[str | bytes, str | bytes | int]] = [
        ("Cache-Control", cache_control),
        ("ETag", f'"{version}"'),
        ("Content-Type", "text/plain"),
    ]
    return Reply(200, headers, f"body {version}\n".encode())


# --------------------------------------------------------------------------- coalescing


@async_test()
async def test_concurrent_misses_reach_a_slow_origin_once() -> None:
    """50 concurrent misses for one URL on a 300 ms origin: one origin request, everyone gets
    the body; the waiters say `collapsed` in Cache-Status."""
    reply = Reply(200, [("Cache-Control", "max-age=60")], b"slow body\n", delay=0.3)
    async with proxied({"/slow": reply}) as (origin, proxy):
        responses = await asyncio.gather(*(get(proxy.port, "/slow") for _ in range(50)))
        assert origin.requests["/slow"] == 1
        assert all(r.status == 200 and r.body == b"slow body\n" for r in responses)
        statuses = [cache_status(r)[1] for r in responses]
        assert sum("stored" in s for s in statuses) == 1
        assert sum("collapsed" in s for s in statuses) == 49


@async_test()
async def test_waiters_forward_on_their_own_when_the_response_was_not_storable() -> None:
    """Coalescing must not turn a private answer into a shared one: when the leader's response
    is not storable, each waiter asks the origin itself."""
    reply = Reply(200, [("Cache-Control", "no-store")], b"private\n", delay=0.3)
    async with proxied({"/p": reply}) as (origin, proxy):
        responses = await asyncio.gather(*(get(proxy.port, "/p") for _ in range(5)))
        assert all(r.body == b"private\n" for r in responses)
        assert origin.requests["/p"] == 5


@async_test()
async def test_a_url_known_not_storable_is_not_coalesced() -> None:
    """Hit-for-miss: once a URL's response was not stored, concurrent misses on it go to the
    origin side by side instead of waiting for one another's response head, until a response
    is stored again. (The origin answers after 0.5 s: waiters arrive at least that late.)"""
    arrivals: list[float] = []
    cacheable = False

    def slow(request: OriginRequest) -> Reply:
        arrivals.append(time.monotonic())
        control = "max-age=60" if cacheable else "no-store"
        return Reply(200, [("Cache-Control", control)], b"body\n", delay=0.5)

    async def burst(port: int) -> float:
        arrivals.clear()
        await asyncio.gather(*(get(port, "/p") for _ in range(5)))
        assert len(arrivals) == 5
        return max(arrivals) - min(arrivals)

    async with proxied({"/p": slow}) as (_, proxy):
        assert await burst(proxy.port) >= 0.5  # nothing known yet: four waited for the first
        assert await burst(proxy.port) < 0.5  # known not storable: side by side
        cacheable = True
        assert "stored" in cache_status(await get(proxy.port, "/p"))[1]
        hits = await asyncio.gather(*(get(proxy.port, "/p") for _ in range(3)))
        assert all("hit" in cache_status(r)[1] for r in hits)


# --------------------------------------------------------------------------- conditionals


@async_test()
async def test_client_conditionals_answered_304_from_a_fresh_entry() -> None:
    """RFC 9111 §4.3.2 / RFC 9110 §13.1: If-None-Match (weak comparison) and
    If-Modified-Since against a fresh stored response give 304 without asking the origin."""
    reply = Reply(
        200,
        [
            ("Cache-Control", "max-age=60"),
            ("ETag", '"v1"'),
            ("Last-Modified", "Mon, 01 Jan 2024 00:00:00 GMT"),
        ],
        b"the body\n",
    )
    async with proxied({"/c": reply}) as (origin, proxy):
        await get(proxy.port, "/c")
        for headers in (
            [("If-None-Match", '"v1"')],
            [("If-None-Match", 'W/"v0", W/"v1"')],
            [("If-Modified-Since", "Mon, 01 Jan 2024 00:00:00 GMT")],
        ):
            response = await get(proxy.port, "/c", headers)
            assert response.status == 304, headers
            assert response.body == b""
            assert response.get("etag") == '"v1"'
            assert "hit" in cache_status(response)[1]
        changed = await get(proxy.port, "/c", [("If-None-Match", '"v0"')])
        assert (changed.status, changed.body) == (200, b"the body\n")
        assert origin.requests["/c"] == 1


@async_test()
async def test_stale_entry_revalidated_by_304_keeps_body_and_takes_new_headers() -> None:
    """RFC 9111 §4.3.1, §4.3.3, §3.2: the stale entry is revalidated with its validator; the
    304 updates stored headers and freshness, the stored body is served."""

    def handler(request: OriginRequest) -> Reply:
        if request.get("if-none-match") == '"v1"':
            headers = [("Cache-Control", "max-age=60"), ("ETag", '"v1"'), ("X-Fresh", "1")]
            return Reply(304, list(headers))
        return versioned("v1", "max-age=0")

    async with proxied({"/r": handler}) as (origin, proxy):
        first = await get(proxy.port, "/r")
        assert cache_status(first)[1].get("stored", "absent") is None

        second = await get(proxy.port, "/r")
        assert origin.last.get("if-none-match") == '"v1"'
        assert (second.status, second.body) == (200, b"body v1\n")
        assert second.get("x-fresh") == "1"
        assert second.get("cache-control") == "max-age=60"
        params = cache_status(second)[1]
        assert params["fwd"] == "stale" and params["fwd-status"] == "304", params
        assert second.content_length == len(b"body v1\n")

        third = await get(proxy.port, "/r")
        assert "hit" in cache_status(third)[1]
        assert (third.body, third.get("x-fresh")) == (b"body v1\n", "1")
        assert origin.requests["/r"] == 2


@async_test()
async def test_revalidation_with_client_conditional_gives_the_client_a_304() -> None:
    """RFC 9111 §4.3.2: the client's If-None-Match is answered from the revalidated entry."""

    def handler(request: OriginRequest) -> Reply:
        if request.get("if-none-match") == '"v1"':
            return Reply(304, [("ETag", '"v1"'), ("Cache-Control", "max-age=0")])
        return versioned("v1", "max-age=0")

    async with proxied({"/r": handler}) as (origin, proxy):
        await get(proxy.port, "/r")
        response = await get(proxy.port, "/r", [("If-None-Match", '"v1"')])
        assert response.status == 304
        assert origin.requests["/r"] == 2


@async_test()
async def test_revalidation_answered_200_replaces_the_entry() -> None:
    """RFC 9111 §4.3.3: a full response to the conditional request replaces the stored one."""
    versions = iter(["v1", "v2"])

    def handler(request: OriginRequest) -> Reply:
        revalidating = request.has("if-none-match")
        return versioned(next(versions), "max-age=60" if revalidating else "max-age=0")

    async with proxied({"/r": handler}) as (origin, proxy):
        assert (await get(proxy.port, "/r")).body == b"body v1\n"
        replaced = await get(proxy.port, "/r")
        assert replaced.body == b"body v2\n"
        assert cache_status(replaced)[1].get("fwd") == "stale"
        hit = await get(proxy.port, "/r")
        assert (hit.body, hit.get("etag")) == (b"body v2\n", '"v2"')
        assert "hit" in cache_status(hit)[1]
        assert origin.requests["/r"] == 2


@async_test()
async def test_head_is_answered_from_the_stored_get() -> None:
    """RFC 9110 §9.3.2: HEAD from a stored GET response: same fields, no body."""
    async with proxied({"/h": versioned("v1", "max-age=60")}) as (origin, proxy):
        await get(proxy.port, "/h")
        head = await fetch(proxy.port, "HEAD", "/h")
        assert head.status == 200 and head.body == b""
        assert head.content_length == len(b"body v1\n")
        assert "hit" in cache_status(head)[1]
        assert origin.requests["/h"] == 1


# --------------------------------------------------------------------------- Vary


@async_test()
async def test_vary_variants_coexist_and_star_never_matches() -> None:
    """RFC 9111 §4.1: one stored response per Accept-Language value; Vary: * is never a hit."""

    def by_language(request: OriginRequest) -> Reply:
        language = request.get("accept-language") or "none"
        return Reply(
            200,
            [("Cache-Control", "max-age=60"), ("Vary", "Accept-Language")],
            f"hello in {language}\n".encode(),
        )

    star = Reply(200, [("Cache-Control", "max-age=60"), ("Vary", "*")], b"star\n")
    async with proxied({"/v": by_language, "/star": star}) as (origin, proxy):
        for language in ("en", "fr", "en", "fr", "en"):
            response = await get(proxy.port, "/v", [("Accept-Language", language)])
            assert response.body == f"hello in {language}\n".encode()
        assert origin.requests["/v"] == 2
        other = await get(proxy.port, "/v", [("Accept-Language", "de")])
        assert cache_status(other)[1]["fwd"] == "vary-miss"

        await get(proxy.port, "/star")
        again = await get(proxy.port, "/star")
        assert cache_status(again)[1]["fwd"] == "vary-miss"
        assert origin.requests["/star"] == 2


# --------------------------------------------------------------------------- invalidation


@async_test()
async def test_post_invalidates_target_and_location() -> None:
    """RFC 9111 §4.4: a successful POST invalidates its target URI and same-origin Location."""
    created = Reply(201, [("Location", "/items/7"), ("Content-Type", "text/plain")], b"made\n")
    async with proxied(
        {
            "/items": lambda r: created if r.method == b"POST" else versioned("list", "max-age=60"),
            "/items/7": versioned("seven", "max-age=60"),
        }
    ) as (origin, proxy):
        await get(proxy.port, "/items")
        await get(proxy.port, "/items/7")
        assert "hit" in cache_status(await get(proxy.port, "/items"))[1]

        posted = await fetch(proxy.port, "POST", "/items", body=b"new")
        assert posted.status == 201
        assert cache_status(posted)[1]["fwd"] == "method"

        assert cache_status(await get(proxy.port, "/items"))[1]["fwd"] == "uri-miss"
        assert cache_status(await get(proxy.port, "/items/7"))[1]["fwd"] == "uri-miss"
        assert origin.requests["/items"] == 3  # GET, POST, GET
        assert origin.requests["/items/7"] == 2


@async_test()
async def test_failed_post_invalidates_nothing() -> None:
    """RFC 9111 §4.4: only non-error responses invalidate."""
    refused = Reply(403, [], b"no\n")
    async with proxied(
        {"/x": lambda r: refused if r.method == b"POST" else versioned("x", "max-age=60")}
    ) as (origin, proxy):
        await get(proxy.port, "/x")
        await fetch(proxy.port, "POST", "/x", body=b"")
        assert "hit" in cache_status(await get(proxy.port, "/x"))[1]


# --------------------------------------------------------------------------- request directives


@async_test()
async def test_only_if_cached_is_504_without_a_stored_response() -> None:
    """RFC 9111 §5.2.1.7: only-if-cached never reaches the origin; nothing stored means 504."""
    async with proxied({"/o": versioned("o", "max-age=60")}) as (origin, proxy):
        only = [("Cache-Control", "only-if-cached")]
        assert (await get(proxy.port, "/o", only)).status == 504
        assert origin.requests["/o"] == 0
        await get(proxy.port, "/o")
        assert (await get(proxy.port, "/o", only)).status == 200
        assert origin.requests["/o"] == 1


@async_test()
async def test_request_no_cache_revalidates_a_fresh_entry() -> None:
    """RFC 9111 §5.2.1.4: no-cache in the request: the stored response is revalidated."""

    def handler(request: OriginRequest) -> Reply:
        if request.get("if-none-match") == '"v1"':
            return Reply(304, [("ETag", '"v1"')])
        return versioned("v1", "max-age=60")

    async with proxied({"/n": handler}) as (origin, proxy):
        await get(proxy.port, "/n")
        response = await get(proxy.port, "/n", [("Cache-Control", "no-cache")])
        assert response.body == b"body v1\n"
        assert cache_status(response)[1]["fwd"] == "request"
        assert origin.last.get("if-none-match") == '"v1"'
        assert origin.requests["/n"] == 2


# --------------------------------------------------------------------------- stale serving


@async_test()
async def test_stale_while_revalidate_serves_stale_and_refreshes_exactly_once() -> None:
    """RFC 5861 §3: within the window, stale responses are served at once and one background
    request refreshes the entry."""
    versions = iter(f"v{i}" for i in range(1, 10))

    def handler(request: OriginRequest) -> Reply:
        reply = versioned(next(versions), "max-age=1, stale-while-revalidate=30")
        reply.delay = 0.2 if request.has("if-none-match") else 0.0
        return reply

    async with proxied({"/swr": handler}) as (origin, proxy):
        await get(proxy.port, "/swr")
        await asyncio.sleep(1.1)
        stale = await asyncio.gather(*(get(proxy.port, "/swr") for _ in range(10)))
        assert all(r.body == b"body v1\n" for r in stale)
        assert all(
            cache_status(r)[1].get("detail") == "stale-while-revalidate" for r in stale
        )
        fresh = await get(proxy.port, "/swr")
        for _ in range(100):  # the refresh takes the origin's 0.2 s
            if fresh.body != b"body v1\n":
                break
            await asyncio.sleep(0.05)
            fresh = await get(proxy.port, "/swr")
        assert fresh.body == b"body v2\n"
        assert "hit" in cache_status(fresh)[1]
        assert origin.requests["/swr"] == 2


@async_test()
async def test_stale_if_error_with_the_origin_stopped() -> None:
    """RFC 5861 §4: the origin is gone (connection refused); the stale copy is served within
    stale-if-error, with Cache-Status saying so."""
    async with proxied({"/e": versioned("v1", "max-age=1, stale-if-error=60")}) as (
        origin,
        proxy,
    ):
        await get(proxy.port, "/e")
        await origin.close()
        await asyncio.sleep(1.1)
        response = await get(proxy.port, "/e")
        assert (response.status, response.body) == (200, b"body v1\n")
        params = cache_status(response)[1]
        assert params["detail"] == "stale-if-error" and params["fwd-status"] == "502", params
        assert int(response.get("age") or 0) >= 1


@async_test()
async def test_serve_stale_on_error_default_window_covers_5xx() -> None:
    """serve_stale_on_error: the default stale-if-error window; a 503 is replaced by the stale
    copy. Without a window the error goes to the client."""
    state = {"down": False}

    def handler(request: OriginRequest) -> Reply:
        if state["down"]:
            return Reply(503, [], b"down\n")
        return versioned("v1", "max-age=0")

    async with proxied({"/e": handler}, serve_stale_on_error=60) as (origin, proxy):
        await get(proxy.port, "/e")
        state["down"] = True
        response = await get(proxy.port, "/e")
        assert (response.status, response.body) == (200, b"body v1\n")
        assert cache_status(response)[1]["fwd-status"] == "503"

    state["down"] = False
    async with proxied({"/e": handler}) as (origin, proxy):
        await get(proxy.port, "/e")
        state["down"] = True
        assert (await get(proxy.port, "/e")).status == 503


@async_test()
async def test_must_revalidate_is_never_served_stale_on_error() -> None:
    """RFC 9111 §5.2.2.2: must-revalidate: an unreachable origin means an error, not stale."""
    async with proxied({"/m": versioned("v1", "max-age=0, must-revalidate")}) as (
        origin,
        proxy,
    ):
        await get(proxy.port, "/m")
        await origin.close()
        assert (await get(proxy.port, "/m")).status == 502


@async_test()
async def test_head_response_updates_the_stored_get() -> None:
    """RFC 9111 §4.3.5: a 200 to HEAD with the stored validator freshens the stored GET's
    headers; with another validator the stored response goes."""
    state = {"etag": '"v1"'}

    def handler(request: OriginRequest) -> Reply:
        if request.method == b"HEAD":
            headers = [("ETag", state["etag"]), ("Cache-Control", "max-age=60"), ("X-New", "1")]
            return Reply(200, list(headers), b"")
        return versioned("v1", "max-age=0")

    async with proxied({"/h": handler}) as (origin, proxy):
        await get(proxy.port, "/h")
        head = await fetch(proxy.port, "HEAD", "/h")
        assert head.status == 200 and head.get("x-new") == "1"
        assert cache_status(head)[1]["fwd-status"] == "200"
        hit = await get(proxy.port, "/h")
        assert "hit" in cache_status(hit)[1]
        assert (hit.body, hit.get("x-new")) == (b"body v1\n", "1")

        await get(proxy.port, "/h", [("Cache-Control", "no-cache")])  # stale v1 again
        state["etag"] = '"v2"'
        await fetch(proxy.port, "HEAD", "/h", [("Cache-Control", "max-age=0")])
        after = await get(proxy.port, "/h")
        assert cache_status(after)[1]["fwd"] == "uri-miss"


@async_test()
async def test_waiters_are_released_as_soon_as_the_answer_is_not_storable() -> None:
    """A long unstorable stream (think server-sent events) must not hold other clients of the
    URL until it ends: once the leader's head says "not storable", they go on their own."""
    chunks = [b"event: tick\n\n"] * 20
    reply = Reply(
        200, [("Cache-Control", "no-store")], iter(chunks), delay=0.2, body_delay=0.1
    )
    async with proxied({"/events": reply}) as (origin, proxy):
        async with await RawClient.connect(proxy.port) as leader:
            await leader.send(build_request("GET", "/events"))
            await asyncio.sleep(0.05)  # the leader's request is on its way
            started = asyncio.get_running_loop().time()
            async with await RawClient.connect(proxy.port) as follower:
                await follower.send(build_request("GET", "/events"))
                head = await follower.read_head()
            waited = asyncio.get_running_loop().time() - started
            assert head.startswith(b"HTTP/1.1 200")
            assert waited < 1.2, f"the follower waited {waited:.2f} s for a 2 s stream"
        assert origin.requests["/events"] == 2
