"""The relay protocol, as bytes: the two upgrade handshakes and the control messages.

Pure: no sockets. Both handshakes are ordinary HTTP/1.1 upgrade requests, so they pass through
HTTP proxies and load balancers:

- control: ``GET /.phantom-relay/control`` with ``Authorization: Bearer TOKEN``,
  ``Phantom-Relay-Name: NAME`` (and ``-Warm: N``, ``-Cache: on``); the 101 carries
  ``Phantom-Relay-Session``, the key every data connection of this agent must show.
- data: ``GET /.phantom-relay/data`` with ``Phantom-Relay-Name``, ``Phantom-Relay-Session``
  and ``Phantom-Relay-Connection`` (the id of an OPEN, or ``warm`` for the pool).

A control message is ``length (2 bytes) | kind (1) | number (8) | text (UTF-8)``, big-endian,
``length`` counting what follows it. ``number`` is a connection id (OPEN, ERROR) or a ping
nonce (PING, PONG) or the ping interval in milliseconds (READY).
"""

from __future__ import annotations

import enum
import re
import struct
from dataclasses import dataclass
from typing import Final

from ..reasons import reason_phrase

__all__ = [
    "CONTROL_PATH",
    "DATA_PATH",
    "UPGRADE_TOKEN",
    "Decoder",
    "Kind",
    "Message",
    "ProtocolError",
    "encode",
]

UPGRADE_TOKEN: Final = b"phantom-relay/1"
HANDSHAKE_PATHS: Final = b"/.phantom-relay/"  # where both handshake paths are
CONTROL_PATH: Final = HANDSHAKE_PATHS + b"control"
DATA_PATH: Final = HANDSHAKE_PATHS + b"data"

NAME_HEADER: Final = b"phantom-relay-name"
SESSION_HEADER: Final = b"phantom-relay-session"
CONNECTION_HEADER: Final = b"phantom-relay-connection"
WARM_HEADER: Final = b"phantom-relay-warm"
CACHE_HEADER: Final = b"phantom-relay-cache"  # "on": the relay caches the agent's answers
WARM: Final = b"warm"  # Phantom-Relay-Connection of a pooled data connection

