"""One client connection: h11 parses requests, each one walks one way through
decide -> (cache hit | forward | tunnel | reject) -> respond, then the next one starts.

Requests on a connection are handled strictly in order, which is what makes pipelining safe:
h11 holds a pipelined request's bytes until ``start_next_cycle()``.

The fast lane: while the request loop waits for a request with nothing buffered, bytes that
arrive are first offered to ``framing.parse_simple``; each simple request that is a fresh
cache hit is answered right there in ``data_received``, in order, without h11 and without
waking the loop. A simple request whose answer fills no shared cache entry is forwarded from
there too, on a pooled backend connection, and a simple answer is relayed from that
connection's ``data_received`` (the relay); what the relay can't finish is handed to the loop
where it stopped. The first request that is neither, and everything after it, goes to the
loop as usual: h11 has seen none of the fast lane's bytes and is still at IDLE.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import cast

import h11

from . import clients, framing, handshake, revalidation, webhooks
from . import headers as hdr
from .cache import encoding, policy
from .cache.policy import Forward
from .cache.store import CachedResponse, Key
from .context import ProxyContext, Site
from .endpoint import Endpoint, EndpointClosed, ReadTimeout
from .errors import BackendError, PhantomError, RequestRejected
from .exchange import CLIENT_CLOSED, Exchange
from .reasons import reason_phrase
from .upstream import SIMPLE_MAX_HEADERS, UpstreamConnection

log = logging.getLogger("phantom")

IDEMPOTENT = frozenset({b"GET", b"HEAD", b"OPTIONS", b"PUT", b"DELETE", b"TRACE"})

# The relay driven by callbacks takes answers up to this size whole; longer ones are streamed
# by the request loop, with flow control.
RELAY_LIMIT = 64 * 1024
# A connection turned away at once (max_connections_per_client) is read from and dropped for
# at most this long after its 503, so that its unread request does not reset the connection
# before the client has read the 503.
LINGER_SECONDS = 2.0
# Pipelined fast-lane hits are written together up to about this many bytes; then the
# transport's flow control says whether more may follow (asyncio's default high-water mark).
HITS_BATCH = 64 * 1024


class ClientGone(Exception):
    """The client closed or broke its connection while we were answering it."""


class ClientConnection(Endpoint):
    def __init__(self, ctx: ProxyContext, *, tls: bool = False) -> None:
        super().__init__()
        self.ctx = ctx
        # X-Forwarded-Proto: what the client spoke to us.
        self.proto = b"https" if tls else b"http"
        # A reload swaps ctx's config, sites and router; this connection keeps what it
        # started with.
        self.config = config = ctx.config
        self.sites = dict(ctx.sites)
        self.router = ctx.router
        # The scanner enforces the head limits first; h11's own bound is only a backstop.
        self.h11 = h11.Connection(
            h11.SERVER, max_incomplete_event_size=config.max_header_bytes + 4096
        )
        self.scanner = framing.HeadScanner(config.max_request_line, config.max_header_bytes)
        self.client_ip = "-"
        self.trusted = False  # the peer is in trusted_proxies
        self.by = ""  # our address the client connected to, as Forwarded's "by" names it
        self.over_capacity = False  # accepted beyond max_connections: answered 503
        # This connection's place in its client's share (None: a trusted proxy's, not
        # counted), or it is turned away (the client holds max_connections_per_client).
        self.hold: clients.Hold | None = None
        self.turned_away = False
        # An upgrade's place in its client's tunnels, from the check until the tunnel opens.
        self.tunnel_hold: clients.Hold | None = None
        self.served = 0  # requests answered on this connection
        # The request being served: what metrics and the access log get when it ends.
        self.exchange = Exchange("-", b"-", b"-")
        # True while waiting for a request with nothing of it received: safe to close, and
        # the fast lane may answer what arrives.
        self.idle = True
        # When the connection last became idle (loop time): the keep-alive wait runs from here.
        self.idle_since = 0.0
        # The next head, already read by the fast lane (in its subset, so nothing to refuse)
        # but not a hit: the request loop skips framing.check_head for it.
        self.prechecked: framing.RequestHead | None = None
        # The backend connection of the request being forwarded, dropped if the client goes.
        self.in_flight: UpstreamConnection | None = None
        # A request the fast lane read and leaves to the loop to forward (h11 never sees it).
        self.simple_forward: _SimpleForward | None = None
        # A request the fast lane forwarded and relays by callbacks, the loop asleep; the
        # loop waits on ``_relay_waiter`` if something wakes it meanwhile.
        self.relay: _SimpleForward | None = None
        self._relay_waiter: asyncio.Future[None] | None = None
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

    # Flow control (uvicorn's): while the client does not read what it was answered (the
    # transport's write buffer is over its high-water mark), it is not read from either, and
    # nothing more is answered; its pipelined requests wait in the kernel, not in our memory.
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

    # -- the request loop -------------------------------------------------------------------

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
        if isinstance(request, _SimpleForward):
            self.exchange = exchange = request.exchange
            handling = self._forward_simple(request)
        else:
            self.exchange = exchange = Exchange.of_request(self.client_ip, request)
            if self.over_capacity:
                self._reject(_over_limit("too many connections"))
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
        self._reject(_over_limit("too many connections from this client"))
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

    async def _next_request(self) -> h11.Request | _SimpleForward | None:
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

    async def _next_event(self, timeout: float | None = None) -> h11.Event | type[h11.PAUSED]:
        """The next event from the client, reading as needed; PAUSED once a request is done
        and until the cycle is finished."""
        conn = self.h11
        while True:
            event = conn.next_event()
            if event is h11.NEED_DATA:
                conn.receive_data(await self.read(timeout))
                continue
            return cast("h11.Event | type[h11.PAUSED]", event)

    async def _body_event(self) -> h11.Event | type[h11.PAUSED]:
        """The next event of a request body. Each wait for more of it is bounded by
        ``header_timeout`` (408), so a client can't hold a connection by trickling a body."""
        try:
            return await self._next_event(self.config.header_timeout)
        except ReadTimeout:
            raise RequestRejected(408, "request body not received in time") from None

    async def _read_body(self, *, keep: bool = False, limit: int = 0) -> list[bytes]:
        """Consume the rest of the request body. Requests we answer ourselves drop it as it
        arrives; ``keep`` returns it (an upgrade replays it), bounded by ``limit`` (413)."""
        parts: list[bytes] = []
        size = 0
        while self.h11.their_state is h11.SEND_BODY:
            event = await self._body_event()
            if keep and isinstance(event, h11.Data):
                size += len(event.data)
                if limit and size > limit:
                    raise RequestRejected(413, f"request body larger than {limit} bytes")
                parts.append(event.data)
        return parts

    # -- the fast lane -----------------------------------------------------------------------

    def _answer_simple_hits(self, data: bytes) -> bytes:
        """Answer the simple fresh cache hits at the start of ``data`` (pipelined ones in
        order, written together up to ``HITS_BATCH`` bytes); returns the rest, from the first
        request that is not one or once the client stopped reading, for the request loop."""
        config = self.config
        answers: list[bytes] = []
        exchanges: list[Exchange] = []
        batch = 0
        start = 0
        while start < len(data) and not self._write_paused:
            request = framing.parse_simple(
                data, start, config.max_request_line, config.max_header_bytes, config.max_headers
            )
            if request is None:
                break
            answered = self._simple_decision(request)
            if answered is None:
                self.prechecked = framing.RequestHead(request.target)
                break
            if isinstance(answered, _SimpleForward):
                # Until it is answered, what follows waits its turn.
                answered.raw = data[start : request.end]
                self.idle = False
                if not self._start_relay(answered):
                    self.simple_forward = answered  # the loop forwards it
                    self._wake()
                start = request.end
                break
            answers.append(answered[0])
            exchanges.append(answered[1])
            start = request.end
            batch += len(answered[0])
            if batch >= HITS_BATCH:
                # Out now, so that the transport can say (pause_writing) the client is not
                # keeping up before more is answered.
                self._write_hits(answers, exchanges)
                batch = 0
        self._write_hits(answers, exchanges)
        return data[start:]

    def _write_hits(self, answers: list[bytes], exchanges: list[Exchange]) -> None:
        """Send the fast lane's answers in one write, and count them; the lists are emptied."""
        if not answers:
            return
        self.served += len(answers)
        self.idle_since = asyncio.get_running_loop().time()
        self.transport.write(b"".join(answers))
        for exchange in exchanges:
            self.ctx.exchange_done(exchange)
        answers.clear()
        exchanges.clear()

    def _simple_decision(
        self, request: framing.SimpleRequest
    ) -> tuple[bytes, Exchange] | _SimpleForward | None:
        """What becomes of a simple request, decided as the request loop decides it (route,
        cache rules, key, RFC 9111 lookup): a fresh hit's whole answer; a forward that fills
        no shared entry (the cache is bypassed, or the URL's last answer was not storable);
        None for anything else (no route, webhooks, snapshots, a stale entry, a miss others
        may wait for): the loop takes it through h11."""
        try:
            route = self.router.route(request.host, request.target)
        except RequestRejected:
            return None  # the loop answers it
        if route is None:
            return None
        site = self.sites[route.server.name]
        if site.webhooks or site.config.pre_generate:
            return None
        method, target, headers = request.method, route.path, request.headers
        if not site.rules.uses_cache(method, target):
            plan = _Plan(None, Forward.BYPASS, request_headers=headers)
            return _SimpleForward(
                request, site, route.target, plan, self._fast_exchange(request, site)
            )
        cache = site.cache
        key = site.key_for(target, headers, self.proto)
        state = policy.lookup(method, headers, cache.variants(key), cache.clock())
        if isinstance(state, policy.Miss) and not (
            _fills_cache(state) and key not in site.uncacheable
        ):
            plan = _Plan(key, state.reason, request_headers=headers)
            return _SimpleForward(
                request, site, route.target, plan, self._fast_exchange(request, site)
            )
        if not isinstance(state, policy.Fresh):
            return None
        body = cache.body(state.entry)
        if body is None:
            return None
        cache_status = policy.hit_status(state.ttl)
        status, reason, wire_headers, body = _cached_answer(state.entry, body, headers)
        # What h11 writes for the framing-only Response of _respond_cached on a keep-alive
        # HTTP/1.1 connection.
        if status != 304:
            head = b"HTTP/1.1 %d %s\r\nContent-Length: %d\r\n" % (status, reason, len(body))
        else:
            head = b"HTTP/1.1 %d %s\r\n" % (status, reason)
        if method == b"HEAD":
            body = b""
        exchange = self._fast_exchange(request, site)
        exchange.status = status
        exchange.cache_status = cache_status
        exchange.body_bytes = len(body)
        tail = _age_and_status(state.age, cache_status, site.config.cache_status_header)
        return b"".join((head, wire_headers, tail, body)), exchange

    # -- the fast lane's relay ---------------------------------------------------------------
    #
    # A simple forward goes out at once on a pooled backend connection, and the answer, when
    # it is simple and arrives whole (the common small response), is relayed from that
    # connection's data_received: no coroutine wakes on either side. Anything else hands the
    # request over to the loop (``_hand_over``), which goes on from where the relay stopped.

    def _start_relay(self, forward: _SimpleForward) -> bool:
        """Send ``forward`` on a pooled connection; False when none is idle (the loop then
        connects and forwards it)."""
        site = forward.site
        upstream = site.upstream.take_idle()
        if upstream is None:
            return False
        loop = asyncio.get_running_loop()
        timeout = self.ctx.config.backend_timeout
        forward.upstream = self.in_flight = upstream
        forward.request_time = site.cache.clock()
        forward.sent_at = time.perf_counter()
        forward.deadline = loop.time() + timeout
        forward.timer = loop.call_later(timeout, self._hand_over)
        self.relay = forward
        upstream.receiver = self._relay_received
        upstream.write(self._outgoing_head(forward))
        return True

    def _relay_received(self) -> None:
        """The backend sent something (or closed): relay the answer once it is complete."""
        forward = self.relay
        assert forward is not None and forward.upstream is not None
        upstream = forward.upstream
        forward.received += upstream.take_unread()
        received = forward.received
        request = forward.request
        response = forward.response
        if response is None:  # the head is read once, when it is complete
            end = received.find(b"\r\n\r\n")
            if end < 0:
                if (
                    upstream.at_eof
                    or len(received) > RELAY_LIMIT
                    or framing.ends_with_bare_lf(received)  # a head h11 reads
                ):
                    self._hand_over()
                return
            response = forward.response = framing.parse_simple_response(
                received, end, request.method, SIMPLE_MAX_HEADERS
            )
            if response is None:
                self._hand_over()  # h11 reads it
                return
        total = response.end + response.length
        if len(received) < total:
            if upstream.at_eof or total > RELAY_LIMIT:
                self._hand_over()  # cut short, or big enough to stream with flow control
            return
        self._end_relay(forward)
        # Bytes beyond the answer make the connection unusable (it is then not pooled).
        upstream.simple_done = len(received) == total
        exchange = self.exchange = forward.exchange
        exchange.upstream_seconds = time.perf_counter() - forward.sent_at
        site = forward.site
        head, filling = self._simple_answer_head(forward, response)
        body = received[response.end : total]
        self.transport.write(head + body)
        exchange.body_bytes = len(body)
        site.upstream.release(upstream)
        if filling is not None:
            filling.store(site, body)
        self.served += 1
        self.ctx.exchange_done(exchange)
        self.idle_since = asyncio.get_running_loop().time()
        if self.ctx.draining:
            self.close()  # the loop sees the close and ends
        # With bytes already waiting (a pipelined request) the loop is awake and takes them.
        self.idle = not self._inbox

    def _hand_over(self) -> None:
        """The relay can't finish (an answer h11 must read, a long or cut-short one, the
        backend timing out): the loop takes the request over from here."""
        forward = self.relay
        assert forward is not None and forward.upstream is not None
        self._end_relay(forward)
        upstream = forward.upstream
        if not forward.received and (upstream.at_eof or upstream.is_lost):
            # The pooled connection had died: the loop sends the request again, on a fresh
            # connection (as its exchange retries, and for the same reason).
            upstream.abort()
            forward.upstream = None
        else:
            upstream.put_back(forward.received)
        self.simple_forward = forward
        self._wake()

    def _end_relay(self, forward: _SimpleForward) -> None:
        self.relay = None
        self.in_flight = None
        if forward.timer is not None:
            forward.timer.cancel()
        if forward.upstream is not None:
            forward.upstream.receiver = None
        waiter = self._relay_waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    async def _relay_settled(self) -> None:
        waiter = self._relay_waiter = asyncio.get_running_loop().create_future()
        try:
            await waiter
        finally:
            self._relay_waiter = None

    def _fast_exchange(self, request: framing.SimpleRequest, site: Site) -> Exchange:
        exchange = Exchange.of_head(
            self.client_ip, request.method, request.target, b"1.1", request.headers
        )
        exchange.server = site.config.name
        exchange.backend = site.config.proxy_url
        return exchange

    # -- deciding ---------------------------------------------------------------------------

    async def _handle(self, request: h11.Request) -> str:
        raw_headers = request.headers.raw_items()
        route = self.router.route(hdr.get_header(raw_headers, b"host"), request.target)
        if route is None:
            await self._read_body()
            self._respond_plain(404, b"No server is bound to this host and path.\n")
            return "next"
        if route.path != request.target:
            # From here on every rule reads the target in its normal form, as the backend will.
            request = _with_target(request, route.path, raw_headers)
        site = self.sites[route.server.name]
        self.exchange.server = site.config.name
        self.exchange.backend = site.config.proxy_url
        cache_key = None
        if site.webhooks:
            payload = webhooks.request_payload(request.method, request.target, raw_headers)
            denial, cache_key = await site.webhooks.run(payload)
            if denial is not None:
                await self._read_body()
                self._respond_plain(denial.status, denial.body, headers=denial.headers)
                return "next"
        # The protocols this request may be tunnelled to. enable_websocket = false refuses
        # every upgrade; otherwise offers of protocols not allowed are ignored (RFC 9110 §7.8),
        # and a request left with none is an ordinary one: its Upgrade is hop-by-hop.
        tunnel = handshake.offered(raw_headers)
        if site.config.enable_websocket:
            tunnel = handshake.permitted(tunnel, site.config.upgrade_protocols)
        if site.config.pre_generate:
            outcome = await self._serve_snapshot(site, request, raw_headers, bool(tunnel))
            if outcome is not None:
                return outcome
        try:
            if tunnel:
                if not site.config.enable_websocket:
                    await self._read_body()
                    self._respond_plain(501, b"Upgrade requests are not enabled on this server.\n")
                    return "next"
                return await self._upgrade(
                    site, request, route.target, handshake.offering_only(raw_headers, tunnel)
                )
            return await self._serve_http(site, request, route.target, raw_headers, cache_key)
        except RequestRejected:
            raise
        except PhantomError as exc:
            return self._backend_failed(site, request, exc)

    async def _serve_snapshot(
        self,
        site: Site,
        request: h11.Request,
        raw_headers: list[tuple[bytes, bytes]],
        upgrade: bool,
    ) -> str | None:
        """A pre-generate server answers from its snapshots; None: fall through (only with
        ``pre_generate_fallthrough``) to the cache and the backend."""
        if not upgrade and request.method in (b"GET", b"HEAD"):
            entry = site.snapshots.get(request.target)
            if entry is not None:
                await self._read_body()
                age = entry.age(site.cache.clock())
                # A snapshot never expires: its hit carries no ttl.
                status = policy.cache_status(hit=True)
                headers = list(request.headers)
                self._answer_from_cache(
                    site, entry, entry.body, age, status, headers, request.method
                )
                return "next"
        if site.config.pre_generate_fallthrough:
            return None
        await self._read_body()
        if upgrade:
            self._respond_plain(501, b"Upgrades are not served by a pre-generated site.\n")
        else:
            self._respond_plain(404, b"Not found: no snapshot of this path.\n")
        return "next"

    def _backend_headers(
        self, site: Site, headers: list[tuple[bytes, bytes]], *, upgrade: bool
    ) -> list[tuple[bytes, bytes]]:
        """``preserve_host = false``: the backend sees its own host (and origin, on upgrades)."""
        if site.config.preserve_host:
            return headers
        netloc = site.config.proxy_url.netloc.encode()
        return hdr.with_backend_host(headers, netloc, origin=upgrade)

    async def _serve_http(
        self,
        site: Site,
        request: h11.Request,
        target: bytes,
        raw_headers: list[tuple[bytes, bytes]],
        cache_key: str | None,
    ) -> str:
        """Look the request up in the cache (RFC 9111 §4) and act on the policy's answer."""
        method = request.method
        headers = list(request.headers)
        if method not in policy.LOOKUP_METHODS:
            if site.config.forward_get_only:
                await self._read_body()
                self._respond_plain(
                    405,
                    b"Only GET and HEAD are forwarded.\n",
                    headers=[_PLAIN_TEXT, (b"Allow", b"GET, HEAD")],
                )
                return "next"
            plan = _Plan(None, Forward.METHOD, request_headers=headers)
            return await self._forward(site, request, target, raw_headers, plan)
        if (
            not site.rules.uses_cache(method, request.target)
            # A GET or HEAD with a body: the backend may answer what the body asks for, so
            # that answer is no one else's ("fat GET" poisoning), and no stored one is its.
            or framing.body_framing(raw_headers).has_body
        ):
            plan = _Plan(None, Forward.BYPASS, request_headers=headers)
            return await self._forward(site, request, target, raw_headers, plan)
        cache = site.cache
        # A cache_key webhook's own key wins (not tied to the host), then create_proxy's.
        key = (
            ("", cache_key)
            if cache_key is not None
            else site.key_for(request.target, headers, self.proto)
        )
        state = policy.lookup(method, headers, cache.variants(key), cache.clock())
        collapsed = False
        coalesce = _fills_cache(state) and key not in site.uncacheable
        if coalesce and key in site.inflight:
            # Another request for this key is on its way to the origin: wait for its result
            # rather than stampede the origin (request coalescing).
            await self._await_flight(site, site.inflight[key])
            state = policy.lookup(method, headers, cache.variants(key), cache.clock())
            collapsed = True
        if isinstance(state, (policy.Fresh, policy.ServeStale)):
            body = cache.body(state.entry)
            if body is not None:
                await self._read_body()
                self._serve_stored(
                    site, key, request, target, raw_headers, state, body, collapsed
                )
                return "next"
            cache.discard(key)  # its body file is gone: the entry is no use any more
            state = policy.Miss(Forward.URI_MISS)
        if isinstance(state, policy.Unsatisfiable):
            await self._read_body()
            self._respond_plain(504, b"Nothing usable is stored (only-if-cached).\n")
            return "next"
        entry = None if isinstance(state, policy.Miss) else state.entry
        if collapsed or method != b"GET" or not coalesce or key in site.inflight:
            plan = _Plan(key, state.reason, entry, request_headers=headers)
            return await self._forward(site, request, target, raw_headers, plan)
        flight: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        site.inflight[key] = flight
        plan = _Plan(key, state.reason, entry, flight, headers)
        try:
            return await self._forward(site, request, target, raw_headers, plan)
        finally:
            plan.land(site)

    def _serve_stored(
        self,
        site: Site,
        key: Key,
        request: h11.Request,
        target: bytes,
        raw_headers: list[tuple[bytes, bytes]],
        state: policy.Fresh[CachedResponse] | policy.ServeStale[CachedResponse],
        body: bytes,
        collapsed: bool,
    ) -> None:
        """Answer from a usable stored response; a stale-while-revalidate one also starts
        the background refresh."""
        headers = list(request.headers)
        detail = None
        if isinstance(state, policy.ServeStale):
            detail = "stale-while-revalidate" if state.refresh else "max-stale"
            if state.refresh:
                revalidation.BackgroundRefresh(
                    site,
                    key,
                    self._outgoing(
                        site, request, target, raw_headers, state.entry.decision, method=b"GET"
                    ),
                    headers,
                    state.entry,
                    self.ctx.config.backend_timeout,
                ).start()
        status = policy.cache_status(
            hit=not collapsed,
            fwd=Forward.URI_MISS if collapsed else None,
            collapsed=collapsed,
            ttl=state.ttl,
            detail=detail,
        )
        self._answer_from_cache(
            site, state.entry, body, state.age, status, headers, request.method
        )

    async def _await_flight(self, site: Site, flight: asyncio.Future[None]) -> None:
        """Wait for another request's trip to the origin, at most ``coalesce_timeout``."""
        try:
            await asyncio.wait_for(asyncio.shield(flight), site.config.coalesce_timeout)
        except asyncio.TimeoutError:
            pass  # the caller looks again and, finding nothing, forwards on its own

    # -- forwarding -------------------------------------------------------------------------

    def _outgoing(
        self,
        site: Site,
        request: h11.Request,
        target: bytes,
        raw_headers: list[tuple[bytes, bytes]],
        validating: policy.StorageDecision | None = None,
        *,
        method: bytes | None = None,
        body_chunked: bool = False,
        drop: tuple[bytes, ...] = (),
    ) -> h11.Request:
        """The request as the backend gets it. When ``validating`` a stored response, the
        client's own validators give way to the stored ones (RFC 9111 §4.3.1): the client's
        conditionals are answered by us from the refreshed entry."""
        headers = hdr.forward_request_headers(
            raw_headers,
            client_ip=self.client_ip,
            proto=self.proto,
            body_chunked=body_chunked,
            drop=drop + _CLIENT_VALIDATORS if validating is not None else drop,
            trusted=self.trusted,
            by=self.by,
        )
        if validating is not None:
            headers.extend(policy.conditional_headers(validating))
        return h11.Request(
            method=method or request.method,
            target=target,
            headers=self._backend_headers(site, headers, upgrade=False),
        )

    async def _forward(
        self,
        site: Site,
        request: h11.Request,
        target: bytes,
        raw_headers: list[tuple[bytes, bytes]],
        plan: _Plan,
    ) -> str:
        method = request.method
        announced = framing.body_framing(raw_headers)
        body_chunked, length = announced.chunked, announced.length
        limit = site.config.max_body_bytes
        if limit and length is not None and int(length) > limit:
            raise RequestRejected(413, f"request body larger than {limit} bytes")
        expects_continue = self.h11.they_are_waiting_for_100_continue
        outgoing = self._outgoing(
            site,
            request,
            target,
            raw_headers,
            plan.entry.decision if plan.entry is not None else None,
            body_chunked=body_chunked,
            # We answer Expect: 100-continue ourselves, so the body flows at once.
            drop=(b"expect",) if expects_continue else (),
        )
        if expects_continue:
            self._send(
                h11.InformationalResponse(status_code=100, headers=[], reason=b"Continue")
            )
        # Parse the start of the body before any backend hears of the request: a broken first
        # chunk is answered 400 with nothing forwarded.
        first = await self._body_event() if self.h11.their_state is h11.SEND_BODY else None

        request_time = site.cache.clock()
        sent_at = time.perf_counter()
        try:
            upstream, response = await site.upstream.exchange(
                lambda upstream: upstream.request(
                    outgoing,
                    lambda upstream: self._stream_request_body(upstream, first, limit),
                    self.ctx.config.backend_timeout,
                ),
                retry=method in IDEMPOTENT and not announced.has_body,
            )
        except BackendError as exc:
            self.in_flight = None
            if self.is_lost:
                raise ClientGone() from None
            if not self._serve_stale_on_error(site, request, plan, str(exc), exc.status):
                raise
            self.exchange.error_kind = exc.kind
            return "next" if self.h11.their_state is h11.DONE else "close"
        self.exchange.upstream_seconds = time.perf_counter() - sent_at
        try:
            return await self._relay_response(
                site, upstream, request, response, plan, request_time
            )
        finally:
            self.in_flight = None

    def _serve_stale_on_error(
        self, site: Site, request: h11.Request, plan: _Plan, problem: str, status: int
    ) -> bool:
        """Answer with the stale entry being revalidated when the origin failed and
        stale-if-error (or serve_stale_on_error) allows it; False when it does not."""
        entry = plan.entry
        if entry is None or self.h11.our_state is not h11.SEND_RESPONSE:
            return False
        age = entry.age(site.cache.clock())
        if not policy.may_serve_stale_on_error(entry.decision, age):
            return False
        body = site.cache.body(entry)
        if body is None:
            return False
        self._log_backend(
            site, request.method, request.target, f"{problem}; serving the stale copy"
        )
        cache_status = policy.cache_status(
            fwd=plan.reason,
            fwd_status=status,
            ttl=entry.decision.freshness_lifetime - age,
            detail="stale-if-error",
        )
        self._answer_from_cache(
            site, entry, body, age, cache_status, list(request.headers), request.method
        )
        return True

    async def _forward_simple(self, forward: _SimpleForward) -> str:
        """Forward a request the fast lane read: its head serialised once, straight from the
        parsed fields, and the answer relayed without h11 when it is a simple one too.
        Anything else (an answer only h11 can read, a backend failure) hands the request to
        h11 first (``_promote``) and goes on as the request loop does."""
        request, site, plan = forward.request, forward.site, forward.plan
        method = request.method
        timeout = self.ctx.config.backend_timeout

        async def start(upstream: UpstreamConnection) -> framing.SimpleResponse | h11.Response:
            self.in_flight = upstream
            if self.is_lost:
                raise ClientGone()  # it went while we connected
            return await upstream.simple_request(head, method, timeout)

        try:
            if forward.upstream is None:
                head = self._outgoing_head(forward)
                forward.request_time = site.cache.clock()
                forward.sent_at = time.perf_counter()
                upstream, response = await site.upstream.exchange(start, retry=True)
            else:  # sent by the callback relay: the rest of its time to answer
                upstream = self.in_flight = forward.upstream
                loop = asyncio.get_running_loop()
                try:
                    response = await upstream.simple_response(
                        method, max(forward.deadline - loop.time(), 0.0)
                    )
                except BaseException:
                    upstream.abort()
                    raise
        except BackendError as exc:
            self.in_flight = None
            if self.is_lost:
                raise ClientGone() from None
            return self._backend_failed(site, self._promote(forward), exc)
        self.exchange.upstream_seconds = time.perf_counter() - forward.sent_at
        try:
            if isinstance(response, h11.Response):
                return await self._relay_response(
                    site, upstream, self._promote(forward), response, plan,
                    forward.request_time,
                )
            head, filling = self._simple_answer_head(forward, response)
            parts = upstream.length_parts(response.length, timeout)
            return await self._relay_body(
                site, upstream, method, request.target, head, parts, filling
            )
        finally:
            self.in_flight = None

    def _simple_answer_head(
        self, forward: _SimpleForward, response: framing.SimpleResponse
    ) -> tuple[bytes, _Filling | None]:
        """The head a simple backend answer goes to the client with, and the cache entry it
        fills, if any (as ``_relay_response`` decides them for an answer h11 read)."""
        site = forward.site
        sent, filling = self._relayed_fields(
            site,
            forward.plan,
            forward.request.method,
            response.status,
            response.reason,
            hdr.forward_response_headers(response.headers),
            forward.request.headers,
            (forward.request_time, site.cache.clock()),
        )
        head = self._relayed_head(
            response.status, sent, response.reason, site.config.cache_status_header
        )
        return head, filling

    def _outgoing_head(self, forward: _SimpleForward) -> bytes:
        """The head a fast-lane request goes to the backend with, serialised once, straight
        from the parsed fields."""
        fields = self._backend_headers(
            forward.site,
            hdr.forward_request_headers(
                forward.request.raw_headers,
                client_ip=self.client_ip,
                proto=self.proto,
                body_chunked=False,
                trusted=self.trusted,
                by=self.by,
            ),
            upgrade=False,
        )
        return b"%s %s HTTP/1.1\r\n%s\r\n" % (
            forward.request.method,
            forward.target,
            b"".join([b"%s: %s\r\n" % field for field in fields]),
        )

    def _promote(self, forward: _SimpleForward) -> h11.Request:
        """Give h11 a request the fast lane read, as if the loop had: from here on it is
        answered through h11 like any other."""
        conn = self.h11
        conn.receive_data(forward.raw)
        request = conn.next_event()
        conn.next_event()  # its EndOfMessage: the fast lane's requests have no body
        return cast(h11.Request, request)

    async def _stream_request_body(
        self, upstream: UpstreamConnection, first: object, limit: int
    ) -> None:
        """Pass the client's body on as it arrives, ``first`` (its first event, already read)
        included; a retry finds it already complete. Over ``limit`` (0 = none): 413.

        Called by the upstream exchange with the backend connection the request went on: from
        here until the response is relayed, losing the client aborts that connection."""
        self.in_flight = upstream
        if self.is_lost:
            raise ClientGone()  # it went while we connected
        sent = 0
        event = first
        while True:
            if isinstance(event, h11.Data):
                sent += len(event.data)
                if limit and sent > limit:
                    raise RequestRejected(413, f"request body larger than {limit} bytes")
                upstream.send(event)
                await upstream.drain()
            if self.h11.their_state is not h11.SEND_BODY:
                break
            event = await self._body_event()
        upstream.send(h11.EndOfMessage())

    async def _relay_response(
        self,
        site: Site,
        upstream: UpstreamConnection,
        request: h11.Request,
        response: h11.Response,
        plan: _Plan,
        request_time: float,
    ) -> str:
        response_time = site.cache.clock()
        method = request.method
        status_code = response.status_code
        request_headers = plan.request_headers
        if request_headers is None:
            request_headers = list(request.headers)
        cache = site.cache
        timeout = self.ctx.config.backend_timeout
        if method not in policy.SAFE_METHODS:  # RFC 9111 §4.4: only unsafe methods invalidate
            host = hdr.get_header(request_headers, b"host") or b""
            for target in policy.invalidation_targets(
                method, status_code, host, request.target, list(response.headers), self.proto
            ):
                cache.discard(site.key_for(target, request_headers, self.proto))

        entry, key = plan.entry, plan.key
        if entry is not None and key is not None:
            if status_code == 304 or (method == b"HEAD" and status_code == 200):
                try:
                    await upstream.read_body(timeout, 0)
                except BaseException:
                    upstream.abort()
                    raise
                site.upstream.release(upstream)
                update = revalidation.apply_update(
                    site, key, entry, request_headers, response, request_time, response_time
                )
                if update is None:
                    if status_code == 304:
                        raise BackendError(
                            "the backend's 304 matches no stored response", "protocol"
                        )
                    # A HEAD answer for a changed resource: the stale entry went; pass it on.
                    out_headers = hdr.forward_response_headers(response.headers.raw_items())
                    out_headers.append(
                        (b"Cache-Status", policy.cache_status(fwd=plan.reason, fwd_status=200))
                    )
                    self._write_head(
                        self._relayed_head(
                            status_code,
                            out_headers,
                            response.reason,
                            site.config.cache_status_header,
                        )
                    )
                    self._send(h11.EndOfMessage())
                    return "next"
                refreshed, stored = update
                age = refreshed.age(cache.clock())
                cache_status = policy.cache_status(
                    fwd=plan.reason,
                    fwd_status=status_code,
                    stored=stored,
                    ttl=refreshed.decision.freshness_lifetime - age,
                )
                self._answer_from_cache(
                    site, refreshed, refreshed.body, age, cache_status, request_headers, method
                )
                return "next"
            if status_code >= 500 and self._serve_stale_on_error(
                site, request, plan, f"backend answered {status_code}", status_code
            ):
                upstream.abort()  # its error body is of no use to anyone
                return "next"

        out_headers = hdr.forward_response_headers(response.headers.raw_items())
        sent, filling = self._relayed_fields(
            site, plan, method, status_code, response.reason, out_headers, request_headers,
            (request_time, response_time),
        )
        head = self._relayed_head(
            status_code, sent, response.reason, site.config.cache_status_header
        )
        parts = upstream.body_parts(timeout)
        return await self._relay_body(site, upstream, method, request.target, head, parts, filling)

    def _relayed_fields(
        self,
        site: Site,
        plan: _Plan,
        method: bytes,
        status: int,
        reason: bytes,
        out_headers: list[tuple[bytes, bytes]],
        request_headers: list[tuple[bytes, bytes]],
        times: tuple[float, float],
    ) -> tuple[list[tuple[bytes, bytes]], _Filling | None]:
        """The head fields a backend response goes out with (its own end-to-end fields, then
        ours), and the cache entry it will fill, if it is to be stored; ``times`` are the
        request's and the response's store-clock times (RFC 9111 §4.2.3)."""
        key = plan.key
        decision = None
        if key is not None and method == b"GET":
            decision = revalidation.decide_storage(
                site, status, request_headers, out_headers, *times
            )
        length = hdr.get_header(out_headers, b"content-length")
        max_object = site.cache.max_object_bytes
        if decision is not None and length is not None and int(length) > max_object:
            decision = None
        if key is not None and method == b"GET":
            if decision is None:
                if key not in site.uncacheable:  # (re-setting it only moves its expiry)
                    site.uncacheable[key] = True
            else:
                site.uncacheable.pop(key, None)
        if decision is None or length is None:
            # Nothing to wait for, or no telling how long (a stream may never end): waiters
            # forward on their own right away.
            plan.land(site)
        sent = list(out_headers)
        if decision is not None and encoding.varies(site.config.compress_strategy, out_headers):
            # Hits of this response will depend on Accept-Encoding: say so from the start.
            sent.append((b"Vary", b"Accept-Encoding"))
        # The header leaves before the body: claim "stored" only when the length is known.
        sent.append(
            (
                b"Cache-Status",
                policy.cache_status(
                    fwd=plan.reason,
                    fwd_status=status,
                    stored=decision is not None and length is not None,
                ),
            )
        )
        if decision is None or key is None:
            return sent, None
        return sent, _Filling(key, decision, status, reason, out_headers, times[1])

    async def _relay_body(
        self,
        site: Site,
        upstream: UpstreamConnection,
        method: bytes,
        target: bytes,
        head: bytes,
        parts: AsyncIterator[bytes],
        filling: _Filling | None,
    ) -> str:
        """Send the response ``head``, pass the body on as it arrives, then give the backend
        connection back and store the response when ``filling`` the cache."""
        max_object = site.cache.max_object_bytes
        body: bytearray | None = bytearray() if filling is not None else None
        try:
            if not (self._outside_h11 and upstream.has_unread):
                # No body byte is here yet: the head must not wait for one. (One that is goes
                # out in the same write as the head: one send instead of two.)
                self._write_head(head)
                head = b""
            async for part in parts:
                self._send_body(part, head)
                head = b""
                if body is not None:
                    body += part
                    if len(body) > max_object:
                        body = None
                await self.drain()
            self._end_body()
        except BackendError as exc:
            if self.is_lost:
                # The client hung up and its backend request was abandoned (connection_lost):
                # that, not the backend, cut the response short.
                raise ClientGone() from None
            # The head is out: all we can do is end the connection so the client sees a
            # truncated response, never one that looks complete.
            self.exchange.error_kind = exc.kind
            upstream.abort()
            self._log_backend(site, method, target, f"response cut short: {exc}")
            self.abort()
            return "close"
        except BaseException:
            upstream.abort()
            raise
        site.upstream.release(upstream)
        if filling is not None and body is not None:
            filling.store(site, bytes(body))
        return "next"

    # -- upgrades ---------------------------------------------------------------------------

    async def _upgrade(
        self,
        site: Site,
        request: h11.Request,
        target: bytes,
        raw_headers: list[tuple[bytes, bytes]],
    ) -> str:
        """Replay the handshake on a fresh backend connection; on 101, splice the sockets."""
        body = await self._read_body(keep=True, limit=site.config.max_body_bytes)
        limit = self.config.max_tunnels
        if limit and len(self.ctx.tunnels) >= limit:
            raise _over_limit("too many tunnels")
        self.tunnel_hold = self._take_tunnel_share(raw_headers)
        upstream = await site.upstream.connect()
        self.in_flight = upstream  # a client that leaves now aborts the handshake
        outgoing = self._backend_headers(
            site,
            hdr.upgrade_request_headers(
                raw_headers,
                client_ip=self.client_ip,
                proto=self.proto,
                trusted=self.trusted,
                by=self.by,
            ),
            upgrade=True,
        )
        try:
            upstream.send(h11.Request(method=request.method, target=target, headers=outgoing))
            for part in body:
                upstream.send(h11.Data(data=part))
            upstream.send(h11.EndOfMessage())
            head, response = await upstream.upgrade_head(self.config.backend_timeout)
        except BaseException:
            upstream.abort()
            raise
        finally:
            self.in_flight = None
        if isinstance(response, h11.Response):
            # The backend declined: an ordinary response, and keep-alive may go on.
            return await self._relay_response(
                site, upstream, request, response, _Plan(None, Forward.REQUEST),
                site.cache.clock(),
            )
        problem = handshake.switch_problem(outgoing, response.headers.raw_items())
        if problem is not None:
            # Not the switch that was asked for: splicing would hand the client a connection
            # to something no rule has seen. Neither leg is usable any more.
            upstream.abort()
            error = BackendError(f"invalid response from backend: {problem}", "protocol")
            return self._backend_failed(site, request, error, close=True)
        if self.is_lost:
            # The client left during the handshake: nobody to tunnel for.
            upstream.abort()
            return "close"
        self.write(head)
        self.exchange.status = 101
        client = self.detach()
        client.unread = self.h11.trailing_data[0] + client.unread
        backend = upstream.detach()
        backend.unread = upstream.h11.trailing_data[0] + backend.unread
        label = f"{self.client_ip} {request.target.decode('latin-1')} -> {site.config.proxy_url}"
        holds = [hold for hold in (self.hold, self.tunnel_hold) if hold is not None]
        self.ctx.open_tunnel(
            client, backend, label, site.config.tunnel_idle_timeout, self.exchange, holds
        )
        log.info("tunnel %s opened", label)
        return "tunnel"

    def _take_tunnel_share(self, raw_headers: list[tuple[bytes, bytes]]) -> clients.Hold:
        """A place among the tunnels of the client the request comes from (after
        ``trusted_proxies``); 503 when it holds ``max_tunnels_per_client`` already."""
        client = self.client_ip
        if self.trusted:
            chain = [v for n, v in raw_headers if n.lower() == b"x-forwarded-for"]
            client = clients.client_address(client, chain, self.config.trusted_proxies)
        hold = self.ctx.client_tunnels.take(client, self.config.max_tunnels_per_client)
        if hold is None:
            raise _over_limit("too many tunnels from this client")
        return hold

    # -- responding -------------------------------------------------------------------------

    def _send(self, event: h11.Event) -> None:
        data = self.h11.send(event)
        if data:
            if self.is_lost:
                raise ClientGone()
            self.transport.write(data)
            self.exchange.body_bytes += len(data)

    @property
    def _outside_h11(self) -> bool:
        """The request being answered was read by the fast lane: h11 never saw it, and the
        answer is framed by us (its length is the backend's Content-Length)."""
        return self.h11.our_state is h11.IDLE

    def _send_body(self, data: bytes, head: bytes = b"") -> None:
        """Send a part of a relayed body, after ``head`` (the response head, when it has not
        been sent: outside h11 only)."""
        if not self._outside_h11:
            self._send(h11.Data(data=data))
            return
        if self.is_lost:
            raise ClientGone()
        self.transport.write(head + data if head else data)
        self.exchange.body_bytes += len(data)

    def _end_body(self) -> None:
        if not self._outside_h11:
            self._send(h11.EndOfMessage())

    def _start_response(self, status: int, headers: list[tuple[bytes, bytes]]) -> None:
        """Send the head of a response of our own (h11 validates and frames it)."""
        if self.ctx.draining:
            headers.append((b"Connection", b"close"))
        reason = reason_phrase(status)
        self._send(h11.Response(status_code=status, headers=headers, reason=reason))
        cache_status = next((v for n, v in reversed(headers) if n == b"Cache-Status"), None)
        self._head_sent(status, cache_status)

    def _relayed_head(
        self,
        status: int,
        headers: list[tuple[bytes, bytes]],
        reason: bytes,
        show_cache_status: bool,
    ) -> bytes:
        """The head of a relayed response, for the caller to write. Its fields are a
        backend's (validated when they were parsed) plus phantom's own constants, so h11 is
        sent only the framing fields, which it may rewrite (Content-Length, chunked,
        Connection: close), and the others are appended verbatim instead of being validated
        and rebuilt a second time. Outside h11 every field goes out as is: the fast lane's
        responses are framed by one Content-Length, the backend's. Our Cache-Status (the
        last one) is left out unless ``show_cache_status``; the access log still gets it."""
        if self.ctx.draining:
            headers.append((b"Connection", b"close"))
        by_h11 = () if self._outside_h11 else _FRAMING_FIELDS
        frame_fields: list[tuple[bytes, bytes]] = []
        lines: list[bytes] = [b""]  # the status line (and h11's framing fields) go first
        cache_status = None  # the last Cache-Status field, ours
        ours = 0  # its line
        for n, v in headers:
            if by_h11 and n.lower() in by_h11:
                frame_fields.append((n, v))
            else:
                lines.append(b"%s: %s\r\n" % (n, v))
                if n == b"Cache-Status":
                    cache_status = v
                    ours = len(lines) - 1
        if ours and not show_cache_status:
            del lines[ours]
        if by_h11:
            framed = h11.Response(status_code=status, headers=frame_fields, reason=reason)
            lines[0] = self.h11.send(framed)[:-2]  # up to, not including, the blank line
        else:
            lines[0] = b"HTTP/1.1 %d %s\r\n" % (status, reason)
        lines.append(b"\r\n")
        self._head_sent(status, cache_status)
        return b"".join(lines)

    def _head_sent(self, status: int, cache_status: bytes | None) -> None:
        exchange = self.exchange
        exchange.status = status
        exchange.body_bytes = 0  # what follows the head
        exchange.cache_status = cache_status

    def _write_head(self, head: bytes) -> None:
        if self.is_lost:
            raise ClientGone()
        self.transport.write(head)

    def _respond_plain(
        self,
        status: int,
        body: bytes,
        *,
        close: bool = False,
        headers: list[tuple[bytes, bytes]] | None = None,
    ) -> None:
        """A response of our own; ``headers`` replace the default text/plain Content-Type."""
        if headers is None:
            headers = [_PLAIN_TEXT]
        headers = [*headers, (b"Content-Length", b"%d" % len(body))]
        if close:
            headers.append((b"Connection", b"close"))
        self._start_response(status, headers)
        self._send(h11.Data(data=body))
        self._send(h11.EndOfMessage())

    def _answer_from_cache(
        self,
        site: Site,
        entry: CachedResponse,
        body: bytes,
        age: float,
        cache_status: bytes,
        request_headers: list[tuple[bytes, bytes]],
        method: bytes,
    ) -> None:
        """A stored response of ``site`` (see ``_cached_answer``)."""
        self._respond_cached(
            *_cached_answer(entry, body, request_headers),
            age,
            cache_status,
            method,
            site.config.cache_status_header,
        )

    def _respond_cached(
        self,
        status: int,
        reason: bytes,
        wire_headers: bytes,
        body: bytes,
        age: float,
        cache_status: bytes,
        method: bytes,
        show_cache_status: bool,
    ) -> None:
        """The cache-hit hot path: a stored response in one write, with no per-hit header
        validation.

        h11 still frames the answer: it is sent a Response carrying only the framing fields
        (Content-Length, plus Connection: close while draining), so its state machine and its
        keep-alive decision (it adds ``Connection: close`` itself for HTTP/1.0 or closing
        clients) stay exact, and the head it writes is the start of ours. The stored headers
        follow, serialised once at store time; only Age and Cache-Status are formatted here.
        A 304 gets no framing at all (RFC 9110 §15.4.5; h11 knows it has no body).
        """
        frame_fields = [] if status == 304 else [(b"Content-Length", b"%d" % len(body))]
        if self.ctx.draining:
            frame_fields.append((b"Connection", b"close"))
        conn = self.h11
        head = conn.send(h11.Response(status_code=status, headers=frame_fields, reason=reason))
        parts = [
            head[:-2],  # up to, not including, the blank line that ends the head
            wire_headers,
            _age_and_status(age, cache_status, show_cache_status),
        ]
        if method != b"HEAD" and body:
            # Passthrough: h11 counts the bytes against Content-Length and hands back the body
            # object itself, uncopied.
            parts += conn.send_with_data_passthrough(h11.Data(data=body)) or ()
        conn.send(h11.EndOfMessage())
        if self.is_lost:
            raise ClientGone()
        self.transport.write(b"".join(parts))
        exchange = self.exchange
        exchange.status = status
        exchange.cache_status = cache_status
        exchange.body_bytes = len(body) if method != b"HEAD" else 0

    def _reject(self, exc: RequestRejected) -> None:
        """Refuse a request: its status, a short body, and the connection closes."""
        log.info("client %s: request refused: %s -> %d", self.client_ip, exc.reason, exc.status)
        headers = None
        if exc.retry_after is not None:
            headers = [_PLAIN_TEXT, (b"Retry-After", b"%d" % exc.retry_after)]
        if self.h11.our_state in (h11.IDLE, h11.SEND_RESPONSE):
            self._respond_plain(
                exc.status, f"{exc.reason}\n".encode(), close=True, headers=headers
            )

    def _reject_malformed(self, exc: h11.RemoteProtocolError) -> None:
        status = exc.error_status_hint
        log.info("client %s: malformed request: %s -> %d", self.client_ip, exc, status)
        if self.h11.our_state in (h11.IDLE, h11.SEND_RESPONSE):
            self._respond_plain(status, f"Bad request: {exc}\n".encode(), close=True)

    def _unsendable(self, exc: h11.LocalProtocolError) -> None:
        """h11 refused to send a message we built: before our answer started, the request
        for the backend (made from the client's: 400); after, our answer (made from the
        backend's: 502, and the connection ends). One log line, never a traceback."""
        if self.h11.our_state in (h11.IDLE, h11.SEND_RESPONSE):
            self._reject(RequestRejected(400, f"request can't be forwarded: {exc}"))
            return
        log.warning("client %s: response can't be relayed: %s -> 502", self.client_ip, exc)
        self.exchange.status = 502
        self.abort()

    def _log_backend(self, site: Site, method: bytes, target: bytes, what: str) -> None:
        """One warning line saying what happened to whom: client, request, backend. Lines
        about one backend failing the same way are one kind (``RepeatedWarnings``), whoever
        the client and whatever the path."""
        log.warning(
            "client %s: %s %s -> %s: %s",
            self.client_ip,
            method.decode("latin-1"),
            target.decode("latin-1"),
            site.config.proxy_url,
            what,
            extra={"repeat_key": ("backend", site.config.proxy_url, what)},
        )

    def _backend_failed(
        self, site: Site, request: h11.Request, exc: PhantomError, *, close: bool = False
    ) -> str:
        if isinstance(exc, BackendError):
            self.exchange.error_kind = exc.kind
        self._log_backend(site, request.method, request.target, f"{exc} ({exc.status})")
        if self.h11.our_state is not h11.SEND_RESPONSE:
            self.abort()
            return "close"
        # An unread or broken request body means the connection can't be reused.
        close = close or self.h11.their_state in (h11.SEND_BODY, h11.ERROR)
        self._respond_plain(exc.status, f"{exc.public}\n".encode(), close=close)
        return "close" if close else "next"


