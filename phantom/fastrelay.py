"""The fast lane's relay: a simple request the cache does not answer goes out at once on a
pooled backend connection, and the answer, when it is simple and arrives whole (the common
small response), is relayed from that connection's ``data_received``: no coroutine wakes on
either side. Anything else hands the request over to the request loop (``_hand_over``), which
goes on from where the relay stopped (``_forward_simple``).
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from typing import cast

import h11

from . import framing
from . import headers as hdr
from .answers import ClientGone
from .balancing import Backend
from .config import BackendURL
from .context import ProxyContext, Site
from .errors import BackendError
from .exchange import Exchange
from .forward import Forwarding
from .relay import Filling, Plan
from .upstream import SIMPLE_MAX_HEADERS, UpstreamConnection

# The relay driven by callbacks takes answers up to this size whole; longer ones are streamed
# by the request loop, with flow control.
RELAY_LIMIT = 64 * 1024


class FastRelay(Forwarding):
    """The relay of a client connection's fast lane."""

    # The one timer that watches the relays' deadlines (``_relay_due``): set when a relay
    # starts and none is pending, never cancelled when one ends in time (an answer a moment
    # later is the common case: a timer per relay would be made and cancelled for each), set
    # again for the next relay's deadline when it fires early.
    _relay_timer: asyncio.TimerHandle | None = None
    # The last simple answer head relayed here, parsed, and its fields as the client gets
    # them: a backend repeats its heads byte for byte (until its Date changes).
    _known_answer: KnownAnswer | None = None
    # The head the last simple request relayed here went to its backend with, and what it
    # was made from: the client's head (the fast lane hands every request of a head it knows
    # the same bytes object, ``raw``) and the backend's URL (its base path and, without
    # preserve_host, its Host are in it). A keep-alive client repeats its heads, and with one
    # backend the URL is always the same.
    # (Class defaults: a connection that never relays, a tunnel's, is no bigger for them.)
    _known_outgoing: tuple[bytes, BackendURL, bytes] | None = None

    def __init__(self, ctx: ProxyContext, *, tls: bool = False) -> None:
        super().__init__(ctx, tls=tls)
        self.served = 0  # requests answered on this connection
        # True while waiting for a request with nothing of it received: safe to close, and
        # the fast lane may answer what arrives.
        self.idle = True
        # When the connection last became idle (loop time): the keep-alive wait runs from here.
        self.idle_since = 0.0
        # A request the fast lane read and leaves to the loop to forward (h11 never sees it).
        self.simple_forward: SimpleForward | None = None
        # A request the fast lane forwarded and relays by callbacks, the loop asleep; the
        # loop waits on ``_relay_waiter`` if something wakes it meanwhile.
        self.relay: SimpleForward | None = None
        self._relay_waiter: asyncio.Future[None] | None = None

    def _start_relay(self, forward: SimpleForward) -> bool:
        """Send ``forward`` on a pooled connection; False when none is idle (the loop then
        connects and forwards it)."""
        request = forward.request
        forward.backend, upstream = forward.site.backends.pick_idle(
            self.client_ip, request.target, request.headers
        )
        if upstream is None:
            return False  # the loop connects (to the backend picked, if one was)
        site = forward.site
        loop = asyncio.get_running_loop()
        timeout = self.ctx.config.backend_timeout
        forward.upstream = self.in_flight = upstream
        forward.request_time = site.cache.clock()
        forward.sent_at = time.perf_counter()
        forward.deadline = loop.time() + timeout
        if self._relay_timer is None:
            self._relay_timer = loop.call_at(forward.deadline, self._relay_due)
        self.relay = forward
        upstream.receiver = self._relay_received
        url = upstream.url
        known = self._known_outgoing
        if known is not None and known[0] is forward.raw and known[1] is url:
            upstream.write(known[2])  # (checked here, not in a call: every relay passes here)
        else:
            upstream.write(self._outgoing_head(forward, url))
        return True

    def _relay_received(self) -> None:
        """The backend sent something (or closed): relay the answer once it is complete."""
        forward = self.relay
        assert forward is not None and forward.upstream is not None
        upstream = forward.upstream
        start = max(len(forward.received) - 3, 0)  # what a head's end may be in: the new bytes
        forward.received += upstream.take_unread()
        received = forward.received
        request = forward.request
        response = forward.response
        if response is None:  # the head is read once, when it is complete
            end = received.find(b"\r\n\r\n", start)
            if end < 0:
                if (
                    upstream.at_eof
                    or len(received) > RELAY_LIMIT
                    or framing.ends_with_bare_lf(received, start)  # a head h11 reads
                ):
                    self._hand_over()
                return
            response = forward.response = self._parse_answer_head(received, end, request.method)
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
        assert forward.backend is not None
        site.backends.balancer.answered(forward.backend, response.status)
        head, filling = self._simple_answer_head(forward, response)
        body = received[response.end : total]
        self.transport.write(head + body)
        exchange.body_bytes = len(body)
        upstream.release()
        if filling is not None:
            filling.store(site, body)
        self.served += 1
        self.ctx.exchange_done(exchange)
        self.idle_since = asyncio.get_running_loop().time()
        if self.ctx.draining:
            self.close()  # the loop sees the close and ends
        # With bytes already waiting (a pipelined request) the loop is awake and takes them.
        self.idle = not self._inbox

    def _parse_answer_head(
        self, received: bytes, end: int, method: bytes
    ) -> framing.SimpleResponse | None:
        """``framing.parse_simple_response`` of the head ending at ``end``, unless it is the
        last one relayed, byte for byte, answering the same method."""
        known = self._known_answer
        if (
            known is not None
            and len(known.head) == end + 4
            and known.method == method
            and received.startswith(known.head)
        ):
            return known.response
        response = framing.parse_simple_response(received, end, method, SIMPLE_MAX_HEADERS)
        if response is not None:
            self._known_answer = KnownAnswer(
                received[: end + 4], method, response,
                hdr.forward_response_headers(response.headers),
            )
        return response

    def _relay_due(self) -> None:
        """The relay timer fired: the relay in flight, if any, hands over when its backend's
        time is up (``_hand_over`` then waits out the rest of ``backend_timeout``), or the
        timer waits for its deadline."""
        self._relay_timer = None
        forward = self.relay
        if forward is None:
            return
        loop = asyncio.get_running_loop()
        if loop.time() < forward.deadline:
            self._relay_timer = loop.call_at(forward.deadline, self._relay_due)
            return
        self._hand_over()

    def connection_lost(self, exc: Exception | None) -> None:
        super().connection_lost(exc)
        if self._relay_timer is not None:
            self._relay_timer.cancel()  # it would hold the connection until it fired
            self._relay_timer = None
        forward = self.simple_forward
        if forward is not None:  # the loop had not taken it yet, and now never will
            self.simple_forward = None
            forward.abandon()

    def _hand_over(self) -> None:
        """The relay can't finish (an answer h11 must read, a long or cut-short one, the
        backend timing out): the loop takes the request over from here."""
        forward = self.relay
        assert forward is not None and forward.upstream is not None
        self._end_relay(forward)
        upstream = forward.upstream
        if not forward.received and (upstream.at_eof or upstream.is_lost):
            # The pooled connection had died: the loop sends the request again, on a fresh
            # connection (as its exchange retries, and for the same reason), to the backend
            # the balancer picks then (this one's place in flight goes with the connection).
            upstream.abort()
            forward.upstream = forward.backend = None
        else:
            upstream.put_back(forward.received)
        self.simple_forward = forward
        self._wake()

    def _end_relay(self, forward: SimpleForward) -> None:
        self.relay = None
        self.in_flight = None
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

    async def _forward_simple(self, forward: SimpleForward) -> str:
        """Forward a request the fast lane read: its head serialised once, straight from the
        parsed fields, and the answer relayed without h11 when it is a simple one too.
        Anything else (an answer only h11 can read, a backend failure) hands the request to
        h11 first (``_promote``) and goes on as the request loop does."""
        request, site, plan = forward.request, forward.site, forward.plan
        method = request.method
        timeout = self.ctx.config.backend_timeout
        backends = site.backends

        async def start(upstream: UpstreamConnection) -> framing.SimpleResponse | h11.Response:
            self.in_flight = upstream
            if self.is_lost:
                raise ClientGone()  # it went while we connected
            self.exchange.backend = upstream.url
            head = self._outgoing_head(forward, upstream.url)
            return await upstream.simple_request(head, method, timeout)

        try:
            if forward.upstream is None:
                forward.request_time = site.cache.clock()
                forward.sent_at = time.perf_counter()
                forward.backend, upstream, response = await backends.exchange(
                    backends.key(self.client_ip, request.target, request.headers),
                    start,
                    _status,
                    retry=True,
                    picked=forward.backend,
                )
            else:  # sent by the callback relay: the rest of its time to answer
                upstream = self.in_flight = forward.upstream
                assert forward.backend is not None
                loop = asyncio.get_running_loop()
                try:
                    response = await upstream.simple_response(
                        method, max(forward.deadline - loop.time(), 0.0)
                    )
                except BackendError as exc:
                    upstream.abort()
                    backends.balancer.failed(forward.backend, str(exc))
                    raise
                except BaseException:
                    upstream.abort()
                    raise
                backends.balancer.answered(forward.backend, _status(response))
        except BackendError as exc:
            self.in_flight = None
            if self.is_lost:
                raise ClientGone() from None
            promoted = self._promote(forward)
            if exc.kind == "refused" and site.fallback is not None:
                # The loop's way, which turns to fallback_url (the backend refuses again).
                try:
                    return await self._forward(
                        site, promoted, forward.target, promoted.headers.raw_items(), plan
                    )
                except BackendError as failed:
                    exc = failed
            return self._backend_failed(site, promoted, exc)
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
        known = self._known_answer
        if known is not None and known.response is response:
            fields = known.fields
        else:
            fields = hdr.forward_response_headers(response.headers)
        sent, filling = self._relayed_fields(
            site,
            forward.plan,
            forward.request.method,
            response.status,
            response.reason,
            fields,
            forward.request.headers,
            (forward.request_time, site.cache.clock()),
        )
        head = self._relayed_head(
            response.status, sent, response.reason, site.config.cache_status_header
        )
        return head, filling

    def _outgoing_head(self, forward: SimpleForward, url: BackendURL) -> bytes:
        """The head a fast-lane request goes to the backend at ``url`` with, serialised once,
        straight from the parsed fields, and remembered (``_known_outgoing``) for the relays
        of the same head to the same backend."""
        site = forward.site
        fields = self._backend_headers(
            site,
            hdr.forward_request_headers(
                forward.request.raw_headers,
                client_ip=self.client_ip,
                proto=self.proto,
                body_chunked=False,
                trusted=self.trusted,
                by=self.by,
            ),
            upgrade=False,
            url=url,
        )
        target = forward.target
        if url is not site.config.proxy_url:
            target = site.backends.target_for(target, url)
        head = b"%s %s HTTP/1.1\r\n%s\r\n" % (
            forward.request.method,
            target,
            b"".join([b"%s: %s\r\n" % field for field in fields]),
        )
        if not site.stages.all:  # (a stage may one day add fields to it)
            self._known_outgoing = (forward.raw, url, head)
        return head

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
    # The backend it goes to, once picked (and counted in flight).
    backend: Backend | None = None
    # Set once the request is on its way: the connection it went on, what came back so far
    # (and its parsed head), the store-clock and perf_counter times it left at, when its
    # answer is due (loop time).
    upstream: UpstreamConnection | None = None
    received: bytes = b""
    response: framing.SimpleResponse | None = None  # its head, once complete
    request_time: float = 0.0
    sent_at: float = 0.0
    deadline: float = 0.0

    def abandon(self) -> None:
        """Dropped before the loop forwarded it (its client went): give back what the fast
        lane took for it, its leased connection (aborted) or its backend's place in flight."""
        if self.upstream is not None:
            self.upstream.abandon()
        elif self.backend is not None:
            self.site.backends.balancer.release(self.backend)


@dataclass(frozen=True, slots=True)
class KnownAnswer:
    """A backend's simple answer head (``head``, to a ``method`` request), parsed, and its
    fields as relayed (hop-by-hop ones left out). Shared by the answers that repeat it: read
    only (a relay copies ``fields`` before adding its own)."""

    head: bytes
    method: bytes
    response: framing.SimpleResponse
    fields: list[tuple[bytes, bytes]]


def _status(response: framing.SimpleResponse | h11.Response) -> int:
    return response.status if isinstance(response, framing.SimpleResponse) else response.status_code
