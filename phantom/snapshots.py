"""Pre-generated snapshots (``proxy_mode = "pre_generate"``): pages fetched from the backend
ahead of time and served from memory, with no TTL, until refreshed or removed.

A snapshot is keyed by the target as clients request it (``/docs/intro?lang=en``) and is the
same for every ``Host``. Set-Cookie is never kept: a snapshot is shared by every client.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Awaitable, Callable, Iterable
from typing import TypeVar

import h11

from . import headers as hdr
from .balancing.pool import BackendPool, status_of
from .cache import surrogate
from .cache.policy import StorageDecision
from .cache.store import CachedResponse
from .config import ServerConfig, check_snapshot_path
from .errors import NotFound, PhantomError, RequestRejected, SnapshotError, UsageError
from .routing import route_on
from .upstream import UpstreamConnection

__all__ = ["Snapshots", "gather_each"]

# Snapshot fetches at once, at startup and in bulk calls: enough to be quick, few enough not
# to flood a backend that renders pages on demand.
FETCH_CONCURRENCY = 8

T = TypeVar("T")
R = TypeVar("R")


async def gather_each(
    items: Iterable[T], action: Callable[[T], Awaitable[R]]
) -> list[tuple[T, R | PhantomError]]:
    """Run ``action`` on every item, at most FETCH_CONCURRENCY at once; each item's result or
    the PhantomError it raised, in order."""
    gate = asyncio.Semaphore(FETCH_CONCURRENCY)

    async def one(item: T) -> tuple[T, R | PhantomError]:
        async with gate:
            try:
                return item, await action(item)
            except PhantomError as exc:
                return item, exc

    return list(await asyncio.gather(*(one(item) for item in items)))


class Snapshots:
    """One pre-generate server's snapshots, and how they are fetched."""

    def __init__(
        self,
        server: ServerConfig,
        backends: BackendPool,
        *,
        timeout: float,
        max_bytes: int,
        clock: Callable[[], float],
    ) -> None:
        self.server = server
        self._backends = backends
        self._timeout = timeout
        self._max_bytes = max_bytes
        self._clock = clock
        self._entries: dict[str, CachedResponse] = {}

    def get(self, target: bytes) -> CachedResponse | None:
        return self._entries.get(target.decode("latin-1"))

    @property
    def paths(self) -> list[str]:
        return list(self._entries)

    def __len__(self) -> int:
        return len(self._entries)

    def _checked(self, path: str) -> str:
        if not self.server.pre_generate:
            raise UsageError(f"server {self.server.name} does not use proxy_mode = pre_generate")
        try:
            check_snapshot_path(path)
        except ValueError as exc:
            raise UsageError(str(exc)) from None
        self._target(path)
        return path

    def _target(self, path: str) -> bytes:
        """What the backend is sent for ``path``: the route a GET for it takes."""
        try:
            route = route_on(self.server, path.encode("latin-1"))
        except RequestRejected as exc:
            raise UsageError(f"{path}: {exc.reason}") from None
        if route is None:
            raise UsageError(f"{path} is outside bind_to {list(self.server.bind_to)}")
        return route.target

    async def add(self, path: str) -> CachedResponse:
        """Fetch ``path`` and keep it (replacing an older snapshot of it)."""
        entry = await self._fetch(self._checked(path))
        self._entries[path] = entry
        return entry

    async def refresh(self, path: str) -> CachedResponse:
        """Fetch a path that is already a snapshot again; the old one stays on failure."""
        if self._checked(path) not in self._entries:
            raise NotFound(f"{path} is not a snapshot of server {self.server.name}")
        return await self.add(path)

    def remove(self, path: str) -> None:
        if self._entries.pop(self._checked(path), None) is None:
            raise NotFound(f"{path} is not a snapshot of server {self.server.name}")

    async def _fetch(self, path: str) -> CachedResponse:
        target = self._target(path)

        async def start(conn: UpstreamConnection) -> h11.Response:
            url = conn.url
            conn.send(
                h11.Request(
                    method=b"GET",
                    target=self._backends.target_for(target, url),
                    headers=[(b"Host", url.netloc.encode()), (b"Via", hdr.VIA)],
                )
            )
            conn.send(h11.EndOfMessage())
            return await conn.response_head(self._timeout)

        try:
            _, conn, response = await self._backends.exchange(
                None, start, status_of, retry=True, fresh=True
            )
        except PhantomError as exc:
            raise SnapshotError(f"snapshot {path}: {exc}") from None
        try:
            if response.status_code != 200:
                raise SnapshotError(
                    f"snapshot {path}: backend answered {response.status_code}, expected 200"
                )
            body = bytearray()
            while not isinstance(event := await conn.next_event(self._timeout), h11.EndOfMessage):
                if isinstance(event, h11.Data):
                    body += event.data
                    if len(body) > self._max_bytes:
                        raise SnapshotError(
                            f"snapshot {path}: larger than cache_max_object_bytes"
                            f" ({self._max_bytes})"
                        )
        except SnapshotError:
            conn.abort()
            raise
        except PhantomError as exc:
            conn.abort()
            raise SnapshotError(f"snapshot {path}: {exc}") from None
        except BaseException:
            conn.abort()
            raise
        conn.release()
        dropped = {b"content-length", b"age", b"set-cookie"}
        if self.server.surrogate_control:
            dropped.add(surrogate.FIELD)  # for surrogates: phantom is one, clients never see it
        headers = [
            (n, v)
            for n, v in hdr.forward_response_headers(response.headers.raw_items())
            if n.lower() not in dropped
        ]
        headers.append((b"Content-Length", b"%d" % len(body)))
        return CachedResponse(
            status=200,
            reason=response.reason,
            headers=headers,
            body=bytes(body),
            response_time=self._clock(),
            decision=StorageDecision(freshness_lifetime=math.inf, initial_age=0.0),
        )
