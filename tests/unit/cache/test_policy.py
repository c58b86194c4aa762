"""phantom.cache.policy: pure RFC 9111 decisions, driven by explicit times (no real clock).

Grouped like the cache's states: keys, parsing, request (lookup) decisions, storage decisions,
freshness, age, Cache-Status. Every test names the RFC section it checks.
"""

from __future__ import annotations

import email.utils
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

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
    heuristic: str = "always",
) -> StorageDecision | None:
    """The storage decision; the heuristic "always" gives a bare response ``default_ttl``, so
    that tests of other rules need no Last-Modified (the default mode has its own tests)."""
    return policy.storage_decision(
        method,
        status,
        request_headers,
        response_headers,
        default_ttl,
        now,
        request_time,
        response_time,
        heuristic=heuristic,
    )


def lifetime(response_headers: Headers, default_ttl: float = 60.0) -> float | None:
    decision = decide(response_headers, default_ttl=default_ttl)
    return None if decision is None else decision.freshness_lifetime


def lifetime_in(
    response_headers: Headers,
    heuristic: str,
    request_headers: Headers = (),
    default_ttl: float = 60.0,
) -> float | None:
    """The freshness lifetime under a ``cache_heuristic`` mode; None: not stored."""
    decision = decide(
        response_headers, request_headers, default_ttl=default_ttl, heuristic=heuristic
    )
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


def test_store_key_separates_https_from_http() -> None:
    """RFC 9111 §2: the key is the target URI, scheme included; default ports per scheme."""
    assert policy.store_key(b"example.com:443", b"GET", b"/x", b"https") == (
        "https://example.com",
        "GET:/x",
    )
    assert policy.store_key(b"example.com", b"GET", b"/x", b"https") != policy.store_key(
        b"example.com", b"GET", b"/x"
    )
    assert policy.store_key(b"example.com:80", b"GET", b"/x", b"https")[0] == (
        "https://example.com:80"
    )


def test_store_key_of_a_long_host_is_worked_out_the_same_way() -> None:
    """Hosts past the remembered length take the same normalisation, unremembered."""
    long_name = b"a" * 400 + b".example"
    assert policy.store_key(long_name.upper() + b":80", b"GET", b"/x") == (
        long_name.decode(),
        "GET:/x",
    )


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



def test_a_remembered_cache_control_value_is_a_fresh_dict_each_time() -> None:
    # One-line values are parsed once and remembered; each caller gets its own copy to add to.
    first = policy.parse_cache_control([b"no-store"])
    first["no-cache"] = None
    assert policy.parse_cache_control([b"no-store"]) == {"no-store": None}
    assert policy.parse_cache_control(iter([b"max-age=5"])) == {"max-age": "5"}
    long_value = b"max-age=5, " + b"x" * 300
    assert policy.parse_cache_control([long_value])["max-age"] == "5"  # not remembered

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


# --------------------------------------------------------------------------- storing


def test_plain_200_get_is_stored_with_default_ttl_when_the_heuristic_is_always() -> None:
    """RFC 9111 §3 and §4.2.2: 200 is heuristically cacheable; with cache_heuristic "always"
    the configured lifetime is the heuristic."""
    assert decide([(b"content-type", b"text/plain")]) == StorageDecision(60.0, 0.0)


def test_by_default_a_response_without_freshness_or_last_modified_is_not_reused() -> None:
    """cache_heuristic "last-modified" (the default): no explicit freshness and no
    Last-Modified means no heuristic; without a validator such a response is not stored, with
    an ETag it is stored for revalidation only."""
    bare = [(b"content-type", b"text/html")]
    assert policy.storage_decision(b"GET", 200, [], bare, 60.0, WALL, MONO, MONO) is None
    for status in (204, 404):
        assert decide([], status=status, heuristic="last-modified") is None
    tagged = decide([(b"etag", b'"a"')], heuristic="last-modified")
    assert tagged is not None and tagged.freshness_lifetime == 0.0


def test_by_default_the_heuristic_is_a_tenth_of_the_age_of_last_modified() -> None:
    """RFC 9111 §4.2.2: 10% of (Date - Last-Modified), at most cache_ttl."""
    headers = [(b"date", http_date(WALL)), (b"last-modified", http_date(WALL - 300))]
    assert lifetime_in(headers, "last-modified") == 30.0
    assert lifetime_in(headers, "last-modified", default_ttl=12.0) == 12.0
    assert lifetime_in(headers, "always") == 30.0


@pytest.mark.parametrize("mode", ["last-modified", "always"])
def test_the_heuristic_follows_the_date_the_origin_sent(mode: str) -> None:
    """RFC 9111 §4.2.2: the time since Last-Modified is measured at the origin's Date."""
    headers = [(b"date", http_date(WALL - 100)), (b"last-modified", http_date(WALL - 200))]
    assert lifetime_in(headers, mode) == 10.0


def test_heuristic_off_gives_only_explicit_freshness() -> None:
    """cache_heuristic "off": Last-Modified alone gives no freshness (the entry is kept for
    revalidation), a bare response is not stored, explicit freshness counts as ever."""
    modified = [(b"last-modified", http_date(WALL - 10_000))]
    assert lifetime_in(modified, "off") == 0.0
    assert decide([], heuristic="off") is None
    assert lifetime_in([(b"cache-control", b"max-age=7")], "off") == 7.0


