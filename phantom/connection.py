"""One client connection: h11 parses requests, each one walks one way through
decide -> (cache hit | forward | tunnel | reject) -> respond, then the next one starts.

Requests on a connection are handled strictly in order, which is what makes pipelining safe:
h11 holds a pipelined request's bytes until ``start_next_cycle()``. Backpressure: while the
client does not read its answers, it is not read from either.

The connection is one object made of layers, each in its own module and each using only the
layers under it: :mod:`~phantom.answers` (writing answers), :mod:`~phantom.relay` (a backend's
answer relayed, the cache filled), :mod:`~phantom.forward` (a request to its backend),
:mod:`~phantom.lookup` (the cache step), :mod:`~phantom.upgrade` (handshakes and tunnels),
:mod:`~phantom.fastlane` (answers that skip h11); this module holds the protocol and the request
loop. See docs/architecture.md.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

import h11

from . import clients, framing, handshake
from . import headers as hdr
from .answers import ClientGone, over_limit
from .bearer import take_param
from .context import ProxyContext, Site
from .endpoint import EndpointClosed, ReadTimeout
from .errors import PhantomError, RequestRejected
from .exchange import CLIENT_CLOSED, Exchange
from .fastlane import FastLane
from .fastrelay import SimpleForward
from .lookup import CacheLookup
from .routing import MethodNotAllowed
from .stages import RequestView
from .upgrade import Upgrading

log = logging.getLogger("phantom")

# A connection turned away at once (max_connections_per_client) is read from and dropped for
# at most this long after its 503, so that its unread request does not reset the connection
# before the client has read the 503.
LINGER_SECONDS = 2.0


class ClientConnection(FastLane, Upgrading, CacheLookup):
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
        await self.drain()
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
        return _with_target(event, checked.target, [(b"Host", checked.authority), *headers])

    def _idle_deadline(self) -> float:
        """When an idle connection is closed: ``header_timeout`` after it opened, then
        ``keepalive_timeout`` after its last answer."""
        config = self.config
        wait = config.keepalive_timeout if self.served else config.header_timeout
        return self.idle_since + wait

    async def _handle(self, request: h11.Request) -> str:
        """Route the request to its server, ask the server's stages, and go on to the cache
        or the backend."""
        raw_headers = request.headers.raw_items()
        try:
            route = self.router.route(
                hdr.get_header(raw_headers, b"host"), request.target, request.method
            )
        except MethodNotAllowed as refused:
            await self._read_body()
            self._respond_plain(
                405,
                b"This path does not take this method.\n",
                headers=[hdr.PLAIN_TEXT, (b"Allow", refused.allow_header)],
            )
            return "next"
        if route is None:
            await self._read_body()
            self._respond_plain(404, b"No server is bound to this host and path.\n")
            return "next"
        if route.path != request.target:
            # From here on every rule reads the target in its normal form, as the backend will.
            request = _with_target(request, route.path, raw_headers)
        site = self.sites[route.server.name]
        exchange = self.exchange
        exchange.server = site.config.name
        exchange.backend = site.config.proxy_url
        if site.token_param is not None:
            # A token in the query never reaches the log, whatever becomes of the request.
            exchange.target = take_param(exchange.target, site.token_param)[0]
        decided = self.decided
        if decided is not None:  # the fast lane read this request and asked the stages
            self.decided = None
            view, answer = decided
        else:
            view = RequestView(
                request.method,
                request.target,
                request.headers,
                self.client_ip,
                self._tunnel_offer(site, raw_headers),
            )
            stages = site.stages
            answer = stages.check(view) if stages.sync else await stages.run(view)
        target = route.target
        if view.passes_on:
            self.answer_fields = view.answer_fields
            self.owns_cors = view.owns_cors
            request, target, raw_headers = self._guarded(view, request, target, raw_headers)
        if answer is not None:
            await self._read_body()
            self._answer(site, answer, view)
            return "next"
        try:
            if view.upgrade:
                return await self._upgrade(
                    site,
                    request,
                    target,
                    handshake.offering_only(raw_headers, view.upgrade),
                    close_at=view.expires,
                )
            return await self._serve_http(site, request, target, raw_headers, view)
        except RequestRejected:
            raise
        except PhantomError as exc:
            return self._backend_failed(site, request, exc)

    def _guarded(
        self,
        view: RequestView,
        request: h11.Request,
        target: bytes,
        raw_headers: list[tuple[bytes, bytes]],
    ) -> tuple[h11.Request, bytes, list[tuple[bytes, bytes]]]:
        """The request as the guards leave it for the cache and the backend: the token's query
        parameter out of every target (the log's too), the client's claim fields replaced by
        the verified ones. (The access log's target lost the parameter in ``_handle``.)"""
        if view.drop_fields or view.forward_fields:
            dropped = view.drop_fields
            raw_headers = [(n, v) for n, v in raw_headers if n.lower() not in dropped]
            raw_headers += view.forward_fields
        param = view.token_param
        if param is not None:
            target = take_param(target, param)[0]
        if param is not None or view.forward_fields or view.drop_fields:
            request = _with_target(request, view.target, raw_headers)
        return request, target, raw_headers

    @staticmethod
    def _tunnel_offer(site: Site, raw_headers: list[tuple[bytes, bytes]]) -> list[bytes]:
        """The protocols this request may be tunnelled to. With enable_websocket = false,
        every offer (a stage refuses them); otherwise offers of protocols not allowed are
        ignored (RFC 9110 §7.8), and a request left with none is an ordinary one: its Upgrade
        is hop-by-hop."""
        offered = handshake.offered(raw_headers)
        if not site.config.enable_websocket:
            return offered
        return handshake.permitted(offered, site.config.upgrade_protocols)

def _with_target(
    request: h11.Request, target: bytes, headers: list[tuple[bytes, bytes]]
) -> h11.Request:
    """``request`` with another target and these fields (names as the client spelled them)."""
    return h11.Request(
        method=request.method, target=target, headers=headers, http_version=request.http_version
    )
