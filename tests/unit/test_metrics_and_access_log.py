"""Pure parts of observability (issue 7): Cache-Status classification, the Prometheus text
rendering (checked with prometheus-client's own parser) and the access log line formats."""

from __future__ import annotations

import json
import re

import pytest
from prometheus_client.parser import text_string_to_metric_families

from phantom.access_log import format_combined, format_json
from phantom.config import BackendURL
from phantom.exchange import Exchange, cache_result, method_class
from phantom.metrics import UPSTREAM_BUCKETS, Gauges, Metrics, sum_expositions

BACKEND = BackendURL("http", "127.0.0.1", 8000, "")


@pytest.mark.parametrize(
    ("value", "result"),
    [
        (b"phantom; hit; ttl=42", "hit"),
        (b"phantom; fwd=uri-miss; stored", "miss"),
        (b"phantom; fwd=vary-miss", "miss"),
        (b"phantom; fwd=stale; ttl=-3", "stale"),
        (b"phantom; fwd=stale; fwd-status=304; ttl=60", "revalidated"),
        (b"phantom; fwd=method", "bypass"),
        (b"phantom; fwd=request", "bypass"),
        (None, "-"),
        (b"phantom; fwd=stale; fwd-status=304; detail=" + b"x" * 200, "revalidated"),
    ],
)
def test_cache_result(value: bytes | None, result: str) -> None:
    assert cache_result(value) == result
    assert cache_result(value) == result  # remembered (short values) or parsed again


def test_method_class() -> None:
    assert method_class(b"GET") == "GET"
    assert method_class(b"PROPFIND") == "other"


def exchange(**fields: object) -> Exchange:
    ex = Exchange("127.0.0.1", b"GET", b"/a", server="app", backend=BACKEND, status=200)
    for name, value in fields.items():
        setattr(ex, name, value)
    return ex


def gauges(**overrides: object) -> Gauges:
    values: dict[str, object] = {
        "connections_open": 3,
        "tunnels_open": 1,
        "open_tunnel_bytes": {"client_to_backend": 5, "backend_to_client": 7},
        "cache_entries": {"app": 2},
        "cache_bytes": {"app": 2048},
        "open_fds": 17,
        "max_fds": 1024,
    }
    values.update(overrides)
    return Gauges(**values)  # type: ignore[arg-type]


def parsed(text: str) -> dict[str, dict[tuple[tuple[str, str], ...], float]]:
    """name -> {sorted labels -> value}, via prometheus-client's parser (strict about format)."""
    out: dict[str, dict[tuple[tuple[str, str], ...], float]] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            out.setdefault(sample.name, {})[tuple(sorted(sample.labels.items()))] = sample.value
    return out


def test_render_counts_requests_lookups_latency_and_errors() -> None:
    metrics = Metrics()
    metrics.exchange_done(
        exchange(cache_status=b"phantom; fwd=uri-miss; stored", upstream_seconds=0.02)
    )
    metrics.exchange_done(exchange(cache_status=b"phantom; hit; ttl=5"))
    metrics.exchange_done(exchange(cache_status=b"phantom; hit; ttl=4"))
    metrics.exchange_done(
        exchange(method=b"POST", cache_status=b"phantom; fwd=method", upstream_seconds=3.0)
    )
    metrics.exchange_done(exchange(status=502, error_kind="refused"))
    metrics.tunnel_opened()
    metrics.tunnel_closed(100, 200)
    samples = parsed(metrics.render(gauges()))

    requests = samples["phantom_requests_total"]
    assert (
        requests[(("method", "GET"), ("server", "app"), ("status", "200"), ("status_class", "2xx"))]
        == 3
    )
    assert (
        requests[
            (("method", "POST"), ("server", "app"), ("status", "200"), ("status_class", "2xx"))
        ]
        == 1
    )
    assert (
        requests[(("method", "GET"), ("server", "app"), ("status", "502"), ("status_class", "5xx"))]
        == 1
    )
    lookups = samples["phantom_cache_lookups_total"]
    assert lookups == {
        (("result", "hit"), ("server", "app")): 2,
        (("result", "miss"), ("server", "app")): 1,
    }
    assert samples["phantom_upstream_errors_total"] == {(("kind", "refused"),): 1}
    assert samples["phantom_cache_entries"] == {(("server", "app"),): 2}
    assert samples["phantom_cache_bytes"] == {(("server", "app"),): 2048}
    assert samples["phantom_connections_open"] == {(): 3}
    assert samples["phantom_tunnels_open"] == {(): 1}
    assert samples["phantom_tunnels_total"] == {(): 1}
    assert samples["phantom_tunnels_closed_total"] == {(): 1}
    assert samples["phantom_tunnel_bytes_total"] == {
        (("direction", "client_to_backend"),): 105,
        (("direction", "backend_to_client"),): 207,
    }
    assert samples["process_open_fds"] == {(): 17}

    buckets = samples["phantom_upstream_seconds_bucket"]
    assert buckets[(("le", "0.01"), ("server", "app"))] == 0
    assert buckets[(("le", "0.025"), ("server", "app"))] == 1
    assert buckets[(("le", "2.5"), ("server", "app"))] == 1
    assert buckets[(("le", "5.0"), ("server", "app"))] == 2
    assert buckets[(("le", "+Inf"), ("server", "app"))] == 2
    assert len(buckets) == len(UPSTREAM_BUCKETS) + 1
    assert samples["phantom_upstream_seconds_count"] == {(("server", "app"),): 2}
    assert samples["phantom_upstream_seconds_sum"][(("server", "app"),)] == pytest.approx(3.02)


