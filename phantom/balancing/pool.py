"""A server's backends brought to life: the balancer, one connection pool per backend, the
health checker, and the exchange that fails over from one backend to another.

I/O module (the pools connect); the decisions are the balancer's.
"""

from __future__ import annotations

import ssl
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Generic, TypeVar

from ..config import ServerConfig
from ..errors import BackendError
from ..upstream import Upstream, UpstreamConnection
from .backend import Backend
from .balancer import Balancer
from .health import HealthChecker

__all__ = ["Attempt", "BackendPool", "NoBackend"]

_Head = TypeVar("_Head")


class NoBackend(BackendError):
    """Every backend is down, open or drained: 503 with ``Retry-After``."""

    status = 503
    kind = "unavailable"

    def __init__(self, server: str, retry_after: int) -> None:
        super().__init__(f"no backend of server {server} is available")
        self.retry_after = retry_after

    @property
    def public(self) -> str:
        return "No backend is available."


@dataclass(slots=True)
class Attempt(Generic[_Head]):
    """The attempt that got an answer: which backend, on which connection, and its head.
    ``done()`` once the exchange is over gives the backend's in-flight slot back."""

    pool: BackendPool
    backend: Backend
    upstream: Upstream
    conn: UpstreamConnection
    head: _Head

    def done(self) -> None:
        self.pool.balancer.release(self.backend)


class BackendPool:
    def __init__(
        self,
        server: ServerConfig,
        connect_timeout: float,
        tls: ssl.SSLContext | None,
        previous: BackendPool | None = None,
    ) -> None:
        """``previous``: the pool this one replaces on a reload (see ``Balancer``)."""
        self.balancer: Balancer = Balancer(
            server, previous=None if previous is None else previous.balancer
        )
        self.upstreams = {
            backend: Upstream(
                backend.url, connect_timeout, tls if backend.url.scheme == "https" else None
            )
            for backend in self.balancer.backends
        }
        check = server.health_check
        self.health = None if check is None else HealthChecker(self.balancer, check, self._connect)

    async def _connect(self, backend: Backend) -> UpstreamConnection:
        return await self.upstreams[backend].connect()

    def start(self) -> None:
        """Start the health checks (in a running loop)."""
        if self.health is not None:
            self.health.start()

    async def close(self) -> None:
        """Stop the health checks and close the idle pooled connections; connections in use
        finish their exchange first."""
        if self.health is not None:
            await self.health.close()
        for upstream in self.upstreams.values():
            upstream.close()

    async def exchange(
        self,
        key: bytes | None,
        start: Callable[[UpstreamConnection], Awaitable[_Head]],
        status: Callable[[_Head], int],
        *,
        retry: bool,
        fresh: bool = False,
    ) -> Attempt[_Head]:
        """``start`` the request on a backend the balancer picks (see ``Upstream.exchange``
        for ``retry`` and ``fresh``). When ``retry`` (idempotent, no body) and the request got
        nowhere (``BackendError.unanswered``), it is tried on another backend, up to the
        server's ``retries`` and within its budget. Raises NoBackend when none may take it,
        else the last BackendError."""
        balancer = self.balancer
        backend = balancer.pick(key)
        if backend is None:
            raise NoBackend(balancer.server, balancer.retry_after())
        tried: list[Backend] = []
        while True:
            upstream = self.upstreams[backend]
            try:
                conn, head = await upstream.exchange(start, retry=retry, fresh=fresh)
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
            if tried:
                balancer.retried(True)
            balancer.answered(backend, status(head))
            return Attempt(self, backend, upstream, conn, head)
