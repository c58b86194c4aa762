"""Prometheus metrics: plain integer counters while serving, text exposition format on scrape.

Counting costs a dict update per finished exchange; everything that is a level (open
connections, cache size, file descriptors) is read only when scraped. The output follows the
text exposition format 0.0.4 (``# HELP``, ``# TYPE``, escaped label values, cumulative
histogram buckets ending in ``+Inf`` with ``_sum`` and ``_count``).

Pure module: :class:`Gauges` carries the levels the I/O layer reads at scrape time.
"""

from __future__ import annotations

import bisect
import math
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from .balancing import Balancer
from .balancing.backend import STATUS_CLASSES
from .balancing.breaker import CLOSED, HALF_OPEN, OPEN
from .exchange import Exchange, cache_result, method_class

__all__ = ["CONTENT_TYPE", "UPSTREAM_BUCKETS", "Gauges", "Metrics", "sum_expositions"]

CONTENT_TYPE = b"text/plain; version=0.0.4; charset=utf-8"

# Seconds from sending a request to the backend's response head.
UPSTREAM_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)

_LOOKUP_RESULTS = frozenset({"hit", "miss", "stale", "revalidated"})

Labels = tuple[tuple[str, str], ...]

# phantom_backend_breaker_state's values: the higher, the worse.
BREAKER_VALUES = {CLOSED: 0, HALF_OPEN: 1, OPEN: 2}


@dataclass(slots=True)
class Gauges:
    """Levels read at scrape time."""

    connections_open: int
    tunnels_open: int
    open_tunnel_bytes: Mapping[str, int]  # direction -> bytes moved so far by open tunnels
    cache_entries: Mapping[str, int]  # server -> entries
    cache_bytes: Mapping[str, int]  # server -> bytes
    open_fds: int | None  # None where the platform can't tell
    max_fds: int | None
    # The shared cache's Redis link (None without a server in redis mode): 1 up / 0 down, and
    # the commands and connection attempts that failed so far.
    redis_up: int | None = None
    redis_errors: int = 0
    balancers: Mapping[str, Balancer] = field(default_factory=dict)  # server -> its backends


@dataclass(slots=True)
class _Histogram:
    counts: list[int] = field(default_factory=lambda: [0] * (len(UPSTREAM_BUCKETS) + 1))
    total: float = 0.0

    def observe(self, value: float) -> None:
        self.counts[bisect.bisect_left(UPSTREAM_BUCKETS, value)] += 1
        self.total += value