@pytest.mark.parametrize("mode", ["last-modified", "always", "off"])
@pytest.mark.parametrize(
    ("request_headers", "response_headers"),
    [
        ([(b"cookie", b"session=alice")], []),
        ([(b"Cookie", b"session=alice")], []),
        ([(b"authorization", b"Bearer t")], [(b"cache-control", b"public")]),
        ([], [(b"set-cookie", b"session=alice"), (b"cache-control", b"public")]),
    ],
    ids=["cookie", "cookie-any-case", "authorization", "set-cookie"],
)
def test_personal_exchanges_never_get_heuristic_freshness(
    mode: str, request_headers: Headers, response_headers: Headers
) -> None:
    """Whatever the mode, a request with Cookie or Authorization, or a response setting a
    cookie, gets no heuristic lifetime (even with Last-Modified) and no default stale-if-error
    window: such a page is reused only as long as the origin says."""
    modified = [*response_headers, (b"last-modified", http_date(WALL - 10_000))]
    decision = policy.storage_decision(
        b"GET", 200, request_headers, modified, 60.0, WALL, MONO, MONO,
        stale_if_error_default=300.0, heuristic=mode,
    )
    assert decision is not None  # stored for revalidation: it has a validator
    assert decision.freshness_lifetime == 0.0 and decision.stale_if_error == 0.0
    assert decide(response_headers, request_headers, heuristic=mode) is None
    explicit = [*response_headers, (b"cache-control", b"s-maxage=30")]
    assert lifetime_in(explicit, mode, request_headers) == 30.0


@pytest.mark.parametrize("method", [b"HEAD", b"POST", b"PUT"])
def test_only_get_responses_are_stored(method: bytes) -> None:
    """RFC 9111 §3: this cache stores responses to GET only (HEAD is answered from a GET)."""
    assert decide([(b"cache-control", b"max-age=60")], method=method) is None


@pytest.mark.parametrize("status", [200, 203, 204, 300, 301, 308, 404, 405, 410, 414, 501])
def test_heuristically_cacheable_statuses_are_stored_without_explicit_freshness(
    status: int,
) -> None:
    """RFC 9111 §4.2.2 and RFC 9110 §15.1: these statuses may get a heuristic lifetime."""
    decision = decide([], status=status)
    assert decision is not None and decision.freshness_lifetime == 60.0


@pytest.mark.parametrize("status", [201, 202, 302, 303, 307, 400, 403, 418, 299])
def test_other_statuses_need_explicit_freshness(status: int) -> None:
    """RFC 9111 §3: a status that is not heuristically cacheable is stored only with explicit
    freshness (or public); unknown statuses too (the cache need not understand them)."""
    assert decide([], status=status) is None
    assert decide([(b"cache-control", b"max-age=60")], status=status) is not None


@pytest.mark.parametrize("status", [206, 304, 100])
def test_never_stored_statuses(status: int) -> None:
    """RFC 9111 §3.3: 206 is not stored (phantom stores whole responses only); 304 and 1xx
    are not complete responses."""
    assert decide([(b"cache-control", b"max-age=60")], status=status) is None


@pytest.mark.parametrize("status", [500, 502, 503, 504])
@pytest.mark.parametrize(
    "fields",
    [
        [(b"cache-control", b"max-age=30")],
        [(b"cache-control", b"s-maxage=30")],
        [(b"date", http_date(WALL)), (b"expires", http_date(WALL + 30))],
    ],
    ids=["max-age", "s-maxage", "expires"],
)
def test_5xx_with_explicit_freshness_is_stored(
    status: int, fields: list[tuple[bytes, bytes]]
) -> None:
    """RFC 9111 §3: any final status with explicit freshness (§4.2.1) may be stored, errors
    included; it is reused while fresh like a 200."""
    decision = decide(fields, status=status)
    assert decision is not None and decision.freshness_lifetime == 30.0


@pytest.mark.parametrize("status", [500, 502, 503, 504])
@pytest.mark.parametrize("heuristic", ["always", "last-modified"])
def test_5xx_never_gets_heuristic_freshness(status: int, heuristic: str) -> None:
    """RFC 9111 §4.2.2 / RFC 9110 §15.1: 5xx other than 501 are not heuristically cacheable:
    without explicit freshness they are not stored, ``public`` and Last-Modified or not."""
    last_modified = (b"last-modified", http_date(WALL - 86400))
    assert decide([last_modified], status=status, heuristic=heuristic) is None
    public = [(b"cache-control", b"public"), last_modified]
    assert decide(public, status=status, heuristic=heuristic) is None


def test_stored_5xx_keeps_its_stale_windows() -> None:
    """RFC 5861 §3, §4 (RFC 9111 §4.2.4): a stored error goes stale like a 200, and its
    stale-while-revalidate / stale-if-error windows apply to it."""
    decision = decide(
        [(b"cache-control", b"max-age=10, stale-while-revalidate=20, stale-if-error=30")],
        status=503,
    )
    assert decision is not None
    assert (decision.stale_while_revalidate, decision.stale_if_error) == (20.0, 30.0)


