"""What every client connection of one running proxy shares: its sites, router and live set."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from .cache.store import CacheStore
from .config import Config, ServerConfig
from .endpoint import DetachedState
from .routing import Router
from .tunnel import Tunnel
from .upstream import Upstream

if TYPE_CHECKING:
    from .connection import ClientConnection

log = logging.getLogger("phantom")


@dataclass(slots=True)
class Site:
    """One ``[server.NAME]`` block brought to life: its backend pool and its cache."""

    config: ServerConfig
    upstream: Upstream
    cache: CacheStore

    @classmethod
    def build(cls, server: ServerConfig, config: Config) -> Site:
        return cls(
            config=server,
            upstream=Upstream(server.proxy_url, config.backend_connect_timeout),
            cache=CacheStore(
                max_entries=server.cache_max_entries,
                max_bytes=server.cache_max_bytes,
                max_object_bytes=server.cache_max_object_bytes,
            ),
        )


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
