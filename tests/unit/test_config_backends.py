"""phantom.config: several backends per server and the balancing keys (issue 15).

Pure: no sockets. What is read, what is refused (one line naming the key), and that
describe() prints it back as TOML that loads to the same settings.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import pytest

from phantom.config import (
    BackendConfig,
    BackendURL,
    HealthCheckConfig,
    config_from_dict,
    describe,
    parse_expect_status,
    with_overrides,
)
from phantom.errors import ConfigError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib  # type: ignore[import-not-found, unused-ignore]

SOURCE = "phantom.toml"
A, B, C = "http://127.0.0.1:8001", "http://127.0.0.1:8002/v2", "https://app.internal"


def pool(*backends: dict[str, Any], **server: Any) -> dict[str, Any]:
    return {"server": {"app": {"backends": list(backends), **server}}}


def error_of(data: dict[str, Any]) -> str:
    with pytest.raises(ConfigError) as info:
        config_from_dict(data, SOURCE)
    assert "\n" not in str(info.value)
    return str(info.value).removeprefix(f"{SOURCE}: ")


def test_backends_are_read_with_their_defaults() -> None:
    server = config_from_dict(
        pool({"url": A, "weight": 3}, {"url": B}, {"url": C, "backup": True}), SOURCE
    ).servers[0]
    assert server.backends == (
        BackendConfig(BackendURL("http", "127.0.0.1", 8001, ""), weight=3),
        BackendConfig(BackendURL("http", "127.0.0.1", 8002, "/v2")),
        BackendConfig(BackendURL("https", "app.internal", 443, ""), backup=True),
    )
    assert server.pool == server.backends
    # proxy_url names the first backend that is not a backup.
    assert server.proxy_url == server.backends[0].url
    assert (server.load_balance, server.retries, server.retry_budget) == ("round_robin", 1, 0.2)
    assert (server.breaker_failures, server.breaker_open, server.breaker_statuses) == (5, 10, ())


def test_proxy_url_alone_is_a_pool_of_one() -> None:
    server = config_from_dict({"server": {"app": {"proxy_url": A}}}, SOURCE).servers[0]
    assert server.backends == ()
    assert server.pool == (BackendConfig(server.proxy_url),)


def test_health_check_table() -> None:
    server = config_from_dict(
        pool(
            {"url": A},
            health_check={"path": "/healthz", "interval": 2, "expect_status": "2XX, 301"},
            health_check_start="unhealthy",
        ),
        SOURCE,
    ).servers[0]
    assert server.health_check == HealthCheckConfig(
        path="/healthz", interval=2.0, expect_status="2xx,301"
    )
    assert server.health_check_start == "unhealthy"


def test_expect_status_spellings() -> None:
    assert parse_expect_status("2xx") == frozenset(range(200, 300))
    assert parse_expect_status("200, 3xx") == frozenset({200, *range(300, 400)})
    assert parse_expect_status(204) == frozenset({204})


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (
            {"server": {"app": {"proxy_url": A, "backends": [{"url": B}]}}},
            "server.app.backends: set proxy_url or [[backends]] tables, not both",
        ),
        (
            pool(),
            "server.app.backends: expected at least one [[server.app.backends]] table with a"
            " url",
        ),
        (pool({"weight": 2}), "server.app.backends[0].url: missing"),
        (
            pool({"url": A, "weight": 0}),
            "server.app.backends[0].weight: must be between 1 and 256, got 0",
        ),
        (
            pool({"url": A, "weight": 1.5}),
            "server.app.backends[0].weight: expected an integer, got float",
        ),
        (pool({"url": A, "port": 1}), "server.app.backends[0].port: unknown key"),
        (
            pool({"url": "ftp://x"}),
            "server.app.backends[0].url: expected http[s]://host[:port][/path], got 'ftp://x'",
        ),
        (
            pool({"url": A}, {"url": "http://127.0.0.1:8001/other"}),
            "server.app.backends[1].url: duplicate backend http://127.0.0.1:8001 (also"
            " backends[0]);"
            " give that one more weight instead",
        ),
        (
            pool({"url": A, "backup": True}),
            "server.app.backends: every backend is a backup: at least one must not be",
        ),
        (
            {"server": {"app": {"backends": {"url": A}}}},
            "server.app.backends: expected [[server.app.backends]] tables, got table",
        ),
        (
            pool({"url": A}, load_balance="fastest"),
            "server.app.load_balance: expected one of round_robin, least_connections,"
            " random_two, consistent_hash, got 'fastest'",
        ),
        (
            pool({"url": A}, hash_key="path"),
            'server.app.hash_key: needs load_balance = "consistent_hash"',
        ),
        (
            pool({"url": A}, load_balance="consistent_hash", hash_key="query"),
            'server.app.hash_key: expected "client_ip", "path", "header:NAME" or'
            ' "cookie:NAME", got \'query\'',
        ),
        (
            pool({"url": A}, load_balance="consistent_hash", hash_key="header:"),
            'server.app.hash_key: expected "client_ip", "path", "header:NAME" or'
            ' "cookie:NAME", got \'header:\'',
        ),
        (
            pool({"url": A}, health_check={"interval": 0}),
            "server.app.health_check.interval: must be greater than 0, got 0",
        ),
        (
            pool({"url": A}, health_check={"intervall": 1}),
            "server.app.health_check.intervall: unknown key",
        ),
        (
            pool({"url": A}, health_check={"path": "healthz"}),
            "server.app.health_check.path: expected a path starting with \"/\", got 'healthz'",
        ),
        (
            pool({"url": A}, health_check={"interval": 1, "timeout": 2}),
            "server.app.health_check.timeout: must not be longer than interval (1), got 2",
        ),
        (
            pool({"url": A}, health_check={"expect_status": "ok"}),
            'server.app.health_check.expect_status: expected status codes and classes such'
            ' as "2xx" or "200,301", got \'ok\'',
        ),
        (
            pool({"url": A}, health_check={"healthy_threshold": 0}),
            "server.app.health_check.healthy_threshold: must be 1 or greater, got 0",
        ),
        (
            pool({"url": A}, health_check="/healthz"),
            "server.app.health_check: expected a table, got string",
        ),
        (
            pool({"url": A}, health_check_start="unhealthy"),
            'server.app.health_check_start: "unhealthy" needs a health_check to bring the'
            ' backends up',
        ),
        (
            pool({"url": A}, breaker_statuses=[200]),
            "server.app.breaker_statuses: must be between 400 and 599, got 200",
        ),
        (
            pool({"url": A}, breaker_open=0),
            "server.app.breaker_open: must be greater than 0, got 0",
        ),
        (pool({"url": A}, retries=11), "server.app.retries: must be between 0 and 10, got 11"),
        (
            pool({"url": A}, retry_budget=20),
            "server.app.retry_budget: expected a share from 0 to 1 (0.2 = 20%), got 20",
        ),
        (
            pool({"url": A}, execute="run-it"),
            "server.app.execute: starts the backend of proxy_url; start several backends yourself",
        ),
    ],
)
def test_refused(data: dict[str, Any], message: str) -> None:
    assert error_of(data) == message


def test_header_hash_key_is_lowercased() -> None:
    server = config_from_dict(
        pool({"url": A}, load_balance="consistent_hash", hash_key="header:X-User"), SOURCE
    ).servers[0]
    assert server.hash_key == "header:x-user"


def test_describe_round_trips_and_summarises_the_pool() -> None:
    config = config_from_dict(
        pool(
            {"url": A, "weight": 2},
            {"url": B},
            {"url": C, "backup": True},
            load_balance="consistent_hash",
            hash_key="cookie:session",
            health_check={"path": "/up?deep=1", "timeout": 1, "host": "app.example.com"},
            breaker_statuses=[503, 502],
            retries=2,
            retry_budget=0.5,
        ),
        SOURCE,
    )
    text = describe(config)
    assert config_from_dict(tomllib.loads(text), SOURCE) == config
    assert (
        "# consistent_hash on cookie:session over http://127.0.0.1:8001 (weight 2),"
        " http://127.0.0.1:8002/v2; backup https://app.internal:443\n" in text
    )
    assert "\nproxy_url" not in text  # the backends say it
    first = '[[server.app.backends]]  # from [server.app]\nurl = "http://127.0.0.1:8001"\n'
    assert "\n" + first + "weight = 2\n" in text
    assert "breaker_statuses = [502, 503]  # from [server.app]\n" in text


def test_describe_of_one_backend_names_it() -> None:
    config = config_from_dict({"server": {"app": {"proxy_url": A}}}, SOURCE)
    text = describe(config)
    assert "# round_robin over http://127.0.0.1:8001\n" in text
    assert "[[server.app.backends]]" not in text
    assert config_from_dict(tomllib.loads(text), SOURCE) == config


def test_backend_override_replaces_every_backend() -> None:
    config = config_from_dict(pool({"url": A}, {"url": B}), SOURCE)
    server = with_overrides(config, backend="http://127.0.0.1:9000").servers[0]
    assert server.backends == ()
    assert server.pool == (BackendConfig(BackendURL("http", "127.0.0.1", 9000, "")),)


def test_the_documented_example_loads() -> None:
    doc = (Path(__file__).resolve().parents[2] / "docs" / "configuration.md").read_text()
    section = doc.split("### Several backends", 1)[1]
    example = section.split("```toml\n", 1)[1].split("```", 1)[0]
    server = config_from_dict(tomllib.loads(example), "doc").servers[0]
    assert [b.weight for b in server.backends] == [2, 1, 1]
    assert server.backends[2].backup and server.load_balance == "least_connections"


def test_defaults_carry_the_balancing_keys_but_not_the_backends() -> None:
    data = {
        "defaults": {"load_balance": "least_connections", "health_check": {"path": "/up"}},
        "server": {
            "one": {"backends": [{"url": A}, {"url": B}], "bind_to": "/one"},
            "two": {"proxy_url": C, "load_balance": "random_two"},
        },
    }
    one, two = config_from_dict(data, SOURCE).servers
    assert one.load_balance == "least_connections" and two.load_balance == "random_two"
    assert one.health_check == two.health_check == HealthCheckConfig(path="/up")
    refused = {"defaults": {"backends": [{"url": A}]}, "server": {"app": {"proxy_url": B}}}
    assert error_of(refused) == (
        "defaults.backends: names one app: set it in each [server.NAME] table"
    )
