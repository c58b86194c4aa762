"""What the balancer's decision costs per request: ``pick``, ``answered`` and ``release`` (all a
request asks of it) with three backends, for each ``load_balance`` strategy, and with one
backend (the ``proxy_url`` case, which must cost next to nothing).

    python -m benchmarks.balancer_decision [--decisions 200000] [--rounds 7]

Prints the median over the rounds of the time per decision, in microseconds, against the
issue's budget of 3 us with three backends. No I/O: the balancer is a pure module.
"""

from __future__ import annotations

import argparse
import statistics
import time
from typing import Any

from phantom.balancing import Balancer, key_function
from phantom.config import config_from_dict

BUDGET_US = 3.0
URLS = ("http://10.0.0.5:8000", "http://10.0.0.6:8000", "http://10.0.0.7:8000")
HEADERS = [(b"host", b"app.example.com"), (b"cookie", b"theme=dark; session=abc123")]


def balancer(urls: tuple[str, ...], **options: Any) -> Balancer:
    if len(urls) == 1:
        server: dict[str, Any] = {"proxy_url": urls[0], **options}
    else:
        server = {"backends": [{"url": u, "weight": n + 1} for n, u in enumerate(urls)], **options}
    return Balancer(config_from_dict({"server": {"app": server}}, "bench").servers[0])


def per_decision_us(b: Balancer, decisions: int, hashed: bool) -> float:
    key_of = key_function("cookie:session")
    pick, answered, release = b.pick, b.answered, b.release
    started = time.perf_counter()
    for n in range(decisions):
        key = key_of("10.1.2.3", b"/room/%d" % (n & 63), HEADERS) if hashed else None
        backend = pick(key)
        assert backend is not None
        answered(backend, 200)
        release(backend)
    return (time.perf_counter() - started) / decisions * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--decisions", type=int, default=200_000)
    parser.add_argument("--rounds", type=int, default=7)
    args = parser.parse_args()
    cases = [
        ("one backend (proxy_url)", balancer(URLS[:1]), False),
        ("round_robin, 3 backends", balancer(URLS), False),
        ("least_connections, 3", balancer(URLS, load_balance="least_connections"), False),
        ("random_two, 3", balancer(URLS, load_balance="random_two"), False),
        (
            "consistent_hash (cookie), 3",
            balancer(URLS, load_balance="consistent_hash", hash_key="cookie:session"),
            True,
        ),
    ]
    print(f"{'case':32} {'median us':>10} {'min us':>8}  budget {BUDGET_US:g} us")
    for name, b, hashed in cases:
        samples = [per_decision_us(b, args.decisions, hashed) for _ in range(args.rounds)]
        median = statistics.median(samples)
        verdict = "" if name.startswith("one") else ("ok" if median <= BUDGET_US else "OVER")
        print(f"{name:32} {median:10.3f} {min(samples):8.3f}  {verdict}")


if __name__ == "__main__":
    main()
