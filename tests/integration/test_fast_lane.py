"""The fast lane over real sockets: simple fresh cache hits are answered from the bytes as they
arrive (without h11), pipelined ones in order, byte for byte as the request loop answers them,
and they still count in /metrics and the access log. Anything unusual goes the strict way.

Simple requests the cache does not answer are forwarded and their answers relayed without h11
too (pass-through): relayed as the request loop relays them, the backend's answers outside the
subset handed to h11, backend failures answered 502/504, a backend connection never pooled
after bytes it should not have sent."""

from __future__ import annotations

import asyncio
import logging
import re
import time
from pathlib import Path

import pytest
from conftest import (
    RawClient,
    RawResponse,
    async_test,
    build_request,
    cache_status,
    fetch,
    get,
    parse_head,
    proxied,
    running_proxy,
)
from origin import (
    CannedBackend,
    OriginRequest,
    RawAnswer,
    Reply,
    ScriptedBackend,
    echo,
    read_request_head,
    unused_port,
)
from test_observability import TOKEN, request_count, scrape

CACHED = [("Cache-Control", "max-age=600"), ("Content-Type", "application/octet-stream")]
ROUTES = {
    "/a": Reply(200, [*CACHED, ("ETag", '"a1"')], b"alpha" * 50),
    "/b": Reply(200, CACHED, b"bravo"),
    "/nc": Reply(200, [("Cache-Control", "no-store")], b"not cached"),
}


def simple(method: str, target: str, *headers: tuple[str, str]) -> bytes:
    return build_request(method, target, headers)


def age_and_hit(response: object) -> tuple[int, dict[str, str | None]]:
    name, params = cache_status(response)  # type: ignore[arg-type]
    assert name == "phantom"
    age = response.get("age")  # type: ignore[attr-defined]
    assert age is not None and age.isdigit()
    return int(age), params


@async_test()
async def test_pipelined_simple_hits_are_answered_in_order() -> None:
    async with proxied(ROUTES) as (origin, proxy):
        for path in ("/a", "/b"):
            assert (await get(proxy.port, path)).status == 200  # miss, stored
        burst = [
            simple("GET", "/a"),
            simple("GET", "/b", ("User-Agent", "burst")),
            simple("HEAD", "/a"),
            simple("GET", "/a", ("If-None-Match", '"a1"')),
            simple("GET", "/nc"),  # not a hit: the request loop forwards it, in its turn
            simple("GET", "/b"),  # a hit again after the loop's cycle
        ]
        async with await RawClient.connect(proxy.port) as client:
            await client.send(b"".join(burst))  # one write: one segment on loopback
            answers = [
                await client.read_response(head_request=index == 2) for index in range(len(burst))
            ]
        assert [a.status for a in answers] == [200, 200, 200, 304, 200, 200]
        assert answers[0].body == b"alpha" * 50 and answers[1].body == b"bravo"
        assert answers[2].body == b"" and answers[2].content_length == 250
        assert answers[4].body == b"not cached" and answers[5].body == b"bravo"
        for index in (0, 1, 2, 3, 5):
            age, params = age_and_hit(answers[index])
            assert "hit" in params and 600 - age - 1 <= int(params["ttl"] or 0) <= 600 - age
        assert "hit" not in cache_status(answers[4])[1]
        assert origin.requests["/a"] == 1 and origin.requests["/b"] == 1
        assert origin.requests["/nc"] == 1


@async_test()
async def test_a_fast_hit_is_the_same_answer_as_the_request_loop_gives() -> None:
    async with proxied(ROUTES) as (_, proxy):
        assert (await get(proxy.port, "/a")).status == 200
        async with await RawClient.connect(proxy.port) as client:
            await client.send(simple("GET", "/a"))  # fast lane
            fast = await client.read_response()
            # Content-Length: 0 on a GET is outside the fast lane's subset: the loop answers.
            await client.send(simple("GET", "/a", ("Content-Length", "0")))
            strict = await client.read_response()
    same_age = re.compile(rb"\r\nAge: \d+\r\n")
    assert same_age.sub(b"", fast.head) == same_age.sub(b"", strict.head)
    assert fast.body == strict.body


