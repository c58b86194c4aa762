"""phantom.config: defaults, validation messages (file + dotted key), overrides, describe().

Pure: no sockets, no event loop. The only files touched are temporary TOML files and the shipped
example ``phantom.toml``.
"""

from __future__ import annotations

import dataclasses
import os
import sys
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from phantom.config import (
    LOG_LEVELS,
    BackendURL,
    Config,
    ServerConfig,
    config_from_dict,
    describe,
    load_config,
    parse_backend_url,
    with_overrides,
)
from phantom.errors import BackendError, BackendTimeout, ConfigError, PhantomError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib  # type: ignore[import-not-found, unused-ignore]

REPO = Path(__file__).resolve().parents[2]
SOURCE = "phantom.toml"
BACKEND = "http://127.0.0.1:8080"


def minimal(**root: Any) -> dict[str, Any]:
    return {**root, "server": {"app": {"proxy_url": BACKEND}}}


def with_server(**server: Any) -> dict[str, Any]:
    return {"server": {"app": {"proxy_url": BACKEND, **server}}}


def error_of(data: Any) -> str:
    with pytest.raises(ConfigError) as info:
        config_from_dict(data, SOURCE)
    message = str(info.value)
    assert "\n" not in message
    return message


def write(tmp_path: Path, text: str | bytes, name: str = "cfg.toml") -> Path:
    path = tmp_path / name
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_text(text, encoding="utf-8")
    return path


# -- errors -----------------------------------------------------------------------------------


def test_config_error_is_one_line_naming_source_and_key() -> None:
    err = ConfigError("a.toml", "server.app.cache_ttl", "expected a number,\ngot string")
    assert (err.source, err.key) == ("a.toml", "server.app.cache_ttl")
    assert str(err) == "a.toml: server.app.cache_ttl: expected a number, got string"
    assert isinstance(err, PhantomError)


def test_error_statuses() -> None:
    assert PhantomError.status == 500
    assert BackendError.status == 502
    assert BackendTimeout.status == 504
    assert issubclass(BackendTimeout, BackendError)


# -- defaults ---------------------------------------------------------------------------------


def test_defaults_from_minimal_table() -> None:
    config = config_from_dict(minimal())
    assert config == Config(
        servers=(ServerConfig("app", BackendURL("http", "127.0.0.1", 8080, "")),),
        source="<dict>",
    )
    assert config.listen == "127.0.0.1"
    assert config.http_port == 3000
    assert config.backend_connect_timeout == 5.0
    assert config.backend_timeout == 60.0
    assert config.shutdown_timeout == 30.0
    assert config.log_level == "info"
    (server,) = config.servers
    assert server.enable_websocket is True
    assert server.cache_ttl == 60.0
    assert server.cache_max_entries == 10_000
    assert server.cache_max_bytes == 256 * 1024 * 1024
    assert server.cache_max_object_bytes == 8 * 1024 * 1024


def test_every_key_set() -> None:
    config = config_from_dict(
        {
            "listen": "::",
            "http_port": 0,
            "backend_connect_timeout": 0.25,
            "backend_timeout": 2,
            "shutdown_timeout": 1.5,
            "log_level": "DEBUG",
            "server": {
                "web-1": {
                    "proxy_url": "http://[::1]:9000/v1/",
                    "enable_websocket": False,
                    "cache_ttl": 0,
                    "cache_max_entries": 0,
                    "cache_max_bytes": 1,
                    "cache_max_object_bytes": 2,
                }
            },
        },
        "x.toml",
    )
    assert config == Config(
        servers=(
            ServerConfig(
                name="web-1",
                proxy_url=BackendURL("http", "::1", 9000, "/v1"),
                enable_websocket=False,
                cache_ttl=0.0,
                cache_max_entries=0,
                cache_max_bytes=1,
                cache_max_object_bytes=2,
            ),
        ),
        listen="::",
        http_port=0,
        backend_connect_timeout=0.25,
        backend_timeout=2.0,
        shutdown_timeout=1.5,
        log_level="debug",
        source="x.toml",
    )
    assert isinstance(config.backend_timeout, float)
    assert isinstance(config.servers[0].cache_ttl, float)


def test_upgrade_protocols_default_and_lowercased() -> None:
    assert config_from_dict(minimal(), "x.toml").servers[0].upgrade_protocols == ("*",)
    config = config_from_dict(
        with_server(upgrade_protocols=["WebSocket", "H2C", "IRC/6.9", "websocket", "*"]), "x.toml"
    )
    assert config.servers[0].upgrade_protocols == ("websocket", "h2c", "irc/6.9", "*")
    none = config_from_dict(with_server(upgrade_protocols=[]), "x.toml")
    assert none.servers[0].upgrade_protocols == ()


def test_config_is_frozen() -> None:
    config = config_from_dict(minimal())
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.http_port = 1  # type: ignore[misc]


def test_listen_accepts_bracketed_ipv6_and_host_names() -> None:
    assert config_from_dict(minimal(listen="[::1]")).listen == "::1"
    assert config_from_dict(minimal(listen="localhost")).listen == "localhost"
    assert config_from_dict(minimal(listen="0.0.0.0")).listen == "0.0.0.0"


# -- backend URLs -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "host", "port", "base_path", "netloc", "as_text"),
    [
        (BACKEND, "127.0.0.1", 8080, "", "127.0.0.1:8080", BACKEND),
        ("http://example.com", "example.com", 80, "", "example.com:80", "http://example.com:80"),
        ("http://example.com/", "example.com", 80, "", "example.com:80", "http://example.com:80"),
        ("HTTP://Example.COM:81/Api", "example.com", 81, "/Api", "example.com:81", None),
        ("http://[::1]:9000/v1/", "::1", 9000, "/v1", "[::1]:9000", "http://[::1]:9000/v1"),
        ("http://backend_1:8000/a/b", "backend_1", 8000, "/a/b", "backend_1:8000", None),
    ],
)
def test_backend_url(
    text: str, host: str, port: int, base_path: str, netloc: str, as_text: str | None
) -> None:
    url = parse_backend_url(text)
    assert url == BackendURL("http", host, port, base_path)
    assert url.netloc == netloc
    assert str(url) == (as_text or f"http://{netloc}{base_path}")


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("https://example.com", BackendURL("https", "example.com", 443, "")),
        ("HTTPS://example.com:8443/v1", BackendURL("https", "example.com", 8443, "/v1")),
        ("wss://example.com", BackendURL("https", "example.com", 443, "")),
        ("ws://example.com", BackendURL("http", "example.com", 80, "")),
        ("ws://[::1]:9000", BackendURL("http", "::1", 9000, "")),
    ],
)
def test_backend_url_tls_and_websocket_aliases(text: str, expected: BackendURL) -> None:
    assert parse_backend_url(text) == expected


