"""Real test backends for the integration tests (127.0.0.1, port 0 only).

* `TestOrigin`: an h11 keep-alive HTTP/1.1 origin with a per-test route table. It counts
  requests per path and accepted TCP connections and records every request it received
  (headers as sent, body), so tests can check forwarding, keep-alive reuse and header rules.
* `UpgradeBackend`: a raw-socket backend for custom upgrades (`Upgrade: <any token>`): answers
  with a 101 (optionally with bytes behind it in the same write) and then echoes raw bytes; or
  refuses with a 403 and a body.
* `WebSocketBackend`: the `websockets` library server, echoing messages.

Every backend is an async context manager: started on entry, stopped (all its connections
closed) on exit.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import random
import socket
import ssl
import struct
import time
from collections import Counter
from collections.abc import AsyncIterable, Awaitable, Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any, Literal

import h11
from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.exceptions import ConnectionClosed

LOCALHOST = "127.0.0.1"
READ_SIZE = 256 * 1024

Headers = list[tuple[bytes, bytes]]
Body = bytes | Iterable[bytes] | AsyncIterable[bytes]


def payload(size: int, seed: int = 0) -> bytes:
    """Deterministic pseudo-random bytes (incompressible, reproducible)."""
    return random.Random(seed).randbytes(size)


def payload_chunks(size: int, seed: int = 0, chunk: int = 1024 * 1024) -> Iterator[bytes]:
    """`size` deterministic bytes in chunks (a different stream than `payload(size, seed)`)."""
    rng = random.Random(seed)
    left = size
    while left > 0:
        n = min(chunk, left)
        yield rng.randbytes(n)
        left -= n


def unused_port() -> int:
    """A loopback port with nothing listening on it (bound on port 0, then closed)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((LOCALHOST, 0))
        port: int = sock.getsockname()[1]
    return port


def _b(value: str | bytes | int) -> bytes:
    if isinstance(value, bytes):
        return value
    return str(value).encode("latin-1")


def set_linger_zero(sock: socket.socket | None) -> None:
    """Make the next close() send a RST (an abrupt vanish) instead of a FIN."""
    if sock is not None:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))


@dataclass
class OriginRequest:
    """A request as the origin received it."""

    method: bytes
    target: bytes
    headers: Headers  # names lowercased (h11 style), order and repeats kept
    raw_headers: Headers  # names exactly as they arrived on the wire
    body: bytes
    http_version: bytes
    connection_id: int

    @property
    def path(self) -> str:
        return self.target.split(b"?", 1)[0].decode("latin-1")

    def get_all(self, name: str) -> list[str]:
        key = name.lower().encode("latin-1")
        return [v.decode("latin-1") for n, v in self.headers if n == key]

    def get(self, name: str) -> str | None:
        values = self.get_all(name)
        return values[0] if values else None

    def has(self, name: str) -> bool:
        return bool(self.get_all(name))


@dataclass
class Reply:
    """What a route answers.

    body: bytes (sent with Content-Length unless the headers say otherwise), or an iterator /
    async iterator of chunks (sent chunked unless a Content-Length header is given).
    """

    status: int = 200
    headers: list[tuple[str | bytes, str | bytes | int]] = field(default_factory=list)
    body: Body = b""
    delay: float = 0.0  # seconds to wait before sending the head
    body_delay: float = 0.0  # seconds to wait between the head and each body chunk
    silent: bool = False  # never answer; hold the connection until the peer closes it
    abort_after: int | None = None  # send this many body bytes, then close the connection
    close_after: bool = False  # close the connection right after the response (no header)


Handler = Callable[[OriginRequest], Reply | Awaitable[Reply]]
Route = Handler | Reply
OriginMode = Literal["normal", "silent", "close_mid_body"]


def echo(request: OriginRequest) -> Reply:
    """Answer with the request body and a few facts about the request."""
    return Reply(
        200,
        [
            ("Content-Type", "application/octet-stream"),
            ("X-Echo-Method", request.method),
            ("X-Echo-Target", request.target),
            ("Cache-Control", "no-store"),
        ],
        request.body,
    )