def test_must_understand_stores_only_understood_statuses() -> None:
    """RFC 9111 §5.2.2.3: with must-understand, an unknown status is not stored (and no-store,
    sent alongside for older caches, is then ignored for known statuses)."""
    assert decide([(b"cache-control", b"must-understand, max-age=60")], status=299) is None
    assert decide([(b"cache-control", b"must-understand, max-age=60")]) is not None


@pytest.mark.parametrize(
    "cache_control",
    [b"no-store", b"max-age=60, No-Store", b"private", b"PRIVATE, max-age=60", b"no-cache"],
)
def test_response_directives_forbid_storing(cache_control: bytes) -> None:
    """RFC 9111 §5.2.2.5 (no-store), §5.2.2.7 (private); §5.2.2.4: no-cache without a validator
    can never be reused (every use needs revalidation), so it is not stored either."""
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
    [
        (b"", False),
        (b"max-age=60", False),
        (b"public, max-age=60", True),
        (b"s-maxage=60", True),
        # public allows sharing, but an Authorization request gets no heuristic lifetime:
        # without one, and without a validator, there is nothing to reuse.
        (b"public", False),
    ],
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


@pytest.mark.parametrize(
    "expires",
    [
        b"Thu, 18 Aug 2050 02:01:18 UTC",  # only GMT
        b"Thu, 18 Aug 2050 02:01:18 AEST",
        b"Thu, 18 Aug 50 02:01:18 GMT",  # two-digit year outside RFC 850's form
        b"Thu 18 Aug 2050 02:01:18 GMT",  # no comma
        b"Thu, 18  Aug  2050 02:01:18 GMT",  # two spaces
        b"Thu, 18-Aug-2050 02:01:18 GMT",
        b"Thu, 18 Aug 2050 02.01.18 GMT",
        b"Thu, 18 Aug 2050 2:01:18 GMT",  # one-digit hour
    ],
)
def test_expires_not_in_http_date_syntax_is_already_expired(expires: bytes) -> None:
    """RFC 9111 §5.3 with RFC 9110 §5.6.7: Expires must be an HTTP-date (IMF-fixdate, or the
    obsolete RFC 850 and asctime forms); anything else, however readable, means expired."""
    headers = [(b"date", http_date(WALL)), (b"expires", expires)]
    assert lifetime(headers, default_ttl=3600.0) is None


@pytest.mark.parametrize(
    "expires",
    [
        b"Thu, 18 Aug 2050 02:01:18 GMT",
        b"Thursday, 18-Aug-50 02:01:18 GMT",  # RFC 850
        b"Thu Aug 18 02:01:18 2050",  # asctime
        b"Thu Aug  8 02:01:18 2050",
        b"THU, 18 AUG 2050 02:01:18 gMT",  # case is not held against it
        b" Sun, 21 Nov 2286 04:46:39 GMT ",
    ],
)
def test_expires_in_any_http_date_form_is_used(expires: bytes) -> None:
    """RFC 9110 §5.6.7: a recipient accepts all three HTTP-date formats."""
    headers = [(b"date", http_date(WALL)), (b"expires", expires)]
    assert (lifetime(headers) or 0.0) > 3600.0


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




# --------------------------------------------------------------------------- storing, continued


def test_qualified_private_stores_the_rest_without_the_named_fields() -> None:
    """RFC 9111 §5.2.2.7: with ``private="f"`` a shared cache must not store field f, and may
    store the remainder of the response."""
    headers = [
        (b"cache-control", b'private="x-user, Set-Cookie", max-age=60'),
        (b"x-user", b"alice"),
        (b"content-type", b"text/plain"),
    ]
    decision = decide(headers)
    assert decision is not None
    assert decision.dropped_fields == {b"x-user", b"set-cookie"}
    kept = policy.stored_headers(headers + [(b"age", b"3")], decision)
    assert [name for name, _ in kept] == [b"cache-control", b"content-type"]


def test_qualified_no_cache_drops_the_named_fields_and_reuses_the_rest() -> None:
    """RFC 9111 §5.2.2.4: qualified no-cache: the named fields must not be sent without
    revalidation, so they are not stored; the rest stays reusable without revalidation."""
    decision = decide([(b"cache-control", b'no-cache="x-token", max-age=60')])
    assert decision is not None and not decision.no_cache
    assert decision.dropped_fields == {b"x-token"}


def test_no_cache_with_a_validator_is_stored_for_revalidation() -> None:
    """RFC 9111 §5.2.2.4: no-cache responses may be stored, but every reuse is revalidated."""
    decision = decide([(b"cache-control", b"no-cache"), (b"etag", b'"v1"')])
    assert decision is not None and decision.no_cache and decision.etag == b'"v1"'


def test_pragma_no_cache_counts_only_without_cache_control() -> None:
    """RFC 9111 §5.4: Pragma: no-cache is honoured as no-cache when Cache-Control is absent."""
    pragma = (b"pragma", b"no-cache")
    assert decide([pragma]) is None  # no validator: useless to store
    with_validator = decide([pragma, (b"last-modified", http_date(WALL - 1000))])
    assert with_validator is not None and with_validator.no_cache
    assert decide([pragma, (b"cache-control", b"max-age=60")]) == StorageDecision(60.0, 0.0)


