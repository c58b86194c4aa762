"""The demo origin (phantom.demo.DemoOrigin) on its own, and run_demo's wiring.

Real sockets on 127.0.0.1, port 0. HTTP through a small h11 client (keep-alive), WebSocket
through the `websockets` client and through raw frames where the library would not misbehave
on purpose. Every test is bounded by `run()` (asyncio.wait_for: same bound as asyncio.timeout,
and also available on Python 3.10).
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import socket
import struct
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import h11
import pytest
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from phantom import demo
from phantom.demo import DemoOrigin

LOCALHOST = "127.0.0.1"
TIMEOUT = 10.0
KEY = b"dGhlIHNhbXBsZSBub25jZQ=="  # RFC 6455, 1.3
ACCEPT = b"s3pPLMBiTxaQ9kYGzzhZRbK+xOo="


def run(test: Callable[[DemoOrigin], Awaitable[None]]) -> None:
    """Start a DemoOrigin, run `test` against it, close it; all within TIMEOUT seconds."""

    async def main() -> None:
        async with DemoOrigin() as origin:
            await test(origin)

    asyncio.run(asyncio.wait_for(main(), TIMEOUT))


# ---------------------------------------------------------------------------------------------
# A small keep-alive HTTP/1.1 client


@dataclass
class Response:
    status: int
    headers: list[tuple[bytes, bytes]]
    body: bytes

    def header(self, name: str) -> str | None:
        values = [v.decode("latin-1") for k, v in self.headers if k == name.encode()]
        assert len(values) <= 1, f"{name} repeated: {values}"
        return values[0] if values else None


class Client:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        self.conn = h11.Connection(h11.CLIENT)

    @classmethod
    async def open(cls, port: int) -> Client:
        reader, writer = await asyncio.open_connection(LOCALHOST, port)
        return cls(reader, writer)

    async def request(
        self,
        method: str,
        target: str,
        headers: list[tuple[str, str]] | None = None,
        body: bytes = b"",
    ) -> Response:
        if self.conn.our_state is h11.DONE and self.conn.their_state is h11.DONE:
            self.conn.start_next_cycle()
        all_headers = [("host", "demo.test"), *(headers or [])]
        if body or method in ("POST", "PUT"):
            all_headers.append(("content-length", str(len(body))))
        data = self.conn.send(h11.Request(method=method, target=target, headers=all_headers))
        if body:
            data += self.conn.send(h11.Data(data=body))
        data += self.conn.send(h11.EndOfMessage())
        self.writer.write(data)
        await self.writer.drain()
        response: h11.Response | None = None
        received = bytearray()
        while True:
            event = self.conn.next_event()
            if event is h11.NEED_DATA:
                self.conn.receive_data(await self.reader.read(65536))
            elif isinstance(event, h11.Response):
                response = event
            elif isinstance(event, h11.Data):
                received += event.data
            elif isinstance(event, h11.EndOfMessage):
                assert response is not None
                return Response(response.status_code, list(response.headers), bytes(received))
            else:
                raise AssertionError(f"unexpected {event!r}")

    async def close(self) -> None:
        self.writer.close()
        await self.writer.wait_closed()


async def get(port: int, target: str, headers: list[tuple[str, str]] | None = None) -> Response:
    client = await Client.open(port)
    try:
        return await client.request("GET", target, headers)
    finally:
        await client.close()


# ---------------------------------------------------------------------------------------------
# Pages, static assets, /echo, errors


def test_index_page_links_assets_and_has_the_widget_ids() -> None:
    async def test(origin: DemoOrigin) -> None:
        response = await get(origin.port, "/")
        assert response.status == 200
        assert response.header("content-type") == "text/html; charset=utf-8"
        assert response.header("cache-control") == "public, max-age=10"
        page = response.body.decode()
        assert 'href="/static/app.css"' in page
        assert 'src="/static/app.js"' in page
        for element_id in ("cache-status", "ws-state", "ws-input", "ws-send", "ws-log"):
            assert f'id="{element_id}"' in page
        assert "http://" not in page and "https://" not in page  # nothing external

    run(test)


@pytest.mark.parametrize(
    ("path", "content_type", "cache_control"),
    [
        ("/", "text/html; charset=utf-8", "public, max-age=10"),
        ("/static/app.css", "text/css; charset=utf-8", "public, max-age=300"),
        ("/static/app.js", "text/javascript; charset=utf-8", "public, max-age=300"),
    ],
)
def test_static_files_carry_cache_control_etag_and_date(
    path: str, content_type: str, cache_control: str
) -> None:
    async def test(origin: DemoOrigin) -> None:
        response = await get(origin.port, path)
        assert response.status == 200
        assert response.header("content-type") == content_type
        assert response.header("cache-control") == cache_control
        etag = response.header("etag")
        assert etag is not None and etag.startswith('"') and etag.endswith('"') and len(etag) > 2
        assert response.header("content-length") == str(len(response.body))
        assert response.header("date") is not None
        again = await get(origin.port, path + "?v=2")  # the query does not change the file
        assert again.body == response.body and again.header("etag") == etag

    run(test)


def test_assets_script_reads_cache_status_and_uses_the_ws_echo_path() -> None:
    async def test(origin: DemoOrigin) -> None:
        script = (await get(origin.port, "/static/app.js")).body.decode()
        assert "cache-status" in script and '"age"' in script
        assert "/ws/echo" in script and "location.host" in script

    run(test)


def test_if_none_match_gets_304_without_body() -> None:
    async def test(origin: DemoOrigin) -> None:
        etag = (await get(origin.port, "/static/app.css")).header("etag")
        assert etag is not None
        for value in (etag, f"W/{etag}", f'"nope", {etag}', "*"):
            response = await get(origin.port, "/static/app.css", [("if-none-match", value)])
            assert response.status == 304, value
            assert response.body == b""
            assert response.header("etag") == etag
            assert response.header("cache-control") == "public, max-age=300"
        response = await get(origin.port, "/static/app.css", [("if-none-match", '"other"')])
        assert response.status == 200

    run(test)


def test_head_gets_headers_only() -> None:
    async def test(origin: DemoOrigin) -> None:
        client = await Client.open(origin.port)
        try:
            full = await client.request("GET", "/static/app.js")
            head = await client.request("HEAD", "/static/app.js")
        finally:
            await client.close()
        assert head.status == 200
        assert head.body == b""
        assert head.header("content-length") == str(len(full.body))
        assert head.header("etag") == full.header("etag")

    run(test)


def test_keep_alive_serves_many_requests_on_one_connection() -> None:
    async def test(origin: DemoOrigin) -> None:
        client = await Client.open(origin.port)
        try:
            for target in ["/", "/static/app.css", "/echo", "/nope", "/static/app.js"] * 3:
                response = await client.request("GET", target)
                assert response.status in (200, 404)
                assert response.header("connection") is None
        finally:
            await client.close()

    run(test)


def test_pipelined_requests_are_answered_in_order() -> None:
    async def test(origin: DemoOrigin) -> None:
        reader, writer = await asyncio.open_connection(LOCALHOST, origin.port)
        try:
            writer.write(
                b"GET /echo?n=1 HTTP/1.1\r\nHost: x\r\n\r\n"
                b"GET /echo?n=2 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
            )
            data = await reader.read()  # until the origin closes, after the second answer
        finally:
            writer.close()
            await writer.wait_closed()
        assert data.count(b"HTTP/1.1 200 OK\r\n") == 2
        assert data.index(b'"n=1"') < data.index(b'"n=2"')

    run(test)


def test_echo_returns_the_request_as_json() -> None:
    async def test(origin: DemoOrigin) -> None:
        client = await Client.open(origin.port)
        try:
            body = '{"hello": "wörld"}'.encode()
            response = await client.request(
                "POST", "/echo?a=1&b=&a=2", [("X-Demo", "yes"), ("content-type", "x/y")], body
            )
        finally:
            await client.close()
        assert response.status == 200
        assert response.header("content-type") == "application/json"
        assert response.header("cache-control") == "no-store"
        echoed: dict[str, Any] = json.loads(response.body)
        assert echoed["method"] == "POST"
        assert echoed["path"] == "/echo"
        assert echoed["query"] == "a=1&b=&a=2"
        assert echoed["args"] == {"a": ["1", "2"], "b": [""]}
        assert echoed["body"] == body.decode()
        assert echoed["body_length"] == len(body)
        assert "body_base64" not in echoed
        assert ["x-demo", "yes"] in echoed["headers"]
        assert ["host", "demo.test"] in echoed["headers"]

    run(test)


def test_echo_keeps_binary_bodies_exactly() -> None:
    async def test(origin: DemoOrigin) -> None:
        body = bytes(range(256)) * 64
        client = await Client.open(origin.port)
        try:
            response = await client.request("PUT", "/echo", body=body)
        finally:
            await client.close()
        echoed = json.loads(response.body)
        assert echoed["method"] == "PUT"
        assert echoed["body_length"] == len(body)
        assert base64.b64decode(echoed["body_base64"]) == body

    run(test)


def test_expect_100_continue_is_answered() -> None:
    async def test(origin: DemoOrigin) -> None:
        reader, writer = await asyncio.open_connection(LOCALHOST, origin.port)
        try:
            writer.write(
                b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n"
                b"Expect: 100-continue\r\nConnection: close\r\n\r\n"
            )
            assert await reader.readuntil(b"\r\n\r\n") == b"HTTP/1.1 100 Continue\r\n\r\n"
            writer.write(b"hello")
            data = await reader.read()
        finally:
            writer.close()
            await writer.wait_closed()
        assert data.startswith(b"HTTP/1.1 200 OK\r\n")
        assert json.loads(data.split(b"\r\n\r\n", 1)[1])["body"] == "hello"

    run(test)


def test_unknown_path_is_404_and_wrong_method_is_405() -> None:
    async def test(origin: DemoOrigin) -> None:
        client = await Client.open(origin.port)
        try:
            missing = await client.request("GET", "/nope")
            traversal = await client.request("GET", "/static/../demo.py")
            post = await client.request("POST", "/static/app.css", body=b"x")
            plain_ws = await client.request("GET", "/ws/echo")
        finally:
            await client.close()
        assert missing.status == 404 and traversal.status == 404
        assert post.status == 405 and post.header("allow") == "GET, HEAD"
        assert plain_ws.status == 426 and plain_ws.header("upgrade") == "websocket"

    run(test)


def test_malformed_request_gets_400_and_close() -> None:
    async def test(origin: DemoOrigin) -> None:
        reader, writer = await asyncio.open_connection(LOCALHOST, origin.port)
        try:
            writer.write(
                b"GET / HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n"
            )
            data = await reader.read()
        finally:
            writer.close()
            await writer.wait_closed()
        assert data.startswith(b"HTTP/1.1 400 ")
        assert b"\r\nconnection: close\r\n" in data.lower()

    run(test)


# ---------------------------------------------------------------------------------------------
# WebSocket echo through the websockets client


def ws_connect(origin: DemoOrigin) -> connect:
    return connect(f"ws://{LOCALHOST}:{origin.port}/ws/echo", proxy=None, open_timeout=5)


@pytest.mark.parametrize("text", ["hello", "", "ünïcødé ✓", "x" * 200, "y" * 70_000])
def test_ws_echoes_text(text: str) -> None:
    async def test(origin: DemoOrigin) -> None:
        async with ws_connect(origin) as ws:
            await ws.send(text)
            assert await ws.recv() == text

    run(test)


@pytest.mark.parametrize("size", [0, 1, 125, 126, 65_535, 65_536, 100 * 1024])
def test_ws_echoes_binary(size: int) -> None:
    # 125/126 and 65535/65536 sit on the 7-bit / 16-bit / 64-bit length boundaries.
    async def test(origin: DemoOrigin) -> None:
        message = bytes(i * 7 % 251 for i in range(size))
        async with ws_connect(origin) as ws:
            await ws.send(message)
            assert await ws.recv() == message

    run(test)


def test_ws_echoes_fragmented_messages_and_many_in_a_row() -> None:
    async def test(origin: DemoOrigin) -> None:
        async with ws_connect(origin) as ws:
            await ws.send(["frag", "mented ", "text"])
            assert await ws.recv() == "fragmented text"
            await ws.send([b"\x00\x01", b"", b"\x02" * 70_000])
            assert await ws.recv() == b"\x00\x01" + b"\x02" * 70_000
            for i in range(50):
                await ws.send(f"message {i}")
            assert [await ws.recv() for _ in range(50)] == [f"message {i}" for i in range(50)]

    run(test)


def test_ws_answers_ping_with_pong() -> None:
    async def test(origin: DemoOrigin) -> None:
        async with ws_connect(origin) as ws:
            latency = await (await ws.ping(b"are you there"))
            assert latency >= 0
            await ws.send("still open")
            assert await ws.recv() == "still open"

    run(test)


def test_ws_answers_close_with_close() -> None:
    async def test(origin: DemoOrigin) -> None:
        async with ws_connect(origin) as ws:
            await ws.close(code=4000, reason="bye")
            assert ws.close_code == 4000
            assert ws.close_reason == ""
        async with ws_connect(origin) as ws:
            await ws.close()
            assert ws.close_code == 1000

    run(test)


def test_ws_handshake_negotiates_no_extension() -> None:
    async def test(origin: DemoOrigin) -> None:
        async with ws_connect(origin) as ws:  # offers permessage-deflate by default
            response = ws_response(ws)
            assert response.status_code == 101
            assert "Sec-WebSocket-Extensions" not in response.headers
            assert "Sec-WebSocket-Protocol" not in response.headers
            await ws.send("z" * 10_000)  # would be compressed if deflate had been agreed
            assert await ws.recv() == "z" * 10_000

    run(test)


def ws_response(ws: ClientConnection) -> Any:
    assert ws.response is not None
    return ws.response


def test_close_sends_going_away_to_open_websockets_and_ends_idle_connections() -> None:
    async def test(origin: DemoOrigin) -> None:
        idle = await Client.open(origin.port)
        try:
            assert (await idle.request("GET", "/")).status == 200
            async with ws_connect(origin) as ws:
                await ws.send("x")
                assert await ws.recv() == "x"
                await origin.close()
                with pytest.raises(ConnectionClosed):
                    await ws.recv()
                assert ws.close_code == 1001
            assert await idle.reader.read() == b""
        finally:
            await idle.close()
        with pytest.raises(OSError):
            await Client.open(origin.port)

    run(test)


# ---------------------------------------------------------------------------------------------
# WebSocket through raw frames: handshake edge cases and protocol errors

HANDSHAKE_HEADERS = [
    ("Host", "demo.test"),
    ("Upgrade", "websocket"),
    ("Connection", "keep-alive, Upgrade"),
    ("Sec-WebSocket-Key", KEY.decode()),
    ("Sec-WebSocket-Version", "13"),
]


def handshake(headers: list[tuple[str, str]] = HANDSHAKE_HEADERS, method: str = "GET") -> bytes:
    lines = [f"{method} /ws/echo HTTP/1.1", *(f"{k}: {v}" for k, v in headers)]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def client_frame(opcode: int, payload: bytes, *, fin: bool = True, masked: bool = True) -> bytes:
    first = (0x80 if fin else 0) | opcode
    mask_bit = 0x80 if masked else 0
    size = len(payload)
    if size < 126:
        header = struct.pack("!BB", first, mask_bit | size)
    elif size < 1 << 16:
        header = struct.pack("!BBH", first, mask_bit | 126, size)
    else:
        header = struct.pack("!BBQ", first, mask_bit | 127, size)
    if not masked:
        return header + payload
    mask = b"\x9a\x01\xff\x42"
    return header + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload))


async def server_frame(reader: asyncio.StreamReader) -> tuple[bool, int, bytes]:
    first, second = await reader.readexactly(2)
    assert not second & 0x80, "server frames must not be masked"
    assert not first & 0x70, "no reserved bit without an extension"
    size = second & 0x7F
    if size == 126:
        (size,) = struct.unpack("!H", await reader.readexactly(2))
    elif size == 127:
        (size,) = struct.unpack("!Q", await reader.readexactly(8))
    return bool(first & 0x80), first & 0x0F, await reader.readexactly(size)


async def raw_websocket(
    origin: DemoOrigin, after_head: bytes = b""
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """Handshake over a raw socket; `after_head` goes out in the same write as the request."""
    reader, writer = await asyncio.open_connection(LOCALHOST, origin.port)
    writer.write(handshake() + after_head)
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.lower().split(b"\r\n")
    assert lines[0] == b"http/1.1 101 switching protocols"
    assert b"sec-websocket-accept: " + ACCEPT.lower() in lines
    assert b"upgrade: websocket" in lines
    assert b"connection: upgrade" in lines
    return reader, writer


async def close_raw(writer: asyncio.StreamWriter) -> None:
    writer.close()
    await writer.wait_closed()


def test_accept_value_is_rfc_6455_example() -> None:
    assert base64.b64encode(hashlib.sha1(KEY + demo.WS_GUID).digest()) == ACCEPT


def test_ws_frames_sent_with_the_handshake_are_not_lost() -> None:
    # The first frames share the segment with the request head: h11 holds them as trailing_data.
    async def test(origin: DemoOrigin) -> None:
        frames = client_frame(0x1, b"early") + client_frame(0x2, b"\x00bird")
        reader, writer = await raw_websocket(origin, after_head=frames)
        try:
            assert await server_frame(reader) == (True, 0x1, b"early")
            assert await server_frame(reader) == (True, 0x2, b"\x00bird")
        finally:
            await close_raw(writer)

    run(test)


def test_ws_control_frames_between_fragments() -> None:
    async def test(origin: DemoOrigin) -> None:
        reader, writer = await raw_websocket(origin)
        try:
            writer.write(
                client_frame(0x1, b"one ", fin=False)
                + client_frame(0x9, b"ping!")
                + client_frame(0x0, b"two ", fin=False)
                + client_frame(0xA, b"unsolicited pong")
                + client_frame(0x0, "thrée".encode())
            )
            assert await server_frame(reader) == (True, 0xA, b"ping!")
            assert await server_frame(reader) == (True, 0x1, "one two thrée".encode())
            writer.write(client_frame(0x8, struct.pack("!H", 1000) + b"done"))
            assert await server_frame(reader) == (True, 0x8, struct.pack("!H", 1000))
            assert await reader.read() == b""  # then the server closes the connection
        finally:
            await close_raw(writer)

    run(test)


def test_ws_empty_close_is_answered_with_empty_close() -> None:
    async def test(origin: DemoOrigin) -> None:
        reader, writer = await raw_websocket(origin)
        try:
            writer.write(client_frame(0x8, b""))
            assert await server_frame(reader) == (True, 0x8, b"")
            assert await reader.read() == b""
        finally:
            await close_raw(writer)

    run(test)


@pytest.mark.parametrize(
    ("frames", "code"),
    [
        (client_frame(0x1, b"not masked", masked=False), 1002),
        (bytes([0x80 | 0x40 | 0x1, 0x80]) + b"\0\0\0\0", 1002),  # RSV1 without an extension
        (client_frame(0x3, b"?"), 1002),  # reserved opcode
        (client_frame(0x9, b"p" * 126), 1002),  # control frame over 125 bytes
        (client_frame(0x9, b"p", fin=False), 1002),  # fragmented control frame
        (client_frame(0x0, b"orphan"), 1002),
        (client_frame(0x1, b"a", fin=False) + client_frame(0x1, b"b"), 1002),
        (client_frame(0x1, b"\xff\xfe"), 1007),  # text that is not UTF-8
        (client_frame(0x1, b"\xc3", fin=False) + client_frame(0x0, b"\xa9"), None),  # é: fine
        (client_frame(0x8, b"\x03"), 1002),  # 1-byte close payload
        (client_frame(0x8, struct.pack("!H", 1005)), 1002),  # code that must not be sent
        (client_frame(0x8, struct.pack("!H", 1000) + b"\xff"), 1007),
    ],
)
def test_ws_protocol_errors_close_with_the_right_code(frames: bytes, code: int | None) -> None:
    async def test(origin: DemoOrigin) -> None:
        reader, writer = await raw_websocket(origin)
        try:
            writer.write(frames)
            fin, opcode, payload = await server_frame(reader)
            if code is None:
                assert (fin, opcode, payload) == (True, 0x1, "é".encode())
                return
            assert opcode == 0x8
            assert struct.unpack("!H", payload[:2])[0] == code
            writer.write(client_frame(0x8, payload[:2]))  # complete the closing handshake
            assert await reader.read() == b""
        finally:
            await close_raw(writer)

    run(test)


def test_ws_message_over_the_limit_closes_with_1009(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(demo, "MAX_MESSAGE_BYTES", 1000)

    async def test(origin: DemoOrigin) -> None:
        reader, writer = await raw_websocket(origin)
        try:
            writer.write(client_frame(0x2, b"a" * 600, fin=False) + client_frame(0x0, b"b" * 600))
            _, opcode, payload = await server_frame(reader)
            assert opcode == 0x8 and struct.unpack("!H", payload[:2])[0] == 1009
        finally:
            await close_raw(writer)

    run(test)


def without(name: str) -> list[tuple[str, str]]:
    return [(k, v) for k, v in HANDSHAKE_HEADERS if k != name]


@pytest.mark.parametrize(
    ("headers", "method"),
    [
        (without("Sec-WebSocket-Key"), "GET"),
        ([*without("Sec-WebSocket-Key"), ("Sec-WebSocket-Key", "c2hvcnQ=")], "GET"),
        ([*without("Sec-WebSocket-Key"), ("Sec-WebSocket-Key", "not base64!!")], "GET"),
        ([*HANDSHAKE_HEADERS, ("Sec-WebSocket-Key", KEY.decode())], "GET"),  # two keys
        ([*without("Sec-WebSocket-Version"), ("Sec-WebSocket-Version", "8")], "GET"),
        (without("Sec-WebSocket-Version"), "GET"),
        ([*without("Connection"), ("Connection", "keep-alive")], "GET"),
        ([*without("Upgrade"), ("Upgrade", "h2c")], "GET"),
        ([*HANDSHAKE_HEADERS, ("Content-Length", "0")], "POST"),
    ],
)
def test_bad_handshake_gets_400_and_the_connection_stays_usable(
    headers: list[tuple[str, str]], method: str
) -> None:
    async def test(origin: DemoOrigin) -> None:
        reader, writer = await asyncio.open_connection(LOCALHOST, origin.port)
        try:
            writer.write(handshake(headers, method) + b"GET /echo HTTP/1.1\r\nHost: x\r\n\r\n")
            first = await reader.readuntil(b"\r\n\r\n")
            assert first.startswith(b"HTTP/1.1 400 "), first
            length = int(first.lower().split(b"content-length: ")[1].split(b"\r\n")[0])
            await reader.readexactly(length)
            second = await reader.readuntil(b"\r\n\r\n")
            assert second.startswith(b"HTTP/1.1 200 ")  # rejected upgrade: plain keep-alive
            if headers == without("Sec-WebSocket-Version") or ("Sec-WebSocket-Version", "8") in (
                headers
            ):
                assert b"\r\nsec-websocket-version: 13\r\n" in first.lower()
        finally:
            await close_raw(writer)

    run(test)


# ---------------------------------------------------------------------------------------------
# run_demo's port choice, with the real proxy


def test_run_demo_falls_back_to_a_free_port_when_3000_is_taken(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Without --port the demo wants 3000; when something holds it, it takes a free port."""
    holder = socket.socket()
    try:
        holder.bind((LOCALHOST, 3000))
        holder.listen()
    except OSError:
        pass  # already taken by someone else: the fallback is exercised all the same

    async def main() -> None:
        task = asyncio.create_task(demo.run_demo())
        output = ""
        while "phantom demo: open" not in output:
            if task.done():
                task.result()
            await asyncio.sleep(0.01)
            output += capsys.readouterr().out
        port = int(output.split()[3].rsplit(":", 1)[1].rstrip("/"))
        assert port != 3000
        assert (await get(port, "/")).status == 200
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    try:
        asyncio.run(asyncio.wait_for(main(), TIMEOUT))
    finally:
        holder.close()


