"""Upgrade handshakes: which protocols a client may be tunnelled to (``upgrade_protocols``), and
whether a backend's 101 really completes the handshake it was sent (RFC 9110 §7.8, RFC 6455
§4.2.2).

A tunnel is opaque: once spliced, no per-request rule (webhooks, ``hosts``, the base path,
X-Forwarded-For) sees what flows through it. So a protocol is tunnelled only when the operator
allowed it, and only after a 101 that answers what was asked; anything else is an ordinary
request (RFC 9110 §7.8 lets a server ignore Upgrade) or a 502.

Pure: works on ``(name, value)`` byte pairs as h11 gives them; names are compared
case-insensitively.
"""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Sequence

from .headers import HeaderList, HeaderPairs, is_upgrade

__all__ = ["accept_for", "allows", "offered", "offering_only", "permitted", "switch_problem"]

# RFC 6455 §1.3: appended to the client's key before hashing, in every WebSocket handshake.
WEBSOCKET_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"

# Its tunnel is a whole HTTP/2 connection, every request of which would pass phantom unseen: so
# "*" leaves it out, and only a list that names it lets it through.
H2C = "h2c"


def _field_tokens(headers: HeaderPairs, name: bytes) -> list[bytes]:
    """The comma-separated items of every ``name`` field, stripped, as the sender spelled them."""
    return [
        token.strip()
        for field, value in headers
        if field.lower() == name
        for token in value.split(b",")
        if token.strip()
    ]


def offered(headers: HeaderPairs) -> list[bytes]:
    """The protocols an upgrade request offers (``Upgrade`` items, as spelled), or [] when the
    request is not an upgrade request (no ``upgrade`` token in ``Connection``)."""
    return _field_tokens(headers, b"upgrade") if is_upgrade(headers) else []


def allows(protocols: Sequence[str], token: str) -> bool:
    """Whether ``protocols`` (``upgrade_protocols``, lowercase) lets ``token`` be tunnelled:
    it names it, or it has ``"*"`` and the token is not h2c."""
    token = token.lower()
    name = token.split("/", 1)[0]
    # A listed name without a version allows every version of it ("websocket" allows
    # "websocket/13"); the h2c exception looks at the name too, so "h2c/2" is no way around it.
    if token in protocols or name in protocols:
        return True
    return "*" in protocols and name != H2C


def permitted(tokens: Sequence[bytes], protocols: Sequence[str]) -> list[bytes]:
    """Those of ``tokens`` (as offered) that ``protocols`` allows."""
    return [token for token in tokens if allows(protocols, token.decode("latin-1"))]


def offering_only(headers: HeaderPairs, tokens: Sequence[bytes]) -> HeaderList:
    """``headers`` with ``Upgrade`` reduced to ``tokens`` (one field where the first was);
    unchanged when ``tokens`` is every token offered, so the replay stays byte for byte."""
    if list(tokens) == _field_tokens(headers, b"upgrade"):
        return list(headers)
    out: HeaderList = []
    for name, value in headers:
        if name.lower() != b"upgrade":
            out.append((name, value))
        elif tokens:
            out.append((name, b", ".join(tokens)))
            tokens = ()
    return out


def accept_for(key: bytes) -> bytes:
    """The ``Sec-WebSocket-Accept`` that answers ``Sec-WebSocket-Key: key`` (RFC 6455 §4.2.2)."""
    return base64.b64encode(hashlib.sha1(key.strip() + WEBSOCKET_GUID).digest())


def _values(headers: HeaderPairs, name: bytes) -> list[bytes]:
    return [value.strip() for field, value in headers if field.lower() == name]


def switch_problem(request: HeaderPairs, response: HeaderPairs) -> str | None:
    """What is wrong with a backend's 101, given the request headers it was sent, as a phrase
    for the log and the 502; None when the 101 completes the handshake: its ``Upgrade`` names
    only protocols that were offered and, for ``websocket``, its ``Sec-WebSocket-Accept`` is the
    one derived from the request's ``Sec-WebSocket-Key``."""
    asked = {token.lower() for token in offered(request)}
    if not asked:
        return "101 to a request that asked for no upgrade"
    chosen = [token.lower() for token in _field_tokens(response, b"upgrade")]
    if not chosen:
        return "101 without an Upgrade header"
    others = [token for token in chosen if token not in asked]
    if others:
        return f"101 switches to {b', '.join(others).decode('latin-1')!r}, which was not offered"
    if b"websocket" in chosen:
        keys = _values(request, b"sec-websocket-key")
        accepts = _values(response, b"sec-websocket-accept")
        if not accepts:
            return "WebSocket 101 without Sec-WebSocket-Accept"
        if len(keys) != 1 or accepts != [accept_for(keys[0])]:
            return "WebSocket 101 whose Sec-WebSocket-Accept does not answer the key"
    return None