def test_max_age_zero_with_validator_is_stored_stale() -> None:
    """RFC 9111 §4.3: a stale response with a validator can be revalidated later."""
    decision = decide([(b"cache-control", b"max-age=0"), (b"etag", b'W/"x"')])
    assert decision is not None and decision.freshness_lifetime == 0.0


def test_authorization_with_must_revalidate_is_stored() -> None:
    """RFC 9111 §3.5: must-revalidate also allows a shared cache to store a response to an
    authenticated request (and then forbids serving it stale)."""
    decision = decide(
        [(b"cache-control", b"must-revalidate, max-age=60")], [(b"authorization", b"Basic x")]
    )
    assert decision is not None and decision.shared_auth and decision.no_stale


def test_store_set_cookie_stores_cookie_responses_as_the_rfc_permits() -> None:
    """RFC 9111 §3.1 and §7.3: Set-Cookie does not forbid storage; phantom stores such
    responses only when store_set_cookie asks for it (or the origin says public/s-maxage)."""
    response = [(b"set-cookie", b"a=1"), (b"cache-control", b"max-age=60")]
    stored = policy.storage_decision(
        b"GET", 200, [], response, 60.0, WALL, MONO, MONO, store_set_cookie=True
    )
    assert stored is not None


@pytest.mark.parametrize(
    ("last_modified_age", "expected"),
    [(100.0, 10.0), (3600.0, 60.0), (-50.0, 0.0)],
)
def test_heuristic_is_a_fraction_of_last_modified_age_capped_by_cache_ttl(
    last_modified_age: float, expected: float
) -> None:
    """RFC 9111 §4.2.2: 10% of the time since Last-Modified, never more than cache_ttl."""
    headers = [
        (b"date", http_date(WALL)),
        (b"last-modified", http_date(WALL - last_modified_age)),
    ]
    decision = decide(headers)
    assert decision is not None and decision.freshness_lifetime == expected


def test_strict_mode_stores_validated_responses_only_for_revalidation() -> None:
    """RFC 9111 §4.2.2 with cache_ttl = 0: no heuristic freshness at all; a response with a
    validator is kept (stale) for revalidation, one without any is not stored."""
    assert decide([], default_ttl=0) is None
    decision = decide([(b"etag", b'"a"')], default_ttl=0)
    assert decision is not None and decision.freshness_lifetime == 0.0


def test_explicit_freshness_is_never_changed_by_cache_ttl() -> None:
    """RFC 9111 §4.2.1: explicit freshness wins over any heuristic, in both directions."""
    assert lifetime([(b"cache-control", b"max-age=5")], default_ttl=3600) == 5.0
    assert lifetime([(b"cache-control", b"max-age=5000")], default_ttl=1) == 5000.0


def test_stale_windows_from_directives_and_default() -> None:
    """RFC 5861 §3, §4: stale-while-revalidate / stale-if-error windows; serve_stale_on_error
    gives the default stale-if-error window."""
    decision = decide([(b"cache-control", b"max-age=1, stale-while-revalidate=30")])
    assert decision is not None and decision.stale_while_revalidate == 30.0
    assert decision.stale_if_error == 0.0
    with_default = policy.storage_decision(
        b"GET", 200, [], [(b"cache-control", b"max-age=1")], 60.0, WALL, MONO, MONO,
        stale_if_error_default=120.0,
    )
    assert with_default is not None and with_default.stale_if_error == 120.0
    explicit = policy.storage_decision(
        b"GET", 200, [], [(b"cache-control", b"max-age=1, stale-if-error=5")], 60.0, WALL,
        MONO, MONO, stale_if_error_default=120.0,
    )
    assert explicit is not None and explicit.stale_if_error == 5.0


@pytest.mark.parametrize(
    "cache_control", [b"must-revalidate", b"proxy-revalidate", b"s-maxage=1"]
)
def test_revalidation_directives_forbid_stale_serving(cache_control: bytes) -> None:
    """RFC 9111 §5.2.2.2, §5.2.2.8, §5.2.2.10: once stale, revalidate; never serve stale."""
    decision = decide([(b"cache-control", cache_control + b", max-age=1")])
    assert decision is not None and decision.no_stale


# --------------------------------------------------------------------------- Vary


def test_vary_key_normalises_names_order_case_and_whitespace() -> None:
    """RFC 9111 §4.1: Vary names are case-insensitive, list order does not matter; request
    values may be normalised (whitespace, several lines combined)."""
    one = policy.vary_key(
        [(b"vary", b"Accept-Encoding, accept-language")],
        [(b"accept-language", b"en, fr"), (b"accept-encoding", b"gzip")],
    )
    two = policy.vary_key(
        [(b"vary", b"ACCEPT-LANGUAGE"), (b"vary", b" accept-encoding ,")],
        [(b"accept-encoding", b"gzip"), (b"accept-language", b"en"), (b"accept-language", b"fr")],
    )
    assert one == two == ((b"accept-encoding", b"gzip"), (b"accept-language", b"en,fr"))