SHAPE = "expected http[s]://host[:port][/path]"


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("ftp://example.com", f"{SHAPE}, got 'ftp://example.com'"),
        ("wss:/example.com", f"{SHAPE}, got 'wss:/example.com'"),
        ("127.0.0.1:8080", f"{SHAPE}, got '127.0.0.1:8080'"),
        ("localhost:8080", f"{SHAPE}, got 'localhost:8080'"),
        ("example.com", f"{SHAPE}, got 'example.com'"),
        ("http:/example.com", f"{SHAPE}, got 'http:/example.com'"),
        ("http://", f"{SHAPE}, got 'http://'"),
        ("http:///path", f"{SHAPE}, got 'http:///path'"),
        ("http://:8080", f"{SHAPE}, got 'http://:8080'"),
        ("http://h:0", f"{SHAPE}, got 'http://h:0'"),
        ("http://h:65536", f"{SHAPE}, got 'http://h:65536'"),
        ("http://h:port", f"{SHAPE}, got 'http://h:port'"),
        ("http://h:", f"{SHAPE}, got 'http://h:'"),
        ("http://[::1", f"{SHAPE}, got 'http://[::1'"),
        ("http://-bad-/", f"{SHAPE}, got 'http://-bad-/'"),
        ("http://a b/", f"{SHAPE}, got 'http://a b/'"),
        ("http://h/a b", f"{SHAPE}, got 'http://h/a b'"),
        (" http://h/", f"{SHAPE}, got ' http://h/'"),
        ("http://h/\n", f"{SHAPE}, got 'http://h/\\n'"),
        ("", f"{SHAPE}, got ''"),
        ("http://h/?a=1", f"{SHAPE} without a query or fragment, got 'http://h/?a=1'"),
        ("http://h/?", f"{SHAPE} without a query or fragment, got 'http://h/?'"),
        ("http://h/#top", f"{SHAPE} without a query or fragment, got 'http://h/#top'"),
        ("http://user:secret@h/", f"{SHAPE} without user:password@"),
    ],
)
def test_bad_proxy_url(text: str, problem: str) -> None:
    assert error_of(with_server(proxy_url=text)) == (
        f"phantom.toml: server.app.proxy_url: {problem}"
    )


def test_credentials_are_not_echoed() -> None:
    assert "secret" not in error_of(with_server(proxy_url="http://user:secret@h/"))


# -- validation messages ----------------------------------------------------------------------

NUMBER_ROOT_KEYS = ["backend_connect_timeout", "backend_timeout", "shutdown_timeout"]


