"""phantom.cache.conditionals: preconditions evaluated against a stored response
(RFC 9110 §13, RFC 9111 §4.3.2)."""

from __future__ import annotations

import email.utils

import pytest

from phantom.cache.conditionals import Precondition, evaluate, strong_match
from phantom.cache.policy import StorageDecision

WALL = 1_700_000_000.0
PASSED, NOT_MODIFIED, FAILED = (
    Precondition.PASSED,
    Precondition.NOT_MODIFIED,
    Precondition.FAILED,
)


def date(timestamp: float) -> bytes:
    return email.utils.formatdate(timestamp, usegmt=True).encode("ascii")


def stored(
    etag: bytes | None = b'"v1"', last_modified: float | None = WALL - 100
) -> StorageDecision:
    return StorageDecision(
        60.0,
        0.0,
        etag=etag,
        last_modified=None if last_modified is None else date(last_modified),
    )


def check(
    request: list[tuple[bytes, bytes]],
    decision: StorageDecision | None = None,
    *,
    status: int = 200,
    sent: float | None = WALL,
) -> Precondition:
    headers = [] if sent is None else [(b"date", date(sent))]
    return evaluate(request, status, decision or stored(), headers)


def test_no_preconditions_pass() -> None:
    """RFC 9110 §13.2.2: without preconditions the stored response is served."""
    assert check([(b"accept", b"*/*")]) is PASSED


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (b'"v1"', PASSED),
        (b'"v0", "v1"', PASSED),
        (b"*", PASSED),
        (b'"v2"', FAILED),
        (b'W/"v1"', FAILED),  # the strong comparison: a weak tag never matches
    ],
)
def test_if_match_uses_the_strong_comparison(value: bytes, expected: Precondition) -> None:
    """RFC 9110 §13.1.1, §8.8.3.2: If-Match is true for ``*`` or a tag strongly equal to the
    stored ETag; false is a 412 (§13.2.2 step 1)."""
    assert check([(b"if-match", value)]) is expected


def test_if_match_fails_on_a_weak_or_missing_stored_etag() -> None:
    """RFC 9110 §8.8.3.2: a weak stored ETag matches nothing strongly; no ETag, nothing."""
    assert check([(b"if-match", b'"v1"')], stored(etag=b'W/"v1"')) is FAILED
    assert check([(b"if-match", b'"v1"')], stored(etag=None)) is FAILED
    assert check([(b"if-match", b"*")], stored(etag=None)) is PASSED


@pytest.mark.parametrize(
    ("since", "expected"),
    [(WALL - 100, PASSED), (WALL, PASSED), (WALL - 101, FAILED)],
    ids=["same", "later", "earlier"],
)
def test_if_unmodified_since(since: float, expected: Precondition) -> None:
    """RFC 9110 §13.1.4: false (412) when the stored Last-Modified is later than the date."""
    assert check([(b"if-unmodified-since", date(since))]) is expected


def test_if_unmodified_since_is_ignored_when_it_cannot_be_evaluated() -> None:
    """RFC 9110 §13.1.4: ignored with If-Match present, with an invalid date, or without a
    stored modification date."""
    early = (b"if-unmodified-since", date(WALL - 1000))
    assert check([(b"if-match", b'"v1"'), early]) is PASSED
    assert check([(b"if-unmodified-since", b"yesterday")]) is PASSED
    assert check([early], stored(last_modified=None)) is PASSED


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (b'"v1"', NOT_MODIFIED),
        (b'W/"v1"', NOT_MODIFIED),  # the weak comparison
        (b'"a", "v1"', NOT_MODIFIED),
        (b"*", NOT_MODIFIED),
        (b'"v2"', PASSED),
    ],
)
def test_if_none_match_uses_the_weak_comparison(value: bytes, expected: Precondition) -> None:
    """RFC 9110 §13.1.2: false (304 for GET/HEAD) when ``*`` or a tag weakly equal to the
    stored ETag is listed."""
    assert check([(b"if-none-match", value)]) is expected


def test_if_none_match_takes_precedence_over_if_modified_since() -> None:
    """RFC 9110 §13.1.3: If-Modified-Since is ignored when If-None-Match is present."""
    request = [(b"if-none-match", b'"v2"'), (b"if-modified-since", date(WALL))]
    assert check(request) is PASSED


