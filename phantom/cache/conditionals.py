"""The preconditions a cache evaluates when it answers a request from a stored response
(RFC 9110 §13, RFC 9111 §4.3.2), without I/O.

A request answered from the cache never reaches the origin, so its ``If-Match``,
``If-Unmodified-Since``, ``If-None-Match`` and ``If-Modified-Since`` are evaluated here,
against the stored response, in the order RFC 9110 §13.2.2 gives. ``If-Range`` belongs to
range handling (:mod:`.ranges`).
"""

from __future__ import annotations

import enum
from collections.abc import Sequence

from .policy import (
    StorageDecision,
    entity_tags,
    field_values,
    first_value,
    opaque_tag,
    parse_http_date,
    reads_none,
)

__all__ = ["FIELDS", "VALIDATOR_FIELDS", "Precondition", "evaluate", "strong_match"]

Headers = Sequence[tuple[bytes, bytes]]

#: The fields that ask whether the client's own copy is current: only a request carrying one
#: may be answered 304 (RFC 9110 §15.4.5).
VALIDATOR_FIELDS = frozenset({b"if-none-match", b"if-modified-since"})
#: The request fields :func:`evaluate` reads.
FIELDS = frozenset(
    {b"if-match", b"if-unmodified-since", b"if-none-match", b"if-modified-since"}
)


class Precondition(enum.Enum):
    """What the request's preconditions make of a stored response."""

    PASSED = 200  # serve it (a Range applies next)
    NOT_MODIFIED = 304  # the client's copy is current: 304 (RFC 9110 §15.4.5)
    FAILED = 412  # a precondition is false: 412 (RFC 9110 §15.5.13)


def evaluate(
    request_headers: Headers, status: int, decision: StorageDecision, stored_headers: Headers
) -> Precondition:
    """RFC 9110 §13.2.2 for a GET or HEAD answered from a stored response of ``status``
    (its validators in ``decision``, its Date in ``stored_headers``).

    1. If-Match false (§13.1.1: ``*``, or an entity tag equal by the strong comparison):
       412. 2. Without If-Match, If-Unmodified-Since false (§13.1.4: the stored Last-Modified
       is later): 412. 3. If-None-Match false (§13.1.2: ``*``, or a tag equal by the weak
       comparison): 304. 4. Without If-None-Match, If-Modified-Since false (§13.1.3: not
       modified since): 304; the stored response's Date stands in for a missing
       Last-Modified (RFC 9111 §4.3.2). A date that does not parse, or nothing to compare it
       with, leaves its condition out. Preconditions are ignored when the stored response is
       not a 2xx (§13.2.1): the answer would not have been one either.
    """
    if not 200 <= status < 300 or reads_none(request_headers, FIELDS):
        return Precondition.PASSED
    if_match = _tags(request_headers, b"if-match")
    if if_match is not None:
        if b"*" not in if_match and not any(strong_match(t, decision.etag) for t in if_match):
            return Precondition.FAILED
    elif _modified_after(request_headers, b"if-unmodified-since", decision.last_modified):
        return Precondition.FAILED
    if_none_match = _tags(request_headers, b"if-none-match")
    if if_none_match is not None:
        if b"*" in if_none_match or (
            decision.etag is not None
            and opaque_tag(decision.etag) in {opaque_tag(tag) for tag in if_none_match}
        ):
            return Precondition.NOT_MODIFIED
        return Precondition.PASSED
    modified = decision.last_modified or first_value(stored_headers, b"date")
    if _modified_after(request_headers, b"if-modified-since", modified) is False:
        return Precondition.NOT_MODIFIED
    return Precondition.PASSED


def strong_match(tag: bytes, stored: bytes | None) -> bool:
    """The strong comparison of RFC 9110 §8.8.3.2: neither tag is weak, and they are the
    same characters."""
    if stored is None:
        return False
    tag, stored = tag.strip(), stored.strip()
    return tag == stored and not tag.startswith(b"W/")


def _tags(headers: Headers, name: bytes) -> list[bytes] | None:
    """The entity tags listed by every ``name`` line; None when the field is absent."""
    lines = field_values(headers, name)
    if not lines:
        return None
    return [tag for line in lines for tag in entity_tags(line)]


def _modified_after(headers: Headers, name: bytes, modified: bytes | None) -> bool | None:
    """Whether the stored modification date ``modified`` is later than the request's date
    field ``name``; None when either is absent or not a valid HTTP-date (RFC 9110 §13.1.3,
    §13.1.4: the condition is then ignored)."""
    values = field_values(headers, name)
    if not values or modified is None:
        return None
    since = parse_http_date(values[0])
    stored = parse_http_date(modified)
    if since is None or stored is None:
        return None
    return stored > since
