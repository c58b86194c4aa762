"""phantom.config for routes: bind_to lists and patterns, rewrite, methods, fallback_url,
[defaults] and where each value came from (describe). Pure."""

from __future__ import annotations

import re
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest

from phantom.config import config_from_dict, describe
from phantom.errors import ConfigError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib  # type: ignore[import-not-found, unused-ignore]

SOURCE = "phantom.toml"
BACKEND = "http://127.0.0.1:8080"


def servers(**tables: dict[str, Any]) -> dict[str, Any]:
    return {"server": {name: {"proxy_url": BACKEND, **body} for name, body in tables.items()}}


def error_of(data: Any) -> str:
    with pytest.raises(ConfigError) as info:
        config_from_dict(data, SOURCE)
    message = str(info.value)
    assert "\n" not in message
    return message.removeprefix(f"{SOURCE}: ")


def test_route_keys_are_read_and_round_trip() -> None:
    config = config_from_dict(
        servers(
            api={
                "bind_to": ["/users/{id}/", "/people/{id}", "/users/{id}"],
                "rewrite": "/v1/user/{id}",
                "methods": ["get", "POST"],
                "fallback_url": "https://preview.example.com/base/",
            },
            web={},
        ),
        SOURCE,
    )
    api, web = config.servers
    assert api.bind_to == ("/users/{id}", "/people/{id}")
    assert api.methods == ("GET", "POST")
    assert str(api.fallback_url) == "https://preview.example.com:443/base"
    assert (web.bind_to, web.methods, web.rewrite, web.fallback_url) == (("*",), (), None, None)
    assert config_from_dict(tomllib.loads(describe(config)), SOURCE) == config


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"bind_to": []}, "server.app.bind_to: expected a path, a pattern or an array of them"),
        ({"bind_to": 1}, "server.app.bind_to: expected a path, a pattern or an array of them"),
        ({"bind_to": ["/a", "b"]}, "server.app.bind_to: expected \"*\", a path prefix"),
        ({"bind_to": "/f/{p*}/x"}, "server.app.bind_to: {name} segments are whole segments"),
        ({"methods": "GET"}, 'server.app.methods: expected an array of methods such as ["GET"'),
        ({"methods": ["GE T"]}, "server.app.methods: expected a method such as GET, got 'GE T'"),
        ({"rewrite": "v1"}, 'server.app.rewrite: expected a path such as "/v1/user/{id}"'),
        (
            {"bind_to": "/api", "rewrite": "/v1/{id}"},
            "server.app.rewrite: '/v1/{id}' uses captures, but bind_to entry '/api' is a plain "
            "prefix that captures none (write it as '/api/{path*}')",
        ),
        (
            {"bind_to": ["/u/{id}", "/v/{vid}"], "rewrite": "/x/{id}"},
            "server.app.rewrite: {id} is not captured by bind_to entry '/v/{vid}'",
        ),
        ({"fallback_url": "ftp://x"}, "server.app.fallback_url: expected http[s]://host"),
        (
            {"bind_to": "/a", "proxy_mode": "pre_generate", "pre_generate_paths": ["/b"]},
            "server.app.pre_generate_paths: '/b' is outside bind_to ['/a']",
        ),
    ],
)
def test_route_key_errors(body: dict[str, Any], message: str) -> None:
    assert error_of(servers(app=body)).startswith(message)


def test_same_paths_twice_is_an_error_unless_methods_or_hosts_differ() -> None:
    same = servers(a={"bind_to": "/users/{id}"}, b={"bind_to": ["/x", "/users/{uid}/"]})
    assert error_of(same) == "server.b.bind_to: '/users/{uid}' is already bound by server.a"
    split = servers(
        a={"bind_to": "/users/{id}", "methods": ["GET"]},
        b={"bind_to": "/users/{uid}", "methods": ["POST"]},
    )
    assert len(config_from_dict(split, SOURCE).servers) == 2
    split["server"]["c"] = {"proxy_url": BACKEND, "bind_to": "/users/{n}", "methods": ["post"]}
    assert error_of(split) == "server.c.bind_to: '/users/{n}' is already bound by server.b"
    # A prefix and an exact path, or a prefix and a tail pattern, are different entries.
    assert config_from_dict(servers(a={"bind_to": "/d"}, b={"bind_to": "=/d"}), SOURCE)
    assert error_of(servers(a={"bind_to": "/d"}, b={"bind_to": "/d/{p*}"})) == (
        "server.b.bind_to: '/d/{p*}' is already bound by server.a"
    )


