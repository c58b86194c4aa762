"""The record of one request/response exchange, filled in as the request walks through the
proxy and handed, once, to the metrics and the access log when it ends.

Pure module: plain data and classification; the connection fills it, nothing here does I/O.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Iterable
from dataclasses import dataclass, field

import h11

from .config import BackendURL

__all__ = ["CLIENT_CLOSED", "Exchange", "cache_result", "method_class"]

# nginx's code for "the client went away before we answered"; never sent, only logged.
CLIENT_CLOSED = 499

_METHODS = {
    name.encode("ascii"): name
    for name in ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS")
}


def method_class(method: bytes) -> str:
    """The method as a metric label: the common ones by name, anything else ``other``."""
    return _METHODS.get(method, "other")


def cache_result(cache_status: bytes | None) -> str:
    """What the cache did, from our ``Cache-Status`` value (RFC 9211):

    ``hit``; ``miss`` (nothing usable stored); ``stale`` (stored but stale, fetched again);
    ``revalidated`` (stale, and the origin answered 304); ``bypass`` (the cache did not take
    part: method, request directives, configuration); ``-`` (no Cache-Status: an error or a
    tunnel).
    """
    if cache_status is None:
        return "-"
    if len(cache_status) <= _REMEMBERED_STATUS_BYTES:
        return _remembered_result(cache_status)
    return _result(cache_status)


def _result(cache_status: bytes) -> str:
    params: dict[bytes, bytes] = {}
    for part in cache_status.split(b";")[1:]:
        name, _, value = part.strip().partition(b"=")
        params[name] = value
    if b"hit" in params:
        return "hit"
    fwd = params.get(b"fwd")
    if fwd == b"stale":
        return "revalidated" if params.get(b"fwd-status") == b"304" else "stale"
    if fwd in (b"uri-miss", b"vary-miss", b"miss", b"partial"):
        return "miss"
    return "bypass"


# Every exchange asks, and the values repeat (a hit's differ only in ttl): each is parsed once.
# Only values as long as phantom's own are remembered, so the memory stays small.
_REMEMBERED_STATUS_BYTES = 160
_remembered_result = functools.lru_cache(maxsize=1024)(_result)


@dataclass(slots=True)
class Exchange:
    """One request and what became of it. Times: ``started`` is wall-clock (for the log line),
    ``started_at`` a ``perf_counter`` reading (for durations)."""

    client_ip: str
    method: bytes
    target: bytes
    http_version: bytes = b"1.1"
    referer: bytes | None = None
    user_agent: bytes | None = None
    started: float = field(default_factory=time.time)
    started_at: float = field(default_factory=time.perf_counter)
    server: str = "-"  # the [server.NAME] that handled it
    backend: BackendURL | None = None  # where it was forwarded, when it was
    status: int = CLIENT_CLOSED  # until a response head is sent
    body_bytes: int = 0  # response bytes after the head
    cache_status: bytes | None = None  # the Cache-Status value sent
    upstream_seconds: float | None = None  # request sent -> backend response head
    error_kind: str | None = None  # BackendError.kind when the backend failed
    refusal: str | None = None  # why a guard refused it (ip, origin, rate_limit, claims, ...)
    # Upgrades: set when the tunnel closes.
    tunnel_up: int | None = None  # bytes client -> backend
    tunnel_down: int | None = None  # bytes backend -> client
    total_seconds: float = 0.0  # set by finish()

    @classmethod
    def of_request(cls, client_ip: str, request: h11.Request) -> Exchange:
        return cls.of_head(
            client_ip, request.method, request.target, request.http_version, request.headers
        )

    @classmethod
    def of_head(
        cls,
        client_ip: str,
        method: bytes,
        target: bytes,
        http_version: bytes,
        headers: Iterable[tuple[bytes, bytes]],
    ) -> Exchange:
        """From a parsed request head; ``headers`` with lowercase names."""
        referer = user_agent = None
        for name, value in headers:
            if name == b"referer":
                referer = value
            elif name == b"user-agent":
                user_agent = value
        return cls(client_ip, method, target, http_version, referer, user_agent)

    def finish(self) -> None:
        self.total_seconds = time.perf_counter() - self.started_at