@async_test()
async def test_unusual_requests_for_a_cached_path_go_the_strict_way() -> None:
    async with proxied(ROUTES) as (_, proxy):
        assert (await get(proxy.port, "/b")).status == 200
        smuggle = b"GET /b HTTP/1.1\r\nHost: phantom.test\r\nX-A: one\r\n two\r\n\r\n"
        async with await RawClient.connect(proxy.port) as client:
            # A hit first (fast), then an obs-folded head behind it in the same segment.
            await client.send(simple("GET", "/b") + smuggle + simple("GET", "/b"))
            hit = await client.read_response()
            data = await client.read_until_eof()
    assert hit.status == 200 and "hit" in cache_status(hit)[1]
    refused = parse_head(data[: data.index(b"\r\n\r\n") + 4])
    assert refused.status == 400 and refused.get("connection") == "close"
    assert data.count(b"HTTP/1.1 ") == 1  # nothing after the refused request is answered


@pytest.mark.parametrize("logged", [True, False], ids=["access-log", "no-access-log"])
@async_test()
async def test_fast_hits_count_in_metrics_and_the_access_log(
    tmp_path: Path, logged: bool
) -> None:
    # Without an access log the fast lane counts a hit without building its exchange: the
    # same counts either way.
    log_path = tmp_path / "access.log"
    access_log = str(log_path) if logged else "off"
    options = {"control_port": 0, "control_auth": TOKEN, "access_log": access_log}
    async with proxied(ROUTES, **options) as (_, proxy):
        assert (await get(proxy.port, "/b")).status == 200  # miss
        async with await RawClient.connect(proxy.port) as client:
            await client.send(simple("GET", "/b", ("Referer", "http://r.test/"))
                              + simple("HEAD", "/b"))
            assert (await client.read_response()).status == 200
            assert (await client.read_response(head_request=True)).status == 200
        samples = await scrape(proxy.control_port)
    assert request_count(samples, "GET", 200) == 2
    assert request_count(samples, "HEAD", 200) == 1
    lookups = samples["phantom_cache_lookups_total"]
    assert lookups[(("result", "hit"), ("server", "app"))] == 2
    if not logged:
        assert not log_path.exists()
        return
    lines = log_path.read_text().splitlines()
    assert len(lines) == 3
    assert '"GET /b HTTP/1.1" 200 5 "http://r.test/"' in lines[1] and " cache=hit " in lines[1]
    assert '"HEAD /b HTTP/1.1" 200 0 ' in lines[2] and " cache=hit " in lines[2]


@async_test()
async def test_a_head_sent_again_byte_for_byte_is_answered_as_the_first_time() -> None:
    # The fast lane keeps the last head it parsed on a connection with its route and key;
    # the same bytes again, alone or between others, reach the same answer, and a head that
    # differs in one byte is its own request.
    async with proxied(ROUTES) as (origin, proxy):
        for path in ("/a", "/b"):
            assert (await get(proxy.port, path)).status == 200
        a, b = simple("GET", "/a"), simple("GET", "/b")
        async with await RawClient.connect(proxy.port) as client:
            await client.send(a)
            first = await client.read_response()
            await client.send(a + a + b + a + simple("GET", "/a", ("X-One", "1")) + a)
            again = [await client.read_response() for _ in range(6)]
            await client.send(a)
            last = await client.read_response()
    for response in (first, *again, last):
        assert response.status == 200 and "hit" in cache_status(response)[1]
    bodies = [response.body for response in (first, *again, last)]
    assert bodies == [b"alpha" * 50] * 3 + [b"bravo"] + [b"alpha" * 50] * 4
    assert origin.requests["/a"] == 1 and origin.requests["/b"] == 1


# -- pass-through: requests the cache does not answer, forwarded and relayed without h11 ------
#
# The fast lane forwards a simple GET/HEAD itself when the cache is bypassed (here:
# cache_strategy = "none"), the URL's last answer was not storable (a no-store route after its
# first request), or the request says no-store. A request with `Content-Length: 0` is outside
# its subset: the request loop forwards that one through h11, which gives the reference answer.

