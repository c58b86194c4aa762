"""The relay's frontend: agents' handshakes, and public connections handed to phantom.

Every connection the relay accepts starts here. Its first request head says what it is: an
agent's control or data connection (an upgrade to ``phantom-relay/1`` at one of the protocol's
paths), taken over by the :class:`~.hub.Hub`; or a public client, whose ``Host`` names an agent
(``NAME.relay_domain``). A public connection becomes an ordinary phantom client connection,
head included, pinned to that agent's site: routing, stages, the cache, the access log,
metrics and limits all apply, and the agent's data connections are the site's backend.
"""

from __future__ import annotations

import asyncio
import logging

import h11

from .. import framing
from ..clients import Hold, is_trusted
from ..config import Config, RelayConfig, host_port
from ..connection import ClientConnection
from ..context import ProxyContext
from ..endpoint import Endpoint, hand_over
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


class RelayConnection(Endpoint):
    """One accepted connection until its first head says whose it is. Decided in the callback
    that completes the head: no task, no wait beyond the head's own bytes."""

    def __init__(self, front: RelayFront, tls: bool) -> None:
        super().__init__()
        self.front = front
        self.tls = tls
        self.peer = "-"
        self.address = ""
        config = front.ctx.config
        self.scanner = framing.HeadScanner(config.max_request_line, config.max_header_bytes)
        self.decided = False
        self.timer: asyncio.TimerHandle | None = None
        # Its place in its address's share of the connections while it waits here.
        self.hold: Hold | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        peer = transport.get_extra_info("peername")
        if peer:
            self.address = str(peer[0])
            self.peer = host_port(peer[0], peer[1])
        if self.front.accepted(self):
            loop = asyncio.get_running_loop()
            self.timer = loop.call_later(self.front.ctx.config.header_timeout, self._too_slow)
        else:
            self.decided = True  # turned away: what it sends now is not looked at

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        if self.decided:
            return
        self.scanner.feed(data)
        try:
            head = self.scanner.head()
        except RequestRejected as exc:
            self._decided()
            self._refuse(exc.status, exc.reason)
            return
        if head is not None:
            self._decided()
            if protocol.is_agent_path(head):
                self._agent()
            else:
                self._public(protocol.host_field(head), protocol.request_path(head))

    def eof_received(self) -> bool:
        super().eof_received()
        if not self.decided:  # gone before saying anything whole
            self._decided()
            self.close()
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        super().connection_lost(exc)
        self._decided()

    def _decided(self) -> None:
        """Nothing more for this connection to wait for here."""
        self.decided = True
        if self.timer is not None:
            self.timer.cancel()
        self.front.forget(self)

    def _too_slow(self) -> None:
        self._decided()
        self._refuse(408, "request head not received in time")

    def _refuse(self, status: int, text: str, *, html: bool = False) -> None:
        if not self.is_lost:
            self.transport.write(answer(status, text, html=html))
            self.close()

    # -- agents ------------------------------------------------------------------------------

    def _agent(self) -> None:
        """A head at one of the handshake paths: an agent's, if it upgrades to our protocol
        (anything else there is a public request like any other)."""
        raw = self.take_unread()
        parser = h11.Connection(h11.SERVER)
        parser.receive_data(raw)
        try:
            request = parser.next_event()
        except h11.RemoteProtocolError:
            request = None
        if not isinstance(request, h11.Request) or not any(
            token.lower() == protocol.UPGRADE_TOKEN for token in offered(request.headers)
        ):
            self.put_back(raw)
            self._public(protocol.host_field(raw), protocol.request_path(raw))
        elif request.target.startswith(protocol.CONTROL_PATH):
            self._control(list(request.headers), parser.trailing_data[0])
        else:
            self._data(list(request.headers))

    def _refuse_agent(self, status: int, reason: str) -> None:
        log.warning("agent from %s refused: %s", self.peer, reason)
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
        warm = protocol.header(headers, protocol.WARM_HEADER) or b"0"
        hub = self.front.hub
        session = hub.register(
            token.strip().decode("latin-1"),
            name.decode("latin-1"),
            int(warm) if warm.isdigit() else 0,
            protocol.header(headers, protocol.CACHE_HEADER) == b"on",
            self.peer,
        )
        if isinstance(session, Refused):
            self._refuse(session.status, session.reason)
            return
        self.transport.write(switching((b"Phantom-Relay-Session", session.key.encode())))
        hub.attach(session, self.detach(), unread, self.front.public_url(session.name))

    def _data(self, headers: list[tuple[bytes, bytes]]) -> None:
        name = protocol.header(headers, protocol.NAME_HEADER) or b""
        key = protocol.header(headers, protocol.SESSION_HEADER) or b""
        which = protocol.header(headers, protocol.CONNECTION_HEADER) or b""
        session = self.front.hub.session_for_data(name, key)
        if session is None:
            log.warning("data connection from %s refused: unknown session", self.peer)
            self._refuse(403, "unknown session")
            return
        problem = session.refusal(which)
        if problem is not None:
            self._refuse(409, problem)
            return
        self.transport.write(switching())
        session.take_data(self.detach(), which)

    # -- the public side ---------------------------------------------------------------------

    def _public(self, host: bytes | None, path: bytes) -> None:
        front = self.front
        relay = front.hub.config
        name = name_from_host(host or b"", relay.relay_domain)
        if name is None and relay.relay_path_mode and request_host(host) == relay.relay_domain:
            name = name_from_path(path)
        router = front.sites.router_for(name) if name is not None else None
        if router is None and not front.ctx.config.servers:
            self._refuse(404, "no such agent", html=True)
            return
        # The connection becomes phantom's, what it sent so far unread again. One for an
        # agent stays with it: a request on it for another Host is a 404, never another
        # agent's. Any other goes to the relay file's own [server.NAME] tables.
        client = ClientConnection(front.ctx, tls=self.tls)
        if router is not None:
            client.router = router
        hand_over(self.detach(), client)


