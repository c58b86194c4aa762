"""HTTP caching decisions for a shared cache (RFC 9111), without I/O.

Everything here is a pure function of headers, numbers and the times passed in: no asyncio, no
sockets, no clock reads. Headers are sequences of ``(name, value)`` byte tuples with lowercase
names, as h11 delivers them.

Two clocks are involved and kept apart on purpose:

* ``request_time`` / ``response_time`` / ``now`` of :func:`current_age` are readings of the
  store's clock (monotonic by default, see :class:`phantom.cache.store.CacheStore`). Expiry is
  computed on that clock, so wall-clock jumps never revive or kill entries.
* ``now`` of :func:`storage_decision` is the wall clock (seconds since the epoch, ``time.time()``)
  when the response head arrived. It is compared only with the ``Date`` and ``Expires`` fields,
  which are wall-clock times.

Scope of this version: complete ``200`` responses to ``GET`` are stored; no revalidation, no
``Vary`` keying (responses carrying ``Vary`` are not stored yet), no stale serving. The shapes
(:class:`StorageDecision`, :class:`Forward`) are meant to grow into the rest of RFC 9111.
"""

from __future__ import annotations

import calendar
import email.utils
import enum
import math
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone

__all__ = [
    "CACHE_NAME",
    "Forward",
    "StorageDecision",
    "cache_status_forward",
    "cache_status_hit",
    "current_age",
    "format_age",
    "is_cacheable_request",
    "parse_cache_control",
    "parse_http_date",
    "printable_key",
    "request_forward_reason",
    "storage_decision",
    "store_key",
]

Headers = Sequence[tuple[bytes, bytes]]

#: The cache name used in Cache-Status (RFC 9211 §2).
CACHE_NAME = "phantom"

#: RFC 9111 §1.2.2: delta-seconds too large to represent are taken as 2^31.
_DELTA_SECONDS_MAX = 2**31

_LOOKUP_METHODS = (b"GET", b"HEAD")
_STORED_METHOD = b"GET"
_STORED_STATUS = 200


# --------------------------------------------------------------------------- keys


def printable_key(method: bytes, target: bytes) -> str:
    """The human-facing part of a cache key: ``"GET:/path?query"``.

    ``target`` is the request target exactly as sent (path and query). Invalidation patterns
    match this string. A HEAD lookup uses the stored GET, so pass ``b"GET"`` for HEAD requests.
    """
    return f"{method.decode('latin-1')}:{target.decode('latin-1')}"


def store_key(host: bytes, method: bytes, target: bytes) -> tuple[str, str]:
    """The full cache key: ``(normalised host, printable key)``.

    The host is lowercased, stripped of surrounding whitespace and of a default ``:80`` port, so
    ``Example.COM:80`` and ``example.com`` share entries. Other ports are kept as sent.
    """
    name = host.decode("latin-1").strip().lower()
    if name.endswith(":80"):
        name = name[:-3]
    return (name, printable_key(method, target))


# --------------------------------------------------------------------------- parsing


def _values(headers: Headers, name: bytes) -> list[bytes]:
    """All field values of ``name`` in order (one per field line)."""
    return [value for field, value in headers if field.lower() == name]


def _has_field(headers: Headers, name: bytes) -> bool:
    return any(field.lower() == name for field, _ in headers)