@pytest.mark.parametrize(
    ("data", "message"),
    [
        # unknown keys, named as dotted paths
        (minimal(htp_port=3000), "htp_port: unknown key"),
        (minimal(source="x"), "source: unknown key"),
        (minimal(servers=[]), "servers: unknown key"),
        (minimal(**{"a b": 1}), '"a b": unknown key'),
        (with_server(cache_tl=60), "server.app.cache_tl: unknown key"),
        (with_server(name="x"), "server.app.name: unknown key"),
        # http_port
        (minimal(http_port="3000"), "http_port: expected an integer, got string"),
        (minimal(http_port=True), "http_port: expected an integer, got boolean"),
        (minimal(http_port=3000.0), "http_port: expected an integer, got float"),
        (minimal(http_port=[3000]), "http_port: expected an integer, got array"),
        (minimal(http_port=70000), "http_port: must be between 0 and 65535, got 70000"),
        (minimal(http_port=-1), "http_port: must be between 0 and 65535, got -1"),
        # timeouts
        *[
            case
            for key in NUMBER_ROOT_KEYS
            for case in [
                (minimal(**{key: "5"}), f"{key}: expected a number, got string"),
                (minimal(**{key: False}), f"{key}: expected a number, got boolean"),
                (minimal(**{key: {}}), f"{key}: expected a number, got table"),
                (minimal(**{key: 0}), f"{key}: must be greater than 0, got 0"),
                (minimal(**{key: 0.0}), f"{key}: must be greater than 0, got 0"),
                (minimal(**{key: -1}), f"{key}: must be greater than 0, got -1"),
                (minimal(**{key: -0.5}), f"{key}: must be greater than 0, got -0.5"),
                (minimal(**{key: float("inf")}), f"{key}: must be a finite number, got inf"),
                (minimal(**{key: float("nan")}), f"{key}: must be a finite number, got nan"),
            ]
        ],
        # log_level
        (
            minimal(log_level="loud"),
            "log_level: expected one of debug, info, warning, error, got 'loud'",
        ),
        (minimal(log_level=10), "log_level: expected a string, got integer"),
        # listen
        (
            minimal(listen=""),
            'listen: must not be empty (use "0.0.0.0" or "::" for all interfaces)',
        ),
        (minimal(listen=0), "listen: expected a string, got integer"),
        (
            minimal(listen="127.0.0.1:3000"),
            "listen: expected an IP address or host name without a port, got '127.0.0.1:3000'",
        ),
        (
            minimal(listen="http://0.0.0.0"),
            "listen: expected an IP address or host name, got 'http://0.0.0.0'",
        ),
        (minimal(listen="a b"), "listen: expected an IP address or host name, got 'a b'"),
        # server tables
        ({}, "server: at least one [server.NAME] table is required"),
        ({"server": {}}, "server: at least one [server.NAME] table is required"),
        (
            {"server": {"a": {"proxy_url": BACKEND}, "b": {"proxy_url": BACKEND}}},
            "server.b.bind_to: '*' is already bound by server.a",
        ),
        ({"server": "app"}, "server: expected a table, got string"),
        ({"server": [{"proxy_url": BACKEND}]}, "server: expected a table, got array"),
        ({"server": {"app": 1}}, "server.app: expected a [server.NAME] table, got integer"),
        (
            {"server": {"proxy_url": BACKEND}},
            "server.proxy_url: settings go in a [server.NAME] table, e.g. [server.default]",
        ),
        (
            {"server": {"my app": {"proxy_url": BACKEND}}},
            "server.\"my app\": server names may use only letters, digits, '-' and '_'",
        ),
        (
            {"server": {"app": {}}},
            "server.app.proxy_url: missing: the backend to forward to, "
            'e.g. "http://127.0.0.1:8080" (or [[backends]] tables)',
        ),
        (with_server(proxy_url=8080), "server.app.proxy_url: expected a string, got integer"),
        # server values
        (with_server(cache_ttl="60"), "server.app.cache_ttl: expected a number, got string"),
        (with_server(cache_ttl=-1), "server.app.cache_ttl: must be 0 or greater, got -1"),
        (
            with_server(cache_ttl=float("inf")),
            "server.app.cache_ttl: must be a finite number, got inf",
        ),
        (
            with_server(enable_websocket="yes"),
            "server.app.enable_websocket: expected a boolean, got string",
        ),
        (
            with_server(enable_websocket=1),
            "server.app.enable_websocket: expected a boolean, got integer",
        ),
        *[
            case
            for key in ["cache_max_entries", "cache_max_bytes", "cache_max_object_bytes"]
            for case in [
                (with_server(**{key: -1}), f"server.app.{key}: must be 0 or greater, got -1"),
                (with_server(**{key: 1.5}), f"server.app.{key}: expected an integer, got float"),
                (with_server(**{key: True}), f"server.app.{key}: expected an integer, got boolean"),
            ]
        ],
        (
            with_server(cache_strategy="html"),
            "server.app.cache_strategy: expected one of all, none, only_html, no_images, "
            "only_images, only_assets, got 'html'",
        ),
        (
            with_server(compress_strategy="br"),
            "server.app.compress_strategy: expected one of none, brotli, gzip, deflate, "
            "got 'br'",
        ),
        (
            with_server(cache_heuristic="sometimes"),
            "server.app.cache_heuristic: expected one of last-modified, always, off, "
            "got 'sometimes'",
        ),
        (
            with_server(coalesce_timeout=0),
            "server.app.coalesce_timeout: must be greater than 0, got 0",
        ),
        (
            with_server(cache_storage_mode="disk"),
            "server.app.cache_storage_mode: expected one of memory, filesystem, redis, got 'disk'",
        ),
        (
            with_server(cache_storage_mode="filesystem"),
            'server.app.cache_directory: required when cache_storage_mode = "filesystem"',
        ),
        (
            with_server(include_paths="/api/*"),
            "server.app.include_paths: expected an array of strings, got string",
        ),
        (
            with_server(exclude_paths=["api/*"]),
            "server.app.exclude_paths: expected a path pattern starting with / or *, "
            "got 'api/*'",
        ),
        (
            with_server(exclude_paths=[1]),
            "server.app.exclude_paths: expected a string, got integer",
        ),
        (
            with_server(store_set_cookie=1),
            "server.app.store_set_cookie: expected a boolean, got integer",
        ),
        (
            with_server(forward_get_only="no"),
            "server.app.forward_get_only: expected a boolean, got string",
        ),
        (
            with_server(serve_stale_on_error=-5),
            "server.app.serve_stale_on_error: must be 0 or greater, got -5",
        ),
        (
            with_server(cache_stale_keep=-1),
            "server.app.cache_stale_keep: must be 0 or greater, got -1",
        ),
        (
            with_server(surrogate_control="yes"),
            "server.app.surrogate_control: expected a boolean, got string",
        ),
        (
            with_server(cdn_cache_control=1),
            "server.app.cdn_cache_control: expected a boolean, got integer",
        ),
        (
            with_server(cache_404_capacity=-1),
            "server.app.cache_404_capacity: must be 0 or greater, got -1",
        ),
        (
            with_server(cache_404_ttl="1m"),
            "server.app.cache_404_ttl: expected a number, got string",
        ),
        (
            with_server(upgrade_protocols="*"),
            'server.app.upgrade_protocols: expected an array of Upgrade tokens or "*", such '
            'as ["websocket"], got string',
        ),
        (
            with_server(upgrade_protocols=["websocket", "h2c, x"]),
            "server.app.upgrade_protocols: expected an Upgrade token such as "
            """"websocket", or "*", got 'h2c, x'""",
        ),
        (
            with_server(upgrade_protocols=["websocket/"]),
            "server.app.upgrade_protocols: expected an Upgrade token such as "
            """"websocket", or "*", got 'websocket/'""",
        ),
        (
            with_server(upgrade_protocols=[2]),
            "server.app.upgrade_protocols: expected a string, got integer",
        ),
    ],
)
def test_validation_message(data: dict[str, Any], message: str) -> None:
    assert error_of(data) == f"phantom.toml: {message}"


def test_root_must_be_a_table() -> None:
    assert error_of([1]) == "phantom.toml: <root>: expected a table, got array"


def test_first_problem_in_file_order_is_reported() -> None:
    data = {"http_port": "x", "listen": 1, "server": {"app": {"cache_tl": 1}}}
    assert error_of(data) == "phantom.toml: http_port: expected an integer, got string"


