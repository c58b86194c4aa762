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
2. **Path.** Among the candidates, the ``bind_to`` entries matching the path, most specific
   first (``phantom.patterns``: a literal segment beats a parameter beats a tail, so the
   longest prefix wins and ``"*"`` comes last); else no route (the caller answers 404).
3. **Method.** The first of those whose server's ``methods`` allow the request's method (any
   method when it lists none; ``GET`` allows ``HEAD``). When paths matched but no method
   did, :class:`MethodNotAllowed` (405) carries the methods that would have.
4. **Target.** ``rewrite`` builds the path from the entry's captures; else ``strip_prefix``
   removes a plain prefix (``/api`` alone becomes ``/``), and any other entry's path is kept.
   Then the ``proxy_url`` base path is prepended; the query is kept as sent.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Protocol

from .config import BackendURL, ServerConfig
from .errors import RequestRejected
from .paths import normalize_target, strip_prefix
from .patterns import (
    FALLBACK,
    Match,
    PathTrie,
    Pattern,
    Rewrite,
    parse_pattern,
    parse_rewrite,
)

__all__ = [
    "MethodNotAllowed",
    "Route",
    "Router",
    "allowed_methods",
    "request_host",
    "route_on",
    "target_at",
]

#: How many (host, target, method) decisions a router remembers, and the most bytes of host
#: and target it remembers one for: the memo is bounded in size whatever clients send.
MEMO_ENTRIES = 1024
MEMO_MAX_BYTES = 512


@dataclass(frozen=True, slots=True)
class Route:
    server: ServerConfig
    target: bytes  # what the backend is sent: base path + (rewritten) path + query
    path: bytes  # the request's target in normal form: what every rule sees (path + query)


def target_at(server: ServerConfig, target: bytes, url: BackendURL) -> bytes:
    """``target``, as ``server``'s backend gets it, for ``url`` (``fallback_url``) instead:
    ``url``'s base path in place of ``proxy_url``'s."""
    return url.base_path.encode("latin-1") + target[len(server.proxy_url.base_path) :]


class MethodNotAllowed(RequestRejected):
    """The path is served, but not for this method: 405 with ``Allow``."""

    def __init__(self, allow: tuple[str, ...]) -> None:
        super().__init__(405, "method not allowed here")
        self.allow = allow

    @property
    def allow_header(self) -> bytes:
        return ", ".join(self.allow).encode("ascii")


def allowed_methods(server: ServerConfig) -> frozenset[bytes] | None:
    """The methods ``server`` takes (``GET`` brings ``HEAD``), or None for any."""
    if not server.methods:
        return None
    methods = set(server.methods)
    if "GET" in methods:
        methods.add("HEAD")
    return frozenset(method.encode("ascii") for method in methods)


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
    """Servers sharing one host rule: their ``bind_to`` entries in a trie, and the decision
    for a path and method among them."""

    def __init__(self, servers: Sequence[ServerConfig]) -> None:
        self.trie: PathTrie[ServerConfig] = PathTrie()
        for server in servers:
            for entry in server.bind_to:
                self.trie.add(parse_pattern(entry), server)
        self.methods = {s.name: allowed_methods(s) for s in servers}
        self.rewrites = {s.name: parse_rewrite(s.rewrite) for s in servers if s.rewrite}

    def matches(self, path: str) -> Iterator[Match[ServerConfig]]:
        """The entries matching ``path`` (merged slashes), most specific first; an
        asterisk-form target (``OPTIONS *``) matches the ``"*"`` entries only."""
        if path.startswith("/"):
            return self.trie.matches(path)
        return (match for match in self.trie.matches("/") if match[1].text == FALLBACK)

    def decide(self, target: bytes, method: bytes) -> Route | tuple[str, ...] | None:
        """The route, or the methods that would have been taken (405), or None (404)."""
        normal = normalize_target(target)
        merged = normal.merged.decode("latin-1")
        allow: set[bytes] = set()
        for server, pattern, values, depth in self.matches(merged):
            methods = self.methods[server.name]
            if methods is not None and method not in methods:
                allow |= methods
                continue
            if normal.encoded_separator and not server.allow_encoded_slashes:
                raise RequestRejected(400, "encoded slash, backslash or NUL in the path")
            path = normal.target(merge_slashes=server.merge_slashes)
            rewrite = self.rewrites.get(server.name)
            forwarded = path
            if path.startswith(b"/") and (
                rewrite is not None or (pattern.is_prefix and server.strip_prefix)
            ):
                # The segments before the tail, as matched (slashes merged).
                prefix = "/".join(merged.split("/", depth + 1)[: depth + 1]) if depth else ""
                forwarded = _rewritten(path.decode("latin-1"), prefix, rewrite, pattern, values)
            base = server.proxy_url.base_path.encode("latin-1")
            return Route(server, base + forwarded, path)
        return tuple(sorted(m.decode("ascii") for m in allow)) or None


def _rewritten(
    target: str, prefix: str, rewrite: Rewrite | None, pattern: Pattern, values: tuple[str, ...]
) -> bytes:
    """``target`` (path and query) with ``prefix`` (the matched segments before a tail)
    replaced by the rewrite of the match, or stripped; the query kept."""
    path, sep, query = target.partition("?")
    rest = strip_prefix(path, prefix)
    path = rewrite.render(pattern, values, rest) if rewrite is not None else rest or "/"
    return (path + sep + query).encode("latin-1")


def route_on(server: ServerConfig, target: bytes, method: bytes = b"GET") -> Route | None:
    """The route ``target`` takes to ``server`` alone (its ``hosts`` aside), or None when its
    ``bind_to`` does not match: what a snapshot of ``target`` is fetched with."""
    route = _Mounts([server]).decide(target, method)
    if isinstance(route, tuple):
        raise MethodNotAllowed(route)
    return route


class Routes(Protocol):
    """What a client connection routes its requests with: a :class:`Router`, or one that
    picks a router per connection (the relay's, by the agent a connection's first request
    names)."""

    def route(self, host: bytes | None, target: bytes, method: bytes) -> Route | None: ...


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
        # (Host value, target, method) -> route, or the Allow methods of a 405; for route().
        self._memo: dict[tuple[bytes | None, bytes, bytes], Route | tuple[str, ...] | None] = {}

    def _mounts_for(self, host: str) -> _Mounts:
        mounts = self._exact.get(host)
        if mounts is not None:
            return mounts
        for suffix, group in self._wildcard:
            if host.endswith(suffix) and len(host) > len(suffix):
                return group
        return self._any_host

    def route(self, host: bytes | None, target: bytes, method: bytes) -> Route | None:
        """The server for a request with this ``Host`` value, target and method, or None
        (404). Raises :class:`MethodNotAllowed` (405) when servers take the path but none the
        method, and RequestRejected (400) for a path with an encoded separator on a server
        that does not allow them. Remembered for up to ``MEMO_ENTRIES`` requests (the one
        remembered first is forgotten first): a site's requests repeat a few of them."""
        memo = self._memo
        try:
            route = memo[host, target, method]
        except KeyError:
            route = self._mounts_for(request_host(host)).decide(target, method)
            if len(target) + len(host or b"") <= MEMO_MAX_BYTES:
                if len(memo) >= MEMO_ENTRIES:
                    del memo[next(iter(memo))]
                memo[host, target, method] = route
        if isinstance(route, tuple):
            raise MethodNotAllowed(route)
        return route
