"""phantom.balancing.balancer: tiers, breaker, health, retries, draining and reloads, with a
fake clock."""

from __future__ import annotations

import logging
import random
from collections import Counter
from typing import Any

import pytest

from phantom.balancing import Balancer
from phantom.balancing.backend import Backend
from phantom.config import ServerConfig, config_from_dict, parse_backend_url

A, B, C = "http://127.0.0.1:8001", "http://127.0.0.1:8002", "http://127.0.0.1:8003"


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def server(*urls: str, backup: tuple[str, ...] = (), **options: Any) -> ServerConfig:
    backends = [{"url": u} for u in urls] + [{"url": u, "backup": True} for u in backup]
    data = {"server": {"app": {"backends": backends, **options}}}
    return config_from_dict(data, "test.toml").servers[0]


def balancer(*urls: str, clock: Clock | None = None, **options: Any) -> Balancer:
    return Balancer(server(*urls, **options), clock=clock or Clock(), rng=random.Random(3))


def at(b: Balancer, url: str) -> Backend:
    found = b.find(parse_backend_url(url))
    assert found is not None
    return found


def served(b: Balancer, count: int, key: bytes | None = None) -> Counter[str]:
    """Who takes ``count`` requests answered at once."""
    seen: Counter[str] = Counter()
    for _ in range(count):
        backend = b.pick(key)
        assert backend is not None
        b.answered(backend, 200)
        b.release(backend)
        seen[str(backend.url)] += 1
    return seen


def test_weighted_round_robin_and_in_flight_counts() -> None:
    b = Balancer(server(A, B), clock=Clock())
    first, second = b.pick(), b.pick()
    assert first is not None and second is not None and first is not second
    assert (first.inflight, second.inflight) == (1, 1)
    b.release(first)
    assert first.inflight == 0


def test_one_backend_never_opens_its_breaker() -> None:
    """As nginx ignores max_fails for a lone server: a 503 would help nobody."""
    b = Balancer(config_from_dict({"server": {"app": {"proxy_url": A}}}, "t").servers[0])
    only = b.pick()
    assert only is not None
    for _ in range(20):
        b.failed(only, "connection refused")
    assert b.pick() is only
    assert b.retry(None, [only]) is None
    assert set(b.retry_counts.values()) == {0}  # nothing to count: there is no other


def test_breaker_opens_half_opens_and_closes(caplog: pytest.LogCaptureFixture) -> None:
    clock = Clock()
    b = balancer(A, B, clock=clock, breaker_failures=2, breaker_open=10)
    bad = at(b, A)
    with caplog.at_level(logging.INFO, "phantom.balancer"):
        for _ in range(2):
            b.failed(bad, "connection refused")
        assert bad.state(clock.now) == "open"
        assert set(served(b, 10)) == {B}  # skipped while open
        clock.now += 10
        assert bad.state(clock.now) == "half-open"
        trial = b.pick()
        while trial is not bad:  # round robin reaches it
            assert trial is not None
            b.release(trial)
            trial = b.pick()
        assert set(served(b, 5)) == {B}  # one trial at a time
        b.answered(bad, 200)
        b.release(bad)
        assert bad.state(clock.now) == "healthy"
        assert set(served(b, 4)) == {A, B}
    changes = [r.getMessage() for r in caplog.records]
    assert changes == [
        "server app: backend http://127.0.0.1:8001: closed -> open for 10s"
        " (2 failures, last: connection refused)",
        "server app: backend http://127.0.0.1:8001: open -> half-open (trying one request)",
        "server app: backend http://127.0.0.1:8001: half-open -> healthy (answered 200)",
    ]


def test_listed_statuses_count_as_failures() -> None:
    b = balancer(A, B, breaker_failures=1, breaker_statuses=[503])
    backend = at(b, A)
    b.answered(backend, 500)
    assert backend.state(0) == "healthy"
    b.answered(backend, 503)
    assert backend.breaker.state == "open"
    assert backend.responses[5] == 2 and backend.last_error == "answered 503"


def test_backups_serve_only_while_every_primary_is_down() -> None:
    clock = Clock()
    b = balancer(A, B, backup=(C,), clock=clock, breaker_failures=1)
    assert set(served(b, 10)) == {A, B}
    b.failed(at(b, A), "refused")
    assert set(served(b, 10)) == {B}
    b.failed(at(b, B), "refused")
    assert set(served(b, 10)) == {C}


def test_everything_down_gives_none_and_a_retry_after(caplog: pytest.LogCaptureFixture) -> None:
    clock = Clock()
    b = balancer(A, B, clock=clock, breaker_failures=1, breaker_open=7)
    b.failed(at(b, A), "refused")
    clock.now += 3
    b.failed(at(b, B), "refused")
    with caplog.at_level(logging.WARNING, "phantom.balancer"):
        assert b.pick() is None
        assert b.pick() is None
    assert b.retry_after() == 4  # A half-opens first
    assert [r.getMessage() for r in caplog.records if "no backend" in r.getMessage()] == [
        "server app: no backend available (http://127.0.0.1:8001: open,"
        " http://127.0.0.1:8002: open); answering 503"
    ]


def test_retry_goes_elsewhere_within_the_budget() -> None:
    b = balancer(A, B, C, retries=1)
    first = b.pick()
    assert first is not None
    b.failed(first, "reset")
    b.release(first)
    other = b.retry(None, [first])
    assert other is not None and other is not first
    b.retried(True)
    assert b.retry_counts["success"] == 1