_PLAIN_TEXT = (b"Content-Type", b"text/plain; charset=utf-8")

#: What h11 reads and rewrites in a response head it sends.
_FRAMING_FIELDS = frozenset({b"content-length", b"transfer-encoding", b"connection"})

#: The client's validators, replaced by the stored ones when we revalidate (RFC 9111 §4.3.1).
_CLIENT_VALIDATORS = (b"if-none-match", b"if-modified-since")


@dataclass(slots=True)
class _Plan:
    """How a forwarded request relates to the cache: the store ``key`` its response may fill
    (None: not cacheable), the RFC 9211 ``fwd`` reason, the stored ``entry`` being
    revalidated, if any, and the ``flight`` others wait on when it leads."""

    key: Key | None
    reason: Forward
    entry: CachedResponse | None = None
    # Set when this request leads a coalesced miss: others for the key wait for it.
    flight: asyncio.Future[None] | None = None
    # The request's fields with lowercase names (``list(request.headers)``), when known.
    request_headers: list[tuple[bytes, bytes]] | None = None

    def land(self, site: Site) -> None:
        """Let the waiters go (they look the key up again). Called as soon as the answer is
        known not to be stored, so that a long stream never holds them, and at the end."""
        flight = self.flight
        if flight is None or flight.done():
            return
        if self.key is not None and site.inflight.get(self.key) is flight:
            del site.inflight[self.key]
        flight.set_result(None)