def test_error_carries_source_key_and_problem() -> None:
    with pytest.raises(ConfigError) as info:
        config_from_dict(with_server(cache_ttl="60"), "site.toml")
    err = info.value
    assert (err.source, err.key, err.problem) == (
        "site.toml",
        "server.app.cache_ttl",
        "expected a number, got string",
    )


def test_log_level_is_case_insensitive() -> None:
    for level in LOG_LEVELS:
        assert config_from_dict(minimal(log_level=level.upper())).log_level == level


# -- loading files ----------------------------------------------------------------------------


def test_load_config(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        'http_port = 8000\n[server.app]\nproxy_url = "http://127.0.0.1:9000"\ncache_ttl = 5\n',
    )
    config = load_config(path)
    assert config.source == str(path)
    assert config.http_port == 8000
    assert config.servers[0].proxy_url == BackendURL("http", "127.0.0.1", 9000, "")
    assert config.servers[0].cache_ttl == 5.0
    assert load_config(str(path)) == config


def test_cache_directory_is_relative_to_the_config_file(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        '[server.app]\nproxy_url = "http://127.0.0.1:9000"\n'
        'cache_storage_mode = "filesystem"\ncache_directory = "cache"\n',
    )
    assert load_config(path).servers[0].cache_directory == str(tmp_path / "cache")


def test_load_config_names_the_file(tmp_path: Path) -> None:
    path = write(tmp_path, '[server.app]\nproxy_url = "ftp://example.com"\n')
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert str(info.value) == f"{path}: server.app.proxy_url: {SHAPE}, got 'ftp://example.com'"


def test_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "nope.toml"
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert str(info.value) == f"{path}: <file>: file not found"


def test_directory(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        load_config(tmp_path)
    assert info.value.key == "<file>"
    assert str(info.value).startswith(f"{tmp_path}: <file>: ")


def test_toml_syntax_error(tmp_path: Path) -> None:
    path = write(tmp_path, '[server.app]\nproxy_url = "http://x\n')
    with pytest.raises(ConfigError) as info:
        load_config(path)
    message = str(info.value)
    assert message.startswith(f"{path}: <toml>: ")
    assert "line 2" in message
    assert "\n" not in message


def test_toml_duplicate_key(tmp_path: Path) -> None:
    path = write(tmp_path, "http_port = 1\nhttp_port = 2\n")
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert str(info.value).startswith(f"{path}: <toml>: ")


def test_not_utf8(tmp_path: Path) -> None:
    path = write(tmp_path, b'listen = "\xff"\n')
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert str(info.value) == f"{path}: <toml>: not valid UTF-8 (byte 10)"


def test_utf8_bom_is_accepted(tmp_path: Path) -> None:
    path = write(tmp_path, b'\xef\xbb\xbf[server.app]\nproxy_url = "http://127.0.0.1:80"\n')
    assert load_config(path).servers[0].proxy_url.port == 80


def test_shipped_example_is_valid() -> None:
    config = load_config(REPO / "phantom.toml")
    assert config == Config(
        servers=(ServerConfig("default", BackendURL("http", "127.0.0.1", 8080, "")),),
        source=str(REPO / "phantom.toml"),
    ), "phantom.toml should show the defaults (so it opens no control port either)"


# -- overrides --------------------------------------------------------------------------------


def test_overrides() -> None:
    config = config_from_dict(minimal(), SOURCE)
    changed = with_overrides(
        config, host="0.0.0.0", port=0, backend="http://[::1]:81/x/", log_level="WARNING"
    )
    assert changed == dataclasses.replace(
        config,
        listen="0.0.0.0",
        http_port=0,
        log_level="warning",
        servers=(
            dataclasses.replace(config.servers[0], proxy_url=BackendURL("http", "::1", 81, "/x")),
        ),
    )
    assert config.http_port == 3000  # the original is untouched


def test_no_overrides_is_identity() -> None:
    config = config_from_dict(minimal(), SOURCE)
    assert with_overrides(config) == config


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"port": 70000}, "--port: must be between 0 and 65535, got 70000"),
        ({"port": -1}, "--port: must be between 0 and 65535, got -1"),
        ({"backend": "ftp://x"}, "--backend: expected http[s]://host[:port][/path], got 'ftp://x'"),
        ({"backend": "x:80"}, "--backend: expected http[s]://host[:port][/path], got 'x:80'"),
        ({"host": ""}, '--host: must not be empty (use "0.0.0.0" or "::" for all interfaces)'),
        (
            {"log_level": "loud"},
            "--log-level: expected one of debug, info, warning, error, got 'loud'",
        ),
    ],
)
def test_bad_override(kwargs: dict[str, Any], message: str) -> None:
    config = config_from_dict(minimal(), SOURCE)
    with pytest.raises(ConfigError) as info:
        with_overrides(config, **kwargs)
    assert str(info.value) == f"phantom.toml: {message}"


# -- describe ---------------------------------------------------------------------------------


def reload(config: Config) -> Config:
    return config_from_dict(tomllib.loads(describe(config)), config.source)


def test_describe_fills_in_defaults() -> None:
    text = describe(config_from_dict(minimal(), SOURCE))
    assert text.startswith("# phantom: effective configuration from phantom.toml")
    for field in dataclasses.fields(Config):
        if field.name in ("servers", "source", "dotenv_vars"):
            continue
        if field.default is None:  # optional settings that are off say so
            assert f"\n# {field.name} is not set" in text
        else:
            assert f"\n{field.name} = " in text
    assert "\n[server.app]\n" in text
    for field in dataclasses.fields(ServerConfig):
        if field.name in ("name", "origins", "backends"):  # backends: [[...]], when set
            continue
        if field.default is None:
            assert f"\n# {field.name} is not set" in text
        else:
            assert f"\n{field.name} = " in text
    assert '\nproxy_url = "http://127.0.0.1:8080"  # from [server.app]\n' in text
    assert "\ncache_max_bytes = 268_435_456  # 256 MiB\n" in text


def test_describe_round_trip_defaults() -> None:
    config = config_from_dict(minimal(), SOURCE)
    assert reload(config) == config


