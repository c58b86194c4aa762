"""The rest of RFC 9111 through the running proxy, over real sockets: preconditions the
cache evaluates (412, 304 by Date), a 304 that matches nothing, stored errors, max-stale with
``cache_stale_keep``, Vary normalisation, Surrogate-Control and CDN-Cache-Control."""

from __future__ import annotations

import asyncio
import email.utils
import time

from conftest import async_test, cache_status, get, proxied
from origin import OriginRequest, Reply

LAST_MODIFIED = "Mon, 01 Jan 2024 00:00:00 GMT"
STORED = Reply(
    200,
    [("Cache-Control", "max-age=60"), ("ETag", '"v1"'), ("Last-Modified", LAST_MODIFIED)],
    b"the body\n",
)


def http_date(offset: float = 0.0) -> str:
    return email.utils.formatdate(time.time() + offset, usegmt=True)


# --------------------------------------------------------------------------- preconditions


@async_test()
async def test_failed_preconditions_are_412_from_the_cache() -> None:
    """RFC 9110 §13.1.1, §13.1.4, §13.2.2: If-Match without the stored strong ETag, or
    If-Unmodified-Since before the stored Last-Modified, is answered 412 by the cache; the
    origin is not asked. Matching ones get the stored 200."""
    async with proxied({"/c": STORED}) as (origin, proxy):
        await get(proxy.port, "/c")
        for headers in (
            [("If-Match", '"v2"')],
            [("If-Match", 'W/"v1"')],
            [("If-Unmodified-Since", "Sun, 31 Dec 2023 00:00:00 GMT")],
        ):
            failed = await get(proxy.port, "/c", headers)
            assert (failed.status, failed.body) == (412, b""), headers
            assert "hit" in cache_status(failed)[1]
        for headers in (
            [("If-Match", '"v1"')],
            [("If-Match", "*")],
            [("If-Unmodified-Since", LAST_MODIFIED)],
        ):
            passed = await get(proxy.port, "/c", headers)
            assert (passed.status, passed.body) == (200, b"the body\n"), headers
        assert origin.requests["/c"] == 1


@async_test()
async def test_if_modified_since_is_compared_with_date_without_last_modified() -> None:
    """RFC 9111 §4.3.2: a stored response without Last-Modified is judged by its Date."""
    sent = http_date(-10)
    reply = Reply(200, [("Cache-Control", "max-age=60"), ("Date", sent)], b"dated\n")
    async with proxied({"/d": reply}) as (origin, proxy):
        await get(proxy.port, "/d")
        current = await get(proxy.port, "/d", [("If-Modified-Since", http_date())])
        assert current.status == 304
        older = await get(proxy.port, "/d", [("If-Modified-Since", http_date(-1000))])
        assert (older.status, older.body) == (200, b"dated\n")
        assert origin.requests["/d"] == 1


# --------------------------------------------------------------------------- 304 recovery


@async_test()
async def test_a_304_that_matches_nothing_is_retried_once_without_conditions() -> None:
    """RFC 9111 §4.3.4: a 304 that selects no stored response (another ETag) must not update
    it; phantom asks once more without conditions and relays (and stores) that answer instead
    of failing the client's unconditional request."""
    asked: list[str | None] = []

    def origin_handler(request: OriginRequest) -> Reply:
        asked.append(request.get("if-none-match"))
        if request.has("if-none-match"):
            return Reply(304, [("ETag", '"v2"'), ("Cache-Control", "max-age=60")])
        version = "v1" if len(asked) == 1 else "v2"
        return Reply(
            200,
            [("Cache-Control", "max-age=0" if version == "v1" else "max-age=60"),
             ("ETag", f'"{version}"')],
            f"body {version}\n".encode(),
        )

    async with proxied({"/r": origin_handler}) as (_, proxy):
        assert (await get(proxy.port, "/r")).body == b"body v1\n"
        response = await get(proxy.port, "/r")
        assert (response.status, response.body) == (200, b"body v2\n")
        assert asked == [None, '"v1"', None]
        hit = await get(proxy.port, "/r")
        assert hit.body == b"body v2\n" and "hit" in cache_status(hit)[1]


