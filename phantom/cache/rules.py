"""Operator cache controls, as pure functions: which requests use the cache at all
(``include_paths`` / ``exclude_paths``) and which responses a ``cache_strategy`` keeps.

No I/O; the I/O layer asks :class:`CacheRules` once per request and once per response.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Final

__all__ = ["CACHE_STRATEGIES", "CacheRules", "PathRule", "compile_wildcard", "parse_path_rule"]

#: The ``cache_strategy`` values.
CACHE_STRATEGIES: Final = ("all", "none", "only_html", "no_images", "only_images", "only_assets")

_HTML_TYPES: Final = frozenset({"text/html", "application/xhtml+xml"})
_ASSET_TYPES: Final = frozenset(
    {
        "text/css",
        "text/javascript",
        "application/javascript",
        "application/x-javascript",
        "application/ecmascript",
        "application/json",
        "application/wasm",
        "application/xml",
        "text/xml",
        "application/vnd.ms-fontobject",
    }
)

_EVENT_STREAM: Final = "text/event-stream"


def compile_wildcard(pattern: str) -> Callable[[str], bool]:
    """A matcher for ``pattern``: ``*`` matches any run of characters (``/`` included), every
    other character is literal. Linear-time matching, no regex backtracking."""
    parts = pattern.split("*")
    if len(parts) == 1:
        return lambda text: text == pattern
    head, middle, tail = parts[0], [p for p in parts[1:-1] if p], parts[-1]
    min_length = len(head) + len(tail) + sum(len(p) for p in middle)

    def match(text: str) -> bool:
        if len(text) < min_length or not text.startswith(head) or not text.endswith(tail):
            return False
        position, end = len(head), len(text) - len(tail)
        for part in middle:
            found = text.find(part, position, end)
            if found < 0:
                return False
            position = found + len(part)
        return True

    return match


@dataclass(frozen=True, slots=True)
class PathRule:
    """One ``include_paths`` / ``exclude_paths`` entry: ``"GET /api/*"`` or ``"/img/*"``."""

    method: str | None  # None: any method
    pattern: str
    match: Callable[[str], bool]  # compiled once, from pattern

    def matches(self, method: str, path: str) -> bool:
        return (self.method is None or self.method == method) and self.match(path)


def parse_path_rule(text: str) -> PathRule:
    """``"[METHOD ]pattern"``; the pattern must start with ``/`` or ``*``. Raises
    ``ValueError`` with the problem."""
    method, space, pattern = text.strip().partition(" ")
    if not space:
        method, pattern = "", method
    pattern = pattern.strip()
    if method and not (method.isascii() and method.isalpha()):
        raise ValueError(f"expected [METHOD ]/path-pattern, got {text!r}")
    if not pattern or pattern[0] not in "/*":
        raise ValueError(f"expected a path pattern starting with / or *, got {text!r}")
    return PathRule(method.upper() or None, pattern, compile_wildcard(pattern))


@dataclass(frozen=True, slots=True)
class CacheRules:
    """A server block's cache controls, matched against the request path (query excluded)."""

    strategy: str = "all"
    include: Sequence[PathRule] = ()
    exclude: Sequence[PathRule] = ()

    def uses_cache(self, method: bytes, target: bytes) -> bool:
        """Whether this request may be answered from, or fill, the cache: never with strategy
        ``none``; exclude wins over include; an empty include list means every path."""
        if self.strategy == "none":
            return False
        if not self.include and not self.exclude:
            return True
        name = method.decode("latin-1")
        path = target.split(b"?", 1)[0].decode("latin-1")
        if any(rule.matches(name, path) for rule in self.exclude):
            return False
        return not self.include or any(rule.matches(name, path) for rule in self.include)

    def keeps(self, content_type: bytes | None) -> bool:
        """Whether ``cache_strategy`` keeps a response of this Content-Type. Server-sent
        events never: each client must get its own live stream, not a finished one replayed."""
        media = (content_type or b"").split(b";", 1)[0].strip().lower().decode("latin-1")
        if media == _EVENT_STREAM:
            return False
        if self.strategy == "all":
            return True
        image = media.startswith("image/")
        if self.strategy == "no_images":
            return not image
        if self.strategy == "only_images":
            return image
        if self.strategy == "only_html":
            return media in _HTML_TYPES
        if self.strategy == "only_assets":
            return (
                image
                or media in _ASSET_TYPES
                or media.startswith("font/")
                or media.endswith(("+json", "+xml"))
            )
        return False  # "none"