def test_run_demo_with_an_explicit_busy_port_raises() -> None:
    holder = socket.socket()
    holder.bind((LOCALHOST, 0))
    holder.listen()
    try:
        busy = holder.getsockname()[1]
        with pytest.raises(OSError):
            asyncio.run(asyncio.wait_for(demo.run_demo(port=busy), TIMEOUT))
    finally:
        holder.close()


@pytest.mark.parametrize(
    ("host", "shown"),
    [
        ("127.0.0.1", "127.0.0.1"),
        ("0.0.0.0", "127.0.0.1"),
        ("::", "[::1]"),
        ("::1", "[::1]"),
        ("localhost", "localhost"),
    ],
)
def test_browser_host(host: str, shown: str) -> None:
    assert demo._browser_host(host) == shown


# ---------------------------------------------------------------------------------------------
# run_demo end to end, with the real proxy (what `phantom serve --demo` runs; port 0 here)


def test_run_demo_end_to_end_through_the_real_proxy(capsys: pytest.CaptureFixture[str]) -> None:
    async def main() -> None:
        task = asyncio.create_task(demo.run_demo(port=0))
        output = ""
        while "phantom demo: open" not in output:
            if task.done():
                task.result()
            await asyncio.sleep(0.01)
            output += capsys.readouterr().out
        url = output.split()[3]
        assert url.startswith(f"http://{LOCALHOST}:") and url.endswith("/")
        port = int(url[len(f"http://{LOCALHOST}:") : -1])
        try:
            client = await Client.open(port)
            try:
                page = await client.request("GET", "/")
                assert page.status == 200 and b'id="ws-log"' in page.body
                # What app.js sends: the browser adds Pragma: no-cache to a cache: "no-store"
                # fetch; our explicit Cache-Control keeps it from adding no-cache as well.
                page_fetch = [("cache-control", "max-stale=0"), ("pragma", "no-cache")]
                first = await client.request("GET", "/static/app.css", page_fetch)
                second = await client.request("GET", "/static/app.css", page_fetch)
                assert first.status == second.status == 200 and first.body == second.body
                status = second.header("cache-status")
                assert status is not None and "hit" in status.split(";")[1]
                echo = await client.request("POST", "/echo", body=b"through phantom")
                assert json.loads(echo.body)["body"] == "through phantom"
            finally:
                await client.close()
            async with connect(f"ws://{LOCALHOST}:{port}/ws/echo", proxy=None) as ws:
                await ws.send("tunnelled")
                assert await ws.recv() == "tunnelled"
                await ws.send(b"\xff" * 100 * 1024)
                assert await ws.recv() == b"\xff" * 100 * 1024
        finally:
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
        with pytest.raises(OSError):
            await Client.open(port)  # the proxy is closed

    asyncio.run(asyncio.wait_for(main(), 20))
