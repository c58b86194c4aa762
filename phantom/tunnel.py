"""The splice: after a 101, copy bytes both ways between two transports without parsing them.

Each direction is a tiny protocol installed on the reading transport. Backpressure: when one
side's write buffer fills, the other side stops reading until it drains, so nothing queues
without bound. Half-close: EOF in one direction becomes ``write_eof()`` on the other while the
opposite direction keeps flowing (where the transport can't half-close, as with TLS, both are
closed). Both transports close once both directions have ended or either fails.

Vanished peers: both legs get TCP keepalive, so a peer that disappears without a FIN is found
by the kernel within minutes; ``idle_timeout`` (``tunnel_idle_timeout``, 0 = off) closes a tunnel
with no byte in either direction for that long.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import time
from collections.abc import Callable

from .endpoint import DetachedState, can_half_close, hand_over

log = logging.getLogger("phantom.tunnel")

# TCP keepalive on tunnel legs: first probe after a minute of silence, then every 10 s; a
# peer that misses 6 in a row is gone (about two minutes in all).
KEEPALIVE_IDLE = 60
KEEPALIVE_INTERVAL = 10
KEEPALIVE_PROBES = 6


def enable_tcp_keepalive(transport: asyncio.BaseTransport) -> None:
    sock = transport.get_extra_info("socket")
    if sock is None:
        return
    options = [(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)]
    for name, value in (
        ("TCP_KEEPIDLE", KEEPALIVE_IDLE),
        ("TCP_KEEPINTVL", KEEPALIVE_INTERVAL),
        ("TCP_KEEPCNT", KEEPALIVE_PROBES),
    ):
        if hasattr(socket, name):  # Linux has all three; other systems some
            options.append((socket.IPPROTO_TCP, getattr(socket, name), value))
    try:
        for level, option, value in options:
            sock.setsockopt(level, option, value)
    except OSError:
        pass  # the socket is already closed: the tunnel will see that at once


class _Direction(asyncio.Protocol):
    """Reads from ``source`` (the transport it is installed on) and writes to ``sink``."""

    # Slots: thousands of idle tunnels are two of these and a Tunnel each.
    __slots__ = ("tunnel", "source", "sink", "bytes", "ended", "half_close")

    def __init__(self, tunnel: Tunnel, source: asyncio.Transport, sink: asyncio.Transport) -> None:
        self.tunnel = tunnel
        self.source = source
        self.sink = sink
        self.bytes = 0
        self.ended = False
        # EOF on a TLS source closes its transport anyway: then the whole tunnel ends.
        self.half_close = can_half_close(source) and sink.can_write_eof()

    def data_received(self, data: bytes) -> None:
        self.bytes += len(data)
        self.tunnel.active = True
        self.sink.write(data)

    def eof_received(self) -> bool:
        self.ended = True
        self.tunnel.direction_ended(self)
        return self.half_close

    def connection_lost(self, exc: Exception | None) -> None:
        self.ended = True
        self.tunnel.leg_lost(exc)

    # Flow control of ``source``'s *write* side. What writes into ``source`` is the other
    # direction, which reads from our ``sink``: while ``source`` can't take more, stop reading
    # from ``sink``.
    def pause_writing(self) -> None:
        self.sink.pause_reading()

    def resume_writing(self) -> None:
        if not self.tunnel.closed:
            self.sink.resume_reading()


class Tunnel:
    """Two spliced transports; ``done`` resolves when both are closed."""

    __slots__ = (
        "label", "started", "closed", "_on_close", "_lost", "done", "upstream", "downstream",
        "active", "_idle_since", "_idle_timeout", "_idle_timer",
    )

    def __init__(
        self,
        client: DetachedState,
        backend: DetachedState,
        *,
        label: str,
        on_close: Callable[[Tunnel], None],
        idle_timeout: float = 0.0,
    ) -> None:
        self.label = label
        self.started = time.monotonic()
        self.closed = False
        # Set by any byte; the idle check clears it (cheaper than a clock read per chunk).
        self.active = False
        self._idle_since = self.started
        self._idle_timeout = idle_timeout
        self._idle_timer: asyncio.TimerHandle | None = None
        self._on_close = on_close
        self._lost = 0
        self.done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.upstream = _Direction(self, client.transport, backend.transport)
        self.downstream = _Direction(self, backend.transport, client.transport)

    def start(self, client: DetachedState, backend: DetachedState) -> None:
        """Take over both transports (the states given to the constructor). Separate from
        construction so the owner registers the tunnel first: a leg already gone closes it
        right here, and that must be seen."""
        # A full write buffer on one side holds the other direction's reads (pause_writing).
        hand_over(client, self.upstream)
        hand_over(backend, self.downstream)
        for transport in (client.transport, backend.transport):
            enable_tcp_keepalive(transport)
        if self._idle_timeout > 0 and not self.closed:
            self._schedule_idle_check()

    def _schedule_idle_check(self) -> None:
        # Two checks per timeout: a tunnel is closed after between 1x and 1.5x its idle time.
        loop = asyncio.get_running_loop()
        self._idle_timer = loop.call_later(self._idle_timeout / 2, self._idle_check)

    def _idle_check(self) -> None:
        if self.closed:
            return
        if self.active:
            self.active = False
            self._idle_since = time.monotonic()
        elif time.monotonic() - self._idle_since >= self._idle_timeout:
            log.info("tunnel %s idle for %gs: closing", self.label, self._idle_timeout)
            self.close()
            return
        self._schedule_idle_check()

    @property
    def client_to_backend(self) -> int:
        return self.upstream.bytes

    @property
    def backend_to_client(self) -> int:
        return self.downstream.bytes

    def direction_ended(self, direction: _Direction) -> None:
        if not direction.half_close:
            self.close()
            return
        try:
            direction.sink.write_eof()
        except (OSError, RuntimeError):
            # uvloop raises RuntimeError on a transport that is already closing.
            self.close()
            return
        if self.upstream.ended and self.downstream.ended:
            self.close()

    def leg_lost(self, exc: Exception | None) -> None:
        self._lost += 1
        if exc is not None and not self.closed:
            log.debug("tunnel %s: leg lost: %s", self.label, exc)
        # close() flushes what is already queued for the surviving leg before the FIN.
        self.close()
        if self._lost == 2 and not self.done.done():
            self.done.set_result(None)

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        if self._idle_timer is not None:
            self._idle_timer.cancel()
        self.upstream.source.close()
        self.downstream.source.close()
        log.info(
            "tunnel %s closed: %d bytes client->backend, %d bytes backend->client, %.3fs",
            self.label,
            self.client_to_backend,
            self.backend_to_client,
            time.monotonic() - self.started,
        )
        self._on_close(self)

    def abort(self) -> None:
        """Drop both legs now (shutdown after the drain bound)."""
        self.close()
        self.upstream.source.abort()
        self.downstream.source.abort()
