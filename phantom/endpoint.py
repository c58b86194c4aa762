"""One end of a TCP connection as an asyncio.Protocol: buffered reads, drained writes.

Both legs of the proxy (client and backend) are endpoints. Reading is pull-based: a coroutine
awaits ``read()`` and gets whatever has arrived; while the unread buffer is over the high-water
mark the transport stops reading, so a fast sender cannot make us queue without bound. Writing
follows the transport's own flow control: ``drain()`` waits while the kernel is not keeping up.

An endpoint can hand its transport to a tunnel (``detach``): the tunnel gets the unread bytes
and the flow-control state, and the endpoint stops being the transport's protocol.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import cast

# Stop reading from the socket while this much is waiting to be consumed.
READ_HIGH_WATER = 256 * 1024


class EndpointClosed(ConnectionError):
    """The peer went away (or we closed) while we were waiting to write."""


class ReadTimeout(TimeoutError):
    """``read(timeout=...)`` saw no byte within the time."""


@dataclass(slots=True)
class DetachedState:
    """What a tunnel inherits from an endpoint at the moment of the switch."""

    transport: asyncio.Transport
    unread: bytes
    eof: bool
    lost: bool
    write_paused: bool


class Endpoint(asyncio.Protocol):
    transport: asyncio.Transport
    half_close: bool  # the transport can send EOF and keep reading (plain TCP, not TLS)

    def __init__(self) -> None:
        self._inbox = bytearray()
        self._eof = False
        self._lost = False
        self._read_paused = False
        self._write_paused = False
        self._waiter: asyncio.Future[None] | None = None
        self._drain_waiter: asyncio.Future[None] | None = None

    # -- asyncio.Protocol -------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports implement the interface without subclassing asyncio.Transport.
        self.transport = cast(asyncio.Transport, transport)
        self.half_close = can_half_close(self.transport)

    def data_received(self, data: bytes) -> None:
        self._inbox += data
        if len(self._inbox) > READ_HIGH_WATER and not self._read_paused:
            self._update_reading()
        self._wake()

    def eof_received(self) -> bool:
        self._eof = True
        self._wake()
        # Keep the transport open: a half-closed client may still be owed a response. TLS
        # can't do that (asyncio closes it whatever we answer, and warns if we say True).
        return self.half_close

    def connection_lost(self, exc: Exception | None) -> None:
        self._lost = True
        self._eof = True
        self._wake()
        waiter = self._drain_waiter
        if waiter is not None and not waiter.done():
            waiter.set_exception(EndpointClosed("connection lost"))

    def pause_writing(self) -> None:
        self._write_paused = True

    def resume_writing(self) -> None:
        self._write_paused = False
        waiter = self._drain_waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    # -- reading ----------------------------------------------------------------------------

    def _holds_reading(self) -> bool:
        """Whether the transport should stop reading: the unread bytes are over the mark."""
        return len(self._inbox) > READ_HIGH_WATER

    def _update_reading(self) -> None:
        """Pause or resume the transport's reading as ``_holds_reading`` says (idempotent:
        each reason to pause may change on its own)."""
        hold = self._holds_reading()
        if hold == self._read_paused or self._lost or self.transport.is_closing():
            return
        self._read_paused = hold
        if hold:
            self.transport.pause_reading()
        else:
            self.transport.resume_reading()

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    @property
    def at_eof(self) -> bool:
        return self._eof and not self._inbox

    @property
    def has_unread(self) -> bool:
        return bool(self._inbox)

    @property
    def is_lost(self) -> bool:
        return self._lost

    def take_unread(self) -> bytes:
        """Everything received and not yet read, without waiting."""
        data = bytes(self._inbox)
        self._inbox.clear()
        if self._read_paused:
            self._update_reading()
        return data

    def put_back(self, data: bytes) -> None:
        """Return bytes read too early: the next ``read()`` gets them first."""
        self._inbox[:0] = data

    async def read(self, timeout: float | None = None) -> bytes:
        """Wait for bytes; ``b""`` means the peer closed its sending side."""
        await self.wait_readable(timeout)
        return self.take_unread()

    async def wait_readable(self, timeout: float | None = None) -> None:
        """Wait until bytes or the peer's EOF arrive, or a subclass wakes the reader for a
        reason of its own (``_wake``)."""
        if not self._inbox and not self._eof:
            loop = asyncio.get_running_loop()
            waiter = self._waiter = loop.create_future()
            timer = None
            if timeout is not None:
                timer = loop.call_later(timeout, _expire, waiter)
            try:
                await waiter
            finally:
                self._waiter = None
                if timer is not None:
                    timer.cancel()

    # -- writing ----------------------------------------------------------------------------

    def write(self, data: bytes) -> None:
        if self._lost:
            raise EndpointClosed("connection lost")
        self.transport.write(data)

    async def drain(self) -> None:
        """Wait while the transport's write buffer is over its high-water mark."""
        if self._lost:
            raise EndpointClosed("connection lost")
        if not self._write_paused:
            return
        waiter = self._drain_waiter = asyncio.get_running_loop().create_future()
        try:
            await waiter
        finally:
            self._drain_waiter = None

    def close(self) -> None:
        if not self._lost:
            self.transport.close()

    def abort(self) -> None:
        if not self._lost:
            self.transport.abort()

    def detach(self) -> DetachedState:
        """Hand the transport over (to a tunnel); this endpoint is as good as lost afterwards."""
        state = DetachedState(
            transport=self.transport,
            unread=bytes(self._inbox),
            eof=self._eof,
            lost=self._lost,
            write_paused=self._write_paused,
        )
        self._inbox.clear()
        if self._read_paused:
            self._read_paused = False
            self.transport.resume_reading()
        # The transport is someone else's now: this endpoint's close() and abort() must not
        # reach it (a request loop ending after the switch closes its endpoint, say).
        self._lost = self._eof = True
        return state


def can_half_close(transport: asyncio.BaseTransport) -> bool:
    """False for TLS transports: after the peer's close_notify they close both ways."""
    return transport.get_extra_info("sslcontext") is None


def hand_over(state: DetachedState, protocol: asyncio.Protocol) -> None:
    """Make ``protocol`` the protocol of a detached transport, giving it the unread bytes and
    what had happened to the transport meanwhile (a full write buffer, EOF, loss)."""
    state.transport.set_protocol(protocol)
    protocol.connection_made(state.transport)
    if state.unread:
        protocol.data_received(state.unread)
    if state.write_paused:
        protocol.pause_writing()
    if state.lost:
        # Gone before the switch: its connection_lost went to the old protocol.
        protocol.connection_lost(None)
    elif state.eof:
        protocol.eof_received()


def _expire(waiter: asyncio.Future[None]) -> None:
    if not waiter.done():
        waiter.set_exception(ReadTimeout())
