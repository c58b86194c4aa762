"""What the client sees when the backend is down, silent or breaks off, and that the proxy
serves on afterwards (issue 2, "Backend unreachable: 502 ...")."""

from __future__ import annotations

import asyncio
import logging
import time

import pytest
from conftest import RawClient, async_test, fetch, get, proxied, running_proxy, sha256
from origin import (
    CannedBackend,
    RawAnswer,
    Reply,
    ScriptedBackend,
    TestOrigin,
    payload,
    read_request_head,
    unused_port,
)

from phantom import upstream

NO_STORE = ("Cache-Control", "no-store")


@async_test()
async def test_backend_down_gives_502_with_short_body_and_proxy_serves_on() -> None:
    port = unused_port()  # bound on port 0 and closed again: nothing listens there
    async with running_proxy(port, backend_connect_timeout=2) as proxy:
        async with await RawClient.connect(proxy.port) as client:
            started = time.monotonic()
            response = await client.request("GET", "/anything")
            assert response.status == 502
            assert response.complete and 0 < len(response.body) < 1024
            assert time.monotonic() - started < 1.5, "a refused connect must fail fast"
        # the proxy is still there and answers the next connection the same way
        again = await get(proxy.port, "/again")
        assert again.status == 502 and again.complete


@async_test()
async def test_backend_silent_gives_504_within_backend_timeout_and_proxy_serves_on() -> None:
    routes = {"/slow": Reply(200, [NO_STORE], b"late"), "/ok": Reply(200, [NO_STORE], b"ok")}
    async with (
        TestOrigin(routes, mode="silent") as origin,
        running_proxy(origin.port, backend_timeout=0.5) as proxy,
    ):
        started = time.monotonic()
        response = await get(proxy.port, "/slow")
        elapsed = time.monotonic() - started
        assert response.status == 504
        assert response.complete and 0 < len(response.body) < 1024
        assert 0.4 <= elapsed < 2.0, f"504 after {elapsed:.2f} s with backend_timeout=0.5"
        assert origin.requests["/slow"] == 1

        origin.mode = "normal"
        response = await get(proxy.port, "/ok")
        assert (response.status, response.body) == (200, b"ok")


@async_test()
async def test_backend_slow_head_within_backend_timeout_is_fine() -> None:
    routes = {"/slowish": Reply(200, [NO_STORE], b"made it", delay=0.2)}
    async with (
        TestOrigin(routes) as origin,
        running_proxy(origin.port, backend_timeout=1.0) as proxy,
    ):
        response = await get(proxy.port, "/slowish")
        assert (response.status, response.body) == (200, b"made it")


@pytest.mark.parametrize("cache_control", ["no-store", "max-age=60"])
@async_test()
async def test_backend_closing_mid_response_closes_client_connection(cache_control: str) -> None:
    body = payload(200_000, seed=5)
    routes = {"/cut": Reply(200, [("Cache-Control", cache_control)], body)}
    async with (
        TestOrigin(routes, mode="close_mid_body") as origin,
        running_proxy(origin.port) as proxy,
    ):
        async with await RawClient.connect(proxy.port) as client:
            response = await client.request("GET", "/cut")
            assert response.status == 200, response.head
            assert not response.complete, "a truncated response must never look complete"
            if response.content_length is not None:
                assert response.content_length == len(body)
                assert len(response.body) < len(body)
            else:
                assert response.chunked  # chunked without the last chunk
            assert await client.is_closed_by_peer(1.0)

        # the truncated body was not stored, and the proxy serves the next request normally
        origin.mode = "normal"
        response = await get(proxy.port, "/cut")
        assert response.status == 200 and response.complete
        assert response.sha256 == sha256(body)
        assert origin.requests["/cut"] == 2


@async_test()
async def test_dead_pooled_backend_connection_is_retried_for_idempotent_request() -> None:
    # the origin closes each connection right after its response (no Connection: close header),
    # so the proxy's pooled connection is dead when the next request comes
    routes = {p: Reply(200, [NO_STORE], p.encode(), close_after=True) for p in ("/a", "/b")}
    async with TestOrigin(routes) as origin, running_proxy(origin.port) as proxy:
        async with await RawClient.connect(proxy.port) as client:
            first = await client.request("GET", "/a")
            assert first.body == b"/a"
            await asyncio.sleep(0.2)
            second = await client.request("GET", "/b")
            assert (second.status, second.body) == (200, b"/b")
        assert origin.connections_accepted == 2
        assert origin.requests == {"/a": 1, "/b": 1}


@async_test()
async def test_pooled_connection_dying_under_a_get_is_retried_once() -> None:
    # the origin closes a kept-alive connection when the next request arrives on it: the proxy
    # cannot see that coming, and must retry the idempotent GET on a fresh connection
    routes = {p: Reply(200, [NO_STORE], p.encode()) for p in ("/a", "/b")}
    async with TestOrigin(routes) as origin, running_proxy(origin.port) as proxy:
        origin.drop_reused = True
        async with await RawClient.connect(proxy.port) as client:
            assert (await client.request("GET", "/a")).body == b"/a"
            second = await client.request("GET", "/b")
            assert (second.status, second.body) == (200, b"/b")
        assert origin.dropped == 1
        assert origin.connections_accepted == 2
        assert origin.requests == {"/a": 1, "/b": 2}


