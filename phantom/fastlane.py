"""The fast lane: answers that skip h11.

While the request loop waits for a request with nothing buffered, bytes that arrive are first
offered to ``framing.parse_simple``; each simple request that is a fresh cache hit is answered
right there in ``data_received``, in order, without h11 and without waking the loop. A simple
request whose answer fills no shared cache entry is forwarded from there too, on a pooled
backend connection, and a simple answer is relayed from that connection's ``data_received``
(the relay); what the relay can't finish is handed to the loop where it stopped. The first
request that is neither, and everything after it, goes to the loop as usual: h11 has seen
none of the fast lane's bytes and is still at IDLE.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from typing import cast

import h11

from . import framing
from . import headers as hdr
from .answers import ClientGone, age_and_status, cached_answer
from .cache import policy
from .cache.policy import Forward
from .context import ProxyContext, Site
from .errors import BackendError, RequestRejected
from .exchange import Exchange
from .forward import Forwarding
from .lookup import fills_cache
from .relay import Filling, Plan
from .routing import Route
from .stages import RequestView, Result
from .upstream import SIMPLE_MAX_HEADERS, UpstreamConnection

# The relay driven by callbacks takes answers up to this size whole; longer ones are streamed
# by the request loop, with flow control.
RELAY_LIMIT = 64 * 1024
# Pipelined fast-lane hits are written together up to about this many bytes; then the
# transport's flow control says whether more may follow (asyncio's default high-water mark).
HITS_BATCH = 64 * 1024


class FastLane(Forwarding):
    """The fast lane of a client connection, and its relay."""

    def __init__(self, ctx: ProxyContext, *, tls: bool = False) -> None:
        super().__init__(ctx, tls=tls)
        self.sites = dict(ctx.sites)
        self.router = ctx.router
        self.served = 0  # requests answered on this connection
        # True while waiting for a request with nothing of it received: safe to close, and
        # the fast lane may answer what arrives.
        self.idle = True
        # When the connection last became idle (loop time): the keep-alive wait runs from here.
        self.idle_since = 0.0
        # The next head, already read by the fast lane (in its subset, so nothing to refuse)
        # but not a hit: the request loop skips framing.check_head for it.
        self.prechecked: framing.RequestHead | None = None
        # A request the fast lane read and leaves to the loop to forward (h11 never sees it).
        self.simple_forward: SimpleForward | None = None
        # A request the fast lane forwarded and relays by callbacks, the loop asleep; the
        # loop waits on ``_relay_waiter`` if something wakes it meanwhile.
        self.relay: SimpleForward | None = None
        self._relay_waiter: asyncio.Future[None] | None = None
        # A request the fast lane read and asked the stages about, and what they said, for
        # the loop to go on from (a stage is asked once per request).
        self.decided: tuple[RequestView, Result] | None = None

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
            if isinstance(answered, SimpleForward):
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
    ) -> tuple[bytes, Exchange] | SimpleForward | None:
        """What becomes of a simple request, decided as the request loop decides it (route,
        stages, cache rules, key, RFC 9111 lookup): a fresh hit's whole answer; a forward that
        fills no shared entry (the cache is bypassed, or the URL's last answer was not
        storable); None for anything else (no route, a stage that waits or answers, a stale
        entry, a miss others may wait for): the loop takes it through h11, from what the
        stages said (``decided``)."""
        try:
            route = self.router.route(request.host, request.target)
        except RequestRejected:
            return None  # the loop answers it
        if route is None:
            return None
        site = self.sites[route.server.name]
        stages = site.stages
        if not stages.all:
            return self._cache_decision(request, route, site)
        if not stages.sync:
            return None  # the loop waits for them
        view = RequestView(request.method, route.path, request.headers, self.client_ip)
        answer = stages.check(view)
        decision = None
        if answer is None:
            decision = self._cache_decision(request, route, site)
        if decision is None:
            self.decided = (view, answer)
        return decision

    def _cache_decision(
        self, request: framing.SimpleRequest, route: Route, site: Site
    ) -> tuple[bytes, Exchange] | SimpleForward | None:
        """The cache's part of ``_simple_decision``, for a request the stages let through."""
        method, target, headers = request.method, route.path, request.headers
        if not site.rules.uses_cache(method, target):
            plan = Plan(None, Forward.BYPASS, request_headers=headers)
            return SimpleForward(
                request, site, route.target, plan, self._fast_exchange(request, site)
            )
        cache = site.cache
        key = site.key_for(target, headers, self.proto)
        state = policy.lookup(method, headers, cache.variants(key), cache.clock())
        if isinstance(state, policy.Miss) and not (
            fills_cache(state) and key not in site.uncacheable
        ):
            plan = Plan(key, state.reason, request_headers=headers)
            return SimpleForward(
                request, site, route.target, plan, self._fast_exchange(request, site)
            )
        if not isinstance(state, policy.Fresh):
            return None
        body = cache.body(state.entry)
        if body is None:
            return None
        cache_status = policy.hit_status(state.ttl)
        status, reason, wire_headers, body = cached_answer(state.entry, body, headers)
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
        tail = age_and_status(state.age, cache_status, site.config.cache_status_header)
        return b"".join((head, wire_headers, tail, body)), exchange

    def _start_relay(self, forward: SimpleForward) -> bool:
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

    def _end_relay(self, forward: SimpleForward) -> None:
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

    async def _forward_simple(self, forward: SimpleForward) -> str:
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
        self, forward: SimpleForward, response: framing.SimpleResponse
    ) -> tuple[bytes, Filling | None]:
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

    def _outgoing_head(self, forward: SimpleForward) -> bytes:
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

    def _promote(self, forward: SimpleForward) -> h11.Request:
        """Give h11 a request the fast lane read, as if the loop had: from here on it is
        answered through h11 like any other."""
        conn = self.h11
        conn.receive_data(forward.raw)
        request = conn.next_event()
        conn.next_event()  # its EndOfMessage: the fast lane's requests have no body
        return cast(h11.Request, request)


@dataclass(slots=True)
class SimpleForward:
    """A request the fast lane read (``raw``: its head) and the cache does not answer, to be
    forwarded to ``site``'s backend at ``target``: relayed by callbacks while the answer is
    simple and complete, otherwise by the request loop, from wherever the relay left it."""

    request: framing.SimpleRequest
    site: Site
    target: bytes
    plan: Plan
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
