"""What phantom answers about a token, and what it does with a good one's claims: the
refusals of RFC 6750 §3 (no token: ``401`` with ``WWW-Authenticate: Bearer`` and no error
code; a bad one: ``401`` with ``error="invalid_token"``; claims that don't match: ``403`` with
``error="insufficient_scope"``), ``auth_claims`` checks and ``forward_claims`` fields.

Pure module, and free of PyJWT (:mod:`phantom.jwtauth` checks the tokens), so that the request
path imports it whether or not the ``jwt`` extra is installed.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from .config import ClaimValue

__all__ = [
    "Claims",
    "Refusal",
    "UnknownKey",
    "check_claims",
    "claim_headers",
    "insufficient",
    "invalid_token",
    "missing_token",
]

Claims = Mapping[str, Any]


@dataclass(frozen=True, slots=True)
class Refusal:
    """Why a request is refused: its status, the ``reason`` for the log and the metric, and
    what ``WWW-Authenticate`` says (:meth:`challenge`)."""

    status: int
    reason: str  # token_missing | token_invalid | token_expired | claims
    error: str | None  # RFC 6750's error code; None when there was no token at all
    description: str  # in words safe to show the client

    def challenge(self, realm: str) -> bytes:
        parts = [f'Bearer realm="{realm}"']
        if self.error:
            parts.append(f'error="{self.error}"')
            # RFC 6750 §3: error_description is %x20-21 / %x23-5B / %x5D-7E.
            text = "".join(c for c in self.description if " " <= c <= "~" and c not in '"\\')
            parts.append(f'error_description="{text}"')
        return ", ".join(parts).encode("ascii")


@dataclass(frozen=True, slots=True)
class UnknownKey:
    """The token names a ``kid`` the key set does not hold (yet): fetch the keys, ask again."""

    kid: str | None


def missing_token() -> Refusal:
    return Refusal(401, "token_missing", None, "No token")


def invalid_token(description: str, reason: str = "token_invalid") -> Refusal:
    return Refusal(401, reason, "invalid_token", description)


def insufficient(claim: str) -> Refusal:
    description = f"The token's {claim} claim does not allow this"
    return Refusal(403, "claims", "insufficient_scope", description)


def check_claims(claims: Claims, wanted: tuple[tuple[str, ClaimValue], ...]) -> str | None:
    """None when each wanted claim equals the value, or (a list claim) contains it; else the
    name of the first that does not."""
    for name, value in wanted:
        actual = claims.get(name)
        if isinstance(actual, list):
            if value not in actual:
                return name
        elif actual != value or isinstance(actual, bool) != isinstance(value, bool):
            return name
    return None


def claim_headers(
    claims: Claims, forward: tuple[tuple[str, str], ...]
) -> list[tuple[bytes, bytes]]:
    """The ``forward_claims`` fields for the backend: one per claim the token has; a list
    claim joined with ", ", anything but text and numbers left out, as are values that are
    not one clean line."""
    fields = []
    for claim, header in forward:
        value = claims.get(claim)
        if isinstance(value, list):
            value = ", ".join(str(item) for item in value if isinstance(item, (str, int)))
        if isinstance(value, bool) or not isinstance(value, (str, int, float)):
            continue
        text = str(value)
        if text.isprintable():
            fields.append((header.encode("ascii"), text.encode("utf-8")))
    return fields
