"""read_message over a real loopback socket: whole messages, the body bound, early closes."""

from __future__ import annotations

import asyncio

import h11
import pytest
from conftest import async_test
from origin import LOCALHOST

from phantom.messages import MessageTooLarge, read_message


async def read_from(
    raw: bytes, max_body: int = 100
) -> tuple[h11.Request | h11.Response, bytes] | None:
    """Serve ``raw`` then close; read it back with a client-side h11."""

    async def send(_: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(raw)
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(send, LOCALHOST, 0)
    try:
        reader, writer = await asyncio.open_connection(
            LOCALHOST, server.sockets[0].getsockname()[1]
        )
        conn = h11.Connection(h11.CLIENT)
        conn.send(h11.Request(method=b"GET", target=b"/", headers=[(b"Host", b"t")]))
        conn.send(h11.EndOfMessage())
        try:
            return await read_message(conn, reader, max_body)
        finally:
            writer.close()
    finally:
        server.close()
        await server.wait_closed()


@async_test()
async def test_whole_message_in_pieces_of_any_size() -> None:
    message = await read_from(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello")
    assert message is not None
    head, body = message
    assert isinstance(head, h11.Response) and head.status_code == 200
    assert body == b"hello"


@async_test()
async def test_body_over_the_bound_raises_with_the_head() -> None:
    with pytest.raises(MessageTooLarge) as caught:
        await read_from(b"HTTP/1.1 200 OK\r\nContent-Length: 11\r\n\r\nhello world", max_body=5)
    assert isinstance(caught.value.head, h11.Response)


@async_test()
async def test_close_mid_message_is_an_error() -> None:
    with pytest.raises(h11.RemoteProtocolError):
        await read_from(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nhal")


@async_test()
async def test_a_client_closing_between_requests_is_none() -> None:
    result: asyncio.Future[object] = asyncio.get_running_loop().create_future()

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        result.set_result(await read_message(h11.Connection(h11.SERVER), reader, 100))
        writer.close()

    server = await asyncio.start_server(serve, LOCALHOST, 0)
    try:
        _, writer = await asyncio.open_connection(LOCALHOST, server.sockets[0].getsockname()[1])
        writer.close()
        assert await result is None
    finally:
        server.close()
        await server.wait_closed()
