"""Which ``[server.NAME]`` serves a request, and the target it is forwarded with.

Pure: takes the ``Host`` header and the request target as bytes, returns a decision. The same
decision serves ordinary requests and upgrades, so a WebSocket under ``/docs/...`` reaches the
same backend, with the same path rewriting, as the page that opened it.

Rules, in order:

0. **Normal form.** The target is normalised first (``paths.normalize_target``: escapes of
   unreserved characters decoded, dot segments removed), and everything below, like every
   later rule (cache rules, webhooks, the cache key), reads that form. Which server a path
   belongs to is decided with repeated slashes merged, whatever the servers say: ``//admin``
   is never routed away from the ``/admin`` server. Then that server's own options apply:
   ``merge_slashes = false`` keeps the slashes as sent in what is forwarded (and what the
   cache rules and key see); a path with an encoded separator (``%2F``, ``%5C``, ``%00``, a
   raw backslash) is refused with 400 unless it says ``allow_encoded_slashes = true``.

1. **Host.** Servers whose ``hosts`` name the request's host exactly are the candidates; if
   none, those with the most specific matching ``*.domain`` wildcard; if none, the servers
   without ``hosts``. The port and a trailing dot are ignored, case never matters. A host that
   is claimed is served only by the servers claiming it.
2. **Path.** Among the candidates, the longest ``bind_to`` prefix matching on a segment
   boundary (``/api`` matches ``/api`` and ``/api/x``, not ``/apix``); else the candidate bound
   to ``"*"``; else no route (the caller answers 404).
3. **Target.** With ``strip_prefix`` the prefix is removed (``/api`` alone becomes ``/``); the
   ``proxy_url`` base path is prepended; the query is kept as sent.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from .config import ServerConfig, mounted_at
from .errors import RequestRejected
from .paths import normalize_target, strip_prefix

__all__ = ["Route", "Router", "backend_target", "request_host"]

FALLBACK = "*"

#: How many (host, target) decisions a router remembers, and the most bytes of host and
#: target it remembers one for: the memo is bounded in size whatever clients send.
MEMO_ENTRIES = 1024
MEMO_MAX_BYTES = 512


@dataclass(frozen=True, slots=True)
class Route:
    server: ServerConfig
    target: bytes  # what the backend is sent: base path + (stripped) path + query
    path: bytes  # the request's target in normal form: what every rule sees (path + query)


def request_host(host: bytes | None) -> str:
    """The host name a ``Host`` header names: lowercased, without port or trailing dot."""
    if host is None:
        return ""
    text = host.decode("latin-1").strip().lower()
    if text.startswith("["):
        text = text[1 : text.find("]")] if "]" in text else text[1:]
    else:
        name, sep, port = text.rpartition(":")
        if sep and port.isdigit():
            text = name
    return text.rstrip(".")


class _Mounts:
    """Servers sharing one host rule, by path prefix: longest first, then the fallback."""

    def __init__(self, servers: Sequence[ServerConfig]) -> None:
        bound = [s for s in servers if s.bind_to != FALLBACK]
        self.prefixed = sorted(bound, key=lambda s: len(s.bind_to), reverse=True)
        self.fallback = next((s for s in servers if s.bind_to == FALLBACK), None)

    def match(self, path: str) -> ServerConfig | None:
        for server in self.prefixed:
            if mounted_at(server.bind_to, path):
                return server
        return self.fallback


class Router:
    def __init__(self, servers: Sequence[ServerConfig]) -> None:
        exact: dict[str, list[ServerConfig]] = {}
        wildcard: dict[str, list[ServerConfig]] = {}
        for server in servers:
            for pattern in server.hosts:
                if pattern.startswith("*."):
                    wildcard.setdefault(pattern[1:], []).append(server)  # key ".example.com"
                else:
                    exact.setdefault(pattern, []).append(server)
        self._exact = {host: _Mounts(group) for host, group in exact.items()}
        # Most specific (longest) suffix first.
        self._wildcard = sorted(
            ((suffix, _Mounts(group)) for suffix, group in wildcard.items()),
            key=lambda item: len(item[0]),
            reverse=True,
        )
        self._any_host = _Mounts([s for s in servers if not s.hosts])
        # (Host value, target) -> route, for route().
        self._memo: dict[tuple[bytes | None, bytes], Route | None] = {}

    def _mounts_for(self, host: str) -> _Mounts:
        mounts = self._exact.get(host)
        if mounts is not None:
            return mounts
        for suffix, group in self._wildcard:
            if host.endswith(suffix) and len(host) > len(suffix):
                return group
        return self._any_host

    def route(self, host: bytes | None, target: bytes) -> Route | None:
        """The server for a request with this ``Host`` value and target, or None (404).
        Raises RequestRejected (400) for a path with an encoded separator on a server that
        does not allow them. Remembered for up to ``MEMO_ENTRIES`` hosts and targets (the one
        remembered first is forgotten first): a site's requests repeat a few of them."""
        memo = self._memo
        try:
            return memo[host, target]
        except KeyError:
            pass
        normal = normalize_target(target)
        server = self._mounts_for(request_host(host)).match(normal.merged.decode("latin-1"))
        route = None
        if server is not None:
            if normal.encoded_separator and not server.allow_encoded_slashes:
                raise RequestRejected(400, "encoded slash, backslash or NUL in the path")
            path = normal.target(merge_slashes=server.merge_slashes)
            forwarded = backend_target(server, path.decode("latin-1"))
            route = Route(server, forwarded.encode("latin-1"), path)
        if len(target) + len(host or b"") <= MEMO_MAX_BYTES:
            if len(memo) >= MEMO_ENTRIES:
                del memo[next(iter(memo))]
            memo[host, target] = route
        return route


def backend_target(server: ServerConfig, target: str) -> str:
    """``target`` as the backend is sent it: prefix stripped, base path prepended, query kept."""
    path, sep, query = target.partition("?")
    if server.strip_prefix and server.bind_to != FALLBACK and path.startswith("/"):
        path = strip_prefix(path, server.bind_to) or "/"
    return server.proxy_url.base_path + path + sep + query
