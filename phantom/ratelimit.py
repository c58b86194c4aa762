"""Rate limits: ``rate_limit = {requests, per, burst, key}`` per server, and the byte pacing of
``tunnel_rate``. Both are GCRA (the generic cell rate algorithm, a token bucket kept as one
number): each key remembers only its "theoretical arrival time", the moment its bucket would
be full again, so memory is one float per active key.

A key is the client address (``client_ip``), a claim of the verified token (``jwt:sub``), or a
request field (``header:x-api-key``); a request without the claim or field is counted by its
client address. Keys are kept in least-recently-seen order and the oldest are forgotten past
``rate_limit_max_keys``: a forgotten key starts again with a full bucket.

Answers follow draft-ietf-httpapi-ratelimit-headers: ``RateLimit-Policy: "default";q=100;w=60``
names the quota, ``RateLimit: "default";r=19;t=1`` says what is left and in how many seconds
the bucket is full again; a refusal is ``429`` with ``Retry-After``.

Pure module: the clock is injected.
"""

from __future__ import annotations

import hashlib
import math
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from .config import RateLimitConfig

__all__ = ["Limiter", "Pacer", "Quota", "rate_key"]

_POLICY = b'"default"'
# Field values longer than this are hashed into the key (memory per key stays small).
_LONGEST_KEY_VALUE = 64


class Quota:
    """``requests`` per ``per`` seconds, ``burst`` at once, as GCRA counts it: each request
    "costs" ``interval`` seconds, and a key may run up to ``capacity`` seconds ahead."""

    __slots__ = ("interval", "capacity", "policy")

    def __init__(self, config: RateLimitConfig) -> None:
        self.interval = config.per / config.requests
        self.capacity = config.burst * self.interval
        self.policy = b"%s;q=%d;w=%d" % (_POLICY, config.requests, math.ceil(config.per))

    def fields(self, full_in: float, wait: float) -> list[tuple[bytes, bytes]]:
        """RateLimit-Policy and RateLimit for a key whose bucket is full again in ``full_in``
        seconds (with Retry-After when a request was refused for ``wait`` > 0 seconds)."""
        left = int((self.capacity - full_in) / self.interval + 1e-9)
        fields = [
            (b"RateLimit-Policy", self.policy),
            (b"RateLimit", b"%s;r=%d;t=%d" % (_POLICY, left, math.ceil(full_in))),
        ]
        if wait > 0:
            fields.append((b"Retry-After", b"%d" % max(1, math.ceil(wait))))
        return fields


class Limiter:
    """One server's ``rate_limit`` in this process: ``requests`` per ``per`` seconds and key,
    ``burst`` at once, for at most ``max_keys`` keys. (:mod:`phantom.sharedlimit` keeps the
    same arithmetic in Redis for ``shared = true``.)"""

    __slots__ = ("_clock", "_interval", "_capacity", "_max_keys", "_arrivals", "quota")

    def __init__(
        self,
        config: RateLimitConfig,
        max_keys: int,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._clock = clock
        self.quota = Quota(config)
        self._interval = self.quota.interval  # seconds one request "costs"
        self._capacity = self.quota.capacity  # the bucket, in seconds
        self._max_keys = max_keys
        self._arrivals: OrderedDict[str, float] = OrderedDict()

    def __len__(self) -> int:
        return len(self._arrivals)

    def take(self, key: str) -> float:
        """Count one request of ``key``: 0.0, or when its bucket is empty (nothing counted)
        the seconds until one more request is allowed."""
        now = self._clock()
        arrivals = self._arrivals
        arrival = arrivals.get(key)
        if arrival is not None:
            arrivals.move_to_end(key)
        if arrival is None or arrival < now:
            arrival = now  # idle long enough: a full bucket
        after = arrival + self._interval
        if after - now > self._capacity:
            return after - now - self._capacity
        arrivals[key] = after
        if len(arrivals) > self._max_keys:
            arrivals.popitem(last=False)
        return 0.0

    def full_in(self, key: str) -> float:
        """Seconds until ``key``'s bucket is full again, as :meth:`take` left it."""
        now = self._clock()
        return max(self._arrivals.get(key, now) - now, 0.0)


class Pacer:
    """Byte pacing for one direction of a tunnel: ``charge(n)`` after ``n`` bytes went
    through says how long to stop reading so the average stays at ``rate`` bytes a second.
    Up to ``burst`` seconds' worth may pass at once."""

    __slots__ = ("_clock", "_rate", "_burst", "_arrival")

    def __init__(
        self, rate: int, burst: float = 0.05, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._clock = clock
        self._rate = float(rate)
        self._burst = burst
        self._arrival = clock()

    def charge(self, size: int) -> float:
        """Seconds to pause before reading more (0: go on)."""
        now = self._clock()
        self._arrival = max(self._arrival, now) + size / self._rate
        return max(0.0, self._arrival - now - self._burst)


def _short(value: str) -> str:
    if len(value) <= _LONGEST_KEY_VALUE:
        return value
    return hashlib.blake2b(value.encode(), digest_size=16).hexdigest()


def rate_key(
    spec: str,
    client_ip: str,
    headers: Iterable[tuple[bytes, bytes]] = (),
    claims: Mapping[str, Any] | None = None,
) -> str:
    """The key a request is counted under. ``spec`` is ``client_ip``, ``jwt:CLAIM`` (the
    claim of a *verified* token: an unverified one could name anyone) or ``header:NAME``
    (lowercase); without the claim or field, the client address. The kinds are prefixed so
    a field can't be made to name someone's address."""
    kind, _, name = spec.partition(":")
    if kind == "jwt" and claims is not None:
        value = claims.get(name)
        if isinstance(value, (str, int)) and not isinstance(value, bool):
            return "jwt:" + _short(str(value))
    elif kind == "header":
        wanted = name.encode("ascii")
        for field, value in headers:
            if field == wanted:
                return "header:" + _short(value.decode("latin-1"))
    return "ip:" + client_ip
