"""docs/configuration.md names every configuration key (a key added without docs fails here)."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from phantom.config import (
    BackendConfig,
    Config,
    CorsConfig,
    HealthCheckConfig,
    JwtConfig,
    RateLimitConfig,
    RedisConfig,
    RelayConfig,
    ServerConfig,
    WebhookConfig,
)

DOC = (Path(__file__).resolve().parents[2] / "docs" / "configuration.md").read_text()
# Structure and derived values, not TOML keys.
NOT_KEYS = {
    "servers", "source", "name", "webhooks", "backends", "dotenv_vars", "relay", "origins",
    "redis", "jwt",
}
TABLES = (
    Config, ServerConfig, WebhookConfig, BackendConfig, HealthCheckConfig, RelayConfig,
    RedisConfig, JwtConfig, RateLimitConfig, CorsConfig,
)
KEYS = sorted({f.name for cls in TABLES for f in dataclasses.fields(cls)} - NOT_KEYS)


@pytest.mark.parametrize("key", KEYS)
def test_key_has_a_row(key: str) -> None:
    assert f"| `{key}` |" in DOC, f"docs/configuration.md has no table row for `{key}`"


def test_tables_have_sections() -> None:
    assert "## Servers: `[server.NAME]`" in DOC
    assert "### Webhooks: `[[server.NAME.webhooks]]`" in DOC
    assert "## Relay: `[relay]`" in DOC
    assert "## JWT: `[jwt]`" in DOC
    assert "### Several backends: `[[server.NAME.backends]]`" in DOC
