"""phantom.tunnel's quotas over real loopback sockets: ``rate`` paces each direction to within
10% of the cap (4 MiB each way over about 5 s), ``max_bytes`` closes the tunnel instead of
carrying more, ``close_at`` closes it at a token's expiry. The tunnel is built as the proxy
builds it, from two detached endpoints."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import pytest
from conftest import async_test

from phantom.endpoint import Endpoint
from phantom.tunnel import Tunnel

MIB = 1 << 20
Streams = tuple[asyncio.StreamReader, asyncio.StreamWriter]


@asynccontextmanager
async def spliced(**options: object) -> AsyncIterator[tuple[Streams, Streams, Tunnel]]:
    """(the client's streams, the backend's streams, the tunnel between them)."""
    loop = asyncio.get_running_loop()
    backend_side: asyncio.Future[Streams] = loop.create_future()
    client_end: asyncio.Future[Endpoint] = loop.create_future()

    async def backend_accept(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        backend_side.set_result((r, w))

    def phantom_accept() -> Endpoint:
        endpoint = Endpoint()
        client_end.set_result(endpoint)
        return endpoint

    backend_server = await asyncio.start_server(backend_accept, "127.0.0.1", 0)
    phantom_server = await loop.create_server(phantom_accept, "127.0.0.1", 0)
    writers: list[asyncio.StreamWriter] = []
    tunnel = None
    try:
        client = await asyncio.open_connection(
            "127.0.0.1", phantom_server.sockets[0].getsockname()[1]
        )
        writers.append(client[1])
        _, backend_end = await loop.create_connection(
            Endpoint, "127.0.0.1", backend_server.sockets[0].getsockname()[1]
        )
        backend = await backend_side
        writers.append(backend[1])
        client_state, backend_state = (await client_end).detach(), backend_end.detach()
        tunnel = Tunnel(
            client_state,
            backend_state,
            label="test",
            on_close=lambda t: None,
            **options,  # type: ignore[arg-type]
        )
        tunnel.start(client_state, backend_state)
        yield client, backend, tunnel
    finally:
        if tunnel is not None:
            tunnel.abort()
            await asyncio.wait_for(tunnel.done, 5)
        for writer in writers:
            writer.close()
            await writer.wait_closed()
        for server in (backend_server, phantom_server):
            server.close()
            await server.wait_closed()


async def pump(writer: asyncio.StreamWriter, size: int) -> None:
    chunk = b"x" * 65536
    for _ in range(size // len(chunk)):
        writer.write(chunk)
        await writer.drain()


async def receive(reader: asyncio.StreamReader, size: int) -> float:
    """Bytes per second from the first byte to the last of ``size`` bytes."""
    first = await reader.read(65536)
    started = time.monotonic()
    got = 0
    while got < size - len(first):
        data = await reader.read(65536)
        assert data, "closed early"
        got += len(data)
    return got / (time.monotonic() - started)


@async_test(timeout=20)
async def test_each_direction_is_paced_to_within_10_percent_of_the_rate() -> None:
    rate = 4 * MIB // 5
    async with spliced(rate=rate) as ((c_reader, c_writer), (b_reader, b_writer), tunnel):
        started = time.monotonic()
        down, up, _, _ = await asyncio.gather(
            receive(c_reader, 4 * MIB),
            receive(b_reader, 4 * MIB),
            pump(b_writer, 4 * MIB),
            pump(c_writer, 4 * MIB),
        )
        elapsed = time.monotonic() - started
    assert down == pytest.approx(rate, rel=0.1)
    assert up == pytest.approx(rate, rel=0.1)
    assert elapsed == pytest.approx(5, rel=0.1)


@async_test()
async def test_max_bytes_closes_the_tunnel_instead_of_carrying_more(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level("INFO", "phantom.tunnel")
    async with spliced(max_bytes=100_000) as ((c_reader, c_writer), (b_reader, b_writer), tunnel):
        b_writer.write(b"a" * 60_000)
        assert len(await c_reader.readexactly(60_000)) == 60_000
        c_writer.write(b"b" * 60_000)  # 120,000 in all: past the quota
        received = await b_reader.read()  # until EOF
        assert received == b""
        assert await c_reader.read() == b""
        await asyncio.wait_for(tunnel.done, 5)
        assert tunnel.bytes_moved <= 100_000
    assert "tunnel_max_bytes (100000) reached: closing" in caplog.text


@async_test()
async def test_close_at_closes_both_legs(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level("INFO", "phantom.tunnel")
    async with spliced(close_at=time.time() + 0.3) as ((c_reader, _), (b_reader, b_writer), tunnel):
        b_writer.write(b"hello")
        assert await c_reader.readexactly(5) == b"hello"
        started = time.monotonic()
        assert await c_reader.read() == b""
        assert await b_reader.read() == b""
        assert time.monotonic() - started < 1.0
    assert "its token expired: closing" in caplog.text
