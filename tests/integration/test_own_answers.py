"""What phantom says itself, over real sockets: reason phrases on its own status lines, error
bodies that don't name the backend, and Cache-Status turned off per server. Each on both
request paths: the fast lane (a simple HTTP/1.1 GET) and the h11 request loop (HTTP/1.0, or a
request with a body)."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
from conftest import RawClient, async_test, fetch, get, proxied, running_proxy
from origin import Reply, unused_port

CACHED = Reply(200, [("Cache-Control", "max-age=600"), ("ETag", '"v1"')], b"cached")
# A simple GET takes the fast lane; an HTTP/1.0 one (or one with a body) the request loop.
PATHS = {"fast lane": {}, "request loop": {"version": "HTTP/1.0"}}


@pytest.mark.parametrize("path", PATHS)
@async_test()
async def test_a_refused_backend_is_a_502_that_does_not_name_it(
    path: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="phantom")
    port = unused_port()
    async with running_proxy(port, cache_strategy="none") as proxy:
        answer = await fetch(proxy.port, "GET", "/down", **PATHS[path])
    assert answer.head.startswith(b"HTTP/1.1 502 Bad Gateway\r\n")
    assert answer.body == b"The backend refused the connection.\n"
    assert str(port) not in answer.head.decode() + answer.body.decode()
    # The log line keeps the address and the reason.
    [line] = [r.getMessage() for r in caplog.records if "GET /down" in r.getMessage()]
    assert f"cannot connect to 127.0.0.1:{port}: " in line and line.endswith("(502)")


@pytest.mark.parametrize("path", PATHS)
@async_test()
async def test_a_silent_backend_is_a_504_that_does_not_name_it(path: str) -> None:
    async with proxied({}, backend_timeout=0.3, cache_strategy="none") as (origin, proxy):
        origin.mode = "silent"
        answer = await fetch(proxy.port, "GET", "/slow", **PATHS[path])
    assert answer.head.startswith(b"HTTP/1.1 504 Gateway Timeout\r\n")
    assert answer.body == b"The backend did not answer in time.\n"
    assert str(origin.port) not in answer.body.decode()


@async_test()
async def test_phantoms_own_answers_carry_a_reason_phrase() -> None:
    async with proxied({"/a": CACHED}, control_port=0) as (_, proxy):
        assert (await get(proxy.port, "/a")).status == 200
        # A 304 made from a stored response, on the fast lane and in the loop.
        for options in PATHS.values():
            answer = await fetch(proxy.port, "GET", "/a", [("If-None-Match", '"v1"')], **options)
            assert answer.head.startswith(b"HTTP/1.1 304 Not Modified\r\n"), options
        # 100 Continue, before the body is sent.
        async with await RawClient.connect(proxy.port) as client:
            await client.send(
                b"POST /a HTTP/1.1\r\nHost: t\r\nContent-Length: 2\r\n"
                b"Expect: 100-continue\r\n\r\n"
            )
            assert await client.read_head() == b"HTTP/1.1 100 Continue\r\n\r\n"
        # A refusal, and the control API.
        bad = await fetch(proxy.port, "GET", "/a", [("Host", "a b")])
        assert bad.head.startswith(b"HTTP/1.1 400 Bad Request\r\n")
        health = await get(proxy.control_port, "/healthz")
        assert health.head.startswith(b"HTTP/1.1 200 OK\r\n")


@pytest.mark.parametrize("path", PATHS)
@async_test()
async def test_cache_status_can_be_turned_off_per_server(path: str, tmp_path: Path) -> None:
    log_path = tmp_path / "access.log"
    routes = {"/a": CACHED, "/nc": Reply(200, [("Cache-Control", "no-store")], b"nc")}
    async with proxied(routes, cache_status_header=False, access_log=str(log_path)) as (_, proxy):
        answers = [
            await fetch(proxy.port, "GET", target, headers, **PATHS[path])
            for target, headers in (
                ("/a", []),  # a miss, stored
                ("/a", []),  # a hit
                ("/a", [("If-None-Match", '"v1"')]),  # a hit answered 304
                ("/nc", []),  # relayed, not stored
                ("/nc", []),  # known not to be stored: relayed by the fast lane's callbacks
            )
        ]
        assert [a.status for a in answers] == [200, 200, 304, 200, 200]
        for answer in answers:
            assert not answer.has("cache-status"), answer.head
        assert answers[1].has("age") and answers[2].has("age")
        await proxy.close()  # the access log is complete
    results = [line.split(" cache=")[1].split()[0] for line in log_path.read_text().splitlines()]
    assert results == ["miss", "hit", "hit", "miss", "miss"]  # the log still knows


@async_test()
async def test_cache_status_is_on_by_default() -> None:
    async with proxied({"/a": CACHED}) as (_, proxy):
        assert (await get(proxy.port, "/a")).has("cache-status")
        assert (await get(proxy.port, "/a")).has("cache-status")