def _not_found(request: OriginRequest) -> Reply:
    return Reply(404, [("Content-Type", "text/plain")], b"no route for " + request.target)


class TestOrigin:
    """An asyncio HTTP/1.1 origin (h11, keep-alive) with a route table set per test.

    routes maps a path (target without query) to a `Reply` or a handler
    `(OriginRequest) -> Reply | Awaitable[Reply]`; unmatched paths get 404.
    mode: "normal"; "silent" (read the request, never answer); "close_mid_body" (send the head
    with the route's Content-Length, then half the body, then close).
    drop_reused: close a kept-alive connection, without answering, when a further request
    arrives on it (the idle-close race a proxy's pool must survive by retrying).
    """

    __test__ = False  # not a pytest test class

    def __init__(
        self,
        routes: dict[str, Route] | None = None,
        *,
        mode: OriginMode = "normal",
        tls: ssl.SSLContext | None = None,
    ) -> None:
        self.routes: dict[str, Route] = dict(routes or {})
        self.mode: OriginMode = mode
        self.tls = tls  # serve HTTPS with this server context
        self.drop_reused = False
        self.dropped = 0  # requests dropped by drop_reused
        self.requests: Counter[str] = Counter()  # per path
        self.log: list[OriginRequest] = []
        self.connections_accepted = 0
        self.connections_closed = 0
        self.port = 0
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self._tasks: set[asyncio.Task[None]] = set()

    # -- lifecycle -----------------------------------------------------------------------

    async def start(self) -> TestOrigin:
        # Port 0 the first time; started again after close(), the same port (a backend back).
        self._server = await asyncio.start_server(
            self._handle, LOCALHOST, self.port, ssl=self.tls
        )
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
        for writer in list(self._writers):
            writer.close()
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._server is not None:
            await self._server.wait_closed()
            self._server = None

    async def __aenter__(self) -> TestOrigin:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    # -- helpers for tests ---------------------------------------------------------------

    def route(self, path: str, reply: Route) -> None:
        self.routes[path] = reply

    @property
    def url(self) -> str:
        return f"{'https' if self.tls else 'http'}://{LOCALHOST}:{self.port}"

    @property
    def open_connections(self) -> int:
        return self.connections_accepted - self.connections_closed

    def requests_for(self, path: str) -> list[OriginRequest]:
        return [r for r in self.log if r.path == path]

    @property
    def last(self) -> OriginRequest:
        assert self.log, "the origin received no request"
        return self.log[-1]

    # -- serving -------------------------------------------------------------------------

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)  # type: ignore[arg-type]
        self._writers.add(writer)
        connection_id = self.connections_accepted
        self.connections_accepted += 1
        conn = h11.Connection(h11.SERVER, max_incomplete_event_size=1024 * 1024)
        try:
            served = 0
            while True:
                request = await self._read_request(conn, reader, connection_id)
                if request is None:
                    break
                self.requests[request.path] += 1
                self.log.append(request)
                if served and self.drop_reused:
                    self.dropped += 1
                    break
                served += 1
                reply = await self._resolve(request)
                keep_going = await self._send(conn, reader, writer, request, reply)
                if not keep_going or conn.our_state is not h11.DONE:
                    break
                if conn.their_state is not h11.DONE:
                    break
                conn.start_next_cycle()
        except (h11.ProtocolError, ConnectionError, asyncio.CancelledError):
            pass
        finally:
            self.connections_closed += 1
            self._writers.discard(writer)
            self._tasks.discard(task)  # type: ignore[arg-type]
            writer.close()
            with contextlib.suppress(Exception, asyncio.CancelledError):
                await writer.wait_closed()

    async def _read_request(
        self, conn: h11.Connection, reader: asyncio.StreamReader, connection_id: int
    ) -> OriginRequest | None:
        head: h11.Request | None = None
        body = bytearray()
        while True:
            event = conn.next_event()
            if event is h11.NEED_DATA:
                data = await reader.read(READ_SIZE)
                conn.receive_data(data)
                continue
            if isinstance(event, h11.Request):
                head = event
            elif isinstance(event, h11.Data):
                body += event.data
            elif isinstance(event, h11.EndOfMessage):
                assert head is not None
                return OriginRequest(
                    method=head.method,
                    target=head.target,
                    headers=list(head.headers),
                    raw_headers=list(head.headers.raw_items()),
                    body=bytes(body),
                    http_version=head.http_version,
                    connection_id=connection_id,
                )
            elif isinstance(event, h11.ConnectionClosed) or event is h11.PAUSED:
                return None

    async def _resolve(self, request: OriginRequest) -> Reply:
        route = self.routes.get(request.path, _not_found)
        if isinstance(route, Reply):
            reply = route
        else:
            result = route(request)
            reply = await result if inspect.isawaitable(result) else result
        if self.mode == "silent":
            return Reply(silent=True)
        if self.mode == "close_mid_body":
            body = reply.body if isinstance(reply.body, bytes) and reply.body else payload(1000)
            return Reply(
                reply.status,
                [(n, v) for n, v in reply.headers if _b(n).lower() != b"content-length"]
                + [("Content-Length", len(body))],
                body,
                body_delay=0.05,
                abort_after=len(body) // 2,
            )
        return reply

    async def _send(
        self,
        conn: h11.Connection,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        request: OriginRequest,
        reply: Reply,
    ) -> bool:
        if reply.silent:
            while await reader.read(READ_SIZE):  # hold the connection until the peer leaves
                pass
            return False
        if reply.delay:
            await asyncio.sleep(reply.delay)
        headers = [(_b(n), _b(v)) for n, v in reply.headers]
        names = {n.lower() for n, _ in headers}
        framed = b"content-length" in names or b"transfer-encoding" in names
        body = reply.body
        if not framed and reply.status not in (204, 304):
            if isinstance(body, bytes):
                headers.append((b"Content-Length", str(len(body)).encode()))
            elif request.http_version == b"1.1":
                headers.append((b"Transfer-Encoding", b"chunked"))
        writer.write(conn.send(h11.Response(status_code=reply.status, headers=headers)))
        await writer.drain()
        sent = 0
        if request.method != b"HEAD":
            async for chunk in _iterate(body):
                if not chunk:
                    continue
                if reply.body_delay:
                    await asyncio.sleep(reply.body_delay)
                if reply.abort_after is not None and sent + len(chunk) >= reply.abort_after:
                    chunk = chunk[: reply.abort_after - sent]
                    writer.write(conn.send(h11.Data(data=chunk)))
                    await writer.drain()
                    await asyncio.sleep(reply.body_delay)
                    return False  # the caller closes the connection mid-body
                writer.write(conn.send(h11.Data(data=chunk)))
                sent += len(chunk)
                await writer.drain()
        writer.write(conn.send(h11.EndOfMessage()))
        await writer.drain()
        return not reply.close_after