NO_STORE = ("Cache-Control", "no-store")
BYPASS = {"cache_strategy": "none"}
STRICT = ("Content-Length", "0")  # outside the fast lane's subset
PASS_BODY = b"passed through " * 20
PASS_ROUTES = {
    "/nc": Reply(
        200,
        [
            NO_STORE,
            ("Content-Type", "text/plain"),
            ("ETag", '"v1"'),
            ("Set-Cookie", "a=1; Path=/"),
            ("Set-Cookie", "b=2"),
            ("X-Backend", "origin"),
            ("Keep-Alive", "timeout=5"),  # hop-by-hop: never relayed
        ],
        PASS_BODY,
    ),
    "/a": Reply(200, CACHED, b"alpha"),
    "/slow": Reply(200, [NO_STORE], b"slow", delay=0.2),
    "/echo": echo,
}


def relayed(response: RawResponse) -> tuple[object, ...]:
    """What a relayed answer is made of: status line, end-to-end fields in order, and its
    length. (Where Content-Length goes among the fields differs: h11 writes it first, the fast
    lane where the backend had it.)"""
    fields = [(n, v) for n, v in response.headers if n != "content-length"]
    return response.status, response.reason, fields, response.content_length


def conditional(request: OriginRequest) -> Reply:
    """200 with an ETag, or 304 to a matching If-None-Match; never storable."""
    headers: list[tuple[str | bytes, str | bytes | int]] = [NO_STORE, ("ETag", '"v1"')]
    if request.get("if-none-match") == '"v1"':
        return Reply(304, headers)
    return Reply(200, headers, b"full body")


@pytest.mark.parametrize(
    "options, extra",
    [({}, ()), (BYPASS, ()), ({}, (NO_STORE,))],
    ids=["not-storable", "bypassed", "request-no-store"],
)
@async_test()
async def test_a_passed_through_answer_is_the_one_the_request_loop_gives(
    options: dict[str, str], extra: tuple[tuple[str, str], ...]
) -> None:
    async with proxied(PASS_ROUTES, **options) as (origin, proxy):
        async with await RawClient.connect(proxy.port) as client:
            # The first /nc teaches phantom that its answer is not storable.
            answers = []
            for headers in [extra, extra, (*extra, STRICT), extra, extra, (*extra, STRICT)]:
                await client.send(simple("GET", "/nc", *headers))
                answers.append(await client.read_response())
        for answer in answers:
            assert relayed(answer) == relayed(answers[0])
            assert answer.body == PASS_BODY and answer.complete
        assert answers[0].get_all("set-cookie") == ["a=1; Path=/", "b=2"]
        assert answers[0].get("x-backend") == "origin" and not answers[0].has("keep-alive")
        assert "fwd" in cache_status(answers[0])[1]
        assert origin.requests["/nc"] == 6
        assert origin.connections_accepted == 1, "both kinds share one pooled backend connection"


@async_test()
async def test_the_backend_sees_the_client_fields_as_spelled_and_ours_but_no_hop_by_hop() -> None:
    fields = [
        ("X-MiXeD-CaSe", "kept"),
        ("accept", "*/*"),
        ("Connection", "keep-alive"),
        ("Keep-Alive", "timeout=5"),
        ("TE", "trailers"),
        ("Proxy-Authorization", "Basic eDp5"),
        ("X-Forwarded-For", "203.0.113.9"),  # not from a trusted proxy: replaced
        ("Via", "1.0 elsewhere"),
    ]
    async with proxied(PASS_ROUTES, **BYPASS) as (origin, proxy):
        async with await RawClient.connect(proxy.port) as client:
            await client.send(simple("GET", "/echo?x=1", *fields))
            fast = await client.read_response()
            await client.send(simple("GET", "/echo?x=1", *fields, STRICT))
            strict = await client.read_response()
        assert fast.status == strict.status == 200
        sent_fast, sent_strict = (request.raw_headers for request in origin.log)
        port = proxy.port
    assert sent_fast == [
        (b"Host", b"phantom.test"),
        (b"X-MiXeD-CaSe", b"kept"),
        (b"accept", b"*/*"),
        (b"Via", b"1.0 elsewhere, 1.1 phantom"),  # our hop added where the field was
        (b"X-Forwarded-For", b"127.0.0.1"),
        (b"X-Forwarded-Proto", b"http"),
        (b"X-Forwarded-Host", b"phantom.test"),
        (b"Forwarded", b'for=127.0.0.1;proto=http;host=phantom.test;by="127.0.0.1:%d"' % port),
    ]
    # The same fields, in the same order and casing, as the request loop sends.
    assert [f for f in sent_strict if f[0] != b"Content-Length"] == sent_fast
    assert origin.log[0].target == b"/echo?x=1"


