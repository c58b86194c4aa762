"""What every client connection of one running proxy shares: its sites, router and live set."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol

from cachetools import TTLCache

from . import headers as hdr
from .access_log import AccessLog
from .balancing.pool import BackendPool
from .cache import policy
from .cache.disk import DiskBodies
from .cache.policy import KeyFunction
from .cache.rules import CacheRules, parse_path_rule
from .cache.shared import SharedStore
from .cache.store import CachedResponse, CacheStore, Key
from .clients import Hold, Shares
from .config import Config, JwtConfig, Network, ServerConfig
from .descriptors import DescriptorWatch, open_file_limit
from .endpoint import DetachedState
from .errors import PhantomError, SnapshotError
from .exchange import Exchange
from .fallback import Fallback
from .metrics import Metrics
from .redis_link import RedisLink
from .routing import Router
from .snapshots import Snapshots, gather_each
from .stages import Stages
from .tls import backend_context
from .tunnel import Tunnel
from .webhooks import Webhooks

if TYPE_CHECKING:
    from .jwtauth import Verifier

log = logging.getLogger("phantom")

# How long a key whose response was not stored skips request coalescing, and how many such
# keys are remembered (the oldest are forgotten first).
UNCACHEABLE_SECONDS = 120.0
UNCACHEABLE_KEYS = 4096


@dataclass(slots=True)
class Site:
    """One ``[server.NAME]`` block brought to life: its backend pool, cache and snapshots.

    ``proxy.servers[name]`` in the library: ``.cache`` and the snapshot calls below (which
    raise :class:`~phantom.errors.UsageError` on a server without ``proxy_mode =
    "pre_generate"``, :class:`~phantom.errors.NotFound` for an unknown snapshot and
    :class:`~phantom.errors.SnapshotError` when the backend fails).

    ``inflight``: keys with a request on its way to the origin that will fill the cache;
    other misses on the key wait for it (request coalescing) and background refreshes are not
    started twice. ``background``: running stale-while-revalidate refreshes.

    ``uncacheable``: keys whose last response from the origin was not stored, marked for
    ``UNCACHEABLE_SECONDS`` from the first such response (Varnish's "hit-for-miss"):
    concurrent misses on them go to the origin side by side instead of queueing behind one
    another's round trip, which would halve the throughput of a busy uncacheable URL. A
    stored response clears the mark; when it expires, the next miss leads a coalesced
    request again and renews it.
    """

    config: ServerConfig
    backends: BackendPool  # the balancer, a connection pool per backend, health checks
    fallback: Fallback | None
    cache: CacheStore
    snapshots: Snapshots
    webhooks: Webhooks
    rules: CacheRules
    cache_key: KeyFunction | None = None
    trusted_proxies: tuple[Network, ...] = ()  # the guards' client address is the one after
    verifier: Verifier | None = None  # the proxy's one [jwt] checker, shared by every site
    redis: RedisLink | None = None  # the proxy's one link to [redis] (redis mode, shared limits)
    inflight: dict[Key, asyncio.Future[None]] = field(default_factory=dict)
    uncacheable: TTLCache[Key, bool] = field(init=False)
    background: set[asyncio.Task[None]] = field(default_factory=set)
    # Its guards, in the one order of stages.ORDER.
    stages: Stages = field(init=False)
    token_param: bytes | None = field(init=False)

    def __post_init__(self) -> None:
        self.uncacheable = TTLCache(UNCACHEABLE_KEYS, UNCACHEABLE_SECONDS, timer=self.cache.clock)
        config = self.config
        # The query parameter an auth_required server takes its token from (kept out of logs).
        self.token_param = (
            config.token_query.encode() if config.auth_required and config.token_query else None
        )
        self.stages = Stages.build(self)

    @classmethod
    def build(
        cls,
        server: ServerConfig,
        config: Config,
        cache_key: KeyFunction | None = None,
        redis: RedisLink | None = None,
        verifier: Verifier | None = None,
        previous: Site | None = None,
    ) -> Site:
        """``redis``: the process's link to the ``[redis]`` Redis, for redis mode and shared
        rate limits.
        ``previous``: the site this one replaces on a reload; its backends' states carry over
        (see ``Balancer``)."""
        backends = BackendPool(
            server,
            config.backend_connect_timeout,
            backend_context(server, config.source),
            previous=None if previous is None else previous.backends,
            trusted_proxies=config.trusted_proxies,
        )
        fallback = None
        if server.fallback_url is not None:
            fallback = Fallback(
                server, server.fallback_url, config.backend_connect_timeout, config.source
            )
        cache = _open_store(server, redis)
        snapshots = Snapshots(
            server,
            backends,
            timeout=config.backend_timeout,
            max_bytes=server.cache_max_object_bytes,
            clock=cache.clock,
        )
        return cls(
            config=server,
            backends=backends,
            fallback=fallback,
            cache=cache,
            snapshots=snapshots,
            webhooks=Webhooks(server.webhooks),
            rules=CacheRules(
                strategy=server.cache_strategy,
                include=tuple(parse_path_rule(rule) for rule in server.include_paths),
                exclude=tuple(parse_path_rule(rule) for rule in server.exclude_paths),
            ),
            cache_key=cache_key,
            trusted_proxies=config.trusted_proxies,
            verifier=verifier,
            redis=redis,
        )

    async def close_pools(self) -> None:
        """Stop the health checks and close the idle pooled connections (to the backends and
        to the fallback); connections in use finish their exchange first."""
        await self.backends.close()
        if self.fallback is not None:
            self.fallback.upstream.close()

    def key_for(
        self, target: bytes, headers: Sequence[tuple[bytes, bytes]], scheme: bytes
    ) -> Key:
        """The store key of a request target (HEAD and GET share it)."""
        if self.cache_key is not None:
            return policy.custom_key(self.cache_key, target, headers)
        host = hdr.get_header(headers, b"host") or b""
        return policy.store_key(host, b"GET", target, scheme)

    async def add_snapshot(self, path: str) -> CachedResponse:
        """Fetch ``path`` (as clients request it) and serve it from now on."""
        return await self.snapshots.add(path)

    async def refresh_snapshot(self, path: str) -> CachedResponse:
        """Fetch an existing snapshot again; the old one is kept if that fails."""
        return await self.snapshots.refresh(path)

    def remove_snapshot(self, path: str) -> None:
        self.snapshots.remove(path)

    async def refresh_all_snapshots(self) -> list[tuple[str, CachedResponse | PhantomError]]:
        """Fetch every snapshot again, a few at a time; each path with its result or error."""
        return await gather_each(self.snapshots.paths, self.snapshots.refresh)

    async def pre_generate(self) -> None:
        """Fetch ``pre_generate_paths`` (startup); SnapshotError names every path that failed."""
        results = await gather_each(self.config.pre_generate_paths, self.snapshots.add)
        failures = [str(result) for _, result in results if isinstance(result, PhantomError)]
        if failures:
            raise SnapshotError(f"server {self.config.name}: " + "; ".join(failures))


class CacheGroup:
    """Every server's cache at once (``proxy.cache``): the operations sum over the sites."""

    def __init__(self, sites: Mapping[str, Site]) -> None:
        self._sites = sites

    def invalidate(self, pattern: str) -> int:
        """Remove entries matching ``pattern`` (``"GET:/api/*"``) in every server's cache."""
        return sum(site.cache.invalidate(pattern) for site in self._sites.values())

    def invalidate_all(self) -> int:
        return sum(site.cache.invalidate_all() for site in self._sites.values())

    def __len__(self) -> int:
        return sum(len(site.cache) for site in self._sites.values())

    @property
    def total_bytes(self) -> int:
        return sum(site.cache.total_bytes for site in self._sites.values())


def _open_store(server: ServerConfig, redis: RedisLink | None) -> CacheStore:
    """The store of ``cache_storage_mode``: in memory, bodies on disk (the directory cleared
    of a previous run's files), or shared through Redis."""
    if server.cache_storage_mode == "redis" and redis is not None:
        return SharedStore(
            redis,
            server.name,
            max_entries=server.cache_max_entries,
            max_bytes=server.cache_l1_max_bytes,
            max_object_bytes=server.cache_max_object_bytes,
            max_404_entries=server.cache_404_capacity,
            l1_ttl=server.cache_l1_ttl,
        )
    if server.cache_storage_mode == "redis":
        log.warning(
            "server.%s: cache_storage_mode = \"redis\" needs a restart ([redis] was not set "
            "when phantom started); caching in memory until then", server.name,
        )
    disk = None
    if server.cache_storage_mode == "filesystem":
        disk = DiskBodies(server.cache_directory)
        disk.open()
    return CacheStore(
        max_entries=server.cache_max_entries,
        max_bytes=server.cache_max_bytes,
        max_object_bytes=server.cache_max_object_bytes,
        max_404_entries=server.cache_404_capacity,
        disk=disk,
        stale_keep=server.cache_stale_keep,
    )


class LiveConnection(Protocol):
    """What the proxy needs of a client connection it holds (``ProxyContext.connections``):
    a shutdown closes the idle ones, and waits for, or cancels, the others."""

    idle: bool
    finished: asyncio.Task[None]

    def close(self) -> None: ...

    def abort(self) -> None: ...


@dataclass(slots=True)
class ProxyContext:
    config: Config
    sites: dict[str, Site]  # by server name, in config order
    router: Router
    connections: set[LiveConnection] = field(default_factory=set)
    tunnels: set[Tunnel] = field(default_factory=set)
    # What each client holds of them (max_connections_per_client, max_tunnels_per_client).
    client_connections: Shares = field(default_factory=Shares)
    client_tunnels: Shares = field(default_factory=Shares)
    # Set by a graceful shutdown: every response from now on closes its connection.
    draining: bool = False
    metrics: Metrics = field(default_factory=Metrics)
    access_log: AccessLog | None = None
    # The link to the [redis] Redis (started and closed by the proxy), when there is one.
    redis: RedisLink | None = None
    # The open-file limit is read here and on reload (Proxy.reload), never per connection.
    descriptors: DescriptorWatch = field(
        default_factory=lambda: DescriptorWatch(open_file_limit())
    )
    verifier: Verifier | None = None  # of [jwt]; its JWKS (if any) is fetched by Proxy.start

    def client_accepted(self, transport: asyncio.BaseTransport) -> None:
        """Warn (rate-limited) when the newly accepted client's descriptor is close to the
        open-file limit. What is in use is bounded from below two ways, each O(1): the kernel
        hands out the lowest free descriptor, so the new socket's number says all below it
        are taken (backend legs and pooled connections included); and each connection holds
        one, each tunnel two, which still counts when closures left low numbers free."""
        sock = transport.get_extra_info("socket")
        newest = sock.fileno() if sock is not None else -1
        self.descriptors.check(max(newest + 1, len(self.connections) + 2 * len(self.tunnels)))

    def exchange_done(self, exchange: Exchange) -> None:
        """Count and log one finished exchange (every request passes here exactly once)."""
        exchange.finish()
        self.metrics.exchange_done(exchange)
        if self.access_log is not None:
            self.access_log.write(exchange)

    def open_tunnel(
        self,
        client: DetachedState,
        backend: DetachedState,
        label: str,
        server: ServerConfig,
        exchange: Exchange,
        holds: Sequence[Hold] = (),
        close_at: float | None = None,
        on_close: Callable[[], None] | None = None,
    ) -> Tunnel:
        """Splice ``client`` and ``backend``; the ``holds`` (the client's shares the tunnel
        takes up) are given back when it closes, and ``on_close`` is called then (the
        backend's count of open tunnels)."""

        def closed(tunnel: Tunnel) -> None:
            self.tunnels.discard(tunnel)
            for hold in holds:
                hold.release()
            if on_close is not None:
                on_close()
            up, down = tunnel.client_to_backend, tunnel.backend_to_client
            self.metrics.tunnel_closed(up, down)
            exchange.tunnel_up, exchange.tunnel_down = up, down
            exchange.body_bytes = down
            self.exchange_done(exchange)

        tunnel = Tunnel(
            client,
            backend,
            label=label,
            on_close=closed,
            idle_timeout=server.tunnel_idle_timeout,
            rate=server.tunnel_rate,
            max_bytes=server.tunnel_max_bytes,
            close_at=close_at,
        )
        self.tunnels.add(tunnel)
        self.metrics.tunnel_opened()
        tunnel.start(client, backend)
        return tunnel

    @classmethod
    def build(cls, config: Config, cache_key: KeyFunction | None = None) -> ProxyContext:
        redis = None if config.redis is None else RedisLink(config.redis)
        verifier = build_verifier(config.jwt)
        sites = {
            server.name: Site.build(server, config, cache_key, redis, verifier)
            for server in config.servers
        }
        return cls(
            config=config,
            sites=sites,
            router=Router(config.servers),
            access_log=AccessLog.from_config(config),
            redis=redis,
            verifier=verifier,
        )

    def close_quiet_tunnels(self, moved: Mapping[Tunnel, int]) -> dict[Tunnel, int]:
        """Close the tunnels that moved no byte since ``moved`` (what the previous call
        returned; ``{}`` the first time) was taken. Returns the bytes each open tunnel has moved
        so far, for the next call."""
        now: dict[Tunnel, int] = {}
        for tunnel in list(self.tunnels):
            total = tunnel.client_to_backend + tunnel.backend_to_client
            if moved.get(tunnel) == total:
                log.info("shutdown: tunnel %s is quiet; closing it", tunnel.label)
                tunnel.close()
            else:
                now[tunnel] = total
        return now

    async def wait_idle(self) -> None:
        """Return once no connection and no tunnel is left."""
        while self.connections or self.tunnels:
            waiters: list[asyncio.Future[None]] = [t.done for t in self.tunnels]
            waiters.extend(c.finished for c in self.connections)
            await asyncio.wait(waiters)


def build_verifier(config: JwtConfig | None) -> Verifier | None:
    """The ``[jwt]`` checker: a static key, or a JWKS that :meth:`Proxy.start` fetches."""
    if config is None:
        return None
    # Imported only here: PyJWT (the jwt extra) is needed only where [jwt] is set.
    from .jwks import JwksKeys
    from .jwtauth import StaticKey, Verifier
    from .jwtkeys import load_public_key

    if config.jwks_url is not None:
        return Verifier(config, JwksKeys(config.jwks_url, config.algorithms))
    if config.secret is not None:
        return Verifier(config, StaticKey(config.secret.encode()))
    assert config.public_key is not None
    return Verifier(config, StaticKey(load_public_key(config.public_key).key))
