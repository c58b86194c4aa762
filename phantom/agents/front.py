"""The relay's frontend: agents' handshakes, and public connections handed to phantom.

Every connection the relay accepts is a phantom client connection from the start. Its first
head pins it to the agent whose name its ``Host`` carries (``NAME.relay_domain``): routing,
stages, the cache, the access log, metrics and limits all apply, and the agent's data
connections are the site's backend. A request that upgrades to ``phantom-relay/1`` at one of
the protocol's paths is an agent's control or data connection instead, taken over by the
:class:`~.hub.Hub`.
"""

from __future__ import annotations

import asyncio
import logging

import h11

from .. import framing
from ..config import Config, RelayConfig, host_port
from ..connection import ClientConnection
from ..context import ProxyContext
from ..endpoint import DetachedState
from ..errors import RequestRejected
from ..handshake import offered
from ..proxy import Proxy
from ..routing import request_host
from . import protocol
from .hub import Hub
from .protocol import answer, switching
from .registry import Refused, name_from_host, name_from_path
from .sites import AgentSites

log = logging.getLogger("phantom.relay")


class PublicConnection(ClientConnection):
    """A connection the relay accepted: a phantom client connection like any other, pinned at
    its first head to the agent that head's ``Host`` names; or, when a request is an upgrade to
    ``phantom-relay/1`` at one of the handshake paths, an agent's control or data connection,
    taken over by the :class:`~.hub.Hub`.

    One object from the accept on, so a public connection costs the relay what it costs
    phantom serve, plus one scan of its first head (the relay's share of a new connection's
    first byte, which the issue bounds by a round trip)."""

    def __init__(self, front: RelayFront, tls: bool) -> None:
        super().__init__(front.ctx, tls=tls)
        self.front = front
        config = self.config
        # Until the first head is whole (then None): what picks the agent.
        self.first: framing.HeadScanner | None = framing.HeadScanner(
            config.max_request_line, config.max_header_bytes
        )

    def data_received(self, data: bytes) -> None:
        first = self.first
        if first is not None:
            first.feed(data)
            try:
                head = first.head()
            except RequestRejected:
                # phantom's own reading of the head refuses it, with the same status.
                head = b""
            if head is not None:
                self.first = None
                if head and not self._pin(head):
                    return
        super().data_received(data)

    def _pin(self, head: bytes) -> bool:
        """Pin the connection to the agent ``head`` names; False when it was refused instead.

        One for an agent stays with it: a request on it for another Host is a 404, never
        another agent's. Any other goes to the relay file's own [server.NAME] tables."""
        front = self.front
        relay = front.hub.config
        host = protocol.host_field(head)
        name = name_from_host(host or b"", relay.relay_domain)
        if name is None and relay.relay_path_mode and request_host(host) == relay.relay_domain:
            name = name_from_path(protocol.request_path(head))
        router = front.sites.router_for(name) if name is not None else None
        if router is not None:
            self.router = router
        elif not self.config.servers and not protocol.is_agent_path(head):
            self.transport.write(answer(404, "no such agent", html=True))
            self.close()
            return False
        return True

    async def _handle(self, request: h11.Request) -> str:
        if request.target.split(b"?", 1)[0] in (
            protocol.CONTROL_PATH,
            protocol.DATA_PATH,
        ) and any(token.lower() == protocol.UPGRADE_TOKEN for token in offered(request.headers)):
            return self._agent(request)
        # Anything else at those paths is a public request like any other.
        return await super()._handle(request)

    # -- agents ------------------------------------------------------------------------------

    def _agent(self, request: h11.Request) -> str:
        """An agent's handshake: "tunnel" when the hub took the connection over, "close"
        when it was refused."""
        if self.hold is not None:  # an agent's connections are not their address's
            self.hold.release()
            self.hold = None
        headers = list(request.headers)
        if request.target.startswith(protocol.CONTROL_PATH):
            return self._control(headers)
        return self._data(headers)

    @property
    def _peer(self) -> str:
        peer = self.transport.get_extra_info("peername")
        return host_port(peer[0], peer[1]) if peer else "-"

    def _refuse_agent(self, status: int, reason: str, *, warn: bool = True) -> str:
        if warn:
            log.warning("agent from %s refused: %s", self._peer, reason)
        self.exchange.refusal = reason
        self._respond_plain(status, reason.encode() + b"\n", close=True)
        return "close"

    def _taken_over(self) -> DetachedState:
        """The transport, with what the agent sent after its head, for the hub."""
        state = self.detach()
        state.unread = self.h11.trailing_data[0] + state.unread
        return state

    def _control(self, headers: list[tuple[bytes, bytes]]) -> str:
        authorization = protocol.header(headers, b"authorization") or b""
        scheme, _, token = authorization.partition(b" ")
        name = protocol.header(headers, protocol.NAME_HEADER)
        if scheme.lower() != b"bearer" or not token.strip():
            return self._refuse_agent(401, "missing Authorization: Bearer TOKEN")
        if name is None:
            return self._refuse_agent(400, "missing Phantom-Relay-Name")
        warm = protocol.header(headers, protocol.WARM_HEADER) or b"0"
        hub = self.front.hub
        session = hub.register(
            token.strip().decode("latin-1"),
            name.decode("latin-1"),
            int(warm) if warm.isdigit() else 0,
            protocol.header(headers, protocol.CACHE_HEADER) == b"on",
            self._peer,
        )
        if isinstance(session, Refused):  # (the hub logged why)
            return self._refuse_agent(session.status, session.reason, warn=False)
        self.transport.write(switching((b"Phantom-Relay-Session", session.key.encode())))
        state = self._taken_over()
        unread, state.unread = state.unread, b""
        hub.attach(session, state, unread, self.front.public_url(session.name))
        return "tunnel"

    def _data(self, headers: list[tuple[bytes, bytes]]) -> str:
        name = protocol.header(headers, protocol.NAME_HEADER) or b""
        key = protocol.header(headers, protocol.SESSION_HEADER) or b""
        which = protocol.header(headers, protocol.CONNECTION_HEADER) or b""
        session = self.front.hub.session_for_data(name, key)
        if session is None:
            log.warning("data connection from %s refused: unknown session", self._peer)
            return self._refuse_agent(403, "unknown session", warn=False)
        problem = session.refusal(which)
        if problem is not None:
            return self._refuse_agent(409, problem, warn=False)
        self.transport.write(switching())
        session.take_data(self._taken_over(), which)
        return "tunnel"


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
