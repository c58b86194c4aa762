"""Active health checks (``health_check = {...}``): a GET to each backend every ``interval``.

The one I/O module of the package. A check connects afresh (through the backend's pool, so
TLS and its settings are the requests' own), sends ``GET path`` with ``Connection: close``,
and passes when the response head arrives within ``timeout`` with a status in
``expect_status``; the body is not read. Results go to :meth:`Balancer.checked`, which counts
them against the thresholds and logs each change of state once.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import h11

from ..config import HealthCheckConfig, parse_expect_status
from ..endpoint import EndpointClosed
from ..errors import BackendError
from ..upstream import UpstreamConnection
from .backend import Backend
from .balancer import Balancer

__all__ = ["USER_AGENT", "HealthChecker"]

USER_AGENT = b"phantom-health-check"

#: Opens a new connection to a backend.
Connect = Callable[[Backend], Awaitable[UpstreamConnection]]


class HealthChecker:
    """Checks every backend of one balancer, each on its own task, until ``close()``."""

    def __init__(self, balancer: Balancer, check: HealthCheckConfig, connect: Connect) -> None:
        self.balancer = balancer
        self.check = check
        self.connect = connect
        self.expected = parse_expect_status(check.expect_status)
        self._tasks: list[asyncio.Task[None]] = []
        self._closed = False

    def start(self) -> None:
        self._closed = False
        self._tasks = [
            asyncio.ensure_future(self._watch(backend)) for backend in self.balancer.backends
        ]

    async def close(self) -> None:
        self._closed = True
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks = []

    async def _watch(self, backend: Backend) -> None:
        while True:
            failure = await self.probe(backend)
            if self._closed:
                # (The cancel close() sent may have been swallowed: before Python 3.12,
                # wait_for returns an inner result that is ready when it is cancelled.)
                return
            self.balancer.checked(backend, failure)
            await asyncio.sleep(self.check.interval)

    async def probe(self, backend: Backend) -> str | None:
        """One check: None when it passed, else what failed, in words for the log."""
        try:
            return await asyncio.wait_for(self._ask(backend), self.check.timeout)
        except asyncio.TimeoutError:
            return f"no answer within {self.check.timeout:g}s"
        except BackendError as exc:
            return str(exc)
        except (EndpointClosed, OSError):
            return "backend closed the connection"

    async def _ask(self, backend: Backend) -> str | None:
        conn = await self.connect(backend)
        try:
            host = self.check.host or backend.url.netloc
            conn.send(
                h11.Request(
                    method=b"GET",
                    target=self.check.path.encode(),
                    headers=[
                        (b"Host", host.encode("ascii")),
                        (b"User-Agent", USER_AGENT),
                        (b"Accept", b"*/*"),
                        (b"Connection", b"close"),
                    ],
                )
            )
            conn.send(h11.EndOfMessage())
            response = await conn.response_head(self.check.timeout)
        finally:
            conn.close()
        if response.status_code not in self.expected:
            return f"answered {response.status_code}"
        return None
