"""phantom.cache.targeted and CDN-Cache-Control in the storage decision (RFC 9213; RFC 8941
for the field's syntax; the policy's RFC 9111 rules for the rest)."""

from __future__ import annotations

import pytest
from storage_decisions import Headers
from storage_decisions import decide as _decide

from phantom.cache import targeted
from phantom.cache.policy import StorageDecision


def decide(
    response_headers: Headers,
    request_headers: Headers | None = None,
    *,
    enabled: bool = True,
    surrogate_control: bool = True,
) -> StorageDecision | None:
    return _decide(
        response_headers,
        request_headers,
        surrogate_control=surrogate_control,
        cdn_cache_control=enabled,
    )


def lifetime(*response_headers: tuple[bytes, bytes], enabled: bool = True) -> float | None:
    decision = decide(list(response_headers), enabled=enabled)
    return None if decision is None else decision.freshness_lifetime


def cdn(value: bytes) -> tuple[bytes, bytes]:
    return (b"cdn-cache-control", value)


def cc(value: bytes) -> tuple[bytes, bytes]:
    return (b"cache-control", value)


@pytest.mark.parametrize(
    ("lines", "expected"),
    [
        ([b"max-age=3600"], {"max-age": "3600"}),
        ([b"foobar, max-age=3600"], {"foobar": None, "max-age": "3600"}),
        ([b"no-store", b"max-age=5"], {"no-store": None, "max-age": "5"}),  # lines join
        ([b"max-age=5, max-age=9"], {"max-age": "9"}),  # RFC 8941 §4.2.2: the last wins
        ([b"private, must-revalidate=?0"], {"private": None}),  # ?0 is false: absent
        ([b"public=?1;x=2"], {"public": None}),  # parameters ignored
        ([b'no-cache=("set-cookie" "x-a")'], {"no-cache": "set-cookie,x-a"}),
        ([b'private="set-cookie"'], {"private": "set-cookie"}),
        ([b"none"], {"none": None}),  # RFC 9213 §3.1: a field that says nothing known
    ],
)
def test_directives_are_a_structured_dictionary(
    lines: list[bytes], expected: dict[str, str | None]
) -> None:
    """RFC 9213 §2.1: a targeted field is an RFC 8941 Dictionary of cache directives."""
    assert targeted.directives(lines) == expected


@pytest.mark.parametrize(
    "value",
    [
        b"",
        b"max-age=10000, &&&&&",  # not a key
        b"max-age =100",  # no space before "="
        b"max-age= 100",  # nor after it
        b"MaX-aGe=3600",  # keys are lowercase
        b"max-age=60,",  # trailing comma
        b"no-cache=(a b",  # unclosed inner list
        b'private="unterminated',
    ],
)
def test_invalid_or_empty_field_is_ignored(value: bytes) -> None:
    """RFC 9213 §2.2: an empty field, or one that fails to parse as a Dictionary, is ignored
    as if absent: the cache falls back to Cache-Control."""
    assert targeted.directives([value]) is None
    assert targeted.directives([]) is None
    assert decide([cdn(value), cc(b"no-store")]) is None
    assert lifetime(cdn(value), cc(b"max-age=30")) == 30.0


@pytest.mark.parametrize("value", [b'max-age="10000"', b"max-age=1.5", b"max-age=-1", b"max-age"])
def test_seconds_of_another_type_are_skipped_not_coerced(value: bytes) -> None:
    """RFC 9213 §2.1: values that violate a directive's inferred type (max-age is an integer)
    are not consumed; the field stays valid and still stands for Cache-Control, so
    ``Cache-Control: no-store`` does not apply and nothing gives freshness."""
    assert targeted.directives([value]) == {}
    assert decide([cdn(value), cc(b"no-store")]) is None
    assert decide([cdn(value), cc(b"max-age=600")]) is None


def test_cdn_cache_control_stands_for_cache_control() -> None:
    """RFC 9213 §2.1: a cache that uses a targeted field ignores the other cache-control
    fields: a long CDN max-age beats a short or no-store Cache-Control, a short one a long
    one, and its own max-age beats Expires."""
    assert lifetime(cdn(b"max-age=3600"), cc(b"max-age=1")) == 3600.0
    assert lifetime(cdn(b"max-age=10000"), cc(b"no-store")) == 10000.0
    assert lifetime(cdn(b"max-age=1"), cc(b"max-age=3600")) == 1.0
    assert lifetime(cdn(b"max-age=3600"), (b"expires", b"0")) == 3600.0
    assert lifetime(cdn(b"max-age=99999999999")) == 2.0**31  # RFC 9111 §1.2.2 cap
    assert lifetime(cdn(b"s-maxage=20, max-age=5")) == 20.0


@pytest.mark.parametrize(
    "value", [b"max-age=0", b"no-store", b"private", b"no-cache", b"max-age=3600, no-cache"]
)
def test_cdn_directives_that_forbid_reuse_win_over_a_fresh_cache_control(value: bytes) -> None:
    """RFC 9213 §2.1 with RFC 9111 §5.2.2: CDN-Cache-Control ``max-age=0``, ``no-store``,
    ``private`` or ``no-cache`` stops reuse however fresh Cache-Control and Expires say it is
    (with no validator, such a response is not stored at all)."""
    fresh = [cc(b"max-age=10000"), (b"expires", b"Tue, 19 Jan 2038 03:14:07 GMT")]
    assert decide([cdn(value), *fresh]) is None


def test_age_beyond_the_cdn_max_age_is_stale() -> None:
    """RFC 9111 §4.2.3 applies as ever: Age 7200 exceeds a CDN max-age of 3600."""
    assert decide([cdn(b"max-age=3600"), (b"age", b"7200")]) is None


def test_cache_control_private_still_keeps_a_page_out() -> None:
    """phantom's own rule (docs/caching.md): CDN-Cache-Control may widen what Cache-Control allows,
    but never turns a page marked ``private`` for one user into a shared one; Set-Cookie and
    Authorization are judged as without it."""
    assert decide([cdn(b"max-age=600"), cc(b"private, max-age=60")]) is None
    assert decide([cdn(b"max-age=600"), (b"set-cookie", b"a=1")]) is None
    assert decide([cdn(b"max-age=600")], [(b"authorization", b"Bearer t")]) is None
    assert decide([cdn(b"max-age=600, public")], [(b"authorization", b"Bearer t")]) is not None


def test_surrogate_control_comes_first() -> None:
    """Surrogate-Control (addressed to surrogates like phantom, Edge Architecture §2.2) keeps
    precedence over the CDN field."""
    assert lifetime(cdn(b"max-age=600"), (b"surrogate-control", b"max-age=30")) == 30.0
    assert decide([cdn(b"max-age=600"), (b"surrogate-control", b"no-store")]) is None


def test_cdn_cache_control_is_ignored_when_turned_off() -> None:
    """``cdn_cache_control = false``: the header means nothing to phantom (RFC 9111 only)."""
    assert lifetime(cdn(b"max-age=600"), cc(b"max-age=5"), enabled=False) == 5.0
    assert decide([cdn(b"max-age=600"), cc(b"no-store")], enabled=False) is None