@async_test()
async def test_a_client_conditional_is_retried_as_the_client_sent_it() -> None:
    """RFC 9111 §4.3.4: after a 304 that matches nothing, the retry carries the client's own
    conditionals (and no stored ones): its 304 is the client's answer."""
    asked: list[str | None] = []

    def origin_handler(request: OriginRequest) -> Reply:
        asked.append(request.get("if-none-match"))
        if request.has("if-none-match"):
            return Reply(304, [("ETag", '"v2"')])
        return Reply(200, [("Cache-Control", "max-age=0"), ("ETag", '"v1"')], b"v1\n")

    async with proxied({"/r": origin_handler}) as (_, proxy):
        await get(proxy.port, "/r")
        response = await get(proxy.port, "/r", [("If-None-Match", '"v2"')])
        assert response.status == 304 and response.get("etag") == '"v2"'
        assert asked == [None, '"v1"', '"v2"']


@async_test()
async def test_a_second_304_that_matches_nothing_is_a_502() -> None:
    """A backend that answers 304 to an unconditional request breaks RFC 9110 §15.4.5: the
    client gets a 502 and phantom keeps serving."""

    answers = iter(
        [
            Reply(200, [("Cache-Control", "max-age=0"), ("ETag", '"v1"')], b"v1\n"),
            Reply(304, [("ETag", '"other"')]),  # to the conditional revalidation
            Reply(304, [("ETag", '"other"')]),  # to the unconditional retry: broken
            Reply(200, [("Cache-Control", "max-age=0"), ("ETag", '"v1"')], b"v1\n"),
        ]
    )
    async with proxied({"/r": lambda _: next(answers)}) as (origin, proxy):
        await get(proxy.port, "/r")
        response = await get(proxy.port, "/r")
        assert response.status == 502
        assert origin.requests["/r"] == 3
        assert (await get(proxy.port, "/r")).status == 200


# --------------------------------------------------------------------------- stored errors


@async_test()
async def test_a_5xx_with_explicit_freshness_is_served_from_the_cache() -> None:
    """RFC 9111 §3, §4.2: a 503 with max-age is stored and reused while fresh; one without
    explicit freshness is not stored."""
    routes = {
        "/down": Reply(503, [("Cache-Control", "max-age=60")], b"maintenance\n"),
        "/broken": Reply(500, [("Last-Modified", LAST_MODIFIED)], b"oops\n"),
    }
    async with proxied(routes) as (origin, proxy):
        for _ in range(2):
            assert (await get(proxy.port, "/down")).body == b"maintenance\n"
            assert (await get(proxy.port, "/broken")).status == 500
        hit = await get(proxy.port, "/down")
        assert hit.status == 503 and "hit" in cache_status(hit)[1]
        assert (origin.requests["/down"], origin.requests["/broken"]) == (1, 2)


# --------------------------------------------------------------------------- max-stale


@async_test()
async def test_max_stale_is_served_from_an_entry_kept_past_expiry() -> None:
    """RFC 9111 §5.2.1.2: ``max-stale`` accepts a stale response; ``cache_stale_keep`` keeps
    an expired entry without validators long enough for it (and without it, it is gone)."""
    reply = Reply(200, [("Cache-Control", "max-age=1")], b"short-lived\n")
    for keep, served in ((60, True), (0, False)):
        async with proxied({"/s": reply}, cache_stale_keep=keep) as (origin, proxy):
            await get(proxy.port, "/s")
            await asyncio.sleep(1.2)
            response = await get(proxy.port, "/s", [("Cache-Control", "max-stale=30")])
            assert response.body == b"short-lived\n"
            params = cache_status(response)[1]
            if served:
                assert "hit" in params and params.get("detail") == "max-stale", params
                assert origin.requests["/s"] == 1
            else:
                assert origin.requests["/s"] == 2, params


# --------------------------------------------------------------------------- Vary