@async_test()
async def test_pooled_connection_dying_under_a_post_is_not_retried() -> None:
    routes = {"/a": Reply(200, [NO_STORE], b"/a"), "/post": Reply(200, [NO_STORE], b"done")}
    async with TestOrigin(routes) as origin, running_proxy(origin.port) as proxy:
        origin.drop_reused = True
        assert (await get(proxy.port, "/a")).body == b"/a"
        response = await fetch(proxy.port, "POST", "/post", body=b"once only")
        assert response.status == 502 and response.complete
        assert origin.requests["/post"] == 1, "a POST was sent to the backend twice"
        # and the proxy serves on
        assert (await get(proxy.port, "/a")).body == b"/a"


# -- a backend that sends more than its framing says (issue 11, item 5) ----------------------

SECRET = b"alices-private-bytes-are-31-long"
HELLO = b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello"
OK = RawAnswer((b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok",))
OVERRUNS = {
    # Content-Length 5, 36 bytes sent: the rest comes with the body...
    "same-segment": RawAnswer((HELLO + SECRET,)),
    # ... or afterwards, while the connection waits in the pool.
    "while-idle": RawAnswer((HELLO, SECRET)),
}
# How the request reaches the backend: the request loop (h11; a Content-Length field takes a
# request out of the fast lane), the fast lane on a new backend connection, the fast lane's
# callback relay on a pooled one (warmed up by a first request).
PATHS = {
    "loop": [("Content-Length", "0")],
    "fast-lane": [],
    "relay": [],
}


@pytest.mark.parametrize("path", list(PATHS))
@pytest.mark.parametrize("overrun", list(OVERRUNS))
@async_test()
async def test_a_backend_connection_that_sent_more_than_its_response_is_never_reused(
    overrun: str, path: str
) -> None:
    backend = CannedBackend({"/extra": OVERRUNS[overrun], "/ok": OK})
    headers = PATHS[path]
    async with backend, running_proxy(backend.port, cache_strategy="none") as proxy:
        if path == "relay":
            assert (await get(proxy.port, "/ok")).body == b"ok"  # now one connection is pooled
        first = await fetch(proxy.port, "GET", "/extra", headers)
        assert (first.status, first.body) == (200, b"hello")
        await asyncio.sleep(0.2)  # the late bytes arrive while the connection is pooled
        # Another client's request: its own answer, on a fresh backend connection.
        second = await fetch(proxy.port, "GET", "/ok", headers)
        assert (second.status, second.body) == (200, b"ok")
    extra_on, ok_on = (connection for connection, _ in backend.heads[-2:])
    assert ok_on == extra_on + 1, "the connection that overran was pooled again"


@async_test()
async def test_a_502_never_echoes_the_backends_bytes(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="phantom")
    garbage = RawAnswer((SECRET + b" 200 OK\r\nContent-Length: 2\r\n\r\nok",))
    backend = CannedBackend({"/garbage": garbage})
    async with backend, running_proxy(backend.port, cache_strategy="none") as proxy:
        for headers in PATHS["loop"], PATHS["fast-lane"]:
            response = await fetch(proxy.port, "GET", "/garbage", headers)
            assert response.status == 502 and response.complete
            assert response.body == b"The backend sent an invalid response.\n"
    # The operator's log keeps what the backend sent.
    assert sum(SECRET.decode() in r.getMessage() for r in caplog.records) == 2


@async_test()
async def test_a_pooled_connection_closes_once_idle_for_the_pool_timeout_since_its_last_use(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # One timer per pooled connection, armed by its first wait in the pool: a connection
    # used again meanwhile is kept for the whole idle time from its last use, then closed.
    monkeypatch.setattr(upstream, "POOL_IDLE_SECONDS", 0.5)
    routes = {"/nc": Reply(200, [("Cache-Control", "no-store")], b"nc")}
    async with proxied(routes) as (origin, proxy):
        assert (await get(proxy.port, "/nc")).body == b"nc"  # pooled at t=0
        await asyncio.sleep(0.3)
        assert (await get(proxy.port, "/nc")).body == b"nc"  # taken and pooled at t=0.3
        await asyncio.sleep(0.35)  # past the first wait's timer, within the second wait
        assert origin.open_connections == 1
        assert (await get(proxy.port, "/nc")).body == b"nc"
        assert origin.connections_accepted == 1  # the same connection all along
        deadline = time.monotonic() + 3.0
        while origin.open_connections and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        assert origin.open_connections == 0  # closed by the pool once idle long enough


@pytest.mark.parametrize("newline", [b"\r\n", b"\n"], ids=["CRLF", "bare LF"])
@async_test()
async def test_an_answer_head_trickled_byte_by_byte_is_read_on_both_lanes(
    newline: bytes,
) -> None:
    """Each chunk is searched for the head's end from where the last one stopped (a blank
    line split across chunks included): the first request goes by the loop, the next ones by
    the callback relay on the pooled connection."""
    answer = newline.join([b"HTTP/1.1 200 OK", b"Cache-Control: no-store", b"Content-Length: 2"])
    answer += newline * 2 + b"ok"

    async def trickle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while True:
            try:
                await read_request_head(reader)
            except asyncio.IncompleteReadError:
                return
            for index in range(len(answer)):
                writer.write(answer[index : index + 1])
                await writer.drain()
                await asyncio.sleep(0.001)

    async with ScriptedBackend(trickle) as backend, running_proxy(backend.port) as proxy:
        async with await RawClient.connect(proxy.port) as client:
            for _ in range(3):
                response = await client.request("GET", "/slow")
                assert (response.status, response.body) == (200, b"ok")
        assert backend.connections_accepted == 1
