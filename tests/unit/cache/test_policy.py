"""phantom.cache.policy: pure RFC 9111 decisions, driven by explicit times (no real clock).

Grouped like the cache's states: keys, parsing, request (lookup) decisions, storage decisions,
freshness, age, Cache-Status. Every test names the RFC section it checks.
"""

from __future__ import annotations

import email.utils
from collections.abc import Sequence

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from phantom.cache import policy
from phantom.cache.policy import Forward, StorageDecision

Headers = Sequence[tuple[bytes, bytes]]

WALL = 1_700_000_000.0  # wall clock (epoch seconds) when the response head arrived
MONO = 5_000.0  # the store's monotonic clock at the same moment


def http_date(timestamp: float) -> bytes:
    return email.utils.formatdate(timestamp, usegmt=True).encode("ascii")


def decide(
    response_headers: Headers = (),
    request_headers: Headers = (),
    *,
    method: bytes = b"GET",
    status: int = 200,
    default_ttl: float = 60.0,
    now: float = WALL,
    request_time: float = MONO,
    response_time: float = MONO,
) -> StorageDecision | None:
    return policy.storage_decision(
        method,
        status,
        request_headers,
        response_headers,
        default_ttl,
        now,
        request_time,
        response_time,
    )


def lifetime(response_headers: Headers, default_ttl: float = 60.0) -> float | None:
    decision = decide(response_headers, default_ttl=default_ttl)
    return None if decision is None else decision.freshness_lifetime


# --------------------------------------------------------------------------- keys


def test_printable_key_is_method_colon_target_as_sent() -> None:
    """RFC 9111 §2: the primary cache key is the request method and target URI."""
    assert policy.printable_key(b"GET", b"/api/x?a=1") == "GET:/api/x?a=1"
    assert policy.printable_key(b"GET", b"/a/../b%2F?") == "GET:/a/../b%2F?"


def test_store_key_normalises_host_case_and_default_port() -> None:
    """RFC 9110 §4.2.3: scheme and host are case-insensitive and the default port is
    equivalent to its absence, so these share one entry."""
    expected = ("example.com", "GET:/x")
    assert policy.store_key(b"Example.COM:80", b"GET", b"/x") == expected
    assert policy.store_key(b"example.com", b"GET", b"/x") == expected
    assert policy.store_key(b"example.com:8080", b"GET", b"/x") == ("example.com:8080", "GET:/x")
    assert policy.store_key(b"[::1]:80", b"GET", b"/x") == ("[::1]", "GET:/x")


def test_store_key_keeps_target_case() -> None:
    """RFC 9110 §4.2.3: the path is case-sensitive; only the host is normalised."""
    assert policy.store_key(b"h", b"GET", b"/A?B=C") == ("h", "GET:/A?B=C")


# --------------------------------------------------------------------------- Cache-Control


def test_cache_control_names_are_case_insensitive() -> None:
    """RFC 9111 §5.2: cache directives are compared case-insensitively."""
    assert policy.parse_cache_control([b"No-Store, MAX-AGE=5"]) == {
        "no-store": None,
        "max-age": "5",
    }


def test_cache_control_whitespace_and_empty_elements() -> None:
    """RFC 9110 §5.6.1: list elements may be empty and surrounded by optional whitespace."""
    assert policy.parse_cache_control([b" , max-age=5 ,, \tpublic , "]) == {
        "max-age": "5",
        "public": None,
    }


def test_cache_control_quoted_values_keep_commas_and_escapes() -> None:
    """RFC 9111 §5.2 and RFC 9110 §5.6.4: arguments may be quoted strings with quoted-pairs."""
    parsed = policy.parse_cache_control([b'no-cache="set-cookie, x-a", ext="a\\"b", max-age=3'])
    assert parsed == {"no-cache": "set-cookie, x-a", "ext": 'a"b', "max-age": "3"}


def test_cache_control_lines_combine_and_first_occurrence_wins() -> None:
    """RFC 9111 §4.2.1: with several values for one directive the first occurrence is used;
    RFC 9110 §5.3: several field lines form one list."""
    parsed = policy.parse_cache_control([b"max-age=10, max-age=100", b"MAX-AGE=1, s-maxage=7"])
    assert parsed == {"max-age": "10", "s-maxage": "7"}


