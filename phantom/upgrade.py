"""Upgrades: the handshake replayed on a fresh backend connection (the pure checks are
:mod:`phantom.handshake`), the backend's 101 checked, then both connections handed over to a
:class:`~phantom.tunnel.Tunnel`. A backend that declines answers an ordinary response.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Awaitable, Callable

import h11

from . import clients, handshake
from . import headers as hdr
from .answers import ClientGone, over_limit
from .balancing import Backend, Balancer
from .cache.policy import Forward
from .context import ProxyContext, Site
from .errors import BackendError
from .fallback import FALLBACK_FIELD, Fallback
from .forward import Forwarding
from .relay import Plan
from .upstream import UpstreamConnection

log = logging.getLogger("phantom")

#: A backend's answer to a handshake: its 101 head as sent and the 101, or (b"", a response).
_Answer = tuple[bytes, h11.InformationalResponse | h11.Response]


class Upgrading(Forwarding):
    """A client connection's upgrades."""

    # This connection's place in its client's share (None: a trusted proxy's, not counted),
    # set when it is made (:mod:`phantom.connection`); an open tunnel holds it from then on.
    hold: clients.Hold | None

    def __init__(self, ctx: ProxyContext, *, tls: bool = False) -> None:
        super().__init__(ctx, tls=tls)
        # An upgrade's place in its client's tunnels, from the check until the tunnel opens.
        self.tunnel_hold: clients.Hold | None = None

    async def _upgrade(
        self,
        site: Site,
        request: h11.Request,
        target: bytes,
        raw_headers: list[tuple[bytes, bytes]],
        *,
        client_address: str,
        close_at: float | None = None,
    ) -> str:
        """Replay the handshake on a fresh backend connection; on 101, splice the sockets
        (until ``close_at``, a ``time.time()`` reading, when one is given). ``client_address``:
        the client's, after ``trusted_proxies`` (its share of the tunnels)."""
        body = await self._read_body(keep=True, limit=site.config.max_body_bytes)
        limit = self.config.max_tunnels
        if limit and len(self.ctx.tunnels) >= limit:
            raise over_limit("too many tunnels")
        self.tunnel_hold = self._take_tunnel_share(client_address)
        outgoing = h11.Request(
            method=request.method,
            target=target,
            headers=self._backend_headers(
                site,
                hdr.upgrade_request_headers(
                    raw_headers,
                    client_ip=self.client_ip,
                    proto=self.proto,
                    trusted=self.trusted,
                    by=self.by,
                ),
                upgrade=True,
            ),
        )
        timeout = self.config.backend_timeout

        def replay(
            make: Callable[[UpstreamConnection], h11.Request],
        ) -> Callable[[UpstreamConnection], Awaitable[_Answer]]:
            """The handshake ``make`` writes for a connection, sent with the body, and the
            answer's head."""

            async def send(upstream: UpstreamConnection) -> _Answer:
                self.in_flight = upstream  # a client that leaves now aborts the handshake
                if self.is_lost:
                    raise ClientGone()  # it went while we connected
                upstream.send(make(upstream))
                for part in body:
                    upstream.send(h11.Data(data=part))
                upstream.send(h11.EndOfMessage())
                return await upstream.upgrade_head(timeout)

            return send

        backends = site.backends
        backend: Backend | None = None
        fallback: Fallback | None = None
        try:
            try:
                # Tried again on another backend, as a GET is, while the client has seen
                # nothing and there is no body to send twice.
                backend, upstream, (head, response) = await backends.exchange(
                    backends.key(self.client_ip, request.target, request.headers),
                    replay(lambda up: self._for_backend(site, outgoing, up.url, upgrade=True)),
                    _status,
                    retry=not body,
                    fresh=True,
                )
            except BackendError as exc:
                turn = self._fallback_for(site, request, outgoing, exc, upgrade=True)
                if turn is None:
                    raise
                fallback, outgoing = turn
                fallen_back = outgoing
                upstream, (head, response) = await fallback.upstream.exchange(
                    replay(lambda _: fallen_back), retry=False, fresh=True
                )
        finally:
            self.in_flight = None
        if isinstance(response, h11.Response):
            # The backend declined: an ordinary response, and keep-alive may go on.
            plan = Plan(None, Forward.REQUEST, fallback=fallback is not None)
            return await self._relay_response(
                site, upstream, request, response, plan, site.cache.clock()
            )
        problem = handshake.switch_problem(
            outgoing.headers.raw_items(), response.headers.raw_items()
        )
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
        if fallback is not None:  # the 101 goes out verbatim, and says where it came from
            head = head[:-2] + b"%s: %s\r\n\r\n" % FALLBACK_FIELD
        self.write(head)
        self.exchange.status = 101
        client = self.detach()
        client.unread = self.h11.trailing_data[0] + client.unread
        leg = upstream.detach()
        leg.unread = upstream.h11.trailing_data[0] + leg.unread
        closed = None
        if backend is not None:
            # From here the backend counts the tunnel, no longer the handshake.
            backends.balancer.tunnel_opened(backend)
            upstream.end_exchange()
            closed = functools.partial(Balancer.tunnel_closed, backend)
        label = f"{self.client_ip} {request.target.decode('latin-1')} -> {self.exchange.backend}"
        holds = [hold for hold in (self.hold, self.tunnel_hold) if hold is not None]
        self.ctx.open_tunnel(
            client, leg, label, site.config, self.exchange, holds, close_at, on_close=closed
        )
        log.info("tunnel %s opened", label)
        return "tunnel"

    def _take_tunnel_share(self, client: str) -> clients.Hold:
        """A place among the tunnels of ``client`` (the address the request comes from, after
        ``trusted_proxies``); 503 when it holds ``max_tunnels_per_client`` already."""
        hold = self.ctx.client_tunnels.take(client, self.config.max_tunnels_per_client)
        if hold is None:
            raise over_limit("too many tunnels from this client")
        return hold


def _status(answer: _Answer) -> int:
    return answer[1].status_code
