"""The fast lane over real sockets: simple fresh cache hits are answered from the bytes as they
arrive (without h11), pipelined ones in order, byte for byte as the request loop answers them,
and they still count in /metrics and the access log. Anything unusual goes the strict way."""

from __future__ import annotations

import re
from pathlib import Path

from conftest import RawClient, async_test, build_request, cache_status, get, parse_head, proxied
from origin import Reply
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


@async_test()
async def test_fast_hits_count_in_metrics_and_the_access_log(tmp_path: Path) -> None:
    log_path = tmp_path / "access.log"
    options = {"control_port": 0, "control_auth": TOKEN, "access_log": str(log_path)}
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
    lines = log_path.read_text().splitlines()
    assert len(lines) == 3
    assert '"GET /b HTTP/1.1" 200 5 "http://r.test/"' in lines[1] and " cache=hit " in lines[1]
    assert '"HEAD /b HTTP/1.1" 200 0 ' in lines[2] and " cache=hit " in lines[2]
