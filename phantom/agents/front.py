"""The relay's frontend: agents' handshakes, and public connections handed to phantom.

Every connection the relay accepts is a phantom client connection from the start. Its first
request pins it to the agent whose name its ``Host`` carries (``NAME.relay_domain``): routing,
stages, the cache, the access log, metrics and limits all apply, and the agent's data
connections are the site's backend. A request that upgrades to ``phantom-relay/1`` at one of
the protocol's paths is an agent's control or data connection instead, taken over by the
:class:`~.hub.Hub`.
"""

from __future__ import annotations

import asyncio
import logging

import h11

from .. import headers as hdr
from ..config import Config, RelayConfig, host_port
from ..connection import ClientConnection
from ..context import ProxyContext, Site
from ..endpoint import DetachedState
from ..handshake import offered
from ..headers import HeaderPairs
from ..proxy import Proxy
from ..routing import Route, Router, request_host
from . import protocol
from .hub import Hub
from .protocol import answer, switching
from .registry import Refused, name_from_host, name_from_path
from .sites import PREFIX, AgentSites

log = logging.getLogger("phantom.relay")


class PublicConnection(ClientConnection):
    """A connection the relay accepted: a phantom client connection like any other, whose
    router is picked by its first request (:class:`PinnedRoutes`); or, when its request is an
    upgrade to ``phantom-relay/1`` at one of the handshake paths, an agent's control or data
    connection, taken over by the :class:`~.hub.Hub`.

    One object from the accept on, reading each head once, so a public connection costs the
    relay what it costs phantom serve. An agent's handshake that arrives whole in the first
    read (an agent writes it at once) is taken over in that read's callback, without the
    request loop; one that trickles in is read by the loop and taken over from there."""

    def __init__(self, front: RelayFront, tls: bool) -> None:
        super().__init__(front.ctx, tls=tls)
        self.front = front
        self.router = self.routes = PinnedRoutes(front, self.sites)
        self.first_read = True

    def data_received(self, data: bytes) -> None:
        if self.first_read:
            self.first_read = False
            if data.startswith(_HANDSHAKE_START) and not (self.turned_away or self.over_capacity):
                handshake = _handshake(data)
                if handshake is not None:
                    self._take_over(*handshake)
                    self.finished.cancel()  # the request loop has nothing to wait for
                    return
        super().data_received(data)

    async def _handle(self, request: h11.Request) -> str:
        if _is_handshake(request.target, request.headers):
            self._take_over(request.target, list(request.headers), self.h11.trailing_data[0])
            return "tunnel"  # (the hub has the connection, or it was refused and closed)
        # Anything else, at those paths too, is a public request like any other.
        if self.routes.pick(request.headers.raw_items(), request.target) is None:
            self.exchange.status = 404
            self._refuse(404, "no such agent", html=True)
            return "close"
        return await super()._handle(request)

    # -- agents ------------------------------------------------------------------------------

    def _take_over(
        self, target: bytes, headers: list[tuple[bytes, bytes]], unread: bytes
    ) -> None:
        """An agent's handshake (``unread``: what the agent sent after it): the hub takes the
        connection, or it is refused and closed. Either way it is no public connection, and
        not its address's either."""
        self.ctx.connections.discard(self)
        if self.hold is not None:
            self.hold.release()
            self.hold = None
        if target.startswith(protocol.CONTROL_PATH):
            self._control(headers, unread)
        else:
            self._data(headers, unread)

    @property
    def _peer(self) -> str:
        peer = self.transport.get_extra_info("peername")
        return host_port(peer[0], peer[1]) if peer else "-"

    def _refuse(self, status: int, text: str, *, html: bool = False) -> None:
        if not self.is_lost:
            self.transport.write(answer(status, text, html=html))
            self.close()

    def _refuse_agent(self, status: int, reason: str) -> None:
        log.warning("agent from %s refused: %s", self._peer, reason)
        self._refuse(status, reason)

    def _control(self, headers: list[tuple[bytes, bytes]], unread: bytes) -> None:
        authorization = protocol.header(headers, b"authorization") or b""
        scheme, _, token = authorization.partition(b" ")
        name = protocol.header(headers, protocol.NAME_HEADER)
        if scheme.lower() != b"bearer" or not token.strip():
            self._refuse_agent(401, "missing Authorization: Bearer TOKEN")
            return
        if name is None:
            self._refuse_agent(400, "missing Phantom-Relay-Name")
            return
        warm = protocol.number(protocol.header(headers, protocol.WARM_HEADER) or b"0")
        hub = self.front.hub
        session = hub.register(
            token.strip().decode("latin-1"),
            name.decode("latin-1"),
            warm or 0,
            protocol.header(headers, protocol.CACHE_HEADER) == b"on",
            self._peer,
        )
        if isinstance(session, Refused):  # (the hub logged why)
            self._refuse(session.status, session.reason)
            return
        self.transport.write(switching((b"Phantom-Relay-Session", session.key.encode())))
        hub.attach(session, self._detached(unread), self.front.public_url(session.name))

    def _data(self, headers: list[tuple[bytes, bytes]], unread: bytes) -> None:
        name = protocol.header(headers, protocol.NAME_HEADER) or b""
        key = protocol.header(headers, protocol.SESSION_HEADER) or b""
        which = protocol.header(headers, protocol.CONNECTION_HEADER) or b""
        session = self.front.hub.session_for_data(name, key)
        if session is None:
            log.warning("data connection from %s refused: unknown session", self._peer)
            self._refuse(403, "unknown session")
            return
        problem = session.refusal(which)
        if problem is not None:
            self._refuse(409, problem)
            return
        self.transport.write(switching())
        session.take_data(self._detached(unread), which)

    def _detached(self, unread: bytes) -> DetachedState:
        """The transport, for the hub: what the agent sent after its handshake (``unread``,
        read already) comes first among the bytes left to read."""
        state = self.detach()
        state.unread = unread + state.unread
        return state