def test_vary_star_never_matches() -> None:
    """RFC 9111 §4.1: Vary: * always fails to match."""
    assert policy.vary_key([(b"vary", b"accept, *")], []) is None
    entry = Entry(decision=StorageDecision(60.0, 0.0, vary=None))
    assert lookup([entry]) == policy.Miss(Forward.VARY_MISS)


# --------------------------------------------------------------------------- lookup states


@dataclass(frozen=True)
class Entry:
    """A stored entry as lookup sees it."""

    decision: StorageDecision
    response_time: float = MONO
    name: str = "entry"


def lookup(
    entries: Sequence[Entry],
    request_headers: Headers = (),
    *,
    now: float = MONO,
    method: bytes = b"GET",
) -> policy.Lookup[Entry]:
    return policy.lookup(method, request_headers, entries, now)


def fresh_for(seconds: float, **extra: Any) -> Entry:
    return Entry(decision=StorageDecision(seconds, 0.0, **extra))


def test_lookup_fresh_reports_age_and_ttl() -> None:
    """RFC 9111 §4.2: fresh while the lifetime exceeds the current age."""
    entry = fresh_for(60.0)
    assert lookup([entry], now=MONO + 10) == policy.Fresh(entry, 10.0, 50.0)


def test_lookup_empty_is_uri_miss_and_other_methods_are_method_miss() -> None:
    """RFC 9211 §2.2: uri-miss (nothing stored) vs method (not a cacheable method)."""
    assert lookup([]) == policy.Miss(Forward.URI_MISS)
    assert lookup([fresh_for(60)], method=b"POST") == policy.Miss(Forward.METHOD)


def test_lookup_selects_the_matching_vary_variant() -> None:
    """RFC 9111 §4.1: the stored variant whose selecting header values match is used."""
    en = Entry(StorageDecision(60.0, 0.0, vary=((b"accept-language", b"en"),)), name="en")
    fr = Entry(StorageDecision(60.0, 0.0, vary=((b"accept-language", b"fr"),)), name="fr")
    state = lookup([fr, en], [(b"accept-language", b" en ")])
    assert isinstance(state, policy.Fresh) and state.entry is en
    assert lookup([fr, en], [(b"accept-language", b"de")]) == policy.Miss(Forward.VARY_MISS)
    absent = Entry(StorageDecision(60.0, 0.0, vary=((b"accept-language", None),)))
    assert isinstance(lookup([absent]), policy.Fresh)
    assert lookup([absent], [(b"accept-language", b"en")]) == policy.Miss(Forward.VARY_MISS)


def test_lookup_authorization_uses_only_entries_that_allow_it() -> None:
    """RFC 9111 §3.5: a request with Authorization is answered only from responses that
    allow shared caching of authenticated content."""
    plain, shared = fresh_for(60), fresh_for(60, shared_auth=True)
    auth = [(b"authorization", b"Bearer t")]
    assert lookup([plain], auth) == policy.Miss(Forward.VARY_MISS)
    assert isinstance(lookup([shared], auth), policy.Fresh)


_PLAIN_LOOKUPS = [
    pytest.param([fresh_for(60)], MONO + 10, id="fresh"),
    pytest.param([fresh_for(60)], MONO + 60, id="just expired"),
    pytest.param([fresh_for(10, etag=b'"a"')], MONO + 20, id="stale with a validator"),
    pytest.param([fresh_for(10, stale_while_revalidate=30)], MONO + 20, id="within swr"),
    pytest.param([fresh_for(60, no_cache=True, etag=b'"a"')], MONO, id="no-cache entry"),
    pytest.param([fresh_for(60, shared_auth=True, no_stale=True)], MONO, id="must-revalidate"),
    pytest.param(
        [Entry(StorageDecision(60.0, 0.0, vary=((b"accept-language", None),))), fresh_for(60)],
        MONO,
        id="newest has Vary",
    ),
    pytest.param([Entry(StorageDecision(60.0, 0.0, vary=None))], MONO, id="Vary: *"),
    pytest.param([Entry(StorageDecision(60.0, 50.0))], MONO + 5, id="arrived aged"),
]


@pytest.mark.parametrize(("entries", "now"), _PLAIN_LOOKUPS)
def test_lookup_without_request_directives_decides_as_with_an_ignored_one(
    entries: list[Entry], now: float
) -> None:
    """A request with no Cache-Control, Pragma or Authorization takes lookup's short way;
    it must reach the same state as the full reading of a directive that changes nothing
    (RFC 9111 §5.2: unknown directives are ignored)."""
    plain = [(b"host", b"h"), (b"accept", b"*/*")]
    ignored = [*plain, (b"cache-control", b"x-unknown")]
    assert lookup(entries, plain, now=now) == lookup(entries, ignored, now=now)


def test_lookup_stale_entry_is_revalidated_with_its_validators() -> None:
    """RFC 9111 §4.3.1: If-None-Match from the ETag, If-Modified-Since from Last-Modified."""
    entry = fresh_for(10, etag=b'"v1"', last_modified=b"Tue, 01 Jan 2030 00:00:00 GMT")
    state = lookup([entry], now=MONO + 11)
    assert isinstance(state, policy.Revalidate) and state.reason is Forward.STALE
    assert state.conditional_headers == (
        (b"if-none-match", b'"v1"'),
        (b"if-modified-since", b"Tue, 01 Jan 2030 00:00:00 GMT"),
    )


