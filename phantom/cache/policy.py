"""HTTP caching decisions for a shared cache (RFC 9111), without I/O.

Everything here is a pure function of headers, numbers and the times passed in: no asyncio, no
sockets, no clock reads. Headers are sequences of ``(name, value)`` byte tuples with lowercase
names, as h11 delivers them.

The cache walks through three pure steps, in the style of hishel's ``_core/_spec.py``:

* :func:`lookup` (RFC 9111 §4): a request and the stored variants of its URL become
  :class:`Fresh`, :class:`ServeStale`, :class:`Revalidate`, :class:`Miss` or
  :class:`Unsatisfiable` (``only-if-cached`` with nothing usable: 504).
* :func:`storage_decision` (RFC 9111 §3): a response becomes a :class:`StorageDecision` (store
  it, with everything a later hit needs precomputed) or None (pass it on only).
* :func:`revalidation_outcome` (RFC 9111 §4.3.3/§4.3.4) and :func:`invalidation_targets`
  (RFC 9111 §4.4): a 304 updates the entry it validated; an unsafe request invalidates.

Two clocks are involved and kept apart on purpose:

* ``request_time`` / ``response_time`` / the ``now`` of :func:`lookup` and :func:`current_age`
  are readings of the store's clock (monotonic by default). Expiry is computed on that clock,
  so wall-clock jumps never revive or kill entries.
* ``now`` of :func:`storage_decision` is the wall clock (seconds since the epoch) when the
  response head arrived. It is compared only with ``Date``, ``Expires`` and ``Last-Modified``.
"""

from __future__ import annotations

import calendar
import email.utils
import enum
import functools
import math
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Generic, Protocol, TypeVar
from urllib.parse import urlsplit

from . import surrogate as _surrogate
from . import targeted as _targeted

__all__ = [
    "CACHE_NAME",
    "HEURISTIC_MODES",
    "LOOKUP_METHODS",
    "Forward",
    "Fresh",
    "KeyFunction",
    "Lookup",
    "Miss",
    "RequestInfo",
    "Revalidate",
    "ServeStale",
    "StorageDecision",
    "Unsatisfiable",
    "VaryKey",
    "cache_status",
    "conditional_headers",
    "custom_key",
    "current_age",
    "entity_tags",
    "field_values",
    "first_value",
    "format_age",
    "freshened_headers",
    "hit_status",
    "invalidation_targets",
    "lookup",
    "may_serve_stale_on_error",
    "opaque_tag",
    "parse_cache_control",
    "parse_http_date",
    "printable_key",
    "reads_none",
    "revalidation_matches",
    "stored_headers",
    "storage_decision",
    "store_key",
    "vary_key",
]

Headers = Sequence[tuple[bytes, bytes]]

#: The cache name used in Cache-Status (RFC 9211 §2).
CACHE_NAME = "phantom"

#: RFC 9111 §1.2.2: delta-seconds too large to represent are taken as 2^31.
_DELTA_SECONDS_MAX = 2**31

#: Methods answered from the cache (HEAD from a stored GET, RFC 9110 §9.3.2).
LOOKUP_METHODS = (b"GET", b"HEAD")
_STORED_METHOD = b"GET"
#: RFC 9110 §9.2.1: methods that cannot change state; everything else invalidates (RFC 9111 §4.4).
_SAFE_METHODS = frozenset({b"GET", b"HEAD", b"OPTIONS", b"TRACE"})
#: Methods whose responses never invalidate stored ones (RFC 9111 §4.4).
SAFE_METHODS = _SAFE_METHODS

#: RFC 9110 §15.1: status codes defined as heuristically cacheable (206 is never stored:
#: phantom stores whole responses and answers ranges from them, :mod:`.ranges`).
HEURISTIC_STATUSES = frozenset({200, 203, 204, 206, 300, 301, 308, 404, 405, 410, 414, 501})
#: ``cache_heuristic``: which responses without explicit freshness get a heuristic lifetime
#: (RFC 9111 §4.2.2): those with Last-Modified, all of them, or none.
HEURISTIC_MODES = ("last-modified", "always", "off")
#: A request carrying one of these may be answered with a page made for its sender: its
#: response is reused only when the origin says for how long (Varnish's built-in caution).
_PERSONAL_REQUEST_FIELDS = frozenset({b"cookie", b"authorization"})
#: Status codes whose semantics this cache understands (for ``must-understand``, RFC 9111
#: §5.2.2.3): the final ones RFC 9110 §15 defines, minus 206 and 416 (partial responses are not
#: stored) and 304.
UNDERSTOOD_STATUSES = frozenset(
    {200, 201, 202, 203, 204, 205, 300, 301, 302, 303, 307, 308}
    | set(range(400, 418)) - {416}
    | {421, 422, 426}
    | set(range(500, 506))
)
#: RFC 9111 §4.2.2: a typical heuristic is a fraction of the time since Last-Modified.
HEURISTIC_FRACTION = 0.1
#: Fields a 304 never replaces in a stored response (RFC 9111 §3.2): the stored body's framing
#: and encoding belong to the stored bytes.
_NOT_UPDATED_BY_304 = frozenset(
    {b"content-length", b"content-encoding", b"transfer-encoding", b"content-range"}
)


# --------------------------------------------------------------------------- keys


