"""How a backend is chosen among those that may take a request (``load_balance``).

Pure module. Each strategy is built for one tier (the primary backends, or the backups) and
asked ``choose(candidates, key)``: ``candidates`` are the tier's backends that admit a request
now, never empty, in the tier's order; ``key`` is the request's hash key (consistent_hash only;
None when the request has none).

- ``round_robin``: nginx's smooth weighted round robin. Weights 5, 1, 1 give a a a b a c a, not
  a a a a a b c: each backend's share is exact over every sum-of-weights picks, and spread.
- ``least_connections``: the least ``load / weight`` (in-flight requests plus open tunnels);
  ties go round robin, as in nginx.
- ``random_two``: two backends drawn at random in proportion to their weights, the less loaded
  taken (the power of two choices): nearly least_connections' balance without scanning, and no
  herd on one backend when several phantoms share the backends.
- ``consistent_hash``: a hash ring with points in proportion to the weights (the heaviest
  backend gets :data:`RING_POINTS`). A key goes to the first point at or after its hash whose
  backend is a candidate, so when a backend leaves (down, open, draining) only its own keys
  move, each to the next backend on the ring, and they come back when it does.
"""

from __future__ import annotations

import bisect
import hashlib
import random
import zlib
from collections.abc import Sequence
from typing import Final, Protocol

from .backend import Backend

__all__ = [
    "RING_POINTS",
    "ConsistentHash",
    "LeastConnections",
    "RandomTwo",
    "RoundRobin",
    "Strategy",
    "hash64",
    "key_hash",
    "strategy_for",
]

RING_POINTS: Final = 4096


class Strategy(Protocol):
    def choose(self, candidates: Sequence[Backend], key: bytes | None) -> Backend: ...


def _smooth_round_robin(candidates: Sequence[Backend]) -> Backend:
    total = 0
    best = candidates[0]
    for backend in candidates:
        backend.current += backend.weight
        total += backend.weight
        if backend.current > best.current:
            best = backend
    best.current -= total
    return best


class RoundRobin:
    def choose(self, candidates: Sequence[Backend], key: bytes | None) -> Backend:
        return _smooth_round_robin(candidates)


class LeastConnections:
    def choose(self, candidates: Sequence[Backend], key: bytes | None) -> Backend:
        best = candidates[0]
        least = best.inflight + best.tunnels
        ties = 0
        for backend in candidates:
            load = backend.inflight + backend.tunnels
            # load / weight compared without division.
            left, right = load * best.weight, least * backend.weight
            if left < right:
                best, least, ties = backend, load, 1
            elif left == right:
                ties += 1
        if ties == 1:
            return best
        return _smooth_round_robin(
            [b for b in candidates if (b.inflight + b.tunnels) * best.weight == least * b.weight]
        )


class RandomTwo:
    def __init__(self, rng: random.Random) -> None:
        self._random = rng.random

    def choose(self, candidates: Sequence[Backend], key: bytes | None) -> Backend:
        if len(candidates) == 1:
            return candidates[0]
        total = 0
        for backend in candidates:
            total += backend.weight
        first = self._draw(candidates, None, total)
        second = self._draw(candidates, first, total - first.weight)
        if second.load * first.weight < first.load * second.weight:
            return second
        return first

    def _draw(self, candidates: Sequence[Backend], besides: Backend | None, total: int) -> Backend:
        """One backend at random in proportion to its weight (``total`` of the weights),
        ``besides`` left out."""
        point = self._random() * total
        for backend in candidates:
            if backend is not besides:
                point -= backend.weight
                if point < 0:
                    return backend
        return candidates[-1] if candidates[-1] is not besides else candidates[-2]  # rounding


def hash64(data: bytes) -> int:
    """A stable 64-bit hash (the same in every process and version, unlike ``hash()``)."""
    return int.from_bytes(hashlib.blake2b(data, digest_size=8).digest(), "big")


_GOLDEN: Final = 0x9E3779B97F4A7C15  # 2**64 / the golden ratio, odd
_MASK: Final = (1 << 64) - 1


def key_hash(key: bytes) -> int:
    """A request key's place on the ring: CRC-32 spread over 64 bits by Fibonacci hashing.
    Stable everywhere, and a fifth of ``hash64``'s cost, which every hashed request pays."""
    return (zlib.crc32(key) * _GOLDEN) & _MASK


class ConsistentHash:
    def __init__(self, backends: Sequence[Backend], weights: Sequence[int]) -> None:
        heaviest = max(weights)
        points: list[tuple[int, int]] = []
        for index, (backend, weight) in enumerate(zip(backends, weights, strict=True)):
            # The points hang on the backend's address alone, so they stay where they are
            # whatever else joins or leaves; a seeded generator makes them cheaply.
            address = f"{backend.url.scheme}://{backend.url.netloc}"
            seed = random.Random(hash64(address.encode()))
            count = max(1, RING_POINTS * weight // heaviest)
            points.extend((seed.getrandbits(64), index) for _ in range(count))
        points.sort()
        self._hashes = [point for point, _ in points]
        self._owners = [backends[index] for _, index in points]
        self._fallback = RoundRobin()

    def choose(self, candidates: Sequence[Backend], key: bytes | None) -> Backend:
        if key is None:
            # Nothing to stick to (no such header or cookie): HAProxy balances these round
            # robin too.
            return self._fallback.choose(candidates, None)
        owners = self._owners
        start = bisect.bisect_left(self._hashes, key_hash(key))
        size = len(owners)
        for step in range(size):
            owner = owners[(start + step) % size]
            if owner in candidates:
                return owner
        return candidates[0]  # unreachable: every candidate has points


def strategy_for(
    name: str, backends: Sequence[Backend], weights: Sequence[int], rng: random.Random
) -> Strategy:
    """The strategy ``load_balance = name`` over one tier of ``backends`` (with these
    ``weights``, which a reload gives them once it goes through)."""
    if name == "least_connections":
        return LeastConnections()
    if name == "random_two":
        return RandomTwo(rng)
    if name == "consistent_hash":
        return ConsistentHash(backends, weights)
    return RoundRobin()
