"""Header rules for a reverse proxy: hop-by-hop removal, upgrade detection, X-Forwarded-*.

Pure: works on ``(name, value)`` byte pairs as h11 gives them. ``raw`` pairs keep the sender's
name casing (``Headers.raw_items()``); names are compared case-insensitively.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

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

# Replaced, never appended to: a client must not be able to forge where it came from.
_FORWARDED = frozenset({b"x-forwarded-for", b"x-forwarded-proto", b"x-forwarded-host"})

VIA = b"1.1 phantom"


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


def _connection_scoped(headers: HeaderPairs) -> frozenset[bytes]:
    """Every name this message says is hop-by-hop: the fixed set plus what Connection lists."""
    listed = comma_tokens(headers, b"connection")
    return HOP_BY_HOP.union(listed) if listed else HOP_BY_HOP


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


def _forwarding_fields(
    headers: HeaderPairs, client_ip: str, proto: bytes, trusted: bool
) -> HeaderList:
    """Our X-Forwarded-* fields. From a ``trusted`` peer (another proxy in front of us) the
    client's chain is kept and extended; from anyone else it is replaced."""
    chain = client_ip.encode("ascii")
    host = get_header(headers, b"host")
    if trusted:
        earlier = [v for n, v in headers if n.lower() == b"x-forwarded-for"]
        if earlier:
            chain = b", ".join([*earlier, chain])
        proto = get_header(headers, b"x-forwarded-proto") or proto
        host = get_header(headers, b"x-forwarded-host") or host
    fields: HeaderList = [(b"X-Forwarded-For", chain), (b"X-Forwarded-Proto", proto)]
    if host is not None:
        fields.append((b"X-Forwarded-Host", host))
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
) -> HeaderList:
    """Headers to send to the backend for an ordinary (non-upgrade) request.

    Hop-by-hop fields go, X-Forwarded-* are replaced (extended when the peer is ``trusted``),
    Via gains our hop. ``body_chunked`` says
    the client's body has no known length: we re-frame it as chunked ourselves because the
    client's own Transfer-Encoding is hop-by-hop and never passed through. ``drop`` names
    further fields (lowercase) this hop answers itself, such as ``expect``.
    """
    # One pass lowers each name once; the result is that of stripping the hop-by-hop fields,
    # then the dropped ones, then adding X-Forwarded-* and our Via hop.
    lowered = [(name.lower(), name, value) for name, value in headers]
    listed: list[bytes] = []
    host: bytes | None = None
    for lower, _, value in lowered:
        if lower == b"connection":
            listed.extend(t.strip().lower() for t in value.split(b",") if t.strip())
        elif lower == b"host" and host is None:
            host = value
    scoped = HOP_BY_HOP.union(listed) if listed else HOP_BY_HOP
    dropped = _FORWARDED.union(drop) if drop else _FORWARDED
    kept: HeaderList = []
    via = -1
    for lower, name, value in lowered:
        if lower in scoped or lower in dropped or lower.startswith(b"proxy-"):
            continue
        if via < 0 and lower == b"via":
            via = len(kept)
        kept.append((name, value))
    if trusted:
        kept.extend(_forwarding_fields(headers, client_ip, proto, trusted))
    else:
        kept.append((b"X-Forwarded-For", client_ip.encode("ascii")))
        kept.append((b"X-Forwarded-Proto", proto))
        if host is not None:
            kept.append((b"X-Forwarded-Host", host))
    if body_chunked:
        kept.append((b"Transfer-Encoding", b"chunked"))
    if via < 0:
        kept.append((b"Via", VIA))
    else:
        name, value = kept[via]
        kept[via] = (name, value + b", " + VIA)
    return kept


def upgrade_request_headers(
    headers: HeaderPairs, *, client_ip: str, proto: bytes, trusted: bool = False
) -> HeaderList:
    """Headers replayed to the backend for an upgrade: the client's own, in order and casing,
    Connection and Upgrade included, with X-Forwarded-* replaced and our Via hop added."""
    kept = [(n, v) for n, v in headers if n.lower() not in _FORWARDED]
    kept.extend(_forwarding_fields(headers, client_ip, proto, trusted))
    return _with_via(kept)


def forward_response_headers(headers: HeaderPairs) -> HeaderList:
    """Headers of a backend response to pass on: everything but the hop-by-hop fields."""
    return strip_hop_by_hop(headers)


def with_backend_host(headers: HeaderList, netloc: bytes, *, origin: bool) -> HeaderList:
    """Send the backend's own ``host:port`` as Host (``preserve_host = false``); with
    ``origin``, an upgrade's Origin becomes ``http://host:port`` too, for dev servers that
    refuse WebSockets from another origin. X-Forwarded-Host keeps the client's host."""
    out: HeaderList = [(b"Host", netloc)]
    for name, value in headers:
        lower = name.lower()
        if lower == b"host":
            out[0] = (name, netloc)  # keep the client's casing of the name
            continue
        if origin and lower == b"origin":
            value = b"http://" + netloc
        out.append((name, value))
    return out