def test_cache_control_unterminated_quote_does_not_raise() -> None:
    """RFC 9111 §5.2: malformed field values must not break the cache."""
    assert policy.parse_cache_control([b'private="set-cookie, max-age=5']) == {
        "private": "set-cookie, max-age=5"
    }


@settings(max_examples=300, deadline=None)
@given(st.lists(st.binary(max_size=60), max_size=4))
def test_cache_control_parser_never_raises(values: list[bytes]) -> None:
    """RFC 9111 §5.2: any field value is parsed without error; names come back lowercase."""
    parsed = policy.parse_cache_control(values)
    assert all(name == name.lower() and name for name in parsed)


# --------------------------------------------------------------------------- dates


IMF = 784111777.0  # Sun, 06 Nov 1994 08:49:37 GMT


@pytest.mark.parametrize(
    "value",
    [
        b"Sun, 06 Nov 1994 08:49:37 GMT",
        b"Sunday, 06-Nov-94 08:49:37 GMT",
        b"Sun Nov  6 08:49:37 1994",
    ],
)
def test_http_date_three_formats(value: bytes) -> None:
    """RFC 9110 §5.6.7: recipients accept IMF-fixdate and the obsolete RFC 850 and asctime
    formats."""
    assert policy.parse_http_date(value, WALL) == IMF


@pytest.mark.parametrize(
    "value",
    [
        b"0",
        b"",
        b"-1",
        b"tomorrow",
        b"Sun, 31 Feb 1994 08:49:37 GMT",
        b"Sun, 06 Nov 1994 25:49:37 GMT",
        b"Sun, 06 Nov 99999 08:49:37 GMT",
        "Sun, 06 Nov 1994 08:49:37 GMT\u00e9".encode(),
    ],
)
def test_http_date_invalid_is_none(value: bytes) -> None:
    """RFC 9111 §5.3: invalid dates (e.g. "0") are recognised as invalid, not guessed at."""
    assert policy.parse_http_date(value, WALL) is None


def test_http_date_rfc850_two_digit_year_fifty_year_rule() -> None:
    """RFC 9110 §5.6.7: an RFC 850 year more than 50 years in the future is the most recent
    past year with the same last two digits."""
    now_2025 = 1_750_000_000.0  # June 2025
    assert policy.parse_http_date(b"Sunday, 06-Nov-94 08:49:37 GMT", now_2025) == IMF
    in_2069 = policy.parse_http_date(b"Wednesday, 01-Jan-69 00:00:00 GMT", now_2025)
    assert in_2069 == policy.parse_http_date(b"Tue, 01 Jan 2069 00:00:00 GMT")


def test_http_date_numeric_zone_is_applied() -> None:
    """RFC 9110 §5.6.7: HTTP-dates are GMT; a lenient parse of a zone offset must still
    convert to the right instant rather than ignore it."""
    assert policy.parse_http_date(b"Sun, 06 Nov 1994 09:49:37 +0100") == IMF


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=60))
def test_http_date_parser_never_raises(value: bytes) -> None:
    """RFC 9110 §5.6.7: any Date/Expires value is either a date or invalid, never an error."""
    result = policy.parse_http_date(value, WALL)
    assert result is None or isinstance(result, float)


# --------------------------------------------------------------------------- requests


@pytest.mark.parametrize(
    ("method", "headers", "expected"),
    [
        (b"GET", [], True),
        (b"HEAD", [], True),
        (b"POST", [], False),
        (b"get", [], False),
        (b"GET", [(b"cache-control", b"no-store")], False),
        (b"GET", [(b"cache-control", b"no-cache")], True),
    ],
)
def test_is_cacheable_request(method: bytes, headers: Headers, expected: bool) -> None:
    """RFC 9111 §3 and §5.2.1.5: only GET (HEAD from a stored GET) involves the cache; request
    no-store keeps the cache out; methods are case-sensitive (RFC 9110 §9.1)."""
    assert policy.is_cacheable_request(method, headers) is expected


@pytest.mark.parametrize(
    ("method", "headers", "expected"),
    [
        (b"GET", [], None),
        (b"HEAD", [(b"cache-control", b"max-age=60")], None),
        (b"POST", [], Forward.METHOD),
        (b"DELETE", [], Forward.METHOD),
        (b"GET", [(b"cache-control", b"No-Cache")], Forward.REQUEST),
        (b"GET", [(b"cache-control", b"no-store")], Forward.REQUEST),
    ],
)
def test_request_forward_reason(method: bytes, headers: Headers, expected: Forward | None) -> None:
    """RFC 9111 §4 and §5.2.1.4: a stored response is not used for an unsafe method or when the
    request says no-cache / no-store; RFC 9211 §2.2 names the reason."""
    assert policy.request_forward_reason(method, headers) is expected


