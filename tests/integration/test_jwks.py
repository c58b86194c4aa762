"""phantom.jwks against a JWKS endpoint of the tests' own on loopback, serving rotating keys:
the first fetch, a refresh on an unknown kid (at most once per interval), failures that keep
the keys held, and what a start without the endpoint says."""

from __future__ import annotations

import jwt
import pytest
from conftest import async_test
from issuer import Issuer
from origin import Reply, TestOrigin, unused_port

from phantom import jwks
from phantom.claims import UnknownKey
from phantom.config import JwtConfig, parse_backend_url
from phantom.jwks import JwksError, JwksKeys, parse_jwks
from phantom.jwtauth import Verifier


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def keys_for(
    url: str, clock: Clock | None = None, algorithms: tuple[str, ...] = ("RS256",)
) -> JwksKeys:
    return JwksKeys(parse_backend_url(url), algorithms, clock or Clock())


@async_test()
async def test_keys_are_fetched_and_tokens_verify() -> None:
    issuer = Issuer("ES256")
    async with TestOrigin() as origin:
        keys = keys_for(issuer.serve_on(origin), algorithms=("ES256",))
        await keys.load()
        verifier = Verifier(JwtConfig(algorithms=("ES256",)), keys)
        claims = verifier.verify(issuer.sign(sub="alice"))
        assert isinstance(claims, dict) and claims["sub"] == "alice"
        # The set's only key also checks a token without kid.
        assert keys.key_for(None) is keys.key_for(issuer.kid)


@async_test()
async def test_an_unknown_kid_fetches_the_rotated_set_once_per_interval() -> None:
    issuer = Issuer()
    clock = Clock()
    async with TestOrigin() as origin:
        keys = keys_for(issuer.serve_on(origin), clock)
        await keys.load()
        verifier = Verifier(JwtConfig(algorithms=("RS256",)), keys)
        old = issuer.sign(sub="a")
        assert isinstance(verifier.verify(old), dict)
        new_kid = issuer.rotate()
        token = issuer.sign(sub="b")
        unknown = verifier.verify(token)
        assert unknown == UnknownKey(new_kid)
        await keys.refresh_for(new_kid)
        assert issuer.fetches == 2
        assert isinstance(verifier.verify(token), dict)
        # The withdrawn key is gone, and what was remembered under it with it.
        assert verifier.verify(old) == UnknownKey(jwt.get_unverified_header(old)["kid"])
        # Another unknown kid within the interval: no fetch.
        await keys.refresh_for("made-up")
        assert issuer.fetches == 2
        clock.now += jwks.UNKNOWN_KID_SECONDS
        await keys.refresh_for("made-up")
        assert issuer.fetches == 3


@async_test()
async def test_a_failed_refresh_keeps_the_keys_held() -> None:
    issuer = Issuer()
    async with TestOrigin() as origin:
        keys = keys_for(issuer.serve_on(origin))
        await keys.load()
        issuer.failing = True
        with pytest.raises(JwksError, match="answered 503, expected 200"):
            await keys.load()
        await keys.refresh_for("other")  # logged, not raised
        assert keys.key_for(issuer.kid) is not None


@async_test()
async def test_start_failures_say_what_and_where() -> None:
    port = unused_port()
    keys = keys_for(f"http://127.0.0.1:{port}/jwks")
    with pytest.raises(JwksError, match=rf"http://127.0.0.1:{port}/jwks: Connection refused"):
        await keys.load()
    async with TestOrigin({"/jwks": Reply(200, [], b"<html>")}) as origin:
        with pytest.raises(JwksError, match="not JSON"):
            await keys_for(origin.url + "/jwks").load()


def test_parse_jwks_keeps_usable_signing_keys_only() -> None:
    issuer = Issuer()
    good = issuer.jwks()
    assert set(parse_jwks(good, ("RS256",))) == {issuer.kid, None}
    with pytest.raises(ValueError, match="no signing key for ES256"):
        parse_jwks(good, ("ES256",))
    with pytest.raises(ValueError, match='no "keys" array'):
        parse_jwks(b"{}", ("RS256",))
    encryption = good.replace(b'"use": "sig"', b'"use": "enc"')
    with pytest.raises(ValueError):
        parse_jwks(encryption, ("RS256",))
