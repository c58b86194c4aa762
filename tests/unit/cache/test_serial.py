"""phantom.cache.serial: the Redis form of a URL's variants, and what a bad value is."""

from __future__ import annotations

import pytest
from test_store import response

from phantom.cache.serial import decode_variants, encode_variants
from phantom.cache.store import CachedResponse


def full_response() -> CachedResponse:
    base = response(
        b"\x00\xff coded body",
        headers=[(b"content-type", b"text/html; charset=\xe9"), (b"set-cookie", b"a=1"),
                 (b"set-cookie", b"b=2")],
        response_time=500.0,
        initial_age=3.0,
        etag=b'"v1"',
        vary=((b"accept-language", b"fr"), (b"x-none", None)),
        dropped_fields=frozenset({b"x-private"}),
        stale_while_revalidate=30.0,
    )
    base.coding = b"br"
    base.identity_headers = [(b"content-type", b"text/html")]
    base.fields = [(b"content-type", b"text/html")]
    return base


def test_variants_travel_whole_and_their_times_move_to_the_readers_clock() -> None:
    first, second = full_response(), response(b"other", response_time=490.0, vary=None)
    raw = encode_variants((first, second), wall_offset=1_000_000.0)
    # Another host: its store clock reads 10 s less at the same wall-clock instant.
    back = decode_variants(raw, wall_offset=1_000_010.0)
    assert [v.body for v in back] == [first.body, b"other"]
    got = back[0]
    assert got.response_time == 490.0
    assert (got.status, got.reason, got.headers) == (first.status, first.reason, first.headers)
    assert (got.coding, got.identity_headers, got.fields) == (b"br", first.identity_headers,
                                                             first.fields)
    assert got.decision == first.decision
    assert got.wire_headers == first.wire_headers
    assert back[1].decision.vary is None


@pytest.mark.parametrize(
    "raw",
    [
        b"",
        b"\x80\x04pickle",
        b"phantom-cache-1\n",
        b"phantom-cache-1\n[]\n",
        b"phantom-cache-1\n{}\n",
        b'phantom-cache-1\n[{"length": 5}]\nhello',
    ],
)
def test_anything_else_is_a_value_error(raw: bytes) -> None:
    with pytest.raises(ValueError):
        decode_variants(raw, 0.0)


def test_a_truncated_or_padded_body_is_a_value_error() -> None:
    raw = encode_variants((response(b"hello"),), 0.0)
    for bad in (raw[:-1], raw + b"x"):
        with pytest.raises(ValueError):
            decode_variants(bad, 0.0)
