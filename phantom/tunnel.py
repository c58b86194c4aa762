"""The splice: after a 101, copy bytes both ways between two transports without parsing them.

Each direction is a tiny protocol installed on the reading transport. Backpressure: when one
side's write buffer fills, the other side stops reading until it drains, so nothing queues
without bound. Half-close: EOF in one direction becomes ``write_eof()`` on the other while the
opposite direction keeps flowing (where the transport can't half-close, as with TLS, both are
closed). Both transports close once both directions have ended or either fails.

Vanished peers: both legs get TCP keepalive, so a peer that disappears without a FIN is found
by the kernel within minutes; ``idle_timeout`` (``tunnel_idle_timeout``, 0 = off) closes a tunnel
with no byte in either direction for that long.

Quotas, still without parsing: ``rate`` (``tunnel_rate``) paces each direction by not reading
from its source for as long as its bytes are ahead of the rate (:class:`phantom.ratelimit.Pacer`),
so the sender's own TCP window holds the rest; ``max_bytes`` (``tunnel_max_bytes``) closes the
tunnel instead of carrying the chunk that would go past it; ``close_at`` (a token's ``exp``,
``tunnel_auth_expiry = "close"``) closes it at that time.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import time
from collections.abc import Callable

from .endpoint import DetachedState, can_half_close, hand_over
from .ratelimit import Pacer

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
    __slots__ = (
        "tunnel", "source", "sink", "bytes", "ended", "half_close", "pacer", "sink_full",
        "paced",
    )

    def __init__(
        self, tunnel: Tunnel, source: asyncio.Transport, sink: asyncio.Transport, rate: int
    ) -> None:
        self.tunnel = tunnel
        self.source = source
        self.sink = sink
        self.bytes = 0
        self.ended = False
        # EOF on a TLS source closes its transport anyway: then the whole tunnel ends.
        self.half_close = can_half_close(source) and sink.can_write_eof()
        self.pacer = Pacer(rate) if rate else None
        # Two reasons not to read from source: the sink can't take more, or the rate.
        self.sink_full = False
        self.paced = False

    def data_received(self, data: bytes) -> None:
        tunnel = self.tunnel
        if tunnel.max_bytes and tunnel.bytes_moved + len(data) > tunnel.max_bytes:
            tunnel.over_quota()
            return
        self.bytes += len(data)
        tunnel.active = True
        self.sink.write(data)
        if self.pacer is not None:
            delay = self.pacer.charge(len(data))
            if delay > 0 and not self.paced:
                self.paced = True
                self._read_or_hold()
                asyncio.get_running_loop().call_later(delay, self._pace_done)

    def _pace_done(self) -> None:
        self.paced = False
        self._read_or_hold()

    def _read_or_hold(self) -> None:
        if self.tunnel.closed:
            return
        if self.sink_full or self.paced:
            self.source.pause_reading()
        else:
            self.source.resume_reading()

    def eof_received(self) -> bool:
        self.ended = True
        self.tunnel.direction_ended(self)
        return self.half_close

    def connection_lost(self, exc: Exception | None) -> None:
        self.ended = True
        self.tunnel.leg_lost(exc)

    # Flow control of ``source``'s *write* side. What writes into ``source`` is the other
    # direction, which reads from our ``sink``: while ``source`` can't take more, the other
    # direction stops reading.
    def pause_writing(self) -> None:
        other = self.tunnel.other(self)
        other.sink_full = True
        other._read_or_hold()

    def resume_writing(self) -> None:
        other = self.tunnel.other(self)
        other.sink_full = False
        other._read_or_hold()


class Tunnel:
    """Two spliced transports; ``done`` resolves when both are closed."""

    __slots__ = (
        "label", "started", "closed", "_on_close", "_lost", "done", "upstream", "downstream",
        "active", "_idle_since", "_idle_timeout", "_idle_timer", "max_bytes", "_close_at",
        "_expiry_timer",
    )

    def __init__(
        self,
        client: DetachedState,
        backend: DetachedState,
        *,
        label: str,
        on_close: Callable[[Tunnel], None],
        idle_timeout: float = 0.0,
        rate: int = 0,
        max_bytes: int = 0,
        close_at: float | None = None,
    ) -> None:
        """``rate``: bytes per second each way (0 = any); ``max_bytes``: both ways together
        (0 = any); ``close_at``: a ``time.time()`` reading to close at (None = never)."""
        self.label = label
        self.started = time.monotonic()
        self.closed = False
        # Set by any byte; the idle check clears it (cheaper than a clock read per chunk).
        self.active = False
        self._idle_since = self.started
        self._idle_timeout = idle_timeout
        self._idle_timer: asyncio.TimerHandle | None = None
        self.max_bytes = max_bytes
        self._close_at = close_at
        self._expiry_timer: asyncio.TimerHandle | None = None
        self._on_close = on_close
        self._lost = 0
        self.done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.upstream = _Direction(self, client.transport, backend.transport, rate)
        self.downstream = _Direction(self, backend.transport, client.transport, rate)

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
        if self._close_at is not None and not self.closed:
            delay = max(0.0, self._close_at - time.time())
            self._expiry_timer = asyncio.get_running_loop().call_later(delay, self._expired)

    def _expired(self) -> None:
        log.info("tunnel %s: its token expired: closing", self.label)
        self.close()

    def over_quota(self) -> None:
        log.info(
            "tunnel %s: tunnel_max_bytes (%d) reached: closing", self.label, self.max_bytes
        )
        self.close()

    def other(self, direction: _Direction) -> _Direction:
        return self.downstream if direction is self.upstream else self.upstream

    @property
    def bytes_moved(self) -> int:
        return self.upstream.bytes + self.downstream.bytes

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
        for timer in (self._idle_timer, self._expiry_timer):
            if timer is not None:
                timer.cancel()
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