def test_the_budget_bounds_retries() -> None:
    b = balancer(A, B, retry_budget=0.2)
    for _ in range(100):
        backend = b.pick()
        assert backend is not None
        b.release(backend)
    granted = 0
    for _ in range(100):
        backend = b.retry(None, [])
        if backend is not None:
            granted += 1
            b.release(backend)
    assert granted == 20
    assert b.retry_counts["budget_exhausted"] == 80


def test_consistent_hash_sticks_and_fails_over() -> None:
    clock = Clock()
    b = balancer(A, B, C, clock=clock, load_balance="consistent_hash", breaker_failures=1)
    owner = b.pick(b"user-42")
    assert owner is not None
    b.release(owner)
    assert set(served(b, 20, b"user-42")) == {str(owner.url)}
    b.failed(owner, "refused")
    other = set(served(b, 20, b"user-42"))
    assert len(other) == 1 and other != {str(owner.url)}
    clock.now += 10  # half-open: the trial is this key's next request, and it goes home
    assert b.pick(b"user-42") is owner


def test_health_checks_take_out_and_bring_back(caplog: pytest.LogCaptureFixture) -> None:
    b = balancer(
        A, B, health_check={"unhealthy_threshold": 2, "healthy_threshold": 3, "interval": 5}
    )
    backend = at(b, A)
    with caplog.at_level(logging.INFO, "phantom.balancer"):
        b.checked(backend, "status 500")
        assert backend.healthy
        b.checked(backend, "connection refused")
        assert not backend.healthy and backend.state(0) == "unhealthy"
        assert set(served(b, 6)) == {B}
        b.checked(backend, None)
        b.checked(backend, None)
        assert b.retry_after() == 5
        b.checked(backend, None)
        assert backend.healthy
    assert [r.getMessage() for r in caplog.records] == [
        "server app: backend http://127.0.0.1:8001: healthy -> unhealthy"
        " (2 checks failed, last: connection refused)",
        "server app: backend http://127.0.0.1:8001: unhealthy -> healthy (3 checks passed)",
    ]


def test_backends_can_start_unhealthy() -> None:
    b = balancer(A, health_check={}, health_check_start="unhealthy")
    assert b.pick() is None


def test_drain_and_enable() -> None:
    b = balancer(A, B, breaker_failures=1)
    backend = at(b, A)
    busy = b.pick()
    b.drain(backend)
    assert backend.state(0) == "draining"
    assert set(served(b, 6)) == {B}
    b.failed(backend, "refused")
    b.enable(backend)  # undrained, breaker closed
    assert backend.state(0) == "healthy"
    assert set(served(b, 6)) == {A, B}
    assert busy is not None


def test_tunnels_count_as_load() -> None:
    b = balancer(A, B, load_balance="least_connections")
    first = b.pick()
    assert first is not None
    b.tunnel_opened(first)
    b.release(first)  # the handshake is over; the tunnel stays
    for _ in range(3):
        other = b.pick()
        assert other is not None and other is not first
        b.release(other)
    b.tunnel_closed(first)
    assert first.load == 0


def test_a_reload_keeps_state_and_drains_what_it_removes(
    caplog: pytest.LogCaptureFixture,
) -> None:
    clock = Clock()
    old = balancer(A, B, clock=clock, breaker_failures=1)
    a, b_ = at(old, A), at(old, B)
    old.failed(a, "refused")
    tunnel = old.pick()
    while tunnel is not b_:
        assert tunnel is not None
        old.release(tunnel)
        tunnel = old.pick()
    old.tunnel_opened(b_)
    old.release(b_)
    with caplog.at_level(logging.INFO, "phantom.balancer"):
        new = Balancer(server(A, C), previous=old, clock=clock)
        assert not b_.removed  # a reload that fails after this point must change nothing
        new.take_over()
    assert at(new, A) is a and a.breaker.state == "open"  # kept, state and all
    assert b_.removed and new.retired == [b_]
    assert [row["url"] for row in new.report()] == [A, C, B]
    assert new.report()[2] == {
        "url": B, "weight": 1, "backup": False, "state": "draining", "inflight": 0,
        "tunnels_open": 1, "last_error": None, "removed": True,
    }
    assert set(served(new, 6)) == {C}
    # Connections opened before the reload keep the old settings: they may still send to it.
    assert B in set(served(old, 6))
    new.tunnel_closed(b_)
    assert [row["url"] for row in new.report()] == [A, C]  # forgotten once idle
    assert new.retired == []
    assert "backend http://127.0.0.1:8002 removed; draining (0 requests, 1 tunnels open)" in (
        caplog.text
    )


def test_a_removed_backend_added_back_is_not_drained() -> None:
    clock = Clock()
    old = balancer(A, B, clock=clock)
    b_ = at(old, B)
    b_.tunnels = 1
    middle = Balancer(server(A), previous=old, clock=clock)
    middle.take_over()
    assert b_.state(0) == "draining"
    again = Balancer(server(A, B), previous=middle, clock=clock)
    again.take_over()
    assert at(again, B) is b_ and b_.state(0) == "healthy" and again.retired == []


def test_weights_change_when_the_reload_goes_through() -> None:
    old = balancer(A, B)
    data = {"server": {"app": {"backends": [{"url": A, "weight": 3}, {"url": B}]}}}
    new = Balancer(config_from_dict(data, "t").servers[0], previous=old)
    assert new.backends == old.backends and old.backends[0].weight == 1
    new.take_over()
    assert old.backends[0].weight == 3
    assert Counter(str(b.url) for b in (new.pick() for _ in range(8)) if b) == {A: 6, B: 2}
