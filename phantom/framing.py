"""Request framing safety (RFC 9112): find a request head in raw bytes and refuse every head
that two HTTP parsers could read differently.

Pure: bytes in, a :class:`RequestHead` or a :class:`~phantom.errors.RequestRejected` (with the
status to answer) out. The connection runs this on the raw head *before* h11 parses it, so the
checks see what h11 would silently repair (obs-fold, ``chunked, gzip`` that h11 answers 501)
and nothing reaches a backend unless it passed. phantom re-frames every request it forwards,
so what is accepted here only has to be unambiguous, not byte-identical downstream.

What is refused, and with which status:

* request line longer than ``max_request_line`` -> 414; head longer than ``max_header_bytes``
  or more than ``max_headers`` fields -> 431;
* a bare CR, NUL or any other control byte in the request line, a field name or value -> 400;
  obs-fold (a line starting with whitespace) -> 400; whitespace before a field's colon -> 400;
* ``Content-Length`` with ``Transfer-Encoding``; an invalid length, or different lengths -> 400;
* ``chunked`` twice, not last, or ``Transfer-Encoding`` in several fields or in HTTP/1.0 -> 400;
  a transfer coding phantom does not implement (``x-chunked``, ``"chunked"``, ``gzip``) -> 501;
* HTTP/1.1 without ``Host``, several ``Host`` fields, an invalid ``Host`` -> 400;
* ``CONNECT`` -> 405; authority-form or any other odd target -> 400.

The common request also has a fast lane: :func:`parse_simple` reads a narrow, unambiguous
subset (``GET``/``HEAD``, origin-form, HTTP/1.1, CRLF, no body framing, one valid Host) in one
pass, so a cache hit can be answered without this module's general checks and without h11.
Anything outside that subset makes it return None and goes through the checks above; a head
it accepted that is not a hit goes to h11 without :func:`check_head` (it passed stricter rules).
Backend responses have one too: :func:`parse_simple_response` reads a response head framed by
one ``Content-Length``, so that a pass-through request's answer can be relayed without h11;
anything else is left to h11.

Accepted: absolute-form targets (``GET http://host/p``: the authority becomes the Host and the
target becomes origin-form, RFC 9112 §3.2.2), whitespace around ``chunked``, LF-only line
endings (RFC 9112 §2.2 lets a recipient accept them), leading empty lines before the request.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Final

from .errors import RequestRejected

__all__ = [
    "HeadScanner",
    "RequestHead",
    "SimpleRequest",
    "SimpleResponse",
    "body_framing",
    "check_head",
    "ends_with_bare_lf",
    "parse_simple",
    "parse_simple_response",
]

_TOKEN: Final = re.compile(rb"[-!#$%&'*+.^_`|~0-9A-Za-z]+")
# Control bytes a field value must never carry (HT is allowed inside values).
_CONTROL: Final = re.compile(rb"[\x00-\x08\x0a-\x1f\x7f]")
_TARGET: Final = re.compile(rb"[\x21-\x7e]+")
_VERSION: Final = re.compile(rb"HTTP/1\.[01]")
_DIGITS: Final = re.compile(rb"[0-9]+")
# RFC 3986 authority without userinfo: IP-literal, IPv4 or reg-name, optional port.
_HOST: Final = re.compile(rb"(?:\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9\-._~%!$&'()*+,;=]*)(?::[0-9]*)?")
_ABSOLUTE: Final = re.compile(rb"(?P<scheme>[A-Za-z][A-Za-z0-9+.-]*)://(?P<authority>[^/?#]*)")
_OWS: Final = b" \t"


@dataclass(frozen=True, slots=True)
class RequestHead:
    """What the checks found: the target to use (origin-form) and, for an absolute-form
    request, the authority that replaces Host."""

    target: bytes
    authority: bytes | None = None


class HeadScanner:
    """Collects a request head from the byte stream and reports it once complete.

    Incremental: each byte is searched once, so a client sending one byte at a time costs
    linear work. Raises 414 / 431 as soon as a limit is passed, before the head is complete.
    """

    def __init__(self, max_request_line: int, max_header_bytes: int) -> None:
        self.max_request_line = max_request_line
        self.max_header_bytes = max_header_bytes
        self._buffer = bytearray()
        self._start = 0  # first byte after leading empty lines
        self._searched = 0  # bytes already searched for the blank line

    def reset(self, leftover: bytes = b"") -> None:
        """Start on the next request; ``leftover`` is what already arrived of it."""
        self._buffer = bytearray(leftover)
        self._start = 0
        self._searched = 0

    @property
    def empty(self) -> bool:
        """No byte of a request has arrived (leading empty lines do not count)."""
        self._skip_empty_lines()
        return self._start >= len(self._buffer)

    def feed(self, data: bytes) -> None:
        self._buffer += data

    def _skip_empty_lines(self) -> None:
        buffer = self._buffer
        while self._start < len(buffer) and buffer[self._start] in b"\r\n":
            self._start += 1
        self._searched = max(self._searched, self._start)

    def head(self) -> bytes | None:
        """The complete head (request line to the blank line, excluded), or None for now."""
        self._skip_empty_lines()
        buffer, start = self._buffer, self._start
        # Back up three bytes: the terminator may straddle the previous search's end.
        end = buffer.find(b"\n\r\n", max(start, self._searched - 2))
        end_lf = buffer.find(b"\n\n", max(start, self._searched - 1))
        if end_lf != -1 and (end == -1 or end_lf < end):
            end = end_lf
        self._searched = len(buffer)
        line_end = buffer.find(b"\n", start, start + self.max_request_line + 2)
        line_length = (line_end if line_end != -1 else len(buffer)) - start
        if line_length > self.max_request_line + 1:  # + 1: the CR before LF
            raise RequestRejected(414, "request line too long")
        if end == -1:
            if len(buffer) - start > self.max_header_bytes:
                raise RequestRejected(431, "request head too large")
            return None
        if end - start > self.max_header_bytes:
            raise RequestRejected(431, "request head too large")
        return bytes(buffer[start : end + 1])


def _lines(head: bytes) -> list[bytes]:
    lines = head.split(b"\n")
    if lines and lines[-1] == b"":
        lines.pop()
    out = []
    for line in lines:
        if line.endswith(b"\r"):
            line = line[:-1]
        if b"\r" in line:
            raise RequestRejected(400, "bare CR in the request head")
        out.append(line)
    return out


def _parse_fields(lines: list[bytes], max_headers: int) -> list[tuple[bytes, bytes]]:
    if len(lines) > max_headers:
        raise RequestRejected(431, f"more than {max_headers} header fields")
    fields = []
    for line in lines:
        if line[:1] in (b" ", b"\t"):
            raise RequestRejected(400, "obsolete line folding in a header field")
        name, colon, value = line.partition(b":")
        if not colon:
            raise RequestRejected(400, "header line without a colon")
        if name[-1:] in (b" ", b"\t"):
            raise RequestRejected(400, "whitespace between a field name and its colon")
        if not _TOKEN.fullmatch(name):
            raise RequestRejected(400, "invalid header field name")
        value = value.strip(_OWS)
        if _CONTROL.search(value):
            raise RequestRejected(400, "control character in a header field value")
        fields.append((name.lower(), value))
    return fields


def _values(fields: list[tuple[bytes, bytes]], name: bytes) -> list[bytes]:
    return [value for field, value in fields if field == name]


def _check_content_length(values: list[bytes]) -> None:
    lengths = {item.strip(_OWS) for value in values for item in value.split(b",")}
    if not all(_DIGITS.fullmatch(length) for length in lengths):
        raise RequestRejected(400, "invalid Content-Length")
    if len(lengths) > 1:
        raise RequestRejected(400, "conflicting Content-Length values")


def _check_transfer_encoding(values: list[bytes], version: bytes) -> None:
    if version == b"HTTP/1.0":
        raise RequestRejected(400, "Transfer-Encoding in an HTTP/1.0 request")
    if len(values) > 1:
        raise RequestRejected(400, "Transfer-Encoding in more than one field")
    codings = [token.strip(_OWS).lower() for token in values[0].split(b",")]
    if codings.count(b"chunked") > 1:
        raise RequestRejected(400, "chunked applied more than once")
    if b"chunked" in codings and codings[-1] != b"chunked":
        raise RequestRejected(400, "chunked is not the final transfer coding")
    if codings != [b"chunked"]:
        raise RequestRejected(501, "unsupported transfer coding")


def _check_host(values: list[bytes], version: bytes) -> None:
    if not values:
        if version == b"HTTP/1.1":
            raise RequestRejected(400, "missing Host header")
        return
    if len(values) > 1:
        raise RequestRejected(400, "more than one Host header")
    if not _HOST.fullmatch(values[0]):
        raise RequestRejected(400, "invalid Host header")


def _check_target(method: bytes, target: bytes) -> RequestHead:
    if target.startswith(b"/"):
        return RequestHead(target)
    if target == b"*":
        if method != b"OPTIONS":
            raise RequestRejected(400, "asterisk-form target is only for OPTIONS")
        return RequestHead(target)
    match = _ABSOLUTE.match(target)
    if match is None:
        raise RequestRejected(400, "invalid request target")
    authority = match["authority"]
    if match["scheme"].lower() not in (b"http", b"https"):
        raise RequestRejected(400, "absolute-form target with an unsupported scheme")
    if not authority or b"@" in authority or not _HOST.fullmatch(authority):
        raise RequestRejected(400, "invalid authority in the request target")
    rest = target[match.end() :]
    if rest.startswith(b"#"):
        raise RequestRejected(400, "invalid request target")
    path = rest if rest.startswith(b"/") else b"/" + rest
    return RequestHead(path, authority)


def check_head(head: bytes, max_headers: int) -> RequestHead:
    """Check a complete request head (as :meth:`HeadScanner.head` returns it).

    Raises :class:`RequestRejected` with the status to answer; returns what the connection
    must use instead of the raw target and Host.
    """
    request_line, *field_lines = _lines(head)
    parts = request_line.split(b" ")
    if len(parts) != 3:
        raise RequestRejected(400, "invalid request line")
    method, target, version = parts
    if not _TOKEN.fullmatch(method) or not _TARGET.fullmatch(target):
        raise RequestRejected(400, "invalid request line")
    if not _VERSION.fullmatch(version):
        raise RequestRejected(505 if version.startswith(b"HTTP/") else 400, "unsupported version")
    if method == b"CONNECT":
        raise RequestRejected(405, "CONNECT is not supported by this reverse proxy")
    fields = _parse_fields(field_lines, max_headers)
    lengths = _values(fields, b"content-length")
    codings = _values(fields, b"transfer-encoding")
    if lengths and codings:
        raise RequestRejected(400, "both Content-Length and Transfer-Encoding")
    if lengths:
        _check_content_length(lengths)
    if codings:
        _check_transfer_encoding(codings, version)
    _check_host(_values(fields, b"host"), version)
    return _check_target(method, target)


@dataclass(frozen=True, slots=True)
class BodyFraming:
    """How a checked request's body is framed: ``chunked``, and its (first) Content-Length
    value as sent, None without one."""

    chunked: bool
    length: bytes | None

    @property
    def has_body(self) -> bool:
        """The request carries a body (RFC 9112 §6.3): chunked, or a Content-Length other
        than 0. ("00" counts as a body: a strange spelling gets no benefit of the doubt.)"""
        return self.chunked or self.length not in (None, b"0")


def body_framing(headers: list[tuple[bytes, bytes]]) -> BodyFraming:
    """The framing facts of a request that passed :func:`check_head`, in one scan of its
    fields (names in any case)."""
    chunked = False
    length: bytes | None = None
    for name, value in headers:
        lower = name.lower()
        if lower == b"transfer-encoding":
            chunked = chunked or any(t.strip().lower() == b"chunked" for t in value.split(b","))
        elif lower == b"content-length" and length is None:
            length = value
    return BodyFraming(chunked, length)


# -- the fast lane ----------------------------------------------------------------------------

# A field line with a value h11 would keep as is: visible ASCII, inner spaces and tabs only.
_SIMPLE_NAME: Final = rb"[-!#$%&'*+.^_`|~0-9A-Za-z]+"
_SIMPLE_VALUE: Final = rb"[\x21-\x7e](?:[\x20-\x7e\t]*[\x21-\x7e])?"
# Its whitespace can be read one way only (the value starts and ends with a visible byte; an
# empty one leaves all the whitespace to the first run), so a line that fails to match costs
# linear time; were both runs able to share an empty value's whitespace, quadratic time.
_SIMPLE_FIELD: Final = re.compile(rb"(%s):[ \t]*(?:(%s)[ \t]*)?" % (_SIMPLE_NAME, _SIMPLE_VALUE))
# The same, CRLF included, for reading a request head's fields with one findall.
_SIMPLE_FIELD_LINE: Final = re.compile(
    rb"(%s):[ \t]*(?:(%s)[ \t]*)?\r\n" % (_SIMPLE_NAME, _SIMPLE_VALUE)
)
# A whole request head, request line to blank line, checked in one pass; its fields are then
# read with the above.
_SIMPLE_HEAD: Final = re.compile(
    rb"(GET|HEAD) (/[\x21-\x7e]*) HTTP/1\.1\r\n(?:%s:[ \t]*(?:%s[ \t]*)?\r\n)*\r\n"
    % (_SIMPLE_NAME, _SIMPLE_VALUE)
)
_REQUEST_LINE_END: Final = len(b" HTTP/1.1")
# Fields that frame a body, ask for an interim answer or change the protocol: the strict path.
_NOT_SIMPLE: Final = frozenset({b"content-length", b"transfer-encoding", b"expect", b"upgrade"})


@dataclass(slots=True)
class SimpleRequest:
    """A request head in the fast lane's subset, parsed. ``headers`` as h11 gives them (names
    lowercased, values without surrounding whitespace); ``end``: the offset after its blank
    line. Read-only by convention: not frozen, as one is built per request and a frozen
    dataclass takes three times as long to build."""

    method: bytes
    target: bytes
    host: bytes
    headers: list[tuple[bytes, bytes]]
    end: int
    # The same fields with the names as the client spelled them: what a backend is sent.
    raw_headers: list[tuple[bytes, bytes]]


def parse_simple(
    data: bytes, start: int, max_request_line: int, max_header_bytes: int, max_headers: int
) -> SimpleRequest | None:
    """The request head at ``data[start:]`` if it is complete and in the simple subset:
    ``GET`` or ``HEAD``, an origin-form target, ``HTTP/1.1``, CRLF line endings, no leading
    empty line, field names and values valid per RFC 9110 (visible ASCII, inner SP/HTAB),
    exactly one valid ``Host``, no ``Content-Length``, ``Transfer-Encoding``, ``Expect`` or
    ``Upgrade``, ``Connection`` (if any) only ``keep-alive``, within the head limits.

    None otherwise, never an error: the caller hands the bytes to the strict path
    (:class:`HeadScanner`, :func:`check_head`, h11), which accepts every request this
    accepts, reading it the same way, and decides about everything else.
    """
    end = data.find(b"\r\n\r\n", start)
    if end == -1 or end + 2 - start > max_header_bytes:
        return None
    match = _SIMPLE_HEAD.fullmatch(data, start, end + 4)
    if match is None:
        return None
    line_end = match.end(2) + _REQUEST_LINE_END
    if line_end - start > max_request_line:
        return None
    fields = _SIMPLE_FIELD_LINE.findall(data, line_end + 2, end + 2)
    if len(fields) > max_headers:
        return None
    headers = []
    raw_headers = []
    host = None
    for raw_name, value in fields:
        name = raw_name.lower()
        if name == b"host":
            if host is not None or not _HOST.fullmatch(value):
                return None
            host = value
        elif name in _NOT_SIMPLE:
            return None
        elif name == b"connection" and value.lower() != b"keep-alive":
            return None
        headers.append((name, value))
        raw_headers.append((raw_name, value))
    if host is None:
        return None
    return SimpleRequest(match[1], match[2], host, headers, end + 4, raw_headers)


# -- the backend's fast lane ------------------------------------------------------------------

_SIMPLE_STATUS: Final = re.compile(rb"HTTP/1\.1 ([2-5][0-9][0-9]) ([\t\x20-\x7e]*)")


@dataclass(frozen=True, slots=True)
class SimpleResponse:
    """A backend's response head in the backend fast lane's subset, parsed. ``headers`` as the
    backend spelled them; ``length``: the size of the body that follows (0 when it has none);
    ``end``: the offset after the blank line."""

    status: int
    reason: bytes
    headers: list[tuple[bytes, bytes]]
    length: int
    end: int


def parse_simple_response(
    data: bytes, end: int, method: bytes, max_headers: int
) -> SimpleResponse | None:
    """The response head that ends at ``end`` (where ``data`` has its blank line) if it is in
    the simple subset: ``HTTP/1.1``, a final status (2xx to 5xx), CRLF line endings, field
    names and values valid per RFC 9110, at most ``max_headers`` fields, no
    ``Transfer-Encoding``, ``Connection`` (if any) only ``keep-alive``, and a body framed by
    exactly one ``Content-Length``, or no body at all (the answer to ``method`` HEAD, 204,
    304: RFC 9112 §6.3).

    None otherwise, never an error: h11 then reads the head and decides about it (interim
    responses, chunked or close-delimited bodies, a closing backend, anything malformed).
    """
    status_line, *lines = data[:end].split(b"\r\n")
    match = _SIMPLE_STATUS.fullmatch(status_line)
    if match is None or len(lines) > max_headers:
        return None
    headers = []
    length = None
    for line in lines:
        field = _SIMPLE_FIELD.fullmatch(line)
        if field is None:
            return None
        name, value = field[1], field[2] or b""
        lower = name.lower()
        if lower == b"content-length":
            if length is not None or not _DIGITS.fullmatch(value):
                return None
            length = int(value)
        elif lower == b"transfer-encoding":
            return None
        elif lower == b"connection" and value.lower() != b"keep-alive":
            return None
        headers.append((name, value))
    status = int(match[1])
    if method == b"HEAD" or status in (204, 304):
        length = 0
    elif length is None:
        return None
    return SimpleResponse(status, match[2], headers, length, end + 4)


def ends_with_bare_lf(data: bytes, start: int = 0) -> bool:
    """Whether ``data``, a response head's start with no CRLF CRLF in it, is already ended by a
    blank line made with a bare LF (``\n\n``, ``\n\r\n``). h11 reads such a head (RFC 9112
    §2.2); a CRLF CRLF may never follow, so waiting for one would wait for nothing. Looked for
    from ``start`` on (what was already looked at, less the 2 bytes a match could start in)."""
    return data.find(b"\n\n", start) >= 0 or data.find(b"\n\r\n", start) >= 0
