"""In-memory response store over cachetools, bounded by entries and bytes.

The store keeps what :mod:`phantom.cache.policy` decided to keep and hands back only fresh
entries; it makes no HTTP decisions itself. Keys are ``policy.store_key(...)`` tuples
``(host, "METHOD:/path?query")``.

Times: ``CachedResponse.response_time`` must be a reading of the store's ``clock`` (monotonic by
default); entries expire on that clock when ``current_age`` reaches ``freshness_lifetime``.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

from cachetools import TLRUCache

from . import policy

__all__ = ["CacheStore", "CachedResponse", "Key"]

Key = tuple[str, str]

#: Rough per-entry bookkeeping cost counted into ``size`` (status line, object overhead).
_ENTRY_OVERHEAD = 64


@dataclass(slots=True)
class CachedResponse:
    """A stored response.

    ``headers``: lowercase names, hop-by-hop fields already removed, original order, repeated
    fields (e.g. several Set-Cookie) kept as separate tuples. ``response_time`` is on the store's
    clock; ``initial_age`` and ``freshness_lifetime`` come from ``policy.StorageDecision``.
    Treat instances as read-only once stored: they are shared by every hit.
    """

    status: int
    reason: bytes
    headers: list[tuple[bytes, bytes]]
    body: bytes
    response_time: float
    initial_age: float
    freshness_lifetime: float
    #: ``headers`` serialised once at store time (``Name: value\r\n`` each, Content-Length
    #: left out: the connection writes the framing), so a hit does not rebuild them.
    wire_headers: bytes = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        self.wire_headers = b"".join(
            b"%s: %s\r\n" % (name, value)
            for name, value in self.headers
            if name.lower() != b"content-length"
        )

    @property
    def size(self) -> int:
        """Bytes counted against the store's limits."""
        header_bytes = sum(len(name) + len(value) + 4 for name, value in self.headers)
        return len(self.body) + header_bytes + len(self.reason) + _ENTRY_OVERHEAD

    def age(self, now: float) -> float:
        """Current age in seconds at ``now`` (store clock), RFC 9111 §4.2.3."""
        return policy.current_age(self.initial_age, self.response_time, now)

    def ttl(self, now: float) -> float:
        """Remaining freshness in seconds at ``now`` (store clock); <= 0 means stale."""
        return self.freshness_lifetime - self.age(now)


def _expires_at(response: CachedResponse) -> float:
    """The store-clock instant at which ``current_age`` reaches ``freshness_lifetime``."""
    return response.response_time + response.freshness_lifetime - response.initial_age


def _ttu(_key: Key, response: CachedResponse, _now: float) -> float:
    return _expires_at(response)


def _entry_size(response: CachedResponse) -> float:
    return response.size


def _compile_pattern(pattern: str) -> Callable[[str], bool]:
    """A matcher for ``pattern``: ``*`` matches any run of characters (``/`` included), every
    other character is literal. Linear-time matching, no regex backtracking."""
    parts = pattern.split("*")
    if len(parts) == 1:
        return lambda text: text == pattern
    head, middle, tail = parts[0], [p for p in parts[1:-1] if p], parts[-1]
    min_length = len(head) + len(tail) + sum(len(p) for p in middle)

    def match(text: str) -> bool:
        if len(text) < min_length or not text.startswith(head) or not text.endswith(tail):
            return False
        position, end = len(head), len(text) - len(tail)
        for part in middle:
            found = text.find(part, position, end)
            if found < 0:
                return False
            position = found + len(part)
        return True

    return match


class CacheStore:
    """Fresh responses by key, least recently used evicted first.

    Bounded by ``max_entries`` and by ``max_bytes`` (sum of ``CachedResponse.size``); a single
    response larger than ``max_object_bytes`` (or ``max_bytes``) is refused. Expired entries are
    never returned and are dropped lazily.
    """

    __slots__ = ("_cache", "_clock", "_max_bytes", "_max_entries", "_max_object_bytes")

    def __init__(
        self,
        max_entries: int,
        max_bytes: int,
        max_object_bytes: int,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if max_entries < 0 or max_bytes < 0 or max_object_bytes < 0:
            raise ValueError("cache limits must not be negative")
        self._max_entries = max_entries
        self._max_bytes = max_bytes
        self._max_object_bytes = max_object_bytes
        self._clock = clock
        self._cache: TLRUCache[Key, CachedResponse, float] = TLRUCache(
            max_bytes, _ttu, clock, _entry_size
        )

    @property
    def clock(self) -> Callable[[], float]:
        """The clock entries expire on; read it for request_time / response_time."""
        return self._clock

    @property
    def max_entries(self) -> int:
        return self._max_entries

    @property
    def max_bytes(self) -> int:
        return self._max_bytes

    @property
    def max_object_bytes(self) -> int:
        """Largest ``CachedResponse.size`` accepted: stop buffering a body beyond this."""
        return min(self._max_object_bytes, self._max_bytes)

    def get(self, key: Key) -> CachedResponse | None:
        """The fresh response stored under ``key``, or None. Marks it recently used."""
        with self._cache.timer:
            return self._cache.get(key)

    def put(self, key: Key, response: CachedResponse) -> bool:
        """Store ``response`` under ``key``, replacing any previous one; True if stored.

        False when it is larger than ``max_object_bytes`` or ``max_bytes``, when
        ``max_entries`` is 0, or when it is already stale. A refused response still removes
        what was stored under ``key``: a newer answer superseded it. Least recently used
        entries are evicted to stay within ``max_entries`` and ``max_bytes``.
        """
        cache = self._cache
        with cache.timer as now:
            size = response.size
            if (
                size > self.max_object_bytes
                or self._max_entries < 1
                or not now < _expires_at(response)
            ):
                cache.pop(key, None)
                return False
            cache.expire(now)
            if key not in cache:
                while len(cache) >= self._max_entries:
                    cache.popitem()
            cache[key] = response  # evicts LRU entries until the bytes fit
            return True

    def discard(self, key: Key) -> bool:
        """Remove the entry under ``key`` (e.g. after an unsafe request, RFC 9111 §4.4).
        True if a fresh entry was removed."""
        with self._cache.timer:
            return self._cache.pop(key, None) is not None

    def invalidate(self, pattern: str) -> int:
        """Remove entries whose printable key (``"GET:/path?query"``) matches ``pattern``, on
        every host; ``*`` matches any characters including ``/``, all else is literal (so
        ``"GET:/api/*"``, ``"*:/img/*.png"``, ``"*"``). Returns how many were removed."""
        matches = _compile_pattern(pattern)
        cache = self._cache
        with cache.timer as now:
            cache.expire(now)
            doomed = [key for key in cache if matches(key[1])]
            for key in doomed:
                del cache[key]
        return len(doomed)

    def invalidate_all(self) -> int:
        """Remove every entry; returns how many fresh entries there were."""
        count = len(self._cache)
        self._cache.clear()
        return count

    def __len__(self) -> int:
        """Number of fresh entries."""
        return len(self._cache)

    @property
    def total_bytes(self) -> int:
        """Sum of ``size`` over fresh entries."""
        return int(self._cache.currsize)