@dataclass(slots=True)
class _Filling:
    """A relayed response on its way into the cache: what its entry is made of, but the body."""

    key: Key
    decision: policy.StorageDecision
    status: int
    reason: bytes
    headers: list[tuple[bytes, bytes]]
    response_time: float

    def store(self, site: Site, body: bytes) -> None:
        entry = revalidation.make_entry(
            self.status,
            self.reason,
            self.headers,
            body,
            self.decision,
            self.response_time,
            site.config.compress_strategy,
        )
        site.cache.put(self.key, entry)


@dataclass(slots=True)
class _SimpleForward:
    """A request the fast lane read (``raw``: its head) and the cache does not answer, to be
    forwarded to ``site``'s backend at ``target``: relayed by callbacks while the answer is
    simple and complete, otherwise by the request loop, from wherever the relay left it."""

    request: framing.SimpleRequest
    site: Site
    target: bytes
    plan: _Plan
    exchange: Exchange
    raw: bytes = b""
    # Set once the request is on its way: the connection it went on, what came back so far
    # (and its parsed head), the store-clock and perf_counter times it left at, when its
    # answer is due (loop time).
    upstream: UpstreamConnection | None = None
    received: bytes = b""
    response: framing.SimpleResponse | None = None  # its head, once complete
    request_time: float = 0.0
    sent_at: float = 0.0
    deadline: float = 0.0
    timer: asyncio.TimerHandle | None = None


