"""Where a request's token is, in order: ``Authorization: Bearer``, the cookie named by
``token_cookie``, the query parameter named by ``token_query`` (a browser's ``new
WebSocket()`` can set neither header, so the query is what it has).

The query parameter is removed from the target whatever the token's source, before the target
is forwarded, logged as the cache key or shown to webhooks: a token in a URL would otherwise
land in the backend's logs and in the cache key (one entry per user for the same page).

Pure module: bytes in, bytes out.
"""

from __future__ import annotations

from collections.abc import Iterable
from urllib.parse import unquote_to_bytes

__all__ = ["TokenPlaces", "cookie_value", "find_token", "take_param"]

# RFC 6750 §2.1: b64token = 1*( ALPHA / DIGIT / "-" / "." / "_" / "~" / "+" / "/" ) *"="
_B64TOKEN = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~+/="


class TokenPlaces:
    """One server's token places: the cookie name and the query parameter name (b"" = none)."""

    __slots__ = ("cookie", "query")

    def __init__(self, cookie: str | None, query: str) -> None:
        self.cookie = cookie.encode("ascii") if cookie else None
        self.query = query.encode("ascii") if query else None


def _bearer(value: bytes) -> bytes | None:
    scheme, _, token = value.strip().partition(b" ")
    if scheme.lower() != b"bearer":
        return None
    token = token.strip()
    # Deleting every allowed byte leaves nothing of a well-formed token (one C call).
    return token if token and not token.translate(None, _B64TOKEN) else b""


def cookie_value(value: bytes, name: bytes) -> bytes | None:
    """The value of cookie ``name`` in one ``Cookie`` field's ``value`` (RFC 6265 §4.2.1;
    a value in double quotes without them), or None."""
    for pair in value.split(b";"):
        key, eq, cookie = pair.strip().partition(b"=")
        if eq and key == name:
            return cookie.strip().strip(b'"')
    return None


def take_param(target: bytes, name: bytes) -> tuple[bytes, bytes | None]:
    """``target`` without every ``name=...`` of its query, and the first such value."""
    path, question, query = target.partition(b"?")
    if not question or (name not in query and b"%" not in query):
        return target, None
    kept = []
    found: list[bytes] = []
    for part in query.split(b"&"):
        key, _, value = part.partition(b"=")
        if unquote_to_bytes(key) == name:
            found.append(unquote_to_bytes(value))
        else:
            kept.append(part)
    if not found:
        return target, None
    return (path + b"?" + b"&".join(kept) if kept else path), found[0]


def find_token(
    headers: Iterable[tuple[bytes, bytes]], target: bytes, places: TokenPlaces
) -> tuple[str | None, bytes, bool]:
    """(the token, or None; the target with the query parameter removed; whether the token
    came in ``Authorization``). ``headers`` with lowercase names. A bearer header that is
    malformed gives the token "" (refused as malformed rather than looked for elsewhere)."""
    bearer = cookie = None
    for name, value in headers:
        if name == b"authorization" and bearer is None:
            bearer = _bearer(value)
        elif name == b"cookie" and cookie is None and places.cookie is not None:
            cookie = cookie_value(value, places.cookie)
    token = bearer if bearer is not None else cookie
    if places.query is not None:
        target, from_query = take_param(target, places.query)
        if token is None:
            token = from_query
    return (None if token is None else token.decode("latin-1")), target, bearer is not None
