"""The relay's listener: agents' handshakes, and public connections routed by ``Host``.

A public connection is routed by its first request's ``Host`` (``NAME.relay_domain``) and then
spliced, whole, to a data connection from that agent: keep-alive, pipelining, chunked bodies
and upgrades (WebSocket, HMR) pass unchanged, and after that first head nothing is parsed.
"""

from __future__ import annotations

import asyncio
import logging
import time

import h11

from ..checks import risky_settings
from ..clients import Hold, Shares, is_trusted
from ..config import Config, RelayConfig, host_port
from ..endpoint import Endpoint, EndpointClosed, ReadTimeout
from ..handshake import offered
from ..tls import listener_context
from ..tunnel import Tunnel
from . import protocol
from .hub import AgentUnavailable, Hub
from .protocol import answer, switching
from .registry import Refused, name_from_host

log = logging.getLogger("phantom.relay")


class RelayConnection(Endpoint):
    """One accepted connection: a public client, or an agent's control or data connection."""

    def __init__(self, server: RelayServer) -> None:
        super().__init__()
        self.server = server
        self.peer = "-"
        self.address = ""  # the peer's IP address, for its share of the connections
        # Its place in its address's share; given back when it turns out to be an agent's.
        self.hold: Hold | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        peer = transport.get_extra_info("peername")
        if peer:
            self.address = peer[0]
            self.peer = host_port(peer[0], peer[1])
        self.server.accepted(self)

    async def handle(self) -> None:
        config = self.server.config
        raw = await self._read_head(config.max_header_bytes, config.header_timeout)
        if raw is None:
            return
        parser = h11.Connection(h11.SERVER, max_incomplete_event_size=config.max_header_bytes)
        parser.receive_data(raw)
        try:
            request = parser.next_event()
        except h11.RemoteProtocolError:
            self._refuse(400, "malformed request")
            return
        if not isinstance(request, h11.Request):
            self._refuse(400, "malformed request")
            return
        headers = list(request.headers)
        path = request.target.split(b"?", 1)[0]
        if path in (protocol.CONTROL_PATH, protocol.DATA_PATH) and any(
            token.lower() == protocol.UPGRADE_TOKEN for token in offered(headers)
        ):
            if path == protocol.CONTROL_PATH:
                self._control(headers, parser.trailing_data[0])
            else:
                self._data(headers)
            return
        await self._public(headers, raw)

    async def _read_head(self, limit: int, timeout: float) -> bytes | None:
        raw = b""
        deadline = time.monotonic() + timeout
        while b"\r\n\r\n" not in raw:
            if len(raw) > limit:
                self._refuse(431, "request head too large")
                return None
            try:
                data = await self.read(max(deadline - time.monotonic(), 0.001))
            except ReadTimeout:
                self._refuse(408, "request head not received in time")
                return None
            if not data:
                self.close()
                return None
            raw += data
        return raw

    def _refuse(self, status: int, text: str) -> None:
        if not self.is_lost:
            self.transport.write(answer(status, text))
            self.close()

    # -- agents ------------------------------------------------------------------------------

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
        hub = self.server.hub
        session = hub.register(
            token.strip().decode("latin-1"),
            name.decode("latin-1"),
            int(warm) if warm.isdigit() else 0,
            self.peer,
        )
        if isinstance(session, Refused):
            self._refuse(session.status, session.reason)
            return
        self.release_hold()  # an agent's connections are not the public's
        url = self.server.public_url(session.name)
        self.transport.write(
            switching(
                (b"Phantom-Relay-Session", session.key.encode()),
                (b"Phantom-Relay-Url", url.encode()),
            )
        )
        self.server.forget(self)
        hub.attach(session, self.detach(), unread, url)

    def _refuse_agent(self, status: int, reason: str) -> None:
        log.warning("agent from %s refused: %s", self.peer, reason)
        self._refuse(status, reason)

    def _data(self, headers: list[tuple[bytes, bytes]]) -> None:
        name = protocol.header(headers, protocol.NAME_HEADER) or b""
        key = protocol.header(headers, protocol.SESSION_HEADER) or b""
        which = protocol.header(headers, protocol.CONNECTION_HEADER) or b""
        session = self.server.hub.session_for_data(name, key)
        if session is None:
            log.warning("data connection from %s refused: unknown session", self.peer)
            self._refuse(403, "unknown session")
            return
        problem = session.refusal(which)
        if problem is not None:
            self._refuse(409, problem)
            return
        self.release_hold()
        self.server.forget(self)
        self.transport.write(switching())
        session.take_data(self.detach(), which)

    # -- the public side ---------------------------------------------------------------------

    async def _public(self, headers: list[tuple[bytes, bytes]], raw: bytes) -> None:
        hub = self.server.hub
        host = protocol.header(headers, b"host") or b""
        name = name_from_host(host, hub.config.relay_domain)
        session = hub.lookup(name) if name is not None else None
        if session is None:
            if name is not None and hub.reserved(name):
                log.warning("%s: agent %s offline: 502", self.peer, name)
                self._page(502, "agent offline")
            else:
                self._page(404, "no such agent")
            return
        try:
            conn = await session.open(self.server.config.backend_connect_timeout)
        except AgentUnavailable as exc:
            log.warning("%s: agent %s: %s: %d", self.peer, name, exc.reason, exc.status)
            self._page(exc.status, "agent offline" if exc.status == 502 else "agent busy")
            return
        self.server.splice(self, raw, conn, session.name)

    def _page(self, status: int, title: str) -> None:
        if not self.is_lost:
            self.transport.write(answer(status, title, html=True))
            self.close()

    def release_hold(self) -> None:
        if self.hold is not None:
            self.hold.release()

    def connection_lost(self, exc: Exception | None) -> None:
        super().connection_lost(exc)
        self.release_hold()
        self.server.forget(self)


