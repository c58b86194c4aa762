"""phantom.jwtauth: real tokens signed by PyJWT with HS256, RS256 and ES256 keys made here;
each bad token refused with the right status, reason and WWW-Authenticate; the verification
memory; claim checks and forwarded claims. A fake clock; no sockets."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from pathlib import Path
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from phantom.claims import Refusal, UnknownKey, check_claims, claim_headers, insufficient
from phantom.config import JwtConfig, config_from_dict
from phantom.errors import ConfigError
from phantom.jwtauth import StaticKey, Verifier
from phantom.jwtkeys import KeyProblem, load_public_key

SECRET = "a-test-secret-that-is-long-enough-for-hs256"
SECRET_KEY = SECRET.encode()
# PyJWT reads the real clock: a fake one starts there and moves only where a test says.


class Clock:
    def __init__(self) -> None:
        self.now = float(int(time.time()))

    def __call__(self) -> float:
        return self.now


def token(
    key: Any, algorithm: str = "HS256", headers: dict[str, Any] | None = None, **claims: Any
) -> str:
    claims.setdefault("exp", int(time.time()) + 600)
    return jwt.encode(claims, key, algorithm=algorithm, headers=headers)


@pytest.fixture(scope="module")
def rsa_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@pytest.fixture(scope="module")
def ec_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def pem(key: Any) -> bytes:
    return key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def verifier(clock: Clock | None = None, key: Any = SECRET_KEY, **config: Any) -> Verifier:
    config.setdefault("secret", SECRET)
    config.setdefault("algorithms", ("HS256",))
    return Verifier(JwtConfig(**config), StaticKey(key), clock=clock or Clock())


def refusal(result: object) -> Refusal:
    assert isinstance(result, Refusal), result
    return result


# -- good tokens ------------------------------------------------------------------------------


def test_hs256_token_is_verified() -> None:
    claims = verifier().verify(token(SECRET, sub="alice"))
    assert isinstance(claims, dict) and claims["sub"] == "alice"


def test_rs256_and_es256_tokens_are_verified(
    tmp_path: Path, rsa_key: rsa.RSAPrivateKey, ec_key: ec.EllipticCurvePrivateKey
) -> None:
    for name, private, algorithm in (("rsa", rsa_key, "RS256"), ("ec", ec_key, "ES256")):
        path = tmp_path / f"{name}.pem"
        path.write_bytes(pem(private))
        loaded = load_public_key(str(path))
        assert algorithm in loaded.algorithms
        check = verifier(
            key=loaded.key, secret=None, public_key=str(path), algorithms=loaded.algorithms
        )
        claims = check.verify(token(private, algorithm, sub=name))
        assert isinstance(claims, dict) and claims["sub"] == name


def test_issuer_and_audience_are_checked() -> None:
    check = verifier(issuer="https://login.example", audience=("api", "ws"))
    good = token(SECRET, iss="https://login.example", aud="ws")
    assert isinstance(check.verify(good), dict)
    wrong_aud = refusal(check.verify(token(SECRET, iss="https://login.example", aud="other")))
    assert (wrong_aud.status, wrong_aud.reason) == (401, "token_invalid")
    assert b'error="invalid_token"' in wrong_aud.challenge("app")
    assert b"audience" in wrong_aud.challenge("app")
    wrong_iss = refusal(check.verify(token(SECRET, iss="https://evil.example", aud="api")))
    assert b"issuer" in wrong_iss.challenge("app")
    no_aud = refusal(check.verify(token(SECRET, iss="https://login.example")))
    assert b"aud claim" in no_aud.challenge("app")


# -- bad tokens -------------------------------------------------------------------------------


def test_expired_token_is_refused_after_the_leeway() -> None:
    clock = Clock()
    check = verifier(clock, leeway=30)
    expired = token(SECRET, exp=int(clock.now) - 20)  # within the leeway: still good
    assert isinstance(check.verify(expired), dict)
    older = token(SECRET, exp=int(clock.now) - 31)
    result = refusal(check.verify(older))
    assert (result.status, result.reason) == (401, "token_expired")
    assert result.challenge("app") == (
        b'Bearer realm="app", error="invalid_token", error_description="The token has expired"'
    )


def test_alg_none_is_refused() -> None:
    unsigned = jwt.encode({"exp": int(time.time()) + 600, "sub": "x"}, None, algorithm="none")
    result = refusal(verifier().verify(unsigned))
    assert result.status == 401 and b"algorithm" in result.challenge("app")


def test_public_key_used_as_an_hmac_secret_is_refused(
    tmp_path: Path, rsa_key: rsa.RSAPrivateKey
) -> None:
    """Key confusion: a token signed with HS256 and the server's *public* key as the secret."""
    path = tmp_path / "rsa.pem"
    path.write_bytes(pem(rsa_key))
    loaded = load_public_key(str(path))
    check = verifier(
        key=loaded.key, secret=None, public_key=str(path), algorithms=loaded.algorithms
    )
    header = base64.urlsafe_b64encode(json.dumps({"alg": "HS256", "typ": "JWT"}).encode())
    payload = base64.urlsafe_b64encode(json.dumps({"exp": int(time.time()) + 600}).encode())
    signing_input = header.rstrip(b"=") + b"." + payload.rstrip(b"=")
    signature = hmac.new(pem(rsa_key), signing_input, hashlib.sha256).digest()
    forged = (signing_input + b"." + base64.urlsafe_b64encode(signature).rstrip(b"=")).decode()
    result = refusal(check.verify(forged))
    assert (result.status, result.reason) == (401, "token_invalid")