class Metrics:
    """The counters of one running proxy."""

    def __init__(self) -> None:
        self.requests: dict[tuple[str, str, int], int] = {}  # (server, method, status)
        self.cache_lookups: dict[tuple[str, str], int] = {}  # (server, result)
        self.upstream: dict[str, _Histogram] = {}  # server -> response-head latency
        self.upstream_errors: dict[str, int] = {}  # kind -> count
        self.refusals: dict[tuple[str, str], int] = {}  # (server, reason) -> count
        self.tunnels_opened = 0
        self.tunnels_closed = 0
        # Bytes of closed tunnels; open ones are added at scrape time.
        self.tunnel_bytes = {"client_to_backend": 0, "backend_to_client": 0}

    # -- counting ---------------------------------------------------------------------------

    def exchange_done(self, ex: Exchange) -> None:
        key = (ex.server, method_class(ex.method), ex.status)
        self.requests[key] = self.requests.get(key, 0) + 1
        result = cache_result(ex.cache_status)
        if result in _LOOKUP_RESULTS:
            lookup = (ex.server, result)
            self.cache_lookups[lookup] = self.cache_lookups.get(lookup, 0) + 1
        if ex.upstream_seconds is not None:
            histogram = self.upstream.get(ex.server)
            if histogram is None:
                histogram = self.upstream[ex.server] = _Histogram()
            histogram.observe(ex.upstream_seconds)
        if ex.error_kind is not None:
            self.upstream_errors[ex.error_kind] = self.upstream_errors.get(ex.error_kind, 0) + 1
        if ex.refusal is not None:
            refusal = (ex.server, ex.refusal)
            self.refusals[refusal] = self.refusals.get(refusal, 0) + 1

    def hit(self, server: str, method: bytes, status: int) -> None:
        """Count a cache hit as ``exchange_done`` counts its exchange (a hit has no upstream
        time, no error, no refusal), for the fast lane, which builds no exchange when nothing
        logs it."""
        key = (server, method_class(method), status)
        self.requests[key] = self.requests.get(key, 0) + 1
        lookup = (server, "hit")
        self.cache_lookups[lookup] = self.cache_lookups.get(lookup, 0) + 1

    def tunnel_opened(self) -> None:
        self.tunnels_opened += 1

    def tunnel_closed(self, client_to_backend: int, backend_to_client: int) -> None:
        self.tunnels_closed += 1
        self.tunnel_bytes["client_to_backend"] += client_to_backend
        self.tunnel_bytes["backend_to_client"] += backend_to_client

    # -- exposition -------------------------------------------------------------------------

    def render(self, gauges: Gauges) -> str:
        out: list[str] = []
        _family(
            out,
            "phantom_requests_total",
            "counter",
            "Requests answered, by server, method, status code and status class.",
            (
                (
                    (
                        ("server", server),
                        ("method", method),
                        ("status", str(status)),
                        ("status_class", f"{status // 100}xx"),
                    ),
                    count,
                )
                for (server, method, status), count in sorted(self.requests.items())
            ),
        )
        _family(
            out,
            "phantom_cache_lookups_total",
            "counter",
            "Cache lookups by result: hit, miss, stale, revalidated.",
            (
                ((("server", server), ("result", result)), count)
                for (server, result), count in sorted(self.cache_lookups.items())
            ),
        )
        _family(
            out,
            "phantom_cache_entries",
            "gauge",
            "Responses stored in the cache.",
            [((("server", s),), n) for s, n in sorted(gauges.cache_entries.items())],
        )
        _family(
            out,
            "phantom_cache_bytes",
            "gauge",
            "Bytes of stored responses (bodies and headers).",
            [((("server", s),), n) for s, n in sorted(gauges.cache_bytes.items())],
        )
        self._render_upstream(out)
        _family(
            out,
            "phantom_upstream_errors_total",
            "counter",
            "Backend failures by kind: refused, timeout, reset, tls, protocol, unreachable.",
            [((("kind", k),), n) for k, n in sorted(self.upstream_errors.items())],
        )
        _family(
            out,
            "phantom_refusals_total",
            "counter",
            "Requests a guard refused, by server and reason (ip, cors, origin, rate_limit, "
            "token_missing, token_invalid, token_expired, claims).",
            (
                ((("server", server), ("reason", reason)), count)
                for (server, reason), count in sorted(self.refusals.items())
            ),
        )
        _family(
            out,
            "phantom_connections_open",
            "gauge",
            "Client connections open (tunnels not included).",
            [((), gauges.connections_open)],
        )
        _family(out, "phantom_tunnels_open", "gauge", "Tunnels open.", [((), gauges.tunnels_open)])
        _family(
            out,
            "phantom_tunnels_total",
            "counter",
            "Tunnels opened (after a 101).",
            [((), self.tunnels_opened)],
        )
        _family(
            out,
            "phantom_tunnels_closed_total",
            "counter",
            "Tunnels closed.",
            [((), self.tunnels_closed)],
        )
        _family(
            out,
            "phantom_tunnel_bytes_total",
            "counter",
            "Bytes spliced through tunnels, by direction.",
            (
                ((("direction", d),), n + gauges.open_tunnel_bytes.get(d, 0))
                for d, n in self.tunnel_bytes.items()
            ),
        )
        if gauges.redis_up is not None:
            _family(
                out,
                "phantom_redis_up",
                "gauge",
                "1 while the shared cache's Redis answers, 0 while it is unavailable.",
                [((), gauges.redis_up)],
            )
            _family(
                out,
                "phantom_redis_errors_total",
                "counter",
                "Redis commands and connection attempts that failed or were late.",
                [((), gauges.redis_errors)],
            )
        _render_backends(out, gauges.balancers)
        if gauges.open_fds is not None:
            _family(
                out,
                "process_open_fds",
                "gauge",
                "Number of open file descriptors.",
                [((), gauges.open_fds)],
            )
        if gauges.max_fds is not None:
            _family(
                out,
                "process_max_fds",
                "gauge",
                "Maximum number of open file descriptors.",
                [((), gauges.max_fds)],
            )
        return "\n".join(out) + "\n"

    def _render_upstream(self, out: list[str]) -> None:
        name = "phantom_upstream_seconds"
        out.append(f"# HELP {name} Seconds from sending a request to the backend's response head.")
        out.append(f"# TYPE {name} histogram")
        for server, histogram in sorted(self.upstream.items()):
            server_label = f'server="{_escape(server)}"'
            cumulative = 0
            bounds = [*map(_number, UPSTREAM_BUCKETS), "+Inf"]
            for bound, count in zip(bounds, histogram.counts, strict=True):
                cumulative += count
                out.append(f'{name}_bucket{{{server_label},le="{bound}"}} {cumulative}')
            out.append(f"{name}_sum{{{server_label}}} {_number(histogram.total)}")
            out.append(f"{name}_count{{{server_label}}} {cumulative}")


