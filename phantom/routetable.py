"""What ``phantom routes`` prints: the routing table, and where given paths go.

Pure: a Config (and a Router) in, text out. Like ``nginx -T`` or Traefik's dashboard, it lets a
wrong prefix be seen before the first request.
"""

from __future__ import annotations

from .config import Config, ServerConfig
from .errors import RequestRejected
from .patterns import parse_pattern
from .routing import MethodNotAllowed, Router, target_at

__all__ = ["explain", "routing_table"]

_HEADINGS = ("hosts", "bind_to", "methods", "server", "backend", "path sent", "fallback_url")


def _path_sent(server: ServerConfig, entry: str) -> str:
    pattern = parse_pattern(entry)
    if server.rewrite is not None:
        return f"rewritten to {server.rewrite}" + ("/..." if pattern.is_prefix else "")
    if pattern.is_prefix and server.strip_prefix and entry != "*":
        return "prefix stripped"
    return "kept"


def routing_table(config: Config) -> str:
    """One row per ``bind_to`` entry, by host and then most specific first."""
    rows = []
    for server in config.servers:
        for entry in server.bind_to:
            rows.append(
                (
                    ", ".join(server.hosts) or "any",
                    entry,
                    ", ".join(server.methods) or "any",
                    server.name,
                    str(server.proxy_url),
                    _path_sent(server, entry),
                    str(server.fallback_url or "-"),
                )
            )
    rows.sort(key=lambda row: (row[0] == "any", row[0], parse_pattern(row[1]).sort_key))
    table = (_HEADINGS, *rows)
    widths = [max(len(cell) for cell in column) for column in zip(*table, strict=True)]
    lines = [
        "  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip()
        for row in table
    ]
    return "\n".join(lines) + "\n"


def explain(router: Router, path: str, *, host: str | None = None, method: str = "GET") -> str:
    """Where a request for ``path`` goes: server, backend and the target it is sent."""
    request = f"{method} {path}" + (f" (Host: {host})" if host else "")
    try:
        route = router.route(
            None if host is None else host.encode("latin-1"),
            path.encode("latin-1"),
            method.encode("latin-1"),
        )
    except MethodNotAllowed as refused:
        return f"{request} -> 405, Allow: {refused.allow_header.decode()}"
    except RequestRejected as refused:
        return f"{request} -> {refused.status}, {refused.reason}"
    if route is None:
        return f"{request} -> 404, no server is bound to this host and path"
    url = route.server.proxy_url
    line = f"{request} -> server {route.server.name}: {url.scheme}://{url.netloc}"
    line += route.target.decode("latin-1")
    fallback = route.server.fallback_url
    if fallback is not None:
        line += f" (if refused: fallback {fallback.scheme}://{fallback.netloc}"
        line += target_at(route.server, route.target, fallback).decode("latin-1") + ")"
    return line