def printable_key(method: bytes, target: bytes) -> str:
    """The human-facing part of a cache key: ``"GET:/path?query"``.

    ``target`` is the request target exactly as sent (path and query). Invalidation patterns
    match this string. A HEAD lookup uses the stored GET, so pass ``b"GET"`` for HEAD requests.
    """
    return f"{method.decode('latin-1')}:{target.decode('latin-1')}"


@dataclass(frozen=True, slots=True)
class RequestInfo:
    """What a custom cache key function (``create_proxy(config, cache_key=fn)``) sees:
    the method (HEAD looks up GET), the path and the query (without ``?``) as sent, and the
    request's header fields (lowercase names, as received)."""

    method: str
    path: str
    query: str
    headers: tuple[tuple[str, str], ...]


#: ``fn(RequestInfo) -> str``: replaces the printable key; patterns of invalidate() match it.
KeyFunction = Callable[[RequestInfo], str]


def custom_key(fn: KeyFunction, target: bytes, headers: Headers) -> tuple[str, str]:
    """The store key from a custom key function: ``("", fn(info))``; the host is in
    ``info.headers`` for functions that want it."""
    path, _, query = target.decode("latin-1").partition("?")
    info = RequestInfo(
        method="GET",
        path=path,
        query=query,
        headers=tuple((n.decode("latin-1"), v.decode("latin-1")) for n, v in headers),
    )
    return ("", fn(info))


_DEFAULT_PORTS = {b"http": ":80", b"https": ":443"}


def store_key(
    host: bytes, method: bytes, target: bytes, scheme: bytes = b"http"
) -> tuple[str, str]:
    """The full cache key: ``(origin, printable key)``.

    The host is lowercased, stripped of surrounding whitespace and of the scheme's default port,
    so ``Example.COM:80`` and ``example.com`` share entries. Other ports are kept as sent. The
    origin is the bare host for http and ``https://host`` for https: the schemes never share
    entries (RFC 9111 §2: the key is the target URI), so a redirect to https stored for an
    http request is never served to an https one.
    """
    if len(host) <= _REMEMBERED_HOST_BYTES:
        return (_remembered_origin(host, scheme), printable_key(method, target))
    return (_origin(host, scheme), printable_key(method, target))


def _origin(host: bytes, scheme: bytes) -> str:
    """The origin part of a store key."""
    name = host.decode("latin-1").strip().lower()
    default_port = _DEFAULT_PORTS.get(scheme, "")
    if default_port and name.endswith(default_port):
        name = name[: -len(default_port)]
    return name if scheme == b"http" else f"{scheme.decode('latin-1')}://{name}"


# Every request of a site repeats its few hosts: each is worked out once. Only host names of
# ordinary length are remembered, so the memory this takes stays small whatever clients send.
_REMEMBERED_HOST_BYTES = 300
_remembered_origin = functools.lru_cache(maxsize=1024)(_origin)


# --------------------------------------------------------------------------- parsing


def field_values(headers: Headers, name: bytes) -> list[bytes]:
    """All field values of ``name`` in order (one per field line)."""
    return [value for field, value in headers if field.lower() == name]


def reads_none(headers: Headers, names: frozenset[bytes]) -> bool:
    """Whether ``headers`` carry none of the fields ``names`` (lowercase)."""
    for field, _ in headers:  # a loop, not any(): this runs on every cache hit
        if field.lower() in names:
            return False
    return True


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
    lines = values if isinstance(values, list | tuple) else list(values)
    if len(lines) == 1 and len(lines[0]) <= _REMEMBERED_DIRECTIVES_BYTES:
        return dict(_remembered_directives(lines[0]))  # a copy: callers may add to it
    return _parse_cache_control(lines)


def _parse_cache_control(values: Iterable[bytes]) -> dict[str, str | None]:
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


# A site's responses repeat a few Cache-Control values (and every relayed or stored response
# has its own read): a one-line value is parsed once. Only values of ordinary length are
# remembered, so the memory this takes stays small whatever backends send.
_REMEMBERED_DIRECTIVES_BYTES = 256
_remembered_directives = functools.lru_cache(maxsize=1024)(
    lambda value: _parse_cache_control((value,))
)


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


_DAY = r"(?:mon|tue|wed|thu|fri|sat|sun)"
_MONTH = r"(?:jan|feb|mar|apr|may|jun|jul|aug|sep|oct|nov|dec)"
_TIME = r"\d\d:\d\d:\d\d"
#: RFC 9110 §5.6.7 HTTP-date: IMF-fixdate, then the obsolete RFC 850 and asctime forms.
#: Case is not held against a date (the suite's "optimal" cases and every browser agree).
_HTTP_DATE = re.compile(
    rf"{_DAY}, \d\d {_MONTH} \d{{4}} {_TIME} gmt"
    rf"|(?:mon|tues|wednes|thurs|fri|satur|sun)day, \d\d-{_MONTH}-\d\d {_TIME} gmt"
    rf"|{_DAY} {_MONTH} (?:\d\d| \d) {_TIME} \d{{4}}",
    re.IGNORECASE,
)


def _expires_date(value: bytes, now: float) -> float | None:
    """An Expires value as a date, or None when it is invalid, which RFC 9111 §5.3 says means
    "already expired". It must be an HTTP-date as RFC 9110 §5.6.7 writes it: no zone but
    GMT, a four-digit year in IMF-fixdate, two-digit hours, one space between the parts.
    (Date and Last-Modified stay lenient: a lenient reading there never makes a response
    fresher than the origin said.)"""
    text = value.strip(b" \t").decode("latin-1")
    return parse_http_date(text, now) if _HTTP_DATE.fullmatch(text) else None


