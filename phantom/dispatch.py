"""One request's way in: routed to its server (a 404 or 405 otherwise), asked that server's
stages (docs/architecture.md has their order), left by the guards as they pass it on, then
handed to the cache step, the backend or the upgrade. The layer above the fast lane and under
the request loop of :mod:`~phantom.connection`.
"""

from __future__ import annotations

import h11

from . import handshake
from . import headers as hdr
from .bearer import take_param
from .context import Site
from .errors import PhantomError, RequestRejected
from .fastlane import FastLane
from .lookup import CacheLookup
from .routing import MethodNotAllowed
from .stages import RequestView
from .upgrade import Upgrading


class Dispatching(FastLane, Upgrading, CacheLookup):
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
            request = with_target(request, route.path, raw_headers)
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
                    client_address=view.client(self.config.trusted_proxies),
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
            request = with_target(request, view.target, raw_headers)
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


def with_target(
    request: h11.Request, target: bytes, headers: list[tuple[bytes, bytes]]
) -> h11.Request:
    """``request`` with another target and these fields (names as the client spelled them)."""
    return h11.Request(
        method=request.method, target=target, headers=headers, http_version=request.http_version
    )
