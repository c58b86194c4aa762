"""``phantom expose``: the agent that keeps a local app reachable through a relay.

One control connection at a time (reconnected with exponential backoff and jitter); for every
OPEN from the relay, a connection to the local app and a data connection to the relay, spliced
with :mod:`phantom.tunnel`; ``warm`` data connections dialled ahead, so a new public connection
need not wait for the round trip of an OPEN.
"""

from __future__ import annotations

import asyncio
import logging
import random
import ssl
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import Any

import h11

from ..config import BackendURL, host_port
from ..endpoint import Endpoint, ReadTimeout
from ..tunnel import Tunnel
from . import protocol
from .hub import MISSED_PINGS
from .protocol import Kind, Message

log = logging.getLogger("phantom.expose")

CONNECT_TIMEOUT = 10.0  # to the relay (TCP and TLS) and to the local app
HANDSHAKE_TIMEOUT = 10.0  # from the request to the relay's answer head
_REFUSAL_BODY_LIMIT = 4096
MAX_HEAD = 16 * 1024  # of the relay's answer; h11 refuses a longer one
REFILL_DELAY = 0.002  # from a warm data connection's use to the dial of its replacement


class Refusal(Exception):
    """The relay answered a handshake with an error status."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(f"relay refused: {status} {reason}")
        self.status = status
        self.reason = reason

    @property
    def final(self) -> bool:
        """Retrying cannot help: a wrong token, a name not allowed or not valid."""
        return self.status in (400, 401, 403)


# What dialling the relay can end in, short of a bug: refused, reset or closed (EndpointClosed
# is an OSError), timed out (not an OSError before Python 3.11), or an answer that is not
# the relay's.
_DIAL_FAILURES = (Refusal, OSError, asyncio.TimeoutError, protocol.ProtocolError)


@dataclass(frozen=True, slots=True)
class AgentOptions:
    relay: BackendURL  # http(s)://relay.example.com[:port]
    name: str
    token: str
    port: int  # the local app's
    host: str = "127.0.0.1"
    warm: int = 2
    cache: bool = False  # the relay caches the app's answers (as their Cache-Control allows)
    tls: ssl.SSLContext | None = None  # for an https:// relay


def relay_tls(ca: str | None) -> ssl.SSLContext:
    """The system's trusted CAs, plus ``ca`` (``--relay-ca``, PEM) for a private one."""
    context = ssl.create_default_context()
    if ca is not None:
        context.load_verify_locations(ca)
    return context


