"""The phantom_backend_* families and phantom_retries_total, read off a balancer at scrape
time, checked with prometheus-client's own parser."""

from __future__ import annotations

import time

from prometheus_client.parser import text_string_to_metric_families

from phantom.balancing import Balancer
from phantom.config import config_from_dict
from phantom.metrics import Gauges, Metrics, sum_expositions

A, B = "http://127.0.0.1:8001", "http://127.0.0.1:8002"
Samples = dict[str, dict[tuple[tuple[str, str], ...], float]]


def parsed(text: str) -> Samples:
    out: Samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            out.setdefault(sample.name, {})[tuple(sorted(sample.labels.items()))] = sample.value
    return out


def test_backend_families() -> None:
    server = config_from_dict(
        {"server": {"app": {"backends": [{"url": A}, {"url": B}], "breaker_failures": 1}}}, "t"
    ).servers[0]
    balancer = Balancer(server, clock=time.monotonic)
    a, b = balancer.backends
    balancer.answered(a, 200)
    balancer.answered(a, 204)
    balancer.answered(a, 503)
    balancer.failed(b, "connection refused")  # opens b's breaker
    a.inflight, a.tunnels = 2, 3
    assert balancer.retry(None, [b]) is a
    balancer.retried(True)
    gauges = Gauges(0, 0, {}, {}, {}, None, None, balancers={"app": balancer})
    samples = parsed(Metrics().render(gauges))

    def at(url: str, **extra: str) -> tuple[tuple[str, str], ...]:
        return tuple(sorted({"server": "app", "backend": url, **extra}.items()))

    assert samples["phantom_backend_up"] == {at(A): 1, at(B): 0}
    assert samples["phantom_backend_requests_total"] == {
        at(A, status_class="2xx"): 2,
        at(A, status_class="5xx"): 1,
        at(B, status_class="error"): 1,
    }
    assert samples["phantom_backend_inflight"] == {at(A): 3, at(B): 0}  # the retry is in flight
    assert samples["phantom_backend_tunnels_open"] == {at(A): 3, at(B): 0}
    assert samples["phantom_backend_breaker_state"] == {at(A): 0, at(B): 2}
    retries = samples["phantom_retries_total"]
    assert retries[(("outcome", "success"), ("server", "app"))] == 1
    assert retries[(("outcome", "budget_exhausted"), ("server", "app"))] == 0


def test_workers_summed_keep_the_worst_backend_state() -> None:
    """With workers > 1 the exposition sums the workers', but a backend is up only where every
    worker says so, and its breaker shows the most open of the workers' breakers."""
    def worker(up: int, breaker: int, inflight: int) -> str:
        labels = '{server="app",backend="http://127.0.0.1:8001"}'
        return (
            f"# HELP phantom_backend_up x\n# TYPE phantom_backend_up gauge\n"
            f"phantom_backend_up{labels} {up}\n"
            f"# HELP phantom_backend_breaker_state x\n# TYPE phantom_backend_breaker_state gauge\n"
            f"phantom_backend_breaker_state{labels} {breaker}\n"
            f"# HELP phantom_backend_inflight x\n# TYPE phantom_backend_inflight gauge\n"
            f"phantom_backend_inflight{labels} {inflight}\n"
        )

    samples = parsed(sum_expositions([(0, worker(1, 0, 2)), (1, worker(0, 2, 3))]))
    key = (("backend", "http://127.0.0.1:8001"), ("server", "app"))
    assert samples["phantom_backend_up"][key] == 0
    assert samples["phantom_backend_breaker_state"][key] == 2
    assert samples["phantom_backend_inflight"][key] == 5