def _utc_year(timestamp: float) -> int:
    try:
        return datetime.fromtimestamp(timestamp, timezone.utc).year
    except (ValueError, OverflowError, OSError):
        return 1970


def _first_date(headers: Headers, name: bytes, now: float) -> float | None:
    """The first ``name`` field line as a date; None when absent or invalid."""
    values = field_values(headers, name)
    return parse_http_date(values[0], now) if values else None


def _age_value(headers: Headers) -> float:
    """RFC 9111 §5.1: the first member of Age; an invalid value is ignored (0)."""
    values = field_values(headers, b"age")
    if not values:
        return 0.0
    first = values[0].split(b",", 1)[0].strip().decode("latin-1")
    if not first or not first.isascii() or not first.isdigit():
        return 0.0
    return float(_delta_seconds(first))




def _request_directives(headers: Headers) -> dict[str, str | None]:
    """Request Cache-Control; ``Pragma: no-cache`` counts as ``no-cache`` only when the request
    has no Cache-Control at all (RFC 9111 §5.4)."""
    lines = field_values(headers, b"cache-control")
    if lines:
        return parse_cache_control(lines)
    pragma = b",".join(field_values(headers, b"pragma")).lower()
    if b"no-cache" in (token.strip() for token in pragma.split(b",")):
        return {"no-cache": None}
    return {}


def _field_names(argument: str | None) -> frozenset[bytes]:
    """The field names of a qualified ``private="..."`` / ``no-cache="..."`` (RFC 9111
    §5.2.2.4, §5.2.2.7), lowercased; empty for the unqualified form."""
    if not argument:
        return frozenset()
    names = (part.strip().lower() for part in argument.split(","))
    return frozenset(name.encode("latin-1") for name in names if name)


# --------------------------------------------------------------------------- Vary

#: The secondary key of a stored response (RFC 9111 §4.1): for each field named by Vary, in
#: name order, the request's normalised value (None when absent). None itself is ``Vary: *``,
#: which no later request matches.
VaryKey = tuple[tuple[bytes, bytes | None], ...] | None


def _vary_names(response_headers: Headers) -> tuple[bytes, ...] | None:
    """Vary's field names, lowercased, de-duplicated and sorted; None for ``*``."""
    names: set[bytes] = set()
    for line in field_values(response_headers, b"vary"):
        for token in line.split(b","):
            name = token.strip(b" \t").lower()
            if name == b"*":
                return None
            if name:
                names.add(name)
    return tuple(sorted(names))


#: Request fields that list preferences with q-values (RFC 9110 §12.5.3, §12.5.4): the case
#: of their tokens, the order of members of equal weight and the spelling of ``q`` carry no
#: meaning, so Vary compares them normalised (RFC 9111 §4.1).
_PREFERENCE_FIELDS = frozenset({b"accept-encoding", b"accept-language"})
_QVALUE = re.compile(rb"0(\.\d{0,3})?|1(\.0{0,3})?")


def _normalised_value(headers: Headers, name: bytes) -> bytes | None:
    """All lines of ``name`` combined into one list, each element trimmed (RFC 9111 §4.1
    allows normalising whitespace and combining lines), preference fields normalised (see
    :func:`_preferences`); None when the field is absent."""
    lines = field_values(headers, name)
    if not lines:
        return None
    combined = b",".join(lines)
    if name in _PREFERENCE_FIELDS:
        if len(combined) <= _REMEMBERED_PREFERENCE_BYTES:
            return _remembered_preferences(combined)
        return _preferences(combined)
    elements = (part.strip(b" \t") for part in combined.split(b","))
    return b",".join(element for element in elements if element)


def _preferences(value: bytes) -> bytes:
    """An Accept-Language / Accept-Encoding value in one spelling per meaning: members
    lowercased and without whitespace, ``q`` written as a number (1 when absent, RFC 9110
    §12.4.2), sorted by weight, members of equal weight left in the order written (servers
    break ties by position: ``fr, en`` and ``en, fr`` may get different languages). So
    ``en-US, fr;q=0.5`` and ``fr;q=0.50,EN-us`` are the same. A member with a malformed or
    unknown parameter is kept as written (but lowercased and without whitespace), weighing
    1."""
    ranked: list[tuple[float, bytes]] = []
    for member in value.lower().split(b","):
        member = b"".join(member.split())
        if not member:
            continue
        token, _, parameter = member.partition(b";")
        weight = 1.0
        if parameter.startswith(b"q=") and _QVALUE.fullmatch(parameter, 2):
            weight = float(parameter[2:])
            member = token
        elif not parameter:
            member = token
        ranked.append((-weight, member))
    ranked.sort(key=lambda pair: pair[0])  # stable: ties keep their order
    return b",".join(
        member if weight == -1.0 else b"%s;q=%g" % (member, -weight) for weight, member in ranked
    )


# Browsers send few distinct values: each is normalised once. Long ones are not remembered, so
# what clients send cannot grow this memory.
_REMEMBERED_PREFERENCE_BYTES = 200
_remembered_preferences = functools.lru_cache(maxsize=1024)(_preferences)


