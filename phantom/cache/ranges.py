"""Range requests answered from a stored response (RFC 9110 §14), without I/O.

phantom stores whole responses only. A GET with a single byte range (``bytes=a-b``, ``a-``,
``-n``) on a stored 200 is answered 206 with that slice, or 416 when no byte of it exists;
anything else (several ranges, another unit, a malformed header, a failed ``If-Range``) is
answered with the whole 200, which RFC 9110 §14.2 allows.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from .conditionals import strong_match
from .policy import StorageDecision, field_values, first_value, parse_http_date, reads_none

__all__ = ["FIELDS", "NotSatisfiable", "Partial", "Selection", "advertised", "asked", "select"]

Headers = Sequence[tuple[bytes, bytes]]

#: The request fields :func:`select` acts on (If-Range matters only with a Range).
FIELDS = frozenset({b"range"})
#: Larger positions are all "beyond any stored body" (and int() stays cheap).
_MAX_DIGITS = 18


@dataclass(frozen=True, slots=True)
class Partial:
    """Bytes ``first`` to ``last`` (inclusive) of a representation of ``length`` bytes: a 206."""

    first: int
    last: int
    length: int

    @property
    def content_range(self) -> bytes:
        """RFC 9110 §14.4: ``bytes first-last/length``."""
        return b"bytes %d-%d/%d" % (self.first, self.last, self.length)


@dataclass(frozen=True, slots=True)
class NotSatisfiable:
    """No byte of the range exists in a representation of ``length`` bytes: a 416."""

    length: int

    @property
    def content_range(self) -> bytes:
        """RFC 9110 §15.5.17: a 416 says the current length as ``bytes */length``."""
        return b"bytes */%d" % self.length


#: What a stored response answers a request with: a slice, a 416, or (None) all of it.
Selection = Partial | NotSatisfiable | None


def select(
    method: bytes,
    request_headers: Headers,
    status: int,
    decision: StorageDecision,
    stored_headers: Headers,
    length: int,
) -> Selection:
    """The range of a stored ``status`` response of ``length`` bytes (as it will be sent,
    coding included) that ``request_headers`` ask for.

    RFC 9110 §14.2: Range applies to GET only, here to a stored 200; a Range field with
    another unit, several ranges or bad syntax is ignored (the whole response). §13.1.5:
    ``If-Range`` lets the range through only when it holds (see :func:`_if_range_holds`).
    §14.1.2: ``a-b`` is clamped to the length, ``-n`` is the last n bytes; a range starting
    past the end, or ``-0``, is not satisfiable (416).
    """
    if method != b"GET" or status != 200:
        return None
    lines = field_values(request_headers, b"range")
    if len(lines) != 1 or not _if_range_holds(request_headers, decision, stored_headers):
        return None
    unit, equals, specs = lines[0].partition(b"=")
    members = [member.strip() for member in specs.split(b",") if member.strip()]
    if not equals or unit.strip().lower() != b"bytes" or len(members) != 1:
        return None
    first, dash, last = members[0].partition(b"-")
    first, last = first.strip(), last.strip()
    if not dash or not (first or last) or not (first or b"0").isdigit():
        return None
    if last and not last.isdigit():
        return None
    if not first:  # suffix-range: the last n bytes
        count = _position(last)
        if count == 0:
            return NotSatisfiable(length)
        if length == 0:
            return None  # nothing to slice: the whole (empty) response
        return Partial(max(0, length - count), length - 1, length)
    start = _position(first)
    end = _position(last) if last else length - 1
    if last and end < start:
        return None  # invalid range-spec: ignored
    if start >= length:
        return NotSatisfiable(length)
    return Partial(start, min(end, length - 1), length)


def asked(request_headers: Headers) -> bool:
    """Whether the request carries a Range field at all (valid or not)."""
    return not reads_none(request_headers, FIELDS)


def advertised(status: int, headers: Headers) -> list[tuple[bytes, bytes]]:
    """The fields a stored response goes out with (a new list), saying ``Accept-Ranges:
    bytes`` when it is a 200 (RFC 9110 §14.3: phantom answers ranges of it, whatever the
    origin does)."""
    if status != 200:
        return list(headers)
    kept = [(name, value) for name, value in headers if name.lower() != b"accept-ranges"]
    return [*kept, (b"Accept-Ranges", b"bytes")]


def _position(digits: bytes) -> int:
    return int(digits) if len(digits) <= _MAX_DIGITS else 10**_MAX_DIGITS


def _if_range_holds(
    request_headers: Headers, decision: StorageDecision, stored_headers: Headers
) -> bool:
    """RFC 9110 §13.1.5. No If-Range: true. An entity tag: true when it equals the stored
    ETag by the strong comparison (a weak tag never does). A date: true when it is exactly
    the stored Last-Modified and that is a strong validator (§8.8.2.2: at least one second
    before the stored Date). Anything else, or several lines: false (the whole response)."""
    lines = field_values(request_headers, b"if-range")
    if not lines:
        return True
    if len(lines) != 1:
        return False
    value = lines[0].strip()
    if value.startswith((b'"', b"W/")):
        return strong_match(value, decision.etag)
    since = parse_http_date(value)
    modified = parse_http_date(decision.last_modified or b"")
    sent = parse_http_date(first_value(stored_headers, b"date") or b"")
    if since is None or modified is None or sent is None:
        return False
    return modified == since and modified <= sent - 1