def _render_backends(out: list[str], balancers: Mapping[str, Balancer]) -> None:
    """The phantom_backend_* families and phantom_retries_total, read off the balancers."""
    now = time.monotonic()
    rows = [
        ((("server", name), ("backend", str(b.url))), b)
        for name, balancer in sorted(balancers.items())
        for b in balancer.everyone()
    ]
    _family(
        out,
        "phantom_backend_up",
        "gauge",
        "1 while the backend passes its health checks and its breaker is not open.",
        [(labels, int(b.up)) for labels, b in rows],
    )
    _family(
        out,
        "phantom_backend_requests_total",
        "counter",
        "Attempts sent to each backend, by response status class (error: no response).",
        [
            ((*labels, ("status_class", status_class)), count)
            for labels, b in rows
            for status_class, count in zip(STATUS_CLASSES, b.responses, strict=True)
            if count
        ],
    )
    _family(
        out,
        "phantom_backend_inflight",
        "gauge",
        "Requests on their way to each backend or being relayed from it.",
        [(labels, b.inflight) for labels, b in rows],
    )
    _family(
        out,
        "phantom_backend_tunnels_open",
        "gauge",
        "Upgrade tunnels open to each backend.",
        [(labels, b.tunnels) for labels, b in rows],
    )
    _family(
        out,
        "phantom_backend_breaker_state",
        "gauge",
        "Each backend's circuit breaker: 0 closed, 1 half-open, 2 open.",
        [(labels, BREAKER_VALUES[b.breaker_state(now)]) for labels, b in rows],
    )
    _family(
        out,
        "phantom_retries_total",
        "counter",
        "Retries on another backend, by outcome: success, failure, budget_exhausted, "
        "no_backend.",
        [
            ((("server", name), ("outcome", outcome)), count)
            for name, balancer in sorted(balancers.items())
            for outcome, count in balancer.retry_counts.items()
        ],
    )


def _family(
    out: list[str],
    name: str,
    kind: str,
    help_text: str,
    samples: Iterable[tuple[Labels, float]],
) -> None:
    out.append(f"# HELP {name} {help_text}")
    out.append(f"# TYPE {name} {kind}")
    for labels, value in samples:
        if labels:
            text = ",".join(f'{k}="{_escape(v)}"' for k, v in labels)
            out.append(f"{name}{{{text}}} {_number(value)}")
        else:
            out.append(f"{name} {_number(value)}")


def _escape(value: str) -> str:
    """A label value as the exposition format wants it: backslash, quote and newline escaped."""
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _number(value: float) -> str:
    if isinstance(value, int):
        return str(value)
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    return repr(value)


#: Families that say whether something works, not how much: the fleet's value is the worst
#: worker's (one worker cut off from Redis is an outage to see), not the number of workers.
_STATES = frozenset({"phantom_redis_up", "phantom_backend_up"})  # down in one worker: down
_WORST = frozenset({"phantom_backend_breaker_state"})  # the most open of the workers' breakers


def sum_expositions(texts: Sequence[tuple[int, str]], per_worker: bool = False) -> str:
    """One exposition from the workers' ``(index, text)``: every sample (counters, gauges,
    histogram buckets, ``_sum`` and ``_count``) summed over the workers, families in the order
    first seen; with ``per_worker`` each sample is kept, with a ``worker`` label instead."""
    heads: dict[str, list[str]] = {}  # family -> its HELP and TYPE lines
    samples: dict[str, dict[str, list[float]]] = {}  # family -> series -> values
    for index, text in texts:
        family = ""
        for line in text.splitlines():
            if line.startswith("# "):
                family = line.split(" ", 3)[2]
                if family not in heads:
                    heads[family], samples[family] = [], {}
                if len(heads[family]) < 2 and line not in heads[family]:
                    heads[family].append(line)
                continue
            series, _, value = line.rpartition(" ")
            if not series:
                continue
            if per_worker:
                series = _with_worker(series, index)
            samples[family].setdefault(series, []).append(_parse_number(value))
    out: list[str] = []
    for family, lines in heads.items():
        out.extend(lines)
        combine = min if family in _STATES else max if family in _WORST else sum
        out.extend(f"{series} {_number(combine(values))}"
                   for series, values in samples[family].items())
    return "\n".join(out) + "\n"


def _with_worker(series: str, index: int) -> str:
    label = f'worker="{index}"'
    if series.endswith("}"):
        return f"{series[:-1]},{label}}}"
    return f"{series}{{{label}}}"


def _parse_number(text: str) -> float:
    try:
        return int(text)
    except ValueError:
        return float(text)
