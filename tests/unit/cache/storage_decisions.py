"""The storage decision for a GET at a fixed clock, shared by the tests of the fields that
speak to phantom's cache in place of Cache-Control (Surrogate-Control, CDN-Cache-Control)."""

from __future__ import annotations

from phantom.cache import policy
from phantom.cache.policy import StorageDecision

WALL = 1_700_000_000.0
MONO = 5_000.0

Headers = list[tuple[bytes, bytes]]


def decide(
    response_headers: Headers,
    request_headers: Headers | None = None,
    *,
    status: int = 200,
    surrogate_control: bool,
    cdn_cache_control: bool = False,
) -> StorageDecision | None:
    """policy.storage_decision for a GET answered with ``status``, no heuristic freshness."""
    return policy.storage_decision(
        b"GET",
        status,
        request_headers or [],
        response_headers,
        60.0,
        WALL,
        MONO,
        MONO,
        heuristic="off",
        surrogate_control=surrogate_control,
        cdn_cache_control=cdn_cache_control,
    )
