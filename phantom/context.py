"""What every client connection of one running proxy shares: its sites, router and live set."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from .cache.store import CachedResponse, CacheStore
from .config import Config, ServerConfig
from .endpoint import DetachedState
from .errors import PhantomError, SnapshotError
from .routing import Router
from .snapshots import Snapshots, gather_each
from .tunnel import Tunnel
from .upstream import Upstream
from .webhooks import Webhooks

if TYPE_CHECKING:
    from .connection import ClientConnection

log = logging.getLogger("phantom")


@dataclass(slots=True)
class Site:
    """One ``[server.NAME]`` block brought to life: its backend pool, cache and snapshots.

    ``proxy.servers[name]`` in the library: ``.cache`` and the snapshot calls below (which
    raise :class:`~phantom.errors.UsageError` on a server without ``proxy_mode =
    "pre_generate"``, :class:`~phantom.errors.NotFound` for an unknown snapshot and
    :class:`~phantom.errors.SnapshotError` when the backend fails).
    """

    config: ServerConfig
    upstream: Upstream
    cache: CacheStore
    snapshots: Snapshots
    webhooks: Webhooks

    @classmethod
    def build(cls, server: ServerConfig, config: Config) -> Site:
        upstream = Upstream(server.proxy_url, config.backend_connect_timeout)
        cache = CacheStore(
            max_entries=server.cache_max_entries,
            max_bytes=server.cache_max_bytes,
            max_object_bytes=server.cache_max_object_bytes,
        )
        snapshots = Snapshots(
            server,
            upstream,
            timeout=config.backend_timeout,
            max_bytes=server.cache_max_object_bytes,
            clock=cache.clock,
        )
        return cls(
            config=server,
            upstream=upstream,
            cache=cache,
            snapshots=snapshots,
            webhooks=Webhooks(server.webhooks),
        )

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


@dataclass(slots=True)
class ProxyContext:
    config: Config
    sites: dict[str, Site]  # by server name, in config order
    router: Router
    connections: set[ClientConnection] = field(default_factory=set)
    tunnels: set[Tunnel] = field(default_factory=set)
    # Set by a graceful shutdown: every response from now on closes its connection.
    draining: bool = False

    def open_tunnel(self, client: DetachedState, backend: DetachedState, label: str) -> Tunnel:
        tunnel = Tunnel(client, backend, label=label, on_close=self.tunnels.discard)
        self.tunnels.add(tunnel)
        return tunnel

    @classmethod
    def build(cls, config: Config) -> ProxyContext:
        sites = {server.name: Site.build(server, config) for server in config.servers}
        return cls(config=config, sites=sites, router=Router(config.servers))

    async def wait_idle(self) -> None:
        """Return once no connection and no tunnel is left."""
        while self.connections or self.tunnels:
            waiters: list[asyncio.Future[None]] = [t.done for t in self.tunnels]
            waiters.extend(c.finished for c in self.connections)
            await asyncio.wait(waiters)
