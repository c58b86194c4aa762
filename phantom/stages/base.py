"""The stages' one small interface: a request view in, "go on" (None) or an answer out."""

from __future__ import annotations

from collections.abc import Awaitable, Sequence
from dataclasses import dataclass
from typing import Protocol

from ..cache.store import CachedResponse, CacheStore
from ..config import ServerConfig
from ..snapshots import Snapshots
from ..webhooks import Webhooks


@dataclass(slots=True)
class RequestView:
    """What a stage sees of a request, once it is routed to a server."""

    method: bytes
    target: bytes  # in its normal form, as routing left it: what the backend will be sent
    # Its fields, names lowercased: h11's Headers as they are, or the fast lane's list.
    headers: Sequence[tuple[bytes, bytes]]
    client_ip: str  # the peer's address
    upgrade: Sequence[bytes] = ()  # the protocols it asks to switch to (empty: none)
    # Set by a stage for the steps after it: the cache key a cache_key webhook chose.
    cache_key: str | None = None


@dataclass(frozen=True, slots=True)
class Answer:
    """An answer of phantom's own; ``headers`` replace the default text/plain Content-Type."""

    status: int
    body: bytes
    headers: list[tuple[bytes, bytes]] | None = None


@dataclass(frozen=True, slots=True)
class Stored:
    """A stored response as the answer (a snapshot), with its age and Cache-Status value."""

    entry: CachedResponse
    age: float
    cache_status: bytes


Result = Answer | Stored | None  # None: the request goes on


class Stage(Protocol):
    """A guard that decides at once: None to let the request go on, or what the client gets
    instead."""

    def check(self, view: RequestView) -> Result: ...


class WaitingStage(Protocol):
    """A guard that has to wait to decide (``async def check``)."""

    def check(self, view: RequestView) -> Awaitable[Result]: ...


class SiteParts(Protocol):
    """What a stage may be built from: one server's configuration and parts."""

    @property
    def config(self) -> ServerConfig: ...

    @property
    def cache(self) -> CacheStore: ...

    @property
    def snapshots(self) -> Snapshots: ...

    @property
    def webhooks(self) -> Webhooks: ...
