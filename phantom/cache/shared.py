"""``cache_storage_mode = "redis"``: one cache for every worker and host sharing a Redis.

:class:`SharedStore` is the store of one server: an in-process first level (the memory
store itself, bounded by ``cache_l1_max_bytes``, each entry kept at most ``cache_l1_ttl``
seconds) in front of Redis, the second level shared by every process with the same Redis,
``key_prefix`` and server name. Lookups stay synchronous and local (a first-level hit costs
what a memory hit costs); on a first-level miss the caller awaits :meth:`SharedStore.fetch`,
one Redis round trip. What the store keeps is written to Redis in the background; what it
drops is deleted there and announced.

Keys in Redis: ``{prefix}{server}:e:{origin} {METHOD:/path?query}`` holds a URL's variants
(:mod:`.serial`), expiring with them; ``{prefix}{server}:lock:...`` is the fill lock of a URL
(fleet-wide coalescing). Invalidation is published on ``{prefix}invalidate`` (pub/sub:
delivered in milliseconds; the first-level TTL bounds what a lost message can leave behind,
and invalidations Redis could not take are done again when it is back). Pattern invalidation
walks the server's keys with SCAN, never KEYS.
"""

from __future__ import annotations

import asyncio
import logging
import math
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from typing import TYPE_CHECKING, Any

from ..redis_link import RedisLink, Unavailable
from .serial import decode_variants, encode_variants
from .store import CachedResponse, CacheStore, Key, Variants

if TYPE_CHECKING:
    from redis.asyncio import Redis

__all__ = ["SharedStore"]

log = logging.getLogger("phantom.cache")

# Redis keeps an entry that could be revalidated forever (validators) at most this long.
LONGEST_KEEP_SECONDS = 24 * 3600
# How often a process waiting for another one's fill looks for the response.
FILL_POLL_SECONDS = 0.01
# Invalidations kept for when Redis is back; beyond this many, everything is invalidated then.
MAX_PENDING = 256
SCAN_BATCH = 1000

# Deletes the lock only if it is still ours (it may have expired and been taken by another).
_RELEASE = """
if redis.call("get", KEYS[1]) == ARGV[1] then return redis.call("del", KEYS[1]) end
return 0
"""


@dataclass(frozen=True, slots=True)
class _Purge:
    """One invalidation: of a key, of a pattern (over every host) or of everything."""

    key: Key | None = None
    pattern: str | None = None

    def message(self) -> dict[str, Any]:
        if self.key is not None:
            return {"key": list(self.key)}
        return {"pattern": self.pattern} if self.pattern is not None else {"all": True}


async def _scan(client: Redis, *, cursor: int, match: str) -> tuple[int, list[bytes | str]]:
    return await client.scan(cursor, match=match, count=SCAN_BATCH)


async def _unlink(client: Redis, *, names: list[bytes | str]) -> int:
    return await client.unlink(*names)


def _glob(text: str, wildcard: bool = False) -> str:
    """``text`` as a Redis glob pattern: literal, but for ``*`` with ``wildcard`` (the
    invalidation patterns' only wildcard, which means in Redis what it means in memory)."""
    special = "?[]\\" if wildcard else "*?[]\\"
    return "".join("\\" + ch if ch in special else ch for ch in text)


