"""The fast lane: answers that skip h11.

While the request loop waits for a request with nothing buffered, bytes that arrive are first
offered to ``framing.parse_simple``; each simple request that is a fresh cache hit is answered
right there in ``data_received``, in order, without h11 and without waking the loop. A simple
request whose answer fills no shared cache entry is forwarded from there too, on a pooled
backend connection, and a simple answer is relayed from that connection's ``data_received``
(the relay, :mod:`phantom.fastrelay`); what the relay can't finish is handed to the loop
where it stopped. The first request that is neither, and everything after it, goes to the
loop as usual: h11 has seen none of the fast lane's bytes and is still at IDLE.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

from . import framing
from .answers import age_and_status
from .cache import policy, ranges
from .cache.answer import from_stored
from .cache.policy import Forward
from .cache.store import Key
from .context import ProxyContext, Site
from .errors import RequestRejected
from .exchange import Exchange
from .fastrelay import FastRelay, SimpleForward
from .lookup import fills_cache, miss_key
from .relay import Plan
from .routing import Route, Routes
from .stages import RequestView, Result

# Pipelined fast-lane hits are written together up to about this many bytes; then the
# transport's flow control says whether more may follow (asyncio's default high-water mark).
HITS_BATCH = 64 * 1024


class FastLane(FastRelay):
    """The fast lane of a client connection."""

    # The last head the fast lane parsed here and what was worked out from it: clients
    # repeat heads byte for byte (a poller, a page reloaded, keep-alive assets of one host
    # differ only in the path), and the same bytes need not be parsed again. (A class
    # default: a connection that never has one, a tunnel's, is no bigger for it.)
    _known: KnownHead | None = None

    def __init__(self, ctx: ProxyContext, *, tls: bool = False) -> None:
        super().__init__(ctx, tls=tls)
        self.sites = dict(ctx.sites)
        self.router: Routes = ctx.router
        # The next head, already read by the fast lane (in its subset, so nothing to refuse)
        # but not a hit: the request loop skips framing.check_head for it.
        self.prechecked: framing.RequestHead | None = None
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
            known = self._known
            if known is None or not data.startswith(known.head, start):
                # (A head holds one blank line, its end: the same bytes are the same head.)
                request = framing.parse_simple(
                    data, start, config.max_request_line, config.max_header_bytes,
                    config.max_headers,
                )
                if request is None:
                    break
                known = self._known = KnownHead(data[start : request.end], request)
            end = start + len(known.head)
            answered = self._simple_decision(known)
            if answered is None:
                self.prechecked = framing.RequestHead(known.request.target)
                break
            if isinstance(answered, SimpleForward):
                # Until it is answered, what follows waits its turn.
                answered.raw = known.head
                self.idle = False
                if not self._start_relay(answered):
                    self.simple_forward = answered  # the loop forwards it
                    self._wake()
                start = end
                break
            answers.append(answered[0])
            if answered[1] is not None:
                exchanges.append(answered[1])
            start = end
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
        self, known: KnownHead
    ) -> tuple[bytes, Exchange | None] | SimpleForward | None:
        """What becomes of a simple request, decided as the request loop decides it (route,
        stages, cache rules, key, RFC 9111 lookup): a fresh hit's whole answer; a forward that
        fills no shared entry (the cache is bypassed, or the URL's last answer was not
        storable); None for anything else (no route, a stage that waits or answers, a stale
        entry, a miss others may wait for): the loop takes it through h11, from what the
        stages said (``decided``). The stages are asked every time; what the head alone
        decides (its route, its key) is kept in ``known``."""
        request = known.request
        route = known.route
        if route is None:
            try:
                route = self.router.route(request.host, request.target, request.method)
            except RequestRejected:
                return None  # the loop answers it
            if route is None:
                return None
            known.route = route
        site = self.sites[route.server.name]
        stages = site.stages
        if not stages.all:
            return self._cache_decision(known, route, site)
        if not stages.sync:
            return None  # the loop waits for them
        view = RequestView(request.method, route.path, request.headers, self.client_ip)
        answer = stages.check(view)
        decision = None
        if answer is None and not view.passes_on:
            decision = self._cache_decision(known, route, site)
        if decision is None:
            self.decided = (view, answer)
        return decision

    def _cache_decision(
        self, known: KnownHead, route: Route, site: Site
    ) -> tuple[bytes, Exchange | None] | SimpleForward | None:
        """The cache's part of ``_simple_decision``, for a request the stages let through.
        A hit's exchange is built only for the access log; without one the hit is counted
        at once (it is written before anything else runs)."""
        request = known.request
        method, target, headers = request.method, route.path, request.headers
        if not site.rules.uses_cache(method, target):
            plan = Plan(None, Forward.BYPASS, request_headers=headers)
            return self._simple_forward(known, route, site, plan)
        cache = site.cache
        key = known.key
        if key is None:
            key = site.key_for(target, headers, self.proto)
            if site.cache_key is None:  # (a function of the application's may not be pure)
                known.key = key
        state = policy.lookup(method, headers, cache.variants(key), cache.clock())
        if isinstance(state, policy.Miss) and (
            ranges.asked(headers) or not (fills_cache(state) and key not in site.uncacheable)
        ):
            plan = Plan(miss_key(key, headers), state.reason, request_headers=headers)
            return self._simple_forward(known, route, site, plan)
        if not isinstance(state, policy.Fresh):
            return None
        body = cache.body(state.entry)
        if body is None:
            return None
        cache_status = policy.hit_status(state.ttl)
        status, reason, wire_headers, body = from_stored(
            state.entry, body, headers, method
        )
        # What h11 writes for the framing-only Response of _respond_cached on a keep-alive
        # HTTP/1.1 connection.
        if status != 304:
            head = b"HTTP/1.1 %d %s\r\nContent-Length: %d\r\n" % (status, reason, len(body))
        else:
            head = b"HTTP/1.1 %d %s\r\n" % (status, reason)
        if method == b"HEAD":
            body = b""
        tail = age_and_status(state.age, cache_status, site.config.cache_status_header)
        answer = b"".join((head, wire_headers, tail, body))
        if self.ctx.access_log is None:
            self.ctx.metrics.hit(site.config.name, method, status)
            return answer, None
        exchange = self._fast_exchange(request, site)
        exchange.status = status
        exchange.cache_status = cache_status
        exchange.body_bytes = len(body)
        return answer, exchange


    def _simple_forward(
        self, known: KnownHead, route: Route, site: Site, plan: Plan
    ) -> SimpleForward:
        """The forward of a simple request the cache does not answer."""
        request = known.request
        return SimpleForward(request, site, route.target, plan, self._fast_exchange(request, site))

    def _fast_exchange(self, request: framing.SimpleRequest, site: Site) -> Exchange:
        exchange = Exchange.of_head(
            self.client_ip, request.method, request.target, b"1.1", request.headers
        )
        exchange.server = site.config.name
        exchange.backend = site.config.proxy_url
        return exchange


@dataclass(slots=True)
class KnownHead:
    """A head the fast lane parsed, as sent (``head``), and what follows from its bytes alone
    once worked out: its ``route`` and its store ``key`` (the default key function's)."""

    head: bytes
    request: framing.SimpleRequest
    route: Route | None = None
    key: Key | None = None
