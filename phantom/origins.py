"""Which web origins may talk to a server: ``allowed_origins`` for upgrades (Cross-Site
WebSocket Hijacking: a browser sends its cookies with a cross-site ``new WebSocket()``, so
only the ``Origin`` field tells a page of the app from any other page) and ``cors.origins``.

A pattern is ``scheme://host[:port]`` or ``scheme://*.domain[:port]``; the wildcard matches
subdomains at any depth, never the domain itself. Default ports are implied (``https://a`` is
``https://a:443``), names compare case-insensitively, as RFC 6454 serialises origins.

Pure module: bytes in, yes or no out.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass

__all__ = ["OriginMatcher", "OriginPattern", "origin_allowed", "parse_origin_pattern"]

_DEFAULT_PORTS = {"http": 80, "https": 443, "ws": 80, "wss": 443}
_LABEL = r"[a-z0-9](?:[a-z0-9-]*[a-z0-9])?"
_ORIGIN = re.compile(
    rf"(?P<scheme>[a-z][a-z0-9+.-]*)://(?P<wild>\*\.)?"
    rf"(?P<host>{_LABEL}(?:\.{_LABEL})*|\[[0-9a-f:.]+\])(?::(?P<port>\d{{1,5}}))?"
)


@dataclass(frozen=True, slots=True)
class OriginPattern:
    scheme: str
    host: str  # without the "*." of a wildcard
    port: int
    wildcard: bool

    def __str__(self) -> str:
        port = "" if _DEFAULT_PORTS.get(self.scheme) == self.port else f":{self.port}"
        return f"{self.scheme}://{'*.' if self.wildcard else ''}{self.host}{port}"


def _split(text: str) -> tuple[str, bool, str, int] | None:
    match = _ORIGIN.fullmatch(text.lower())
    if match is None:
        return None
    scheme = match["scheme"]
    port = match["port"]
    if port is None:
        if scheme not in _DEFAULT_PORTS:
            return None
        number = _DEFAULT_PORTS[scheme]
    else:
        number = int(port)
        if not 0 < number < 65536:
            return None
    return scheme, match["wild"] is not None, match["host"], number


def parse_origin_pattern(text: str) -> OriginPattern:
    """``https://app.example.com``, ``https://*.example.com``, ``http://localhost:3000``.
    Raises ``ValueError`` saying what is wrong (``null`` and ``*`` are refused: the first is
    what sandboxed pages and local files send, the second no check at all)."""
    if text in ("*", "null"):
        raise ValueError(
            f"{text!r} is not an origin: list the origins, such as \"https://app.example.com\""
        )
    parts = _split(text)
    if parts is None:
        raise ValueError(
            f'expected an origin such as "https://app.example.com" or "https://*.example.com" '
            f"(no path), got {text!r}"
        )
    scheme, wildcard, host, port = parts
    return OriginPattern(scheme, host, port, wildcard)


class OriginMatcher:
    """A set of patterns; :meth:`matches` answers for an ``Origin`` field's value."""

    __slots__ = ("_exact", "_wild", "matches")

    def __init__(self, patterns: Iterable[str]) -> None:
        parsed = [parse_origin_pattern(text) for text in patterns]
        self._exact = {(p.scheme, p.host, p.port) for p in parsed if not p.wildcard}
        self._wild = [(p.scheme, "." + p.host, p.port) for p in parsed if p.wildcard]
        # Browsers send the same few origins again and again: each is matched once (bounded:
        # forged origins can't grow it). Answers for an ``Origin`` field's value.
        self.matches: Callable[[bytes], bool] = functools.lru_cache(maxsize=1024)(self._match)

    def _match(self, origin: bytes) -> bool:
        try:
            parts = _split(origin.decode("ascii"))
        except UnicodeDecodeError:
            return False
        if parts is None or parts[1]:
            return False  # "null", garbage, or a "*." no browser sends
        scheme, _, host, port = parts
        if (scheme, host, port) in self._exact:
            return True
        return any(
            scheme == s and port == p and host.endswith(suffix) for s, suffix, p in self._wild
        )


def origin_allowed(
    origins: list[bytes], matcher: OriginMatcher, *, required: bool
) -> bool:
    """Whether an upgrade carrying the ``Origin`` fields ``origins`` may go on: one listed
    origin; none at all only when not ``required`` (non-browser clients send none). Two
    Origin fields are refused: a browser never sends that."""
    if not origins:
        return not required
    return len(origins) == 1 and matcher.matches(origins[0])