# RFC 9110 §5.1, §5.5: a field name is a token; a value has no control byte but the tab.
_TOKEN = re.compile(rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
_CONTROL = re.compile(rb"[\x00-\x08\x0a-\x1f\x7f]")
# An agent's handshake is a few hundred bytes: a longer head is h11's to read.
_PLAIN_HEAD_LIMIT = 8192

# Control messages are small by design: a longer text is a protocol error, not a buffer.
MAX_TEXT: Final = 1024
_HEAD: Final = struct.Struct("!HBQ")
_LENGTH: Final = struct.Struct("!H")
_MAX_NUMBER: Final = (1 << 64) - 1


class Kind(enum.IntEnum):
    OPEN = 1  # relay -> agent: dial a data connection for public connection ``number``
    READY = 2  # relay -> agent: registered; text = the public URL, number = ping interval (ms)
    PING = 3  # relay -> agent: answer with PONG of the same number
    PONG = 4  # agent -> relay
    CLOSE = 5  # either way: the session ends on purpose (text = why); no grace period
    ERROR = 6  # agent -> relay: connection ``number`` could not be opened (text = why)


class ProtocolError(ValueError):
    """The peer sent something that is not a control message; the session must end."""


@dataclass(frozen=True, slots=True)
class Message:
    kind: Kind
    number: int = 0
    text: str = ""


def reconnect_delay(attempt: int, draw: float, *, base: float = 0.5, cap: float = 30.0) -> float:
    """Seconds an agent waits before its reconnect ``attempt`` (0 = the first): exponential
    from ``base`` up to ``cap``, with "equal jitter" (``draw`` uniform in [0, 1)), so agents
    cut off together do not come back in step, and none retries at once."""
    delay = min(cap, base * (1 << min(attempt, 32)))
    return delay / 2 + delay / 2 * draw


def encode(message: Message) -> bytes:
    text = message.text.encode("utf-8")
    if len(text) > MAX_TEXT:
        # Cut on a character boundary: messages are for people and logs.
        text = text[:MAX_TEXT].decode("utf-8", "ignore").encode("utf-8")
    if not 0 <= message.number <= _MAX_NUMBER:
        raise ValueError(f"message number out of range: {message.number}")
    return _HEAD.pack(_HEAD.size - _LENGTH.size + len(text), message.kind, message.number) + text


class Decoder:
    """Turns received bytes into messages, however the stream was cut."""

    __slots__ = ("_buffer",)

    def __init__(self) -> None:
        self._buffer = bytearray()

    def feed(self, data: bytes) -> list[Message]:
        self._buffer += data
        messages = []
        while len(self._buffer) >= _LENGTH.size:
            (length,) = _LENGTH.unpack_from(self._buffer)
            if not _HEAD.size - _LENGTH.size <= length <= _HEAD.size - _LENGTH.size + MAX_TEXT:
                raise ProtocolError(f"control message of {length} bytes")
            end = _LENGTH.size + length
            if len(self._buffer) < end:
                break
            _, kind, number = _HEAD.unpack_from(self._buffer)
            try:
                text = self._buffer[_HEAD.size : end].decode("utf-8")
                messages.append(Message(Kind(kind), number, text))
            except UnicodeDecodeError:
                raise ProtocolError("control message text is not UTF-8") from None
            except ValueError:
                raise ProtocolError(f"unknown control message kind {kind}") from None
            del self._buffer[:end]
        return messages


def answer(status: int, text: str, *, html: bool = False) -> bytes:
    """A complete response that ends the connection: a page for browsers (``html``, the
    text being escaped already) or one line of text for agents and scripts."""
    if html:
        body = (
            f"<!doctype html><meta charset=utf-8><title>{status} {text}</title>"
            f"<h1>{text}</h1><p>phantom relay</p>\n"
        ).encode()
        kind = b"text/html; charset=utf-8"
    else:
        body = text.encode() + b"\n"
        kind = b"text/plain; charset=utf-8"
    return b"".join(
        (
            b"HTTP/1.1 %d %s\r\n" % (status, reason_phrase(status)),
            b"Content-Type: %s\r\nContent-Length: %d\r\n" % (kind, len(body)),
            b"Cache-Control: no-store\r\nConnection: close\r\n\r\n",
            body,
        )
    )


def switching(*headers: tuple[bytes, bytes]) -> bytes:
    extra = b"".join(b"%s: %s\r\n" % pair for pair in headers)
    return (
        b"HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: "
        + UPGRADE_TOKEN
        + b"\r\n"
        + extra
        + b"\r\n"
    )


def switched_fields(head: bytes) -> list[tuple[bytes, bytes]] | None:
    """The fields of a relay's answer head (without its blank line) when it is an ``HTTP/1.1
    101`` in the plain form a phantom relay writes (``switching``): CRLF lines, each field a
    token, a colon and a value without control bytes. None for anything else, which the agent
    then leaves to h11 (a refusal, an answer from something other than a phantom relay). An
    agent dials one data connection per public connection it serves: this spares it h11 for
    each (~0.1 ms of CPU)."""
    status_line, *lines = head.split(b"\r\n")
    if status_line != b"HTTP/1.1 101" and not status_line.startswith(b"HTTP/1.1 101 "):
        return None
    if _CONTROL.search(status_line) is not None:
        return None
    return _plain_fields(lines)


def _plain_fields(lines: list[bytes]) -> list[tuple[bytes, bytes]] | None:
    """Field lines (CRLF already split off) as (lowercase name, value) pairs, when each is a
    token, a colon and a value without control bytes; None when any is not."""
    fields = []
    for line in lines:
        name, colon, value = line.partition(b":")
        value = value.strip(b" \t")
        if not colon or _TOKEN.fullmatch(name) is None or _CONTROL.search(value) is not None:
            return None
        fields.append((name.lower(), value))
    return fields


def upgrade_request(path: bytes, host: bytes, headers: list[tuple[bytes, bytes]]) -> bytes:
    """An agent's handshake: ``GET path`` upgrading to ``phantom-relay/1``."""
    lines = [b"GET %s HTTP/1.1" % path, b"Host: " + host, b"Connection: Upgrade"]
    lines.append(b"Upgrade: " + UPGRADE_TOKEN)
    lines.extend(b"%s: %s" % pair for pair in headers)
    return b"\r\n".join(lines) + b"\r\n\r\n"


def plain_handshake(raw: bytes) -> tuple[bytes, list[tuple[bytes, bytes]], bytes] | None:
    """An agent's handshake at the start of ``raw`` in the plain form ``upgrade_request``
    writes: ``GET`` a handshake path ``HTTP/1.1``, CRLF lines, each field a token, a colon and a
    value without control bytes, one ``Host``, no body; its path, its fields (names in
    lowercase) and the bytes after it. None for anything else, which the relay leaves to h11.
    The relay's side of ``switched_fields``: an agent dials a data connection for every
    upgrade it serves, and h11 would cost the relay ~50 us of CPU for each."""
    end = raw.find(b"\r\n\r\n", 0, _PLAIN_HEAD_LIMIT)
    if end < 0:
        return None
    request_line, *lines = raw[:end].split(b"\r\n")
    parts = request_line.split(b" ")
    if len(parts) != 3 or parts[0] != b"GET" or parts[2] != b"HTTP/1.1":
        return None
    path = parts[1]
    fields = _plain_fields(lines) if path in (CONTROL_PATH, DATA_PATH) else None
    if fields is None:
        return None
    names = [name for name, _ in fields]
    if names.count(b"host") != 1 or b"content-length" in names or b"transfer-encoding" in names:
        return None
    return path, fields, raw[end + 4 :]


def number(value: bytes) -> int | None:
    """A field's value as a message number (decimal, what 8 bytes hold), or None: a value
    Python would refuse to convert (thousands of digits) must not reach ``int``."""
    if not value.isdigit() or len(value) > 19:
        return None
    parsed = int(value)
    return parsed if parsed < 1 << 64 else None


def header(headers: list[tuple[bytes, bytes]], name: bytes) -> bytes | None:
    """The value of the one ``name`` field (lowercase name); None when absent or repeated."""
    values = [value for field, value in headers if field.lower() == name]
    return values[0].strip() if len(values) == 1 else None