def vary_key(response_headers: Headers, request_headers: Headers) -> VaryKey:
    """The secondary key under which a response to ``request_headers`` is stored."""
    names = _vary_names(response_headers)
    if names is None:
        return None
    return tuple((name, _normalised_value(request_headers, name)) for name in names)


def _vary_matches(stored: VaryKey, request_headers: Headers) -> bool:
    """RFC 9111 §4.1: every field named by the stored Vary has the same normalised value in
    the new request; ``Vary: *`` always fails."""
    if stored is None:
        return False
    return all(_normalised_value(request_headers, name) == value for name, value in stored)


# --------------------------------------------------------------------------- storing


class Forward(str, enum.Enum):
    """Why a request went forward to the origin: the RFC 9211 §2.2 ``fwd`` values."""

    BYPASS = "bypass"  # configured not to use the cache for this request
    METHOD = "method"  # the request method is not cacheable
    URI_MISS = "uri-miss"  # nothing stored under this URL
    VARY_MISS = "vary-miss"  # stored, but no variant matches the request's Vary fields
    MISS = "miss"  # no usable response, no more specific reason
    REQUEST = "request"  # the request's Cache-Control forbade answering from cache
    STALE = "stale"  # stored, but stale (or no-cache): revalidated
    PARTIAL = "partial"  # stored, but partial (phantom stores whole responses only)


@dataclass(frozen=True, slots=True)
class StorageDecision:
    """Everything about a stored response that a lookup needs, computed once at store time.

    ``freshness_lifetime``: seconds fresh, from the response's generation (RFC 9111 §4.2.1);
    ``initial_age``: corrected initial age at response_time (RFC 9111 §4.2.3). ``no_cache``:
    revalidate before every use (§5.2.2.4). ``no_stale``: never served stale (must-revalidate,
    proxy-revalidate, s-maxage: §5.2.2.2, §5.2.2.8, §5.2.2.10). ``stale_while_revalidate`` /
    ``stale_if_error``: windows in seconds after expiry (RFC 5861). ``etag`` /
    ``last_modified``: the validators, as sent. ``shared_auth``: may answer a request carrying
    Authorization (§3.5). ``vary``: the secondary key. ``dropped_fields``: fields a shared
    cache must not store or reuse (qualified private / no-cache).
    """

    freshness_lifetime: float
    initial_age: float
    no_cache: bool = False
    no_stale: bool = False
    stale_while_revalidate: float = 0.0
    stale_if_error: float = 0.0
    etag: bytes | None = None
    last_modified: bytes | None = None
    shared_auth: bool = False
    vary: VaryKey = ()
    dropped_fields: frozenset[bytes] = frozenset()

    @property
    def stale_window(self) -> float:
        """How long after expiry the entry can still serve (stale windows), or revalidate
        (validators: kept until evicted)."""
        if self.etag is not None or self.last_modified is not None:
            return math.inf
        if self.no_stale:
            return 0.0
        return max(self.stale_while_revalidate, self.stale_if_error)


def _is_storable_status(
    status: int, directives: dict[str, str | None], explicit: bool
) -> bool:
    """RFC 9111 §3 for the status code: never 206 (partial: phantom stores whole responses
    only, §3.3) or 304; with ``must-understand``, only understood statuses (§5.2.2.3);
    heuristically cacheable statuses, or any final status with explicit freshness or
    ``public``. A 5xx other than the heuristically cacheable 501 needs explicit freshness
    (``public`` alone does not do): an app's failure is pinned only when the app says for
    how long."""
    if status < 200 or status in (206, 304):
        return False
    if "must-understand" in directives and status not in UNDERSTOOD_STATUSES:
        return False
    if status >= 500 and status != 501:
        return explicit
    return status in HEURISTIC_STATUSES or explicit or "public" in directives


