"""Plain HTTP proxying through phantom over real loopback sockets (issue 2, "HTTP proxying")."""

from __future__ import annotations

import asyncio

from conftest import RawClient, async_test, build_request, fetch, get, proxied, sha256
from origin import OriginRequest, Reply, echo, payload, payload_chunks

NO_STORE = ("Cache-Control", "no-store")


@async_test()
async def test_get_forwarded_with_status_headers_and_body() -> None:
    routes = {
        "/hello": Reply(
            200,
            [("Content-Type", "text/plain"), ("X-Origin", "yes"), NO_STORE],
            b"hello from the origin\n",
        ),
        "/missing": Reply(404, [("Content-Type", "text/plain")], b"not here\n"),
    }
    async with proxied(routes) as (origin, proxy):
        response = await get(proxy.port, "/hello?x=1&y=%20z", [("X-Client", "abc")])
        assert response.status == 200
        assert response.body == b"hello from the origin\n"
        assert response.get("x-origin") == "yes"
        assert response.get("content-type") == "text/plain"
        assert origin.requests["/hello"] == 1
        seen = origin.last
        assert seen.method == b"GET"
        assert seen.target == b"/hello?x=1&y=%20z"
        assert seen.get("x-client") == "abc"

        missing = await get(proxy.port, "/missing")
        assert (missing.status, missing.body) == (404, b"not here\n")


@async_test()
async def test_base_path_of_proxy_url_is_prefixed() -> None:
    async with proxied({"/v1/hello": Reply(200, [NO_STORE], b"v1")}, base_path="/v1") as (
        origin,
        proxy,
    ):
        response = await get(proxy.port, "/hello?q=1")
        assert (response.status, response.body) == (200, b"v1")
        assert origin.last.target == b"/v1/hello?q=1"


@async_test()
async def test_post_body_forwarded() -> None:
    def created(request: OriginRequest) -> Reply:
        return Reply(201, [("Location", "/items/7"), NO_STORE], b"got:" + request.body)

    async with proxied({"/items": created}) as (origin, proxy):
        body = b'{"name": "phantom", "n": 1}'
        response = await fetch(
            proxy.port, "POST", "/items", [("Content-Type", "application/json")], body
        )
        assert response.status == 201
        assert response.body == b"got:" + body
        assert response.get("location") == "/items/7"
        seen = origin.last
        assert (seen.method, seen.body) == (b"POST", body)
        assert seen.get("content-type") == "application/json"


@async_test()
async def test_chunked_request_body_forwarded() -> None:
    async with proxied({"/upload": echo}) as (origin, proxy):
        chunks = [b"first-", b"second-" * 100, b"third"]
        async with await RawClient.connect(proxy.port) as client:
            await client.send(build_request("POST", "/upload", chunks=chunks))
            response = await client.read_response()
        assert response.status == 200
        assert origin.last.body == b"".join(chunks)
        assert response.body == b"".join(chunks)


@async_test()
async def test_chunked_response_streamed_to_client() -> None:
    chunks = [b"alpha,", b"beta," * 1000, b"gamma"]

    def chunked(request: OriginRequest) -> Reply:
        return Reply(200, [("Content-Type", "text/plain"), NO_STORE], iter(chunks))

    async with proxied({"/stream": chunked}) as (_origin, proxy):
        async with await RawClient.connect(proxy.port) as client:
            response = await client.request("GET", "/stream")
            assert response.status == 200
            assert response.complete
            assert response.chunked or response.content_length == len(b"".join(chunks))
            assert response.body == b"".join(chunks)
            # the framing was right: the same connection serves the next request
            again = await client.request("GET", "/stream")
            assert again.body == b"".join(chunks)