def parse_cache_control(values: Iterable[bytes]) -> dict[str, str | None]:
    """Parse Cache-Control field lines into ``{directive: argument or None}``.

    RFC 9111 §5.2: directive names are case-insensitive tokens (returned lowercase); arguments
    may be tokens or quoted strings (returned unquoted, backslash escapes resolved); commas
    inside quoted strings do not split; empty list elements and surrounding whitespace are
    ignored. When a directive appears more than once, across lines or within one, the first
    occurrence wins (RFC 9111 §4.2.1). Never raises; malformed input yields odd directive names
    that simply match nothing.
    """
    result: dict[str, str | None] = {}
    for raw in values:
        text = raw.decode("latin-1")
        i, n = 0, len(text)
        while i < n:
            j = i
            while j < n and text[j] not in "=,":
                j += 1
            name = text[i:j].strip(" \t").lower()
            argument: str | None = None
            i = j
            if i < n and text[i] == "=":
                i += 1
                while i < n and text[i] in " \t":
                    i += 1
                if i < n and text[i] == '"':
                    i += 1
                    chars: list[str] = []
                    while i < n and text[i] != '"':
                        if text[i] == "\\" and i + 1 < n:
                            i += 1
                        chars.append(text[i])
                        i += 1
                    argument = "".join(chars)
                    while i < n and text[i] != ",":  # ignore junk after the closing quote
                        i += 1
                else:
                    j = i
                    while j < n and text[j] != ",":
                        j += 1
                    argument = text[i:j].strip(" \t")
                    i = j
            i += 1  # past the comma
            if name and name not in result:
                result[name] = argument
    return result


def _delta_seconds(argument: str | None) -> int:
    """RFC 9111 §1.2.2 delta-seconds. Invalid (missing, signed, fractional, non-digit) -> 0,
    so the response is treated as stale (RFC 9111 §4.2.1); huge values are capped at 2^31."""
    if argument is None or not argument or not argument.isascii() or not argument.isdigit():
        return 0
    if len(argument) > 10:
        return _DELTA_SECONDS_MAX
    return min(int(argument), _DELTA_SECONDS_MAX)


_RFC850_YEAR = re.compile(r"\d{1,2}-[A-Za-z]{3}-(\d{2})(?!\d)")


def parse_http_date(value: bytes | str, now: float | None = None) -> float | None:
    """An HTTP-date as seconds since the epoch, or None when it is not a valid date.

    Accepts IMF-fixdate, the obsolete RFC 850 and asctime formats (RFC 9110 §5.6.7) and the
    other variants ``email.utils`` understands; a missing zone means GMT. An RFC 850 two-digit
    year that would lie more than 50 years after ``now`` (wall clock) is taken as the most recent
    past year with those digits (RFC 9110 §5.6.7). Never raises.
    """
    try:
        text = value.decode("latin-1") if isinstance(value, bytes) else value
        if not text.isascii():  # HTTP-date is ASCII (RFC 9110 §5.6.7)
            return None
        parsed = email.utils.parsedate_tz(text.strip())
        if parsed is None:
            return None
        year, month, day, hour, minute, second = parsed[:6]
        two_digit = _RFC850_YEAR.search(text)
        if two_digit is not None and now is not None:
            current_year = _utc_year(now)
            year = current_year - current_year % 100 + int(two_digit.group(1))
            if year > current_year + 50:
                year -= 100
        second = min(second, 59)  # a leap second is not worth rejecting the date over
        if not (1 <= month <= 12 and 1 <= day <= calendar.monthrange(year, month)[1]):
            return None
        if not (0 <= hour <= 23 and 0 <= minute <= 59 and 0 <= second <= 59):
            return None
        if not 1 <= year <= 9999:
            return None
        offset = parsed[9] or 0
        return float(calendar.timegm((year, month, day, hour, minute, second, 0, 1, 0)) - offset)
    except (ValueError, TypeError, OverflowError, IndexError):
        return None


def _utc_year(timestamp: float) -> int:
    try:
        return datetime.fromtimestamp(timestamp, timezone.utc).year
    except (ValueError, OverflowError, OSError):
        return 1970


def _first_date(headers: Headers, name: bytes, now: float) -> float | None:
    """The first ``name`` field line as a date; None when absent or invalid."""
    values = _values(headers, name)
    return parse_http_date(values[0], now) if values else None


def _age_value(headers: Headers) -> float:
    """RFC 9111 §5.1: the first member of Age; an invalid value is ignored (0)."""
    values = _values(headers, b"age")
    if not values:
        return 0.0
    first = values[0].split(b",", 1)[0].strip().decode("latin-1")
    if not first or not first.isascii() or not first.isdigit():
        return 0.0
    return float(_delta_seconds(first))


# --------------------------------------------------------------------------- requests