def storage_decision(
    method: bytes,
    status: int,
    request_headers: Headers,
    response_headers: Headers,
    default_ttl: float,
    now: float,
    request_time: float,
    response_time: float,
    *,
    store_set_cookie: bool = False,
    stale_if_error_default: float = 0.0,
    heuristic: str = "last-modified",
    surrogate_control: bool = False,
    cdn_cache_control: bool = False,
) -> StorageDecision | None:
    """Whether a shared cache may store this response (RFC 9111 §3), and what a hit needs.

    None (do not store) when: the method is not GET; the status is not storable (see
    :func:`_is_storable_status`); the request or the response says ``no-store`` (§5.2.1.5,
    §5.2.2.5); the response says unqualified ``private`` (§5.2.2.7); the request carried
    Authorization and the response has none of ``public``, ``s-maxage``, ``must-revalidate``
    (§3.5); the response sets a cookie and does not say ``public`` or ``s-maxage`` (unless
    ``store_set_cookie``: RFC 9111 itself permits storing Set-Cookie, §7.3 warns about it).

    With ``cdn_cache_control``, a valid ``CDN-Cache-Control`` (:mod:`.targeted`, RFC 9213)
    stands for Cache-Control and Pragma: its directives decide, except that Cache-Control's
    ``private`` still keeps the response out (a page for one user is never shared).

    With ``surrogate_control``, the ``Surrogate-Control`` directives addressed to phantom
    (:mod:`.surrogate`, Edge Architecture §3) come first: its ``no-store`` means not stored;
    its ``max-age`` is the freshness lifetime, and Cache-Control's ``no-store``, ``no-cache``,
    ``max-age``, ``s-maxage`` and Expires are then the browsers' business. What protects
    other users still holds: ``private``, Set-Cookie and Authorization as above.

    Freshness: ``s-maxage``, then ``max-age``, then ``Expires - Date`` (§4.2.1); otherwise
    the ``heuristic`` (one of :data:`HEURISTIC_MODES`, see :func:`_heuristic_freshness`), at
    most ``default_ttl``. A response with neither explicit nor heuristic freshness is stored
    only for revalidation (it has a validator), and ``stale_if_error_default`` does not apply
    to it: phantom never makes up a reuse the origin did not allow.

    A response stale on arrival (``max-age=0``, ``no-cache``) is stored only if it can be
    revalidated (it has a validator) or served stale (a stale window), else it is useless.
    ``now``: wall clock at the response head; ``request_time`` / ``response_time``: store clock.
    """
    if method != _STORED_METHOD:
        return None
    request_directives = parse_cache_control(field_values(request_headers, b"cache-control"))
    if "no-store" in request_directives:
        return None
    surrogate = (
        _surrogate.directives(field_values(response_headers, _surrogate.FIELD))
        if surrogate_control
        else {}
    )
    if "no-store" in surrogate:
        return None
    directives = _response_directives(response_headers, cdn_cache_control)
    for_surrogate = "max-age" in surrogate
    if for_surrogate:
        explicit: float | None = float(_delta_seconds(surrogate["max-age"]))
    elif "no-store" in directives:
        return None
    else:
        explicit = _explicit_freshness(directives, response_headers, now)
    if not _is_storable_status(status, directives, explicit is not None):
        return None
    private_fields = _field_names(directives.get("private"))
    if "private" in directives and not private_fields:
        return None
    shared = "public" in directives or "s-maxage" in directives
    shared_auth = shared or "must-revalidate" in directives
    if _has_field(request_headers, b"authorization") and not shared_auth:
        return None
    if _has_field(response_headers, b"set-cookie") and not (shared or store_set_cookie):
        return None

    lifetime = explicit
    if lifetime is None:
        lifetime = _heuristic_freshness(
            heuristic, status, request_headers, response_headers, default_ttl, now
        )
    if lifetime is None:  # no reuse without the origin's word: no default stale window either
        lifetime, stale_if_error_default = 0.0, 0.0
    no_cache_fields = _field_names(directives.get("no-cache"))
    no_cache = "no-cache" in directives and not no_cache_fields and not for_surrogate
    etag = first_value(response_headers, b"etag")
    last_modified = first_value(response_headers, b"last-modified")
    decision = StorageDecision(
        freshness_lifetime=lifetime,
        initial_age=_corrected_initial_age(response_headers, now, request_time, response_time),
        no_cache=no_cache,
        no_stale=(
            "must-revalidate" in directives
            or "proxy-revalidate" in directives
            or "s-maxage" in directives
        ),
        stale_while_revalidate=_window(directives, "stale-while-revalidate", 0.0),
        stale_if_error=_window(directives, "stale-if-error", stale_if_error_default),
        etag=etag,
        last_modified=last_modified,
        shared_auth=shared_auth,
        vary=vary_key(response_headers, request_headers),
        dropped_fields=private_fields | no_cache_fields,
    )
    usable_fresh = decision.freshness_lifetime > decision.initial_age and not no_cache
    if not usable_fresh and decision.stale_window <= 0:
        return None
    return decision


def _response_directives(headers: Headers, cdn_cache_control: bool) -> dict[str, str | None]:
    """The cache directives phantom follows for a response: a valid CDN-Cache-Control's
    (RFC 9213 §2.1: used instead of the other cache-control fields) with Cache-Control's
    ``private`` added, or else Cache-Control's, with Pragma's ``no-cache`` when there is no
    Cache-Control (RFC 9111 §5.4, HTTP/1.0)."""
    lines = field_values(headers, b"cache-control")
    directives = parse_cache_control(lines)
    targeted = (
        _targeted.directives(field_values(headers, _targeted.FIELD)) if cdn_cache_control else None
    )
    if targeted is not None:
        if "private" in directives:
            targeted.setdefault("private", directives["private"])
        return targeted
    if "pragma" not in directives and not lines:
        pragma = b",".join(field_values(headers, b"pragma")).lower()
        if b"no-cache" in (token.strip() for token in pragma.split(b",")):
            directives["no-cache"] = None
    return directives


def first_value(headers: Headers, name: bytes) -> bytes | None:
    """The first ``name`` field line, trimmed; None when absent or empty."""
    values = field_values(headers, name)
    return values[0].strip() if values and values[0].strip() else None


def _window(directives: dict[str, str | None], name: str, default: float) -> float:
    """A stale window directive (RFC 5861 §3, §4) in seconds, or ``default`` when absent."""
    if name not in directives:
        return default
    return float(_delta_seconds(directives[name]))


def _explicit_freshness(
    directives: dict[str, str | None], headers: Headers, now: float
) -> float | None:
    """RFC 9111 §4.2.1 for a shared cache; None when the origin gave no explicit lifetime.
    Invalid numbers count as 0 (stale), an invalid Expires as already past (§5.3)."""
    if "s-maxage" in directives:
        return float(_delta_seconds(directives["s-maxage"]))
    if "max-age" in directives:
        return float(_delta_seconds(directives["max-age"]))
    expires_values = field_values(headers, b"expires")
    if not expires_values:
        return None
    expires = _expires_date(expires_values[0], now)
    if expires is None:  # RFC 9111 §5.3: invalid dates, "0" included, are in the past
        return 0.0
    date = _first_date(headers, b"date", now)
    return max(0.0, expires - (now if date is None else date))