@async_test(timeout=40)
async def test_multi_mib_bodies_both_ways_keep_their_checksum() -> None:
    up = payload(5 * 1024 * 1024 + 17, seed=1)
    down_size = 6 * 1024 * 1024 + 3
    down_sha = sha256(b"".join(payload_chunks(down_size, seed=2)))

    def upload(request: OriginRequest) -> Reply:
        return Reply(
            200,
            [("X-Upload-Sha256", sha256(request.body)), NO_STORE],
            payload_chunks(down_size, seed=2),  # chunked
        )

    def download(request: OriginRequest) -> Reply:
        body = b"".join(payload_chunks(down_size, seed=2))
        return Reply(200, [("Cache-Control", "no-store")], body)  # Content-Length

    async with proxied({"/upload": upload, "/download": download}) as (origin, proxy):
        async with await RawClient.connect(proxy.port) as client:
            response = await client.request("POST", "/upload", body=up)
            assert response.status == 200 and response.complete
            assert response.get("x-upload-sha256") == sha256(up)
            assert len(response.body) == down_size
            assert response.sha256 == down_sha

            # chunked upload of several MiB
            parts = [up[i : i + 300_000] for i in range(0, len(up), 300_000)]
            await client.send(build_request("POST", "/upload", chunks=parts))
            response = await client.read_response()
            assert response.get("x-upload-sha256") == sha256(up)
            assert response.sha256 == down_sha

            response = await client.request("GET", "/download")
            assert response.content_length == down_size
            assert response.sha256 == down_sha
        assert [len(r.body) for r in origin.requests_for("/upload")] == [len(up), len(up)]


@async_test()
async def test_head_has_headers_and_no_body() -> None:
    body = b"x" * 1234
    async with proxied({"/doc": Reply(200, [("Content-Type", "text/plain"), NO_STORE], body)}) as (
        origin,
        proxy,
    ):
        async with await RawClient.connect(proxy.port) as client:
            head = await client.request("HEAD", "/doc")
            assert head.status == 200
            assert head.content_length == len(body)
            assert head.get("content-type") == "text/plain"
            # no body bytes were sent after the HEAD response: the next response parses cleanly
            full = await client.request("GET", "/doc")
            assert (full.status, full.body) == (200, body)
        assert [r.method for r in origin.log] == [b"HEAD", b"GET"]


@async_test()
async def test_keep_alive_many_requests_reuse_one_backend_connection() -> None:
    def numbered(request: OriginRequest) -> Reply:
        return Reply(200, [NO_STORE], b"answer to " + request.target)

    async with proxied({f"/r{i}": numbered for i in range(20)}) as (origin, proxy):
        async with await RawClient.connect(proxy.port) as client:
            for i in range(20):
                response = await client.request("GET", f"/r{i}")
                assert (response.status, response.body) == (200, f"answer to /r{i}".encode())
        assert sum(origin.requests.values()) == 20
        assert origin.connections_accepted == 1, (
            f"the origin accepted {origin.connections_accepted} connections for 20 sequential "
            "requests; expected the pooled backend connection to be reused"
        )


@async_test()
async def test_pipelined_requests_answered_in_order() -> None:
    async def slow(request: OriginRequest) -> Reply:
        await asyncio.sleep(0.2)  # a proxy answering out of order would answer /p2 first
        return Reply(200, [NO_STORE], b"one")

    routes = {"/p1": slow, "/p2": echo, "/p3": Reply(200, [NO_STORE], b"three")}
    async with proxied(routes) as (origin, proxy):
        async with await RawClient.connect(proxy.port) as client:
            await client.send(
                build_request("GET", "/p1")
                + build_request("POST", "/p2", body=b"two")
                + build_request("GET", "/p3")
            )
            bodies = [(await client.read_response()).body for _ in range(3)]
        assert bodies == [b"one", b"two", b"three"]
        assert [r.path for r in origin.log] == ["/p1", "/p2", "/p3"]


@async_test()
async def test_http10_client_gets_an_unchunked_response_and_a_close() -> None:
    chunks = [b"old ", b"school ", b"client"]

    def chunked(request: OriginRequest) -> Reply:
        return Reply(200, [NO_STORE], iter(chunks))  # chunked from the origin

    async with proxied({"/old": chunked}) as (_origin, proxy):
        async with await RawClient.connect(proxy.port) as client:
            await client.send(b"GET /old HTTP/1.0\r\nHost: phantom.test\r\n\r\n")
            response = await client.read_response()
            assert response.status == 200
            assert not response.chunked, "chunked encoding sent to an HTTP/1.0 client"
            assert response.body == b"".join(chunks)
            assert await client.is_closed_by_peer(), "HTTP/1.0 without keep-alive: must close"


