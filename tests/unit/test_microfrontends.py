"""phantom.microfrontends: Turborepo's microfrontends.json as server tables, and the config
that loads it (the `microfrontends` root key). Fixtures written from Turborepo's schema."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from phantom.config import config_from_dict, describe, load_config, with_overrides
from phantom.errors import ConfigError
from phantom.microfrontends import parse_microfrontends, turborepo_port
from phantom.routing import Router

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "microfrontends"
SEED = FIXTURES / "seed-002.json"
SHOP = FIXTURES / "shop.jsonc"


def test_the_seed_example() -> None:
    parsed = parse_microfrontends(SEED.read_text(), str(SEED))
    assert parsed.port is None
    assert parsed.servers == {
        "web": {"strip_prefix": False, "proxy_url": "http://localhost:3000", "bind_to": ["*"]},
        "docs": {
            "strip_prefix": False,
            "proxy_url": "http://localhost:3001",
            "bind_to": ["=/docs", "/docs/{path*}"],
        },
    }


def test_every_documented_form() -> None:
    parsed = parse_microfrontends(SHOP.read_text(), str(SHOP))
    assert parsed.port == 3100
    servers = parsed.servers
    assert list(servers) == ["storefront", "docs", "blog", "checkout-app"]
    assert servers["storefront"]["proxy_url"] == "http://localhost:3000"
    assert servers["storefront"]["fallback_url"] == "https://storefront-preview.example.com"
    assert servers["docs"]["proxy_url"] == "http://localhost:3001"
    assert servers["docs"]["fallback_url"] == "https://docs.example.com:8443"
    assert servers["docs"]["bind_to"] == ["=/docs", "/docs/{path*}", "/api-reference/{rest+}"]
    assert servers["blog"]["proxy_url"] == "http://127.0.0.1:3002"
    assert servers["blog"]["bind_to"] == [
        "=/blog", "/blog/{slug}", "/authors/{author}", "/blog/category/{category}"
    ]
    # No development.local: the port Turborepo derives from the name.
    assert servers["checkout-app"]["proxy_url"] == (
        f"http://localhost:{turborepo_port('checkout.app')}"
    )


def test_turborepo_port_matches_turborepos_own() -> None:
    assert turborepo_port("test-450") == 7724  # the value Turborepo's own test pins
    assert all(3000 <= turborepo_port(name) < 8000 for name in ("", "web", "é" * 40))


def mf(tmp_path: Path, data: object, name: str = "microfrontends.json") -> Path:
    path = tmp_path / name
    path.write_text(json.dumps(data) if not isinstance(data, str) else data)
    return path


def problem(tmp_path: Path, data: object) -> str:
    path = mf(tmp_path, data)
    with pytest.raises(ConfigError) as info:
        parse_microfrontends(path.read_text(), str(path))
    return str(info.value).removeprefix(f"{path}: ")


def app(**body: Any) -> dict[str, Any]:
    return {"applications": {"web": {}, **body}}


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ("{", "<json>: line 1 column 2: Expecting property name enclosed in double quotes"),
        ({"applications": []}, "applications: expected an object, got array"),
        ({"applications": {}}, "applications: lists no application"),
        (
            {"applications": {"a": {}, "b": {}}},
            "applications.b: has no routing, like a: only the default application goes without",
        ),
        (
            {"applications": {"a": {"routing": [{"paths": ["/a"]}]}}},
            "applications: no default application (the one without routing serves the rest)",
        ),
        (
            app(docs={"routing": [{"paths": ["/docs/:path?"]}]}),
            "applications.docs.routing[0].paths[0]: '/docs/:path?': only :name, :name* and "
            ":name+ are supported",
        ),
        (
            app(docs={"routing": [{"paths": ["/docs/:p((?!x).*)"]}]}),
            "applications.docs.routing[0].paths[0]: '/docs/:p((?!x).*)': only :name",
        ),
        (
            app(docs={"routing": [{"paths": ["/:p*/x"]}]}),
            "applications.docs.routing[0].paths[0]: '/:p*/x': :p* must come last",
        ),
        (
            app(docs={"routing": [{"paths": ["docs"]}]}),
            "applications.docs.routing[0].paths[0]: expected a path such as",
        ),
        (app(docs={"routing": {"paths": []}}), "applications.docs.routing: expected an array"),
        (app(docs={"routing": [{"paths": []}]}), "applications.docs.routing: lists no paths"),
        (
            app(docs={"routing": [{"paths": ["/d"]}], "development": {"local": 70000}}),
            "applications.docs.development.local: expected a port number 1..65535, got 70000",
        ),
        (
            app(docs={"routing": [{"paths": ["/d"]}], "development": {"local": "nope"}}),
            "applications.docs.development.local: expected a port, \"host:port\" or a URL",
        ),
        (
            app(docs={"routing": [{"paths": ["/d"]}], "development": {"fallback": {}}}),
            "applications.docs.development.fallback.host: expected a host name",
        ),
        (
            {"applications": {"a.b": {}, "a-b": {"routing": [{"paths": ["/x"]}]}}},
            "applications.a-b: names the same server as another: 'a-b'",
        ),
        ({**app(), "options": {"localProxyPort": "3024"}}, "options.localProxyPort: expected a"),
    ],
)
def test_problems_name_the_file_and_json_key(tmp_path: Path, data: object, message: str) -> None:
    assert problem(tmp_path, data).startswith(message)


def test_comments_are_allowed_but_not_inside_strings(tmp_path: Path) -> None:
    text = '{"applications": {"web": {"development": {"local": "http://127.0.0.1:1"}}}} // x'
    assert parse_microfrontends(text, "f")  # "//" inside the string stays
    servers = parse_microfrontends(text, "f").servers
    assert servers["web"]["proxy_url"] == "http://127.0.0.1:1"


def test_root_key_loads_the_file_with_caching_off_and_its_port(tmp_path: Path) -> None:
    path = mf(tmp_path, SHOP.read_text(), "microfrontends.jsonc")
    config = config_from_dict({"microfrontends": path.name}, "phantom.toml", base_dir=str(tmp_path))
    assert config.http_port == 3100
    assert [s.name for s in config.servers] == ["storefront", "docs", "blog", "checkout-app"]
    docs = config.servers[1]
    assert (docs.cache_strategy, docs.strip_prefix) == ("none", False)
    assert str(docs.fallback_url) == "https://docs.example.com:8443"
    origins = dict(docs.origins)
    assert origins["cache_strategy"] == "microfrontends (caching off)"
    assert origins["proxy_url"] == "microfrontends.jsonc"


def test_a_phantom_toml_next_to_it_turns_caching_on_and_extends_apps(tmp_path: Path) -> None:
    mf(tmp_path, SEED.read_text())
    (tmp_path / "phantom.toml").write_text(
        'microfrontends = "microfrontends.json"\n'
        "http_port = 4000\n"
        "[defaults]\n"
        'cache_strategy = "all"\n'
        "[server.docs]\n"
        "preserve_host = false\n"
    )
    config = load_config(tmp_path / "phantom.toml")
    assert config.http_port == 4000  # the file's own port wins over Turborepo's default
    web, docs = config.servers
    assert (web.cache_strategy, docs.cache_strategy) == ("all", "all")
    assert (docs.preserve_host, str(docs.proxy_url)) == (False, "http://localhost:3001")
    text = describe(config)
    assert '\ncache_strategy = "all"  # from [defaults]\n' in text
    assert "\npreserve_host = false  # from [server.docs]\n" in text
    assert '\nproxy_url = "http://localhost:3001"  # from microfrontends.json\n' in text


def test_the_seed_routes_hmr_to_the_docs_app_unchanged(tmp_path: Path) -> None:
    config = config_from_dict({"microfrontends": str(SEED)}, "phantom.toml")
    assert config.http_port == 3024  # Turborepo's own port: the file names none
    assert with_overrides(config, port=4000).http_port == 4000
    router = Router(config.servers)
    for target, name in [
        (b"/_next/webpack-hmr", "web"),
        (b"/docs/_next/webpack-hmr", "docs"),
        (b"/docs", "docs"),
        (b"/docs/", "docs"),
        (b"/docsx", "web"),
    ]:
        route = router.route(b"localhost:3024", target, b"GET")
        assert route is not None
        assert (route.server.name, route.target) == (name, target)


def test_a_missing_file_is_one_line(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        config_from_dict({"microfrontends": "nope.json"}, "phantom.toml", base_dir=str(tmp_path))
    assert str(info.value) == (
        f"phantom.toml: microfrontends: {tmp_path / 'nope.json'}: file not found"
    )