@pytest.mark.parametrize(
    ("since", "expected"),
    [(WALL - 100, NOT_MODIFIED), (WALL, NOT_MODIFIED), (WALL - 101, PASSED)],
    ids=["same", "later", "earlier"],
)
def test_if_modified_since_against_last_modified(since: float, expected: Precondition) -> None:
    """RFC 9110 §13.1.3: false (304) when the stored Last-Modified is not later than it."""
    assert check([(b"if-modified-since", date(since))]) is expected


def test_if_modified_since_uses_date_without_last_modified() -> None:
    """RFC 9111 §4.3.2: a stored response without Last-Modified is compared by its Date."""
    decision = stored(last_modified=None)
    assert check([(b"if-modified-since", date(WALL))], decision) is NOT_MODIFIED
    assert check([(b"if-modified-since", date(WALL - 1))], decision) is PASSED
    assert check([(b"if-modified-since", date(WALL))], decision, sent=None) is PASSED


def test_if_modified_since_accepts_the_obsolete_date_formats() -> None:
    """RFC 9110 §5.6.7: recipients parse RFC 850 and asctime dates too."""
    rfc850 = b"Tuesday, 14-Nov-23 22:13:20 GMT"  # WALL
    assert check([(b"if-modified-since", rfc850)]) is NOT_MODIFIED
    assert check([(b"if-modified-since", b"not a date")]) is PASSED


def test_failed_match_comes_before_not_modified() -> None:
    """RFC 9110 §13.2.2: steps 1-2 (412) are evaluated before steps 3-4 (304)."""
    request = [(b"if-match", b'"v2"'), (b"if-none-match", b'"v1"')]
    assert check(request) is FAILED


@pytest.mark.parametrize("status", [404, 301, 410])
def test_preconditions_are_ignored_for_a_stored_non_2xx(status: int) -> None:
    """RFC 9110 §13.2.1: a server ignores preconditions when its answer without them would
    not be a 2xx."""
    assert check([(b"if-match", b'"v2"')], status=status) is PASSED
    assert check([(b"if-none-match", b'"v1"')], status=status) is PASSED


def test_strong_match() -> None:
    """RFC 9110 §8.8.3.2: equal characters and neither weak."""
    assert strong_match(b' "a" ', b'"a"')
    assert not strong_match(b'W/"a"', b'W/"a"')
    assert not strong_match(b'"a"', None)


@pytest.mark.parametrize(
    ("request_headers", "expected"),
    [
        ([(b"if-none-match", b'"v1"')], True),
        ([(b"if-none-match", b'W/"v1"')], True),  # weak comparison (RFC 9110 §13.1.2)
        ([(b"if-none-match", b'"x", "v1"')], True),
        ([(b"if-none-match", b'"x,y", "z"')], False),  # commas inside a tag do not split it
        ([(b"if-none-match", b"*")], True),
        ([(b"if-none-match", b'"other"')], False),
        # If-None-Match decides; If-Modified-Since is then ignored (RFC 9110 §13.1.3)
        ([(b"if-none-match", b'"other"'), (b"if-modified-since", b"Fri, 01 Jan 2100 00:00:00 GMT")], False),  # noqa: E501
        ([(b"if-modified-since", b"Mon, 01 Jan 2024 00:00:00 GMT")], True),  # equal
        ([(b"if-modified-since", b"Sun, 31 Dec 2023 23:59:59 GMT")], False),  # before
        ([(b"if-modified-since", b"not a date")], False),
        ([], False),
    ],
)
def test_not_modified(request_headers: list[tuple[bytes, bytes]], expected: bool) -> None:
    """RFC 9110 §13.1.2 (If-None-Match, weak comparison), §13.1.3 (If-Modified-Since) and
    RFC 9111 §4.3.2: a cache answers 304 for a matching stored response."""
    decision = StorageDecision(
        60.0, 0.0, etag=b'W/"v1"', last_modified=b"Mon, 01 Jan 2024 00:00:00 GMT"
    )
    outcome = evaluate(request_headers, 200, decision, [])
    assert (outcome is NOT_MODIFIED) is expected


def test_if_modified_since_with_no_stored_date_at_all_is_a_full_response() -> None:
    """RFC 9110 §13.1.3: neither Last-Modified nor Date stored: nothing to compare with, so
    the full response."""
    headers = [(b"if-modified-since", b"Mon, 01 Jan 2024 00:00:00 GMT")]
    assert evaluate(headers, 200, StorageDecision(60.0, 0.0), []) is PASSED
