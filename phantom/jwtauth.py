"""JWT checks for ``auth_required`` servers: is this token good, and does it say what the
server asks (``auth_claims``)? PyJWT does every JOSE step (signature, ``exp``, ``nbf``, ``iss``,
``aud``); phantom writes no cryptography of its own.

A verified token is remembered (by its text, until its ``exp``), so a client that sends the
same token again costs a dictionary look-up and a clock read, not a signature check. The
remembered verdicts are dropped whenever the keys change (a JWKS refresh).

The refusals are :mod:`phantom.claims`'s (RFC 6750 §3).

Pure module: keys in, verdicts out; the clock is injected. The JWKS fetching is
:mod:`phantom.jwks`.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable
from typing import Any, Protocol

import jwt

from .claims import Claims, Refusal, UnknownKey, invalid_token
from .config import JwtConfig

__all__ = ["KeySet", "StaticKey", "Verifier"]

# Tokens remembered at most, and only those up to this length (memory stays bounded: a few
# megabytes at worst); a longer token is checked every time.
REMEMBERED_TOKENS = 10_000
REMEMBERED_TOKEN_CHARS = 4096

class KeySet(Protocol):
    """Where the verification key of a token comes from."""

    #: Changes whenever the keys do: remembered verdicts of another generation are dropped.
    generation: int

    def key_for(self, kid: str | None) -> Any | None:
        """The key for a token's ``kid`` header (None when it has none), or None if unknown."""

    async def start(self, required: bool) -> None:
        """Get the keys before the proxy serves (a JWKS is fetched)."""

    async def close(self) -> None: ...


class StaticKey:
    """A secret or a public key from the configuration: one key, whatever the ``kid``."""

    generation = 0

    def __init__(self, key: Any) -> None:
        self._key = key

    def key_for(self, kid: str | None) -> Any | None:
        return self._key

    async def start(self, required: bool) -> None:
        pass  # read with the configuration

    async def close(self) -> None:
        pass


def _describe(exc: jwt.PyJWTError) -> tuple[str, str]:
    """(reason, description) of a refused token, in words safe to show the client."""
    if isinstance(exc, jwt.ExpiredSignatureError):
        return "token_expired", "The token has expired"
    if isinstance(exc, jwt.ImmatureSignatureError):
        return "token_invalid", "The token is not valid yet"
    if isinstance(exc, jwt.InvalidAudienceError):
        return "token_invalid", "The token is for another audience"
    if isinstance(exc, jwt.InvalidIssuerError):
        return "token_invalid", "The token is from another issuer"
    if isinstance(exc, jwt.MissingRequiredClaimError):
        return "token_invalid", f"The token has no {exc.claim} claim"
    if isinstance(exc, jwt.InvalidAlgorithmError):
        return "token_invalid", "The token's algorithm is not accepted"
    if isinstance(exc, jwt.InvalidSignatureError):
        return "token_invalid", "The token's signature does not verify"
    return "token_invalid", "The token is malformed"


class _Remembered:
    __slots__ = ("claims", "until")

    def __init__(self, claims: Claims, until: float) -> None:
        self.claims = claims
        self.until = until  # the clock reading past which the token is expired


class Verifier:
    """Checks tokens against ``[jwt]``; remembers the good ones until they expire."""

    def __init__(
        self,
        config: JwtConfig,
        keys: KeySet,
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.config = config
        self.keys = keys
        self._clock = clock
        self._jwt = jwt.PyJWT()
        self._options: Any = {
            "require": list(config.required_claims),
            "verify_aud": bool(config.audience),
        }
        self._remembered: OrderedDict[str, _Remembered] = OrderedDict()
        self._generation = keys.generation

    def verify(self, token: str) -> Claims | Refusal | UnknownKey:
        """The token's claims, or why not. ``UnknownKey``: ask again once the keys are
        refreshed (:mod:`phantom.jwks`); a second ``UnknownKey`` means refuse."""
        if self.keys.generation != self._generation:
            self._remembered.clear()
            self._generation = self.keys.generation
        known = self._remembered.get(token)
        if known is not None:
            if self._clock() < known.until:
                return known.claims
            del self._remembered[token]
            return invalid_token("The token has expired", "token_expired")
        return self._check(token)

    def refuse_unknown(self) -> Refusal:
        """The refusal for a ``kid`` still unknown after a refresh."""
        return invalid_token("The token's key is not known")

    def _check(self, token: str) -> Claims | Refusal | UnknownKey:
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError:
            return invalid_token("The token is malformed")
        kid = header.get("kid")
        if kid is not None and not isinstance(kid, str):
            return invalid_token("The token is malformed")
        key = self.keys.key_for(kid)
        if key is None:
            return UnknownKey(kid)
        config = self.config
        try:
            claims = self._jwt.decode(
                token,
                key,
                algorithms=list(config.algorithms),
                options=self._options,
                audience=list(config.audience) or None,
                issuer=config.issuer,
                leeway=config.leeway,
            )
        except jwt.PyJWTError as exc:
            reason, description = _describe(exc)
            return invalid_token(description, reason)
        self._remember(token, claims)
        return claims

    def _remember(self, token: str, claims: Claims) -> None:
        if len(token) > REMEMBERED_TOKEN_CHARS:
            return
        exp = claims.get("exp")
        # Without exp (when not required) a token is remembered for the leeway at most.
        until = (
            float(exp) + self.config.leeway
            if isinstance(exp, (int, float))
            else self._clock() + self.config.leeway
        )
        self._remembered[token] = _Remembered(claims, until)
        if len(self._remembered) > REMEMBERED_TOKENS:
            self._remembered.popitem(last=False)
