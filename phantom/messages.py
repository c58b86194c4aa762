"""Reading one whole, small HTTP/1.1 message from an asyncio stream with h11.

For the side channels that want a message in one piece (the control API's requests, webhook
answers, the demo origin): head and body, the body bounded. The proxy's own data path streams
instead and never uses this.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import h11

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
