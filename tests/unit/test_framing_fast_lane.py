"""The fast lane's head parser (pure): what it takes must be read exactly as the strict path
(check_head, then h11) reads it, and everything unusual must fall back (None)."""

from __future__ import annotations

import time

import h11
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from phantom.errors import RequestRejected
from phantom.framing import check_head, parse_simple

LIMITS = (8190, 16384, 100)  # max_request_line, max_header_bytes, max_headers


def simple(data: bytes, start: int = 0, limits: tuple[int, int, int] = LIMITS) -> object:
    return parse_simple(data, start, *limits)


def request(*lines: bytes, line: bytes = b"GET /p?q=1 HTTP/1.1") -> bytes:
    return line + b"\r\n" + b"".join(item + b"\r\n" for item in lines) + b"\r\n"


HOST = b"Host: example.test"


def strict_read(raw: bytes) -> tuple[bytes, bytes, list[tuple[bytes, bytes]]]:
    """How the strict path reads a head: check_head, then h11's Request."""
    head = raw[: raw.index(b"\r\n\r\n") + 2]
    checked = check_head(head, LIMITS[2])
    conn = h11.Connection(h11.SERVER)
    conn.receive_data(raw)
    event = conn.next_event()
    assert isinstance(event, h11.Request)
    assert checked.target == event.target and checked.authority is None
    return event.method, event.target, list(event.headers)


ACCEPTED = {
    "minimal": request(HOST),
    "HEAD": request(HOST, line=b"HEAD / HTTP/1.1"),
    "browser-like": request(
        HOST,
        b"User-Agent: Mozilla/5.0 (X11; Linux x86_64)",
        b"Accept: text/html,application/xhtml+xml;q=0.9,*/*;q=0.8",
        b"Accept-Encoding: gzip, deflate, br",
        b"If-None-Match: W/\"abc\"",
        b"Connection: keep-alive",
    ),
    "whitespace around values": request(b"Host:example.test", b"X-A: \t a \t b \t"),
    "empty value": request(HOST, b"X-Empty:", b"X-Blank:   "),
    "host with port": request(b"Host: [::1]:8080"),
    "Connection keep-alive in caps": request(HOST, b"connection: Keep-Alive"),
}


@pytest.mark.parametrize("raw", ACCEPTED.values(), ids=list(ACCEPTED))
def test_accepted_heads_read_as_the_strict_path_reads_them(raw: bytes) -> None:
    parsed = parse_simple(raw, 0, *LIMITS)
    assert parsed is not None
    method, target, headers = strict_read(raw)
    assert (parsed.method, parsed.target, parsed.headers) == (method, target, headers)
    assert parsed.host == dict(headers)[b"host"]
    assert parsed.end == len(raw)


def test_pipelined_heads_are_read_one_after_the_other() -> None:
    first = request(HOST, line=b"GET /a HTTP/1.1")
    second = request(HOST, line=b"HEAD /b HTTP/1.1")
    data = first + second + b"GET /c HT"  # the third is incomplete
    one = parse_simple(data, 0, *LIMITS)
    assert one is not None and one.target == b"/a" and one.end == len(first)
    two = parse_simple(data, one.end, *LIMITS)
    assert two is not None and (two.method, two.target) == (b"HEAD", b"/b")
    assert parse_simple(data, two.end, *LIMITS) is None


FALLS_BACK = {
    "incomplete": request(HOST)[:-2],
    "leading empty line": b"\r\n" + request(HOST),
    "LF line endings": request(HOST).replace(b"\r\n", b"\n"),
    "POST": request(HOST, line=b"POST / HTTP/1.1"),
    "lowercase method": request(HOST, line=b"get / HTTP/1.1"),
    "OPTIONS *": request(HOST, line=b"OPTIONS * HTTP/1.1"),
    "absolute-form": request(HOST, line=b"GET http://example.test/ HTTP/1.1"),
    "authority-form": request(HOST, line=b"GET example.test:80 HTTP/1.1"),
    "HTTP/1.0": request(HOST, line=b"GET / HTTP/1.0"),
    "HTTP/2.0": request(HOST, line=b"GET / HTTP/2.0"),
    "two spaces": request(HOST, line=b"GET  / HTTP/1.1"),
    "tab in request line": request(HOST, line=b"GET\t/ HTTP/1.1"),
    "trailing space": request(HOST, line=b"GET / HTTP/1.1 "),
    "Content-Length": request(HOST, b"Content-Length: 0"),
    "Transfer-Encoding": request(HOST, b"Transfer-Encoding: chunked"),
    "Expect": request(HOST, b"Expect: 100-continue"),
    "Upgrade": request(HOST, b"Upgrade: websocket", b"Connection: Upgrade"),
    "Connection close": request(HOST, b"Connection: close"),
    "Connection with a field name": request(HOST, b"Connection: keep-alive, X-A"),
    "no Host": request(b"X-A: a"),
    "two Hosts": request(HOST, b"Host: other.test"),
    "invalid Host": request(b"Host: a b/c"),
    "userinfo in Host": request(b"Host: user@example.test"),
    "obs-fold": request(HOST, b"X-A: one", b" two"),
    "space before colon": request(HOST, b"X-A : one"),
    "no colon": request(HOST, b"X-A one"),
    "empty name": request(HOST, b": one"),
    "NUL in value": request(HOST, b"X-A: a\x00b"),
    "control byte in value": request(HOST, b"X-A: a\x01b"),
    "DEL in value": request(HOST, b"X-A: a\x7fb"),
    "obs-text in value": request(HOST, b"X-A: caf\xe9"),
    "bare CR in value": request(HOST, b"X-A: a\rb"),
    "bare LF in value": request(HOST, b"X-A: a\nContent-Length: 5"),
    "bare CR in target": request(HOST, line=b"GET /a\rb HTTP/1.1"),
    "non-ASCII target": request(HOST, line=b"GET /caf\xe9 HTTP/1.1"),
    "smuggled CL with LF-only end": b"GET / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\n\r\n",
}


