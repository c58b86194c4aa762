"""CORS at the edge (``cors = {origins, methods, headers, credentials, max_age}``).

A preflight (``OPTIONS`` with ``Origin`` and ``Access-Control-Request-Method``) is answered
here and never reaches the backend: ``204`` with the ``Access-Control-Allow-*`` fields when the
origin is listed and it asks only for listed methods and headers, else ``403``. Every other
answer gets ``Access-Control-Allow-Origin`` (and ``-Credentials``) for a listed origin, and
always ``Vary: Origin``, so a cache between phantom and the browser keeps one origin's answer
from another. phantom owns these fields on such a server: the backend's own are dropped.

Pure module: request fields in, answer fields out.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from .config import CorsConfig
from .origins import OriginMatcher

__all__ = ["Cors", "Preflight", "is_cors_field"]

# Methods a browser sends without asking (Fetch standard, "CORS-safelisted method").
_SAFELISTED_METHODS = frozenset({b"GET", b"HEAD", b"POST"})
_VARY_PREFLIGHT = b"Origin, Access-Control-Request-Method, Access-Control-Request-Headers"


@dataclass(frozen=True, slots=True)
class Preflight:
    """The answer to a preflight: 204 (allowed) or 403 (not), with its fields."""

    status: int
    headers: list[tuple[bytes, bytes]]


class Cors:
    __slots__ = ("_any", "_matcher", "_methods", "_headers", "_any_header", "_allow", "_common")

    def __init__(self, config: CorsConfig) -> None:
        self._any = "*" in config.origins
        self._matcher = OriginMatcher(o for o in config.origins if o != "*")
        self._methods = frozenset(m.encode("ascii") for m in config.methods)
        self._any_header = "*" in config.headers
        self._headers = frozenset(h.encode("ascii") for h in config.headers)
        self._allow = [
            (b"Access-Control-Allow-Methods", ", ".join(config.methods).encode("ascii")),
            (b"Access-Control-Max-Age", b"%d" % config.max_age),
        ]
        if config.headers:
            self._allow.append(
                (b"Access-Control-Allow-Headers", ", ".join(config.headers).encode("ascii"))
            )
        credentials = [(b"Access-Control-Allow-Credentials", b"true")]
        self._common = credentials if config.credentials else []

    def _allow_origin(self, origin: bytes) -> bytes | None:
        """The Access-Control-Allow-Origin value for ``origin``, or None when not listed."""
        if self._matcher.matches(origin):
            return origin
        # "*" is never combined with credentials (config refuses it), so it can stay literal.
        return b"*" if self._any else None

    def preflight(self, method: bytes, headers: Iterable[tuple[bytes, bytes]]) -> Preflight | None:
        """The edge's answer when this request is a preflight, else None. ``headers`` with
        lowercase names."""
        if method != b"OPTIONS":
            return None
        origin = requested = None
        asked: list[bytes] = []
        for name, value in headers:
            if name == b"origin":
                origin = value
            elif name == b"access-control-request-method":
                requested = value.strip()
            elif name == b"access-control-request-headers":
                asked.extend(h.strip().lower() for h in value.split(b",") if h.strip())
        if origin is None or requested is None:
            return None
        vary = [(b"Vary", _VARY_PREFLIGHT)]
        allowed = self._allow_origin(origin)
        if (
            allowed is None
            or (requested not in self._methods and requested not in _SAFELISTED_METHODS)
            or not (self._any_header or all(h in self._headers for h in asked))
        ):
            return Preflight(403, vary)
        fields = [(b"Access-Control-Allow-Origin", allowed), *self._common, *self._allow]
        return Preflight(204, fields + vary)

    def answer_fields(self, origin: bytes | None) -> list[tuple[bytes, bytes]]:
        """Fields added to an answer to a request carrying ``origin``."""
        allowed = None if origin is None else self._allow_origin(origin)
        if allowed is None:
            return [(b"Vary", b"Origin")]
        return [(b"Access-Control-Allow-Origin", allowed), *self._common, (b"Vary", b"Origin")]


def is_cors_field(name: bytes) -> bool:
    """A backend's own ``Access-Control-*`` field (lowercase name), replaced by phantom's."""
    return name.startswith(b"access-control-")