def test_defaults_are_inherited_and_overridden() -> None:
    config = config_from_dict(
        {
            "max_body_bytes": 10,
            "defaults": {
                "cache_strategy": "none",
                "max_body_bytes": 20,
                "preserve_host": False,
                "webhooks": [{"url": "http://127.0.0.1:4000/auth", "type": "blocking"}],
            },
            **servers(a={"cache_strategy": "all"}, b={"bind_to": "/b"}),
        },
        SOURCE,
    )
    a, b = config.servers
    assert (a.cache_strategy, b.cache_strategy) == ("all", "none")
    assert (a.max_body_bytes, b.max_body_bytes, a.preserve_host) == (20, 20, False)
    assert len(a.webhooks) == len(b.webhooks) == 1
    origins = dict(b.origins)
    assert origins == {
        "max_body_bytes": "[defaults]",
        "cache_strategy": "[defaults]",
        "preserve_host": "[defaults]",
        "webhooks": "[defaults]",
        "proxy_url": "[server.b]",
        "bind_to": "[server.b]",
    }
    text = describe(config)
    assert '\ncache_strategy = "all"  # from [server.a]\n' in text
    assert '\ncache_strategy = "none"  # from [defaults]\n' in text
    assert "\nmax_body_bytes = 20  # from [defaults]\n" in text
    assert "\n[[server.b.webhooks]]  # from [defaults]\n" in text
    assert "\ncache_ttl = 60\n" in text  # phantom's default: no comment
    assert config_from_dict(tomllib.loads(text), SOURCE) == config


def test_root_keys_still_reach_servers_below_defaults() -> None:
    config = config_from_dict({"tunnel_idle_timeout": 5, **servers(a={})}, SOURCE)
    assert dict(config.servers[0].origins)["tunnel_idle_timeout"] == "the root key"
    assert "\ntunnel_idle_timeout = 5  # from the root key\n" in describe(config)


def test_size_notes_and_origins_share_the_comment() -> None:
    config = config_from_dict(servers(a={"cache_max_bytes": 1 << 20}), SOURCE)
    assert "\ncache_max_bytes = 1_048_576  # 1 MiB; from [server.a]\n" in describe(config)


@pytest.mark.parametrize(
    ("defaults", "message"),
    [
        ({"proxy_url": BACKEND}, "defaults.proxy_url: names one app: set it in each"),
        ({"bind_to": "/x"}, "defaults.bind_to: names one app"),
        ({"execute": "x"}, "defaults.execute: names one app"),
        ({"cache_tl": 1}, "defaults.cache_tl: unknown key"),
        ({"cache_ttl": "1"}, "defaults.cache_ttl: expected a number, got string"),
        ([], "defaults: expected a table, got array"),
    ],
)
def test_defaults_errors(defaults: object, message: str) -> None:
    assert error_of({"defaults": defaults, **servers(a={})}).startswith(message)


def toml_blocks(relative: str) -> list[str]:
    text = (Path(__file__).resolve().parents[2] / relative).read_text()
    blocks = re.findall(r"```toml\n(.*?)```", text, re.S)
    return [textwrap.dedent(block) for block in blocks if "proxy_url" in block]


@pytest.mark.parametrize(
    "block", [*toml_blocks("docs/configuration.md"), *toml_blocks("README.md")]
)
def test_every_toml_example_in_the_docs_loads(block: str) -> None:
    assert config_from_dict(tomllib.loads(block), SOURCE).servers