def _heuristic_freshness(
    mode: str,
    status: int,
    request_headers: Headers,
    response_headers: Headers,
    default_ttl: float,
    now: float,
) -> float | None:
    """RFC 9111 §4.2.2 for a response without explicit freshness: ``HEURISTIC_FRACTION`` of
    the time since Last-Modified, never more than ``default_ttl`` (the operator's ceiling);
    without Last-Modified, ``default_ttl`` itself in mode "always" and nothing otherwise.

    None (no heuristic at all) in mode "off", and whatever the mode for a request carrying
    Cookie or Authorization or a response setting a cookie: such a page may be personal, and
    only the origin can say it is not. Statuses that are not heuristically cacheable get 0.
    """
    if (
        mode == "off"
        or not reads_none(request_headers, _PERSONAL_REQUEST_FIELDS)
        or _has_field(response_headers, b"set-cookie")
    ):
        return None
    if status not in HEURISTIC_STATUSES or not default_ttl > 0:
        return 0.0
    last_modified = _first_date(response_headers, b"last-modified", now)
    if last_modified is None:
        return float(default_ttl) if mode == "always" else None
    date = _first_date(response_headers, b"date", now)
    since = (now if date is None else date) - last_modified
    return max(0.0, min(float(default_ttl), since * HEURISTIC_FRACTION))


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


def stored_headers(headers: Headers, decision: StorageDecision) -> list[tuple[bytes, bytes]]:
    """The header fields a stored response keeps: all but Age (recomputed on every hit,
    RFC 9111 §5.1) and the fields named by qualified private / no-cache (§5.2.2.4, §5.2.2.7)."""
    dropped = decision.dropped_fields | {b"age"}
    return [(name, value) for name, value in headers if name.lower() not in dropped]


# --------------------------------------------------------------------------- lookup


class Stored(Protocol):
    """What :func:`lookup` reads from a stored entry."""

    @property
    def decision(self) -> StorageDecision: ...

    @property
    def response_time(self) -> float: ...


E = TypeVar("E", bound=Stored)

# The lookup states are read-only by convention but not frozen: one is built for every request,
# and a frozen dataclass takes three times as long to build.


@dataclass(slots=True)
class Fresh(Generic[E]):
    """Serve ``entry`` from the cache (RFC 9111 §4.2); ``ttl`` is the freshness left."""

    entry: E
    age: float
    ttl: float


@dataclass(slots=True)
class ServeStale(Generic[E]):
    """Serve the stale ``entry``: within ``stale-while-revalidate`` (``refresh``: start one
    background revalidation, RFC 5861 §3) or within the request's ``max-stale`` (§5.2.1.2)."""

    entry: E
    age: float
    ttl: float
    refresh: bool


@dataclass(slots=True)
class Revalidate(Generic[E]):
    """Forward a conditional request built from ``entry``'s validators (RFC 9111 §4.3.1);
    ``reason`` is STALE (expired or no-cache) or REQUEST (the client asked)."""

    entry: E
    age: float
    ttl: float
    reason: Forward
    conditional_headers: tuple[tuple[bytes, bytes], ...]


@dataclass(slots=True)
class Miss:
    """Nothing stored can be used: forward the request as it is."""

    reason: Forward


@dataclass(slots=True)
class Unsatisfiable:
    """``only-if-cached`` and nothing usable is stored: answer 504 (RFC 9111 §5.2.1.7)."""


Lookup = Fresh[E] | ServeStale[E] | Revalidate[E] | Miss | Unsatisfiable


#: The request fields :func:`lookup` reads (directives and Authorization, besides Vary's).
_LOOKUP_FIELDS = frozenset({b"cache-control", b"pragma", b"authorization"})


