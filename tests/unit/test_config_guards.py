"""phantom.config: the edge guards' keys and [jwt]: defaults, one-line errors naming the key,
cross-checks, and describe() round trips."""

from __future__ import annotations

import ipaddress
import sys
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from phantom.checks import risky_settings
from phantom.config import CorsConfig, RateLimitConfig, config_from_dict, describe
from phantom.errors import ConfigError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib  # type: ignore[import-not-found, unused-ignore]

SOURCE = "phantom.toml"
SECRET = "s" * 32
JWT = {"secret": SECRET}


def load(server: dict[str, Any] | None = None, **root: Any) -> Any:
    return config_from_dict(
        {**root, "server": {"app": {"proxy_url": "http://127.0.0.1:8080", **(server or {})}}},
        SOURCE,
    )


def error_of(server: dict[str, Any] | None = None, **root: Any) -> str:
    with pytest.raises(ConfigError) as info:
        load(server, **root)
    message = str(info.value)
    assert "\n" not in message and message.startswith(f"{SOURCE}: ")
    return message[len(SOURCE) + 2 :]


def test_defaults_are_the_safe_ones() -> None:
    server = load().servers[0]
    assert (server.allow, server.deny, server.cors, server.allowed_origins) == ((), (), None, None)
    assert server.rate_limit is None and not server.auth_required
    assert (server.token_cookie, server.token_query) == (None, "access_token")
    assert (server.tunnel_rate, server.tunnel_max_bytes, server.rate_limit_max_keys) == (
        0,
        0,
        100_000,
    )
    assert server.tunnel_auth_expiry == "keep"


def test_everything_set_and_described_back() -> None:
    config = load(
        {
            "allow": ["10.0.0.0/8", "::1"],
            "deny": ["10.0.0.0/24"],
            "cors": {
                "origins": ["https://App.example.com"],
                "methods": ["GET", "PUT"],
                "headers": ["Content-Type"],
                "credentials": True,
                "max_age": 60,
            },
            "allowed_origins": ["https://*.example.com", "http://localhost:3000"],
            "require_origin": True,
            "rate_limit": {"requests": 100, "per": 60, "key": "jwt:sub"},
            "rate_limit_headers": True,
            "auth_required": True,
            "auth_claims": {"role": "admin", "level": 3, "beta": True},
            "forward_claims": {"sub": "X-User-Id", "email": "X-User-Email"},
            "token_cookie": "session",
            "token_query": "",
            "tunnel_auth_expiry": "close",
            "tunnel_rate": "1MiB",
        },
        jwt={**JWT, "issuer": "https://login.example", "audience": "api", "leeway": 5},
        tunnel_max_bytes="10 MB",
        rate_limit_max_keys=50,
    )
    server = config.servers[0]
    assert server.allow == (ipaddress.ip_network("10.0.0.0/8"), ipaddress.ip_network("::1"))
    assert server.cors == CorsConfig(
        ("https://app.example.com",), ("GET", "PUT"), ("content-type",), True, 60
    )
    assert server.rate_limit == RateLimitConfig(100, 60, 100, "jwt:sub")  # burst = requests
    assert server.tunnel_rate == 1 << 20 and server.tunnel_max_bytes == 10_000_000
    assert server.rate_limit_max_keys == 50
    assert config.jwt is not None and config.jwt.algorithms == ("HS256",)
    assert config.jwt.audience == ("api",)
    text = describe(config)
    assert SECRET not in text and "# secret is set (not shown)" in text
    again = config_from_dict(
        tomllib.loads(text.replace("# secret is set (not shown)", f'secret = "{SECRET}"')), SOURCE
    )
    assert again == config


def test_defaults_describe_back() -> None:
    config = load()
    assert config_from_dict(tomllib.loads(describe(config)), SOURCE) == config