class Forward(str, enum.Enum):
    """Why a request went forward to the origin: the RFC 9211 §2.2 ``fwd`` values."""

    BYPASS = "bypass"  # configured not to use the cache for this request
    METHOD = "method"  # the request method is not cacheable
    URI_MISS = "uri-miss"  # nothing stored under this key
    VARY_MISS = "vary-miss"  # stored, but Vary selected none (later issue)
    MISS = "miss"  # no usable response, no more specific reason
    REQUEST = "request"  # the request's Cache-Control forbade answering from cache
    STALE = "stale"  # stored, but stale (later issue: revalidation)
    PARTIAL = "partial"  # stored, but partial (later issue: ranges)


def is_cacheable_request(method: bytes, headers: Headers) -> bool:
    """Whether the cache takes part in this request at all.

    GET and HEAD (HEAD is answered from a stored GET); a request with ``Cache-Control:
    no-store`` is not (RFC 9111 §5.2.1.5). True does not mean the cache may answer: see
    :func:`request_forward_reason` (``no-cache`` forwards but may still store the response).
    """
    if method not in _LOOKUP_METHODS:
        return False
    return "no-store" not in parse_cache_control(_values(headers, b"cache-control"))


def request_forward_reason(method: bytes, headers: Headers) -> Forward | None:
    """None when the cache may answer this request; otherwise why it must go forward.

    ``Forward.METHOD`` for methods other than GET/HEAD; ``Forward.REQUEST`` when the request
    carries ``Cache-Control: no-cache`` (RFC 9111 §5.2.1.4: no reuse without revalidation, which
    this version does by forwarding) or ``no-store`` (RFC 9111 §5.2.1.5).
    """
    if method not in _LOOKUP_METHODS:
        return Forward.METHOD
    directives = parse_cache_control(_values(headers, b"cache-control"))
    if "no-cache" in directives or "no-store" in directives:
        return Forward.REQUEST
    return None


# --------------------------------------------------------------------------- responses


@dataclass(frozen=True, slots=True)
class StorageDecision:
    """What the cache needs to keep about a storable response.

    ``freshness_lifetime``: seconds the response is fresh for, measured from its generation at
    the origin (RFC 9111 §4.2.1). ``initial_age``: the corrected initial age at ``response_time``
    (RFC 9111 §4.2.3). The response is fresh while ``current_age < freshness_lifetime``.
    """

    freshness_lifetime: float
    initial_age: float


def storage_decision(
    method: bytes,
    status: int,
    request_headers: Headers,
    response_headers: Headers,
    default_ttl: float,
    now: float,
    request_time: float,
    response_time: float,
) -> StorageDecision | None:
    """Whether a shared cache may store this response (RFC 9111 §3), and for how long.

    Returns None (do not store) unless the method is GET and the status 200; when the request or
    the response says ``no-store``, or the response says ``private`` or ``no-cache`` (stored only
    once revalidation exists); when the response carries ``Vary`` (not keyed yet); when the
    request carried ``Authorization`` (RFC 9111 §3.5) or the response carries ``Set-Cookie``,
    unless the response has ``public`` or ``s-maxage``. Explicit freshness (s-maxage, then
    max-age, then Expires - Date) always wins; ``default_ttl`` is the heuristic lifetime used
    only when the origin gave none (RFC 9111 §4.2.2), and 0 means such responses are not stored.

    A response already stale on arrival (``max-age=0``, an invalid Expires, an Age beyond the
    lifetime) is not stored either: without revalidation it could never be reused. So a
    decision means "store this", and ``stored`` in Cache-Status can be sent before the body;
    ``CacheStore.put`` may still refuse it for size.

    ``now``: the wall clock (``time.time()``) when the response head arrived, compared with
    Date/Expires only. ``request_time`` / ``response_time``: the store's clock when the request
    was sent and the response head received.
    """
    if method != _STORED_METHOD or status != _STORED_STATUS:
        return None
    if "no-store" in parse_cache_control(_values(request_headers, b"cache-control")):
        return None
    directives = parse_cache_control(_values(response_headers, b"cache-control"))
    if "no-store" in directives or "private" in directives or "no-cache" in directives:
        return None
    if any(value.strip(b" \t,") for value in _values(response_headers, b"vary")):
        return None
    shared_allowed = "public" in directives or "s-maxage" in directives
    if not shared_allowed and (
        _has_field(request_headers, b"authorization") or _has_field(response_headers, b"set-cookie")
    ):
        return None

    lifetime = _explicit_freshness(directives, response_headers, now)
    if lifetime is None:
        if not default_ttl > 0:
            return None
        lifetime = float(default_ttl)
    initial_age = _corrected_initial_age(response_headers, now, request_time, response_time)
    if not lifetime > initial_age:
        return None  # stale on arrival: only worth storing once revalidation exists
    return StorageDecision(freshness_lifetime=lifetime, initial_age=initial_age)