class SharedStore(CacheStore):
    shared = True
    __slots__ = ("_keeps", "_link", "_pending", "_prefix", "_server", "_token", "_writes")

    def __init__(
        self,
        link: RedisLink,
        server: str,
        *,
        max_entries: int,
        max_bytes: int,
        max_object_bytes: int,
        max_404_entries: int = 100,
        l1_ttl: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        super().__init__(
            max_entries,
            max_bytes,
            max_object_bytes,
            clock,
            max_404_entries=max_404_entries,
            hold_for=l1_ttl,
        )
        self._link = link
        self._server = server
        self._keeps = l1_ttl > 0  # whether the first level keeps anything at all
        self._prefix = f"{link.config.key_prefix}{server}:"
        self._pending: list[_Purge] = []
        self._token = secrets.token_hex(8)  # names our fill locks
        self._writes: dict[Key, asyncio.Future[object]] = {}  # to Redis, by key
        link.join(server, self)

    def entry_name(self, key: Key) -> str:
        return f"{self._prefix}e:{key[0]} {key[1]}"

    def _lock_name(self, key: Key) -> str:
        return f"{self._prefix}lock:{key[0]} {key[1]}"

    def _wall_offset(self) -> float:
        return time.time() - self.clock()

    # -- the second level -------------------------------------------------------------------

    async def fetch(self, key: Key) -> Variants:
        """After a first-level miss: what Redis holds under ``key``, now in the first level
        too; () when it holds nothing or is unavailable."""
        name = self.entry_name(key)
        try:
            raw = await self._link.call(lambda r: r.get(name))
        except Unavailable:
            return ()
        return () if raw is None else self._adopt(key, raw)

    def _adopt(self, key: Key, raw: bytes | str) -> Variants:
        try:
            if not isinstance(raw, bytes):
                raise ValueError("not bytes")
            variants = decode_variants(raw, self._wall_offset())
        except ValueError as exc:
            log.warning("cache: %s in Redis is not a phantom entry (%s); ignored", key[1], exc)
            return ()
        if self._keeps:
            for variant in reversed(variants):  # oldest first: the newest ends up first
                CacheStore.put(self, key, variant)
        # As read, not as kept: with cache_l1_ttl = 0 the first level keeps nothing.
        now = self.clock()
        return tuple(variant for variant in variants if now < variant.retain_until)

    def put(self, key: Key, response: CachedResponse) -> bool:
        """Store in the first level and, in the background, in Redis (the URL's variants as
        they are now: a response that was refused still removed the one it replaced)."""
        stored = super().put(key, response)
        # What the first level holds now (the other Vary variants with it); with
        # cache_l1_ttl = 0 it holds nothing, and the response goes alone.
        variants = self.variants(key) or ((response,) if stored else ())
        writing = self._link.background(self._write(key, variants))
        if writing is not None:
            self._writes[key] = writing
            writing.add_done_callback(lambda done: self._written(key, done))
        return stored

    def _written(self, key: Key, done: asyncio.Future[object]) -> None:
        if self._writes.get(key) is done:
            del self._writes[key]

    async def _write(self, key: Key, variants: Variants) -> None:
        name = self.entry_name(key)
        try:
            if not variants:
                await self._link.call(lambda r: r.delete(name))
                return
            keep = max(v.retain_until for v in variants) - self.clock()
            milliseconds = max(1, math.ceil(min(keep, LONGEST_KEEP_SECONDS) * 1000))
            value = encode_variants(variants, self._wall_offset())
            await self._link.call(lambda r: r.set(name, value, px=milliseconds))
        except Unavailable:
            pass  # not shared this time; the next store of the URL tries again

    # -- invalidation -----------------------------------------------------------------------

    def discard(self, key: Key) -> int:
        """Remove ``key`` here and, in the background, everywhere (after an unsafe method)."""
        count = super().discard(key)
        self._link.background(self._purge_shared(_Purge(key=key)))
        return count

    def invalidate(self, pattern: str) -> int:
        """Remove matching entries here; the fleet follows in the background (``purge``
        waits for it)."""
        count = super().invalidate(pattern)
        self._link.background(self._purge_shared(_Purge(pattern=pattern)))
        return count

    def invalidate_all(self) -> int:
        count = super().invalidate_all()
        self._link.background(self._purge_shared(_Purge()))
        return count

    async def purge(self, pattern: str) -> int:
        """Remove matching entries here, in Redis and (announced) in every other process;
        the count of responses here plus URLs removed from Redis."""
        return CacheStore.invalidate(self, pattern) + await self._purge_shared(
            _Purge(pattern=pattern)
        )

    async def purge_all(self) -> int:
        return CacheStore.invalidate_all(self) + await self._purge_shared(_Purge())

    async def _purge_shared(self, purge: _Purge) -> int:
        """Delete in Redis what ``purge`` names and announce it; kept for later when Redis
        is unavailable. Returns how many URLs went from Redis."""
        try:
            if purge.key is not None:
                name = self.entry_name(purge.key)
                count: int = await self._link.call(lambda r: r.delete(name))
            else:
                suffix = "*" if purge.pattern is None else "* " + _glob(purge.pattern, True)
                count = await self._delete_matching(f"{_glob(self._prefix)}e:{suffix}")
            await self._link.publish(self._server, purge.message())
        except Unavailable:
            self._pending.append(purge)
            if len(self._pending) > MAX_PENDING:
                self._pending = [_Purge()]
            return 0
        return count

    async def _delete_matching(self, glob: str) -> int:
        count, cursor = 0, 0
        while True:
            cursor, names = await self._link.call(partial(_scan, cursor=cursor, match=glob))
            if names:
                count += await self._link.call(partial(_unlink, names=names))
            if cursor == 0:
                return count

    def invalidated_elsewhere(self, message: dict[str, Any]) -> None:
        """Another process invalidated: drop the same from the first level."""
        key, pattern = message.get("key"), message.get("pattern")
        if isinstance(key, list) and len(key) == 2 and all(isinstance(k, str) for k in key):
            CacheStore.discard(self, (key[0], key[1]))
        elif isinstance(pattern, str):
            CacheStore.invalidate(self, pattern)
        elif message.get("all") is True:
            CacheStore.invalidate_all(self)

    async def rejoined(self) -> None:
        pending, self._pending = self._pending, []
        for purge in pending:
            await self._purge_shared(purge)

    # -- fleet-wide coalescing --------------------------------------------------------------

    async def follow(self, key: Key, seconds: float) -> Variants | None:
        """Before a miss on ``key`` goes to the backend: None when this process is to go (it
        holds the fill lock of ``key`` now, for at most ``seconds``; :meth:`release` it once
        the response is stored), or when Redis is unavailable (each process fills for
        itself); else what the process holding the lock stored, waited for at most
        ``seconds``: () when it stored nothing (then go without the lock)."""
        if await self._lead(key, seconds):
            return None
        return await self._await_fill(key, seconds)

    async def _lead(self, key: Key, seconds: float) -> bool:
        name, milliseconds = self._lock_name(key), max(1, math.ceil(seconds * 1000))
        try:
            return bool(
                await self._link.call(lambda r: r.set(name, self._token, nx=True, px=milliseconds))
            )
        except Unavailable:
            return True

    async def release(self, key: Key) -> None:
        """Give the fill lock back, once what was stored under ``key`` is in Redis: a waiter
        that finds the lock gone and no response fetches for itself."""
        writing = self._writes.get(key)
        if writing is not None:
            await asyncio.wait({writing})
        name = self._lock_name(key)
        try:
            await self._link.call(lambda r: r.eval(_RELEASE, 1, name, self._token))
        except Unavailable:
            pass  # it expires by itself

    async def _await_fill(self, key: Key, seconds: float) -> Variants:
        """The variants the holder of the fill lock stored (now in the first level too), or
        () when the lock went without a response (not storable, or its holder died and the
        lock expired), when ``seconds`` are up or when Redis is unavailable."""
        entry, lock = self.entry_name(key), self._lock_name(key)
        deadline = self.clock() + seconds
        while self.clock() < deadline:
            try:
                raw, holder = await self._link.call(lambda r: r.mget(entry, lock))
            except Unavailable:
                return ()
            if raw is not None:
                return self._adopt(key, raw)
            if holder is None:
                return ()
            await asyncio.sleep(FILL_POLL_SECONDS)
        return ()
