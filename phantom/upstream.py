"""Backend connections: connect with a timeout, keep-alive pool, HTTP/1.1 client framing.

A request goes out either through h11 or, for a bodiless request whose head the caller has
serialised itself, as those bytes (``simple_request``). The answer to the latter is read by
``framing.parse_simple_response`` when it is a plain Content-Length response, without h11; any
other answer is handed to h11, which is first told of the request, so both ways end in the
same state and a pooled connection serves either kind next.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import re
import ssl
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Final, TypeVar

import h11

from . import framing
from .config import BackendURL
from .endpoint import Endpoint, EndpointClosed, ReadTimeout
from .errors import BackendError, BackendTimeout

log = logging.getLogger("phantom.upstream")

# An idle pooled connection is closed after this long; most backends close theirs sooner or
# later anyway, and a dead pooled connection costs one retry.
POOL_IDLE_SECONDS = 30.0
POOL_MAX_IDLE = 64
# A simple response head longer than this is left to h11, which enforces its own limit.
SIMPLE_HEAD_LIMIT = 64 * 1024
SIMPLE_MAX_HEADERS = 100

_Head = TypeVar("_Head")

# What asyncio (and uvloop) raise when every address of a name failed in its own words:
# "Multiple exceptions: [Errno 111] Connect call failed ('::1', ...), [Errno 111] ...".
_ERRNO: Final = re.compile(r"\[Errno (\d+)\]")


def connect_failure(exc: OSError) -> str:
    """The ``BackendError.kind`` of a failed connect: ``refused`` when nothing listens (at
    any of the name's addresses: ``localhost`` may be ``::1`` and ``127.0.0.1``), ``reset``,
    else ``unreachable``."""
    codes = [exc.errno] if exc.errno is not None else [int(n) for n in _ERRNO.findall(str(exc))]
    if codes and all(code == errno.ECONNREFUSED for code in codes):
        return "refused"
    if codes == [errno.ECONNRESET]:
        return "reset"
    return "unreachable"


class UpstreamConnection(Endpoint):
    """One TCP connection to a backend, speaking HTTP/1.1 as a client."""

    # Waiting in the pool, since (loop time). One timer (``_idle_timer``) closes the
    # connection once it has been idle POOL_IDLE_SECONDS: set when it is parked and none is
    # pending, left to run when it is taken again (it would be made and cancelled for every
    # request), and set again for the rest of the current wait when it fires early. (Class
    # defaults: a connection never pooled, a tunnel's, is no bigger for them.)
    parked = False
    _parked_at = 0.0

    def __init__(self, pool: Upstream) -> None:
        super().__init__()
        self.h11 = h11.Connection(h11.CLIENT)
        self._pool = pool
        self.url: BackendURL = pool.url  # the backend this connection goes to
        self._idle_timer: asyncio.TimerHandle | None = None
        # Set once a response byte arrived: a failure after that is never retried.
        self.response_started = False
        # A simple exchange (h11 untouched) ended exactly at the end of its response.
        self.simple_done = False
        # Called after every arrival (bytes, EOF, loss) while a relay driven by callbacks,
        # not by a coroutine reading, waits for this connection's answer.
        self.receiver: Callable[[], None] | None = None
        # Dropped because nobody wants the answer any more: its request is not retried.
        self.abandoned = False
        # Its exchange holds a place among its backend's requests in flight, given back once
        # when the exchange ends: released to the pool, or the connection lost.
        self.leased = False

    def end_exchange(self) -> None:
        """The exchange is over (or handed to a tunnel): give its place back."""
        if self.leased:
            self.leased = False
            self._pool.exchange_ended()

    def release(self) -> None:
        """Back to its own pool after a complete exchange (closed if it can't be reused)."""
        self._pool.release(self)

    def data_received(self, data: bytes) -> None:
        if self.parked:
            # A pooled connection must stay silent; anything it says makes it unusable.
            self.abort()
            return
        super().data_received(data)
        if self.receiver is not None:
            self.receiver()

    def eof_received(self) -> bool:
        if self.parked:
            # The backend closed an idle pooled connection: give the descriptor back now.
            self.close()
            return False
        keep_open = super().eof_received()
        if self.receiver is not None:
            self.receiver()
        return keep_open

    def connection_lost(self, exc: Exception | None) -> None:
        super().connection_lost(exc)
        self.end_exchange()
        self._pool.forget(self)
        if self._idle_timer is not None:
            self._idle_timer.cancel()  # it would hold the connection until it fired
            self._idle_timer = None
        if self.receiver is not None:
            self.receiver()

    def send(self, event: h11.Event) -> None:
        data = self.h11.send(event)
        if data:
            self.write(data)

    async def request(
        self,
        request: h11.Request,
        send_body: Callable[[UpstreamConnection], Awaitable[None]],
        timeout: float,
    ) -> h11.Response:
        """Send ``request`` through h11 (``send_body`` writes its body and EndOfMessage) and
        wait for the response head."""
        self.send(request)
        await send_body(self)
        return await self.response_head(timeout)

    async def simple_request(
        self, head: bytes, method: bytes, timeout: float
    ) -> framing.SimpleResponse | h11.Response:
        """Send a bodiless request ``head`` serialised by the caller and wait for the response
        head: a SimpleResponse when it is in that subset (its body is then read with
        ``length_parts``); otherwise h11's parse of it, the exchange going on through h11."""
        self.write(head)
        return await self.simple_response(method, timeout)

    async def simple_response(
        self, method: bytes, timeout: float
    ) -> framing.SimpleResponse | h11.Response:
        """The head of the answer to a bodiless request already sent (see ``simple_request``);
        whatever arrived of it may have been put back into this endpoint first."""
        received = b""
        end = -1
        while end < 0 and len(received) <= SIMPLE_HEAD_LIMIT:
            try:
                data = await self.read(timeout)
            except ReadTimeout:
                raise BackendTimeout("backend did not answer in time") from None
            if not data:
                break  # h11 below tells a clean close from a cut-off head
            self.response_started = True
            # Only the new bytes (and the 3 before, where a blank line may have begun) are
            # searched: a backend trickling its head byte by byte costs linear time.
            start = max(len(received) - 3, 0)
            received += data
            end = received.find(b"\r\n\r\n", start)
            if end < 0 and framing.ends_with_bare_lf(received, start):
                break  # not simple: h11 reads it
        if end >= 0:
            response = framing.parse_simple_response(
                received, end, method, SIMPLE_MAX_HEADERS
            )
            if response is not None:
                rest = received[response.end :]
                if response.length:
                    self.put_back(rest)
                else:
                    # Nothing may follow a bodiless response but the next one we ask for.
                    self.simple_done = not rest
                return response
        # Outside the subset: h11 takes over. It needs to have "sent" the request to know
        # how to read the answer (only the method matters for that).
        self.h11.send(h11.Request(method=method, target=b"/", headers=[(b"Host", b"-")]))
        self.h11.send(h11.EndOfMessage())
        self.h11.receive_data(received)
        return await self.response_head(timeout)


    async def next_event(
        self, timeout: float | None = None, record: bytearray | None = None
    ) -> h11.Event:
        """The next parsed response event; errors become BackendError / BackendTimeout.
        ``record`` collects the raw bytes received meanwhile."""
        conn = self.h11
        while True:
            try:
                event = conn.next_event()
            except h11.RemoteProtocolError as exc:
                if self.at_eof:  # h11's complaint about a message cut short by the close
                    raise BackendError("backend closed the connection", "reset") from None
                raise BackendError(
                    "invalid response from backend", "protocol", detail=str(exc)
                ) from None
            if event is h11.NEED_DATA:
                try:
                    data = await self.read(timeout)
                except ReadTimeout:
                    raise BackendTimeout("backend did not answer in time") from None
                if data:
                    self.response_started = True
                    if record is not None:
                        record += data
                conn.receive_data(data)
                continue
            if event is h11.PAUSED:
                raise BackendError("backend switched protocols unexpectedly", "protocol")
            assert isinstance(event, h11.Event)
            if isinstance(event, h11.ConnectionClosed):
                raise BackendError("backend closed the connection", "reset")
            return event

    async def upgrade_head(
        self, timeout: float
    ) -> tuple[bytes, h11.InformationalResponse | h11.Response]:
        """The backend's answer to an upgrade: (its 101 head exactly as sent, the 101), or
        (b"", the response) when it declined."""
        raw = bytearray()
        while True:
            event = await self.next_event(timeout, record=raw)
            if isinstance(event, h11.InformationalResponse) and event.status_code == 101:
                # All h11 did not keep as trailing data is the head (plus any interim 1xx).
                return bytes(raw[: len(raw) - len(self.h11.trailing_data[0])]), event
            if isinstance(event, h11.Response):
                return b"", event

    async def response_head(self, timeout: float) -> h11.Response:
        """The final response head; interim 1xx responses are skipped (the client was told to
        continue by us, and other interim responses carry nothing a reverse proxy's client
        needs)."""
        while True:
            event = await self.next_event(timeout)
            if isinstance(event, h11.Response):
                return event

    async def read_body(self, timeout: float, limit: int) -> bytes | None:
        """The rest of the response body, whole (for responses we keep, not relay); None as
        soon as it grows past ``limit`` bytes (the connection is then mid-body: abort it)."""
        parts: list[bytes] = []
        size = 0
        async for part in self.body_parts(timeout):
            size += len(part)
            if size > limit:
                return None
            parts.append(part)
        return b"".join(parts)

    async def body_parts(self, timeout: float) -> AsyncIterator[bytes]:
        """The response body as h11 reads it, part by part, up to its end."""
        while True:
            event = await self.next_event(timeout)
            if isinstance(event, h11.Data):
                yield event.data
            elif isinstance(event, h11.EndOfMessage):
                return

    async def length_parts(self, length: int, timeout: float) -> AsyncIterator[bytes]:
        """A simple response's body of ``length`` bytes, part by part as it arrives. Bytes
        beyond it are dropped, and leave the connection unusable."""
        remaining = length
        while remaining:
            try:
                data = await self.read(timeout)
            except ReadTimeout:
                raise BackendTimeout("backend stopped sending the body") from None
            if not data:
                raise BackendError("backend closed the connection", "reset")
            if len(data) >= remaining:
                self.simple_done = len(data) == remaining
                data = data[:remaining]
            remaining -= len(data)
            yield data

    @property
    def reusable(self) -> bool:
        """The exchange ended exactly where its response's framing said. A byte beyond it (in
        h11's buffer or ours) means the backend and we disagree on where its answers end:
        reused, the connection would hand that byte to the next, unrelated request."""
        if self.is_lost or self.at_eof or self.has_unread:
            return False
        conn = self.h11
        if conn.our_state is h11.IDLE:  # a simple exchange
            return self.simple_done
        return (
            conn.our_state is h11.DONE
            and conn.their_state is h11.DONE
            and not conn.trailing_data[0]
        )

    def park(self) -> None:
        """Start a new request cycle and wait in the pool."""
        if self.h11.our_state is h11.DONE:
            self.h11.start_next_cycle()
        self.response_started = False
        self.simple_done = False
        loop = asyncio.get_running_loop()
        self.parked = True
        self._parked_at = loop.time()
        if self._idle_timer is None:
            self._idle_timer = loop.call_at(self._parked_at + POOL_IDLE_SECONDS, self._idle_due)

    def _idle_due(self) -> None:
        self._idle_timer = None
        if not self.parked:
            return
        loop = asyncio.get_running_loop()
        due = self._parked_at + POOL_IDLE_SECONDS
        if loop.time() < due:
            self._idle_timer = loop.call_at(due, self._idle_due)
        else:
            self.close()

    def abandon(self) -> None:
        """Abort the exchange on its way because its client went."""
        self.abandoned = True
        self.abort()

    def unpark(self) -> None:
        self.parked = False


class Upstream:
    """Connections to one backend address, with a pool of idle keep-alive ones.

    With ``tls`` (an https:// backend) every connection does a TLS handshake inside the connect
    timeout; the server name sent (SNI) and verified is the URL's host (Python sends no SNI
    for an IP address, and verifies it against the certificate's IP entries).
    """

    def __init__(
        self,
        url: BackendURL,
        connect_timeout: float,
        tls: ssl.SSLContext | None = None,
        on_exchange_end: Callable[[], None] | None = None,
    ) -> None:
        self.url = url
        self.connect_timeout = connect_timeout
        self.tls = tls
        # Called when a leased connection's exchange ends (the balancer's in-flight count).
        self.exchange_ended: Callable[[], None] = on_exchange_end or _nothing
        self._idle: deque[UpstreamConnection] = deque()

    async def connect(self) -> UpstreamConnection:
        """A fresh connection (tunnels always use one)."""
        loop = asyncio.get_running_loop()
        url = self.url
        try:
            _, conn = await asyncio.wait_for(
                loop.create_connection(
                    lambda: UpstreamConnection(self),
                    url.host,
                    url.port,
                    ssl=self.tls,
                    server_hostname=url.host if self.tls is not None else None,
                ),
                self.connect_timeout,
            )
        except asyncio.TimeoutError:
            raise BackendTimeout(
                f"connect to {url.netloc} timed out after {self.connect_timeout:g}s",
                unanswered=True,
            ) from None
        except ssl.SSLCertVerificationError as exc:
            raise BackendError(
                f"TLS to {url.netloc}: certificate rejected: {exc.verify_message}",
                "tls",
                unanswered=True,
            ) from None
        except ssl.SSLError as exc:
            raise BackendError(
                f"TLS to {url.netloc}: {exc.reason or exc}", "tls", unanswered=True
            ) from None
        except OSError as exc:
            reason = exc.strerror or exc.__class__.__name__
            raise BackendError(
                f"cannot connect to {url.netloc}: {reason}", connect_failure(exc), unanswered=True
            ) from None
        return conn

    def take_idle(self) -> UpstreamConnection | None:
        """A pooled connection that is still alive, if there is one."""
        while self._idle:
            conn = self._idle.pop()
            conn.unpark()
            if not conn.is_lost and not conn.at_eof:
                return conn
            conn.close()
        return None

    async def acquire(self) -> tuple[UpstreamConnection, bool]:
        """A pooled connection if one is alive, else a new one; the flag says it was pooled."""
        conn = self.take_idle()
        if conn is not None:
            return conn, True
        return await self.connect(), False

    async def exchange(
        self,
        start: Callable[[UpstreamConnection], Awaitable[_Head]],
        *,
        retry: bool,
        fresh: bool = False,
    ) -> tuple[UpstreamConnection, _Head]:
        """``start`` sends the request on a connection and returns the response head
        (``UpstreamConnection.request`` or ``simple_request``). A pooled connection that turns
        out dead before any response byte is replaced by a fresh one once, when ``retry``
        (idempotent, body not yet consumed) and its client is still there (not ``abandoned``).
        ``fresh``: a new connection, never a pooled one (upgrades). Failures raise
        BackendError / BackendTimeout (``unanswered`` when no byte of an answer came and the
        client is still there); the connection is then closed."""
        while True:
            conn, pooled = (await self.connect(), False) if fresh else await self.acquire()
            try:
                return conn, await start(conn)
            except (BackendError, EndpointClosed) as exc:
                conn.abort()
                timed_out = isinstance(exc, BackendTimeout)
                unanswered = not conn.response_started and not timed_out and not conn.abandoned
                if pooled and retry and unanswered:
                    retry = False
                    # The pooled connection had died while idle: once more, fresh. (A
                    # backend that is merely slow must not get the request twice.)
                    continue
                if isinstance(exc, EndpointClosed):
                    raise BackendError(
                        "backend closed the connection", "reset", unanswered=unanswered
                    ) from None
                exc.unanswered = unanswered
                raise
            except BaseException:
                conn.abort()
                raise

    def release(self, conn: UpstreamConnection) -> None:
        """Return a connection after a complete exchange, or close it if it can't be reused."""
        if conn.leased:  # (end_exchange, inlined: every relayed request passes here)
            conn.leased = False
            self.exchange_ended()
        if conn.reusable and len(self._idle) < POOL_MAX_IDLE:
            conn.park()
            self._idle.append(conn)
        else:
            conn.close()

    def forget(self, conn: UpstreamConnection) -> None:
        conn.unpark()
        try:
            self._idle.remove(conn)
        except ValueError:
            pass

    def close(self) -> None:
        while self._idle:
            self._idle.pop().close()


def _nothing() -> None:
    pass
