"""In-memory response store over cachetools, bounded by entries and bytes.

The store keeps what :mod:`phantom.cache.policy` decided to keep, with the Vary variants of
one URL together; it makes no HTTP decisions itself. Keys are ``policy.store_key(...)`` tuples
``(host, "METHOD:/path?query")``.

Times: ``CachedResponse.response_time`` must be a reading of the store's ``clock`` (monotonic by
default); entries go on that clock once past freshness plus their stale window, or plus the
store's ``stale_keep`` grace when that is longer and the entry may be served stale at all.
"""

from __future__ import annotations

import math
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace
from typing import ClassVar

from cachetools import TLRUCache

from . import policy
from .disk import DiskBodies
from .rules import compile_wildcard

__all__ = ["MAX_VARIANTS", "CacheStore", "CachedResponse", "Key", "Variants"]

Key = tuple[str, str]

#: Rough per-entry bookkeeping cost counted into ``size`` (status line, object overhead).
_ENTRY_OVERHEAD = 64


#: At most this many Vary variants are kept per URL; the oldest goes first.
MAX_VARIANTS = 32


@dataclass(slots=True)
class CachedResponse:
    """A stored response.

    ``headers``: what a hit sends before Age and Cache-Status, computed once at store time
    (lowercase names, hop-by-hop fields removed, original order, repeated fields such as
    Set-Cookie kept as separate tuples, our own Content-Length). ``response_time`` is on the
    store's clock; ``decision`` is the policy's precomputed view (freshness, validators, Vary).
    Treat instances as read-only once stored: they are shared by every hit.

    When phantom compressed the body (``compress_strategy``), ``coding`` is its
    Content-Encoding token, ``headers`` describe the coded body, ``identity_headers`` the
    decoded one (for clients that do not accept the coding), and ``fields`` keeps the origin's
    own fields for revalidation, without what phantom added.
    """

    status: int
    reason: bytes
    headers: list[tuple[bytes, bytes]]
    body: bytes
    response_time: float
    decision: policy.StorageDecision
    coding: bytes | None = None
    identity_headers: list[tuple[bytes, bytes]] | None = None
    fields: list[tuple[bytes, bytes]] | None = None
    # Filesystem mode: the body lives in this file (``body`` is then empty) of this size.
    body_path: str | None = None
    body_file_size: int = 0
    #: ``headers`` (and ``identity_headers``) serialised once at store time (``Name:
    #: value\r\n`` each, Content-Length left out: the connection writes the framing), so a
    #: hit does not rebuild them.
    wire_headers: bytes = field(init=False, repr=False, compare=False)
    identity_wire_headers: bytes = field(init=False, repr=False, compare=False)
    #: The store-clock instant freshness ends.
    expires: float = field(init=False, repr=False, compare=False)
    #: The store-clock instant after which the entry is of no use by its own rules: the end
    #: of freshness plus its stale window (infinite with validators: kept for revalidation
    #: until evicted). Read on every lookup, so computed once.
    retain_until: float = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        self.wire_headers = _wire(self.headers)
        self.identity_wire_headers = _wire(self.identity_headers or ())
        decision = self.decision
        self.expires = self.response_time + decision.freshness_lifetime - decision.initial_age
        self.retain_until = self.expires + decision.stale_window

    @property
    def size(self) -> int:
        """Bytes counted against the store's limits (a body on disk counts too)."""
        header_bytes = sum(
            len(name) + len(value) + 4
            for fields in (self.headers, self.identity_headers or (), self.fields or ())
            for name, value in fields
        )
        header_bytes += len(self.wire_headers) + len(self.identity_wire_headers)
        body = len(self.body) + self.body_file_size
        return body + header_bytes + len(self.reason) + _ENTRY_OVERHEAD

    @property
    def origin_fields(self) -> list[tuple[bytes, bytes]]:
        """The stored fields as the origin sent them (what a 304 updates, RFC 9111 §3.2)."""
        return self.fields if self.fields is not None else self.headers

    def age(self, now: float) -> float:
        """Current age in seconds at ``now`` (store clock), RFC 9111 §4.2.3."""
        return policy.current_age(self.decision.initial_age, self.response_time, now)


Variants = tuple[CachedResponse, ...]


def _wire(headers: Iterable[tuple[bytes, bytes]]) -> bytes:
    """Header lines as sent on a hit; Content-Length is left to the framing."""
    return b"".join(
        b"%s: %s\r\n" % (name, value)
        for name, value in headers
        if name.lower() != b"content-length"
    )


def _variants_size(variants: Variants) -> float:
    return sum(variant.size for variant in variants)