def test_lookup_no_cache_entry_always_revalidates() -> None:
    """RFC 9111 §5.2.2.4: a no-cache response is never reused without revalidation."""
    state = lookup([fresh_for(60, no_cache=True, etag=b'"a"')])
    assert isinstance(state, policy.Revalidate) and state.reason is Forward.STALE


@pytest.mark.parametrize(
    "request_headers",
    [
        [(b"cache-control", b"no-cache")],
        [(b"pragma", b"no-cache")],
        [(b"cache-control", b"max-age=5")],
        [(b"cache-control", b"min-fresh=55")],
    ],
    ids=["no-cache", "pragma", "max-age", "min-fresh"],
)
def test_lookup_request_directives_force_revalidation(request_headers: Headers) -> None:
    """RFC 9111 §5.2.1.4 (no-cache), §5.4 (Pragma), §5.2.1.1 (max-age: the entry is 10 s
    old), §5.2.1.3 (min-fresh: only 50 s of freshness left)."""
    state = lookup([fresh_for(60)], request_headers, now=MONO + 10)
    assert isinstance(state, policy.Revalidate) and state.reason is Forward.REQUEST


def test_lookup_pragma_ignored_when_request_has_cache_control() -> None:
    """RFC 9111 §5.4: Pragma is only a fallback for the absence of Cache-Control."""
    headers = [(b"pragma", b"no-cache"), (b"cache-control", b"max-age=60")]
    assert isinstance(lookup([fresh_for(60)], headers), policy.Fresh)


def test_lookup_request_max_age_and_min_fresh_satisfied() -> None:
    """RFC 9111 §5.2.1.1, §5.2.1.3: a fresh enough response is used."""
    headers = [(b"cache-control", b"max-age=20, min-fresh=30")]
    assert isinstance(lookup([fresh_for(60)], headers, now=MONO + 10), policy.Fresh)


def test_lookup_request_no_store_forwards() -> None:
    """RFC 9111 §5.2.1.5: no-store: nothing is reused or stored for this request."""
    no_store = [(b"cache-control", b"no-store")]
    assert lookup([fresh_for(60)], no_store) == policy.Miss(Forward.REQUEST)


def test_lookup_max_stale_serves_stale_within_bound() -> None:
    """RFC 9111 §5.2.1.2: max-stale accepts a response stale by at most N seconds (any
    staleness without an argument)."""
    entry = fresh_for(10)
    within = lookup([entry], [(b"cache-control", b"max-stale=5")], now=MONO + 14)
    assert within == policy.ServeStale(entry, 14.0, -4.0, refresh=False)
    beyond = lookup([entry], [(b"cache-control", b"max-stale=5")], now=MONO + 16)
    assert isinstance(beyond, policy.Revalidate)
    unbounded = lookup([entry], [(b"cache-control", b"max-stale")], now=MONO + 10_000)
    assert isinstance(unbounded, policy.ServeStale)


def test_lookup_max_stale_does_not_override_must_revalidate() -> None:
    """RFC 9111 §5.2.2.2: must-revalidate forbids stale use, even when the client accepts it."""
    entry = fresh_for(10, no_stale=True)
    state = lookup([entry], [(b"cache-control", b"max-stale")], now=MONO + 11)
    assert isinstance(state, policy.Revalidate)


def test_lookup_stale_while_revalidate_window() -> None:
    """RFC 5861 §3: within the window the stale response is served and refreshed once."""
    entry = fresh_for(10, stale_while_revalidate=30)
    assert lookup([entry], now=MONO + 20) == policy.ServeStale(entry, 20.0, -10.0, refresh=True)
    assert isinstance(lookup([entry], now=MONO + 41), policy.Revalidate)


@pytest.mark.parametrize(
    "entries", [[], [Entry(StorageDecision(10.0, 0.0))]], ids=["nothing", "stale"]
)
def test_lookup_only_if_cached_without_usable_entry_is_unsatisfiable(
    entries: list[Entry],
) -> None:
    """RFC 9111 §5.2.1.7: only-if-cached: a stored response or 504, never the origin."""
    state = lookup(entries, [(b"cache-control", b"only-if-cached")], now=MONO + 20)
    assert state == policy.Unsatisfiable()


def test_lookup_only_if_cached_with_fresh_entry_is_a_hit() -> None:
    """RFC 9111 §5.2.1.7: a fresh stored response satisfies only-if-cached."""
    state = lookup([fresh_for(60)], [(b"cache-control", b"only-if-cached")])
    assert isinstance(state, policy.Fresh)


def test_lookup_uses_the_newest_matching_variant() -> None:
    """RFC 9111 §4.1: of several matching responses, the most recent one is used."""
    newest, older = fresh_for(60), fresh_for(60)
    state = lookup([newest, older])
    assert isinstance(state, policy.Fresh) and state.entry is newest


# --------------------------------------------------------------------------- stale-if-error


