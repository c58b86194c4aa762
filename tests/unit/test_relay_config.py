"""The ``[relay]`` table (phantom.config): its keys, their checks, tokens from the environment,
and secrets kept out of messages and of ``describe()``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from phantom.agents.sites import agent_servers
from phantom.checks import risky_settings
from phantom.config import RelayConfig, config_from_dict, describe, load_config
from phantom.errors import ConfigError

TOKEN = "t0k3n-0123456789abcdef"


def relay(**keys: Any) -> dict[str, Any]:
    tokens = keys.pop("tokens", {TOKEN: ["alice-*"]})
    return {"relay": {"relay_domain": "relay.example.com", "tokens": tokens, **keys}}


def error_of(data: dict[str, Any], environ: dict[str, str] | None = None) -> str:
    with pytest.raises(ConfigError) as info:
        config_from_dict(data, source="relay.toml", environ=environ or {})
    return str(info.value)


def test_defaults() -> None:
    config = config_from_dict(relay(relay_domain="Relay.Example.COM."), environ={})
    assert config.servers == ()  # a relay's backends are its agents
    assert config.relay == RelayConfig(
        relay_domain="relay.example.com", tokens=((TOKEN, ("alice-*",)),)
    )
    assert (config.relay.relay_name_grace, config.relay.relay_ping_interval) == (60.0, 15.0)
    assert (config.relay.relay_max_agents, config.relay.max_connections) == (100, 100)


def test_every_key_set() -> None:
    config = config_from_dict(
        relay(
            relay_name_grace=0,
            relay_max_agents=0,
            relay_ping_interval=0.5,
            max_connections=3,
            relay_path_mode=True,
            tokens={TOKEN: ["a", "b-*"], "$env:BOB": ["bob"]},
        ),
        environ={"BOB": "b" * 16},
    )
    assert config.relay == RelayConfig(
        relay_domain="relay.example.com",
        tokens=((TOKEN, ("a", "b-*")), ("b" * 16, ("bob",))),
        relay_name_grace=0.0,
        relay_max_agents=0,
        relay_ping_interval=0.5,
        max_connections=3,
        relay_path_mode=True,
    )


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"relay": {"tokens": {TOKEN: ["a"]}}}, "relay.toml: relay.relay_domain: missing: "),
        (relay(relay_domain="relay.example.com:443"), "relay.relay_domain: expected a host name"),
        (relay(relay_domain=""), "relay.relay_domain: expected a host name"),
        (relay(relay_ping_interval=0), "relay.relay_ping_interval: must be greater than 0"),
        (relay(relay_name_grace=-1), "relay.relay_name_grace: must be 0 or greater"),
        (relay(relay_max_agents=1.5), "relay.relay_max_agents: expected an integer"),
        (relay(nope=1), "relay.nope: unknown key"),
        (relay(relay_path_mode="yes"), "relay.relay_path_mode: expected a boolean"),
        (relay(tokens={}), "relay.tokens: no token: no agent could register"),
        (relay(tokens={TOKEN: []}), "relay.tokens (entry 1): expected a non-empty array"),
        (relay(tokens={TOKEN: "alice"}), "relay.tokens (entry 1): expected a non-empty array"),
        (relay(tokens={TOKEN: ["Alice"]}), "'Alice' is not a DNS label"),
        (relay(tokens={TOKEN: ["a.b"]}), "'a.b' is not a DNS label"),
        (relay(tokens={TOKEN: ["-a"]}), "'-a' is not a DNS label"),
        ({"relay": {"relay_domain": "r.example"}}, "relay.tokens: missing: "),
        ({"relay": "yes"}, "relay.toml: relay: expected a table, got string"),
    ],
)
def test_validation_message(data: dict[str, Any], message: str) -> None:
    assert message in error_of(data)


@pytest.mark.parametrize(
    "token", ["short", "0123456789abcde", "with space 0123456789", "pässwörd-0123456789"]
)
def test_weak_tokens_are_refused_without_being_shown(token: str) -> None:
    message = error_of(relay(tokens={token: ["a"]}))
    assert "relay.tokens (entry 1): a token must be at least 16" in message
    assert token not in message


def test_a_token_from_an_unset_variable_is_an_error_not_a_missing_entry() -> None:
    assert error_of(relay(tokens={"$env:ALICE": ["a"]})) == (
        'relay.toml: relay.tokens."$env:ALICE": environment variable ALICE is not set'
    )


def test_describe_shows_the_relay_but_no_token() -> None:
    config = config_from_dict(relay(), environ={})
    text = describe(config)
    assert '[relay]\nrelay_domain = "relay.example.com"\n' in text
    assert "# 1 token(s) set (not shown)" in text
    assert TOKEN not in text


def test_a_relay_file_may_also_have_servers(tmp_path: Path) -> None:
    path = tmp_path / "relay.toml"
    path.write_text(
        '[relay]\nrelay_domain = "r.example"\n[relay.tokens]\n'
        f'"{TOKEN}" = ["a"]\n[server.app]\nproxy_url = "http://127.0.0.1:8080"\n'
    )
    config = load_config(path)
    assert config.relay is not None and [s.name for s in config.servers] == ["app"]


def test_without_a_relay_table_servers_are_still_required() -> None:
    assert "at least one [server.NAME] table is required" in error_of({})


@pytest.mark.parametrize(
    ("root", "risky"),
    [
        ({"listen": "0.0.0.0"}, True),
        ({"listen": "relay.example.com"}, True),
        ({"listen": "127.0.0.1"}, False),
        ({"listen": "0.0.0.0", "https_port": 443, "cert_path": "c", "key_path": "k"}, False),
    ],
)
def test_a_public_relay_without_tls_is_warned_about(root: dict[str, Any], risky: bool) -> None:
    warnings = risky_settings(config_from_dict({**root, **relay()}, environ={}))
    assert bool(warnings) == risky
    if risky:
        assert warnings[0].startswith("https_port: the relay listens on")


def test_an_agent_s_cache_is_the_relay_s_bounded_part_and_only_when_asked_for() -> None:
    config = config_from_dict(relay(cache_max_bytes="4MiB"), "relay.toml")
    assert config.relay is not None
    (cached,) = agent_servers("alice-x", config.relay, True, config)
    assert cached.cache_max_bytes == 4 << 20 and cached.cache_max_object_bytes == 4 << 20
    assert cached.cache_max_entries > 0
    (uncached,) = agent_servers("alice-x", config.relay, False, config)
    assert uncached.cache_max_entries == 0
    none = config_from_dict(relay(cache_max_bytes=0), "relay.toml")
    assert none.relay is not None
    assert agent_servers("alice-x", none.relay, True, none)[0].cache_max_entries == 0
    default = config_from_dict(relay(), "relay.toml")
    assert default.relay is not None and default.relay.cache_max_bytes == 32 << 20
