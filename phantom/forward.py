"""Forwarding one request to its backend: the head as the backend gets it, the body streamed
as it arrives (bounded by ``max_body_bytes``), retries on a dead pooled connection for
idempotent requests; the answer goes on to :mod:`phantom.relay`.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Awaitable, Callable
from typing import cast

import h11

from . import framing
from . import headers as hdr
from .answers import ClientGone
from .balancing.pool import status_of
from .cache import policy
from .config import BackendURL
from .context import ProxyContext, Site
from .endpoint import ReadTimeout
from .errors import BackendError, RequestRejected
from .fallback import Fallback
from .relay import Plan, Relaying, UnmatchedNotModified
from .upstream import UpstreamConnection

IDEMPOTENT = frozenset({b"GET", b"HEAD", b"OPTIONS", b"PUT", b"DELETE", b"TRACE"})

#: What of the client's request a revalidation does not carry: its validators, replaced by the
#: stored ones (RFC 9111 §4.3.1), and its range, for the whole response is what refreshes the
#: entry. Both are then answered from the refreshed entry. (If-Match and If-Unmodified-Since
#: go on: the origin's 412 is the right answer when they fail.)
_ANSWERED_FROM_ENTRY = (b"if-none-match", b"if-modified-since", b"range", b"if-range")


class Forwarding(Relaying):
    """A client connection's way to a backend."""

    def __init__(self, ctx: ProxyContext, *, tls: bool = False) -> None:
        super().__init__(ctx, tls=tls)
        self.trusted = False  # the peer is in trusted_proxies
        self.by = ""  # our address the client connected to, as Forwarded's "by" names it
        # The backend connection of the request being forwarded, dropped if the client goes.
        self.in_flight: UpstreamConnection | None = None

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

    def _backend_headers(
        self,
        site: Site,
        headers: list[tuple[bytes, bytes]],
        *,
        upgrade: bool,
        url: BackendURL | None = None,
    ) -> list[tuple[bytes, bytes]]:
        """``preserve_host = false``: the backend (``url``, else ``proxy_url``) sees its own
        host (and origin, on upgrades)."""
        if site.config.preserve_host:
            return headers
        netloc = (url or site.config.proxy_url).netloc.encode()
        return hdr.with_backend_host(headers, netloc, origin=upgrade)

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
        client's own validators give way to the stored ones (RFC 9111 §4.3.1), and its range
        to the whole response: both are answered by us from the refreshed entry."""
        headers = hdr.forward_request_headers(
            raw_headers,
            client_ip=self.client_ip,
            proto=self.proto,
            body_chunked=body_chunked,
            drop=drop + _ANSWERED_FROM_ENTRY if validating is not None else drop,
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
        plan: Plan,
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

        retry = method in IDEMPOTENT and not announced.has_body
        request_time = site.cache.clock()
        sent_at = time.perf_counter()
        backends = site.backends
        try:
            try:
                _, upstream, response = await backends.exchange(
                    backends.key(self.client_ip, request.target, request.headers),
                    self._starter(
                        lambda upstream: self._for_backend(site, outgoing, upstream.url),
                        first,
                        limit,
                    ),
                    status_of,
                    retry=retry,
                )
            except BackendError as exc:
                turn = self._fallback_for(site, request, outgoing, exc, upgrade=False)
                if turn is None:
                    raise
                fallback, outgoing = turn
                fallen_back = outgoing
                # Relayed marked X-Phantom-Fallback: 1, never stored; requests waiting for this
                # key's answer go on their own.
                plan.land(site)
                plan = Plan(None, plan.reason, request_headers=plan.request_headers, fallback=True)
                upstream, response = await fallback.upstream.exchange(
                    self._starter(lambda _: fallen_back, first, limit), retry=retry
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
        except UnmatchedNotModified:
            # RFC 9111 §4.3.4: the 304 updates nothing (its entry is gone). Ask once more as
            # the client asked, without the stored validators: unconditionally, unless the
            # client had conditions of its own; that answer is relayed (and stored).
            again = dataclasses.replace(plan, entry=None, after_unmatched_304=True)
            return await self._forward(site, request, target, raw_headers, again)
        finally:
            self.in_flight = None

    def _starter(
        self,
        outgoing: Callable[[UpstreamConnection], h11.Request],
        first: object,
        limit: int,
    ) -> Callable[[UpstreamConnection], Awaitable[h11.Response]]:
        """What starts the request on a connection: the head ``outgoing`` makes for it, then
        the body (``first`` event already read); the backend's response head."""

        async def start(upstream: UpstreamConnection) -> h11.Response:
            return await upstream.request(
                outgoing(upstream),
                lambda upstream: self._stream_request_body(upstream, first, limit),
                self.ctx.config.backend_timeout,
            )

        return start

    def _fallback_for(
        self,
        site: Site,
        request: h11.Request,
        outgoing: h11.Request,
        exc: BackendError,
        *,
        upgrade: bool,
    ) -> tuple[Fallback, h11.Request] | None:
        """The server's ``fallback_url`` and the request as it gets it
        (:mod:`phantom.fallback`), when the backend refused ``request`` (not when it failed
        otherwise: the request may have reached it) and the client is still there; logged.
        None when there is no turning to it."""
        fallback = site.fallback
        if exc.kind != "refused" or fallback is None or self.is_lost:
            return None
        self._log_backend(
            site, request.method, request.target, f"{exc}; falling back to {fallback.url}"
        )
        self.exchange.backend = fallback.url
        return fallback, fallback.request(outgoing, upgrade=upgrade)

    def _for_backend(
        self, site: Site, request: h11.Request, url: BackendURL, *, upgrade: bool = False
    ) -> h11.Request:
        """``request`` as the backend at ``url`` gets it (its base path, maybe its Host); the
        exchange record names the backend tried last."""
        self.exchange.backend = url
        return site.backends.adapt(request, url, upgrade=upgrade)

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
