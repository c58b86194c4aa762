"""One client connection: h11 parses requests, each one walks one way through
decide -> (cache hit | forward | tunnel | reject) -> respond, then the next one starts.

Requests on a connection are handled strictly in order, which is what makes pipelining safe:
h11 holds a pipelined request's bytes until ``start_next_cycle()``. Backpressure: while the
client does not read its answers, it is not read from either.

The connection is one object made of layers, each in its own module and each using only the
layers under it: :mod:`~phantom.answers` (writing answers), :mod:`~phantom.relay` (a backend's
answer relayed, the cache filled), :mod:`~phantom.forward` (a request to its backend),
:mod:`~phantom.lookup` (the cache step), :mod:`~phantom.upgrade` (handshakes and tunnels),
:mod:`~phantom.fastlane` (answers that skip h11), :mod:`~phantom.dispatch` (a request routed
and asked its server's stages); this module holds the protocol and the request loop. See
docs/architecture.md.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

import h11

from . import clients, framing
from . import headers as hdr
from .answers import ClientGone, over_limit
from .context import ProxyContext
from .dispatch import Dispatching, with_target
from .endpoint import EndpointClosed, ReadTimeout
from .errors import RequestRejected
from .exchange import CLIENT_CLOSED, Exchange
from .fastrelay import SimpleForward

log = logging.getLogger("phantom")

# A connection turned away at once (max_connections_per_client) is read from and dropped for
# at most this long after its 503, so that its unread request does not reset the connection
# before the client has read the 503.
LINGER_SECONDS = 2.0


class ClientConnection(Dispatching):
    def __init__(self, ctx: ProxyContext, *, tls: bool = False) -> None:
        super().__init__(ctx, tls=tls)
        config = self.config
        self.scanner = framing.HeadScanner(config.max_request_line, config.max_header_bytes)
        self.over_capacity = False  # accepted beyond max_connections: answered 503
        # This connection's place in its client's share, or it is turned away (the client
        # holds max_connections_per_client).
        self.hold = None
        self.turned_away = False
        self.finished: asyncio.Task[None]

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        peer = self.transport.get_extra_info("peername")
        if peer:
            self.client_ip = str(peer[0])
            self.trusted = clients.is_trusted(self.client_ip, self.config.trusted_proxies)
        local = self.transport.get_extra_info("sockname")
        if isinstance(local, tuple):
            self.by = hdr.node(str(local[0]), local[1])
        ctx = self.ctx
        if not self.trusted:
            self.hold = ctx.client_connections.take(
                self.client_ip, self.config.max_connections_per_client
            )
            self.turned_away = self.hold is None
            self.idle = not self.turned_away  # the fast lane answers it nothing
        limit = self.config.max_connections
        self.over_capacity = bool(limit) and len(ctx.connections) + len(ctx.tunnels) >= limit
        ctx.connections.add(self)
        ctx.client_accepted(self.transport)
        self.finished = asyncio.get_running_loop().create_task(self._serve())

    def data_received(self, data: bytes) -> None:
        if (
            self.idle
            and not self._inbox
            and not self._write_paused  # a client not reading its answers gets no more
            and not self.over_capacity
            and not self.ctx.draining
        ):
            data = self._answer_simple_hits(data)
            if not data:
                return
        super().data_received(data)

    def pause_writing(self) -> None:
        super().pause_writing()
        self._update_reading()

    def resume_writing(self) -> None:
        super().resume_writing()
        self._update_reading()

    def _holds_reading(self) -> bool:
        return self._write_paused or super()._holds_reading()

    def connection_lost(self, exc: Exception | None) -> None:
        super().connection_lost(exc)
        if self.in_flight is not None:
            # Nobody will read the answer: abandon the backend request, never pool it (nor
            # retry it on another connection).
            self.in_flight.abandon()
        relay = self.relay
        if relay is not None:
            self._end_relay(relay)
            self.ctx.exchange_done(relay.exchange)

    async def _serve(self) -> None:
        handed_off = False
        try:
            while True:
                outcome = await self._serve_one()
                if outcome != "next":
                    handed_off = outcome == "tunnel"
                    break
        except (ClientGone, EndpointClosed):
            pass
        except Exception:
            log.exception("client %s: unexpected error", self.client_ip)
            self.abort()
        finally:
            self.ctx.connections.discard(self)
            if not handed_off:  # (a tunnel gives the hold back when it closes)
                self.close()
                if self.hold is not None:
                    self.hold.release()

    async def _serve_one(self) -> str:
        """Serve one request; returns "next" (keep-alive), "close" or "tunnel"."""
        if self.turned_away:
            await self._turn_away()
            return "close"
        try:
            request = await self._next_request()
        except (h11.RemoteProtocolError, RequestRejected) as exc:
            self.exchange = Exchange(self.client_ip, b"-", b"-")  # no usable request line
            if isinstance(exc, RequestRejected):
                self._reject(exc)
            else:
                self._reject_malformed(exc)
            self.ctx.exchange_done(self.exchange)
            return "close"
        if request is None:
            return "close"  # closed, or idle too long: the client is done with us.
        # Every answer of the loop (cached, relayed, our own) waits for the client to read
        # the ones before.
        try:
            await self.drain()
        except EndpointClosed:
            if isinstance(request, SimpleForward):
                request.abandon()
            raise
        self.served += 1
        outcome = "close"
        if isinstance(request, SimpleForward):
            self.exchange = exchange = request.exchange
            handling = self._forward_simple(request)
        else:
            self.exchange = exchange = Exchange.of_request(self.client_ip, request)
            if self.over_capacity:
                self._reject(over_limit("too many connections"))
                self.ctx.exchange_done(exchange)
                return outcome
            handling = self._handle(request)
        try:
            outcome = await handling
        except (ClientGone, EndpointClosed):
            # The client hung up before its answer was complete: nginx's 499 says so in the
            # access log. Nothing is wrong with the backend, so there is no warning either.
            exchange.status = CLIENT_CLOSED
            log.debug("client %s: left before the answer was complete", self.client_ip)
            raise
        except RequestRejected as exc:
            self._reject(exc)
            return "close"
        except h11.RemoteProtocolError as exc:
            # A broken body (bad chunk, early EOF): the exchange can't be completed.
            log.info("client %s: %s", self.client_ip, exc)
            if self.h11.our_state is h11.SEND_RESPONSE:
                self._reject_malformed(exc)
            return "close"
        except h11.LocalProtocolError as exc:
            self._unsendable(exc)
            return "close"
        finally:
            if self.answer_fields or self.owns_cors:
                # This request's guards said them; the fast lane answers the next ones.
                self.answer_fields = ()
                self.owns_cors = False
            if outcome != "tunnel":  # a tunnel's exchange ends when the tunnel closes
                self.ctx.exchange_done(exchange)
                if self.tunnel_hold is not None:
                    self.tunnel_hold.release()
                    self.tunnel_hold = None
        if outcome != "next":
            return outcome
        return "next" if self._finish_cycle() else "close"

    async def _turn_away(self) -> None:
        """A 503 at once for a client that holds ``max_connections_per_client``: no request is
        waited for, so its extra connections cost nothing while they trickle heads. Then a
        lingering close: our side ends, and what the client sends is read and dropped until
        it closes (``LINGER_SECONDS`` at most), so that its request, left unread, does not
        turn our close into a reset that destroys the 503 before the client reads it."""
        self.exchange = Exchange(self.client_ip, b"-", b"-")
        self._reject(over_limit("too many connections from this client"))
        self.ctx.exchange_done(self.exchange)
        if self.half_close and not self.is_lost:
            self.transport.write_eof()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + LINGER_SECONDS
        with contextlib.suppress(ReadTimeout):
            while await self.read(max(deadline - loop.time(), 0.0)):
                pass

    def _finish_cycle(self) -> bool:
        conn = self.h11
        if self._outside_h11:
            # The fast lane's exchange is complete; while draining, the connection ends.
            return not self.ctx.draining
        if conn.our_state is h11.DONE and conn.their_state is h11.DONE:
            conn.start_next_cycle()
            # A pipelined request may already be waiting in h11's buffer.
            self.scanner.reset(conn.trailing_data[0])
            return True
        return False

    async def _next_request(self) -> h11.Request | SimpleForward | None:
        """The next request, its head checked by ``framing`` before h11 parses it, or one the
        fast lane read and left to the loop to forward.

        None when the client closed, or sent nothing within ``keepalive_timeout`` (the first
        request: ``header_timeout``). Raises RequestRejected: 408 when a started head is not
        complete within ``header_timeout`` (slowloris), 414 / 431 / 400 / 501 / 405 for heads
        over a limit or with unsafe framing.
        """
        config = self.config
        scanner = self.scanner
        loop = asyncio.get_running_loop()
        head_deadline: float | None = None
        self.idle = True
        self.idle_since = loop.time()
        while True:
            if self.relay is not None:
                # A request the fast lane is relaying is answered first.
                await self._relay_settled()
            forward = self.simple_forward
            if forward is not None:  # (it may have come before this coroutine first ran)
                self.simple_forward = None
                return forward
            if (head := scanner.head()) is not None:
                break
            if not scanner.empty and head_deadline is None:
                self.idle = False
                head_deadline = loop.time() + config.header_timeout
            deadline = self._idle_deadline() if head_deadline is None else head_deadline
            try:
                await self.wait_readable(max(deadline - loop.time(), 0.0))
            except ReadTimeout:
                if self.relay is not None:
                    continue
                if head_deadline is not None:
                    raise RequestRejected(408, "request head not received in time") from None
                if loop.time() < self._idle_deadline():
                    continue  # the fast lane answered meanwhile: the wait starts again
                return None
            if self.relay is not None or self.simple_forward is not None:
                continue
            data = self.take_unread()
            if not data:
                return None  # EOF before a complete head: nothing to answer.
            scanner.feed(data)
            self.h11.receive_data(data)
        self.idle = False
        checked = self.prechecked or framing.check_head(head, config.max_headers)
        self.prechecked = None
        event = await self._next_event(config.header_timeout)
        if not isinstance(event, h11.Request):
            return None
        if checked.authority is None:
            return event
        # Absolute-form (RFC 9112 §3.2.2): the target's authority replaces Host, and the
        # request goes on in origin-form.
        headers = [(n, v) for n, v in event.headers.raw_items() if n.lower() != b"host"]
        return with_target(event, checked.target, [(b"Host", checked.authority), *headers])

    def _idle_deadline(self) -> float:
        """When an idle connection is closed: ``header_timeout`` after it opened, then
        ``keepalive_timeout`` after its last answer."""
        config = self.config
        wait = config.keepalive_timeout if self.served else config.header_timeout
        return self.idle_since + wait