def test_render_of_a_fresh_proxy_is_valid_and_has_every_family() -> None:
    text = Metrics().render(gauges(open_fds=None, max_fds=None))
    names = {family.name for family in text_string_to_metric_families(text)}
    assert {
        "phantom_requests",
        "phantom_cache_lookups",
        "phantom_cache_entries",
        "phantom_cache_bytes",
        "phantom_upstream_seconds",
        "phantom_upstream_errors",
        "phantom_connections_open",
        "phantom_tunnels_open",
        "phantom_tunnels",
        "phantom_tunnels_closed",
        "phantom_tunnel_bytes",
    } <= names
    assert "process_open_fds" not in text


def test_label_values_are_escaped() -> None:
    metrics = Metrics()
    metrics.exchange_done(exchange(server='we"ird\\name'))
    samples = parsed(metrics.render(gauges()))
    servers = {dict(labels)["server"] for labels in samples["phantom_requests_total"]}
    assert servers == {'we"ird\\name'}


# -- access log -------------------------------------------------------------------------------

COMBINED = re.compile(
    r"^(?P<ip>\S+) - - \[(?P<time>\d{2}/[A-Z][a-z]{2}/\d{4}:\d{2}:\d{2}:\d{2} [+-]\d{4})\] "
    r'"(?P<request>[^"]*)" (?P<status>\d{3}) (?P<bytes>\d+) "(?P<referer>[^"]*)" '
    r'"(?P<agent>[^"]*)"(?P<extra>.*)$'
)


def test_combined_line_parses_as_combined_with_phantom_fields() -> None:
    ex = exchange(
        referer=b"http://example.com/",
        user_agent=b'curl/8 "quoted"',
        body_bytes=512,
        cache_status=b"phantom; hit; ttl=9",
        upstream_seconds=None,
        total_seconds=0.0042,
    )
    line = format_combined(ex)
    match = COMBINED.match(line)
    assert match, line
    assert match["request"] == "GET /a HTTP/1.1"
    assert (match["status"], match["bytes"]) == ("200", "512")
    assert match["referer"] == "http://example.com/"
    assert match["agent"] == "curl/8 \\x22quoted\\x22"
    assert match["extra"] == (
        " cache=hit server=app backend=http://127.0.0.1:8000 upstream_time=- request_time=0.004"
    )


def test_combined_line_of_a_tunnel_and_of_a_failure() -> None:
    tunnel = format_combined(exchange(status=101, tunnel_up=10, tunnel_down=20, body_bytes=20))
    assert tunnel.endswith(" tunnel_up=10 tunnel_down=20")
    failed = format_combined(exchange(status=502, error_kind="tls"))
    assert " 502 0 " in failed and failed.endswith(" error=tls")


