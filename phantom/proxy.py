"""The running proxy: listener, live connections, graceful shutdown, reload. The library entry
point."""

from __future__ import annotations

import asyncio
import logging
import os
import resource
from collections.abc import Callable, Mapping
from types import TracebackType
from typing import TYPE_CHECKING, Any, Protocol

from .access_log import AccessLog
from .backend_routes import add_backend_routes
from .balancing import Balancer
from .cache.policy import KeyFunction
from .checks import risky_settings
from .config import Config, config_from_dict, host_port, keep_restart_keys, load_config
from .connection import ClientConnection
from .context import CacheGroup, ProxyContext, Site, build_verifier
from .control import ControlRequest, ControlResponse, ControlServer
from .descriptors import open_file_limit
from .errors import ConfigError, PhantomError, SnapshotError
from .launcher import Launcher, launchers_for, start_all, stop_all
from .metrics import CONTENT_TYPE, Gauges
from .operations import add_operation_routes
from .routing import Router
from .tls import listener_context
from .workers import WorkerSeat

if TYPE_CHECKING:
    from .jwtauth import Verifier

log = logging.getLogger("phantom")

#: Re-reads the configuration for a reload; raises ConfigError when the new one is invalid.
ConfigLoader = Callable[[], Config]


class Frontend(Protocol):
    """What an accepted connection is before it is phantom's: the default makes each one a
    :class:`ClientConnection` at once; ``phantom relay`` first tells agents from the public."""

    def connection(self, tls: bool) -> asyncio.Protocol:
        """The protocol of a connection just accepted (``tls``: on the HTTPS listener)."""
        ...

    def close(self) -> None:
        """The proxy has stopped (after the drain)."""
        ...


#: Makes the proxy's frontend, given the context its connections share.
FrontendFactory = Callable[[ProxyContext], Frontend]


class _Clients:
    """The default frontend: every accepted connection is a client connection."""

    def __init__(self, ctx: ProxyContext) -> None:
        self.ctx = ctx

    def connection(self, tls: bool) -> asyncio.Protocol:
        return ClientConnection(self.ctx, tls=tls)

    def close(self) -> None:
        pass

# During a graceful shutdown a tunnel that moves no byte for this long is closed. phantom can't
# see a WebSocket's messages, so a pause is the only sign that none is half-way through; and a
# session that is merely open (an idle WebSocket, a dev server's HMR socket) never ends on its
# own, so waiting for it would hold every Ctrl-C for the whole shutdown_timeout. A tunnel that
# keeps moving bytes is given the full shutdown_timeout, as a request in flight is.
TUNNEL_QUIET_SECONDS = 1.0



async def _start_keys(verifier: Verifier | None, config: Config) -> None:
    """Get ``[jwt]``'s keys before serving (a JWKS is fetched). Raises ConfigError naming
    the key when a JWKS that is required can't be fetched."""
    if verifier is None or config.jwt is None:
        return
    try:
        await verifier.keys.start(required=not config.jwt.jwks_optional_at_start)
    except PhantomError as exc:
        problem = f"{exc} (jwks_optional_at_start = true starts without it)"
        raise ConfigError(config.source, "jwt.jwks_url", problem) from None


