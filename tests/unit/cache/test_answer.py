"""phantom.cache.answer: how a stored response answers one request (RFC 9110 §13.2.2
preconditions, §14 ranges, and the stored coding)."""

from __future__ import annotations

import brotli

from phantom.cache import encoding
from phantom.cache.answer import from_stored
from phantom.cache.policy import StorageDecision
from phantom.cache.store import CachedResponse

BODY = b"0123456789"
DECISION = StorageDecision(60.0, 0.0, etag=b'"v1"')


def entry(status: int = 200) -> CachedResponse:
    fields = [(b"ETag", b'"v1"'), (b"Content-Length", b"10")]
    return CachedResponse(status, b"OK", fields, BODY, 0.0, DECISION)


def compressed() -> CachedResponse:
    text = b"stored compressed " * 20
    packed = encoding.compress("brotli", text)
    served = [(b"Content-Type", b"text/plain"), (b"Vary", b"Accept-Encoding")]
    return CachedResponse(
        200,
        b"OK",
        [*served, (b"Content-Encoding", b"br"), (b"Content-Length", b"%d" % len(packed))],
        packed,
        0.0,
        DECISION,
        coding=b"br",
        identity_headers=[*served, (b"Content-Length", b"%d" % len(text))],
    )


def test_a_request_that_asks_nothing_gets_the_stored_response() -> None:
    """RFC 9111 §4: the stored status, fields (Content-Length left to the framing) and body."""
    assert from_stored(entry(), BODY, [(b"accept", b"*/*")], b"GET") == (
        200,
        b"OK",
        b'ETag: "v1"\r\n',
        BODY,
    )


def test_preconditions_come_first() -> None:
    """RFC 9110 §13.2.2: a failed If-Match is 412 with nothing else; a matching
    If-None-Match is 304 with the stored fields; both before any Range."""
    failed = from_stored(entry(), BODY, [(b"if-match", b'"v2"'), (b"range", b"bytes=0-1")], b"GET")
    assert failed == (412, b"Precondition Failed", b"", b"")
    current = from_stored(entry(), BODY, [(b"if-none-match", b'"v1"')], b"GET")
    assert current == (304, b"Not Modified", b'ETag: "v1"\r\n', b"")


def test_a_single_range_is_a_206_and_a_range_past_the_end_a_416() -> None:
    """RFC 9110 §14.4, §15.3.7, §15.5.17: Content-Range after the stored fields; a 416
    carries only its Content-Range."""
    part = from_stored(entry(), BODY, [(b"range", b"bytes=-3")], b"GET")
    assert part == (206, b"Partial Content", b'ETag: "v1"\r\nContent-Range: bytes 7-9/10\r\n',
                    b"789")
    past = from_stored(entry(), BODY, [(b"range", b"bytes=10-")], b"GET")
    assert past == (416, b"Range Not Satisfiable", b"Content-Range: bytes */10\r\n", b"")


def test_head_and_other_statuses_ignore_range() -> None:
    """RFC 9110 §14.2: Range is for GET, and phantom slices stored 200s only."""
    assert from_stored(entry(), BODY, [(b"range", b"bytes=0-1")], b"HEAD")[0] == 200
    assert from_stored(entry(404), BODY, [(b"range", b"bytes=0-1")], b"GET")[0] == 404


def test_a_compressed_entry_is_decoded_for_a_client_that_does_not_take_it() -> None:
    """RFC 9110 §8.4, §14.1: a client without ``br`` gets identity, and its range is a range
    of the identity body; one with ``br`` gets the stored bytes and ranges of those."""
    stored = compressed()
    text = brotli.decompress(stored.body)
    status, _, fields, body = from_stored(stored, stored.body, [], b"GET")
    assert (status, body) == (200, text) and b"Content-Encoding" not in fields
    status, _, fields, body = from_stored(stored, stored.body, [(b"range", b"bytes=0-5")], b"GET")
    assert (status, body) == (206, text[:6])
    assert fields.endswith(b"Content-Range: bytes 0-5/%d\r\n" % len(text))
    coded = from_stored(
        stored, stored.body, [(b"accept-encoding", b"br"), (b"range", b"bytes=0-5")], b"GET"
    )
    assert coded[0] == 206 and coded[3] == stored.body[:6]
    assert b"Content-Encoding: br" in coded[2]