def lookup(
    method: bytes, request_headers: Headers, variants: Sequence[E], now: float
) -> Lookup[E]:
    """RFC 9111 §4: what to do with a request, given the stored variants of its URL (newest
    first) at store-clock ``now``.

    A variant is selected when its Vary fields match (§4.1); with Authorization only variants
    that allow it (§3.5). Request directives (§5.2.1): ``no-store`` forwards; ``no-cache`` (or
    ``Pragma: no-cache`` without Cache-Control) revalidates; ``max-age`` and ``min-fresh`` make
    a fresh entry unacceptable; ``max-stale`` accepts a stale one (never when the entry says
    must-revalidate / s-maxage / no-cache); ``only-if-cached`` never forwards.
    """
    if method not in LOOKUP_METHODS:
        return Miss(Forward.METHOD)
    if reads_none(request_headers, _LOOKUP_FIELDS):
        # The common case, decided without parsing anything: no request directives and no
        # Authorization, so nothing stored is a miss, and else the newest variant is the one
        # when it has no Vary (§4.1), and it is the answer while fresh (§4.2) unless it
        # demands revalidation.
        if not variants:
            return Miss(Forward.URI_MISS)
        newest = variants[0]
        stored = newest.decision
        if stored.vary == () and not stored.no_cache:
            age = current_age(stored.initial_age, newest.response_time, now)
            ttl = stored.freshness_lifetime - age
            if ttl > 0:
                return Fresh(newest, age, ttl)
    directives = _request_directives(request_headers)
    only_if_cached = "only-if-cached" in directives
    if "no-store" in directives:
        return Unsatisfiable() if only_if_cached else Miss(Forward.REQUEST)
    authorized = _has_field(request_headers, b"authorization")
    entry = next(
        (
            v
            for v in variants
            if _vary_matches(v.decision.vary, request_headers)
            and (v.decision.shared_auth or not authorized)
        ),
        None,
    )
    if entry is None:
        if only_if_cached:
            return Unsatisfiable()
        return Miss(Forward.VARY_MISS if variants else Forward.URI_MISS)
    decision = entry.decision
    age = current_age(decision.initial_age, entry.response_time, now)
    ttl = decision.freshness_lifetime - age

    if "no-cache" in directives:
        return _revalidate(entry, age, ttl, Forward.REQUEST, only_if_cached)
    if decision.no_cache:
        return _revalidate(entry, age, ttl, Forward.STALE, only_if_cached)
    if "max-age" in directives and age > _delta_seconds(directives["max-age"]):
        return _revalidate(entry, age, ttl, Forward.REQUEST, only_if_cached)
    if ttl > 0:
        if "min-fresh" in directives and ttl < _delta_seconds(directives["min-fresh"]):
            return _revalidate(entry, age, ttl, Forward.REQUEST, only_if_cached)
        return Fresh(entry, age, ttl)
    if not decision.no_stale:
        if "max-stale" in directives:
            argument = directives["max-stale"]
            allowed = math.inf if argument is None else _delta_seconds(argument)
            if -ttl <= allowed:
                return ServeStale(entry, age, ttl, refresh=False)
        if -ttl < decision.stale_while_revalidate:
            return ServeStale(entry, age, ttl, refresh=True)
    return _revalidate(entry, age, ttl, Forward.STALE, only_if_cached)


def _revalidate(
    entry: E, age: float, ttl: float, reason: Forward, only_if_cached: bool
) -> Revalidate[E] | Unsatisfiable:
    if only_if_cached:
        return Unsatisfiable()
    return Revalidate(entry, age, ttl, reason, conditional_headers(entry.decision))


def conditional_headers(decision: StorageDecision) -> tuple[tuple[bytes, bytes], ...]:
    """Validators for a revalidation request (RFC 9111 §4.3.1): the stored ETag as
    If-None-Match and the stored Last-Modified as If-Modified-Since."""
    fields: list[tuple[bytes, bytes]] = []
    if decision.etag is not None:
        fields.append((b"if-none-match", decision.etag))
    if decision.last_modified is not None:
        fields.append((b"if-modified-since", decision.last_modified))
    return tuple(fields)


# --------------------------------------------------------------------------- revalidation


def opaque_tag(tag: bytes) -> bytes:
    """An entity tag without its weakness prefix, for the weak comparison (RFC 9110 §8.8.3.2)."""
    tag = tag.strip()
    return tag[2:] if tag.startswith(b"W/") else tag


def revalidation_matches(decision: StorageDecision, response_headers: Headers) -> bool:
    """RFC 9111 §4.3.4: whether a 304 (or a HEAD response, §4.3.5) selects the stored
    response it revalidated: by ETag when the new response has one, else by Last-Modified when
    it has one, else yes (there is only the one stored response we asked about)."""
    etag = first_value(response_headers, b"etag")
    if etag is not None:
        return decision.etag is not None and opaque_tag(etag) == opaque_tag(decision.etag)
    last_modified = first_value(response_headers, b"last-modified")
    if last_modified is not None:
        return decision.last_modified == last_modified
    return True


def freshened_headers(stored: Headers, new: Headers) -> list[tuple[bytes, bytes]]:
    """RFC 9111 §3.2: the stored header fields updated from a 304 or HEAD response: every
    field the new response carries replaces all stored lines of that name, except the stored
    body's own framing and coding (Content-Length, Content-Encoding, Transfer-Encoding,
    Content-Range). The new Age is taken over so that :func:`storage_decision` computes the
    refreshed age; :func:`stored_headers` drops it again. Order: stored fields first, new ones
    appended."""
    replaced = {name.lower() for name, _ in new} - _NOT_UPDATED_BY_304
    kept = [(name, value) for name, value in stored if name.lower() not in replaced]
    return kept + [(name, value) for name, value in new if name.lower() in replaced]


def may_serve_stale_on_error(decision: StorageDecision, age: float) -> bool:
    """RFC 5861 §4 ``stale-if-error`` (or the operator's default window): the stale response
    may stand in for a 5xx or an unreachable origin while ``age`` is within the window; never
    when the response demanded revalidation (must-revalidate, proxy-revalidate, s-maxage,
    no-cache: RFC 9111 §4.2.4)."""
    if decision.no_stale or decision.no_cache:
        return False
    return age - decision.freshness_lifetime <= decision.stale_if_error