@async_test()
async def test_hop_by_hop_request_headers_not_forwarded() -> None:
    async with proxied({"/h": echo}) as (origin, proxy):
        response = await get(
            proxy.port,
            "/h",
            [
                ("Connection", "keep-alive, X-Secret-Hop"),
                ("X-Secret-Hop", "must not pass"),
                ("Keep-Alive", "timeout=5"),
                ("TE", "trailers"),
                ("Trailer", "X-Checksum"),
                ("Upgrade", "h2c"),  # not named in Connection: not an upgrade, just hop-by-hop
                ("Proxy-Authorization", "Basic cHJveHk6c2VjcmV0"),
                ("Proxy-Connection", "keep-alive"),
                ("X-End-To-End", "kept"),
            ],
        )
        assert response.status == 200
        seen = origin.last
        leaked = [
            name
            for name in (
                "x-secret-hop",
                "keep-alive",
                "te",
                "trailer",
                "upgrade",
                "proxy-authorization",
                "proxy-connection",
            )
            if seen.has(name)
        ]
        assert leaked == [], f"hop-by-hop headers reached the origin: {leaked}"
        # the proxy may send its own Connection header, but not the client's tokens
        tokens = {t.strip().lower() for v in seen.get_all("connection") for t in v.split(",")}
        assert tokens <= {"keep-alive", "close"}, tokens
        assert seen.get("x-end-to-end") == "kept"


@async_test()
async def test_hop_by_hop_response_headers_not_forwarded() -> None:
    reply = Reply(
        200,
        [
            ("Connection", "X-Origin-Hop"),
            ("X-Origin-Hop", "must not pass"),
            ("Keep-Alive", "timeout=5, max=100"),
            ("X-End-To-End", "kept"),
            NO_STORE,
        ],
        b"ok",
    )
    async with proxied({"/r": reply}) as (_origin, proxy):
        response = await get(proxy.port, "/r")
        assert (response.status, response.body) == (200, b"ok")
        assert not response.has("x-origin-hop")
        assert not response.has("keep-alive")
        tokens = {t.strip().lower() for v in response.get_all("connection") for t in v.split(",")}
        assert "x-origin-hop" not in tokens
        assert response.get("x-end-to-end") == "kept"


@async_test()
async def test_forwarded_headers_and_via_are_set() -> None:
    async with proxied({"/f": echo}) as (origin, proxy):
        await get(proxy.port, "/f", [("Host", "shop.example.test:8080")])
        seen = origin.last
        xff = seen.get_all("x-forwarded-for")
        assert xff, "no X-Forwarded-For"
        assert ",".join(xff).split(",")[-1].strip() == "127.0.0.1"
        assert seen.get("x-forwarded-proto") == "http"
        assert seen.get("x-forwarded-host") == "shop.example.test:8080"
        via = ",".join(seen.get_all("via"))
        assert via.split(",")[-1].strip().startswith("1.1 "), f"Via: {via!r}"

        # a client-supplied X-Forwarded-For does not hide the real peer
        await get(proxy.port, "/f", [("X-Forwarded-For", "203.0.113.9")])
        xff = ",".join(origin.last.get_all("x-forwarded-for"))
        assert xff.split(",")[-1].strip() == "127.0.0.1", xff


@async_test()
async def test_several_set_cookie_headers_stay_separate() -> None:
    cookies = [
        "a=1; Path=/; HttpOnly",
        "b=2; Expires=Wed, 21 Oct 2037 07:28:00 GMT",
        "c=3",
    ]
    reply = Reply(200, [("Set-Cookie", c) for c in cookies] + [NO_STORE], b"cookies")
    async with proxied({"/login": reply}) as (_origin, proxy):
        response = await get(proxy.port, "/login")
        assert response.status == 200
        assert response.get_all("set-cookie") == cookies


@async_test()
async def test_malformed_request_gets_400_and_proxy_serves_on() -> None:
    async with proxied({"/ok": Reply(200, [NO_STORE], b"fine")}) as (origin, proxy):
        for garbage in (
            b"GARBAGE\x00\x01 nonsense\r\n\r\n",
            b"GET /ok HTTP/1.1\r\nHost: x\r\nBad Header Line\r\n\r\n",
            b"GET /ok HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nContent-Length: 5\r\n\r\nabc",
        ):
            async with await RawClient.connect(proxy.port) as client:
                await client.send(garbage)
                response = await client.read_response()
                assert response.status == 400, (garbage, response.head)
                assert await client.is_closed_by_peer(), garbage
        assert origin.log == [], "a malformed request reached the origin"

        response = await get(proxy.port, "/ok")
        assert (response.status, response.body) == (200, b"fine")
