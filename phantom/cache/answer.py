"""How a stored response answers one request, without I/O.

Every answer from the cache (a fresh hit, a stale one, an entry just revalidated, a snapshot)
goes through :func:`from_stored`: the request's preconditions first (RFC 9110 §13.2.2: 412 or
304), then the coding the client takes (``compress_strategy``: the stored bytes, or identity
decoded on the fly), then its byte range (RFC 9110 §14: 206 or 416). The I/O layer writes the
result with its own framing (Content-Length of the body given), Age and Cache-Status.
"""

from __future__ import annotations

from collections.abc import Sequence

from . import conditionals, encoding, ranges
from .policy import reads_none
from .store import CachedResponse

__all__ = ["Answer", "from_stored"]

Headers = Sequence[tuple[bytes, bytes]]

#: (status, reason, the head's fields serialised without Content-Length, body)
Answer = tuple[int, bytes, bytes, bytes]

_FIELDS = conditionals.FIELDS | ranges.FIELDS


def from_stored(
    entry: CachedResponse, body: bytes, request_headers: Headers, method: bytes
) -> Answer:
    """The answer ``entry`` (with its stored ``body``) gives a GET or HEAD with
    ``request_headers``.

    412 (no fields, no body) when If-Match / If-Unmodified-Since fail; 304 with the stored
    fields when the client's copy is current; otherwise the stored response, decoded for a
    client that does not accept its coding, as a 206 with ``Content-Range`` when a single
    byte range of it is asked for, or a 416 with ``Content-Range: bytes */length`` (and no
    other field) when no byte of that range exists. HEAD gets the 200's fields and body
    length (the caller sends no body).
    """
    wire_headers = entry.wire_headers
    decoding = entry.coding
    if decoding is not None and encoding.accepts(request_headers, decoding):
        decoding = None  # the client takes the stored bytes
    if decoding is not None:
        wire_headers = entry.identity_wire_headers
    # The usual request asks for nothing of the kind: nothing more to decide.
    asks = not reads_none(request_headers, _FIELDS)
    if asks:
        precondition = conditionals.evaluate(
            request_headers, entry.status, entry.decision, entry.headers
        )
        if precondition is conditionals.Precondition.FAILED:
            return 412, b"Precondition Failed", b"", b""
        if precondition is conditionals.Precondition.NOT_MODIFIED:
            return 304, b"Not Modified", wire_headers, b""
    if decoding is not None:
        body = encoding.decompress(decoding, body)  # HEAD too: its Content-Length
    if not asks:
        return entry.status, entry.reason, wire_headers, body
    selection = ranges.select(
        method, request_headers, entry.status, entry.decision, entry.headers, len(body)
    )
    if selection is None:
        return entry.status, entry.reason, wire_headers, body
    content_range = b"Content-Range: %s\r\n" % selection.content_range
    if isinstance(selection, ranges.NotSatisfiable):
        return 416, b"Range Not Satisfiable", content_range, b""
    part = body[selection.first : selection.last + 1]
    return 206, b"Partial Content", wire_headers + content_range, part