class RelayFront:
    """The relay as a :class:`~phantom.proxy.Frontend`: the hub, the agents' sites, and the
    connections not yet known to be an agent's or the public's."""

    ctx: ProxyContext
    sites: AgentSites

    def __init__(self, relay: RelayConfig) -> None:
        self.hub = Hub(relay)
        self.pending: set[RelayConnection] = set()
        self.proxy: Proxy | None = None  # whose listeners' ports go in the public URLs

    def bind(self, ctx: ProxyContext) -> RelayFront:
        """The frontend of the proxy whose context is ``ctx`` (a
        :data:`~phantom.proxy.FrontendFactory`)."""
        self.ctx = ctx
        self.sites = AgentSites(ctx, self.hub)
        self.hub.events = self.sites
        return self

    def connection(self, tls: bool) -> asyncio.Protocol:
        return RelayConnection(self, tls)

    def accepted(self, conn: RelayConnection) -> bool:
        """Whether ``conn`` may wait here for its first head (False: it was turned away)."""
        config = self.ctx.config
        limit = config.max_connections
        if limit and len(self.pending) + len(self.ctx.connections) >= limit:
            log.warning("%s: %d connections open: refused", conn.peer, limit)
            conn.abort()
            return False
        if not is_trusted(conn.address, config.trusted_proxies):
            conn.hold = self.ctx.client_connections.take(
                conn.address, config.max_connections_per_client
            )
            if conn.hold is None:
                log.warning(
                    "%s: %d connections from %s open: refused",
                    conn.peer,
                    config.max_connections_per_client,
                    conn.address,
                )
                conn.transport.write(answer(503, "too many connections from your address"))
                conn.close()
                return False
        self.pending.add(conn)
        return True

    def forget(self, conn: RelayConnection) -> None:
        """``conn`` is no longer waiting here (handed over, answered or gone): an agent's
        connections do not count as their address's, a public one counts as phantom's."""
        self.pending.discard(conn)
        if conn.hold is not None:
            conn.hold.release()

    def public_url(self, name: str) -> str:
        assert self.proxy is not None and self.proxy.port is not None
        if self.proxy.https_port is not None:
            return self.hub.public_url(name, "https", self.proxy.https_port)
        return self.hub.public_url(name, "http", self.proxy.port)

    def close(self) -> None:
        self.hub.close()
        self.sites.close()
        for conn in list(self.pending):
            conn.abort()


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