class _Entries(TLRUCache[Key, Variants, float]):
    """A TLRUCache that reports what it drops by itself (expiry, LRU eviction), so that body
    files can go with their entries, and keeps each URL while one of its variants is of use
    (:meth:`kept_until`), or ``hold_for`` seconds after it was stored, whichever comes
    first."""

    def __init__(
        self,
        maxsize: float,
        clock: Callable[[], float],
        on_drop: Callable[[Variants], None],
        hold_for: float,
        stale_keep: float,
    ) -> None:
        super().__init__(maxsize, self._ttu, clock, _variants_size)
        self._hold_for = hold_for
        self._on_drop = on_drop
        self._stale_keep = stale_keep

    def kept_until(self, variant: CachedResponse) -> float:
        """When ``variant`` goes: past its own stale window, or ``stale_keep`` after it
        expired if that is later, so that a request's ``max-stale`` (RFC 9111 §5.2.1.2) or
        ``stale-if-error`` still finds it. Never later for a response that may not be served
        stale at all (must-revalidate and the like, no-cache: RFC 9111 §4.2.4)."""
        decision = variant.decision
        if decision.no_stale or decision.no_cache:
            return variant.retain_until
        return max(variant.retain_until, variant.expires + self._stale_keep)

    def _ttu(self, _key: Key, variants: Variants, now: float) -> float:
        return min(max(self.kept_until(variant) for variant in variants), now + self._hold_for)

    def expire(self, time: float | None = None) -> list[tuple[Key, Variants]]:
        expired = super().expire(time)
        for _, variants in expired:
            self._on_drop(variants)
        return expired

    def popitem(self) -> tuple[Key, Variants]:
        key, variants = super().popitem()
        self._on_drop(variants)
        return key, variants


