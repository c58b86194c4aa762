"""Request framing checks (pure, RFC 9112): raw head bytes in, a verdict out."""

from __future__ import annotations

import pytest

from phantom.errors import RequestRejected
from phantom.framing import HeadScanner, RequestHead, body_framing, check_head

H = b"Host: example.test\r\n"


def head(*lines: bytes, request_line: bytes = b"POST /p HTTP/1.1") -> bytes:
    return request_line + b"\r\n" + b"".join(line + b"\r\n" for line in lines)


def status_of(raw: bytes, max_headers: int = 100) -> int:
    with pytest.raises(RequestRejected) as info:
        check_head(raw, max_headers)
    return info.value.status


REFUSED = {
    "CL with TE": (head(H[:-2], b"Content-Length: 5", b"Transfer-Encoding: chunked"), 400),
    "two CLs": (head(H[:-2], b"Content-Length: 5", b"Content-Length: 6"), 400),
    "CL list differs": (head(H[:-2], b"Content-Length: 5, 6"), 400),
    "CL not a number": (head(H[:-2], b"Content-Length: +5"), 400),
    "CL negative": (head(H[:-2], b"Content-Length: -1"), 400),
    "chunked twice": (head(H[:-2], b"Transfer-Encoding: chunked, chunked"), 400),
    "chunked not last": (head(H[:-2], b"Transfer-Encoding: chunked, gzip"), 400),
    "TE in two fields": (
        head(H[:-2], b"Transfer-Encoding: chunked", b"Transfer-Encoding: chunked"),
        400,
    ),
    "x-chunked": (head(H[:-2], b"Transfer-Encoding: x-chunked"), 501),
    "quoted chunked": (head(H[:-2], b'Transfer-Encoding: "chunked"'), 501),
    "gzip, chunked": (head(H[:-2], b"Transfer-Encoding: gzip, chunked"), 501),
    "TE in HTTP/1.0": (
        head(b"Transfer-Encoding: chunked", request_line=b"POST / HTTP/1.0"),
        400,
    ),
    "obs-fold": (head(H[:-2], b"X-A: one", b" two"), 400),
    "obs-fold with tab": (head(H[:-2], b"X-A: one", b"\ttwo"), 400),
    "space before colon": (head(H[:-2], b"X-A : one"), 400),
    "tab before colon": (head(H[:-2], b"X-A\t: one"), 400),
    "NUL in value": (head(H[:-2], b"X-A: o\x00ne"), 400),
    "SOH in value": (head(H[:-2], b"X-A: o\x01ne"), 400),
    "DEL in value": (head(H[:-2], b"X-A: o\x7fne"), 400),
    "bare CR": (head(H[:-2], b"X-A: one\rX-B: two"), 400),
    "control in name": (head(H[:-2], b"X-\x01A: one"), 400),
    "no colon": (head(H[:-2], b"X-A one"), 400),
    "no Host in 1.1": (head(b"Accept: */*"), 400),
    "two Hosts": (head(H[:-2], b"Host: other.test"), 400),
    "invalid Host": (head(b"Host: a b"), 400),
    "Host with userinfo": (head(b"Host: user@a"), 400),
    "Host with path": (head(b"Host: a/b"), 400),
    "CONNECT": (head(b"Host: a:443", request_line=b"CONNECT a:443 HTTP/1.1"), 405),
    "authority-form GET": (head(H[:-2], request_line=b"GET a:443 HTTP/1.1"), 400),
    "asterisk GET": (head(H[:-2], request_line=b"GET * HTTP/1.1"), 400),
    "absolute ftp": (head(H[:-2], request_line=b"GET ftp://a/ HTTP/1.1"), 400),
    "absolute userinfo": (head(H[:-2], request_line=b"GET http://u@a/ HTTP/1.1"), 400),
    "absolute empty authority": (head(H[:-2], request_line=b"GET http:///x HTTP/1.1"), 400),
    "two spaces": (head(H[:-2], request_line=b"GET  / HTTP/1.1"), 400),
    "HTTP/2.0": (head(H[:-2], request_line=b"GET / HTTP/2.0"), 505),
    "garbage version": (head(H[:-2], request_line=b"GET / FOO"), 400),
}


@pytest.mark.parametrize("raw, status", REFUSED.values(), ids=list(REFUSED))
def test_refused(raw: bytes, status: int) -> None:
    assert status_of(raw) == status


def test_too_many_fields_is_431() -> None:
    fields = [b"X-%d: v" % i for i in range(10)]
    assert status_of(head(H[:-2], *fields), max_headers=10) == 431
    assert check_head(head(H[:-2], *fields[:9]), max_headers=10) == RequestHead(b"/p")