def test_describe_round_trip_everything_set() -> None:
    config = config_from_dict(
        {
            "listen": "::1",
            "http_port": 0,
            "backend_connect_timeout": 0.1,
            "backend_timeout": 1e-3,
            "shutdown_timeout": 12345.678,
            "log_level": "error",
            "https_port": 8443,
            "cert_path": "certs/site.pem",
            "key_path": "certs/site.key",
            "access_log": "/var/log/phantom/access.log",
            "access_log_format": "json",
            "server": {
                "my_site-2": {
                    "proxy_url": "wss://Example.com:81/base/",
                    "backend_ca": "ca.pem",
                    "backend_tls_verify": False,
                    "enable_websocket": False,
                    "cache_ttl": 0,
                    "cache_heuristic": "off",
                    "coalesce_timeout": 0.25,
                    "cache_max_entries": 1,
                    "cache_max_bytes": 123_456_789,
                    "cache_max_object_bytes": 1024,
                    "store_set_cookie": True,
                    "serve_stale_on_error": 30,
                    "cache_stale_keep": 600,
                    "surrogate_control": False,
                    "cache_strategy": "only_assets",
                    "include_paths": ["GET /api/*", '/quote"d*'],
                    "exclude_paths": ["*.map"],
                    "forward_get_only": True,
                    "cache_404_capacity": 0,
                    "cache_404_ttl": 5,
                    "compress_strategy": "gzip",
                    "cache_storage_mode": "filesystem",
                    "cache_directory": "/var/cache/phantom",
                }
            },
        },
        "odd\nname.toml",
    )
    assert reload(config) == config


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"https_port": 443}, "cert_path: missing: https_port needs cert_path and key_path"),
        (
            {"https_port": 443, "cert_path": "c.pem"},
            "key_path: missing: https_port needs cert_path and key_path",
        ),
        ({"key_path": "k.pem"}, "key_path: set, but https_port is not: no TLS listener uses it"),
        ({"cert_path": ""}, "cert_path: expected a file path"),
        (
            {"access_log_format": "common"},
            "access_log_format: expected one of combined, json, got 'common'",
        ),
        ({"access_log": 1}, "access_log: expected a string, got integer"),
    ],
)
def test_tls_listener_and_access_log_keys(options: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError) as info:
        config_from_dict(minimal(**options), SOURCE)
    assert str(info.value) == f"{SOURCE}: {message}"


def test_backend_tls_keys_are_checked() -> None:
    bad = {"server": {"app": {"proxy_url": BACKEND, "backend_tls_verify": "no"}}}
    with pytest.raises(ConfigError) as info:
        config_from_dict(bad, SOURCE)
    assert str(info.value) == (
        f"{SOURCE}: server.app.backend_tls_verify: expected a boolean, got string"
    )


def test_describe_round_trip_through_a_file(tmp_path: Path) -> None:
    config = load_config(REPO / "phantom.toml")
    path = write(tmp_path, describe(config))
    assert load_config(path) == dataclasses.replace(config, source=str(path))


hosts = st.one_of(
    st.sampled_from(["127.0.0.1", "::", "::1", "0.0.0.0", "localhost", "fe80::1"]),
    st.from_regex(r"[a-z0-9]([a-z0-9-]{0,10}[a-z0-9])?(\.[a-z0-9]{1,5}){0,2}", fullmatch=True),
)
seconds = st.floats(min_value=1e-6, max_value=1e9, allow_nan=False, allow_infinity=False)
sizes = st.integers(min_value=0, max_value=2**62)


@given(
    listen=hosts,
    http_port=st.integers(0, 65535),
    connect=seconds,
    timeout=seconds,
    shutdown=seconds,
    level=st.sampled_from(LOG_LEVELS),
    name=st.from_regex(r"[A-Za-z0-9_-]{1,12}", fullmatch=True),
    backend_host=hosts,
    backend_port=st.integers(1, 65535),
    base_path=st.sampled_from(["", "/v1", "/a/b-c", "/%20x"]),
    websocket=st.booleans(),
    ttl=st.one_of(st.just(0.0), seconds),
    entries=sizes,
    max_bytes=sizes,
    object_bytes=sizes,
)
def test_describe_round_trip_property(
    listen: str,
    http_port: int,
    connect: float,
    timeout: float,
    shutdown: float,
    level: str,
    name: str,
    backend_host: str,
    backend_port: int,
    base_path: str,
    websocket: bool,
    ttl: float,
    entries: int,
    max_bytes: int,
    object_bytes: int,
) -> None:
    config = Config(
        servers=(
            ServerConfig(
                name=name,
                proxy_url=BackendURL("http", backend_host, backend_port, base_path),
                enable_websocket=websocket,
                cache_ttl=ttl,
                cache_max_entries=entries,
                cache_max_bytes=max_bytes,
                cache_max_object_bytes=object_bytes,
            ),
        ),
        listen=listen,
        http_port=http_port,
        backend_connect_timeout=connect,
        backend_timeout=timeout,
        shutdown_timeout=shutdown,
        log_level=level,
        source="p.toml",
    )
    assert reload(config) == config


def test_describe_never_prints_the_control_token() -> None:
    data = {**minimal(), "control_port": 17809, "control_auth": "hunter2"}
    text = describe(config_from_dict(data, SOURCE))
    assert "hunter2" not in text
    assert "\n# control_auth is set (not shown)" in text
    assert "\ncontrol_port = 17809" in text


# -- routing keys ---------------------------------------------------------------------------


def test_routing_keys_are_validated_and_normalised() -> None:
    config = config_from_dict(
        {
            "server": {
                "api": {
                    "proxy_url": BACKEND,
                    "bind_to": "/api/",
                    "strip_prefix": False,
                    "hosts": ["App.Example.COM", "*.Preview.example.com", "app.example.com"],
                    "preserve_host": False,
                },
                "web": {"proxy_url": BACKEND},
            }
        }
    )
    api, web = config.servers
    assert api.bind_to == ("/api",)
    assert api.hosts == ("app.example.com", "*.preview.example.com")
    assert (api.strip_prefix, api.preserve_host) == (False, False)
    assert (web.bind_to, web.strip_prefix, web.hosts, web.preserve_host) == (("*",), True, (), True)