async def _iterate(body: Body) -> AsyncIterable[bytes]:
    if isinstance(body, bytes):
        yield body
    elif isinstance(body, AsyncIterable):
        async for chunk in body:
            yield chunk
    else:
        for chunk in body:
            yield chunk


# -- misbehaving backends over raw sockets ---------------------------------------------------

Script = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


class ScriptedBackend:
    """A raw TCP backend that runs `script(reader, writer)` on every accepted connection, for
    faults an HTTP server would never commit (garbage, resets mid-head, a 101 then a close).

    Counts accepted connections; `ended` is set each time a connection's script returns, and
    `eof_seen` records when the peer (phantom) closed its side, for "was the request abandoned".
    """

    def __init__(self, script: Script) -> None:
        self.script = script
        self.connections_accepted = 0
        self.eof_seen: list[float] = []
        self.port = 0
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    async def __aenter__(self) -> ScriptedBackend:
        self._server = await asyncio.start_server(self._handle, LOCALHOST, 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._server is not None
        self._server.close()
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
        await self._server.wait_closed()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)  # type: ignore[arg-type]
        self.connections_accepted += 1
        try:
            await self.script(reader, writer)
        except (ConnectionError, asyncio.CancelledError):
            pass
        finally:
            self._tasks.discard(task)  # type: ignore[arg-type]
            writer.close()

    async def wait_for_eof(self, reader: asyncio.StreamReader) -> None:
        """Read until phantom closes its side, and record when."""
        with contextlib.suppress(ConnectionError):
            while await reader.read(READ_SIZE):
                pass
        self.eof_seen.append(time.monotonic())


