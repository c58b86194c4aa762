"""The backend fast lane's response head parser (pure): what it takes must be read exactly as
h11 (the client side, after sending a matching request) reads it (status, reason, fields, body
length, keep-alive), and everything unusual must be left to h11 (None)."""

from __future__ import annotations

import time

import h11
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from phantom.framing import SimpleResponse, ends_with_bare_lf, parse_simple_response

MAX_HEADERS = 100


def response(*lines: bytes, status: bytes = b"HTTP/1.1 200 OK") -> bytes:
    return status + b"\r\n" + b"".join(item + b"\r\n" for item in lines) + b"\r\n"


def simple(
    data: bytes, method: bytes = b"GET", max_headers: int = MAX_HEADERS
) -> SimpleResponse | None:
    """Parse as the upstream does: ``end`` is where the first CRLF CRLF starts."""
    end = data.find(b"\r\n\r\n")
    assert end >= 0, "a test head must have its blank line"
    return parse_simple_response(data, end, method, max_headers)


def h11_read(head: bytes, method: bytes, length: int) -> tuple[h11.Response, bytes, h11.Connection]:
    """How h11 reads ``head`` followed by ``length`` body bytes and then bytes that are not part
    of the response: the final response, the body it delimits, and the connection afterwards."""
    conn = h11.Connection(h11.CLIENT)
    conn.send(h11.Request(method=method, target=b"/", headers=[(b"Host", b"backend.test")]))
    conn.send(h11.EndOfMessage())
    conn.receive_data(head + b"b" * length + b"NEXT")
    response = conn.next_event()
    assert isinstance(response, h11.Response), f"h11 read {response!r} first"
    body = b""
    while not isinstance(event := conn.next_event(), h11.EndOfMessage):
        assert isinstance(event, h11.Data), f"h11 read {event!r} where the body should end"
        body += event.data
    return response, body, conn


def assert_read_as_h11_reads(data: bytes, method: bytes = b"GET") -> SimpleResponse:
    parsed = simple(data, method)
    assert parsed is not None, "the fast lane refused a simple head"
    head = data[: parsed.end]
    event, body, conn = h11_read(head, method, parsed.length)
    assert (parsed.status, parsed.reason) == (event.status_code, event.reason)
    assert parsed.headers == list(event.headers.raw_items())
    assert len(body) == parsed.length
    # Keep-alive, as the fast lane assumes: h11 would reuse the connection too.
    assert conn.their_state is h11.DONE
    assert conn.trailing_data == (b"NEXT", False)
    return parsed


ACCEPTED = {
    "minimal": response(b"Content-Length: 5"),
    "typical": response(
        b"Content-Type: text/html; charset=utf-8",
        b"Cache-Control: no-store",
        b"ETag: W/\"x1\"",
        b"Set-Cookie: a=1; Path=/",
        b"Set-Cookie: b=2",
        b"Content-Length: 12",
    ),
    "names as the backend spelled them": response(b"content-LENGTH: 3", b"X-Mixed-Case: v"),
    "whitespace around values": response(b"Content-Length:\t 4 \t", b"X-A:  a \t b  "),
    "empty values": response(b"X-Empty:", b"X-Blank: \t ", b"Content-Length: 0"),
    "leading zeros in Content-Length": response(b"Content-Length: 007"),
    "Connection keep-alive": response(b"Connection: Keep-Alive", b"Content-Length: 1"),
    "Keep-Alive parameters": response(b"Keep-Alive: timeout=5, max=100", b"Content-Length: 1"),
    "empty reason": response(b"Content-Length: 2", status=b"HTTP/1.1 200 "),
    "reason with spaces and tabs": response(
        b"Content-Length: 2", status=b"HTTP/1.1 404 Not \t Found at all"
    ),
    "500": response(b"Content-Length: 6", status=b"HTTP/1.1 500 Internal Server Error"),
    "599": response(b"Content-Length: 1", status=b"HTTP/1.1 599 Odd"),
    "204 without length": response(status=b"HTTP/1.1 204 No Content"),
    "304 without length": response(b"ETag: \"a\"", status=b"HTTP/1.1 304 Not Modified"),
}


@pytest.mark.parametrize("data", ACCEPTED.values(), ids=list(ACCEPTED))
def test_accepted_heads_are_read_as_h11_reads_them(data: bytes) -> None:
    parsed = assert_read_as_h11_reads(data)
    assert parsed.end == len(data)


def test_the_head_ends_where_the_blank_line_does_and_the_body_follows() -> None:
    data = response(b"Content-Length: 5") + b"helloHTTP/1.1 200 OK\r\n"
    parsed = simple(data)
    assert parsed is not None
    assert data[parsed.end : parsed.end + parsed.length] == b"hello"