class CacheStore:
    """Stored responses by URL key, each URL holding up to ``MAX_VARIANTS`` Vary variants
    (newest first); least recently used URLs are evicted first.

    Bounded by ``max_entries`` (URLs) and by ``max_bytes`` (sum of ``CachedResponse.size``); a
    single response larger than ``max_object_bytes`` (or ``max_bytes``) is refused. 404
    responses are held to ``max_404_entries`` URLs of their own (the negative cache). Entries are
    kept while fresh or within their stale window (``CachedResponse.retain_until``), expired
    ones that may be served stale ``stale_keep`` seconds at least (``cache_stale_keep``), all
    within the same bounds, and at most ``hold_for`` seconds (the first level of the shared
    cache keeps copies briefly); whether one may answer a request is the policy's decision
    (:func:`policy.lookup`).
    """

    __slots__ = (
        "_cache",
        "_clock",
        "_disk",
        "_max_404_entries",
        "_max_bytes",
        "_max_entries",
        "_max_object_bytes",
        "_not_found_keys",
    )

    def __init__(
        self,
        max_entries: int,
        max_bytes: int,
        max_object_bytes: int,
        clock: Callable[[], float] = time.monotonic,
        *,
        max_404_entries: int = 100,
        disk: DiskBodies | None = None,
        hold_for: float = math.inf,
        stale_keep: float = 0.0,
    ) -> None:
        if min(max_entries, max_bytes, max_object_bytes, max_404_entries, stale_keep) < 0:
            raise ValueError("cache limits must not be negative")
        self._max_entries = max_entries
        self._max_bytes = max_bytes
        self._max_object_bytes = max_object_bytes
        self._max_404_entries = max_404_entries
        # The negative cache: URLs holding a 404, oldest first, at most max_404_entries, so
        # that a scan of missing pages cannot push out the pages that exist.
        self._not_found_keys: OrderedDict[Key, None] = OrderedDict()
        self._clock = clock
        self._disk = disk
        self._cache = _Entries(max_bytes, clock, self._drop, hold_for, stale_keep)

    #: Whether a lookup that misses here may find the response in a second level, shared with
    #: other processes (:mod:`.shared`): then the request path awaits :meth:`fetch` and asks
    #: :meth:`follow` before it fills.
    shared: ClassVar[bool] = False

    async def fetch(self, key: Key) -> Variants:
        """The second level's variants under ``key`` (none: memory is all there is)."""
        return ()

    async def follow(self, key: Key, seconds: float) -> Variants | None:
        """None: this process fills ``key`` itself (no other process could)."""
        return None

    async def release(self, key: Key) -> None:
        """Done filling ``key`` (see :meth:`follow`)."""

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

    def variants(self, key: Key) -> Variants:
        """The responses stored under ``key`` still worth keeping, newest first. Marks the
        URL recently used."""
        try:
            # The item access checks expiry once (.get would check it twice).
            found = self._cache[key]
        except KeyError:  # absent or expired
            return ()
        if len(found) == 1:
            # Its retain_until is the item's expiry (_ttu), which the access just checked.
            return found
        now = self._clock()
        kept_until = self._cache.kept_until
        return tuple(variant for variant in found if now < kept_until(variant))

    def put(self, key: Key, response: CachedResponse) -> bool:
        """Store ``response`` under ``key``; True if stored.

        It replaces the variant with the same Vary secondary key (RFC 9111 §4.1: the newest
        response wins) and goes first. False when it is larger than ``max_object_bytes`` or
        ``max_bytes``, when ``max_entries`` is 0, when it is already past its keeping, or
        when the disk refused its body; a refused response still removes the variant it would
        have replaced: a newer answer superseded it. Least recently used URLs are evicted to
        stay within both bounds.
        """
        cache = self._cache
        with cache.timer as now:
            previous = cache.pop(key, ())
            kept = tuple(
                variant
                for variant in previous
                if variant.decision.vary != response.decision.vary
                and now < cache.kept_until(variant)
            )
            self._drop(tuple(variant for variant in previous if variant not in kept))
            not_found = response.status == 404
            if (
                response.size > self.max_object_bytes
                or self._max_entries < 1
                or not now < cache.kept_until(response)
                or (not_found and self._max_404_entries < 1)
            ):
                self._replace(key, kept)
                return False
            if self._disk is not None:
                path = self._disk.write(response.body)
                if path is None:
                    self._replace(key, kept)
                    return False
                response = replace(
                    response, body=b"", body_path=path, body_file_size=len(response.body)
                )
            if not_found:
                self._remember_not_found(key)
            cache.expire(now)
            while len(cache) >= self._max_entries:
                cache.popitem()
            variants = (response, *kept)[:MAX_VARIANTS]
            while len(variants) > 1 and _variants_size(variants) > self.max_object_bytes:
                variants = variants[:-1]  # one URL never holds more than one object's worth
            self._drop(tuple(variant for variant in kept if variant not in variants))
            cache[key] = variants  # evicts LRU URLs until the bytes fit
            return True

    def body(self, response: CachedResponse) -> bytes | None:
        """The stored body of ``response``; None when its file is gone or unreadable."""
        if response.body_path is None:
            return response.body
        assert self._disk is not None
        return self._disk.read(response.body_path)

    def _drop(self, variants: Variants) -> None:
        """Entries leave the store: their body files go with them."""
        if self._disk is None:
            return
        for variant in variants:
            if variant.body_path is not None:
                self._disk.delete(variant.body_path)

    def _remember_not_found(self, key: Key) -> None:
        """Count ``key`` in the negative cache; past its capacity the oldest 404s go."""
        keys = self._not_found_keys
        keys[key] = None
        keys.move_to_end(key)
        while len(keys) > self._max_404_entries:
            oldest, _ = keys.popitem(last=False)
            variants = self._cache.pop(oldest, ())
            self._drop(tuple(v for v in variants if v.status == 404))
            self._replace(oldest, tuple(v for v in variants if v.status != 404))

    def _replace(self, key: Key, variants: Variants) -> None:
        """Put ``variants`` (already known to the store) back under ``key``, if any."""
        if variants:
            self._cache[key] = variants

    def discard(self, key: Key) -> int:
        """Remove every variant under ``key`` (e.g. after an unsafe request, RFC 9111 §4.4).
        Returns how many responses went."""
        return self._remove(key)

    def _remove(self, key: Key) -> int:
        """``discard`` in this store only: what a pattern's removal does key by key (a shared
        store tells the fleet once per pattern, not once per key)."""
        with self._cache.timer:
            variants = self._cache.pop(key, ())
            self._drop(variants)
            return len(variants)

    def invalidate(self, pattern: str) -> int:
        """Remove entries whose printable key (``"GET:/path?query"``) matches ``pattern``, on
        every host; ``*`` matches any characters including ``/``, all else is literal (so
        ``"GET:/api/*"``, ``"*:/img/*.png"``, ``"*"``). Returns how many responses went."""
        matches = compile_wildcard(pattern)
        cache = self._cache
        with cache.timer as now:
            cache.expire(now)
            doomed = [key for key in cache if matches(key[1])]
            return sum(self._remove(key) for key in doomed)

    async def purge(self, pattern: str) -> int:
        """:meth:`invalidate`, as the control API calls it: a shared store also removes the
        entries from Redis and the other processes before it returns."""
        return self.invalidate(pattern)

    async def purge_all(self) -> int:
        """:meth:`invalidate_all`, as the control API calls it (see :meth:`purge`)."""
        return self.invalidate_all()

    def invalidate_all(self) -> int:
        """Remove every entry; returns how many responses there were."""
        count = len(self)
        for variants in self._cache.values():
            self._drop(variants)
        self._cache.clear()
        self._not_found_keys.clear()
        return count

    def __len__(self) -> int:
        """Number of stored responses (variants included)."""
        return sum(len(variants) for variants in self._cache.values())

    @property
    def total_bytes(self) -> int:
        """Sum of ``size`` over stored responses."""
        return int(self._cache.currsize)
