"""phantom.cache.encoding: codings of stored bodies and Accept-Encoding (RFC 9110 §8.4, §12.5.3)."""

from __future__ import annotations

import gzip
import zlib

import brotli
import pytest

from phantom.cache import encoding

TEXT = b"<p>phantom caches this page</p>\n" * 40


@pytest.mark.parametrize(
    ("strategy", "token"), [("brotli", b"br"), ("gzip", b"gzip"), ("deflate", b"deflate")]
)
def test_round_trip_and_standard_formats(strategy: str, token: bytes) -> None:
    """RFC 9110 §8.4.1: br (RFC 7932), gzip (RFC 1952), deflate = zlib format (RFC 1950)."""
    packed = encoding.compress(strategy, TEXT)
    assert len(packed) < len(TEXT)
    assert encoding.coding_token(strategy) == token
    assert encoding.decompress(token, packed) == TEXT
    standard = {b"br": brotli.decompress, b"gzip": gzip.decompress, b"deflate": zlib.decompress}
    assert standard[token](packed) == TEXT


def test_none_has_no_token() -> None:
    assert encoding.coding_token("none") is None


@pytest.mark.parametrize(
    ("accept_encoding", "expected"),
    [
        (None, False),  # said nothing: identity is the safe answer
        (b"br", True),
        (b"gzip, deflate, br", True),
        (b"BR;q=0.5", True),
        (b"br;q=0", False),
        (b"br;q=0.000", False),
        (b"gzip", False),
        (b"*", True),
        (b"*;q=0", False),
        (b"*, br;q=0", False),  # the explicit entry wins over the wildcard
        (b"identity", False),
    ],
)
def test_accepts(accept_encoding: bytes | None, expected: bool) -> None:
    """RFC 9110 §12.5.3: codings with qvalue 0 are not acceptable; * covers unlisted ones."""
    headers = [] if accept_encoding is None else [(b"accept-encoding", accept_encoding)]
    assert encoding.accepts(headers, b"br") is expected


@pytest.mark.parametrize(
    ("content_type", "expected"),
    [
        (b"text/html; charset=utf-8", True),
        (b"application/json", True),
        (b"application/ld+json", True),
        (b"image/svg+xml", True),
        (b"image/png", False),
        (b"font/woff2", False),
        (b"application/zip", False),
        (None, False),
    ],
)
def test_is_compressible(content_type: bytes | None, expected: bool) -> None:
    assert encoding.is_compressible(content_type) is expected


HTML = (b"content-type", b"text/html")


@pytest.mark.parametrize(
    ("vary", "expected"),
    [
        ([], True),
        ([b"Cookie"], True),
        ([b"Accept-Encoding"], False),
        ([b"cookie, ACCEPT-ENCODING"], False),  # any case, within a list
        ([b"Cookie", b"accept-encoding"], False),  # on another Vary line
        ([b"Cookie,\taccept-encoding "], False),
        ([b"*"], False),  # everything varies: Vary stays "*" alone
        ([b"Cookie, *"], False),
        ([b"Cookie", b"*"], False),
        ([b"Accept-Encodings"], True),  # another field
    ],
)
def test_varies_adds_accept_encoding_only_when_absent_and_never_to_star(
    vary: list[bytes], expected: bool
) -> None:
    """RFC 9110 §12.5.5: Accept-Encoding is added to the origin's Vary only when no line
    lists it; ``*`` is never extended."""
    headers = [HTML, *((b"Vary", line) for line in vary)]
    assert encoding.varies("brotli", headers) is expected
    assert encoding.varies("none", headers) is False


@pytest.mark.parametrize(
    ("cache_control", "expected"),
    [(None, True), (b"max-age=60", True), (b"max-age=60, No-Transform", False)],
)
def test_no_transform_is_never_compressed(cache_control: bytes | None, expected: bool) -> None:
    """RFC 9110 §7.7, RFC 9111 §5.2.2.6: a proxy must not transform the content of a
    response that says no-transform: it is stored and served with its own coding."""
    fields = [HTML] if cache_control is None else [HTML, (b"Cache-Control", cache_control)]
    assert encoding.applies("brotli", fields) is expected
    assert encoding.varies("brotli", fields) is expected


@pytest.mark.parametrize(
    ("length", "expected"),
    [(None, True), (b"0", False), (b"255", False), (b"256", True), (b"12x", True)],
)
def test_declared_small_bodies_do_not_vary(length: bytes | None, expected: bool) -> None:
    """RFC 9110 §12.5.5: Vary names what the selection depends on. A body declared smaller
    than MIN_COMPRESS_BYTES is stored as it comes, the same for every Accept-Encoding, so
    the miss does not add ``Vary: Accept-Encoding``; an unknown length might still be."""
    fields = [HTML] if length is None else [HTML, (b"Content-Length", length)]
    assert encoding.MIN_COMPRESS_BYTES == 256
    assert encoding.varies("brotli", fields) is expected