def test_stale_if_error_window() -> None:
    """RFC 5861 §4: a stale response may stand in for an error within the window only."""
    decision = StorageDecision(10.0, 0.0, stale_if_error=30.0)
    assert policy.may_serve_stale_on_error(decision, age=40.0)
    assert not policy.may_serve_stale_on_error(decision, age=40.5)


@pytest.mark.parametrize("flag", ["no_stale", "no_cache"])
def test_stale_if_error_never_for_must_revalidate_or_no_cache(flag: str) -> None:
    """RFC 9111 §4.2.4, §5.2.2.2: responses that demand revalidation are never served stale;
    the cache answers with an error instead."""
    decision = StorageDecision(10.0, 0.0, stale_if_error=300.0, **{flag: True})
    assert not policy.may_serve_stale_on_error(decision, age=11.0)


# --------------------------------------------------------------------------- 304 updates


def test_freshened_headers_replace_all_but_framing() -> None:
    """RFC 9111 §3.2: a 304's fields replace the stored ones of the same name, except
    Content-Length (and the stored body's coding); new fields are added."""
    stored = [
        (b"Content-Type", b"text/plain"),
        (b"Cache-Control", b"max-age=1"),
        (b"X-Old", b"1"),
        (b"X-Old", b"2"),
        (b"Content-Length", b"5"),
        (b"Content-Encoding", b"br"),
    ]
    new = [
        (b"cache-control", b"max-age=60"),
        (b"x-old", b"3"),
        (b"x-new", b"yes"),
        (b"content-length", b"0"),
        (b"content-encoding", b"identity"),
    ]
    assert policy.freshened_headers(stored, new) == [
        (b"Content-Type", b"text/plain"),
        (b"Content-Length", b"5"),
        (b"Content-Encoding", b"br"),
        (b"cache-control", b"max-age=60"),
        (b"x-old", b"3"),
        (b"x-new", b"yes"),
    ]


@pytest.mark.parametrize(
    ("response_headers", "expected"),
    [
        ([(b"etag", b'"v1"')], True),
        ([(b"etag", b'W/"v1"')], True),
        ([(b"etag", b'"v2"')], False),
        ([(b"last-modified", b"Mon, 01 Jan 2024 00:00:00 GMT")], True),
        ([(b"last-modified", b"Tue, 02 Jan 2024 00:00:00 GMT")], False),
        ([], True),
    ],
)
def test_revalidation_matches_selects_by_etag_then_last_modified(
    response_headers: Headers, expected: bool
) -> None:
    """RFC 9111 §4.3.4: a 304 selects stored responses by ETag, else Last-Modified, else the
    one stored response."""
    decision = StorageDecision(
        0.0, 0.0, etag=b'"v1"', last_modified=b"Mon, 01 Jan 2024 00:00:00 GMT"
    )
    assert policy.revalidation_matches(decision, response_headers) is expected


def test_updated_response_gets_new_freshness_and_age_from_the_304() -> None:
    """RFC 9111 §4.3.4: freshness and age come from the merged response and the new
    exchange; Age is not kept in the stored fields (RFC 9111 §5.1: recomputed on each hit)."""
    merged = policy.freshened_headers(
        [(b"cache-control", b"max-age=1"), (b"etag", b'"v1"')],
        [(b"cache-control", b"max-age=300"), (b"age", b"7")],
    )
    decision = decide(merged, request_time=MONO, response_time=MONO + 1)
    assert decision is not None
    assert (decision.freshness_lifetime, decision.initial_age) == (300.0, 8.0)
    assert (b"age", b"7") not in policy.stored_headers(merged, decision)


# --------------------------------------------------------------------------- invalidation


@pytest.mark.parametrize("method", [b"POST", b"PUT", b"DELETE", b"PATCH", b"PURGE"])
def test_unsafe_success_invalidates_target_location_and_content_location(method: bytes) -> None:
    """RFC 9111 §4.4: a non-error response to an unsafe (or unknown) method invalidates the
    target URI and same-origin Location / Content-Location."""
    keys = policy.invalidation_targets(
        method,
        201,
        b"Example.com",
        b"/items?x=1",
        [(b"location", b"/items/7"), (b"content-location", b"http://example.com:80/items/7/v")],
    )
    assert keys == [b"/items?x=1", b"/items/7", b"/items/7/v"]


def test_other_origins_and_relative_paths_are_not_invalidated() -> None:
    """RFC 9111 §4.4: Location / Content-Location of another origin must not be invalidated
    (a denial-of-service vector)."""
    keys = policy.invalidation_targets(
        b"POST",
        200,
        b"example.com",
        b"/a",
        [(b"location", b"http://evil.example/a"), (b"content-location", b"https://example.com/b")],
    )
    assert keys == [b"/a"]


@pytest.mark.parametrize(
    ("method", "status"),
    [(b"GET", 200), (b"HEAD", 200), (b"OPTIONS", 200), (b"POST", 404), (b"DELETE", 500)],
)
def test_safe_methods_and_errors_invalidate_nothing(method: bytes, status: int) -> None:
    """RFC 9111 §4.4: only non-error responses to unsafe methods invalidate."""
    assert policy.invalidation_targets(method, status, b"h", b"/a", []) == []