OK_ANSWER = RawAnswer((b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok",))
CHUNKED = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n"
EARLY_HINTS = b"HTTP/1.1 103 Early Hints\r\nLink: </s.css>; rel=preload\r\n\r\n"
HELLO = b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello"
# path: (the backend's answer, the body the client gets, whether the backend connection lasts);
# all but the last are outside the fast lane's subset: h11 reads them.
FALLBACKS = {
    "/chunked": (RawAnswer((CHUNKED,)), b"hello", True),
    "/chunked-in-parts": (RawAnswer((CHUNKED[:40], CHUNKED[40:52], CHUNKED[52:])), b"hello", True),
    "/close-delimited": (
        RawAnswer((b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\nuntil ", b"the end"), True),
        b"until the end",
        False,
    ),
    "/connection-close": (
        RawAnswer((HELLO.replace(b"OK\r\n", b"OK\r\nConnection: close\r\n"),), True),
        b"hello",
        False,
    ),
    "/http-1.0": (RawAnswer((HELLO.replace(b"1.1", b"1.0"),), True), b"hello", False),
    "/early-hints": (RawAnswer((EARLY_HINTS, HELLO)), b"hello", True),
    "/early-hints-one-segment": (RawAnswer((EARLY_HINTS + HELLO,)), b"hello", True),
    "/bare-lf": (RawAnswer((HELLO.replace(b"\r\n", b"\n"),)), b"hello", True),
    # In the subset, but in pieces: the head goes out before the body has come.
    "/simple-in-parts": (RawAnswer((HELLO[:20], HELLO[20:-3], b"l", b"lo")), b"hello", True),
}


@pytest.mark.parametrize("path", list(FALLBACKS))
@async_test()
async def test_any_backend_framing_is_relayed_and_keep_alive_goes_on_where_it_can(
    path: str,
) -> None:
    answer, body, backend_keeps_alive = FALLBACKS[path]
    backend = CannedBackend({path: answer, "/ok": OK_ANSWER})
    async with backend, running_proxy(backend.port, backend_timeout=3, **BYPASS) as proxy:
        async with await RawClient.connect(proxy.port) as client:
            answers = []
            for target in (path, "/ok", path, "/ok"):
                started = time.monotonic()
                await client.send(simple("GET", target))
                answers.append(await client.read_response())
                # (Nothing waits for a part of the answer that will never come.)
                assert time.monotonic() - started < 1.0, f"{target} took too long"
    assert [(a.status, a.body, a.complete) for a in answers] == [
        (200, body, True), (200, b"ok", True)
    ] * 2
    assert all(not a.has("connection") for a in answers), "the client's keep-alive goes on"
    assert "fwd" in cache_status(answers[0])[1]
    connections = [connection for connection, _ in backend.heads]
    if backend_keeps_alive:
        assert connections == [1, 1, 1, 1]
    else:  # a new backend connection after each answer that ended its connection
        assert connections == [1, 2, 2, 3]


def warnings_about(caplog: pytest.LogCaptureFixture, target: str) -> list[str]:
    return [r.getMessage() for r in caplog.records if f"GET {target} -> " in r.getMessage()]


@async_test()
async def test_a_refused_backend_connection_gives_502_and_a_log_line(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, logger="phantom")
    port = unused_port()
    async with running_proxy(port, **BYPASS) as proxy:
        async with await RawClient.connect(proxy.port) as client:
            for _ in range(2):  # and the client's connection goes on
                await client.send(simple("GET", "/down"))
                answer = await client.read_response()
                assert answer.status == 502 and answer.complete
                assert answer.body == b"The backend refused the connection.\n"
    lines = warnings_about(caplog, "/down")
    assert len(lines) == 2
    assert lines[0].startswith(f"client 127.0.0.1: GET /down -> http://127.0.0.1:{port}: ")
    assert "(502)" in lines[0]


@async_test()
async def test_a_silent_backend_gives_504_after_backend_timeout(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, logger="phantom")
    async with proxied(PASS_ROUTES, backend_timeout=0.3, **BYPASS) as (origin, proxy):
        origin.mode = "silent"
        async with await RawClient.connect(proxy.port) as client:
            started = time.monotonic()
            await client.send(simple("GET", "/nc"))
            answer = await client.read_response()
            elapsed = time.monotonic() - started
            assert answer.status == 504 and answer.complete
            assert 0.25 <= elapsed < 1.5, f"504 after {elapsed:.2f} s with backend_timeout=0.3"
            origin.mode = "normal"
            await client.send(simple("GET", "/nc"))  # the same client connection, served
            answer = await client.read_response()
            assert (answer.status, answer.body) == (200, PASS_BODY)
    assert len(warnings_about(caplog, "/nc")) == 1
    assert "did not answer in time (504)" in warnings_about(caplog, "/nc")[0]


@async_test()
async def test_each_relayed_request_gets_the_whole_backend_timeout() -> None:
    # One timer watches the relays of a connection: armed by the first request, it must not
    # cut a later one short, which is owed its own backend_timeout from when it was sent.
    async with proxied(PASS_ROUTES, backend_timeout=0.6, **BYPASS) as (origin, proxy):
        async with await RawClient.connect(proxy.port) as client:
            await client.send(simple("GET", "/nc"))
            assert (await client.read_response()).status == 200
            await asyncio.sleep(0.3)  # the timer the first request armed is half-way
            origin.mode = "silent"
            started = time.monotonic()
            await client.send(simple("GET", "/nc"))
            answer = await client.read_response()
            elapsed = time.monotonic() - started
    assert answer.status == 504
    assert 0.55 <= elapsed < 2.0, f"504 after {elapsed:.2f} s with backend_timeout=0.6"


CONTINUE_ON_ONE = RawAnswer((HELLO + b"HTTP/1.1 200 OK\r\nContent-Length: 6\r\n\r\npoison",))
CONTINUE_LATER = RawAnswer((HELLO, b"HTTP/1.1 200 OK\r\nContent-Length: 6\r\n\r\npoison"))


@pytest.mark.parametrize(
    "method, answer",
    [("GET", CONTINUE_ON_ONE), ("GET", CONTINUE_LATER), ("HEAD", CONTINUE_ON_ONE)],
    ids=["in-the-same-segment", "while-pooled", "after-a-head-answer"],
)
@async_test()
async def test_bytes_beyond_the_content_length_do_not_poison_the_next_request(
    method: str, answer: RawAnswer
) -> None:
    backend = CannedBackend({"/extra": answer, "/ok": OK_ANSWER})
    async with backend, running_proxy(backend.port, **BYPASS) as proxy:
        async with await RawClient.connect(proxy.port) as client:
            await client.send(simple(method, "/extra"))
            first = await client.read_response(head_request=method == "HEAD")
            assert first.status == 200 and first.content_length == 5
            assert first.body == (b"hello" if method == "GET" else b"")
            await asyncio.sleep(0.15)  # the late bytes, if any, arrive while it is pooled
            await client.send(simple("GET", "/ok"))
            second = await client.read_response()
            assert (second.status, second.body) == (200, b"ok")
    assert [connection for connection, _ in backend.heads] == [1, 2], "not pooled again"


@async_test()
async def test_pipelined_pass_through_hit_and_strict_requests_are_answered_in_order() -> None:
    async with proxied(PASS_ROUTES) as (origin, proxy):
        assert (await get(proxy.port, "/slow")).status == 200  # learnt: not storable
        assert (await get(proxy.port, "/a")).status == 200  # stored
        burst = [
            simple("GET", "/slow"),  # the fast lane forwards it; its answer takes 0.2 s
            simple("GET", "/a"),  # a hit, but it waits its turn
            simple("GET", "/echo", STRICT),  # the request loop's
            simple("HEAD", "/slow"),
            simple("GET", "/a"),
        ]
        async with await RawClient.connect(proxy.port) as client:
            await client.send(b"".join(burst))
            answers = [await client.read_response(head_request=i == 3) for i in range(5)]
            # And one more, sent while a pass-through is on its way: it too waits its turn.
            await client.send(simple("GET", "/slow"))
            await asyncio.sleep(0.05)
            await client.send(simple("GET", "/a"))
            answers += [await client.read_response() for _ in range(2)]
    bodies = [a.body for a in answers]
    assert bodies == [b"slow", b"alpha", b"", b"", b"alpha", b"slow", b"alpha"]
    assert answers[2].get("x-echo-target") == "/echo" and answers[3].content_length == 4
    assert all(a.status == 200 for a in answers)
    assert ["hit" in cache_status(a)[1] for a in answers] == [
        False, True, False, False, True, False, True
    ]
    assert origin.requests["/slow"] == 4 and origin.requests["/a"] == 1


@async_test()
async def test_head_and_304_pass_through_have_no_body_and_the_connection_goes_on() -> None:
    async with proxied({"/cond": conditional}) as (origin, proxy):
        async with await RawClient.connect(proxy.port) as client:
            assert (await client.request("GET", "/cond")).body == b"full body"  # learnt
            head = await client.request("HEAD", "/cond")
            not_modified = await client.request("GET", "/cond", [("If-None-Match", '"v1"')])
            again = await client.request("GET", "/cond")
            # Nothing stray followed the bodiless answers: the connection is quiet now.
            assert not await client.is_closed_by_peer(0.1)
    assert (head.status, head.content_length, head.body) == (200, 9, b"")
    assert (not_modified.status, not_modified.body) == (304, b"")
    assert not_modified.get("etag") == '"v1"' and not not_modified.has("content-length")
    assert (again.status, again.body) == (200, b"full body")
    assert [r.method for r in origin.log] == [b"GET", b"HEAD", b"GET", b"GET"]
    assert origin.log[2].get("if-none-match") == '"v1"'
    assert origin.connections_accepted == 1, "the backend connection was pooled after each"


@async_test()
async def test_repeated_pass_through_requests_and_answers_are_relayed_as_the_first() -> None:
    # The fast lane keeps the head the backend got for the last head it read, and the last
    # answer head it relayed, parsed: the same bytes again give the same result, and the
    # same answer head to a HEAD has no body.
    async with proxied(PASS_ROUTES, **BYPASS) as (origin, proxy):
        async with await RawClient.connect(proxy.port) as client:
            answers = [await client.request("GET", "/nc") for _ in range(3)]
            head = await client.request("HEAD", "/nc")
            answers.append(await client.request("GET", "/nc"))
            assert not await client.is_closed_by_peer(0.1)
    for answer in answers:
        assert (answer.status, answer.body) == (200, PASS_BODY)
        assert answer.get_all("set-cookie") == ["a=1; Path=/", "b=2"]
        assert not answer.has("keep-alive")
    assert (head.status, head.content_length, head.body) == (200, len(PASS_BODY), b"")
    heads = [request.raw_headers for request in origin.log]
    assert len(heads) == 5 and all(fields == heads[0] for fields in heads)
    assert (b"X-Forwarded-For", b"127.0.0.1") in heads[0]
    assert origin.connections_accepted == 1


@pytest.mark.parametrize("extra", [(), (STRICT,)], ids=["fast-lane", "request-loop"])
@async_test()
async def test_a_client_leaving_mid_forward_aborts_the_backend_request(
    extra: tuple[tuple[str, str], ...],
) -> None:
    forwarded = asyncio.Event()
    held = []

    async def hold(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while (head := await read_request_head(reader)).startswith(b"GET /ok "):
            writer.write(OK_ANSWER.writes[0])
        held.append(head)
        forwarded.set()
        await backend.wait_for_eof(reader)

    backend = ScriptedBackend(hold)
    async with backend, running_proxy(backend.port, backend_timeout=30, **BYPASS) as proxy:
        client = await RawClient.connect(proxy.port)
        await client.send(simple("GET", "/ok"))  # pools a backend connection
        assert (await client.read_response()).body == b"ok"
        await client.send(simple("GET", "/hold", *extra))
        await asyncio.wait_for(forwarded.wait(), 2)
        vanished = time.monotonic()
        client.vanish()
        while not backend.eof_seen:
            await asyncio.sleep(0.01)
        assert backend.eof_seen[0] - vanished < 1.0
        while proxy.open_connections:
            await asyncio.sleep(0.01)
        await asyncio.sleep(0.05)
        assert len(held) == 1, "the request was sent again, for nobody"
        assert backend.connections_accepted == 1, "no new backend connection for a gone client"


@async_test()
async def test_pass_through_requests_count_in_metrics_and_the_access_log(tmp_path: Path) -> None:
    log_path = tmp_path / "access.log"
    options = {"control_port": 0, "control_auth": TOKEN, "access_log": str(log_path)}
    async with proxied(PASS_ROUTES, backend_timeout=0.3, **options) as (origin, proxy):
        assert (await get(proxy.port, "/nc")).status == 200  # the request loop: learnt
        async with await RawClient.connect(proxy.port) as client:
            await client.send(simple("GET", "/nc", ("Referer", "http://r.test/")))
            assert (await client.read_response()).status == 200
            await client.send(simple("HEAD", "/nc", ("User-Agent", "probe/1")))
            assert (await client.read_response(head_request=True)).status == 200
            origin.mode = "silent"
            await client.send(simple("GET", "/nc"))
            assert (await client.read_response()).status == 504
        samples = await scrape(proxy.control_port)
    assert request_count(samples, "GET", 200) == 2
    assert request_count(samples, "HEAD", 200) == 1
    assert request_count(samples, "GET", 504) == 1
    assert samples["phantom_cache_lookups_total"][(("result", "miss"), ("server", "app"))] == 3
    assert samples["phantom_upstream_errors_total"][(("kind", "timeout"),)] == 1
    assert samples["phantom_upstream_seconds_count"][(("server", "app"),)] == 3
    lines = log_path.read_text().splitlines()
    assert len(lines) == 4
    length = len(PASS_BODY)
    assert f'"GET /nc HTTP/1.1" 200 {length} "http://r.test/" "-" cache=miss ' in lines[1]
    assert '"HEAD /nc HTTP/1.1" 200 0 "-" "probe/1" cache=miss server=app ' in lines[2]
    assert re.search(r" upstream_time=0\.\d{3} ", lines[1])
    assert '"GET /nc HTTP/1.1" 504 ' in lines[3] and lines[3].endswith(" error=timeout")


@pytest.mark.parametrize("cut", ["closed", "stalled"])
@async_test()
async def test_a_simple_answer_cut_short_ends_the_client_connection(
    cut: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="phantom")
    part = RawAnswer((HELLO.replace(b"5", b"9"),), close=cut == "closed")
    backend = CannedBackend({"/cut": part, "/ok": OK_ANSWER})
    async with backend, running_proxy(backend.port, backend_timeout=0.3, **BYPASS) as proxy:
        async with await RawClient.connect(proxy.port) as client:
            await client.send(simple("GET", "/cut"))
            answer = await client.read_response()
            assert (answer.status, answer.content_length) == (200, 9)
            assert answer.body == b"hello" and not answer.complete
            assert await client.is_closed_by_peer(1.0)
        assert (await fetch(proxy.port, "GET", "/ok")).body == b"ok"
    assert [connection for connection, _ in backend.heads] == [1, 2]
    [line] = warnings_about(caplog, "/cut")
    assert "response cut short" in line