@pytest.mark.parametrize(
    ("server", "message"),
    [
        ({"bind_to": "api"}, 'server.app.bind_to: expected "*", a path prefix such as "/api"'),
        ({"bind_to": "/a?b"}, 'server.app.bind_to: expected "*", a path prefix'),
        ({"bind_to": "/%7Eu//x"}, "server.app.bind_to: write the path in its normal form, '/~u/x'"),
        ({"hosts": "a.test"}, "server.app.hosts: expected an array of host names, got string"),
        ({"hosts": ["a.test:80"]}, 'server.app.hosts: expected a host name or "*.domain"'),
        ({"hosts": ["a.*.test"]}, 'server.app.hosts: expected a host name or "*.domain"'),
        ({"preserve_host": "no"}, "server.app.preserve_host: expected a boolean, got string"),
    ],
)
def test_routing_key_errors(server: dict[str, Any], message: str) -> None:
    assert message in error_of(with_server(**server))


def test_same_mount_twice_is_an_error_unless_hosts_differ() -> None:
    two = {
        "a": {"proxy_url": BACKEND, "bind_to": "/x"},
        "b": {"proxy_url": BACKEND, "bind_to": "/x/"},
    }
    expected = f"{SOURCE}: server.b.bind_to: '/x' is already bound by server.a"
    assert error_of({"server": two}) == expected
    two["b"]["hosts"] = ["b.test"]
    assert len(config_from_dict({"server": two}).servers) == 2
    two["a"]["hosts"] = ["B.test"]
    assert "for host 'b.test' is already bound by server.a" in error_of({"server": two})


def test_describe_round_trip_with_routing_keys() -> None:
    config = config_from_dict(
        {"server": {"a": {"proxy_url": BACKEND, "bind_to": "/a", "hosts": ["x.test", "*.y.test"]}}},
        SOURCE,
    )
    assert config_from_dict(tomllib.loads(describe(config)), SOURCE) == config


# -- $env:NAME ------------------------------------------------------------------------------


def test_env_values_are_substituted_and_unset_ones_dropped() -> None:
    data = {
        "listen": "$env:PHANTOM_TEST_LISTEN",
        "control_auth": "$env:TOKEN",
        "server": {"app": {"proxy_url": "$env:BACKEND", "hosts": ["$env:HOST", "$env:NOPE"]}},
    }
    environ = {"BACKEND": "http://127.0.0.1:9000", "HOST": "a.test", "TOKEN": "t0k"}
    config = config_from_dict(data, SOURCE, environ)
    assert config.listen == "127.0.0.1"  # unset: the default
    assert config.control_auth == "t0k"
    assert config.servers[0].proxy_url.port == 9000
    assert config.servers[0].hosts == ("a.test",)


def test_unset_env_secret_is_an_error() -> None:
    with pytest.raises(ConfigError) as info:
        config_from_dict(minimal(control_auth="$env:PHANTOM_UNSET_TOKEN"), SOURCE, {})
    assert str(info.value) == (
        f"{SOURCE}: control_auth: environment variable PHANTOM_UNSET_TOKEN is not set"
    )


# -- webhooks -------------------------------------------------------------------------------


def test_webhooks_are_read_validated_and_described() -> None:
    hooks = [
        {"url": "http://127.0.0.1:9000/auth", "type": "blocking"},
        {"url": "http://127.0.0.1:9000/log", "type": "notify", "timeout_ms": 250},
    ]
    config = config_from_dict(with_server(webhooks=hooks), SOURCE)
    first, second = config.servers[0].webhooks
    assert (str(first.url), first.type, first.timeout_ms) == (
        "http://127.0.0.1:9000/auth",
        "blocking",
        5000,
    )
    assert (second.type, second.timeout_ms) == ("notify", 250)
    assert config_from_dict(tomllib.loads(describe(config)), SOURCE) == config


@pytest.mark.parametrize(
    ("hooks", "message"),
    [
        ({"url": "x"}, "server.app.webhooks: expected [[server.app.webhooks]] tables, got table"),
        ([{"type": "notify"}], "server.app.webhooks[0].url: missing"),
        ([{"url": BACKEND, "type": "x"}], "server.app.webhooks[0].type: expected one of blocking"),
        (
            [{"url": BACKEND, "type": "notify", "timeout_ms": 0}],
            "webhooks[0].timeout_ms: must be 1",
        ),
        ([{"url": BACKEND, "type": "notify", "retries": 1}], "webhooks[0].retries: unknown key"),
    ],
)
def test_webhook_errors(hooks: Any, message: str) -> None:
    assert message in error_of(with_server(webhooks=hooks))


# -- workers -----------------------------------------------------------------------------------


def test_workers_default_and_value() -> None:
    assert config_from_dict(minimal(), SOURCE).workers == 1
    assert config_from_dict(minimal(workers=4), SOURCE).workers == 4


@pytest.mark.parametrize(
    ("value", "problem"),
    [
        (0, "must be between 1 and 256, got 0"),
        (257, "must be between 1 and 256, got 257"),
        ("2", "expected an integer, got string"),
        (True, "expected an integer, got boolean"),
    ],
)
def test_workers_bad(value: Any, problem: str) -> None:
    assert error_of(minimal(workers=value)) == f"{SOURCE}: workers: {problem}"


def test_workers_with_control_port_and_per_worker_metrics() -> None:
    """The supervisor serves the control port for every worker (phantom.fanout)."""
    config = config_from_dict(minimal(workers=2, control_port=0), SOURCE)
    assert (config.workers, config.control_port, config.metrics_per_worker) == (2, 0, False)
    assert config_from_dict(minimal(metrics_per_worker=True), SOURCE).metrics_per_worker
    message = error_of(minimal(metrics_per_worker="yes"))
    assert message == f"{SOURCE}: metrics_per_worker: expected a boolean, got string"