def _with_target(
    request: h11.Request, target: bytes, headers: list[tuple[bytes, bytes]]
) -> h11.Request:
    """``request`` with another target and these fields (names as the client spelled them)."""
    return h11.Request(
        method=request.method, target=target, headers=headers, http_version=request.http_version
    )


def _cached_answer(
    entry: CachedResponse, body: bytes, request_headers: list[tuple[bytes, bytes]]
) -> tuple[int, bytes, bytes, bytes]:
    """How a stored response goes out, as (status, reason, serialised stored headers, body):
    as stored, or 304 when the request's own conditionals say the client's copy is current
    (RFC 9111 §4.3.2). A body phantom compressed goes out as stored to clients that accept
    its coding, decoded for the others."""
    wire_headers = entry.wire_headers
    if entry.coding is not None and not encoding.accepts(request_headers, entry.coding):
        wire_headers = entry.identity_wire_headers
        body = encoding.decompress(entry.coding, body)  # HEAD too: its Content-Length
    if policy.not_modified_for(request_headers, entry.decision):
        return 304, b"Not Modified", wire_headers, b""
    return entry.status, entry.reason, wire_headers, body


def _age_and_status(age: float, cache_status: bytes, shown: bool) -> bytes:
    """The per-hit end of a cached response's head, blank line included; Cache-Status only
    when ``shown`` (``cache_status_header``)."""
    if not shown:
        return b"Age: %s\r\n\r\n" % policy.format_age(age)
    return b"Age: %s\r\nCache-Status: %s\r\n\r\n" % (policy.format_age(age), cache_status)


def _fills_cache(state: policy.Lookup[CachedResponse]) -> bool:
    """Whether forwarding for this lookup result would (re)fill the shared entry, so that
    concurrent requests for the key may wait for it instead of going to the origin too."""
    if isinstance(state, policy.Miss):
        return state.reason in (Forward.URI_MISS, Forward.VARY_MISS)
    return isinstance(state, policy.Revalidate) and state.reason is Forward.STALE


def _over_limit(reason: str) -> RequestRejected:
    """A 503 for a capacity limit: the client may try again shortly."""
    return RequestRejected(503, reason, retry_after=clients.RETRY_AFTER_SECONDS)
