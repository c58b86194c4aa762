"""Request smuggling defences over real sockets: every ambiguous request is refused with the
right status and Connection: close, and the origin never even sees a TCP connection."""

from __future__ import annotations

import pytest
from conftest import RawClient, async_test, fetch, parse_head, proxied
from origin import echo

OK = b"GET /ok HTTP/1.1\r\nHost: phantom.test\r\n\r\n"


def req(*lines: bytes, start: bytes = b"POST /echo HTTP/1.1", body: bytes = b"") -> bytes:
    return start + b"\r\n" + b"".join(line + b"\r\n" for line in lines) + b"\r\n" + body


HOST = b"Host: phantom.test"
CHUNKS = b"5\r\nhello\r\n0\r\n\r\n"

REFUSED = {
    "CL+TE": (req(HOST, b"Content-Length: 5", b"Transfer-Encoding: chunked", body=CHUNKS), 400),
    "two CLs": (req(HOST, b"Content-Length: 5", b"Content-Length: 6", body=b"hello!"), 400),
    "invalid CL": (req(HOST, b"Content-Length: 5x", body=b"hello"), 400),
    "chunked, gzip": (req(HOST, b"Transfer-Encoding: chunked, gzip", body=CHUNKS), 400),
    "two TE fields": (
        req(HOST, b"Transfer-Encoding: chunked", b"Transfer-Encoding: chunked", body=CHUNKS),
        400,
    ),
    "x-chunked": (req(HOST, b"Transfer-Encoding: x-chunked", body=CHUNKS), 501),
    '"chunked"': (req(HOST, b'Transfer-Encoding: "chunked"', body=CHUNKS), 501),
    "bad chunk size": (req(HOST, b"Transfer-Encoding: chunked", body=b"zz\r\nhello\r\n"), 400),
    "chunk size 0x": (req(HOST, b"Transfer-Encoding: chunked", body=b"0x5\r\nhello\r\n"), 400),
    "obs-fold": (req(HOST, b"X-A: one", b" two", b"Content-Length: 0"), 400),
    "space before colon": (req(HOST, b"Content-Length : 5", body=b"hello"), 400),
    "NUL in value": (req(HOST, b"X-A: a\x00b", b"Content-Length: 0"), 400),
    "control byte in value": (req(HOST, b"X-A: a\x01b", b"Content-Length: 0"), 400),
    "bare CR": (req(HOST, b"X-A: a\rX-B: b", b"Content-Length: 0"), 400),
    "missing Host": (req(b"Content-Length: 0"), 400),
    "two Hosts": (req(HOST, b"Host: other.test", b"Content-Length: 0"), 400),
    "invalid Host": (req(b"Host: a b/c", b"Content-Length: 0"), 400),
    "CONNECT": (req(b"Host: example.com:443", start=b"CONNECT example.com:443 HTTP/1.1"), 405),
    "authority-form": (req(HOST, start=b"GET example.com:443 HTTP/1.1"), 400),
    "TE in HTTP/1.0": (
        req(b"Transfer-Encoding: chunked", start=b"POST /echo HTTP/1.0", body=CHUNKS),
        400,
    ),
}


@pytest.mark.parametrize("raw, status", REFUSED.values(), ids=list(REFUSED))
@async_test()
async def test_refused_and_nothing_reaches_the_backend(raw: bytes, status: int) -> None:
    async with proxied({"/echo": echo, "/ok": echo}) as (origin, proxy):
        async with await RawClient.connect(proxy.port) as client:
            # A follow-up request pipelined behind the bad one must not be served either.
            await client.send(raw + OK)
            data = await client.read_until_eof()
        response = parse_head(data[: data.index(b"\r\n\r\n") + 4])
        assert response.status == status, data[:300]
        assert response.get("connection") == "close"
        assert data.count(b"HTTP/1.1 ") == 1, "nothing after the refusal"
        assert origin.connections_accepted == 0, "not one byte may reach the backend"
        # phantom serves the next client normally
        response = await fetch(proxy.port, "GET", "/ok")
        assert response.status == 200


@async_test()
async def test_absolute_form_authority_replaces_host_and_target_becomes_origin_form() -> None:
    async with proxied({"/a/b": echo}) as (origin, proxy):
        async with await RawClient.connect(proxy.port) as client:
            await client.send(
                b"GET http://Other.test:81/a/b?q=1 HTTP/1.1\r\nHost: ignored.test\r\n\r\n"
            )
            response = await client.read_response()
        assert response.status == 200
        assert origin.last.target == b"/a/b?q=1"
        assert origin.last.get_all("host") == ["Other.test:81"]


@async_test()
async def test_chunked_with_whitespace_and_extensions_is_reframed() -> None:
    async with proxied({"/echo": echo}) as (origin, proxy):
        raw = req(
            HOST,
            b"Transfer-Encoding:  chunked ",
            body=b'5;name=value\r\nhello\r\n6;x;y="z"\r\n world\r\n0\r\nX-Trailer: t\r\n\r\n',
        )
        async with await RawClient.connect(proxy.port) as client:
            await client.send(raw)
            response = await client.read_response()
        assert (response.status, response.body) == (200, b"hello world")
        forwarded = origin.last
        assert forwarded.body == b"hello world"
        assert forwarded.get_all("transfer-encoding") == ["chunked"]
        assert not forwarded.has("x-trailer")


@async_test()
async def test_duplicate_equal_content_length_is_forwarded_once() -> None:
    async with proxied({"/echo": echo}) as (origin, proxy):
        raw = req(HOST, b"Content-Length: 5", b"Content-Length: 5", body=b"hello")
        async with await RawClient.connect(proxy.port) as client:
            await client.send(raw)
            response = await client.read_response()
        assert (response.status, response.body) == (200, b"hello")
        assert origin.last.get_all("content-length") == ["5"]


@pytest.mark.parametrize("trusted", [False, True])
@async_test()
async def test_x_forwarded_replaced_unless_the_peer_is_trusted(trusted: bool) -> None:
    networks = ["127.0.0.0/8"] if trusted else ["10.0.0.0/8", "::1/128"]
    async with proxied({"/echo": echo}, trusted_proxies=networks) as (origin, proxy):
        sent = [
            ("X-Forwarded-For", "203.0.113.9"),
            ("X-Forwarded-Proto", "https"),
            ("X-Forwarded-Host", "public.test"),
        ]
        assert (await fetch(proxy.port, "GET", "/echo", sent)).status == 200
        got = origin.last
        if trusted:
            assert got.get_all("x-forwarded-for") == ["203.0.113.9, 127.0.0.1"]
            assert got.get_all("x-forwarded-proto") == ["https"]
            assert got.get_all("x-forwarded-host") == ["public.test"]
        else:
            assert got.get_all("x-forwarded-for") == ["127.0.0.1"]
            assert got.get_all("x-forwarded-proto") == ["http"]
            assert got.get_all("x-forwarded-host") == ["phantom.test"]
