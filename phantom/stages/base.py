"""The stages' one small interface: a request view in, "go on" (None) or an answer out."""

from __future__ import annotations

from collections.abc import Awaitable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from ..cache.store import CachedResponse, CacheStore
from ..clients import client_address
from ..config import Network, ServerConfig
from ..snapshots import Snapshots
from ..webhooks import Webhooks

if TYPE_CHECKING:
    from ..jwtauth import Verifier
    from ..redis_link import RedisLink


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
    # The edge guards' part (:mod:`phantom.stages.auth`, ``cors``, ``ratelimit``), read by
    # the connection before the cache and the backend, and where answers are written:
    claims: Mapping[str, Any] | None = None  # of the verified token (auth, jwt: rate keys)
    token_param: bytes | None = None  # a query parameter taken out of every target
    drop_fields: frozenset[bytes] = frozenset()  # client fields the backend never sees
    forward_fields: tuple[tuple[bytes, bytes], ...] = ()  # what it sees instead
    answer_fields: tuple[tuple[bytes, bytes], ...] = ()  # added to the answer
    owns_cors: bool = False  # the backend's own Access-Control-* fields are dropped
    expires: float | None = None  # a tunnel is closed then (the token's exp, time.time())
    # The token came in a cookie or the query: the cache takes the request as one with
    # Authorization (stored only when shareable, RFC 9111 §3.5).
    token_elsewhere: bool = False
    _client: str | None = None

    def client(self, trusted: tuple[Network, ...]) -> str:
        """The client's address after ``trusted_proxies`` (the peer's, unless it is one)."""
        if not trusted:
            return self.client_ip  # as the socket gave it: already in its one spelling
        if self._client is None:
            chain = [v for n, v in self.headers if n == b"x-forwarded-for"]
            self._client = client_address(self.client_ip, chain, trusted)
        return self._client

    @property
    def passes_on(self) -> bool:
        """Whether a guard left something for the steps after it (the fast lane leaves such a
        request to the loop, which reads all of it)."""
        return bool(
            self.token_param or self.drop_fields or self.answer_fields or self.expires
            or self.owns_cors or self.token_elsewhere
        )


@dataclass(frozen=True, slots=True)
class Answer:
    """An answer of phantom's own; ``headers`` replace the default text/plain Content-Type."""

    status: int
    body: bytes
    headers: list[tuple[bytes, bytes]] | None = None
    reason: str | None = None  # a guard's refusal: the access log's reason=, the metric's label


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

    @property
    def trusted_proxies(self) -> tuple[Network, ...]: ...

    @property
    def verifier(self) -> Verifier | None: ...

    @property
    def redis(self) -> RedisLink | None: ...  # the process's link to [redis], if any