# --------------------------------------------------------------------------- storing


def test_plain_200_get_is_stored_with_default_ttl() -> None:
    """RFC 9111 §3 and §4.2.2: 200 is heuristically cacheable; the configured lifetime is the
    heuristic."""
    assert decide([(b"content-type", b"text/plain")]) == StorageDecision(60.0, 0.0)


@pytest.mark.parametrize("method", [b"HEAD", b"POST", b"PUT"])
def test_only_get_responses_are_stored(method: bytes) -> None:
    """RFC 9111 §3: this cache stores responses to GET only (HEAD is answered from a GET)."""
    assert decide([(b"cache-control", b"max-age=60")], method=method) is None


@pytest.mark.parametrize("status", [201, 204, 206, 301, 304, 404, 500])
def test_only_200_is_stored(status: int) -> None:
    """RFC 9111 §3: only complete 200 responses are stored in this version (206 and 304 never
    are)."""
    assert decide([(b"cache-control", b"max-age=60")], status=status) is None


@pytest.mark.parametrize(
    "cache_control",
    [b"no-store", b"max-age=60, No-Store", b"private", b'private="set-cookie"', b"no-cache"],
)
def test_response_directives_forbid_storing(cache_control: bytes) -> None:
    """RFC 9111 §5.2.2.5 (no-store), §5.2.2.7 (private, qualified form treated as unqualified),
    §5.2.2.4 (no-cache: not stored until revalidation exists)."""
    assert decide([(b"cache-control", cache_control)]) is None


def test_request_no_store_forbids_storing() -> None:
    """RFC 9111 §5.2.1.5: no-store in the request: do not store the request or its response."""
    assert decide([(b"cache-control", b"max-age=60")], [(b"cache-control", b"no-store")]) is None


def test_request_no_cache_still_allows_storing() -> None:
    """RFC 9111 §5.2.1.4: request no-cache concerns reuse, not storage."""
    decision = decide([(b"cache-control", b"max-age=60")], [(b"cache-control", b"no-cache")])
    assert decision is not None


@pytest.mark.parametrize(
    ("cache_control", "stored"),
    [(b"", False), (b"max-age=60", False), (b"public", True), (b"s-maxage=60", True)],
)
def test_authorization_needs_explicit_shared_permission(cache_control: bytes, stored: bool) -> None:
    """RFC 9111 §3.5: a response to a request with Authorization is stored by a shared cache
    only when the response explicitly allows it (public or s-maxage here)."""
    response = [(b"cache-control", cache_control)] if cache_control else []
    decision = decide(response, [(b"authorization", b"Bearer t")])
    assert (decision is not None) is stored


@pytest.mark.parametrize(
    ("cache_control", "stored"),
    [(b"", False), (b"max-age=60", False), (b"public, max-age=60", True), (b"s-maxage=5", True)],
)
def test_set_cookie_needs_explicit_shared_permission(cache_control: bytes, stored: bool) -> None:
    """RFC 9111 §7.3 and RFC 6265 §7: a Set-Cookie response is per-user unless the origin marks
    it as shareable (public or s-maxage)."""
    response = [(b"set-cookie", b"a=1"), (b"set-cookie", b"b=2")]
    if cache_control:
        response.append((b"cache-control", cache_control))
    assert (decide(response) is not None) is stored


def test_vary_is_not_stored_yet() -> None:
    """RFC 9111 §4.1: a response with Vary may only be reused for matching requests; until the
    key includes Vary, such responses are not stored."""
    assert decide([(b"cache-control", b"max-age=60"), (b"vary", b"accept-encoding")]) is None
    assert decide([(b"cache-control", b"max-age=60"), (b"vary", b"*")]) is None
    assert decide([(b"cache-control", b"max-age=60"), (b"vary", b" ")]) is not None


# --------------------------------------------------------------------------- freshness


def test_s_maxage_wins_over_max_age_and_expires() -> None:
    """RFC 9111 §4.2.1: a shared cache uses s-maxage first."""
    headers = [
        (b"cache-control", b"max-age=100, s-maxage=7"),
        (b"date", http_date(WALL)),
        (b"expires", http_date(WALL + 1000)),
    ]
    assert lifetime(headers) == 7.0