def test_workers_override() -> None:
    config = config_from_dict(minimal(), SOURCE)
    assert with_overrides(config, workers=3).workers == 3
    with pytest.raises(ConfigError) as info:
        with_overrides(config, workers=0)
    assert info.value.key == "--workers"


# -- execute --------------------------------------------------------------------------------


def test_execute_runs_in_the_config_files_directory_by_default(tmp_path: Path) -> None:
    path = write(tmp_path, f'[server.app]\nproxy_url = "{BACKEND}"\nexecute = "npm start"\n')
    server = load_config(path).servers[0]
    assert (server.execute, server.execute_dir) == ("npm start", str(tmp_path))
    assert server.execute_timeout == 120


def test_execute_dir_is_relative_to_the_config_file(tmp_path: Path) -> None:
    text = f'[server.app]\nproxy_url = "{BACKEND}"\nexecute = "x"\nexecute_dir = "web/../app"\n'
    server = load_config(write(tmp_path, text)).servers[0]
    assert server.execute_dir == str(tmp_path / "app")
    assert load_config(write(tmp_path, describe(load_config(tmp_path / "cfg.toml")))) == (
        load_config(tmp_path / "cfg.toml")
    )


def test_execute_dir_without_execute_is_kept_as_written() -> None:
    # "execute = "$env:DEV_CMD"" may drop execute in production; execute_dir then does nothing.
    config = config_from_dict(with_server(execute="$env:DEV_CMD", execute_dir="web"), SOURCE, {})
    assert (config.servers[0].execute, config.servers[0].execute_dir) == (None, "web")


@pytest.mark.parametrize(
    ("server", "message"),
    [
        ({"execute": ""}, "server.app.execute: must not be empty"),
        ({"execute": "a | b"}, "server.app.execute: '|': a pipe needs a shell"),
        ({"execute": "cd web"}, "server.app.execute: the command must end with a program"),
        ({"execute": "x", "execute_timeout": 0}, "server.app.execute_timeout: must be greater"),
        ({"execute": 3}, "server.app.execute: expected a string, got integer"),
    ],
)
def test_execute_errors(server: dict[str, Any], message: str) -> None:
    assert message in error_of(with_server(**server))


# -- dotenv ---------------------------------------------------------------------------------


def test_dotenv_true_reads_env_next_to_the_config_and_the_environment_wins(
    tmp_path: Path,
) -> None:
    (tmp_path / ".env").write_text("export BACKEND=http://127.0.0.1:9000\nPORT=1\nEXTRA='x y'\n")
    data = {"dotenv": True, "http_port": "$env:PORT", **with_server(proxy_url="$env:BACKEND")}
    config = config_from_dict(data, SOURCE, {"PORT": "8081"}, base_dir=str(tmp_path))
    assert config.servers[0].proxy_url.port == 9000
    assert config.http_port == 8081  # set in the environment: the file's 1 is ignored
    assert config.dotenv == str(tmp_path / ".env")
    assert config.dotenv_vars == (("BACKEND", "http://127.0.0.1:9000"), ("EXTRA", "x y"))
    assert "EXTRA" not in repr(config)
    assert "\ndotenv = " in describe(config)


GOOD_SERVER = f'[server.app]\nproxy_url = "{BACKEND}"\n'


def test_dotenv_path_from_a_toml_file(tmp_path: Path) -> None:
    (tmp_path / "conf").mkdir()
    (tmp_path / "conf" / "prod.env").write_text("TOKEN=s3cret\n")
    text = 'dotenv = "prod.env"\ncontrol_auth = "$env:TOKEN"\n' + GOOD_SERVER
    config = load_config(write(tmp_path / "conf", text))
    assert config.control_auth == "s3cret"


def test_dotenv_parse_error_names_the_file_and_line(tmp_path: Path) -> None:
    (tmp_path / ".env").write_text("# ok\nA=1\nnot an assignment\n")
    with pytest.raises(ConfigError) as info:
        config_from_dict(minimal(dotenv=True), SOURCE, {}, base_dir=str(tmp_path))
    assert str(info.value) == f"{SOURCE}: dotenv: {tmp_path / '.env'}:3: expected KEY=VALUE"


@pytest.mark.parametrize(
    ("value", "message"),
    [
        (True, "dotenv: {dir}/.env: file not found"),
        ("missing.env", "dotenv: {dir}/missing.env: file not found"),
        (3, 'dotenv: expected true, false or a path such as ".env", got integer'),
    ],
)
def test_dotenv_errors(tmp_path: Path, value: object, message: str) -> None:
    with pytest.raises(ConfigError) as info:
        config_from_dict(minimal(dotenv=value), SOURCE, {}, base_dir=str(tmp_path))
    assert str(info.value) == f"{SOURCE}: " + message.format(dir=tmp_path)


def test_dotenv_false_reads_nothing() -> None:
    assert config_from_dict(minimal(dotenv=False), SOURCE).dotenv is None


# -- "$env:NAME" for numbers and booleans ---------------------------------------------------


def test_env_values_become_numbers_and_booleans_where_the_key_wants_them() -> None:
    data = {
        "http_port": "$env:PORT",
        "backend_timeout": "$env:TIMEOUT",
        **with_server(cache_ttl="$env:TTL", enable_websocket="$env:WS", execute="$env:CMD"),
    }
    environ = {"PORT": "8080", "TIMEOUT": "1.5", "TTL": "0", "WS": "False", "CMD": "42"}
    config = config_from_dict(data, SOURCE, environ)
    assert (config.http_port, config.backend_timeout) == (8080, 1.5)
    server = config.servers[0]
    assert (server.cache_ttl, server.enable_websocket, server.execute) == (0, False, "42")
    assert type(server.execute) is str