class PinnedRoutes:
    """A public connection's router. Its first request picks it: the router of the agent whose
    name the ``Host`` carries (``NAME.relay_domain``; in the path mode, ``relay_domain/NAME/``
    too), or else the relay file's own ``[server.NAME]`` tables; every later request on the
    connection is routed by that one. So a connection for an agent stays with it: a request
    on it for another Host is a 404, never another agent's. Picked where the fast lane or the
    loop routes, from the head they parsed: no head is read twice."""

    __slots__ = ("front", "sites", "chosen")

    def __init__(self, front: RelayFront, sites: dict[str, Site]) -> None:
        self.front = front
        self.sites = sites  # the connection's, which get the agent's site when it is chosen
        self.chosen: Router | None = None

    def route(self, host: bytes | None, target: bytes, method: bytes) -> Route | None:
        chosen = self.chosen or self._choose(host, target)
        return None if chosen is None else chosen.route(host, target, method)

    def pick(self, headers: list[tuple[bytes, bytes]], target: bytes) -> Router | None:
        """The router (chosen now if not yet) for a request; None when its Host names no
        agent and the relay file has no servers of its own."""
        return self.chosen or self._choose(hdr.get_header(headers, b"host"), target)

    def _choose(self, host: bytes | None, target: bytes) -> Router | None:
        front = self.front
        relay = front.hub.config
        name = name_from_host(host or b"", relay.relay_domain)
        if name is None and relay.relay_path_mode and request_host(host) == relay.relay_domain:
            name = name_from_path(target.split(b"?", 1)[0])
        router = None
        if name is not None and (router := front.sites.router_for(name)) is not None:
            # (An agent may have registered since the connection was accepted.)
            site = PREFIX + name
            self.sites[site] = front.ctx.sites[site]
        elif front.ctx.config.servers:
            router = front.ctx.router
        self.chosen = router
        return router


# How an agent's handshake starts (``GET /.phantom-relay/...``).
_HANDSHAKE_START = b"GET " + protocol.HANDSHAKE_PATHS


def _is_handshake(target: bytes, headers: HeaderPairs) -> bool:
    """Whether a request is an agent's: an upgrade to our protocol at a handshake path
    (anything else at those paths is a public request like any other)."""
    return target.split(b"?", 1)[0] in (protocol.CONTROL_PATH, protocol.DATA_PATH) and any(
        token.lower() == protocol.UPGRADE_TOKEN for token in offered(headers)
    )


def _handshake(raw: bytes) -> tuple[bytes, list[tuple[bytes, bytes]], bytes] | None:
    """The agent's handshake that ``raw`` starts with (its target, its fields, the bytes after
    it), or None. Read in the plain form agents write without h11, in any other by h11."""
    plain = protocol.plain_handshake(raw)
    if plain is not None:
        return plain if _is_handshake(plain[0], plain[1]) else None
    parser = h11.Connection(h11.SERVER)
    parser.receive_data(raw)
    try:
        request = parser.next_event()
    except h11.RemoteProtocolError:
        return None
    if not isinstance(request, h11.Request):
        return None
    headers = list(request.headers)
    if not _is_handshake(request.target, headers):
        return None
    return request.target, headers, parser.trailing_data[0]


class RelayFront:
    """The relay as a :class:`~phantom.proxy.Frontend`: the hub and the agents' sites."""

    ctx: ProxyContext
    sites: AgentSites

    def __init__(self, relay: RelayConfig) -> None:
        self.hub = Hub(relay)
        self.proxy: Proxy | None = None  # whose listeners' ports go in the public URLs

    def bind(self, ctx: ProxyContext) -> RelayFront:
        """The frontend of the proxy whose context is ``ctx`` (a
        :data:`~phantom.proxy.FrontendFactory`)."""
        self.ctx = ctx
        self.sites = AgentSites(ctx, self.hub)
        self.hub.events = self.sites
        return self

    def connection(self, tls: bool) -> asyncio.Protocol:
        return PublicConnection(self, tls)

    def public_url(self, name: str) -> str:
        assert self.proxy is not None and self.proxy.port is not None
        if self.proxy.https_port is not None:
            return self.hub.public_url(name, "https", self.proxy.https_port)
        return self.hub.public_url(name, "http", self.proxy.port)

    def close(self) -> None:
        self.hub.close()
        self.sites.close()


class RelayServer:
    """``phantom relay``: a :class:`~phantom.proxy.Proxy` whose frontend is a
    :class:`RelayFront`."""

    def __init__(self, config: Config) -> None:
        if config.relay is None:
            raise ValueError("phantom relay needs a config with a [relay] table")
        self.front = RelayFront(config.relay)
        self.proxy = Proxy(config, frontend=self.front.bind)
        self.front.proxy = self.proxy
        self.hub = self.front.hub

    @property
    def port(self) -> int | None:
        return self.proxy.port

    @property
    def ctx(self) -> ProxyContext:
        return self.front.ctx

    async def start(self) -> None:
        await self.proxy.start()
        log.info("relay for *.%s ready", self.hub.config.relay_domain)

    async def close(self) -> None:
        await self.proxy.close()