def _explicit_freshness(
    directives: dict[str, str | None], headers: Headers, now: float
) -> float | None:
    """RFC 9111 §4.2.1 for a shared cache; None when the origin gave no explicit lifetime."""
    if "s-maxage" in directives:
        return float(_delta_seconds(directives["s-maxage"]))
    if "max-age" in directives:
        return float(_delta_seconds(directives["max-age"]))
    expires_values = _values(headers, b"expires")
    if not expires_values:
        return None
    expires = parse_http_date(expires_values[0], now)
    if expires is None:  # RFC 9111 §5.3: invalid dates, "0" included, are in the past
        return 0.0
    date = _first_date(headers, b"date", now)
    return max(0.0, expires - (now if date is None else date))


def _corrected_initial_age(
    headers: Headers, now: float, request_time: float, response_time: float
) -> float:
    """RFC 9111 §4.2.3 ``corrected_initial_age``; a missing or invalid Date counts as ``now``
    (RFC 9110 §6.6.1), so apparent_age is 0 then."""
    date = _first_date(headers, b"date", now)
    apparent_age = max(0.0, now - (now if date is None else date))
    response_delay = max(0.0, response_time - request_time)
    corrected_age_value = _age_value(headers) + response_delay
    return max(apparent_age, corrected_age_value)


def current_age(entry_initial_age: float, entry_response_time: float, now: float) -> float:
    """RFC 9111 §4.2.3 ``current_age = corrected_initial_age + resident_time``.

    All times on the store's clock.
    """
    return entry_initial_age + max(0.0, now - entry_response_time)


def format_age(age: float) -> bytes:
    """An Age field value (RFC 9111 §5.1): whole seconds, rounded down, capped at 2^31."""
    if not age > 0:  # also catches NaN
        return b"0"
    return str(min(math.floor(age), _DELTA_SECONDS_MAX)).encode("ascii")


# --------------------------------------------------------------------------- Cache-Status


def cache_status_hit(ttl: float) -> bytes:
    """Cache-Status value for an answer from cache (RFC 9211 §2.1, §2.4):
    ``b"phantom; hit; ttl=42"``. ``ttl`` is the remaining freshness in seconds, rounded down."""
    return f"{CACHE_NAME}; hit; ttl={_sf_integer(ttl)}".encode("ascii")


def cache_status_forward(
    reason: Forward, *, stored: bool = False, ttl: float | None = None
) -> bytes:
    """Cache-Status value for a forwarded request (RFC 9211 §2.2, §2.5):
    ``b"phantom; fwd=uri-miss; stored"``. ``stored``: the response was stored; ``ttl``: the
    freshness left of a stored response that was involved (e.g. stale, later issue)."""
    parts = [CACHE_NAME, f"fwd={Forward(reason).value}"]
    if ttl is not None:
        parts.append(f"ttl={_sf_integer(ttl)}")
    if stored:
        parts.append("stored")
    return "; ".join(parts).encode("ascii")


def _sf_integer(seconds: float) -> int:
    """Whole seconds for a structured-field integer (RFC 8941 §3.3.1: at most 15 digits)."""
    if math.isnan(seconds):
        return 0
    limit = 999_999_999_999_999
    if math.isinf(seconds):
        return limit if seconds > 0 else -limit
    return max(-limit, min(limit, math.floor(seconds)))
