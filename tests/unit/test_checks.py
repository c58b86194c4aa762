"""Risky-settings warnings (issue 7): each fires on its risky shape and stays quiet otherwise."""

from __future__ import annotations

from typing import Any

import pytest

from phantom.checks import risky_settings
from phantom.config import config_from_dict


def warnings_for(root: dict[str, Any] | None = None, **server: Any) -> list[str]:
    data = {**(root or {}), "server": {"app": {"proxy_url": "http://127.0.0.1:8000", **server}}}
    return risky_settings(config_from_dict(data, "phantom.toml"))


def test_defaults_are_quiet() -> None:
    assert warnings_for() == []


@pytest.mark.parametrize(
    ("root", "risky"),
    [
        ({"control_port": 9000, "control_listen": "0.0.0.0"}, True),
        ({"control_port": 9000, "control_listen": "::"}, True),
        ({"control_port": 9000, "control_listen": "ctl.example.com"}, True),
        ({"control_port": 9000, "control_listen": "0.0.0.0", "control_auth": "t"}, False),
        ({"control_port": 9000, "control_listen": "::1"}, False),
        ({"control_port": 9000, "control_listen": "localhost"}, False),
        ({"control_listen": "0.0.0.0"}, False),  # no control_port: the API is off
    ],
)
def test_public_control_api_without_auth(root: dict[str, Any], risky: bool) -> None:
    found = warnings_for(root)
    assert bool(found) is risky
    if risky:
        assert found[0].startswith("control_listen: the control API listens on ")


def test_backend_tls_verification_off() -> None:
    (warning,) = warnings_for(proxy_url="https://app.internal", backend_tls_verify=False)
    assert warning.startswith("server.app.backend_tls_verify: false: the certificate of ")
    assert warnings_for(proxy_url="http://app.internal", backend_tls_verify=False) == []


def test_backend_tls_verification_off_names_every_https_backend() -> None:
    backends = [{"url": "http://a.internal"}, {"url": "https://b.internal"}]
    data = {"server": {"app": {"backends": backends, "backend_tls_verify": False}}}
    (warning,) = risky_settings(config_from_dict(data, "phantom.toml"))
    assert "the certificate of https://b.internal:443 is not checked" in warning


@pytest.mark.parametrize(
    ("server", "risky"),
    [
        ({"preserve_host": False, "hosts": ["a.example.com", "b.example.com"]}, True),
        ({"preserve_host": False, "hosts": ["*.example.com"]}, True),
        ({"preserve_host": False, "hosts": ["a.example.com"]}, False),
        ({"preserve_host": True, "hosts": ["a.example.com", "b.example.com"]}, False),
        (
            {
                "preserve_host": False,
                "hosts": ["a.example.com", "b.example.com"],
                "cache_max_entries": 0,
            },
            False,
        ),
    ],
)
def test_preserve_host_false_with_several_hosts_and_a_cache(
    server: dict[str, Any], risky: bool
) -> None:
    found = warnings_for(**server)
    assert bool(found) is risky
    if risky:
        assert found[0].startswith("server.app.preserve_host: false with several hosts")


@pytest.mark.parametrize(
    ("server", "bypassed"),
    [
        ({"upgrade_protocols": ["*", "h2c"], "hosts": ["a.example.com"]}, "hosts"),
        ({"upgrade_protocols": ["H2C"], "exclude_paths": ["/admin*"]}, "exclude_paths"),
        (
            {"upgrade_protocols": ["h2c"], "proxy_url": "http://127.0.0.1:8000/v1"},
            "the base path of proxy_url",
        ),
        (
            {
                "upgrade_protocols": ["h2c"],
                "webhooks": [{"url": "http://127.0.0.1:4000/auth", "type": "blocking"}],
                "hosts": ["a.example.com"],
            },
            "the webhooks, hosts",
        ),
    ],
)
def test_h2c_tunnelled_past_per_request_rules(server: dict[str, Any], bypassed: str) -> None:
    (warning,) = warnings_for(**server)
    assert warning == (
        "server.app.upgrade_protocols: h2c is tunnelled, and the HTTP/2 requests inside its "
        f"tunnel pass {bypassed} unchecked"
    )


@pytest.mark.parametrize(
    "server",
    [
        {"upgrade_protocols": ["h2c"]},  # nothing per request to get past
        {"hosts": ["a.example.com"], "exclude_paths": ["/admin*"]},  # "*" keeps h2c out
        {"upgrade_protocols": ["h2c"], "hosts": ["a.example.com"], "enable_websocket": False},
    ],
)
def test_h2c_quiet_where_it_bypasses_nothing(server: dict[str, Any]) -> None:
    assert warnings_for(**server) == []


@pytest.mark.parametrize(
    ("url", "risky"),
    [
        ("http://preview.example.com", True),
        ("http://10.0.0.5:8080", True),
        ("https://preview.example.com", False),
        ("http://127.0.0.1:9000", False),
        ("http://localhost:9000", False),
    ],
)
def test_plain_http_fallback_to_another_machine(url: str, risky: bool) -> None:
    found = warnings_for(fallback_url=url)
    assert bool(found) is risky
    if risky:
        assert found[0].startswith("server.app.fallback_url: http://")


@pytest.mark.parametrize(
    ("url", "risky"),
    [
        ("redis://:hunter2@cache.internal:6379/0", True),
        ("redis://10.0.0.5:6379", True),
        ("rediss://:hunter2@cache.internal:6380/0", False),
        ("redis://127.0.0.1:6379/0", False),
        ("unix:///run/redis.sock", False),
    ],
)
def test_redis_across_the_network_without_tls(url: str, risky: bool) -> None:
    found = warnings_for({"redis": {"url": url}}, cache_storage_mode="redis")
    assert bool(found) is risky
    if risky:
        assert found[0].startswith("redis.url: ")
        assert found[0].endswith("use rediss://")
        assert "hunter2" not in found[0]