ACCEPTED = {
    "plain": (head(H[:-2], b"Content-Length: 3"), RequestHead(b"/p")),
    "same CL twice": (
        head(H[:-2], b"Content-Length: 3", b"Content-Length: 3"),
        RequestHead(b"/p"),
    ),
    "chunked with whitespace": (
        head(H[:-2], b"Transfer-Encoding:  Chunked \t"),
        RequestHead(b"/p"),
    ),
    "tab inside a value": (head(H[:-2], b"X-A: a\tb"), RequestHead(b"/p")),
    "obs-text in a value": (head(H[:-2], b"X-A: caf\xc3\xa9"), RequestHead(b"/p")),
    "HTTP/1.0 without Host": (head(request_line=b"GET / HTTP/1.0"), RequestHead(b"/")),
    "IPv6 Host": (head(b"Host: [::1]:8080"), RequestHead(b"/p")),
    "empty Host": (head(b"Host:"), RequestHead(b"/p")),
    "OPTIONS *": (head(H[:-2], request_line=b"OPTIONS * HTTP/1.1"), RequestHead(b"*")),
    "absolute-form": (
        head(H[:-2], request_line=b"GET http://Other.test:81/a/b?q=1 HTTP/1.1"),
        RequestHead(b"/a/b?q=1", b"Other.test:81"),
    ),
    "absolute-form without path": (
        head(H[:-2], request_line=b"GET HTTPS://other.test?x HTTP/1.1"),
        RequestHead(b"/?x", b"other.test"),
    ),
    "LF line endings": (b"GET /x HTTP/1.1\nHost: a\n", RequestHead(b"/x")),
}


@pytest.mark.parametrize("raw, expected", ACCEPTED.values(), ids=list(ACCEPTED))
def test_accepted(raw: bytes, expected: RequestHead) -> None:
    assert check_head(raw, 100) == expected


# -- the scanner -----------------------------------------------------------------------------


def test_scanner_finds_the_head_fed_one_byte_at_a_time() -> None:
    raw = b"\r\nGET / HTTP/1.1\r\nHost: a\r\n\r\nBODY"
    scanner = HeadScanner(max_request_line=100, max_header_bytes=1000)
    assert scanner.empty
    found = None
    for i in range(len(raw)):
        scanner.feed(raw[i : i + 1])
        found = scanner.head()
        if found is not None:
            break
    assert found == b"GET / HTTP/1.1\r\nHost: a\r\n"
    assert not scanner.empty


def test_scanner_leading_empty_lines_do_not_count_as_a_request() -> None:
    scanner = HeadScanner(max_request_line=100, max_header_bytes=1000)
    scanner.feed(b"\r\n\r\n")
    assert scanner.head() is None and scanner.empty


def test_scanner_lf_only_head() -> None:
    scanner = HeadScanner(max_request_line=100, max_header_bytes=1000)
    scanner.feed(b"GET / HTTP/1.0\n\n")
    assert scanner.head() == b"GET / HTTP/1.0\n"


def test_scanner_reset_with_pipelined_bytes() -> None:
    scanner = HeadScanner(max_request_line=100, max_header_bytes=1000)
    scanner.feed(b"GET /a HTTP/1.1\r\nHost: a\r\n\r\n")
    assert scanner.head() is not None
    scanner.reset(b"GET /b HTTP/1.1\r\nHost: a\r\n\r\n")
    assert scanner.head() == b"GET /b HTTP/1.1\r\nHost: a\r\n"


def test_scanner_request_line_limit_is_414_before_the_line_ends() -> None:
    scanner = HeadScanner(max_request_line=20, max_header_bytes=1000)
    scanner.feed(b"GET /" + b"a" * 15 + b" HTTP/1.1")  # 29 bytes, no LF yet
    with pytest.raises(RequestRejected) as info:
        scanner.head()
    assert info.value.status == 414


def test_scanner_request_line_at_the_limit_passes() -> None:
    line = b"GET /" + b"a" * 6 + b" HTTP/1.1"  # 20 bytes
    scanner = HeadScanner(max_request_line=20, max_header_bytes=1000)
    scanner.feed(line + b"\r\nHost: a\r\n\r\n")
    assert scanner.head() == line + b"\r\nHost: a\r\n"


@pytest.mark.parametrize("complete", [False, True])
def test_scanner_head_limit_is_431(complete: bool) -> None:
    scanner = HeadScanner(max_request_line=100, max_header_bytes=200)
    scanner.feed(b"GET / HTTP/1.1\r\n" + b"X-A: " + b"a" * 300 + b"\r\n")
    if complete:
        scanner.feed(b"\r\n")
    with pytest.raises(RequestRejected) as info:
        scanner.head()
    assert info.value.status == 431


@pytest.mark.parametrize(
    ("fields", "chunked", "length", "has_body"),
    [
        ([], False, None, False),
        ([(b"Content-Length", b"0")], False, b"0", False),
        ([(b"content-length", b"5")], False, b"5", True),
        ([(b"Transfer-Encoding", b" Chunked ")], True, None, True),
        ([(b"Content-Length", b"00")], False, b"00", True),  # no benefit of the doubt
        ([(b"X-Length", b"5")], False, None, False),
    ],
)
def test_body_framing(
    fields: list[tuple[bytes, bytes]], chunked: bool, length: bytes | None, has_body: bool
) -> None:
    """RFC 9112 §6.3: a request has a body when chunked or with a Content-Length above 0."""
    framing = body_framing(fields)
    assert (framing.chunked, framing.length, framing.has_body) == (chunked, length, has_body)
