"""A token issuer of the tests' own: RSA and EC keys made here, tokens signed with PyJWT, and
a JWKS endpoint (a TestOrigin route) that serves the current keys and can rotate them."""

from __future__ import annotations

import itertools
import json
import time
from typing import Any

import jwt
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from origin import OriginRequest, Reply, TestOrigin

SECRET = "a-test-secret-that-is-long-enough-for-hs256"
JWKS_PATH = "/.well-known/jwks.json"


def hs256(**claims: Any) -> str:
    claims.setdefault("exp", int(time.time()) + 600)
    return jwt.encode(claims, SECRET, algorithm="HS256")


class Issuer:
    """Signing keys by ``kid``; the JWKS route serves the public halves of those published."""

    _numbers = itertools.count(1)

    def __init__(self, kind: str = "RS256") -> None:
        self.kind = kind
        self.private: dict[str, Any] = {}
        self.published: list[str] = []
        self.fetches = 0
        self.failing = False
        self.rotate()

    def new_key(self) -> str:
        kid = f"k{next(self._numbers)}"
        self.private[kid] = (
            rsa.generate_private_key(public_exponent=65537, key_size=2048)
            if self.kind == "RS256"
            else ec.generate_private_key(ec.SECP256R1())
        )
        return kid

    def rotate(self) -> str:
        """A new key, published alone (the old ones are withdrawn)."""
        kid = self.new_key()
        self.published = [kid]
        return kid

    @property
    def kid(self) -> str:
        return self.published[-1]

    def sign(self, kid: str | None = None, **claims: Any) -> str:
        claims.setdefault("exp", int(time.time()) + 600)
        kid = kid or self.kid
        return jwt.encode(claims, self.private[kid], algorithm=self.kind, headers={"kid": kid})

    def jwks(self) -> bytes:
        keys = []
        for kid in self.published:
            algorithm = jwt.get_algorithm_by_name(self.kind)
            key = json.loads(algorithm.to_jwk(self.private[kid].public_key()))
            keys.append({**key, "kid": kid, "alg": self.kind, "use": "sig"})
        return json.dumps({"keys": keys}).encode()

    def answer(self, request: OriginRequest) -> Reply:
        self.fetches += 1
        if self.failing:
            return Reply(503, [("Content-Type", "text/plain")], b"down")
        return Reply(200, [("Content-Type", "application/json")], self.jwks())

    def serve_on(self, origin: TestOrigin) -> str:
        origin.route(JWKS_PATH, self.answer)
        return origin.url + JWKS_PATH