@pytest.mark.parametrize("raw", FALLS_BACK.values(), ids=list(FALLS_BACK))
def test_anything_unusual_falls_back_to_the_strict_path(raw: bytes) -> None:
    assert simple(raw) is None


def test_limits_fall_back_where_the_strict_path_refuses() -> None:
    raw = request(HOST, b"X-A: " + b"a" * 100)
    head_bytes = raw.index(b"\r\n\r\n") + 2
    assert simple(raw, limits=(8190, head_bytes, 100)) is not None
    assert simple(raw, limits=(8190, head_bytes - 1, 100)) is None
    assert simple(raw, limits=(8190, 16384, 2)) is not None
    assert simple(raw, limits=(8190, 16384, 1)) is None
    line = len(b"GET /p?q=1 HTTP/1.1")
    assert simple(raw, limits=(line, 16384, 100)) is not None
    assert simple(raw, limits=(line - 1, 16384, 100)) is None


@pytest.mark.parametrize(
    "line",
    [
        b"X-A:" + b" \t" * 30000 + b"\x01",  # an all-whitespace value, then a bad byte
        b"X-A: a" + b" a\t" * 20000 + b"\x01",
    ],
    ids=["whitespace run", "words and whitespace"],
)
def test_a_bad_field_line_costs_linear_time(line: bytes) -> None:
    """A whitespace run before a bad byte once took the field pattern quadratic time (about
    30 s of CPU for one 64 KiB head); every way of reading a line is now unique."""
    raw = request(HOST, line)
    started = time.perf_counter()
    assert simple(raw, limits=(8190, 65536, 100)) is None
    assert time.perf_counter() - started < 0.5  # linear: milliseconds


# Bytes that make heads interesting: separators, whitespace, line ends and odd bytes.
_ATOMS = st.sampled_from(
    [b"GET", b"HEAD", b" ", b"\t", b"/", b"a", b":", b"\r\n", b"\r", b"\n", b"\x00", b"\x7f",
     b"\xe9", b"Host", b"HTTP/1.1", b"Content-Length", b"Connection", b"keep-alive", b"0",
     b"@", b"[", b"]", b"\"", b",", b"-"]
)


_FIELD_LINES = st.lists(
    st.tuples(st.lists(_ATOMS, min_size=1, max_size=4), st.lists(_ATOMS, max_size=6)).map(
        lambda field: b"".join(field[0]) + b":" + b"".join(field[1])
    ),
    max_size=4,
)


@settings(max_examples=500, deadline=None)
@given(st.lists(_ATOMS, max_size=4), _FIELD_LINES, st.booleans())
def test_whatever_it_accepts_the_strict_path_reads_the_same(
    target: list[bytes], lines: list[bytes], with_host: bool
) -> None:
    host = [HOST] if with_host else []
    raw = request(*host, *lines, line=b"GET /" + b"".join(target) + b" HTTP/1.1")
    parsed = simple(raw)
    if parsed is None:
        return
    try:
        method, target_read, headers = strict_read(raw[: parsed.end])
    except (RequestRejected, h11.RemoteProtocolError) as exc:  # pragma: no cover - a bug
        raise AssertionError(f"fast lane took a head the strict path refuses: {exc}") from exc
    assert (parsed.method, parsed.target, parsed.headers) == (method, target_read, headers)


@pytest.mark.parametrize(
    "connection",
    [b"Connection: Upgrade, HTTP2-Settings", b"Connection: keep-alive", b"X-No-Connection: 1"],
)
def test_an_h2c_offer_goes_to_the_strict_path(connection: bytes) -> None:
    """What ``curl --http2`` sends, and variants: the fast lane never forwards an Upgrade
    field, so the request loop's ``upgrade_protocols`` rule sees every offer."""
    h2c = request(HOST, connection, b"Upgrade: h2c", b"HTTP2-Settings: AAMAAABkAAQAoAAAAAIAAAAA")
    assert simple(h2c) is None
