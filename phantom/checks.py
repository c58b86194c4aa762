"""Risky but valid settings, as sentences: ``phantom check`` prints them, ``serve`` logs them.

Pure module: reads a Config, touches nothing.
"""

from __future__ import annotations

import ipaddress
from urllib.parse import urlsplit

from .config import Config, ServerConfig
from .handshake import H2C, allows

__all__ = ["risky_settings"]


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False  # a host name: it may resolve to anything


def risky_settings(config: Config) -> list[str]:
    """One warning per risky choice, each naming the key to change."""
    warnings = []
    if (
        config.control_port is not None
        and config.control_auth is None
        and not _is_loopback(config.control_listen)
    ):
        warnings.append(
            f"control_listen: the control API listens on {config.control_listen} without "
            "control_auth: anyone who can reach it can flush the cache"
        )
    if config.relay is not None and config.https_port is None and not _is_loopback(config.listen):
        warnings.append(
            f"https_port: the relay listens on {config.listen} without TLS: agents send their "
            "token, and public clients their traffic, in clear text"
        )
    redis = config.redis
    if redis is not None:
        parts = urlsplit(redis.url)
        if parts.scheme == "redis" and not _is_loopback(parts.hostname or ""):
            warnings.append(
                f"redis.url: {redis.shown_url} is reached without TLS: cached pages (and the "
                "password) cross the network in clear; use rediss://"
            )
    for server in config.servers:
        caching = min(server.cache_max_entries, server.cache_max_bytes) > 0
        several_hosts = len(server.hosts) > 1 or any(h.startswith("*.") for h in server.hosts)
        if caching and several_hosts and not server.preserve_host:
            warnings.append(
                f"server.{server.name}.preserve_host: false with several hosts and a cache: the "
                "backend sees its own host for all of them, so each host is cached separately "
                "with the same content, and links or redirects built from Host name the backend"
            )
        unchecked = [str(b.url) for b in server.pool if b.url.scheme == "https"]
        if unchecked and not server.backend_tls_verify:
            warnings.append(
                f"server.{server.name}.backend_tls_verify: false: the certificate of "
                f"{', '.join(unchecked)} is not checked (anyone on the path can impersonate it)"
            )
        fallback = server.fallback_url
        if fallback is not None and fallback.scheme == "http" and not _is_loopback(fallback.host):
            warnings.append(
                f"server.{server.name}.fallback_url: {fallback} is plain http to another "
                "machine: requests that fall back (cookies and Authorization included) cross "
                "the network unencrypted"
            )
        if server.token_cookie is not None and server.allowed_origins is None:
            warnings.append(
                f"server.{server.name}.allowed_origins: not set while tokens come from the "
                f"{server.token_cookie!r} cookie: any web page can open an authenticated "
                "WebSocket to this server with its visitors' cookies (list your origins)"
            )
        bypassed = _h2c_bypasses(server)
        if bypassed:
            warnings.append(
                f"server.{server.name}.upgrade_protocols: h2c is tunnelled, and the HTTP/2 "
                f"requests inside its tunnel pass {', '.join(bypassed)} unchecked"
            )
    return warnings


def _h2c_bypasses(server: ServerConfig) -> list[str]:
    """The per-request rules of ``server`` an h2c tunnel would carry requests past."""
    if not server.enable_websocket or not allows(server.upgrade_protocols, H2C):
        return []
    rules = {
        "the token check": server.auth_required,
        "the rate limit": server.rate_limit,
        "the webhooks": server.webhooks,
        "hosts": server.hosts,
        "exclude_paths": server.exclude_paths,
        "the base path of proxy_url": any(b.url.base_path for b in server.pool),
    }
    return [rule for rule, value in rules.items() if value]
