"""The built-in demo behind ``phantom serve --demo``.

:class:`DemoOrigin` is a small, self-contained HTTP/1.1 origin (asyncio streams + h11, keep-alive)
that serves a page exercising what phantom does: cacheable static assets, an uncacheable ``/echo``
and a WebSocket echo at ``/ws/echo`` (a minimal RFC 6455 server, no extensions).
:func:`run_demo` starts it on a free local port, puts a phantom proxy in front of it and prints the
URL to open.

Routes::

    GET|HEAD /                  index.html       Cache-Control: public, max-age=10    + ETag
    GET|HEAD /static/app.css    stylesheet       Cache-Control: public, max-age=300   + ETag
    GET|HEAD /static/app.js     script           Cache-Control: public, max-age=300   + ETag
    ANY      /echo              the request as JSON (method, path, query, headers, body); no-store
    GET      /ws/echo           WebSocket echo (Upgrade: websocket); a bad handshake gets 400
    anything else               404 (405 for a wrong method on a static asset)
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import email.utils
import hashlib
import importlib
import json
import logging
import struct
from collections.abc import Sequence
from dataclasses import dataclass, field
from http import HTTPStatus
from importlib import resources
from typing import Any, Protocol
from urllib.parse import parse_qs

import h11

from phantom.messages import MessageTooLarge, read_message

__all__ = ["DemoOrigin", "run_demo"]

log = logging.getLogger("phantom.demo")

DEFAULT_PROXY_PORT = 3000
READ_SIZE = 64 * 1024
MAX_BODY_BYTES = 16 * 1024 * 1024  # /echo request bodies; larger ones get 413
MAX_MESSAGE_BYTES = 16 * 1024 * 1024  # WebSocket messages; larger ones close with 1009
CLOSE_HANDSHAKE_TIMEOUT = 5.0  # after failing a WebSocket, how long we wait for the peer's EOF

WS_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
SERVER_NAME = b"phantom-demo-origin"


# ---------------------------------------------------------------------------------------------
# Responses and static assets


@dataclass(slots=True)
class _Response:
    status: int
    headers: list[tuple[bytes, bytes]] = field(default_factory=list)
    body: bytes = b""


@dataclass(frozen=True, slots=True)
class _Asset:
    body: bytes
    content_type: bytes
    cache_control: bytes
    etag: bytes


# URL path -> (file in phantom/demo_assets, Content-Type, Cache-Control)
_ASSET_ROUTES: dict[bytes, tuple[str, bytes, bytes]] = {
    b"/": ("index.html", b"text/html; charset=utf-8", b"public, max-age=10"),
    b"/static/app.css": ("app.css", b"text/css; charset=utf-8", b"public, max-age=300"),
    b"/static/app.js": ("app.js", b"text/javascript; charset=utf-8", b"public, max-age=300"),
}


def _load_assets() -> dict[bytes, _Asset]:
    root = resources.files("phantom").joinpath("demo_assets")
    assets = {}
    for path, (name, content_type, cache_control) in _ASSET_ROUTES.items():
        body = root.joinpath(name).read_bytes()
        etag = b'"' + hashlib.sha256(body).hexdigest()[:20].encode() + b'"'
        assets[path] = _Asset(body, content_type, cache_control, etag)
    return assets


def _text_response(status: int, text: str, *extra: tuple[bytes, bytes]) -> _Response:
    headers = [
        (b"content-type", b"text/plain; charset=utf-8"),
        (b"cache-control", b"no-store"),
        *extra,
    ]
    return _Response(status, headers, text.encode() + b"\n")


def _header_tokens(headers: Sequence[tuple[bytes, bytes]], name: bytes) -> list[bytes]:
    """The comma-separated tokens of every `name` header, lowercased and stripped."""
    tokens: list[bytes] = []
    for key, value in headers:
        if key == name:
            tokens.extend(t.strip().lower() for t in value.split(b","))
    return [t for t in tokens if t]


def _header_values(headers: Sequence[tuple[bytes, bytes]], name: bytes) -> list[bytes]:
    return [value for key, value in headers if key == name]


def _etag_matches(if_none_match: list[bytes], etag: bytes) -> bool:
    """Weak comparison, as If-None-Match asks (RFC 9110, 13.1.2)."""
    for value in if_none_match:
        for candidate in value.split(b","):
            candidate = candidate.strip()
            if candidate == b"*" or candidate.removeprefix(b"W/") == etag:
                return True
    return False


def _static_response(asset: _Asset, request: h11.Request) -> _Response:
    validators = [(b"cache-control", asset.cache_control), (b"etag", asset.etag)]
    if_none_match = _header_values(request.headers, b"if-none-match")
    if if_none_match and _etag_matches(if_none_match, asset.etag):
        return _Response(304, validators)
    return _Response(200, [(b"content-type", asset.content_type), *validators], asset.body)


def _echo_response(request: h11.Request, body: bytes) -> _Response:
    path, _, query = request.target.partition(b"?")
    document: dict[str, Any] = {
        "method": request.method.decode("ascii", "replace"),
        "path": path.decode("latin-1"),
        "query": query.decode("latin-1"),
        "args": parse_qs(query.decode("latin-1"), keep_blank_values=True),
        "http_version": request.http_version.decode("ascii", "replace"),
        "headers": [[k.decode("latin-1"), v.decode("latin-1")] for k, v in request.headers],
        "body": body.decode("utf-8", "replace"),
        "body_length": len(body),
    }
    try:
        body.decode("utf-8")
    except UnicodeDecodeError:
        document["body_base64"] = base64.b64encode(body).decode("ascii")
    payload = json.dumps(document, indent=2).encode() + b"\n"
    headers = [(b"content-type", b"application/json"), (b"cache-control", b"no-store")]
    return _Response(200, headers, payload)


def _websocket_accept(request: h11.Request) -> bytes | _Response:
    """Check an opening handshake (RFC 6455, 4.2.1): the Sec-WebSocket-Accept value, or a 400."""
    if request.method != b"GET" or request.http_version != b"1.1":
        return _text_response(400, "a WebSocket handshake is a GET over HTTP/1.1")
    if b"websocket" not in _header_tokens(request.headers, b"upgrade"):
        return _text_response(400, "Upgrade: websocket expected")
    if b"upgrade" not in _header_tokens(request.headers, b"connection"):
        return _text_response(400, "Connection: Upgrade expected")
    if _header_values(request.headers, b"sec-websocket-version") != [b"13"]:
        return _text_response(
            400, "Sec-WebSocket-Version: 13 expected", (b"sec-websocket-version", b"13")
        )
    keys = _header_values(request.headers, b"sec-websocket-key")
    try:
        valid_key = len(keys) == 1 and len(base64.b64decode(keys[0], validate=True)) == 16
    except binascii.Error:
        valid_key = False
    if not valid_key:
        return _text_response(400, "Sec-WebSocket-Key: one base64-encoded 16-byte value expected")
    return base64.b64encode(hashlib.sha1(keys[0] + WS_GUID).digest())


# ---------------------------------------------------------------------------------------------
# WebSocket echo (RFC 6455, server side)

OP_CONTINUATION = 0x0
OP_TEXT = 0x1
OP_BINARY = 0x2
OP_CLOSE = 0x8
OP_PING = 0x9
OP_PONG = 0xA

# Close codes a peer may send (RFC 6455, 7.4); 1004-1006 and 1015 must never be on the wire.
_VALID_CLOSE_CODES = frozenset({1000, 1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011})


class _WebSocketError(Exception):
    """A protocol violation by the peer: close the connection with `code`."""

    def __init__(self, code: int, reason: str) -> None:
        super().__init__(f"{code} {reason}")
        self.code = code
        self.reason = reason


def _encode_frame(opcode: int, payload: bytes) -> bytes:
    """One unfragmented, unmasked frame (servers never mask)."""
    first = 0x80 | opcode
    length = len(payload)
    if length < 126:
        header = struct.pack("!BB", first, length)
    elif length < 1 << 16:
        header = struct.pack("!BBH", first, 126, length)
    else:
        header = struct.pack("!BBQ", first, 127, length)
    return header + payload


def _unmask(payload: bytes, mask: bytes) -> bytes:
    if not payload:
        return payload
    size = len(payload)
    key = (mask * (size // 4 + 1))[:size]
    return (int.from_bytes(payload, "big") ^ int.from_bytes(key, "big")).to_bytes(size, "big")


def _close_reply(payload: bytes) -> bytes:
    """The payload of our answer to a Close frame: its status code, or nothing if it had none."""
    if not payload:
        return b""
    if len(payload) == 1:
        raise _WebSocketError(1002, "close frame with a 1-byte payload")
    (code,) = struct.unpack("!H", payload[:2])
    if code not in _VALID_CLOSE_CODES and not 3000 <= code <= 4999:
        raise _WebSocketError(1002, f"invalid close code {code}")
    try:
        payload[2:].decode("utf-8")
    except UnicodeDecodeError:
        raise _WebSocketError(1007, "close reason is not valid UTF-8") from None
    return payload[:2]


class _WebSocketEcho:
    """Echo every message back, answer pings, answer Close with Close; then return."""

    def __init__(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        buffered: bytes,
        eof: bool,
    ) -> None:
        self._reader = reader
        self._writer = writer
        self._buffer = bytearray(buffered)  # bytes h11 read past the handshake come first
        self._eof = eof

    async def run(self) -> None:
        try:
            await self._echo()
        except _WebSocketError as err:
            log.debug("demo origin: websocket closed by us: %s", err)
            payload = struct.pack("!H", err.code) + err.reason.encode()[:123]
            await self._send(OP_CLOSE, payload)
            await self._await_close()
        except asyncio.CancelledError:
            with contextlib.suppress(OSError, RuntimeError):
                self._writer.write(_encode_frame(OP_CLOSE, struct.pack("!H", 1001)))
            raise

    async def _echo(self) -> None:
        opcode: int | None = None  # of the message being reassembled from fragments
        parts: list[bytes] = []
        size = 0
        while True:
            fin, frame_opcode, payload = await self._read_frame(MAX_MESSAGE_BYTES - size)
            if frame_opcode == OP_CLOSE:
                await self._send(OP_CLOSE, _close_reply(payload))
                return
            if frame_opcode == OP_PING:
                await self._send(OP_PONG, payload)
                continue
            if frame_opcode == OP_PONG:
                continue
            if frame_opcode in (OP_TEXT, OP_BINARY):
                if opcode is not None:
                    raise _WebSocketError(1002, "new message inside a fragmented one")
                opcode = frame_opcode
            elif frame_opcode == OP_CONTINUATION:
                if opcode is None:
                    raise _WebSocketError(1002, "continuation frame outside a message")
            else:
                raise _WebSocketError(1002, f"unknown opcode {frame_opcode:#x}")
            parts.append(payload)
            size += len(payload)
            if not fin:
                continue
            message = b"".join(parts)
            if opcode == OP_TEXT:
                try:
                    message.decode("utf-8")
                except UnicodeDecodeError:
                    raise _WebSocketError(1007, "text message is not valid UTF-8") from None
            await self._send(opcode, message)
            opcode, parts, size = None, [], 0

    async def _read_frame(self, limit: int) -> tuple[bool, int, bytes]:
        first, second = await self._read_exactly(2)
        fin = bool(first & 0x80)
        opcode = first & 0x0F
        if first & 0x70:
            raise _WebSocketError(1002, "reserved bits set (no extension was negotiated)")
        if not second & 0x80:
            raise _WebSocketError(1002, "client frames must be masked")
        length = second & 0x7F
        if length == 126:
            (length,) = struct.unpack("!H", await self._read_exactly(2))
        elif length == 127:
            (length,) = struct.unpack("!Q", await self._read_exactly(8))
            if length >> 63:
                raise _WebSocketError(1002, "64-bit length with the top bit set")
        if opcode >= 0x8 and (not fin or length > 125):
            raise _WebSocketError(1002, "control frames must be final and at most 125 bytes")
        if length > limit:
            raise _WebSocketError(1009, "message too big")
        mask = await self._read_exactly(4)
        return fin, opcode, _unmask(await self._read_exactly(length), mask)

    async def _read_exactly(self, n: int) -> bytes:
        while len(self._buffer) < n:
            if self._eof:
                raise asyncio.IncompleteReadError(bytes(self._buffer), n)
            data = await self._reader.read(READ_SIZE)
            if data:
                self._buffer += data
            else:
                self._eof = True
        chunk = bytes(self._buffer[:n])
        del self._buffer[:n]
        return chunk

    async def _send(self, opcode: int, payload: bytes) -> None:
        self._writer.write(_encode_frame(opcode, payload))
        await self._writer.drain()

    async def _await_close(self) -> None:
        """After failing the connection (RFC 6455, 7.1.7): stop processing the peer's data, but
        half-close and read until its EOF (bounded), so that closing with unread bytes in the
        receive buffer does not reset the connection and destroy our Close frame on the way."""
        if self._writer.can_write_eof():
            with contextlib.suppress(OSError, RuntimeError):
                self._writer.write_eof()
        self._buffer.clear()
        with contextlib.suppress(asyncio.TimeoutError, OSError):
            await asyncio.wait_for(self._discard_until_eof(), CLOSE_HANDSHAKE_TIMEOUT)

    async def _discard_until_eof(self) -> None:
        while not self._eof:
            self._eof = not await self._reader.read(READ_SIZE)


# ---------------------------------------------------------------------------------------------
# The origin server


class _RequestTooLarge(Exception):
    def __init__(self, method: bytes) -> None:
        super().__init__(method)
        self.method = method


class DemoOrigin:
    """The demo's origin server. ``await start()``, read ``.port``, ``await close()``.

    Listens on `host` (127.0.0.1) and `port` (0: a free one). Also an async context manager.
    """

    def __init__(self, host: str = "127.0.0.1", port: int = 0) -> None:
        self.host = host
        self._requested_port = port
        self._port: int | None = None
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[Any]] = set()
        self._writers: set[asyncio.StreamWriter] = set()
        self._assets = _load_assets()

    @property
    def port(self) -> int:
        if self._port is None:
            raise RuntimeError("DemoOrigin is not started")
        return self._port

    @property
    def url(self) -> str:
        """``http://host:port`` (no trailing slash), usable as a server's ``proxy_url``."""
        return f"http://{self.host}:{self.port}"

    async def start(self) -> None:
        if self._server is not None:
            raise RuntimeError("DemoOrigin is already started")
        self._server = await asyncio.start_server(
            self._on_connection, self.host, self._requested_port
        )
        self._port = self._server.sockets[0].getsockname()[1]
        log.debug("demo origin: listening on %s:%d", self.host, self._port)

    async def close(self) -> None:
        """Stop listening and close open connections (WebSockets get Close 1001 first)."""
        server, self._server = self._server, None
        if server is None:
            return
        server.close()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        for writer in list(self._writers):
            writer.transport.abort()  # a peer that does not read must not hold up the close
        await server.wait_closed()

    async def __aenter__(self) -> DemoOrigin:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    async def _on_connection(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        if self._server is None:  # accepted just as close() began
            writer.close()
            return
        task = asyncio.current_task()
        if task is not None:
            self._tasks.add(task)
        self._writers.add(writer)
        try:
            await self._serve(reader, writer)
        except (ConnectionError, asyncio.IncompleteReadError):
            pass  # the peer went away
        except asyncio.CancelledError:
            # close() cancels us. This is a top-level task nobody awaits, and Python 3.11's
            # start_server logs an error for a connection task that ends cancelled.
            pass
        except Exception:
            log.exception("demo origin: connection failed")
        finally:
            self._writers.discard(writer)
            if task is not None:
                self._tasks.discard(task)
            writer.close()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        conn = h11.Connection(h11.SERVER)
        while True:
            try:
                received = await self._read_request(conn, reader, writer)
            except h11.RemoteProtocolError as exc:
                response = _text_response(exc.error_status_hint, f"bad request: {exc}")
                await self._respond_and_close(conn, writer, response, b"GET")
                return
            except _RequestTooLarge as exc:
                response = _text_response(413, f"request body over {MAX_BODY_BYTES} bytes")
                await self._respond_and_close(conn, writer, response, exc.method)
                return
            if received is None:
                return
            request, body = received
            path = request.target.partition(b"?")[0]
            if path == b"/ws/echo" and _header_values(request.headers, b"upgrade"):
                accept = _websocket_accept(request)
                if isinstance(accept, bytes):
                    await self._switch_to_websocket(conn, reader, writer, accept)
                    return
                response = accept
            else:
                response = self._route(request, path, body)
            await self._send(conn, writer, request.method, response)
            log.debug(
                "demo origin: %s %s -> %d",
                request.method.decode("ascii", "replace"),
                request.target.decode("latin-1"),
                response.status,
            )
            if conn.our_state is not h11.DONE or conn.their_state is not h11.DONE:
                return  # MUST_CLOSE (Connection: close, HTTP/1.0, ...)
            conn.start_next_cycle()

    async def _read_request(
        self, conn: h11.Connection, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> tuple[h11.Request, bytes] | None:
        """The next request and its body, or None when the client closed between requests."""

        def continue_if_asked() -> None:
            if conn.they_are_waiting_for_100_continue:
                interim = h11.InformationalResponse(status_code=100, headers=[], reason=b"Continue")
                writer.write(conn.send(interim) or b"")

        try:
            message = await read_message(conn, reader, MAX_BODY_BYTES, continue_if_asked)
        except MessageTooLarge as exc:
            method = exc.head.method if isinstance(exc.head, h11.Request) else b"GET"
            raise _RequestTooLarge(method) from None
        if message is None:
            return None
        request, body = message
        assert isinstance(request, h11.Request)  # a server's h11 only parses requests
        return request, body

    def _route(self, request: h11.Request, path: bytes, body: bytes) -> _Response:
        if path == b"/echo":
            return _echo_response(request, body)
        asset = self._assets.get(path)
        if asset is not None:
            if request.method not in (b"GET", b"HEAD"):
                return _text_response(405, "method not allowed", (b"allow", b"GET, HEAD"))
            return _static_response(asset, request)
        if path == b"/ws/echo":
            return _text_response(426, "WebSocket only", (b"upgrade", b"websocket"))
        return _text_response(404, "not found")

    async def _send(
        self, conn: h11.Connection, writer: asyncio.StreamWriter, method: bytes, r: _Response
    ) -> None:
        headers = [
            (b"date", email.utils.formatdate(usegmt=True).encode()),
            (b"server", SERVER_NAME),
            *r.headers,
        ]
        if r.status >= 200 and r.status not in (204, 304):
            headers.append((b"content-length", str(len(r.body)).encode()))
        reason = HTTPStatus(r.status).phrase.encode()
        data = conn.send(h11.Response(status_code=r.status, headers=headers, reason=reason))
        if r.body and method != b"HEAD" and r.status not in (204, 304):
            data += conn.send(h11.Data(data=r.body))
        data += conn.send(h11.EndOfMessage())
        writer.write(data)
        await writer.drain()

    async def _respond_and_close(
        self,
        conn: h11.Connection,
        writer: asyncio.StreamWriter,
        response: _Response,
        method: bytes,
    ) -> None:
        if conn.our_state not in (h11.IDLE, h11.SEND_RESPONSE):
            return
        response.headers.append((b"connection", b"close"))
        with contextlib.suppress(h11.LocalProtocolError, OSError):
            await self._send(conn, writer, method, response)

    async def _switch_to_websocket(
        self,
        conn: h11.Connection,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        accept: bytes,
    ) -> None:
        headers = [
            (b"upgrade", b"websocket"),
            (b"connection", b"Upgrade"),
            (b"sec-websocket-accept", accept),
            (b"server", SERVER_NAME),
        ]
        writer.write(
            conn.send(
                h11.InformationalResponse(
                    status_code=101, headers=headers, reason=b"Switching Protocols"
                )
            )
        )
        await writer.drain()
        log.debug("demo origin: GET /ws/echo -> 101")
        buffered, eof = conn.trailing_data  # bytes that followed the handshake: keep them
        await _WebSocketEcho(reader, writer, bytes(buffered), eof).run()


# ---------------------------------------------------------------------------------------------
# phantom serve --demo


class _ProxyLike(Protocol):
    """What run_demo needs of phantom.proxy.Proxy."""

    @property
    def port(self) -> int: ...

    async def start(self) -> None: ...

    async def serve_forever(self) -> None: ...

    async def close(self) -> None: ...


def _create_proxy(config: dict[str, Any]) -> _ProxyLike:
    # Imported lazily: the demo origin alone must not need the proxy's I/O layer.
    module = importlib.import_module("phantom.proxy")
    proxy: _ProxyLike = module.create_proxy(config)
    return proxy


def _browser_host(host: str) -> str:
    """The host to put in the printed URL: wildcard addresses become loopback, IPv6 bracketed."""
    if host in ("", "0.0.0.0"):
        return "127.0.0.1"
    if host == "::":
        return "[::1]"
    return f"[{host}]" if ":" in host else host


async def _start_proxy(config: dict[str, Any], port_given: bool) -> _ProxyLike:
    proxy = _create_proxy(config)
    try:
        await proxy.start()
        return proxy
    except OSError as exc:
        with contextlib.suppress(Exception):
            await proxy.close()
        if port_given:
            raise
        log.info("port %s is not available (%s); using a free port", config["http_port"], exc)
    proxy = _create_proxy({**config, "http_port": 0})
    await proxy.start()
    return proxy


async def run_demo(
    *, host: str = "127.0.0.1", port: int | None = None, log_level: str = "info"
) -> None:
    """Run the demo until cancelled: the origin on 127.0.0.1 (free port), phantom in front.

    The proxy listens on `host`:`port`; without `port`, on 3000, or a free port if 3000 is taken.
    An explicit port that cannot be bound raises the OSError. Everything is closed on the way out.
    """
    origin = DemoOrigin()
    await origin.start()
    proxy: _ProxyLike | None = None
    try:
        config: dict[str, Any] = {
            "listen": host,
            "http_port": DEFAULT_PROXY_PORT if port is None else port,
            "log_level": log_level,
            "server": {"demo": {"proxy_url": origin.url}},
        }
        proxy = await _start_proxy(config, port_given=port is not None)
        print(
            f"phantom demo: open http://{_browser_host(host)}:{proxy.port}/  "
            f"(origin on 127.0.0.1:{origin.port}; Ctrl-C to stop)",
            flush=True,
        )
        await proxy.serve_forever()
    finally:
        try:
            if proxy is not None:
                await proxy.close()
        finally:
            await origin.close()