class Agent:
    def __init__(self, options: AgentOptions, on_ready: Callable[[str], None]) -> None:
        self.options = options
        self.on_ready = on_ready
        self.tunnels: set[Tunnel] = set()
        self._tasks: set[asyncio.Task[None]] = set()

    async def run(self) -> None:
        """Stay registered until cancelled; raises Refusal when retrying cannot help."""
        attempt = 0
        while True:
            try:
                registered = await self._session()
            except _DIAL_FAILURES as exc:  # TLS failures too: certificates get renewed
                if isinstance(exc, Refusal) and exc.final:
                    raise
                log.warning("relay %s: %s", self.options.relay.netloc, exc or type(exc).__name__)
                registered = False
            attempt = 0 if registered else attempt + 1
            delay = protocol.reconnect_delay(attempt, random.random())
            log.info("reconnecting in %.1fs", delay)
            await asyncio.sleep(delay)

    # -- connections to the relay ------------------------------------------------------------

    async def _connect(self, host: str, port: int, tls: ssl.SSLContext | None) -> Endpoint:
        loop = asyncio.get_running_loop()
        _, conn = await asyncio.wait_for(
            loop.create_connection(
                Endpoint, host, port, ssl=tls, server_hostname=host if tls else None
            ),
            CONNECT_TIMEOUT,
        )
        return conn

    async def _upgrade(
        self, path: bytes, headers: list[tuple[bytes, bytes]]
    ) -> tuple[Endpoint, list[tuple[bytes, bytes]]]:
        """A connection to the relay upgraded to phantom-relay/1, with the 101's headers;
        what the relay sent after its 101 is put back to be read first."""
        relay = self.options.relay
        conn = await self._connect(relay.host, relay.port, self.options.tls)
        try:
            host = relay.host if relay.port in (80, 443) else relay.netloc
            conn.write(protocol.upgrade_request(path, host.encode("idna"), headers))
            received, closed = await _answer_head(conn)
            end = received.find(b"\r\n\r\n")
            fields = protocol.switched_fields(received[:end]) if end != -1 else None
            if fields is not None:
                conn.put_back(received[end + 4 :])
                return conn, fields
            # Anything but a relay's plain 101: h11 reads it (and says what is wrong with it).
            parser = h11.Connection(h11.CLIENT)
            # h11 must have "sent" the request to read its answer.
            parser.send(
                h11.Request(
                    method="GET",
                    target=path,
                    headers=[("Host", "-"), ("Connection", "Upgrade"), ("Upgrade", "x")],
                )
            )
            parser.send(h11.EndOfMessage())
            parser.receive_data(received)
            if closed:
                parser.receive_data(b"")
            while True:
                event = parser.next_event()
                if event is h11.NEED_DATA:
                    parser.receive_data(await conn.read(HANDSHAKE_TIMEOUT))
                elif isinstance(event, h11.InformationalResponse) and event.status_code == 101:
                    conn.put_back(parser.trailing_data[0])
                    return conn, list(event.headers)
                elif isinstance(event, h11.Response):
                    raise Refusal(event.status_code, await _refusal_text(parser, conn))
                elif isinstance(event, h11.ConnectionClosed):
                    raise ConnectionError("relay closed the connection during the handshake")
        except ReadTimeout:
            conn.abort()
            raise ConnectionError("relay did not answer the handshake in time") from None
        except h11.RemoteProtocolError:
            conn.abort()
            raise ConnectionError("relay sent a malformed handshake answer") from None
        except BaseException:
            conn.abort()
            raise

    async def _session(self) -> bool:
        """One control connection, until it ends; True when the relay had registered us."""
        options = self.options
        conn, headers = await self._upgrade(
            protocol.CONTROL_PATH,
            [
                (b"Authorization", b"Bearer " + options.token.encode()),
                (b"Phantom-Relay-Name", options.name.encode()),
                (b"Phantom-Relay-Warm", str(options.warm).encode()),
                (b"Phantom-Relay-Cache", b"on" if options.cache else b"off"),
            ],
        )
        key = protocol.header(headers, protocol.SESSION_HEADER)
        if key is None:
            conn.abort()
            raise ConnectionError("relay's 101 named no session")
        decoder = protocol.Decoder()
        # Until READY tells the ping interval, a relay silent for the handshake time is gone.
        silence = HANDSHAKE_TIMEOUT
        registered = False
        try:
            while True:
                try:
                    data = await conn.read(silence)
                except ReadTimeout:
                    raise ConnectionError("relay stopped pinging") from None
                if not data:
                    raise ConnectionError("relay closed the control connection")
                for message in decoder.feed(data):
                    if message.kind is Kind.READY and not registered:
                        registered = True
                        # Pings every READY's milliseconds (at least a second's worth here).
                        silence = max(message.number, 1000) / 1000 * (MISSED_PINGS + 1)
                        self.on_ready(message.text)
                        for _ in range(options.warm):
                            self._spawn(self._warm(key))
                    elif message.kind is Kind.PING:
                        conn.write(protocol.encode(Message(Kind.PONG, message.number)))
                    elif message.kind is Kind.OPEN:
                        self._spawn(self._open(conn, key, message.number))
                    elif message.kind is Kind.CLOSE:
                        log.info("relay closed the session: %s", message.text or "-")
                        return registered
                    else:
                        raise protocol.ProtocolError(f"unexpected {message.kind.name}")
        except asyncio.CancelledError:
            # Stopped (Ctrl-C): say goodbye, so the relay frees the name at once.
            if not conn.is_lost:
                conn.write(protocol.encode(Message(Kind.CLOSE, 0, "agent stopped")))
            raise
        finally:
            conn.close()
            for task in list(self._tasks):
                task.cancel()

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # -- data connections --------------------------------------------------------------------

    def _data_headers(self, key: bytes, which: bytes) -> list[tuple[bytes, bytes]]:
        return [
            (b"Phantom-Relay-Name", self.options.name.encode()),
            (b"Phantom-Relay-Session", key),
            (b"Phantom-Relay-Connection", which),
        ]

    async def _local(self) -> Endpoint:
        return await self._connect(self.options.host, self.options.port, None)

    async def _open(self, control: Endpoint, key: bytes, number: int) -> None:
        """Answer OPEN ``number``: the local app first (a refusal is told to the relay, which
        answers the public client), then the data connection."""
        try:
            local = await self._local()
        except (OSError, asyncio.TimeoutError) as exc:
            reason = f"cannot connect to {self._app}: {_reason(exc)}"
            log.warning("%s", reason)
            if not control.is_lost:
                control.write(protocol.encode(Message(Kind.ERROR, number, reason)))
            return
        try:
            data, _ = await self._upgrade(
                protocol.DATA_PATH, self._data_headers(key, b"%d" % number)
            )
        except _DIAL_FAILURES as exc:
            # The relay gave up waiting (409), or is gone: its client has its answer already.
            log.warning("data connection %d: %s", number, exc or type(exc).__name__)
            local.close()
            return
        except BaseException:
            local.close()
            raise
        self._splice(data, local)

    async def _warm(self, key: bytes) -> None:
        """Keep one data connection ready; when the relay uses it, serve it and dial anew
        (``REFILL_DELAY`` later)."""
        while True:
            try:
                data, _ = await self._upgrade(
                    protocol.DATA_PATH, self._data_headers(key, protocol.WARM)
                )
            except _DIAL_FAILURES as exc:
                log.debug("warm data connection: %s", exc)
                return  # the session is ending; the next one starts its own
            try:
                local = await self._serve_warm(data)
            except BaseException:
                data.abort()  # cancelled with the session: nothing was spliced yet
                raise
            if local is not None:
                self._splice(data, local)
            # The replacement waits a moment: its handshake would otherwise compete, in the
            # agent and in the relay, with the answer (a 101, a first response) that the
            # connection just used is carrying back.
            await asyncio.sleep(REFILL_DELAY)

    async def _serve_warm(self, data: Endpoint) -> Endpoint | None:
        """Wait for the relay to use ``data``; then the connection to the local app for it
        (None when there is none: the public client got a 502 from us)."""
        await data.wait_readable()  # the first byte of a public connection
        if data.at_eof:
            data.close()
            return None
        try:
            return await self._local()
        except (OSError, asyncio.TimeoutError) as exc:
            log.warning("cannot connect to %s: %s", self._app, _reason(exc))
            data.write(protocol.answer(502, f"the app on {self._app} is not reachable"))
            data.close()
            return None

    @property
    def _app(self) -> str:
        return host_port(self.options.host, self.options.port)

    def _splice(self, data: Endpoint, local: Endpoint) -> None:
        data_state = data.detach()
        local_state = local.detach()
        tunnel = Tunnel(
            data_state, local_state, label=f"relay -> {self._app}", on_close=self.tunnels.discard
        )
        self.tunnels.add(tunnel)
        tunnel.start(data_state, local_state)

    def close(self) -> None:
        for tunnel in list(self.tunnels):
            tunnel.close()