@pytest.mark.parametrize(
    "data, method",
    [
        (response(b"Content-Length: 1234"), b"HEAD"),
        (response(b"Content-Length: 10", status=b"HTTP/1.1 204 No Content"), b"GET"),
        (response(b"Content-Length: 10", status=b"HTTP/1.1 304 Not Modified"), b"GET"),
        (response(status=b"HTTP/1.1 200 OK"), b"HEAD"),
        (response(b"Content-Length: 0"), b"GET"),
    ],
    ids=["HEAD", "204", "304", "HEAD without length", "empty body"],
)
def test_bodiless_answers_have_length_zero(data: bytes, method: bytes) -> None:
    parsed = assert_read_as_h11_reads(data, method)
    assert parsed.length == 0


LEFT_TO_H11 = {
    "100 Continue": response(status=b"HTTP/1.1 100 Continue"),
    "103 Early Hints": response(b"Link: </a.css>; rel=preload", status=b"HTTP/1.1 103 Early"),
    "101 Switching Protocols": response(
        b"Connection: Upgrade", b"Upgrade: websocket", status=b"HTTP/1.1 101 Switching"
    ),
    "HTTP/1.0": response(b"Content-Length: 2", status=b"HTTP/1.0 200 OK"),
    "HTTP/2": response(b"Content-Length: 2", status=b"HTTP/2 200 OK"),
    "lowercase version": response(b"Content-Length: 2", status=b"http/1.1 200 OK"),
    "status 600": response(b"Content-Length: 2", status=b"HTTP/1.1 600 Odd"),
    "two-digit status": response(b"Content-Length: 2", status=b"HTTP/1.1 20 OK"),
    "missing reason SP": response(b"Content-Length: 2", status=b"HTTP/1.1 200"),
    "two spaces before status": response(b"Content-Length: 2", status=b"HTTP/1.1  200 OK"),
    "obs-text in reason": response(b"Content-Length: 2", status=b"HTTP/1.1 200 \xc3\xa9"),
    "chunked": response(b"Transfer-Encoding: chunked"),
    "TE and CL": response(b"Transfer-Encoding: chunked", b"Content-Length: 5"),
    "TE identity": response(b"Transfer-Encoding: identity", b"Content-Length: 5"),
    "two equal Content-Lengths": response(b"Content-Length: 5", b"Content-Length: 5"),
    "two Content-Lengths": response(b"Content-Length: 5", b"Content-Length: 6"),
    "list Content-Length": response(b"Content-Length: 5, 5"),
    "signed Content-Length": response(b"Content-Length: +5"),
    "negative Content-Length": response(b"Content-Length: -1"),
    "hex Content-Length": response(b"Content-Length: 0x5"),
    "empty Content-Length": response(b"Content-Length:"),
    "Connection close": response(b"Connection: close", b"Content-Length: 2"),
    "Connection keep-alive then close": response(
        b"Connection: keep-alive", b"Connection: close", b"Content-Length: 2"
    ),
    "Connection with a field name": response(b"Connection: keep-alive, X-A", b"Content-Length: 2"),
    "Connection upgrade": response(b"Connection: upgrade", b"Content-Length: 2"),
    "obs-fold": response(b"Content-Length: 2", b"X-A: one", b" two"),
    "obs-fold with a tab": response(b"Content-Length: 2", b"X-A: one", b"\ttwo"),
    "space before colon": response(b"Content-Length : 2"),
    "no colon": response(b"Content-Length: 2", b"X-A one"),
    "empty name": response(b"Content-Length: 2", b": one"),
    "NUL in value": response(b"Content-Length: 2", b"X-A: a\x00b"),
    "control byte in value": response(b"Content-Length: 2", b"X-A: a\x01b"),
    "DEL in value": response(b"Content-Length: 2", b"X-A: a\x7fb"),
    "obs-text in value": response(b"Content-Length: 2", b"X-A: caf\xe9"),
    "bare CR in value": response(b"Content-Length: 2", b"X-A: a\rb"),
    "bare LF inside the head": response(b"Content-Length: 2", b"X-A: a\nContent-Length: 9"),
    "bare LF line endings before the CRLF": b"HTTP/1.1 200 OK\nContent-Length: 2\n\r\n\r\nok",
    "bare LF in status line": response(b"Content-Length: 2", status=b"HTTP/1.1 200 O\nK"),
}


@pytest.mark.parametrize("data", LEFT_TO_H11.values(), ids=list(LEFT_TO_H11))
def test_anything_unusual_is_left_to_h11(data: bytes) -> None:
    assert simple(data) is None
    assert simple(data, b"HEAD") is None