def test_max_age_wins_over_expires() -> None:
    """RFC 9111 §4.2.1 and §5.3: with max-age present, Expires is ignored."""
    headers = [
        (b"cache-control", b"max-age=100"),
        (b"date", http_date(WALL)),
        (b"expires", http_date(WALL + 1000)),
    ]
    assert lifetime(headers) == 100.0


def test_expires_minus_date() -> None:
    """RFC 9111 §4.2.1: otherwise the lifetime is Expires minus Date."""
    headers = [(b"date", http_date(WALL - 30)), (b"expires", http_date(WALL + 90))]
    assert lifetime(headers) == 120.0


def test_expires_without_date_uses_receipt_time() -> None:
    """RFC 9111 §4.2.1: a missing Date is taken as the time the message was received."""
    assert lifetime([(b"expires", http_date(WALL + 90))]) == 90.0


def test_expires_before_date_is_stale_and_not_stored() -> None:
    """RFC 9111 §4.2.1: Expires earlier than Date gives no freshness; a response stale on
    arrival is not stored while revalidation is missing (RFC 9111 §4.2.4)."""
    headers = [(b"date", http_date(WALL)), (b"expires", http_date(WALL - 10))]
    assert lifetime(headers) is None


@pytest.mark.parametrize("expires", [b"0", b"-1", b"never", b""])
def test_invalid_expires_is_already_expired(expires: bytes) -> None:
    """RFC 9111 §5.3: an invalid Expires, especially "0", means already expired; being
    explicit, it is not replaced by the default lifetime, so nothing is stored."""
    assert lifetime([(b"expires", expires)], default_ttl=3600.0) is None


def test_first_expires_line_is_used() -> None:
    """RFC 9111 §4.2.1: with two Expires field lines, use the first occurrence."""
    headers = [
        (b"date", http_date(WALL)),
        (b"expires", http_date(WALL + 10)),
        (b"expires", http_date(WALL + 999)),
    ]
    assert lifetime(headers) == 10.0


@pytest.mark.parametrize(
    ("argument", "expected"),
    [
        (b"max-age=30", 30.0),
        (b'max-age="30"', 30.0),
        (b"max-age=abc", None),
        (b"max-age=-5", None),
        (b"max-age=1.5", None),
        (b"max-age=+5", None),
        (b"max-age=", None),
        (b"max-age", None),
        (b"max-age=0", None),
        (b"max-age=abc, s-maxage=9", 9.0),
        (b"max-age=10, max-age=100", 10.0),
        (b"max-age=99999999999999999999999", float(2**31)),
        (b"max-age=" + b"9" * 5000, float(2**31)),
    ],
)
def test_max_age_argument(argument: bytes, expected: float | None) -> None:
    """RFC 9111 §1.2.2 (delta-seconds: digits only, overflow is 2^31) and §4.2.1 (invalid or
    duplicate values: use the first occurrence or consider the response stale). Stale is
    explicit, so the default lifetime does not replace it and the response is not stored."""
    assert lifetime([(b"cache-control", argument)], default_ttl=3600.0) == expected


def test_explicit_freshness_beats_default_ttl() -> None:
    """RFC 9111 §4.2.2: heuristics are used only when no explicit expiration time is present."""
    assert lifetime([(b"cache-control", b"max-age=5")], default_ttl=3600.0) == 5.0


def test_default_ttl_zero_stores_only_explicitly_fresh_responses() -> None:
    """RFC 9111 §4.2.2: with no heuristic configured (cache_ttl = 0), a response without
    explicit freshness is not stored, but explicit freshness still counts."""
    assert decide([], default_ttl=0.0) is None
    assert lifetime([(b"cache-control", b"max-age=10")], default_ttl=0.0) == 10.0


def test_public_without_lifetime_uses_default_ttl() -> None:
    """RFC 9111 §5.2.2.9: public makes a response heuristically cacheable."""
    assert lifetime([(b"cache-control", b"public")], default_ttl=42.0) == 42.0


# --------------------------------------------------------------------------- age


def test_initial_age_from_date() -> None:
    """RFC 9111 §4.2.3: apparent_age = max(0, response_time - date_value)."""
    decision = decide([(b"date", http_date(WALL - 10))])
    assert decision is not None and decision.initial_age == 10.0