class Proxy:
    """A phantom instance. ``await start()`` binds; ``close()`` drains and stops.

    ``async with create_proxy(cfg) as proxy:`` starts on entry and closes on exit.
    """

    def __init__(
        self,
        config: Config,
        cache_key: KeyFunction | None = None,
        loader: ConfigLoader | None = None,
        frontend: FrontendFactory = _Clients,
        worker: WorkerSeat | None = None,
    ) -> None:
        """``worker``: this proxy is one worker of ``workers = N``, in this seat."""
        self.config = config
        self._loader = loader
        self._cache_key = cache_key
        # TLS files are read here, so a bad one fails before anything is bound.
        self._tls = listener_context(config)
        self._ctx = ProxyContext.build(config, cache_key)
        self._frontend = frontend(self._ctx)
        self.cache = CacheGroup(self._ctx.sites)
        self._server: asyncio.Server | None = None
        self._tls_server: asyncio.Server | None = None
        self._closed: asyncio.Event | None = None
        self._closing: asyncio.Task[None] | None = None
        self._hurry = asyncio.Event()  # set by hurry(): the drain stops waiting
        self.worker = worker
        self.port: int | None = None
        # The servers' execute commands, by server name; a worker's run in the supervisor.
        self.launchers: Mapping[str, Launcher] = {} if worker else launchers_for(config)
        self.https_port: int | None = None  # the bound TLS port, when https_port is set
        self.control: ControlServer | None = None
        if worker is not None:
            if worker.control_socket is not None:
                # The supervisor serves control_port and checks the token; it reaches this
                # worker here.
                self.control = ControlServer("", 0, None, path=worker.control_socket)
                self._add_control_routes(self.control)
        elif config.control_port is not None:
            self.control = ControlServer(
                config.control_listen, config.control_port, config.control_auth
            )
            self._add_control_routes(self.control)

    @property
    def control_port(self) -> int | None:
        """The bound control API port, or None when the control API is off."""
        return None if self.control is None else self.control.port

    @property
    def servers(self) -> Mapping[str, Site]:
        """The sites by server name: ``proxy.servers["api"].cache.invalidate("GET:/x*")``."""
        return self._ctx.sites

    @property
    def open_connections(self) -> int:
        """Client connections being served now (tunnels not included)."""
        return len(self._ctx.connections)

    @property
    def open_tunnels(self) -> int:
        return len(self._ctx.tunnels)

    async def start(self) -> None:
        if self._server is not None:
            raise RuntimeError("proxy already started")
        loop = asyncio.get_running_loop()
        front = self._frontend
        await start_all(self.launchers)
        try:
            await _start_keys(self._ctx.verifier, self.config)
            if self._ctx.redis is not None:
                # Never fails: a Redis that is away is retried in the background.
                await self._ctx.redis.start()
            for site in self._ctx.sites.values():
                site.backends.start()  # health checks
            await self._pre_generate()
            self._closed = asyncio.Event()
            if self.worker is not None and self.control is not None:
                # Before the listener: a worker that holds a cache is always reachable for
                # an invalidation.
                await self.control.start()
            self._server = await loop.create_server(
                lambda: front.connection(False),
                self.config.listen,
                self.config.http_port,
                reuse_address=True,
                # Worker processes (``workers = N``) each bind the same port; the kernel spreads
                # new connections over them.
                reuse_port=self.config.workers > 1 or None,
                backlog=1024,
            )
            self.port = self._server.sockets[0].getsockname()[1]
            if self._tls is not None:
                assert self.config.https_port is not None
                self._tls_server = await loop.create_server(
                    lambda: front.connection(True),
                    self.config.listen,
                    self.config.https_port,
                    ssl=self._tls,
                    reuse_address=True,
                    reuse_port=self.config.workers > 1 or None,
                    backlog=1024,
                )
                self.https_port = self._tls_server.sockets[0].getsockname()[1]
            if self.control is not None and self.worker is None:
                await self.control.start()
        except BaseException:
            if self._server is not None:
                self._server.close()
            if self._tls_server is not None:
                self._tls_server.close()
            await self._release()
            raise
        for warning in risky_settings(self.config):
            log.warning("%s", warning)
        urls = [f"http://{host_port(self.config.listen, self.port)}"]
        if self.https_port is not None:
            urls.append(f"https://{host_port(self.config.listen, self.https_port)}")
        log.info(
            "listening on %s -> %s",
            " and ".join(urls),
            ", ".join(
                f"{s.name}: {' '.join(str(b.url) for b in s.pool)}" for s in self.config.servers
            ),
        )

    async def _pre_generate(self) -> None:
        """Fetch every pre-generate server's snapshots before the listener opens: a site must
        never be served half-built. Raises SnapshotError naming what failed."""
        sites = [site for site in self._ctx.sites.values() if site.config.pre_generate]
        results = await asyncio.gather(*(s.pre_generate() for s in sites), return_exceptions=True)
        failures = [r for r in results if isinstance(r, BaseException)]
        if failures:
            raise failures[0]

    async def reload(self) -> Config:
        """Re-read the configuration (SIGHUP, ``POST /reload``) and use it for new connections.

        Connections and tunnels already open keep the settings they started with. An invalid
        new configuration raises ConfigError (a failed pre-generate fetch SnapshotError) and
        the running one stays.
        """
        if self._loader is None:
            raise ConfigError(self.config.source, "<reload>", "no configuration file to re-read")
        old = self.config
        new, changed = keep_restart_keys(self._loader(), old)
        for key in changed:
            log.warning("reload: %s changed; it takes effect after a restart", key)
        launched = {s.name: (s.execute, s.execute_dir) for s in old.servers}
        for server in new.servers:
            if launched.get(server.name, (None, None)) != (server.execute, server.execute_dir):
                log.warning("reload: server.%s.execute changed; it takes effect after a restart",
                            server.name)
        ctx = self._ctx
        # Checked before anything changes: a bad certificate keeps the running configuration.
        tls_files = (new.cert_path, new.key_path)
        if self._tls is not None and None not in tls_files:
            listener_context(new)  # raises ConfigError naming the file
        verifier = ctx.verifier
        if new.jwt != old.jwt:
            # New keys are fetched before anything changes: a JWKS that can't be is an error.
            verifier = build_verifier(new.jwt)
            await _start_keys(verifier, new)
        sites = {}
        built: list[Site] = []
        try:
            for server in new.servers:
                site = ctx.sites.get(server.name)
                if (
                    site is None
                    or site.config != server
                    or site.verifier is not verifier
                    or _site_root_keys(new) != _site_root_keys(old)
                ):
                    # A changed site starts with fresh pools and cache (an unchanged one keeps
                    # both); its backends keep what is known of them (health, breaker, load).
                    site = Site.build(
                        server, new, self._cache_key, ctx.redis, verifier, previous=site
                    )
                    built.append(site)
                    if server.pre_generate:
                        await site.pre_generate()
                sites[server.name] = site
        except BaseException:
            for site in built:
                await site.close_pools()
            raise
        access_log = AccessLog.from_config(new)
        if self._tls is not None and new.cert_path is not None and new.key_path is not None:
            # In place: the listener holds this context; new handshakes use the new files.
            self._tls.load_cert_chain(new.cert_path, new.key_path)
        if ctx.access_log is not None:
            ctx.access_log.close()
        ctx.access_log = access_log  # reopened: logrotate may send SIGHUP instead of waiting
        # In place: the cache group and the control routes hold this mapping; each open
        # connection holds its own copy.
        replaced = [site for name, site in ctx.sites.items() if sites.get(name) is not site]
        for site in built:
            site.backends.take_over()  # backends removed from a server start draining
            site.backends.start()
        ctx.sites.clear()
        ctx.sites.update(sites)
        for site in replaced:
            # Its health checks stop and its idle pooled connections go now; connections in
            # use finish their exchange first.
            await site.close_pools()
        ctx.router = Router(new.servers)
        if verifier is not ctx.verifier and ctx.verifier is not None:
            await ctx.verifier.keys.close()
        ctx.verifier = verifier
        ctx.config = self.config = new
        ctx.descriptors.set_limit(open_file_limit())  # raised meanwhile with prlimit, say
        log.info("configuration reloaded from %s", new.source)
        return new

    async def serve_forever(self) -> None:
        """Wait until the proxy is closed (by ``close()`` or a signal handler calling it)."""
        if self._closed is None:
            raise RuntimeError("proxy not started")
        await self._closed.wait()

    async def close(self) -> None:
        """Stop accepting, let in-flight requests and busy tunnels finish within
        ``shutdown_timeout`` (a tunnel quiet for ``TUNNEL_QUIET_SECONDS`` is closed), then
        close whatever is left. Safe to call more than once."""
        if self._server is None:
            return
        if self._closing is None:
            self._closing = asyncio.ensure_future(self._shutdown(self._server))
        await asyncio.shield(self._closing)

    def hurry(self) -> None:
        """Cut the drain of a graceful close short (a second Ctrl-C): whatever is still open
        is closed at once. Before ``close()`` it makes the close skip the drain."""
        self._hurry.set()

    async def _shutdown(self, server: asyncio.Server) -> None:
        ctx = self._ctx
        server.close()
        if self._tls_server is not None:
            self._tls_server.close()
        ctx.draining = True
        for conn in list(ctx.connections):
            if conn.idle:
                conn.close()
        if not await self._drain():
            log.warning(
                "shutdown: %s; closing what is left now (connections: %d, tunnels: %d)",
                "forced" if self._hurry.is_set()
                else f"not done after shutdown_timeout ({self.config.shutdown_timeout:g}s)",
                len(ctx.connections),
                len(ctx.tunnels),
            )
        cancelled: list[asyncio.Task[None]] = []
        for site in ctx.sites.values():
            cancelled.extend(site.background)
        for tunnel in list(ctx.tunnels):
            tunnel.abort()
        for conn in list(ctx.connections):
            conn.abort()
            cancelled.append(conn.finished)
        for task in cancelled:
            task.cancel()
        # Let the cancelled tasks unwind before the loop may close.
        await asyncio.gather(*cancelled, return_exceptions=True)
        if ctx.access_log is not None:
            ctx.access_log.close()
        await server.wait_closed()
        if self._tls_server is not None:
            await self._tls_server.wait_closed()
        self._frontend.close()
        await self._release()  # after the drain: the last responses were shared, and served
        assert self._closed is not None
        self._closed.set()

    async def _release(self) -> None:
        """Give back what ``start`` took besides the listeners, after a failed start or at the
        end of a shutdown: the sites' pools and webhooks, Redis, the control listener, the JWKS
        refresh, and last the backends phantom started (they served what was drained)."""
        ctx = self._ctx
        for site in ctx.sites.values():
            await site.close_pools()
            site.webhooks.close()
        if ctx.redis is not None:
            await ctx.redis.close()
        if self.control is not None:
            await self.control.close()
        if ctx.verifier is not None:
            await ctx.verifier.keys.close()
        await stop_all(self.launchers)

    async def _drain(self) -> bool:
        """Wait until no connection and no tunnel is left (True), closing the tunnels that go
        quiet; False when ``shutdown_timeout`` ran out or ``hurry()`` was called first."""
        ctx = self._ctx
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.config.shutdown_timeout
        idle = asyncio.ensure_future(ctx.wait_idle())
        hurry = asyncio.ensure_future(self._hurry.wait())
        moved = ctx.close_quiet_tunnels({})
        try:
            while True:
                step = min(deadline - loop.time(), TUNNEL_QUIET_SECONDS)
                if step <= 0:
                    return False
                done, _ = await asyncio.wait(
                    {idle, hurry}, timeout=step, return_when=asyncio.FIRST_COMPLETED
                )
                if idle in done:
                    return True
                if done or step < TUNNEL_QUIET_SECONDS:
                    return False  # hurried, or shutdown_timeout is over
                moved = ctx.close_quiet_tunnels(moved)  # a whole quiet period has passed
        finally:
            idle.cancel()
            hurry.cancel()

    def _add_control_routes(self, control: ControlServer) -> None:
        async def healthz(_: ControlRequest) -> ControlResponse:
            return ControlResponse.json(200, {"status": "ok"})

        async def reload(_: ControlRequest) -> ControlResponse:
            try:
                config = await self.reload()
            except (ConfigError, SnapshotError) as err:
                log.error("reload failed, keeping the running configuration: %s", err)
                return ControlResponse.json(400, {"error": str(err)})
            return ControlResponse.json(200, {"reloaded": config.source})

        async def metrics(_: ControlRequest) -> ControlResponse:
            return ControlResponse(200, self.metrics_text().encode(), CONTENT_TYPE)

        control.route("GET", "/healthz", healthz, public=True)
        control.route("POST", "/reload", reload)
        control.route("GET", "/metrics", metrics)
        add_operation_routes(control, self._ctx.sites)
        add_backend_routes(control, self._balancers)

    def _balancers(self) -> dict[str, Balancer]:
        """The running configuration's balancers, by server name."""
        return {name: site.backends.balancer for name, site in self._ctx.sites.items()}

    def metrics_text(self) -> str:
        """The Prometheus exposition served by ``GET /metrics``."""
        ctx = self._ctx
        open_up = sum(t.client_to_backend for t in ctx.tunnels)
        open_down = sum(t.backend_to_client for t in ctx.tunnels)
        sites = ctx.sites
        return ctx.metrics.render(
            Gauges(
                connections_open=len(ctx.connections),
                tunnels_open=len(ctx.tunnels),
                open_tunnel_bytes={"client_to_backend": open_up, "backend_to_client": open_down},
                cache_entries={name: len(site.cache) for name, site in sites.items()},
                cache_bytes={name: site.cache.total_bytes for name, site in sites.items()},
                open_fds=_open_fds(),
                max_fds=resource.getrlimit(resource.RLIMIT_NOFILE)[0],
                redis_up=None if ctx.redis is None else int(ctx.redis.up),
                redis_errors=0 if ctx.redis is None else ctx.redis.errors,
                balancers=self._balancers(),
            )
        )

    async def __aenter__(self) -> Proxy:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()


def _open_fds() -> int | None:
    try:
        return len(os.listdir("/proc/self/fd"))
    except OSError:
        return None  # not Linux


def create_proxy(
    config: Config | Mapping[str, Any] | str | os.PathLike[str],
    *,
    cache_key: KeyFunction | None = None,
) -> Proxy:
    """A Proxy from a Config, a dict shaped like ``phantom.toml``, or a path to a TOML file.

    ``cache_key``: ``fn(RequestInfo) -> str`` replacing the default cache key
    (``"GET:/path?query"`` per host); ``proxy.cache.invalidate(pattern)`` matches its result.
    Only a proxy made from a path can ``reload()``: it re-reads that file.
    """
    if isinstance(config, Config):
        return Proxy(config, cache_key)
    if isinstance(config, Mapping):
        return Proxy(config_from_dict(config), cache_key)
    return Proxy(load_config(config), cache_key, loader=lambda: load_config(config))


def _site_root_keys(config: Config) -> tuple[object, ...]:
    """The root keys a :class:`Site` is built from besides its server table (the verifier
    and Redis are compared on their own): a reload that changes one rebuilds every site."""
    return (config.backend_connect_timeout, config.backend_timeout, config.trusted_proxies)
