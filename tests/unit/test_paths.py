"""phantom.paths: the normal form of a request target (RFC 3986 §6.2.2). Pure, no sockets."""

from __future__ import annotations

import pytest

from phantom.paths import normalize_target, strip_prefix


@pytest.mark.parametrize(
    ("target", "normal"),
    [
        (b"/account", b"/account"),
        (b"/%61ccount", b"/account"),  # §6.2.2.2: an escaped unreserved character is decoded
        (b"/%41%7a%30%2D%2e%5F%7E", b"/Az0-._~"),
        (b"/a%3fb%c3%a9", b"/a%3Fb%C3%A9"),  # §6.2.2.1: other escapes upper-cased, kept encoded
        (b"/%25%36%31", b"/%2561"),  # decoded once only: %25 stays an escape
        (b"/100%", b"/100%"),  # not an escape: left as sent
        (b"/x/../account", b"/account"),  # §6.2.2.3 / §5.2.4
        (b"/x/%2E%2E/account", b"/account"),  # decoded first, then removed
        (b"/a/./b/.", b"/a/b/"),
        (b"/a/b/..", b"/a/"),
        (b"/../../account", b"/account"),  # never above the root
        (b"/.well-known/x", b"/.well-known/x"),
        (b"//account", b"/account"),
        (b"/a///b//", b"/a/b/"),
        (b"/x//../account", b"/x/account"),  # dots first: '..' takes the empty segment
        (b"/%61ccount?a=%61&b=/../", b"/account?a=%61&b=/../"),  # the query is kept as sent
        (b"*", b"*"),
    ],
)
def test_normal_form(target: bytes, normal: bytes) -> None:
    result = normalize_target(target)
    assert result.target(merge_slashes=True) == normal
    assert not result.encoded_separator


def test_repeated_slashes_kept_when_not_merging() -> None:
    result = normalize_target(b"//a//./b?q=//")
    assert result.target(merge_slashes=False) == b"//a//b?q=//"
    assert result.merged == b"/a/b"


@pytest.mark.parametrize(
    ("target", "normal"),
    [
        (b"/%2faccount", b"/%2Faccount"),
        (b"/a%5cb", b"/a%5Cb"),
        (b"/a\\b", b"/a%5Cb"),  # a raw backslash is written as its escape
        (b"/a%00.txt", b"/a%00.txt"),
        (b"/x/..%2F..%2Fetc", b"/x/..%2F..%2Fetc"),  # %2F does not separate segments
    ],
)
def test_encoded_separators_are_flagged_and_stay_encoded(target: bytes, normal: bytes) -> None:
    result = normalize_target(target)
    assert result.encoded_separator
    assert result.target(merge_slashes=True) == normal


@pytest.mark.parametrize(
    ("path", "rest"),
    [("/api/x", "/x"), ("//api//x", "//x"), ("/api", ""), ("///api", "")],
)
def test_strip_prefix_by_the_merged_form(path: str, rest: str) -> None:
    assert strip_prefix(path, "/api") == rest