# --------------------------------------------------------------------------- Cache-Status


@pytest.mark.parametrize(
    ("params", "expected"),
    [
        ({"hit": True, "ttl": 42.9}, b"phantom; hit; ttl=42"),
        ({"fwd": Forward.URI_MISS, "fwd_status": 200, "stored": True},
         b"phantom; fwd=uri-miss; fwd-status=200; stored"),
        ({"fwd": Forward.STALE, "fwd_status": 503, "ttl": -0.5, "detail": "stale-if-error"},
         b"phantom; fwd=stale; fwd-status=503; ttl=-1; detail=stale-if-error"),
        ({"fwd": Forward.URI_MISS, "collapsed": True, "ttl": 60},
         b"phantom; fwd=uri-miss; collapsed; ttl=60"),
        ({"fwd": Forward.METHOD}, b"phantom; fwd=method"),
    ],
)
def test_cache_status(params: dict[str, Any], expected: bytes) -> None:
    """RFC 9211 §2.1-§2.8: hit, fwd, fwd-status, stored, collapsed, ttl (negative when
    stale, rounded down), detail."""
    assert policy.cache_status(**params) == expected


@pytest.mark.parametrize("ttl", [0.2, 42.9, 3600.0, 2.0**31, float("inf"), 1e300])
def test_hit_status_is_cache_status_of_a_hit(ttl: float) -> None:
    """The hot path's remembered formatting says exactly what cache_status says."""
    assert policy.hit_status(ttl) == policy.cache_status(hit=True, ttl=ttl)
    assert policy.hit_status(ttl) == policy.cache_status(hit=True, ttl=ttl)  # remembered


# --------------------------------------------------------------------------- Vary normalisation


@pytest.mark.parametrize(
    ("first", "second"),
    [
        (b"en-US, fr;q=0.5", b"en-US,fr;q=0.5"),
        (b"en, de", b"eN, De"),
        (b"en, de", b" en ,   de"),
        (b"fr;q=0.5, en", b"en;q=1, fr; q=0.500"),
        (b"de;q=1.0, fr;q=0.5", b"de, fr;q=0.5"),
    ],
)
@pytest.mark.parametrize("field", [b"accept-language", b"accept-encoding"])
def test_vary_on_preference_fields_ignores_case_space_order_and_q_spelling(
    field: bytes, first: bytes, second: bytes
) -> None:
    """RFC 9111 §4.1 (a cache MAY normalise selecting fields), RFC 9110 §12.4.2 (q is 1 when
    absent), §12.5.3, §12.5.4 (tokens are case-insensitive): these values select the same
    stored variant."""
    vary = [(b"vary", field)]
    assert policy.vary_key(vary, [(field, first)]) == policy.vary_key(vary, [(field, second)])


@pytest.mark.parametrize(
    ("first", "second"),
    [
        (b"en, fr;q=0.5", b"fr, en;q=0.5"),  # another preference
        # Equal weights: servers break the tie by position (Django, Express's negotiator).
        (b"en, de", b"de, en"),
        (b"en", b"en, fr"),
        (b"gzip", b"gzip;q=0"),  # q=0: "not acceptable"
        (b"x;q=2", b"x"),  # a malformed weight is kept as written
    ],
)
def test_vary_on_preference_fields_still_tells_different_preferences_apart(
    first: bytes, second: bytes
) -> None:
    """RFC 9111 §4.1: normalising must not merge values that mean different things."""
    vary = [(b"vary", b"accept-language")]
    one = policy.vary_key(vary, [(b"accept-language", first)])
    assert one != policy.vary_key(vary, [(b"accept-language", second)])


def test_vary_keeps_order_and_case_of_other_fields() -> None:
    """RFC 9111 §4.1: only whitespace and line-combining normalise a field phantom does not
    know the syntax of; its order and case may matter to the origin."""
    vary = [(b"vary", b"foo")]
    assert policy.vary_key(vary, [(b"foo", b"a, b")]) != policy.vary_key(vary, [(b"foo", b"b, a")])
    assert policy.vary_key(vary, [(b"foo", b"A")]) != policy.vary_key(vary, [(b"foo", b"a")])
    assert policy.vary_key(vary, [(b"foo", b"1"), (b"foo", b"2")]) == policy.vary_key(
        vary, [(b"foo", b"1, 2")]
    )


def test_a_long_preference_value_is_normalised_the_same_way() -> None:
    """Values past the remembered length take the same normalisation, unremembered."""
    vary = [(b"vary", b"accept-language")]
    tags = [b"x%d" % i for i in range(100)]
    assert policy.vary_key(vary, [(b"accept-language", b", ".join(tags))]) == policy.vary_key(
        vary, [(b"accept-language", b",".join(tags).upper())]
    )


def test_a_forwarded_cache_status_is_the_one_cache_status_formats() -> None:
    for fwd, status, stored in [(Forward.URI_MISS, 200, True), (Forward.BYPASS, 404, False)]:
        expected = policy.cache_status(fwd=fwd, fwd_status=status, stored=stored)
        assert policy.forwarded_status(fwd, status, stored) == expected
