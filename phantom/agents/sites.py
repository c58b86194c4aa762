"""Agents as sites of phantom's request path: one :class:`~phantom.context.Site` per name, whose
backend is the agent (:class:`~.upstream.AgentUpstream`), and one router per site.

A site appears when its agent registers, stays through the grace period of an agent that was
lost (its requests get 502 "agent offline" meanwhile, and an agent that comes back finds its
cache), and goes when the agent says goodbye or the grace period ends.
"""

from __future__ import annotations

import asyncio
from dataclasses import replace

from ..config import BackendURL, Config, RelayConfig, ServerConfig
from ..context import ProxyContext, Site
from ..routing import Router
from .hub import AgentSession, Hub
from .upstream import AgentUpstream

#: Agent sites are named so that no ``[server.NAME]`` of the relay's file can clash with them.
PREFIX = "agent:"


def agent_servers(
    name: str, relay: RelayConfig, cache: bool, config: Config
) -> tuple[ServerConfig, ...]:
    """The servers an agent's name stands for, one site: reached at NAME.relay_domain, and in
    the path mode also at relay_domain/NAME/... (the prefix stripped); every upgrade but h2c
    tunnelled; a cache only when the agent asked for one (``--cache``), of the relay's
    ``cache_max_bytes``; each tunnel paced and bounded by the relay's ``tunnel_rate`` and
    ``tunnel_max_bytes``."""
    server = ServerConfig(
        name=PREFIX + name,
        proxy_url=BackendURL("http", f"{name}.agent", 80, ""),
        hosts=(f"{name}.{relay.relay_domain}",),
        max_body_bytes=config.max_body_bytes,
        tunnel_idle_timeout=config.tunnel_idle_timeout,
        tunnel_rate=_either(relay.tunnel_rate, config.tunnel_rate),
        tunnel_max_bytes=_either(relay.tunnel_max_bytes, config.tunnel_max_bytes),
    )
    if not _caches(relay, cache):
        server = replace(server, cache_max_entries=0, cache_404_capacity=0)
    else:  # a relay's memory is shared by every agent: each gets its bounded part
        server = replace(
            server,
            cache_max_bytes=relay.cache_max_bytes,
            cache_max_object_bytes=min(server.cache_max_object_bytes, relay.cache_max_bytes),
        )
    if not relay.relay_path_mode:
        return (server,)
    return server, replace(server, hosts=(relay.relay_domain,), bind_to=(f"/{name}",))


def _caches(relay: RelayConfig, asked: bool) -> bool:
    """Whether an agent's site has a cache: it asked for one, and the relay gives any."""
    return asked and relay.cache_max_bytes > 0


def _either(relay_value: int | None, root_value: int) -> int:
    """A ``[relay]`` quota, or the root key of the same name where the table leaves it out."""
    return root_value if relay_value is None else relay_value


class AgentSites:
    def __init__(self, ctx: ProxyContext, hub: Hub) -> None:
        self.ctx = ctx
        self.hub = hub
        self._routers: dict[str, Router] = {}
        self._expiry: dict[str, asyncio.TimerHandle] = {}

    def router_for(self, name: str) -> Router | None:
        """The router of the agent ``name``'s site (None: no such agent, or long gone)."""
        return self._routers.get(name)

    def registered(self, session: AgentSession) -> None:
        name = session.name
        timer = self._expiry.pop(name, None)
        if timer is not None:
            timer.cancel()
        site = self.ctx.sites.get(PREFIX + name)
        cache = _caches(self.hub.config, session.cache)
        if site is not None and (site.config.cache_max_entries > 0) == cache:
            return  # back within its grace period: the site, and its cache, stay
        self._remove(name)
        config = self.ctx.config
        servers = agent_servers(name, self.hub.config, session.cache, config)
        site = Site.build(servers[0], config)
        site.backends.use(
            AgentUpstream(self.hub, name, site.config.proxy_url, config.backend_connect_timeout)
        )
        self.ctx.sites[site.config.name] = site
        self._routers[name] = Router(servers)

    def ended(self, session: AgentSession) -> None:
        name = session.name
        site = self.ctx.sites.get(PREFIX + name)
        if site is not None:
            site.backends.close_idle()  # its idle data connections went with the agent
        grace = self.hub.config.relay_name_grace
        if session.goodbye or grace <= 0:
            self._remove(name)
        else:
            loop = asyncio.get_running_loop()
            self._expiry[name] = loop.call_later(grace, self._expire, name)

    def _expire(self, name: str) -> None:
        del self._expiry[name]
        registry = self.hub.registry
        registry.forget_expired(self.hub.clock())
        if not registry.known(name):  # neither back nor reserved any more
            self._remove(name)

    def _remove(self, name: str) -> None:
        self._routers.pop(name, None)
        site = self.ctx.sites.pop(PREFIX + name, None)
        if site is not None:
            site.backends.close_idle()

    def close(self) -> None:
        for timer in self._expiry.values():
            timer.cancel()
        self._expiry.clear()
