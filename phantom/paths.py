"""The request target every rule sees, and the backend too: one normal form per path.

Pure: bytes in, a :class:`NormalTarget` out. Without it, ``/%61ccount``, ``//account`` and
``/x/../account`` are three paths to phantom's rules (``exclude_paths``, webhooks, ``bind_to``,
the cache key) but one to most backends, so each rule could be walked around. The router
normalises each target once (``routing.Router.route``), and what it forwards is the normal form,
so the rules and the backend read the same path.

The normal form (RFC 3986 §6.2.2), applied to the path only; the query is kept as sent:

1. percent-encoded unreserved characters are decoded (``%61`` -> ``a``, ``%2E`` -> ``.``),
   every other escape is upper-cased (``%2f`` -> ``%2F``);
2. dot segments are removed (RFC 3986 §5.2.4): ``/x/../a`` -> ``/a``, ``/a/./b`` -> ``/a/b``;
3. repeated slashes are merged (``//a///b`` -> ``/a/b``), unless the server says
   ``merge_slashes = false``. Dot segments go first, so merging never changes which
   segments a path has, only its empty ones.

An encoded ``/`` or ``\\`` (``%2F``, ``%5C``), an encoded NUL (``%00``) or a raw ``\\`` would make
the backend's idea of the segments depend on how, and how often, it decodes: such a path is
refused (400) unless the server says ``allow_encoded_slashes = true``; then the escape stays
encoded (a raw ``\\`` becomes ``%5C``) and is not a segment separator (``/%2Faccount`` is not
``/account``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Final

__all__ = ["NormalTarget", "normalize_target", "strip_prefix"]

_ESCAPE: Final = re.compile(rb"%([0-9A-Fa-f]{2})")
_SLASHES: Final = re.compile(rb"//+")
# RFC 3986 §2.3: ALPHA / DIGIT / "-" / "." / "_" / "~"
_UNRESERVED: Final = frozenset(
    b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~"
)
# Escapes of bytes that separate segments (or end strings) for some backend's decoder.
_SEPARATORS: Final = frozenset({b"2F", b"5C", b"00"})


@dataclass(frozen=True, slots=True)
class NormalTarget:
    """A request target in normal form. ``path``: escapes and dot segments normalised, slashes
    as sent; ``merged``: the same with repeated slashes merged (what routing matches);
    ``query``: ``?`` and what follows, as sent (or empty); ``encoded_separator``: the path holds
    ``%2F``, ``%5C``, ``%00`` or a raw backslash (then written ``%5C``)."""

    path: bytes
    merged: bytes
    query: bytes
    encoded_separator: bool

    def target(self, *, merge_slashes: bool) -> bytes:
        """The whole target as forwarded: path (merged or not) and query."""
        return (self.merged if merge_slashes else self.path) + self.query


def normalize_target(target: bytes) -> NormalTarget:
    """``target`` (origin-form, or ``*``) in normal form; see the module's docstring."""
    path, mark, query = target.partition(b"?")
    query = mark + query
    if not path.startswith(b"/"):  # asterisk-form: nothing to normalise
        return NormalTarget(path, path, query, False)
    if b"%" not in path and b"/." not in path and b"\\" not in path:
        # The common path, already normal (but for repeated slashes): no work.
        merged = _SLASHES.sub(b"/", path) if b"//" in path else path
        return NormalTarget(path, merged, query, False)
    separator = False

    def escape(match: re.Match[bytes]) -> bytes:
        nonlocal separator
        byte = int(match[1], 16)
        if byte in _UNRESERVED:
            return bytes((byte,))
        hex_digits = match[1].upper()
        separator = separator or hex_digits in _SEPARATORS
        return b"%" + hex_digits

    path = _ESCAPE.sub(escape, path)
    if b"\\" in path:
        separator = True
        path = path.replace(b"\\", b"%5C")
    path = _remove_dot_segments(path)
    return NormalTarget(path, _SLASHES.sub(b"/", path), query, separator)


def _remove_dot_segments(path: bytes) -> bytes:
    """RFC 3986 §5.2.4 for an absolute path: ``.`` segments go, ``..`` takes the one before it
    with it (never above the root); a path ending in either ends with ``/``."""
    segments = path.split(b"/")[1:]
    if b"." not in segments and b".." not in segments:
        return path
    kept: list[bytes] = []
    for segment in segments:
        if segment == b"..":
            if kept:
                kept.pop()
        elif segment != b".":
            kept.append(segment)
    if segments[-1] in (b".", b".."):
        kept.append(b"")
    return b"/" + b"/".join(kept)


def strip_prefix(path: str, prefix: str) -> str:
    """``path`` without ``prefix``, which it starts with once repeated slashes are merged (the
    router matches ``bind_to`` that way): ``//api//x`` without ``/api`` is ``//x``."""
    if path.startswith(prefix):
        return path[len(prefix) :]
    seen = index = 0
    previous = ""
    while seen < len(prefix) and index < len(path):
        char = path[index]
        if not (char == "/" and previous == "/"):
            seen += 1
        previous = char
        index += 1
    return path[index:]
