"""Content codings for stored bodies (``compress_strategy``), without I/O.

A stored body is compressed once, at store time; a client whose Accept-Encoding takes the
stored coding gets those bytes, any other client gets identity decoded on the fly. Bodies the
origin already encoded are left alone, as are types that do not compress (images, archives).
"""

from __future__ import annotations

import zlib
from collections.abc import Sequence
from typing import Final

import brotli  # type: ignore[import-untyped, unused-ignore]

from .policy import field_values, parse_cache_control

__all__ = [
    "COMPRESS_STRATEGIES",
    "MIN_COMPRESS_BYTES",
    "accepts",
    "applies",
    "coding_token",
    "compress",
    "decompress",
    "is_compressible",
    "varies",
]

Headers = Sequence[tuple[bytes, bytes]]

#: The ``compress_strategy`` values; each but "none" is also the Content-Encoding token.
COMPRESS_STRATEGIES: Final = ("none", "brotli", "gzip", "deflate")
_TOKENS: Final = {"brotli": b"br", "gzip": b"gzip", "deflate": b"deflate"}

#: Bodies smaller than this are not worth compressing (the coding overhead eats the gain).
MIN_COMPRESS_BYTES: Final = 256

_COMPRESSIBLE_TYPES: Final = frozenset(
    {
        "application/javascript",
        "application/x-javascript",
        "application/ecmascript",
        "application/json",
        "application/xml",
        "application/wasm",
        "application/xhtml+xml",
        "image/svg+xml",
        "image/x-icon",
        "image/bmp",
        "font/ttf",
        "font/otf",
        "application/vnd.ms-fontobject",
    }
)


def coding_token(strategy: str) -> bytes | None:
    """The Content-Encoding token a strategy produces (None for "none")."""
    return _TOKENS.get(strategy)


def applies(strategy: str, headers: Headers) -> bool:
    """Whether ``strategy`` compresses a stored response with these fields: one the origin did
    not encode itself, of a compressible type, and that does not say ``no-transform`` (RFC 9110
    §7.7, RFC 9111 §5.2.2.6: a proxy must not change its content coding)."""
    encoded = _first(headers, b"content-encoding") not in (None, b"identity")
    return (
        coding_token(strategy) is not None
        and not encoded
        and is_compressible(_first(headers, b"content-type"))
        and "no-transform" not in parse_cache_control(field_values(headers, b"cache-control"))
    )


def varies(strategy: str, headers: Headers) -> bool:
    """Whether phantom must add ``Vary: Accept-Encoding`` to such a response: compression
    applies, the origin's Vary (all its lines, any case) lists neither Accept-Encoding
    already nor ``*``, which says everything varies and must stay alone (RFC 9110 §12.5.5),
    and the declared Content-Length (if any) is not too small to be compressed: a body stored
    as it came is the same for every client, so it does not vary by Accept-Encoding."""
    listed = {
        token.strip(b" \t").lower()
        for name, value in headers
        if name.lower() == b"vary"
        for token in value.split(b",")
    }
    return (
        applies(strategy, headers)
        and not listed & {b"accept-encoding", b"*"}
        and not _too_small(_first(headers, b"content-length"))
    )


def _too_small(content_length: bytes | None) -> bool:
    """Whether a declared body length is below :data:`MIN_COMPRESS_BYTES`: such a body is
    stored as it comes, the same bytes for every client."""
    return content_length is not None and content_length.isdigit() and (
        int(content_length) < MIN_COMPRESS_BYTES
    )


def _first(headers: Headers, name: bytes) -> bytes | None:
    for field, value in headers:
        if field.lower() == name:
            return value.strip()
    return None


def is_compressible(content_type: bytes | None) -> bool:
    """Text-like media types compress well; images, media, archives and woff2 do not."""
    media = (content_type or b"").split(b";", 1)[0].strip().lower().decode("latin-1")
    return (
        media.startswith("text/")
        or media in _COMPRESSIBLE_TYPES
        or media.endswith(("+json", "+xml"))
    )


def compress(strategy: str, body: bytes) -> bytes:
    """``body`` in the coding of ``strategy`` ("brotli", "gzip" or "deflate": RFC 9110 §8.4.1;
    deflate is the zlib format, RFC 1950, as the RFC defines it)."""
    if strategy == "brotli":
        return bytes(brotli.compress(body, quality=5))
    if strategy == "gzip":
        compressor = zlib.compressobj(6, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
    else:
        compressor = zlib.compressobj(6, zlib.DEFLATED, zlib.MAX_WBITS)
    return compressor.compress(body) + compressor.flush()


def decompress(token: bytes, body: bytes) -> bytes:
    """Undo :func:`compress` for the Content-Encoding ``token``."""
    if token == b"br":
        return bytes(brotli.decompress(body))
    window = 16 + zlib.MAX_WBITS if token == b"gzip" else zlib.MAX_WBITS
    return zlib.decompress(body, window)


def accepts(request_headers: Headers, token: bytes) -> bool:
    """RFC 9110 §12.5.3: whether Accept-Encoding takes ``token``: listed (or ``*``) with a
    non-zero qvalue. No Accept-Encoding at all means any coding is acceptable, but a cache
    should not surprise clients that said nothing, so only an explicit listing counts."""
    wildcard: bool | None = None
    for name, value in request_headers:
        if name.lower() != b"accept-encoding":
            continue
        for element in value.split(b","):
            coding, _, params = element.partition(b";")
            coding = coding.strip().lower()
            if coding not in (token, b"*"):
                continue
            acceptable = _qvalue(params) > 0
            if coding == token:
                return acceptable
            wildcard = acceptable
    return bool(wildcard)


def _qvalue(params: bytes) -> float:
    for param in params.split(b";"):
        name, _, value = param.partition(b"=")
        if name.strip().lower() == b"q":
            try:
                return float(value.strip())
            except ValueError:
                return 0.0
    return 1.0
