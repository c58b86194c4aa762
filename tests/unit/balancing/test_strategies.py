"""phantom.balancing.strategies: each load_balance strategy over plain Backend objects."""

from __future__ import annotations

import random
from collections import Counter

import pytest

from phantom.balancing.backend import Backend
from phantom.balancing.breaker import Breaker
from phantom.balancing.strategies import (
    ConsistentHash,
    LeastConnections,
    RandomTwo,
    RoundRobin,
    hash64,
)
from phantom.config import BackendConfig, BackendURL


def backend(port: int, weight: int = 1) -> Backend:
    url = BackendURL("http", "127.0.0.1", port, "")
    return Backend(BackendConfig(url, weight), Breaker(5, 10), healthy=True)


def test_smooth_round_robin_spreads_the_heavy_backend_as_nginx_does() -> None:
    a, b, c = backend(1, 5), backend(2), backend(3)
    strategy = RoundRobin()
    picks = [strategy.choose([a, b, c], None) for _ in range(7)]
    assert picks == [a, a, b, a, c, a, a]


def test_round_robin_shares_are_exact_over_each_cycle() -> None:
    pool = [backend(1, 1), backend(2, 2), backend(3, 3)]
    strategy = RoundRobin()
    counts = Counter(strategy.choose(pool, None) for _ in range(3000))
    assert [counts[b] for b in pool] == [500, 1000, 1500]


def test_round_robin_skips_who_is_not_a_candidate() -> None:
    a, c = backend(1), backend(3)
    strategy = RoundRobin()
    assert {strategy.choose([a, c], None) for _ in range(10)} == {a, c}


def test_least_connections_weighs_the_load() -> None:
    a, b = backend(1, 1), backend(2, 3)
    a.inflight, b.inflight = 2, 5  # 2/1 against 5/3
    assert LeastConnections().choose([a, b], None) is b
    b.tunnels = 2  # 7/3 > 2/1: open tunnels count too
    assert LeastConnections().choose([a, b], None) is a


def test_least_connections_ties_go_round_robin() -> None:
    pool = [backend(1), backend(2), backend(3)]
    strategy = LeastConnections()
    assert Counter(strategy.choose(pool, None) for _ in range(300)) == {b: 100 for b in pool}


def test_random_two_takes_the_less_loaded_of_two() -> None:
    a, b = backend(1), backend(2)
    b.inflight = 1
    strategy = RandomTwo(random.Random(1))
    assert {strategy.choose([a, b], None) for _ in range(50)} == {a}


def test_random_two_follows_the_weights_when_loads_are_equal() -> None:
    pool = [backend(1, 1), backend(2, 3)]
    strategy = RandomTwo(random.Random(7))
    counts = Counter(strategy.choose(pool, None) for _ in range(4000))
    assert counts[pool[1]] / 4000 == pytest.approx(0.75, abs=0.03)


def test_random_two_with_one_candidate() -> None:
    a = backend(1)
    assert RandomTwo(random.Random()).choose([a], None) is a


def keys(count: int) -> list[bytes]:
    return [f"client-{n}".encode() for n in range(count)]


def test_consistent_hash_is_stable_and_balanced() -> None:
    pool = [backend(8001), backend(8002), backend(8003)]
    ring = ConsistentHash(pool, [b.weight for b in pool])
    owners = [ring.choose(pool, key) for key in keys(3000)]
    assert owners == [ring.choose(pool, key) for key in keys(3000)]
    rebuilt = ConsistentHash(pool, [b.weight for b in pool])
    assert owners == [rebuilt.choose(pool, key) for key in keys(3000)]
    for b in pool:
        assert owners.count(b) / 3000 == pytest.approx(1 / 3, abs=0.05)


@pytest.mark.parametrize("ports", [(8001, 8002, 8003), (40123, 40999, 51234), (1, 2, 3, 4, 5)])
def test_when_one_backend_leaves_only_its_keys_move(ports: tuple[int, ...]) -> None:
    pool = [backend(port) for port in ports]
    ring = ConsistentHash(pool, [b.weight for b in pool])
    before = [ring.choose(pool, key) for key in keys(1000)]
    gone = pool[1]
    rest = [b for b in pool if b is not gone]
    # Down (skipped on the same ring), or removed (a ring built without it): the same moves.
    smaller = ConsistentHash(rest, [b.weight for b in rest])
    for after in (
        [ring.choose(rest, key) for key in keys(1000)],
        [smaller.choose(rest, key) for key in keys(1000)],
    ):
        moved = [i for i, (x, y) in enumerate(zip(before, after, strict=True)) if x is not y]
        assert all(before[i] is gone for i in moved)
        assert len(moved) / 1000 <= 1 / len(pool) + 0.05


def test_consistent_hash_follows_the_weights() -> None:
    pool = [backend(8001, 1), backend(8002, 3)]
    ring = ConsistentHash(pool, [b.weight for b in pool])
    owners = Counter(ring.choose(pool, key) for key in keys(4000))
    assert owners[pool[1]] / 4000 == pytest.approx(0.75, abs=0.05)


def test_consistent_hash_without_a_key_goes_round_robin() -> None:
    pool = [backend(1), backend(2)]
    ring = ConsistentHash(pool, [b.weight for b in pool])
    assert [ring.choose(pool, None) for _ in range(4)] == [pool[0], pool[1], pool[0], pool[1]]


def test_hash64_is_the_same_in_every_process() -> None:
    """Python's hash() of bytes changes per process: a restart would move every client."""
    assert hash64(b"client-1") == 0xEFF07181079A5CDE
