"""phantom.cache.ranges: byte ranges of a stored response (RFC 9110 §14, §13.1.5)."""

from __future__ import annotations

import email.utils

import pytest

from phantom.cache.policy import StorageDecision
from phantom.cache.ranges import NotSatisfiable, Partial, Selection, advertised, select

WALL = 1_700_000_000.0
ETAG = b'"v1"'


def date(timestamp: float) -> bytes:
    return email.utils.formatdate(timestamp, usegmt=True).encode("ascii")


DECISION = StorageDecision(60.0, 0.0, etag=ETAG, last_modified=date(WALL - 100))
STORED = [(b"date", date(WALL)), (b"etag", ETAG)]


def ranged(
    value: bytes | None,
    length: int = 10,
    *,
    extra: list[tuple[bytes, bytes]] | None = None,
    method: bytes = b"GET",
    status: int = 200,
    decision: StorageDecision = DECISION,
    stored: list[tuple[bytes, bytes]] = STORED,
) -> Selection:
    request = [] if value is None else [(b"range", value)]
    return select(method, request + (extra or []), status, decision, stored, length)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (b"bytes=0-1", Partial(0, 1, 10)),
        (b"bytes=1-", Partial(1, 9, 10)),
        (b"bytes=-1", Partial(9, 9, 10)),
        (b"bytes=-5", Partial(5, 9, 10)),
        (b"bytes=-50", Partial(0, 9, 10)),  # longer than the body: all of it, as a 206
        (b"bytes=4-400", Partial(4, 9, 10)),  # clamped to the length
        (b"BYTES = 2 - 3", Partial(2, 3, 10)),  # the unit is case-insensitive; OWS allowed
        (b"bytes=9-9", Partial(9, 9, 10)),
        (b"bytes=3-" + b"9" * 40, Partial(3, 9, 10)),
    ],
)
def test_single_ranges_are_sliced(value: bytes, expected: Partial) -> None:
    """RFC 9110 §14.1.2: ``first-last`` (last clamped), ``first-`` and ``-suffix``."""
    assert ranged(value) == expected


@pytest.mark.parametrize(
    "value", [b"bytes=10-", b"bytes=10-20", b"bytes=-0", b"bytes=" + b"9" * 40 + b"-"]
)
def test_unsatisfiable_ranges_are_416(value: bytes) -> None:
    """RFC 9110 §14.1.2, §15.5.17: a range starting at or past the end, or an empty suffix,
    selects nothing: 416 with ``Content-Range: bytes */length``."""
    selection = ranged(value)
    assert selection == NotSatisfiable(10)
    assert selection.content_range == b"bytes */10"


@pytest.mark.parametrize(
    "value",
    [
        b"bytes=0-1,3-4",  # several ranges: the whole 200 is allowed (§14.2)
        b"items=0-1",  # another unit (§14.2: ignored)
        b"bytes=5-2",  # last before first: invalid, ignored
        b"bytes=a-b",
        b"bytes=-",
        b"bytes 0-1",
        b"bytes=",
        b"bytes=+1-2",
    ],
)
def test_other_range_headers_get_the_whole_response(value: bytes) -> None:
    """RFC 9110 §14.2: a server may ignore Range; phantom does for several ranges, other
    units and malformed ranges."""
    assert ranged(value) is None


def test_no_range_is_the_whole_response() -> None:
    assert ranged(None) is None
    assert ranged(b"bytes=0-1", extra=[(b"range", b"bytes=2-3")]) is None


@pytest.mark.parametrize(("method", "status"), [(b"HEAD", 200), (b"GET", 404), (b"GET", 301)])
def test_range_applies_to_get_of_a_stored_200_only(method: bytes, status: int) -> None:
    """RFC 9110 §14.2: Range is defined for GET; phantom slices stored 200s only."""
    assert ranged(b"bytes=0-1", method=method, status=status) is None


def test_empty_representation() -> None:
    """RFC 9110 §14.1.3: of an empty representation only a suffix range is satisfiable, and
    it selects nothing: the whole (empty) 200; ``0-`` is a 416."""
    assert ranged(b"bytes=-5", length=0) is None
    assert ranged(b"bytes=0-", length=0) == NotSatisfiable(0)


def test_content_range_of_a_partial() -> None:
    """RFC 9110 §14.4: ``bytes first-last/complete-length``."""
    assert Partial(5, 9, 10).content_range == b"bytes 5-9/10"


@pytest.mark.parametrize(
    ("if_range", "honoured"),
    [
        (ETAG, True),
        (b'"v2"', False),
        (b'W/"v1"', False),  # a weak tag never matches (strong comparison)
        (date(WALL - 100), True),  # exactly Last-Modified, 100 s before Date: strong
        (date(WALL - 99), False),  # not exactly Last-Modified
        (b"garbage", False),
    ],
)
def test_if_range(if_range: bytes, honoured: bool) -> None:
    """RFC 9110 §13.1.5: the range is served only when If-Range holds; otherwise the whole
    response (not a 412)."""
    selection = ranged(b"bytes=0-1", extra=[(b"if-range", if_range)])
    assert selection == (Partial(0, 1, 10) if honoured else None)


def test_if_range_date_needs_a_strong_last_modified() -> None:
    """RFC 9110 §13.1.5, §8.8.2.2: a Last-Modified less than a second before Date (or with no
    Date to tell) is weak: the range is not served."""
    same_second = StorageDecision(60.0, 0.0, last_modified=date(WALL))
    extra = [(b"if-range", date(WALL))]
    assert ranged(b"bytes=0-1", extra=extra, decision=same_second) is None
    assert ranged(b"bytes=0-1", extra=[(b"if-range", date(WALL - 100))], stored=[]) is None


def test_if_range_on_a_stored_response_without_etag() -> None:
    """RFC 9110 §13.1.5: an entity tag cannot match a response that has none."""
    no_etag = StorageDecision(60.0, 0.0)
    assert ranged(b"bytes=0-1", extra=[(b"if-range", ETAG)], decision=no_etag) is None


def test_stored_200s_advertise_byte_ranges() -> None:
    """RFC 9110 §14.3: a stored 200 says ``Accept-Ranges: bytes`` (replacing the origin's
    value: phantom serves its ranges itself); other statuses are left alone."""
    fields = [(b"content-type", b"text/plain"), (b"Accept-Ranges", b"none")]
    assert advertised(200, fields) == [
        (b"content-type", b"text/plain"),
        (b"Accept-Ranges", b"bytes"),
    ]
    assert advertised(404, fields) == fields
