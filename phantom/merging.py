"""One control API answer from the answers of every worker to the same call (``workers = N``).

Pure module. Each worker holds its own share of the state (its own cache, its own snapshots),
so an operation succeeded only where it succeeded on every worker: the first failure, a
non-200 answer or a bulk item with ``"ok": false``, is the answer. Counts of what was done
(``invalidated``) are summed; bulk ``results`` are merged item by item (every worker got the
same items in the same order) and ``succeeded``/``failed`` counted again; every other field is
the same on every worker (the pattern, the path, a snapshot's size) and is taken from one.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

__all__ = ["merge_answers"]

_SUMMED = frozenset({"invalidated"})


def merge_answers(answers: Sequence[tuple[int, Any]]) -> tuple[int, Any]:
    """``(status, JSON value)`` pairs, one per worker (at least one) -> one pair."""
    for status, body in answers:
        if status != 200:
            return status, body
    return 200, _merge([body for _, body in answers])


def _merge(values: list[Any]) -> Any:
    if not all(isinstance(value, dict) for value in values):
        return values[0]
    failed = [value for value in values if value.get("ok") is False]
    merged = dict(failed[0] if failed else values[0])
    for key in _SUMMED & merged.keys():
        merged[key] = sum(value.get(key, 0) for value in values)
    results = [value.get("results") for value in values]
    if all(isinstance(items, list) and len(items) == len(results[0]) for items in results):
        merged["results"] = [_merge(list(items)) for items in zip(*results, strict=True)]
        if "succeeded" in merged:
            bad = sum(1 for item in merged["results"] if item.get("ok") is False)
            merged["succeeded"], merged["failed"] = len(merged["results"]) - bad, bad
    return merged