def test_json_line() -> None:
    ex = exchange(
        started=1_700_000_000.25,
        cache_status=b"phantom; fwd=uri-miss; stored",
        upstream_seconds=0.01,
        total_seconds=0.012,
        user_agent=b"ua",
    )
    record = json.loads(format_json(ex))
    assert record["time"] == "2023-11-14T22:13:20.250Z"
    assert record["method"] == "GET" and record["target"] == "/a" and record["status"] == 200
    assert record["cache"] == "miss"
    assert record["cache_status"] == "phantom; fwd=uri-miss; stored"
    assert record["backend"] == "http://127.0.0.1:8000"
    assert record["upstream_time"] == 0.01 and record["request_time"] == 0.012
    assert record["user_agent"] == "ua" and record["referer"] is None


# -- workers = N: the supervisor's sum of the workers' expositions ---------------------------


def worker_text(requests: int, upstream: float, open_fds: int) -> str:
    metrics = Metrics()
    for _ in range(requests):
        metrics.exchange_done(exchange(cache_status=b"phantom; hit"))
    metrics.exchange_done(exchange(upstream_seconds=upstream))
    return metrics.render(gauges(open_fds=open_fds))


def test_sum_expositions_adds_counters_gauges_and_histograms_bucket_by_bucket() -> None:
    text = sum_expositions([(0, worker_text(2, 0.02, 10)), (1, worker_text(5, 3.0, 20))])
    samples = parsed(text)  # still valid exposition
    key = (("method", "GET"), ("server", "app"), ("status", "200"), ("status_class", "2xx"))
    assert samples["phantom_requests_total"][key] == 2 + 1 + 5 + 1
    assert samples["process_open_fds"] == {(): 30}
    assert samples["phantom_connections_open"] == {(): 6}
    buckets = samples["phantom_upstream_seconds_bucket"]
    assert buckets[(("le", "0.025"), ("server", "app"))] == 1
    assert buckets[(("le", "5.0"), ("server", "app"))] == 2
    assert samples["phantom_upstream_seconds_count"] == {(("server", "app"),): 2}
    assert samples["phantom_upstream_seconds_sum"][(("server", "app"),)] == pytest.approx(3.02)
    assert text.count("# TYPE phantom_requests_total counter") == 1


def test_sum_expositions_takes_the_lowest_of_a_state() -> None:
    up = "# HELP phantom_redis_up Redis.\n# TYPE phantom_redis_up gauge\nphantom_redis_up 1\n"
    down = up.replace("up 1", "up 0")
    assert "phantom_redis_up 0\n" in sum_expositions([(0, up), (1, down), (2, up)])
    assert "phantom_redis_up 1\n" in sum_expositions([(0, up), (1, up)])


def test_sum_expositions_per_worker_labels_each_sample() -> None:
    text = sum_expositions([(0, worker_text(1, 0.02, 10)), (3, worker_text(1, 0.02, 20))], True)
    samples = parsed(text)
    assert samples["process_open_fds"] == {(("worker", "0"),): 10, (("worker", "3"),): 20}
    key = (("method", "GET"), ("server", "app"), ("status", "200"), ("status_class", "2xx"))
    assert samples["phantom_requests_total"][(*key, ("worker", "3"))] == 2
    assert text.count("# TYPE phantom_requests_total counter") == 1


def test_redis_families_only_with_a_shared_cache() -> None:
    assert "phantom_redis" not in Metrics().render(gauges())
    samples = parsed(Metrics().render(gauges(redis_up=0, redis_errors=3)))
    assert samples["phantom_redis_up"] == {(): 0}
    assert samples["phantom_redis_errors_total"] == {(): 3}


def test_refusals_are_counted_and_logged_with_their_reason() -> None:
    metrics = Metrics()
    metrics.exchange_done(exchange(status=429, refusal="rate_limit"))
    metrics.exchange_done(exchange(status=429, refusal="rate_limit"))
    metrics.exchange_done(exchange(status=401, refusal="token_expired", server="api"))
    metrics.exchange_done(exchange(status=200))
    samples = parsed(metrics.render(gauges()))
    assert samples["phantom_refusals_total"] == {
        (("reason", "rate_limit"), ("server", "app")): 2,
        (("reason", "token_expired"), ("server", "api")): 1,
    }
    refused = exchange(status=403, refusal="origin")
    assert format_combined(refused).endswith(" reason=origin")
    assert json.loads(format_json(refused))["reason"] == "origin"
    assert "reason" not in format_combined(exchange())