@pytest.mark.parametrize(
    ("server", "root", "message"),
    [
        (
            {"auth_required": True},
            {},
            "server.app.auth_required: needs a [jwt] table with the key tokens are checked with",
        ),
        (
            {"rate_limit": {"requests": 1, "per": 1, "key": "jwt:sub"}},
            {},
            "server.app.rate_limit: needs a [jwt] table",
        ),
        (
            {"auth_claims": {"role": "a"}},
            {"jwt": JWT},
            "server.app.auth_claims: needs auth_required = true",
        ),
        (
            {"forward_claims": {"sub": "X-User"}},
            {"jwt": JWT},
            "server.app.forward_claims: needs auth_required = true",
        ),
        (
            {"tunnel_auth_expiry": "close"},
            {"jwt": JWT},
            "server.app.tunnel_auth_expiry: needs auth_required = true",
        ),
        ({"require_origin": True}, {}, "server.app.require_origin: needs allowed_origins"),
        ({"allowed_origins": ["*"]}, {}, "server.app.allowed_origins: '*' is not an origin"),
        ({"allowed_origins": ["null"]}, {}, "server.app.allowed_origins: 'null' is not an origin"),
        (
            {"allowed_origins": ["https://a.com/x"]},
            {},
            "server.app.allowed_origins: expected an origin",
        ),
        ({"allow": ["10.0.0.0/33"]}, {}, "server.app.allow: expected an address or CIDR"),
        ({"tunnel_rate": "9" * 400}, {}, "server.app.tunnel_rate: expected at most"),
        ({}, {"tunnel_max_bytes": "9" * 400 + "GiB"}, "tunnel_max_bytes: expected at most"),
        ({"rate_limit": {"per": 1}}, {}, "server.app.rate_limit.requests: missing"),
        (
            {"rate_limit": {"requests": 0, "per": 1}},
            {},
            "server.app.rate_limit.requests: must be 1 or greater",
        ),
        (
            {"rate_limit": {"requests": 1, "per": 1, "key": "cookie:x"}},
            {},
            "server.app.rate_limit.key: expected one of client_ip, jwt:CLAIM, header:NAME",
        ),
        (
            {"rate_limit": {"requests": 1, "per": 1, "bucket": 2}},
            {},
            "server.app.rate_limit.bucket: unknown key",
        ),
        ({"cors": {"methods": ["GET"]}}, {}, "server.app.cors.origins: missing"),
        (
            {"cors": {"origins": ["*"], "credentials": True}},
            {},
            'server.app.cors.origins: "*" with credentials = true',
        ),
        (
            {"forward_claims": {"sub": "Host"}, "auth_required": True},
            {"jwt": JWT},
            "server.app.forward_claims: 'Host' is a field",
        ),
        (
            {"forward_claims": {"sub": "X_User"}, "auth_required": True},
            {"jwt": JWT},
            "server.app.forward_claims: use '-' rather than '_'",
        ),
        (
            {"forward_claims": {"sub": "X-A", "id": "x-a"}, "auth_required": True},
            {"jwt": JWT},
            "server.app.forward_claims: two claims",
        ),
        (
            {"auth_claims": {"role": ["a"]}, "auth_required": True},
            {"jwt": JWT},
            "server.app.auth_claims: role: expected a string, number or boolean",
        ),
        ({"token_query": "a&b"}, {}, "server.app.token_query: expected a query parameter name"),
        ({"token_cookie": "a b"}, {}, "server.app.token_cookie: expected a name"),
        ({"tunnel_rate": "fast"}, {}, "server.app.tunnel_rate: expected bytes such as"),
        (
            {"tunnel_auth_expiry": "kill"},
            {},
            "server.app.tunnel_auth_expiry: expected one of keep, close",
        ),
        ({}, {"jwt": {}}, "jwt: missing: set one of secret, public_key, jwks_url"),
        ({}, {"jwt": {"secret": SECRET, "jwks_url": "https://a/jwks"}}, "jwt: set only one of"),
        (
            {},
            {"jwt": {"secret": "short"}},
            "jwt.secret: must be at least 32 bytes for HS256, got 5",
        ),
        (
            {},
            {"jwt": {"secret": SECRET, "algorithms": ["HS512"]}},
            "jwt.secret: must be at least 64 bytes",
        ),
        (
            {},
            {"jwt": {"secret": SECRET, "algorithms": ["RS256"]}},
            "jwt.algorithms: RS256 can't be checked with secret",
        ),
        (
            {},
            {"jwt": {"secret": SECRET, "algorithms": ["none"]}},
            "jwt.algorithms: expected some of",
        ),
        (
            {},
            {"jwt": {"jwks_url": "https://a/jwks"}},
            "jwt.algorithms: missing: a JWKS may hold several kinds of key",
        ),
        (
            {},
            {"jwt": {"jwks_url": "https://a/jwks", "algorithms": ["HS256"]}},
            "jwt.algorithms: HS256 can't be checked with jwks_url",
        ),
        (
            {},
            {"jwt": {"public_key": "/nonexistent/key.pem"}},
            "jwt.public_key: /nonexistent/key.pem:",
        ),
    ],
)
def test_errors_name_the_key(server: dict[str, Any], root: dict[str, Any], message: str) -> None:
    assert error_of(server, **root).startswith(message)


def test_an_unset_secret_variable_is_an_error() -> None:
    with pytest.raises(
        ConfigError, match="jwt.secret: environment variable NOPE_SECRET is not set"
    ):
        config_from_dict(
            {
                "jwt": {"secret": "$env:NOPE_SECRET"},
                "server": {"a": {"proxy_url": "http://127.0.0.1:1"}},
            },
            SOURCE,
            environ={},
        )


def test_public_key_algorithms_come_from_the_key(tmp_path: Path) -> None:
    key = ec.generate_private_key(ec.SECP384R1()).public_key()
    (tmp_path / "k.pem").write_bytes(
        key.public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    config = config_from_dict(
        {"jwt": {"public_key": "k.pem"}, "server": {"a": {"proxy_url": "http://127.0.0.1:1"}}},
        SOURCE,
        base_dir=str(tmp_path),
    )
    assert config.jwt is not None and config.jwt.algorithms == ("ES384",)
    assert config.jwt.public_key == str(tmp_path / "k.pem")


def test_check_warns_about_a_cookie_token_without_allowed_origins() -> None:
    risky = load({"auth_required": True, "token_cookie": "session"}, jwt=JWT)
    assert any(
        "allowed_origins: not set while tokens come from the 'session' cookie" in w
        for w in risky_settings(risky)
    )
    safe = load(
        {
            "auth_required": True,
            "token_cookie": "session",
            "allowed_origins": ["https://a.example"],
        },
        jwt=JWT,
    )
    assert risky_settings(safe) == []
