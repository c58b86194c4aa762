"""A server's backends brought to life: the balancer, one connection pool per backend, the
health checker, and the exchange that fails over from one backend to another.

I/O module (the pools connect); the decisions are the balancer's. A request's place among
its backend's requests in flight is tied to the connection that carries its answer
(``UpstreamConnection.leased``): it is given back when that exchange ends, whichever way.
"""

from __future__ import annotations

import functools
import ssl
from collections.abc import Awaitable, Callable, Sequence
from typing import TypeVar

import h11

from .. import headers as hdr
from ..config import BackendURL, Network, ServerConfig
from ..errors import BackendError
from ..routing import target_at
from ..upstream import Upstream, UpstreamConnection
from .backend import Backend
from .balancer import Balancer
from .health import HealthChecker
from .keys import KeyOf, key_function

__all__ = ["BackendPool", "NoBackend", "status_of"]

_Head = TypeVar("_Head")


def status_of(response: h11.Response | h11.InformationalResponse) -> int:
    """The status an exchange's head reports to the balancer."""
    return response.status_code


class NoBackend(BackendError):
    """Every backend is down, open or drained: 503 with ``Retry-After``."""

    status = 503
    kind = "unavailable"

    def __init__(self, server: str, retry_after: int) -> None:
        super().__init__(f"no backend of server {server} is available")
        self.retry_after = retry_after

    @property
    def public(self) -> str:
        return "No backend is available; try again later."


class BackendPool:
    def __init__(
        self,
        server: ServerConfig,
        connect_timeout: float,
        tls: ssl.SSLContext | None,
        previous: BackendPool | None = None,
        trusted_proxies: tuple[Network, ...] = (),
    ) -> None:
        """``previous``: the pool this one replaces on a reload (see ``Balancer``);
        ``trusted_proxies``: whose X-Forwarded-For a ``client_ip`` hash key believes."""
        self.server = server
        self.balancer: Balancer = Balancer(
            server, previous=None if previous is None else previous.balancer
        )
        self.upstreams = {
            backend: Upstream(
                config.url,
                connect_timeout,
                tls if config.url.scheme == "https" else None,
                on_exchange_end=functools.partial(self.balancer.release, backend),
            )
            for backend, config in zip(self.balancer.backends, server.pool, strict=True)
        }
        self._key_of: KeyOf | None = (
            key_function(server.hash_key, trusted_proxies)
            if server.load_balance == "consistent_hash"
            else None
        )
        check = server.health_check
        self.health = None if check is None else HealthChecker(self.balancer, check, self._connect)

    def take_over(self) -> None:
        """The reload that built this pool goes through (see ``Balancer.take_over``)."""
        self.balancer.take_over()

    async def _connect(self, backend: Backend) -> UpstreamConnection:
        return await self.upstreams[backend].connect()

    def start(self) -> None:
        """Start the health checks (in a running loop)."""
        if self.health is not None:
            self.health.start()

    def use(self, upstream: Upstream) -> None:
        """Connections to this server's one backend come from ``upstream`` (a relay's agent,
        whose connections are the agent's data connections)."""
        backend = self.balancer.backends[0]
        upstream.exchange_ended = functools.partial(self.balancer.release, backend)
        self.upstreams[backend] = upstream

    def close_idle(self) -> None:
        """Close the idle pooled connections; connections in use finish their exchange."""
        for upstream in self.upstreams.values():
            upstream.close()

    async def close(self) -> None:
        """Stop the health checks and close the idle pooled connections."""
        if self.health is not None:
            await self.health.close()
        self.close_idle()

    # -- what a request is sent to ---------------------------------------------------------

    def key(
        self, client_ip: str, target: bytes, headers: Sequence[tuple[bytes, bytes]]
    ) -> bytes | None:
        """The request's hash key; None unless ``load_balance = "consistent_hash"``."""
        key_of = self._key_of
        return None if key_of is None else key_of(client_ip, target, headers)

    def target_for(self, target: bytes, url: BackendURL) -> bytes:
        """``target``, made for ``proxy_url``, with ``url``'s base path instead."""
        primary = self.server.proxy_url
        if url is primary or url.base_path == primary.base_path:
            return target
        return target_at(self.server, target, url)

    def adapt(self, request: h11.Request, url: BackendURL, *, upgrade: bool) -> h11.Request:
        """``request``, made for ``proxy_url``, as the backend at ``url`` gets it: its base
        path, and with ``preserve_host = false`` its own Host (and Origin, on upgrades)."""
        if url is self.server.proxy_url:
            return request
        headers = list(request.headers.raw_items())
        if not self.server.preserve_host:
            headers = hdr.with_backend_host(headers, url.netloc.encode(), origin=upgrade)
        return h11.Request(
            method=request.method,
            target=self.target_for(request.target, url),
            headers=headers,
            http_version=request.http_version,
        )

    # -- exchanges -------------------------------------------------------------------------

    def pick_idle(
        self, client_ip: str, target: bytes, headers: Sequence[tuple[bytes, bytes]]
    ) -> tuple[Backend | None, UpstreamConnection | None]:
        """A backend for a new request (counted in flight) and an idle pooled connection to
        it, leased; the connection is None when that backend has no idle one (pass the
        backend on to ``exchange``), the backend None when no backend may take the request.
        (The fast lane's way: every request that it relays pays for this call.)"""
        single = self.balancer.single
        if single is not None and single.ready:
            # Balancer.pick's own first step, taken here: one call less per request.
            single.inflight += 1
            backend: Backend | None = single
        else:
            key_of = self._key_of
            key = None if key_of is None else key_of(client_ip, target, headers)
            backend = self.balancer.pick(key)
        if backend is None:
            return None, None
        conn = self.upstreams[backend].take_idle()
        if conn is not None:
            conn.leased = True
        return backend, conn

    async def exchange(
        self,
        key: bytes | None,
        start: Callable[[UpstreamConnection], Awaitable[_Head]],
        status: Callable[[_Head], int],
        *,
        retry: bool,
        fresh: bool = False,
        picked: Backend | None = None,
    ) -> tuple[Backend, UpstreamConnection, _Head]:
        """``start`` the request on a backend the balancer picks (see ``Upstream.exchange``
        for ``retry`` and ``fresh``; ``start`` adapts the request to ``conn.url``). When
        ``retry`` (idempotent, no body) and the request got nowhere
        (``BackendError.unanswered``), it is tried on another backend, up to the server's
        ``retries`` and within its budget. ``picked``: the backend ``pick_idle`` chose (and
        counted). The connection comes back leased (release it, or lose it). Raises NoBackend
        when no backend may take the request, else the last BackendError."""
        balancer = self.balancer
        backend = picked or balancer.pick(key)
        if backend is None:
            raise NoBackend(balancer.server, balancer.retry_after())
        tried: list[Backend] = []
        while True:
            try:
                conn, head = await self.upstreams[backend].exchange(start, retry=retry, fresh=fresh)
            except BackendError as exc:
                balancer.failed(backend, str(exc))
                balancer.release(backend)
                if tried:
                    balancer.retried(False)
                tried.append(backend)
                if not (retry and exc.unanswered and len(tried) <= balancer.retries):
                    raise
                following = balancer.retry(key, tried)
                if following is None:
                    raise
                backend = following
                continue
            except BaseException:
                balancer.release(backend)
                raise
            conn.leased = True
            if tried:
                balancer.retried(True)
            balancer.answered(backend, status(head))
            return backend, conn, head