async def read_request_head(reader: asyncio.StreamReader) -> bytes:
    return await reader.readuntil(b"\r\n\r\n")


def reset(writer: asyncio.StreamWriter) -> None:
    """Close with a RST."""
    set_linger_zero(writer.get_extra_info("socket"))
    writer.transport.abort()


@dataclass
class RawAnswer:
    """A canned answer, bytes exactly as written: each of ``writes`` is one write (``pause``
    seconds apart, so they arrive as separate segments); then the connection is closed when
    ``close``, else the next request is read on it."""

    writes: tuple[bytes, ...]
    close: bool = False
    pause: float = 0.05


class CannedBackend(ScriptedBackend):
    """A raw keep-alive backend answering each request by its path with a `RawAnswer`, for
    responses h11 would never write (close-delimited bodies, interim responses, bare LF line
    ends, bytes beyond the Content-Length). Records each request head as received, and the
    connection it came on."""

    def __init__(self, answers: dict[str, RawAnswer]) -> None:
        super().__init__(self._answer)
        self.answers = answers
        self.heads: list[tuple[int, bytes]] = []  # (connection number, request head)

    def targets(self) -> list[bytes]:
        return [head.split(b" ", 2)[1] for _, head in self.heads]

    async def _answer(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        connection = self.connections_accepted
        while True:
            try:
                head = await read_request_head(reader)
            except asyncio.IncompleteReadError:
                return  # phantom closed the connection
            self.heads.append((connection, head))
            path = head.split(b" ", 2)[1].split(b"?", 1)[0].decode("latin-1")
            answer = self.answers[path]
            for index, data in enumerate(answer.writes):
                if index:
                    await asyncio.sleep(answer.pause)
                writer.write(data)
                await writer.drain()
            if answer.close:
                return


# -- custom upgrades over raw sockets ----------------------------------------------------------


@dataclass
class UpgradeHandshake:
    method: bytes
    target: bytes
    raw_headers: Headers  # names as they arrived, in order
    early_bytes: bytes  # bytes that arrived with / right behind the request head

    def get(self, name: str) -> str | None:
        key = name.lower().encode("latin-1")
        for n, v in self.raw_headers:
            if n.lower() == key:
                return v.decode("latin-1")
        return None


@dataclass
class TunnelLeg:
    """One backend-side connection of an upgrade backend."""

    writer: asyncio.StreamWriter
    received: int = 0  # bytes received after the handshake
    sent: int = 0  # bytes sent after the 101 head (greeting + echo + eof reply)
    upgraded: bool = False
    eof: asyncio.Event = field(default_factory=asyncio.Event)  # read side ended (EOF/reset)
    closed: asyncio.Event = field(default_factory=asyncio.Event)  # our socket is closed
    eof_at: float | None = None

    def vanish(self, *, rst: bool) -> None:
        """Close this leg abruptly: RST when rst, else a plain close (FIN)."""
        if rst:
            set_linger_zero(self.writer.get_extra_info("socket"))
            self.writer.transport.abort()
        else:
            self.writer.close()


class UpgradeBackend:
    """Raw-socket backend for custom upgrades.

    mode "echo": an upgrade request (Connection: upgrade + Upgrade: <token>) gets
    `101 Switching Protocols` with `Upgrade: <token>` (plus `extra_101_headers`) and, in the
    same write, `greeting`; then every byte received is echoed back. When the peer half-closes,
    `eof_reply` is sent and the connection closed.
    mode "refuse": an upgrade request gets `403 Forbidden` with `refuse_body`.
    mode "source": after the 101, send `source_bytes` of `payload_chunks(source_bytes, 99)` as
    fast as the connection takes them (leg.sent counts them), then half-close; what arrives is
    counted (leg.received) and dropped.
    Non-upgrade requests get `200 plain` (keep-alive), so a connection can continue.
    """

    def __init__(
        self,
        *,
        mode: Literal["echo", "refuse", "source"] = "echo",
        greeting: bytes = b"",
        eof_reply: bytes = b"",
        extra_101_headers: list[tuple[bytes, bytes]] | None = None,
        refuse_body: bytes = b"upgrade refused by the test backend\n",
        source_bytes: int = 0,
    ) -> None:
        self.mode = mode
        self.source_bytes = source_bytes
        self.greeting = greeting
        self.eof_reply = eof_reply
        self.extra_101_headers = list(extra_101_headers or [])
        self.refuse_body = refuse_body
        self.handshakes: list[UpgradeHandshake] = []
        self.plain_requests: list[UpgradeHandshake] = []  # heads of non-upgrade requests
        self.legs: list[TunnelLeg] = []
        self.port = 0
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self.new_leg = asyncio.Event()

    async def start(self) -> UpgradeBackend:
        self._server = await asyncio.start_server(self._handle, LOCALHOST, 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
        for leg in self.legs:
            leg.writer.close()
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._server is not None:
            await self._server.wait_closed()
            self._server = None

    async def __aenter__(self) -> UpgradeBackend:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def wait_leg(self, index: int = 0, timeout: float = 5.0) -> TunnelLeg:
        async with asyncio.timeout(timeout):
            while len(self.legs) <= index or not self.legs[index].upgraded:
                self.new_leg.clear()
                await self.new_leg.wait()
        return self.legs[index]

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)  # type: ignore[arg-type]
        leg = TunnelLeg(writer)
        self.legs.append(leg)
        try:
            await self._serve(leg, reader, writer)
        except (h11.ProtocolError, ConnectionError, asyncio.CancelledError):
            pass
        finally:
            self._tasks.discard(task)  # type: ignore[arg-type]
            if not leg.eof.is_set():
                leg.eof_at = time.monotonic()
                leg.eof.set()
            writer.close()
            with contextlib.suppress(Exception, asyncio.CancelledError):
                await writer.wait_closed()
            leg.closed.set()

    async def _serve(
        self, leg: TunnelLeg, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        conn = h11.Connection(h11.SERVER)
        while True:
            head: h11.Request | None = None
            while True:
                event = conn.next_event()
                if event is h11.NEED_DATA:
                    conn.receive_data(await reader.read(READ_SIZE))
                elif isinstance(event, h11.Request):
                    head = event
                elif isinstance(event, h11.EndOfMessage | h11.ConnectionClosed) or (
                    event is h11.PAUSED
                ):
                    break
            if head is None:
                return
            tokens = _connection_tokens(head.headers)
            upgrade = [v for n, v in head.headers if n == b"upgrade"]
            if b"upgrade" not in tokens or not upgrade:
                self.plain_requests.append(
                    UpgradeHandshake(head.method, head.target, list(head.headers.raw_items()), b"")
                )
                body = b"plain\n"
                writer.write(
                    conn.send(h11.Response(status_code=200, headers=[("Content-Length", "6")]))
                    + conn.send(h11.Data(data=body))
                    + conn.send(h11.EndOfMessage())
                )
                await writer.drain()
                conn.start_next_cycle()
                continue
            early, _ = conn.trailing_data
            self.handshakes.append(
                UpgradeHandshake(
                    head.method,
                    head.target,
                    list(head.headers.raw_items()),
                    early,
                )
            )
            if self.mode == "refuse":
                writer.write(
                    conn.send(
                        h11.Response(
                            status_code=403,
                            headers=[
                                ("Content-Type", "text/plain"),
                                ("Content-Length", str(len(self.refuse_body))),
                            ],
                        )
                    )
                    + conn.send(h11.Data(data=self.refuse_body))
                    + conn.send(h11.EndOfMessage())
                )
                await writer.drain()
                conn.start_next_cycle()
                continue
            await self._tunnel(leg, reader, writer, upgrade[0], early)
            return

    async def _tunnel(
        self,
        leg: TunnelLeg,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        token: bytes,
        early: bytes,
    ) -> None:
        head = b"HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: " + token
        for name, value in self.extra_101_headers:
            head += b"\r\n" + name + b": " + value
        writer.write(head + b"\r\n\r\n" + self.greeting)
        leg.sent += len(self.greeting)
        leg.upgraded = True
        self.new_leg.set()
        if self.mode == "source":
            await self._source(leg, reader, writer, early)
            return
        data = early
        while True:
            if data:
                leg.received += len(data)
                writer.write(data)
                leg.sent += len(data)
                await writer.drain()
            try:
                data = await reader.read(READ_SIZE)
            except ConnectionError:
                data = b""
            if not data:
                break
        leg.eof_at = time.monotonic()
        leg.eof.set()
        if self.eof_reply and not writer.is_closing():
            writer.write(self.eof_reply)
            leg.sent += len(self.eof_reply)
            await writer.drain()

    async def _source(
        self,
        leg: TunnelLeg,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        early: bytes,
    ) -> None:
        async def sink() -> None:
            leg.received += len(early)
            with contextlib.suppress(ConnectionError):
                while data := await reader.read(READ_SIZE):
                    leg.received += len(data)
            leg.eof_at = time.monotonic()
            leg.eof.set()

        sink_task = asyncio.ensure_future(sink())
        try:
            for chunk in payload_chunks(self.source_bytes, 99, 64 * 1024):
                writer.write(chunk)
                leg.sent += len(chunk)
                await writer.drain()
            writer.write_eof()
            await sink_task
        finally:
            sink_task.cancel()


def _connection_tokens(headers: Any) -> set[bytes]:
    return {
        token.strip().lower()
        for name, value in headers
        if name == b"connection"
        for token in value.split(b",")
    }


# -- WebSocket backend (the websockets library) ----------------------------------------------


class WebSocketBackend:
    """`websockets` server echoing every message.

    A text message "close:<code>:<reason>" makes the server close with that code and reason.
    Records request headers, negotiated subprotocols and the close codes it saw.
    """

    def __init__(
        self,
        *,
        subprotocols: list[str] | None = None,
        response_headers: list[tuple[str, str]] | None = None,
        tls: ssl.SSLContext | None = None,
    ) -> None:
        self.subprotocols = subprotocols
        self.tls = tls  # serve wss:// with this server context
        self.response_headers = list(response_headers or [])
        self.request_headers: list[list[tuple[str, str]]] = []
        self.paths: list[str] = []  # request target of each handshake
        self.negotiated: list[str | None] = []
        self.close_codes: list[tuple[int | None, str | None]] = []
        self.closed = asyncio.Event()
        self.port = 0
        self._server: Server | None = None

    async def start(self) -> WebSocketBackend:
        self._server = await serve(
            self._handler,
            LOCALHOST,
            0,
            subprotocols=self.subprotocols,  # type: ignore[arg-type]
            process_response=self._process_response if self.response_headers else None,
            ssl=self.tls,
        )
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None

    async def __aenter__(self) -> WebSocketBackend:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    def _process_response(self, connection: ServerConnection, request: Any, response: Any) -> None:
        for name, value in self.response_headers:
            response.headers[name] = value

    async def _handler(self, ws: ServerConnection) -> None:
        self.request_headers.append(list(ws.request.headers.raw_items()))  # type: ignore[union-attr]
        self.paths.append(ws.request.path)  # type: ignore[union-attr]
        self.negotiated.append(ws.subprotocol)
        try:
            async for message in ws:
                if isinstance(message, str) and message.startswith("close:"):
                    _, code, reason = message.split(":", 2)
                    await ws.close(int(code), reason)
                    break
                await ws.send(message)
        except ConnectionClosed:
            pass
        finally:
            rcvd = ws.protocol.close_rcvd
            self.close_codes.append((rcvd.code, rcvd.reason) if rcvd else (None, None))
            self.closed.set()