def test_initial_age_date_in_future_is_zero() -> None:
    """RFC 9111 §4.2.3: apparent_age is never negative (origin clock ahead)."""
    decision = decide([(b"date", http_date(WALL + 100))])
    assert decision is not None and decision.initial_age == 0.0


def test_initial_age_from_age_header_plus_response_delay() -> None:
    """RFC 9111 §4.2.3: corrected_age_value = age_value + (response_time - request_time), and
    corrected_initial_age is the larger of it and apparent_age."""
    decision = decide(
        [(b"age", b"30"), (b"date", http_date(WALL - 5))],
        request_time=MONO - 2,
        response_time=MONO,
    )
    assert decision is not None and decision.initial_age == 32.0


def test_initial_age_apparent_age_can_win() -> None:
    """RFC 9111 §4.2.3: corrected_initial_age = max(apparent_age, corrected_age_value)."""
    decision = decide([(b"age", b"3"), (b"date", http_date(WALL - 50))], request_time=MONO - 1)
    assert decision is not None and decision.initial_age == 50.0


@pytest.mark.parametrize(
    ("ages", "expected"),
    [([b"abc"], 0.0), ([b"-3"], 0.0), ([b"5, 7"], 5.0), ([b"5", b"9"], 5.0), ([b" 12 "], 12.0)],
)
def test_age_field_first_member_invalid_ignored(ages: list[bytes], expected: float) -> None:
    """RFC 9111 §5.1: use the first member of a list-based Age; ignore an invalid one."""
    decision = decide([(b"age", age) for age in ages])
    assert decision is not None and decision.initial_age == expected


@pytest.mark.parametrize(("age", "stored"), [(b"99", True), (b"100", False), (b"500", False)])
def test_response_older_than_its_lifetime_is_not_stored(age: bytes, stored: bool) -> None:
    """RFC 9111 §4.2: fresh only while freshness_lifetime > current_age; a response that
    arrives stale cannot be reused without revalidation (RFC 9111 §4.2.4), so it is not
    stored."""
    decision = decide([(b"cache-control", b"max-age=100"), (b"age", age)])
    assert (decision is not None) is stored


def test_current_age_adds_resident_time() -> None:
    """RFC 9111 §4.2.3: current_age = corrected_initial_age + (now - response_time)."""
    assert policy.current_age(12.0, MONO, MONO + 30) == 42.0
    assert policy.current_age(12.0, MONO, MONO) == 12.0


@pytest.mark.parametrize(
    ("age", "expected"),
    [(0.0, b"0"), (41.9, b"41"), (-3.0, b"0"), (float("nan"), b"0"), (1e20, b"2147483648")],
)
def test_format_age(age: float, expected: bytes) -> None:
    """RFC 9111 §5.1 and §1.2.2: Age is a non-negative integer of seconds, capped at 2^31."""
    assert policy.format_age(age) == expected


# --------------------------------------------------------------------------- Cache-Status


def test_cache_status_hit_with_ttl() -> None:
    """RFC 9211 §2.1 and §2.4: hit, and ttl as whole seconds of remaining freshness."""
    assert policy.cache_status_hit(42.9) == b"phantom; hit; ttl=42"
    assert policy.cache_status_hit(0.2) == b"phantom; hit; ttl=0"


@pytest.mark.parametrize(
    ("reason", "stored", "expected"),
    [
        (Forward.MISS, True, b"phantom; fwd=miss; stored"),
        (Forward.URI_MISS, False, b"phantom; fwd=uri-miss"),
        (Forward.URI_MISS, True, b"phantom; fwd=uri-miss; stored"),
        (Forward.METHOD, False, b"phantom; fwd=method"),
        (Forward.REQUEST, False, b"phantom; fwd=request"),
        (Forward.REQUEST, True, b"phantom; fwd=request; stored"),
    ],
)
def test_cache_status_forward(reason: Forward, stored: bool, expected: bytes) -> None:
    """RFC 9211 §2.2 and §2.5: fwd carries the reason, stored says the response was kept."""
    assert policy.cache_status_forward(reason, stored=stored) == expected


def test_cache_status_forward_with_negative_ttl() -> None:
    """RFC 9211 §2.4: ttl may be negative for a stale stored response (rounded down)."""
    assert policy.cache_status_forward(Forward.STALE, ttl=-0.5) == b"phantom; fwd=stale; ttl=-1"