def entity_tags(line: bytes) -> list[bytes]:
    """The members of an If-None-Match line (RFC 9110 §8.8.3): ``*`` or entity tags, which
    may contain commas inside their quotes, so the line is not simply split on commas."""
    tags: list[bytes] = []
    i, n = 0, len(line)
    while i < n:
        while i < n and line[i : i + 1] in (b" ", b"\t", b","):
            i += 1
        if i >= n:
            break
        start = i
        if line.startswith(b"W/", i):
            i += 2
        if line[i : i + 1] == b'"':
            end = line.find(b'"', i + 1)
            i = n if end < 0 else end + 1
        else:
            while i < n and line[i : i + 1] != b",":
                i += 1
        tags.append(line[start:i].strip())
    return tags


# --------------------------------------------------------------------------- invalidation


def invalidation_targets(
    method: bytes,
    status: int,
    host: bytes,
    target: bytes,
    response_headers: Headers,
    scheme: bytes = b"http",
) -> list[bytes]:
    """RFC 9111 §4.4: the request targets whose stored responses go after a response to an
    unsafe request.

    Only for non-error responses (2xx, 3xx) to methods other than GET, HEAD, OPTIONS, TRACE
    (unknown methods included): the target URI, plus Location and Content-Location when they
    point at the same origin (an absolute path, or an absolute http URL with this host).
    """
    if method in _SAFE_METHODS or not 200 <= status < 400:
        return []
    targets = [target]
    own_origin = store_key(host, _STORED_METHOD, b"", scheme)[0]
    for name in (b"location", b"content-location"):
        value = first_value(response_headers, name)
        if value is None:
            continue
        reference = _same_origin_target(value, own_origin)
        if reference is not None:
            targets.append(reference)
    return targets


def _same_origin_target(reference: bytes, own_origin: str) -> bytes | None:
    """The path?query of ``reference`` when it names this origin, else None."""
    try:
        parts = urlsplit(reference.decode("latin-1"))
    except ValueError:
        return None
    if parts.scheme or parts.netloc:
        scheme = parts.scheme.lower().encode("latin-1")
        if scheme not in _DEFAULT_PORTS:
            return None
        netloc = parts.netloc.encode("latin-1")
        if store_key(netloc, _STORED_METHOD, b"", scheme)[0] != own_origin:
            return None
    if not parts.path.startswith("/"):
        return None  # relative to the request path: too rare to resolve, never guessed
    query = f"?{parts.query}" if parts.query else ""
    return (parts.path + query).encode("latin-1")


# --------------------------------------------------------------------------- Age


def current_age(entry_initial_age: float, entry_response_time: float, now: float) -> float:
    """RFC 9111 §4.2.3 ``current_age = corrected_initial_age + resident_time``.

    All times on the store's clock.
    """
    return entry_initial_age + max(0.0, now - entry_response_time)


def format_age(age: float) -> bytes:
    """An Age field value (RFC 9111 §5.1): whole seconds, rounded down, capped at 2^31."""
    if not age > 0:  # also catches NaN
        return b"0"
    return b"%d" % min(age, _DELTA_SECONDS_MAX)  # %d truncates: the floor of a positive age


# --------------------------------------------------------------------------- Cache-Status


def cache_status(
    *,
    hit: bool = False,
    fwd: Forward | None = None,
    fwd_status: int | None = None,
    stored: bool = False,
    collapsed: bool = False,
    ttl: float | None = None,
    detail: str | None = None,
) -> bytes:
    """A Cache-Status member (RFC 9211 §2): ``b"phantom; hit; ttl=42"``,
    ``b"phantom; fwd=stale; fwd-status=304; stored; ttl=60"``. ``ttl``: freshness left (negative
    when stale); ``detail``: a token such as ``stale-if-error``."""
    parts = [CACHE_NAME]
    if hit:
        parts.append("hit")
    if fwd is not None:
        parts.append(f"fwd={Forward(fwd).value}")
    if fwd_status is not None:
        parts.append(f"fwd-status={fwd_status}")
    if stored:
        parts.append("stored")
    if collapsed:
        parts.append("collapsed")
    if ttl is not None:
        parts.append(f"ttl={_sf_integer(ttl)}")
    if detail is not None:
        parts.append(f"detail={detail}")
    return "; ".join(parts).encode("ascii")


@functools.lru_cache(maxsize=1024)
def forwarded_status(fwd: Forward, fwd_status: int, stored: bool) -> bytes:
    """``cache_status(fwd=fwd, fwd_status=fwd_status, stored=stored)``, for every relayed
    response: the few values there are are each formatted once."""
    return cache_status(fwd=fwd, fwd_status=fwd_status, stored=stored)


_SF_INTEGER_LIMIT = 999_999_999_999_999


def hit_status(ttl: float) -> bytes:
    """``cache_status(hit=True, ttl=ttl)``, for the cache-hit hot path: ttl only changes
    once a second, so each value is formatted once."""
    if 0 <= ttl < _SF_INTEGER_LIMIT:  # a hit's ttl is positive: no NaN, infinity or cap
        return _hit_status(int(ttl))  # int() of a positive number is its floor
    return _hit_status(_sf_integer(ttl))


@functools.lru_cache(maxsize=1024)
def _hit_status(ttl: int) -> bytes:
    return cache_status(hit=True, ttl=ttl)


def _sf_integer(seconds: float) -> int:
    """Whole seconds for a structured-field integer (RFC 8941 §3.3.1: at most 15 digits)."""
    if math.isnan(seconds):
        return 0
    limit = _SF_INTEGER_LIMIT
    if math.isinf(seconds):
        return limit if seconds > 0 else -limit
    return max(-limit, min(limit, math.floor(seconds)))
