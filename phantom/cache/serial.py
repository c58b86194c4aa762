"""The stored form of one URL's responses in Redis (``cache_storage_mode = "redis"``).

Pure module. One value holds every Vary variant of a URL, newest first, as one line of JSON
(status, fields, policy decision, body length) followed by the bodies back to back; byte
strings travel as latin-1 text, which maps each byte to one character and back. Times cross
hosts, so ``response_time`` is written on the wall clock and read back onto the reader's own
store clock. No pickle: whoever can write to Redis must not be able to run code in phantom, so
a value is data, checked field by field; anything malformed is a :class:`ValueError` (a miss
for the caller).
"""

from __future__ import annotations

import json
import math
from typing import Any, Final

from .policy import StorageDecision
from .store import CachedResponse, Variants

__all__ = ["decode_variants", "encode_variants"]

_MAGIC: Final = b"phantom-cache-1\n"

Fields = list[tuple[bytes, bytes]]


def encode_variants(variants: Variants, wall_offset: float) -> bytes:
    """``variants`` as a Redis value; ``wall_offset`` = wall clock minus store clock now."""
    meta = [
        {
            "status": v.status,
            "reason": _text(v.reason),
            "headers": _fields_out(v.headers),
            "time": v.response_time + wall_offset,
            "decision": _decision_out(v.decision),
            "coding": None if v.coding is None else _text(v.coding),
            "identity_headers": None
            if v.identity_headers is None
            else _fields_out(v.identity_headers),
            "fields": None if v.fields is None else _fields_out(v.fields),
            "length": len(v.body),
        }
        for v in variants
    ]
    head = json.dumps(meta, separators=(",", ":")).encode()
    return b"".join((_MAGIC, head, b"\n", *(v.body for v in variants)))


def decode_variants(raw: bytes, wall_offset: float) -> Variants:
    """A value written by :func:`encode_variants`; ``wall_offset`` as there, on this host.
    Raises ValueError when ``raw`` is not such a value."""
    if not raw.startswith(_MAGIC):
        raise ValueError("not a phantom cache value")
    head, newline, bodies = raw[len(_MAGIC) :].partition(b"\n")
    if not newline:
        raise ValueError("truncated value")
    try:
        meta = json.loads(head)
        if not isinstance(meta, list) or not meta:
            raise ValueError("no variants")
        variants = []
        offset = 0
        for item in meta:
            length = _int(item["length"])
            body = bodies[offset : offset + length]
            if len(body) != length:
                raise ValueError("truncated body")
            offset += length
            variants.append(
                CachedResponse(
                    status=_int(item["status"]),
                    reason=_bytes(item["reason"]),
                    headers=_fields_in(item["headers"]),
                    body=body,
                    response_time=_number(item["time"]) - wall_offset,
                    decision=_decision_in(item["decision"]),
                    coding=None if item["coding"] is None else _bytes(item["coding"]),
                    identity_headers=None
                    if item["identity_headers"] is None
                    else _fields_in(item["identity_headers"]),
                    fields=None if item["fields"] is None else _fields_in(item["fields"]),
                )
            )
    except (KeyError, TypeError, UnicodeEncodeError) as exc:
        raise ValueError(f"malformed value: {exc!r}") from None
    if offset != len(bodies):
        raise ValueError("trailing bytes")
    return tuple(variants)


# -- fields ------------------------------------------------------------------------------------


def _text(value: bytes) -> str:
    return value.decode("latin-1")


def _bytes(value: Any) -> bytes:
    if not isinstance(value, str):
        raise ValueError("expected text")
    return value.encode("latin-1")


def _int(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError("expected a count")
    return value


def _number(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or math.isnan(value):
        raise ValueError("expected a number")
    return float(value)


def _fields_out(fields: Fields) -> list[list[str]]:
    return [[_text(name), _text(value)] for name, value in fields]


def _fields_in(value: Any) -> Fields:
    if not isinstance(value, list):
        raise ValueError("expected fields")
    return [(_bytes(name), _bytes(field)) for name, field in value]


def _decision_out(d: StorageDecision) -> dict[str, Any]:
    return {
        "freshness_lifetime": d.freshness_lifetime,
        "initial_age": d.initial_age,
        "no_cache": d.no_cache,
        "no_stale": d.no_stale,
        "stale_while_revalidate": d.stale_while_revalidate,
        "stale_if_error": d.stale_if_error,
        "etag": None if d.etag is None else _text(d.etag),
        "last_modified": None if d.last_modified is None else _text(d.last_modified),
        "shared_auth": d.shared_auth,
        "vary": None
        if d.vary is None
        else [[_text(name), None if value is None else _text(value)] for name, value in d.vary],
        "dropped_fields": sorted(_text(name) for name in d.dropped_fields),
    }


def _flag(value: Any) -> bool:
    if not isinstance(value, bool):
        raise ValueError("expected a boolean")
    return value


def _decision_in(value: Any) -> StorageDecision:
    if not isinstance(value, dict):
        raise ValueError("expected a decision")
    vary = value["vary"]
    if vary is not None and not isinstance(vary, list):
        raise ValueError("expected a Vary key")
    dropped = value["dropped_fields"]
    if not isinstance(dropped, list):
        raise ValueError("expected dropped fields")
    return StorageDecision(
        freshness_lifetime=_number(value["freshness_lifetime"]),
        initial_age=_number(value["initial_age"]),
        no_cache=_flag(value["no_cache"]),
        no_stale=_flag(value["no_stale"]),
        stale_while_revalidate=_number(value["stale_while_revalidate"]),
        stale_if_error=_number(value["stale_if_error"]),
        etag=None if value["etag"] is None else _bytes(value["etag"]),
        last_modified=None if value["last_modified"] is None else _bytes(value["last_modified"]),
        shared_auth=_flag(value["shared_auth"]),
        vary=None
        if vary is None
        else tuple((_bytes(name), None if v is None else _bytes(v)) for name, v in vary),
        dropped_fields=frozenset(_bytes(name) for name in dropped),
    )