@async_test()
async def test_vary_accept_language_ignores_spelling() -> None:
    """RFC 9111 §4.1: ``en-US, fr;q=0.5`` and ``fr;q=0.5,EN-us`` select the same variant."""
    reply = Reply(200, [("Cache-Control", "max-age=60"), ("Vary", "Accept-Language")], b"en\n")
    async with proxied({"/v": reply}) as (origin, proxy):
        await get(proxy.port, "/v", [("Accept-Language", "en-US, fr;q=0.5")])
        again = await get(proxy.port, "/v", [("Accept-Language", "fr;q=0.5,EN-us")])
        assert "hit" in cache_status(again)[1]
        other = await get(proxy.port, "/v", [("Accept-Language", "fr, en-US;q=0.5")])
        assert cache_status(other)[1].get("fwd") == "vary-miss"
        assert origin.requests["/v"] == 2


# --------------------------------------------------------------------------- Surrogate-Control


@async_test()
async def test_surrogate_control_decides_storage_and_never_reaches_clients() -> None:
    """Edge Architecture §2.2, §3: Surrogate-Control's max-age wins over Cache-Control (here
    no-store, meant for browsers) and the header is removed from every answer, relayed or
    from the cache; its no-store keeps a public response out of the cache."""
    routes = {
        "/cdn": Reply(
            200,
            [("Cache-Control", "no-store"), ("Surrogate-Control", "max-age=60")],
            b"edge-cached\n",
        ),
        "/nocdn": Reply(
            200, [("Cache-Control", "max-age=60"), ("Surrogate-Control", "no-store")], b"x\n"
        ),
    }
    async with proxied(routes) as (origin, proxy):
        for _ in range(2):
            for path in routes:
                response = await get(proxy.port, path)
                assert response.status == 200 and not response.has("surrogate-control")
        hit = await get(proxy.port, "/cdn")
        assert hit.get("cache-control") == "no-store" and "hit" in cache_status(hit)[1]
        assert (origin.requests["/cdn"], origin.requests["/nocdn"]) == (1, 2)


@async_test()
async def test_surrogate_control_off_passes_the_header_on_and_ignores_it() -> None:
    """``surrogate_control = false``: Cache-Control alone decides; the header is relayed."""
    reply = Reply(200, [("Cache-Control", "no-store"), ("Surrogate-Control", "max-age=60")])
    async with proxied({"/cdn": reply}, surrogate_control=False) as (origin, proxy):
        for _ in range(2):
            response = await get(proxy.port, "/cdn")
            assert response.get("surrogate-control") == "max-age=60"
        assert origin.requests["/cdn"] == 2


# --------------------------------------------------------------------------- CDN-Cache-Control


@async_test()
async def test_cdn_cache_control_decides_storage_and_is_passed_on() -> None:
    """RFC 9213 §2.1: a valid CDN-Cache-Control stands for Cache-Control in phantom's storage
    (a long CDN max-age beats Cache-Control: no-store, a CDN no-store keeps a fresh response
    out); an invalid one is ignored (§2.2). The field reaches clients on misses and hits."""
    routes = {
        "/cdn": Reply(200, [("Cache-Control", "no-store"), ("CDN-Cache-Control", "max-age=60")]),
        "/nocdn": Reply(200, [("Cache-Control", "max-age=60"), ("CDN-Cache-Control", "no-store")]),
        "/bad": Reply(200, [("Cache-Control", "no-store"), ("CDN-Cache-Control", "max-age=6, &")]),
    }
    async with proxied(routes) as (origin, proxy):
        for _ in range(2):
            for path in routes:
                response = await get(proxy.port, path)
                assert response.has("cdn-cache-control"), path
        hit = await get(proxy.port, "/cdn")
        assert "hit" in cache_status(hit)[1]
        assert hit.get("cdn-cache-control") == "max-age=60"
        assert hit.get("cache-control") == "no-store"
        assert [origin.requests[path] for path in routes] == [1, 2, 2]


@async_test()
async def test_cdn_cache_control_off_ignores_it() -> None:
    """``cdn_cache_control = false``: Cache-Control alone decides; the header is relayed."""
    reply = Reply(200, [("Cache-Control", "no-store"), ("CDN-Cache-Control", "max-age=60")])
    async with proxied({"/cdn": reply}, cdn_cache_control=False) as (origin, proxy):
        for _ in range(2):
            response = await get(proxy.port, "/cdn")
            assert response.get("cdn-cache-control") == "max-age=60"
        assert origin.requests["/cdn"] == 2