def test_a_close_delimited_body_is_left_to_h11_but_a_head_answer_has_none() -> None:
    data = response(b"Content-Type: text/plain")
    assert simple(data) is None
    assert simple(response(b"Content-Type: text/plain", status=b"HTTP/1.1 404 Gone")) is None
    parsed = assert_read_as_h11_reads(data, b"HEAD")
    assert parsed.length == 0


@pytest.mark.parametrize(
    "start, ended",
    [
        (b"HTTP/1.1 200 OK\nContent-Length: 2\n\nok", True),
        (b"HTTP/1.1 200 OK\r\nContent-Length: 2\n\r\nok", True),
        (b"HTTP/1.1 200 OK\nContent-Length: 2\n", False),
        (b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n", False),
        (b"HTTP/1.1 200 OK\r\nContent-Len", False),
    ],
)
def test_a_head_ended_by_bare_lfs_is_seen_as_ended_as_h11_sees_it(
    start: bytes, ended: bool
) -> None:
    assert ends_with_bare_lf(start) is ended
    conn = h11.Connection(h11.CLIENT)
    conn.send(h11.Request(method=b"GET", target=b"/", headers=[(b"Host", b"backend.test")]))
    conn.send(h11.EndOfMessage())
    conn.receive_data(start)
    assert isinstance(conn.next_event(), h11.Response) is ended


@pytest.mark.parametrize(
    "line",
    [b"X-A:" + b" \t" * 30000 + b"\x01", b"X-A: a" + b" a\t" * 20000 + b"\x01"],
    ids=["whitespace run", "words and whitespace"],
)
def test_a_bad_field_line_costs_linear_time(line: bytes) -> None:
    """The request fast lane's pattern once took quadratic time on such lines; the backend's
    uses the same unambiguous pattern."""
    started = time.perf_counter()
    assert simple(response(b"Content-Length: 0", line)) is None
    assert time.perf_counter() - started < 0.5  # linear: milliseconds


def test_more_fields_than_the_limit_are_left_to_h11() -> None:
    data = response(b"Content-Length: 2", b"X-A: 1", b"X-B: 2")
    assert simple(data, max_headers=3) is not None
    assert simple(data, max_headers=2) is None


# Bytes that make response heads interesting: separators, whitespace, line ends, odd bytes, and
# the fields and values that decide the framing. Plain ones are drawn more often, so that a good
# share of the generated heads are in the subset and get compared.
_PLAIN = [b"a", b"Z", b"0", b"7", b"12", b" ", b"\t", b",", b";", b"=", b'"', b"-",
          b"keep-alive", b"close", b"chunked"]
_ODD = [b"\r", b"\n", b"\r\n", b"\r\n ", b"\x00", b"\x01", b"\x7f", b"\xe9"]
_VALUE_ATOMS = st.sampled_from(_PLAIN * 4 + _ODD)
_NAMES = st.sampled_from(
    [b"X-A", b"Content-Type", b"set-COOKIE", b"ETag"] * 4
    + [b"Content-Length", b"content-length", b"Transfer-Encoding", b"Connection", b"connection"]
    + [b"X A", b"X-A ", b"", b"X\rA", b"X\xe9"]
)
_STATUS_LINES = st.tuples(
    st.sampled_from([b"HTTP/1.1"] * 8 + [b"HTTP/1.0", b"HTTP/1.1 ", b"HTTP/1.1\t"]),
    st.sampled_from([b"200", b"204", b"206", b"304", b"404", b"503"] * 3
                    + [b"101", b"103", b"600"]),
    st.sampled_from([b" "] * 8 + [b"", b"\t"]),
    st.lists(_VALUE_ATOMS, max_size=3),
).map(lambda line: line[0] + b" " + line[1] + line[2] + b"".join(line[3]))
_FIELD_LINES = st.lists(
    st.tuples(_NAMES, st.lists(_VALUE_ATOMS, max_size=4)).map(
        lambda field: field[0] + b":" + b"".join(field[1])
    ),
    max_size=4,
)


@settings(max_examples=500, deadline=None)
@given(
    _STATUS_LINES,
    _FIELD_LINES,
    st.sampled_from([None, b"Content-Length: 3", b"Content-Length: 0"]),
    st.sampled_from([b"GET", b"HEAD"]),
)
def test_whatever_it_accepts_h11_reads_the_same(
    status: bytes, lines: list[bytes], framing: bytes | None, method: bytes
) -> None:
    data = response(*([framing] if framing else []), *lines, status=status)
    parsed = simple(data, method)
    if parsed is None:
        return
    try:
        assert_read_as_h11_reads(data[: parsed.end], method)
    except h11.RemoteProtocolError as exc:  # pragma: no cover - a bug
        raise AssertionError(f"the fast lane took a head h11 refuses: {exc}") from exc
