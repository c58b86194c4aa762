"""One client connection: h11 parses requests, each one walks one way through
decide -> (cache hit | forward | tunnel | reject) -> respond, then the next one starts.

Requests on a connection are handled strictly in order, which is what makes pipelining safe:
h11 holds a pipelined request's bytes until ``start_next_cycle()``.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from typing import cast

import h11

from . import headers as hdr
from . import webhooks
from .cache import policy
from .cache.store import CachedResponse
from .context import ProxyContext, Site
from .endpoint import Endpoint, EndpointClosed, ReadTimeout
from .errors import BackendError, BackendTimeout, PhantomError
from .upstream import UpstreamConnection

log = logging.getLogger("phantom")

MAX_HEAD_BYTES = 64 * 1024
KEEPALIVE_SECONDS = 15.0
IDEMPOTENT = frozenset({b"GET", b"HEAD", b"OPTIONS", b"PUT", b"DELETE", b"TRACE"})


class ClientGone(Exception):
    """The client closed or broke its connection while we were answering it."""


class ClientConnection(Endpoint):
    def __init__(self, ctx: ProxyContext) -> None:
        super().__init__()
        self.ctx = ctx
        self.h11 = h11.Connection(h11.SERVER, max_incomplete_event_size=MAX_HEAD_BYTES)
        self.client_ip = "-"
        # True while waiting for a request with nothing of it received: safe to close.
        self.idle = True
        self.finished: asyncio.Task[None]

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        peer = self.transport.get_extra_info("peername")
        if peer:
            self.client_ip = str(peer[0])
        self.ctx.connections.add(self)
        self.finished = asyncio.get_running_loop().create_task(self._serve())

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
            if not handed_off:
                self.close()

    async def _serve_one(self) -> str:
        """Serve one request; returns "next" (keep-alive), "close" or "tunnel"."""
        self.idle = True
        try:
            event = await self._next_event(KEEPALIVE_SECONDS)
        except ReadTimeout:
            return "close"
        except h11.RemoteProtocolError as exc:
            self._reject_malformed(exc)
            return "close"
        self.idle = False
        if not isinstance(event, h11.Request):
            return "close"  # ConnectionClosed: the client is done with us.
        try:
            outcome = await self._handle(event)
        except h11.RemoteProtocolError as exc:
            # A broken body (bad chunk, early EOF): the exchange can't be completed.
            log.info("client %s: %s", self.client_ip, exc)
            if self.h11.our_state is h11.SEND_RESPONSE:
                self._reject_malformed(exc)
            return "close"
        if outcome != "next":
            return outcome
        return "next" if self._finish_cycle() else "close"

    def _finish_cycle(self) -> bool:
        conn = self.h11
        if conn.our_state is h11.DONE and conn.their_state is h11.DONE:
            conn.start_next_cycle()
            return True
        return False

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

    async def _read_body(self) -> list[bytes]:
        """Consume the rest of the request body (bodies of requests we answer ourselves)."""
        parts: list[bytes] = []
        while self.h11.their_state is h11.SEND_BODY:
            event = await self._next_event()
            if isinstance(event, h11.Data):
                parts.append(event.data)
        return parts

    # -- deciding ---------------------------------------------------------------------------

    async def _handle(self, request: h11.Request) -> str:
        raw_headers = request.headers.raw_items()
        route = self.ctx.router.route(hdr.get_header(raw_headers, b"host"), request.target)
        if route is None:
            await self._read_body()
            self._respond_plain(404, b"No server is bound to this host and path.\n")
            return "next"
        site = self.ctx.sites[route.server.name]
        cache_key = None
        if site.webhooks:
            payload = webhooks.request_payload(request.method, request.target, raw_headers)
            denial, cache_key = await site.webhooks.run(payload)
            if denial is not None:
                await self._read_body()
                self._respond_plain(denial.status, denial.body, headers=denial.headers)
                return "next"
        if site.config.pre_generate:
            outcome = await self._serve_snapshot(site, request, raw_headers)
            if outcome is not None:
                return outcome
        try:
            if hdr.is_upgrade(raw_headers):
                if not site.config.enable_websocket:
                    await self._read_body()
                    self._respond_plain(501, b"Upgrade requests are not enabled on this server.\n")
                    return "next"
                return await self._upgrade(site, request, route.target, raw_headers)
            return await self._serve_http(site, request, route.target, raw_headers, cache_key)
        except PhantomError as exc:
            return self._backend_failed(site, request, exc)

    async def _serve_snapshot(
        self, site: Site, request: h11.Request, raw_headers: list[tuple[bytes, bytes]]
    ) -> str | None:
        """A pre-generate server answers from its snapshots; None: fall through (only with
        ``pre_generate_fallthrough``) to the cache and the backend."""
        upgrade = hdr.is_upgrade(raw_headers)
        if not upgrade and request.method in (b"GET", b"HEAD"):
            entry = site.snapshots.get(request.target)
            if entry is not None:
                await self._read_body()
                self._respond_cached(site, entry, request.method)
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
        method = request.method
        lower_headers = list(request.headers)
        forward_reason = policy.request_forward_reason(method, lower_headers)
        key = None
        if policy.is_cacheable_request(method, lower_headers):
            host = hdr.get_header(lower_headers, b"host") or b""
            key = policy.store_key(host, b"GET", request.target)
            if cache_key is not None:  # a cache_key webhook's own key, not tied to the host
                key = ("", cache_key)
            if forward_reason is None:
                entry = site.cache.get(key)
                if entry is not None:
                    await self._read_body()
                    self._respond_cached(site, entry, method)
                    return "next"
                forward_reason = policy.Forward.URI_MISS
        assert forward_reason is not None
        return await self._forward(site, request, target, raw_headers, key, forward_reason)

    # -- forwarding -------------------------------------------------------------------------

    async def _forward(
        self,
        site: Site,
        request: h11.Request,
        target: bytes,
        raw_headers: list[tuple[bytes, bytes]],
        key: tuple[str, str] | None,
        forward_reason: policy.Forward,
    ) -> str:
        method = request.method
        body_chunked = b"chunked" in hdr.comma_tokens(raw_headers, b"transfer-encoding")
        has_body = body_chunked or hdr.get_header(raw_headers, b"content-length") not in (
            None,
            b"0",
        )
        expects_continue = self.h11.they_are_waiting_for_100_continue
        outgoing = h11.Request(
            method=method,
            target=target,
            headers=self._backend_headers(
                site,
                hdr.forward_request_headers(
                    raw_headers,
                    client_ip=self.client_ip,
                    proto=b"http",
                    body_chunked=body_chunked,
                    # We answer Expect: 100-continue ourselves, so the body flows at once.
                    drop=(b"expect",) if expects_continue else (),
                ),
                upgrade=False,
            ),
        )
        if expects_continue:
            self._send(h11.InformationalResponse(status_code=100, headers=[]))

        request_time = site.cache.clock()
        retry = method in IDEMPOTENT and not has_body
        while True:
            upstream, pooled = await site.upstream.acquire()
            try:
                upstream.send(outgoing)
                await self._stream_request_body(upstream)
                response = await self._response_head(upstream)
                break
            except (BackendError, EndpointClosed) as exc:
                upstream.abort()
                if pooled and retry and not upstream.response_started:
                    retry = False
                    continue  # The pooled connection had died while idle: once more, fresh.
                if isinstance(exc, EndpointClosed):
                    raise BackendError("backend closed the connection") from None
                raise
            except BaseException:
                upstream.abort()
                raise
        return await self._relay_response(
            site, upstream, method, request, response, key, forward_reason, request_time
        )

    async def _stream_request_body(self, upstream: UpstreamConnection) -> None:
        """Pass the client's body on as it arrives (a retry finds it already complete)."""
        while self.h11.their_state is h11.SEND_BODY:
            event = await self._next_event()
            if isinstance(event, h11.Data):
                upstream.send(event)
                await upstream.drain()
        upstream.send(h11.EndOfMessage())

    async def _response_head(self, upstream: UpstreamConnection) -> h11.Response:
        timeout = self.ctx.config.backend_timeout
        while True:
            event = await upstream.next_event(timeout)
            if isinstance(event, h11.Response):
                return event
            # 1xx: we already told the client to continue, and other interim responses
            # carry nothing a reverse proxy's client needs.

    async def _relay_response(
        self,
        site: Site,
        upstream: UpstreamConnection,
        method: bytes,
        request: h11.Request,
        response: h11.Response,
        key: tuple[str, str] | None,
        forward_reason: policy.Forward,
        request_time: float,
    ) -> str:
        response_time = site.cache.clock()
        out_headers = hdr.forward_response_headers(response.headers.raw_items())
        decision = None
        if key is not None and method == b"GET":
            decision = policy.storage_decision(
                method,
                response.status_code,
                list(request.headers),
                list(response.headers),
                default_ttl=site.config.cache_ttl,
                now=time.time(),
                request_time=request_time,
                response_time=response_time,
            )
        length = hdr.get_header(out_headers, b"content-length")
        max_object = site.cache.max_object_bytes
        if decision is not None and length is not None and int(length) > max_object:
            decision = None
        # The header leaves before the body: claim "stored" only when the length is known.
        status = policy.cache_status_forward(
            forward_reason, stored=decision is not None and length is not None
        )
        out_headers.append((b"Cache-Status", status))
        self._start_response(response.status_code, out_headers, response.reason)

        body: bytearray | None = bytearray() if decision is not None else None
        timeout = self.ctx.config.backend_timeout
        try:
            while True:
                event = await upstream.next_event(timeout)
                if isinstance(event, h11.Data):
                    self._send(event)
                    if body is not None:
                        body += event.data
                        if len(body) > max_object:
                            body = None
                    await self.drain()
                elif isinstance(event, h11.EndOfMessage):
                    self._send(h11.EndOfMessage())
                    break
        except BackendError as exc:
            # The head is out: all we can do is end the connection so the client sees a
            # truncated response, never one that looks complete.
            upstream.abort()
            log.warning(
                "client %s: %s %s -> %s: response cut short: %s",
                self.client_ip,
                method.decode("latin-1"),
                request.target.decode("latin-1"),
                site.config.proxy_url,
                exc,
            )
            self.abort()
            return "close"
        except BaseException:
            upstream.abort()
            raise
        site.upstream.release(upstream)
        if decision is not None and body is not None and key is not None:
            site.cache.put(
                key,
                CachedResponse(
                    status=response.status_code,
                    reason=response.reason,
                    headers=_stored_headers(out_headers[:-1], len(body)),
                    body=bytes(body),
                    response_time=response_time,
                    initial_age=decision.initial_age,
                    freshness_lifetime=decision.freshness_lifetime,
                ),
            )
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
        body = await self._read_body()
        upstream = await site.upstream.connect()
        try:
            upstream.send(
                h11.Request(
                    method=request.method,
                    target=target,
                    headers=self._backend_headers(
                        site,
                        hdr.upgrade_request_headers(
                            raw_headers, client_ip=self.client_ip, proto=b"http"
                        ),
                        upgrade=True,
                    ),
                )
            )
            for part in body:
                upstream.send(h11.Data(data=part))
            upstream.send(h11.EndOfMessage())
            head, response = await self._upgrade_response(upstream)
        except BaseException:
            upstream.abort()
            raise
        if response is not None:
            # The backend declined: an ordinary response, and keep-alive may go on.
            return await self._relay_response(
                site, upstream, request.method, request, response, None,
                policy.Forward.REQUEST, site.cache.clock(),
            )
        if self.is_lost:
            # The client left during the handshake: nobody to tunnel for.
            upstream.abort()
            return "close"
        self.write(head)
        client = self.detach()
        client.unread = self.h11.trailing_data[0] + client.unread
        backend = upstream.detach()
        backend.unread = upstream.h11.trailing_data[0] + backend.unread
        label = f"{self.client_ip} {request.target.decode('latin-1')} -> {site.config.proxy_url}"
        self.ctx.open_tunnel(client, backend, label)
        log.info("tunnel %s opened", label)
        return "tunnel"

    async def _upgrade_response(
        self, upstream: UpstreamConnection
    ) -> tuple[bytes, h11.Response | None]:
        """Read the backend's answer to an upgrade: (verbatim 101 head, None) or (b"", response)."""
        conn = upstream.h11
        raw = bytearray()
        timeout = self.ctx.config.backend_timeout
        while True:
            try:
                event = conn.next_event()
            except h11.RemoteProtocolError as exc:
                raise BackendError(f"invalid response from backend: {exc}") from None
            if event is h11.NEED_DATA:
                try:
                    data = await upstream.read(timeout)
                except ReadTimeout:
                    raise BackendTimeout("backend did not answer the upgrade in time") from None
                raw += data
                conn.receive_data(data)
            elif isinstance(event, h11.InformationalResponse) and event.status_code == 101:
                # Everything h11 did not keep as trailing data is the head (plus any interim
                # 1xx before it), sent on exactly as the backend wrote it.
                return bytes(raw[: len(raw) - len(conn.trailing_data[0])]), None
            elif isinstance(event, h11.Response):
                return b"", event
            elif isinstance(event, h11.ConnectionClosed):
                raise BackendError("backend closed the connection")

    # -- responding -------------------------------------------------------------------------

    def _send(self, event: h11.Event) -> None:
        data = self.h11.send(event)
        if data:
            if self.is_lost:
                raise ClientGone()
            self.transport.write(data)

    def _start_response(
        self, status: int, headers: list[tuple[bytes, bytes]], reason: bytes = b""
    ) -> None:
        if self.ctx.draining:
            headers.append((b"Connection", b"close"))
        self._send(h11.Response(status_code=status, headers=headers, reason=reason))

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
            headers = [(b"Content-Type", b"text/plain; charset=utf-8")]
        headers = [*headers, (b"Content-Length", b"%d" % len(body))]
        if close:
            headers.append((b"Connection", b"close"))
        self._start_response(status, headers)
        self._send(h11.Data(data=body))
        self._send(h11.EndOfMessage())

    def _respond_cached(self, site: Site, entry: CachedResponse, method: bytes) -> None:
        """A hit in one write, with no per-hit header validation.

        h11 still frames the answer: it is sent a Response carrying only the framing fields
        (Content-Length, plus Connection: close while draining), so its state machine and its
        keep-alive decision (it adds ``Connection: close`` itself for HTTP/1.0 or closing
        clients) stay exact, and the head it writes is the start of ours. The stored headers
        follow, serialised once at store time; only Age and Cache-Status are formatted here.
        """
        age = entry.age(site.cache.clock())
        ttl = entry.freshness_lifetime - age
        # A snapshot never expires: its hit carries no ttl.
        if math.isfinite(ttl):
            status = policy.cache_status_hit(ttl)
        else:
            status = f"{policy.CACHE_NAME}; hit".encode()
        framing = [(b"Content-Length", b"%d" % len(entry.body))]
        if self.ctx.draining:
            framing.append((b"Connection", b"close"))
        conn = self.h11
        response = h11.Response(status_code=entry.status, headers=framing, reason=entry.reason)
        head = conn.send(response)
        parts = [
            head[:-2],  # up to, not including, the blank line that ends the head
            entry.wire_headers,
            b"Age: %s\r\nCache-Status: %s\r\n\r\n" % (policy.format_age(age), status),
        ]
        if method != b"HEAD" and entry.body:
            # Passthrough: h11 counts the bytes against Content-Length and hands back the body
            # object itself, uncopied.
            parts += conn.send_with_data_passthrough(h11.Data(data=entry.body)) or ()
        conn.send(h11.EndOfMessage())
        if self.is_lost:
            raise ClientGone()
        self.transport.write(b"".join(parts))

    def _reject_malformed(self, exc: h11.RemoteProtocolError) -> None:
        status = exc.error_status_hint
        log.info("client %s: malformed request: %s -> %d", self.client_ip, exc, status)
        if self.h11.our_state in (h11.IDLE, h11.SEND_RESPONSE):
            self._respond_plain(status, f"Bad request: {exc}\n".encode(), close=True)

    def _backend_failed(self, site: Site, request: h11.Request, exc: PhantomError) -> str:
        log.warning(
            "client %s: %s %s -> %s: %s (%d)",
            self.client_ip,
            request.method.decode("latin-1"),
            request.target.decode("latin-1"),
            site.config.proxy_url,
            exc,
            exc.status,
        )
        if self.h11.our_state is not h11.SEND_RESPONSE:
            self.abort()
            return "close"
        # An unread or broken request body means the connection can't be reused.
        close = self.h11.their_state in (h11.SEND_BODY, h11.ERROR)
        self._respond_plain(exc.status, f"{exc}\n".encode(), close=close)
        return "close" if close else "next"


def _stored_headers(headers: list[tuple[bytes, bytes]], length: int) -> list[tuple[bytes, bytes]]:
    """What a hit sends: the forwarded headers with our own framing and no upstream Age."""
    kept = [(n, v) for n, v in headers if n.lower() not in (b"content-length", b"age")]
    kept.append((b"Content-Length", b"%d" % length))
    return kept