async def _answer_head(conn: Endpoint) -> tuple[bytes, bool]:
    """What the relay sent until the end of its answer head (a blank line, CRLF or bare LF),
    or its close, or ``MAX_HEAD`` bytes; and whether it closed."""
    received = b""
    while b"\n\r\n" not in received and b"\n\n" not in received and len(received) <= MAX_HEAD:
        data = await conn.read(HANDSHAKE_TIMEOUT)
        if not data:
            return received, True
        received += data
    return received, False


async def _refusal_text(parser: h11.Connection, conn: Endpoint) -> str:
    """The body of a refusal (one line of text from a phantom relay), bounded."""
    body = b""
    while len(body) < _REFUSAL_BODY_LIMIT:
        event = parser.next_event()
        if event is h11.NEED_DATA:
            parser.receive_data(await conn.read(HANDSHAKE_TIMEOUT))
        elif isinstance(event, h11.Data):
            body += event.data
        else:
            break
    conn.close()
    return body.decode("utf-8", "replace").strip()[:200] or "-"


def _reason(exc: BaseException) -> str:
    if isinstance(exc, asyncio.TimeoutError):
        return f"timed out after {CONNECT_TIMEOUT:g}s"
    if isinstance(exc, OSError):
        return exc.strerror or type(exc).__name__
    return str(exc)
