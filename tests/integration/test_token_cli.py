"""``phantom token`` as a real subprocess: the token it prints verifies with PyJWT (the same
library the proxy checks with), takes [jwt] from the config, and bad input is one line, exit 2."""

from __future__ import annotations

import time
from pathlib import Path

import jwt
import pytest
from test_cli import assert_one_line_error, phantom

SECRET = "a-test-secret-that-is-long-enough-for-hs256"


def test_token_with_a_secret(tmp_path: Path) -> None:
    result = phantom(
        "token",
        "--secret",
        SECRET,
        "--sub",
        "alice",
        "--ttl",
        "2h",
        "--claim",
        "role=admin",
        "--claim",
        'groups=["a", "b"]',
        "--claim",
        "level=3",
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr
    claims = jwt.decode(result.stdout.strip(), SECRET, algorithms=["HS256"])
    assert claims["sub"] == "alice" and claims["role"] == "admin"
    assert claims["groups"] == ["a", "b"] and claims["level"] == 3
    assert abs(claims["exp"] - time.time() - 7200) < 60


def test_token_from_the_config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "phantom.toml").write_text(
        '[jwt]\nsecret = "$env:TOKEN_TEST_SECRET"\nissuer = "https://login.test"\n'
        'audience = "api"\n[server.app]\nproxy_url = "http://127.0.0.1:8080"\n'
    )
    monkeypatch.setenv("TOKEN_TEST_SECRET", SECRET)
    result = phantom("token", "--sub", "bob", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    claims = jwt.decode(
        result.stdout.strip(),
        SECRET,
        algorithms=["HS256"],
        audience="api",
        issuer="https://login.test",
    )
    assert claims["sub"] == "bob"


def test_token_errors_are_one_line(tmp_path: Path) -> None:
    assert_one_line_error(
        phantom("token", "--secret", "short", cwd=tmp_path),
        "--secret: must be at least 32 bytes for HS256",
    )
    assert_one_line_error(
        phantom("token", "--secret", SECRET, "--ttl", "soon", cwd=tmp_path),
        "--ttl: expected a duration such as 3600, 30m, 1h or 7d, got 'soon'",
    )
    assert_one_line_error(
        phantom("token", "--secret", SECRET, "--claim", "oops", cwd=tmp_path),
        "--claim: expected NAME=VALUE, got 'oops'",
    )
    (tmp_path / "phantom.toml").write_text('[server.app]\nproxy_url = "http://127.0.0.1:8080"\n')
    assert_one_line_error(
        phantom("token", cwd=tmp_path),
        "phantom.toml: jwt.secret: not set; set it, or pass --secret",
    )
