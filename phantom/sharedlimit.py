"""``rate_limit.shared = true``: one budget per key for every worker and host on the
``[redis]`` Redis, decided there atomically by a Lua script.

The script is :class:`phantom.ratelimit.Limiter`'s GCRA step, on the key's theoretical
arrival time kept in Redis (``<key_prefix>rl:<server>:<rate key>``, in microseconds of Redis's
own clock, ``TIME``: the hosts' clocks never have to agree). The key expires when its bucket
is full again (at most the burst window), so idle clients cost Redis nothing. The script runs
by EVALSHA; a Redis that does not know it yet (a restart, ``SCRIPT FLUSH``) answers NOSCRIPT,
and EVAL runs it and loads it. Needs Redis 5 or Valkey (``TIME`` before a write in a script).

Any failure is :class:`~phantom.redis_link.Unavailable`: the caller counts locally.
"""

from __future__ import annotations

import hashlib
from typing import TYPE_CHECKING

from .ratelimit import Quota
from .redis_link import RedisLink

if TYPE_CHECKING:
    from redis.asyncio import Redis

__all__ = ["SCRIPT", "SharedLimiter"]

MICROSECONDS = 1_000_000

# KEYS[1]: the arrival time; ARGV: interval, capacity (µs). Returns {allowed, wait, full_in}
# in whole µs (rounded up). Numbers reach SET as %.17g: µs since 1970 are < 2^53, so the
# stored time keeps its fraction of a µs; the key lives at least 1 ms.
SCRIPT = """
local interval = tonumber(ARGV[1])
local capacity = tonumber(ARGV[2])
local time = redis.call('TIME')
local now = tonumber(time[1]) * 1000000 + tonumber(time[2])
local arrival = tonumber(redis.call('GET', KEYS[1]))
if arrival == nil or arrival < now then
  arrival = now
end
local after = arrival + interval
if after - now > capacity then
  return {0, math.ceil(after - now - capacity), math.ceil(arrival - now)}
end
redis.call('SET', KEYS[1], after, 'PX', math.max(1, math.ceil((after - now) / 1000)))
return {1, 0, math.ceil(after - now)}
"""
SCRIPT_SHA = hashlib.sha1(SCRIPT.encode()).hexdigest()


class SharedLimiter:
    """One server's shared ``rate_limit``: :meth:`take` is one Redis round trip."""

    __slots__ = ("_link", "_prefix", "_args")

    def __init__(self, link: RedisLink, server: str, quota: Quota) -> None:
        self._link = link
        self._prefix = f"{link.config.key_prefix}rl:{server}:"
        # Fractions kept: 1e9 requests a second is an interval of 0.001 µs, not 0.
        self._args = (quota.interval * MICROSECONDS, quota.capacity * MICROSECONDS)

    async def take(self, key: str) -> tuple[float, float]:
        """Count one request of ``key`` fleet-wide: (seconds to wait, 0.0 when it was
        counted; seconds until its bucket is full again). Unavailable when Redis is."""
        name = self._prefix + key

        async def run(redis: Redis) -> list[int]:
            from redis.exceptions import NoScriptError

            try:
                return await redis.evalsha(SCRIPT_SHA, 1, name, *self._args)  # type: ignore[no-any-return]
            except NoScriptError:
                return await redis.eval(SCRIPT, 1, name, *self._args)  # type: ignore[no-any-return]

        _, wait, full_in = await self._link.call(run)
        return wait / MICROSECONDS, full_in / MICROSECONDS