def test_config_refuses_hmac_with_a_public_key(tmp_path: Path, rsa_key: rsa.RSAPrivateKey) -> None:
    path = tmp_path / "rsa.pem"
    path.write_bytes(pem(rsa_key))
    with pytest.raises(ConfigError) as info:
        config_from_dict(
            {
                "jwt": {"public_key": str(path), "algorithms": ["RS256", "HS256"]},
                "server": {"a": {"proxy_url": "http://127.0.0.1:1"}},
            },
            "t.toml",
        )
    assert str(info.value).startswith(
        "t.toml: jwt.algorithms: HS256 can't be checked with public_key"
    )


def test_missing_claim_wrong_signature_and_garbage_are_refused() -> None:
    check = verifier(required_claims=("exp", "sub"))
    assert b"sub claim" in refusal(check.verify(token(SECRET))).challenge("app")
    other = token("another-secret-that-is-long-enough-for-hs256", sub="x")
    assert b"signature" in refusal(check.verify(other)).challenge("app")
    for garbage in ("", "abc", "a.b.c", "x" * 5000):
        assert refusal(check.verify(garbage)).status == 401


def test_a_kid_the_keys_do_not_hold_asks_for_a_refresh() -> None:
    class NoKeys:
        generation = 0

        def key_for(self, kid: str | None) -> None:
            return None

    check = Verifier(JwtConfig(jwks_url=None, algorithms=("RS256",)), NoKeys(), clock=Clock())
    result = check.verify(token(SECRET, headers={"kid": "k2"}))
    assert result == UnknownKey("k2")
    assert check.refuse_unknown().status == 401


# -- the verification memory ------------------------------------------------------------------


def test_a_verified_token_is_remembered_until_it_expires(monkeypatch: pytest.MonkeyPatch) -> None:
    clock = Clock()
    check = verifier(clock, leeway=0)
    good = token(SECRET, exp=int(clock.now) + 60)
    assert isinstance(check.verify(good), dict)
    calls = []
    monkeypatch.setattr(check, "_check", lambda t: calls.append(t))
    assert isinstance(check.verify(good), dict)
    assert calls == []  # no second signature check
    clock.now += 61
    assert refusal(check.verify(good)).reason == "token_expired"


def test_remembered_verdicts_go_when_the_keys_change() -> None:
    keys = StaticKey(SECRET.encode())
    check = Verifier(JwtConfig(secret=SECRET, algorithms=("HS256",)), keys, clock=Clock())
    good = token(SECRET)
    assert isinstance(check.verify(good), dict)
    keys._key = b"the-rotated-secret-which-is-also-long-enough"  # type: ignore[attr-defined]
    keys.generation = 1
    assert refusal(check.verify(good)).reason == "token_invalid"


def test_remembered_tokens_are_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("phantom.jwtauth.REMEMBERED_TOKENS", 3)
    check = verifier()
    for n in range(10):
        check.verify(token(SECRET, n=n))
    assert len(check._remembered) == 3


# -- claims -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("claims", "wanted", "failing"),
    [
        ({"role": "admin"}, (("role", "admin"),), None),
        ({"role": ["user", "admin"]}, (("role", "admin"),), None),
        ({"role": "user"}, (("role", "admin"),), "role"),
        ({}, (("role", "admin"),), "role"),
        ({"level": 1}, (("level", True),), "level"),  # true is not 1
        ({"level": True, "org": "a"}, (("level", True), ("org", "b")), "org"),
    ],
)
def test_claim_checks(claims: dict[str, Any], wanted: Any, failing: str | None) -> None:
    assert check_claims(claims, wanted) == failing


def test_insufficient_claims_are_403_with_insufficient_scope() -> None:
    result = insufficient("role")
    assert result.status == 403 and result.reason == "claims"
    assert b'error="insufficient_scope"' in result.challenge("app")


def test_forwarded_claims() -> None:
    claims = {"sub": "alice", "groups": ["a", "b"], "n": 3, "odd": {"x": 1}, "bad": "a\r\nb: c"}
    forward = (
        ("sub", "X-User-Id"),
        ("groups", "X-Groups"),
        ("n", "X-N"),
        ("odd", "X-Odd"),
        ("bad", "X-Bad"),
        ("absent", "X-Absent"),
    )
    assert claim_headers(claims, forward) == [
        (b"X-User-Id", b"alice"),
        (b"X-Groups", b"a, b"),
        (b"X-N", b"3"),
    ]


def test_a_file_that_is_not_a_key_is_a_key_problem(tmp_path: Path) -> None:
    path = tmp_path / "x.pem"
    path.write_text("hello")
    with pytest.raises(KeyProblem, match="not a PEM public key"):
        load_public_key(str(path))
    with pytest.raises(KeyProblem):
        load_public_key(str(tmp_path / "missing.pem"))
