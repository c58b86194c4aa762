"""Header rules for a reverse proxy: hop-by-hop removal, upgrade detection, X-Forwarded-*,
Forwarded (RFC 7239).

Pure: works on ``(name, value)`` byte pairs as h11 gives them. ``raw`` pairs keep the sender's
name casing (``Headers.raw_items()``); names are compared case-insensitively.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterable, Sequence
from typing import Final

HeaderList = list[tuple[bytes, bytes]]
HeaderPairs = Sequence[tuple[bytes, bytes]]

# RFC 9110 §7.6.1: fields that describe one connection, never the message. Proxy-Connection and
# Keep-Alive are the pre-1.1 spellings still sent by old clients; Proxy-Authorization and
# Proxy-Authenticate belong to the hop to this proxy. Any other Proxy-* name is dropped too.
HOP_BY_HOP = frozenset(
    {
        b"connection",
        b"keep-alive",
        b"proxy-connection",
        b"proxy-authenticate",
        b"proxy-authorization",
        b"te",
        b"trailer",
        b"transfer-encoding",
        b"upgrade",
    }
)

# End-to-end fields a Connection header can't make hop-by-hop: the request's Host and its body's
# length. Dropping them would send the backend a request without its body or its host (RFC 9110
# §7.6.1 lets a proxy refuse to treat a field as hop-by-hop where that breaks the message).
_NOT_NOMINABLE = frozenset({b"host", b"content-length"})

# Ours, written from what we saw (extending a trusted peer's chain): the client's are removed.
_FORWARDED = frozenset(
    {b"x-forwarded-for", b"x-forwarded-proto", b"x-forwarded-host", b"forwarded"}
)

# Fields that tell a backend where the client came from or which URL it asked for: only a proxy
# in front of us may set them, so from any other peer they are forged and removed (with every
# other X-Forwarded-*, such as X-Forwarded-Port or -Prefix, which frameworks' proxy helpers turn
# into absolute URLs that a cache would then serve to everyone).
_PROXY_ONLY = frozenset(
    {
        b"x-real-ip",
        b"x-original-url",
        b"x-rewrite-url",
        b"x-host",
        b"true-client-ip",
        b"x-client-ip",
    }
)

VIA = b"1.1 phantom"

_TOKEN: Final = re.compile(rb"[-!#$%&'*+.^_`|~0-9A-Za-z]+")


def comma_tokens(headers: HeaderPairs, name: bytes) -> list[bytes]:
    """Lowercased, stripped, non-empty tokens of every field called ``name`` (list syntax)."""
    tokens: list[bytes] = []
    for field, value in headers:
        if field.lower() == name:
            tokens.extend(t.strip().lower() for t in value.split(b",") if t.strip())
    return tokens


def get_header(headers: HeaderPairs, name: bytes) -> bytes | None:
    """The first value of ``name`` (lowercase), or None."""
    for field, value in headers:
        if field.lower() == name:
            return value
    return None


def is_upgrade(headers: HeaderPairs) -> bool:
    """True when ``Connection`` carries the ``upgrade`` token and an ``Upgrade`` field is present.

    Tokens are comma separated and case-insensitive (``Connection: keep-alive, Upgrade``), as
    browsers and dev servers send them.
    """
    if b"upgrade" not in comma_tokens(headers, b"connection"):
        return False
    return any(field.lower() == b"upgrade" and value.strip() for field, value in headers)


def _scoped(listed: list[bytes]) -> frozenset[bytes]:
    """The fixed hop-by-hop set plus what Connection lists, but never Host or Content-Length."""
    if not listed:
        return HOP_BY_HOP
    return HOP_BY_HOP.union(listed).difference(_NOT_NOMINABLE)


def _connection_scoped(headers: HeaderPairs) -> frozenset[bytes]:
    """Every name this message says is hop-by-hop: the fixed set plus what Connection lists."""
    return _scoped(comma_tokens(headers, b"connection"))


def _forged(lower: bytes) -> bool:
    """Whether a field (lowercase name) from a peer that is not a trusted proxy claims what only
    a proxy may say. A name with ``_`` goes too (nginx's ``underscores_in_headers off``): CGI
    and WSGI servers read ``X_Forwarded_For`` and ``X-Forwarded-For`` as the same variable."""
    return lower in _PROXY_ONLY or lower.startswith(b"x-forwarded-") or b"_" in lower


def strip_hop_by_hop(headers: HeaderPairs) -> HeaderList:
    """Drop hop-by-hop fields, keeping every other field's order, casing and repeats."""
    scoped = _connection_scoped(headers)
    kept: HeaderList = []
    for name, value in headers:
        lower = name.lower()
        if lower in scoped or lower.startswith(b"proxy-"):
            continue
        kept.append((name, value))
    return kept


def _forwarded_value(text: str) -> bytes:
    """A Forwarded parameter value: a token as is, anything else quoted (RFC 7239 §4)."""
    data = text.encode("latin-1")
    if _TOKEN.fullmatch(data):
        return data
    return b'"%s"' % data.replace(b"\\", b"\\\\").replace(b'"', b'\\"')


def node(ip: str, port: int | None = None) -> str:
    """An RFC 7239 §6 node: the IP (IPv6 in brackets), with the port if given; ``unknown``
    when the address is not known (``-``)."""
    if not ip or ip == "-":
        return "unknown"
    name = f"[{ip}]" if ":" in ip else ip
    return name if port is None else f"{name}:{port}"


@functools.lru_cache(maxsize=256)  # a connection's requests repeat it: a few hosts, one client
def forwarded_element(client_ip: str, proto: bytes, host: bytes | None, by: str) -> bytes:
    """Our hop's RFC 7239 Forwarded element: who connected (``for``), with which scheme, for
    which host, to which of our addresses (``by``, a :func:`node`; left out when empty)."""
    parts = [b"for=" + _forwarded_value(node(client_ip)), b"proto=" + proto]
    if host is not None:
        parts.append(b"host=" + _forwarded_value(host.decode("latin-1")))
    if by:
        parts.append(b"by=" + _forwarded_value(by))
    return b";".join(parts)


def _forwarding_fields(
    headers: HeaderPairs, host: bytes | None, client_ip: str, proto: bytes, by: str, trusted: bool
) -> HeaderList:
    """Our X-Forwarded-* and Forwarded fields. From a ``trusted`` peer (another proxy in front
    of us) the client's chains are kept and extended; from anyone else they are replaced."""
    chain = client_ip.encode("ascii")
    forwarded = forwarded_element(client_ip, proto, host, by)
    if trusted:
        earlier = [v for n, v in headers if n.lower() == b"x-forwarded-for"]
        if earlier:
            chain = b", ".join([*earlier, chain])
        hops = [v for n, v in headers if n.lower() == b"forwarded"]
        if hops:
            forwarded = b", ".join([*hops, forwarded])
        proto = get_header(headers, b"x-forwarded-proto") or proto
        host = get_header(headers, b"x-forwarded-host") or host
    fields: HeaderList = [(b"X-Forwarded-For", chain), (b"X-Forwarded-Proto", proto)]
    if host is not None:
        fields.append((b"X-Forwarded-Host", host))
    fields.append((b"Forwarded", forwarded))
    return fields


def _with_via(headers: HeaderList) -> HeaderList:
    """Append our hop to Via (RFC 9110 §7.6.3), after any the client's earlier hops added."""
    for index, (name, value) in enumerate(headers):
        if name.lower() == b"via":
            headers[index] = (name, value + b", " + VIA)
            return headers
    headers.append((b"Via", VIA))
    return headers


def forward_request_headers(
    headers: HeaderPairs,
    *,
    client_ip: str,
    proto: bytes,
    body_chunked: bool,
    drop: Iterable[bytes] = (),
    trusted: bool = False,
    by: str = "",
) -> HeaderList:
    """Headers to send to the backend for an ordinary (non-upgrade) request.

    Hop-by-hop fields go; X-Forwarded-* and Forwarded are replaced (extended when the peer is
    ``trusted``), and from an untrusted peer every field only a proxy may set goes too (see
    :func:`_forged`); Via gains our hop. ``body_chunked`` says the client's body has no known
    length: we re-frame it as chunked ourselves because the client's own Transfer-Encoding is
    hop-by-hop and never passed through. ``drop`` names further fields (lowercase) this hop
    answers itself, such as ``expect``. ``by``: the address the client connected to, a
    :func:`node`.
    """
    # One pass lowers each name once; the result is that of stripping the hop-by-hop fields,
    # then the dropped ones, then adding X-Forwarded-*, Forwarded and our Via hop.
    lowered = [(name.lower(), name, value) for name, value in headers]
    listed: list[bytes] = []
    host: bytes | None = None
    for lower, _, value in lowered:
        if lower == b"connection":
            listed.extend(t.strip().lower() for t in value.split(b",") if t.strip())
        elif lower == b"host" and host is None:
            host = value
    scoped = _scoped(listed)
    # (From an untrusted peer, what else only a proxy may say goes by ``_forged``.)
    dropped = _FORWARDED.union(drop) if drop else _FORWARDED
    kept: HeaderList = []
    via = -1
    for lower, name, value in lowered:
        if (
            lower in scoped
            or lower in dropped
            or lower.startswith(b"proxy-")
            or (not trusted and _forged(lower))
        ):
            continue
        if via < 0 and lower == b"via":
            via = len(kept)
        kept.append((name, value))
    kept.extend(_forwarding_fields(headers, host, client_ip, proto, by, trusted))
    if body_chunked:
        kept.append((b"Transfer-Encoding", b"chunked"))
    if via < 0:
        kept.append((b"Via", VIA))
    else:
        name, value = kept[via]
        kept[via] = (name, value + b", " + VIA)
    return kept


def upgrade_request_headers(
    headers: HeaderPairs, *, client_ip: str, proto: bytes, trusted: bool = False, by: str = ""
) -> HeaderList:
    """Headers replayed to the backend for an upgrade: the client's own, in order and casing,
    Connection and Upgrade included, with X-Forwarded-* and Forwarded replaced (and, from an
    untrusted peer, what only a proxy may set removed) and our Via hop added."""
    kept = [
        (n, v)
        for n, v in headers
        if (lower := n.lower()) not in _FORWARDED and (trusted or not _forged(lower))
    ]
    host = get_header(headers, b"host")
    kept.extend(_forwarding_fields(headers, host, client_ip, proto, by, trusted))
    return _with_via(kept)


def forward_response_headers(headers: HeaderPairs) -> HeaderList:
    """Headers of a backend response to pass on: everything but the hop-by-hop fields."""
    return strip_hop_by_hop(headers)


def with_backend_host(
    headers: HeaderList, netloc: bytes, *, origin: bool, scheme: bytes = b"http"
) -> HeaderList:
    """Send the backend's own ``host:port`` as Host (``preserve_host = false``); with
    ``origin``, an upgrade's Origin becomes ``http://host:port`` too (``scheme``), for
    servers that refuse WebSockets from another origin. X-Forwarded-Host keeps the client's
    host."""
    out: HeaderList = [(b"Host", netloc)]
    for name, value in headers:
        lower = name.lower()
        if lower == b"host":
            out[0] = (name, netloc)  # keep the client's casing of the name
            continue
        if origin and lower == b"origin":
            value = scheme + b"://" + netloc
        out.append((name, value))
    return out


#: The Content-Type of phantom's own plain-text answers.
PLAIN_TEXT = (b"Content-Type", b"text/plain; charset=utf-8")
