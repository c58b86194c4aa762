"""Reading one whole, small HTTP/1.1 message from an asyncio stream with h11, and making one
small request.

For the side channels that want a message in one piece (the control API's requests, webhook
calls, the JWKS fetch, the demo origin): head and body, the body bounded. The proxy's own data
path streams instead and never uses this.
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Callable

import h11

from .config import BackendURL

READ_SIZE = 65536

Head = h11.Request | h11.Response


class MessageTooLarge(Exception):
    """The body went past the limit; ``head`` is the message's head."""

    def __init__(self, head: Head | None, limit: int) -> None:
        super().__init__(f"body larger than {limit} bytes")
        self.head = head


async def read_message(
    conn: h11.Connection,
    reader: asyncio.StreamReader,
    max_body: int,
    before_read: Callable[[], None] | None = None,
) -> tuple[Head, bytes] | None:
    """The next message's head and body, or None when the peer closed before one began.

    ``before_read`` runs before each read from the socket: a server answers
    ``Expect: 100-continue`` there. A peer closing mid-message raises h11.RemoteProtocolError.
    """
    head: Head | None = None
    body = bytearray()
    while True:
        event = conn.next_event()
        if event is h11.NEED_DATA:
            if before_read is not None:
                before_read()
            conn.receive_data(await reader.read(READ_SIZE))
        elif isinstance(event, (h11.Request, h11.Response)):
            head = event
        elif isinstance(event, h11.Data):
            body += event.data
            if len(body) > max_body:
                raise MessageTooLarge(head, max_body)
        elif isinstance(event, h11.EndOfMessage) and head is not None:
            return head, bytes(body)
        elif head is None:
            return None  # ConnectionClosed between messages
        else:
            raise h11.RemoteProtocolError("connection closed in the middle of a message")


class NoAnswer(Exception):
    """The peer closed before answering, or its answer was too large."""


async def request(
    url: BackendURL,
    method: bytes,
    headers: list[tuple[bytes, bytes]],
    body: bytes,
    max_answer: int,
) -> tuple[h11.Response, bytes]:
    """One request on a connection of its own (closed after), the answer read whole. An
    ``https://`` URL is verified against the system store. Raises OSError, h11.ProtocolError
    and NoAnswer; the caller bounds the time."""
    tls = ssl.create_default_context() if url.scheme == "https" else None
    reader, writer = await asyncio.open_connection(
        url.host, url.port, ssl=tls, server_hostname=url.host if tls else None
    )
    try:
        conn = h11.Connection(h11.CLIENT)
        fields = [(b"Host", url.netloc.encode()), *headers, (b"Connection", b"close")]
        if body or method == b"POST":
            fields.append((b"Content-Length", b"%d" % len(body)))
        target = (url.base_path or "/").encode()
        writer.write(conn.send(h11.Request(method=method, target=target, headers=fields)) or b"")
        if body:
            writer.write(conn.send(h11.Data(data=body)) or b"")
        writer.write(conn.send(h11.EndOfMessage()) or b"")
        try:
            message = await read_message(conn, reader, max_answer)
        except MessageTooLarge:
            raise NoAnswer("answer too large") from None
        if message is None:
            raise NoAnswer("closed before answering")
        response, answer = message
        assert isinstance(response, h11.Response)  # a client's h11 only parses responses
        return response, answer
    finally:
        writer.close()