@pytest.mark.parametrize(
    ("data", "value", "message"),
    [
        ({"http_port": "$env:V"}, "eighty", "http_port: $env:V is 'eighty': expected an integer"),
        ({"http_port": "$env:V"}, "99999", "http_port: $env:V is '99999': must be between 0"),
        (with_server(strip_prefix="$env:V"), "yes", "strip_prefix: $env:V is 'yes': expected a"),
    ],
)
def test_env_values_that_are_not_the_keys_type(
    data: dict[str, Any], value: str, message: str
) -> None:
    if "server" not in data:
        data = {**data, **with_server()}
    with pytest.raises(ConfigError) as info:
        config_from_dict(data, SOURCE, {"V": value})
    assert message in str(info.value)


def test_workers_with_execute_is_accepted() -> None:
    """The supervisor runs execute commands once, for every worker."""
    config = config_from_dict({"workers": 2, **with_server(execute="npm start")}, SOURCE)
    assert config.servers[0].execute == "npm start"
    assert with_overrides(config, workers=3).workers == 3


def test_file_keys_are_relative_to_the_config_file(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        'https_port = 0\ncert_path = "tls/cert.pem"\nkey_path = "/etc/k.pem"\n'
        'access_log = "logs/access.log"\n'
        '[server.app]\nproxy_url = "https://app.internal"\nbackend_ca = "ca.pem"\n',
    )
    config = load_config(path)
    base = os.path.dirname(os.path.abspath(path))
    assert config.cert_path == os.path.join(base, "tls", "cert.pem")
    assert config.key_path == "/etc/k.pem"
    assert config.access_log == os.path.join(base, "logs", "access.log")
    assert config.servers[0].backend_ca == os.path.join(base, "ca.pem")
    assert config_from_dict({**minimal(), "access_log": "off"}).access_log == "off"


# -- the shared cache: [redis] and cache_storage_mode = "redis" -------------------------------


def redis_data(redis: dict[str, Any] | None = None, **server: Any) -> dict[str, Any]:
    data = with_server(cache_storage_mode="redis", **server)
    return {"redis": {"url": "redis://127.0.0.1:6379/0", **(redis or {})}, **data}


def test_redis_mode_defaults() -> None:
    config = config_from_dict(redis_data(), SOURCE)
    assert config.redis is not None
    assert (config.redis.key_prefix, config.redis.timeout, config.redis.pool_size) == (
        "phantom:", 0.25, 16
    )
    server = config.servers[0]
    assert (server.cache_l1_max_bytes, server.cache_l1_ttl) == (16 * 1024 * 1024, 1.0)
    assert config_from_dict(minimal(), SOURCE).redis is None


@pytest.mark.parametrize(
    ("data", "problem"),
    [
        (with_server(cache_storage_mode="redis"),
         'server.app.cache_storage_mode: "redis" needs a [redis] table with url'),
        ({"redis": {}, **with_server()},
         'redis.url: missing: where Redis is, e.g. "redis://127.0.0.1:6379/0"'),
        ({"redis": {"url": "http://:hunter2@h"}, **with_server()},
         "redis.url: expected redis://host[:port][/db], rediss://host[:port][/db] or "
         "unix:///path"),
        (redis_data({"key_prefix": "a*"}),
         "redis.key_prefix: expected printable text without spaces or * ? [ ] \\, got 'a*'"),
        (redis_data({"timeout": 0}), "redis.timeout: must be greater than 0, got 0"),
        (redis_data({"pool_size": 1}), "redis.pool_size: must be between 2 and 1024, got 1"),
        (redis_data({"db": 1}), "redis.db: unknown key"),
        (redis_data(cache_l1_ttl=-1), "server.app.cache_l1_ttl: must be 0 or greater, got -1"),
        ({"redis": "redis://h", **with_server()}, "redis: expected a table, got string"),
    ],
)
def test_redis_bad(data: dict[str, Any], problem: str) -> None:
    message = error_of(data)
    assert message == f"{SOURCE}: {problem}"
    assert "hunter2" not in message


def test_redis_mode_without_the_client_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("redis", "redis.asyncio"):
        monkeypatch.setitem(sys.modules, name, None)  # import -> ImportError
    assert error_of(redis_data()) == (
        f"{SOURCE}: server.app.cache_storage_mode: \"redis\" needs the Redis client: "
        "pip install 'phantom-proxy[redis]'"
    )


SHARED_LIMIT = {"rate_limit": {"requests": 10, "per": 1, "shared": True}}


def test_a_shared_rate_limit_needs_the_redis_table() -> None:
    assert error_of(with_server(**SHARED_LIMIT)) == (
        f"{SOURCE}: server.app.rate_limit.shared: true needs a [redis] table with url"
    )
    with_redis = {"redis": {"url": "redis://h"}, **with_server(**SHARED_LIMIT)}
    config = config_from_dict(with_redis, SOURCE)
    limit = config.servers[0].rate_limit
    assert limit is not None and limit.shared
    unshared = with_server(rate_limit={"requests": 10, "per": 1})
    assert config_from_dict(unshared, SOURCE).servers[0].rate_limit.shared is False  # type: ignore[union-attr]


def test_a_shared_rate_limit_without_the_client_names_the_extra(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for name in ("redis", "redis.asyncio"):
        monkeypatch.setitem(sys.modules, name, None)
    data = {"redis": {"url": "redis://h"}, **with_server(**SHARED_LIMIT)}
    assert error_of(data) == (
        f"{SOURCE}: server.app.rate_limit.shared: true needs the Redis client: "
        "pip install 'phantom-proxy[redis]'"
    )


def test_redis_url_from_the_environment_and_its_password_never_shown() -> None:
    url = "rediss://user:hunter2@cache.internal:6380/1"
    data = {**redis_data(), "redis": {"url": "$env:REDIS_URL"}}
    config = config_from_dict(data, SOURCE, {"REDIS_URL": url})
    assert config.redis is not None and config.redis.url == url
    text = describe(config)
    assert "hunter2" not in text
    assert '# url = "rediss://user:***@cache.internal:6380/1"  (password not shown)' in text
    plain = config_from_dict(redis_data(), SOURCE)
    assert config_from_dict(tomllib.loads(describe(plain)), SOURCE) == plain