class RelayServer:
    """``phantom relay``: the listener(s), the hub and the tunnels."""

    def __init__(self, config: Config) -> None:
        if config.relay is None:
            raise ValueError("RelayServer needs a config with a [relay] table")
        self.config = config
        self.relay: RelayConfig = config.relay
        self.hub = Hub(self.relay)
        self._tls = listener_context(config)
        self._servers: list[asyncio.Server] = []
        self._handlers: dict[RelayConnection, asyncio.Task[None]] = {}
        self._shares = Shares()  # max_connections_per_client
        self.tunnels: set[Tunnel] = set()
        self.port: int | None = None
        self.https_port: int | None = None

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        config = self.config
        server = await loop.create_server(
            lambda: RelayConnection(self), config.listen, config.http_port, reuse_address=True
        )
        self._servers.append(server)
        self.port = server.sockets[0].getsockname()[1]
        if self._tls is not None:
            assert config.https_port is not None
            tls_server = await loop.create_server(
                lambda: RelayConnection(self),
                config.listen,
                config.https_port,
                ssl=self._tls,
                reuse_address=True,
            )
            self._servers.append(tls_server)
            self.https_port = tls_server.sockets[0].getsockname()[1]
        for warning in risky_settings(config):
            log.warning("%s", warning)
        log.info(
            "relay for *.%s listening on %s",
            self.relay.relay_domain,
            " and ".join(
                f"{scheme}://{host_port(config.listen, port)}"
                for scheme, port in (("http", self.port), ("https", self.https_port))
                if port is not None
            ),
        )

    def public_url(self, name: str) -> str:
        if self.https_port is not None:
            return self.hub.public_url(name, "https", self.https_port)
        assert self.port is not None
        return self.hub.public_url(name, "http", self.port)

    def accepted(self, conn: RelayConnection) -> None:
        config = self.config
        limit = config.max_connections
        if limit and len(self._handlers) + len(self.tunnels) >= limit:
            log.warning("%s: %d connections open: refused", conn.peer, limit)
            conn.abort()
            return
        if not is_trusted(conn.address, config.trusted_proxies):
            conn.hold = self._shares.take(conn.address, config.max_connections_per_client)
            if conn.hold is None:
                log.warning(
                    "%s: %d connections from %s open: refused",
                    conn.peer,
                    config.max_connections_per_client,
                    conn.address,
                )
                conn.transport.write(answer(503, "too many connections from your address"))
                conn.close()
                return
        self._handlers[conn] = asyncio.ensure_future(self._handle(conn))

    async def _handle(self, conn: RelayConnection) -> None:
        try:
            await conn.handle()
        except EndpointClosed:
            conn.abort()  # the peer went while we answered: nothing more to say

    def forget(self, conn: RelayConnection) -> None:
        """``conn`` is no longer a connection being answered (spliced, upgraded or gone)."""
        self._handlers.pop(conn, None)

    def splice(self, client: RelayConnection, head: bytes, data: Endpoint, name: str) -> None:
        client.put_back(head)
        self.forget(client)
        client_state = client.detach()
        data_state = data.detach()

        def closed(tunnel: Tunnel) -> None:
            self.tunnels.discard(tunnel)
            client.release_hold()

        tunnel = Tunnel(
            client_state,
            data_state,
            label=f"{client.peer} -> agent {name}",
            on_close=closed,
            idle_timeout=self.config.tunnel_idle_timeout,
        )
        self.tunnels.add(tunnel)
        tunnel.start(client_state, data_state)

    async def close(self) -> None:
        for server in self._servers:
            server.close()
        self.hub.close()
        for task in list(self._handlers.values()):
            task.cancel()
        for conn in list(self._handlers):
            conn.abort()
        for tunnel in list(self.tunnels):
            tunnel.close()
        for server in self._servers:
            await server.wait_closed()
        self._servers.clear()
