"""Streams and request coalescing (issue 11, item 14): a server-sent-events stream is never
stored, and a coalesced miss waits for another request only while that is worth it: it is let
go as soon as the response head shows an answer that will not be stored or whose length is
unknown, and after ``coalesce_timeout`` at the latest."""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import AsyncIterator

import pytest
from conftest import RawClient, async_test, build_request, get, proxied
from origin import OriginRequest, Reply

FIRST_EVENTS_WITHIN = 2.0  # seconds; the stream sends one event every 50 ms


async def endless_events() -> AsyncIterator[bytes]:
    """An SSE stream that never ends: one event every 50 ms (sent chunked)."""
    for n in itertools.count():
        yield b"id: %d\ndata: event %d\n\n" % (n, n)
        await asyncio.sleep(0.05)


async def first_events(
    port: int, clients: list[RawClient], needle: bytes = b"data: event 2\n"
) -> tuple[bytes, float]:
    """Open a stream through phantom, and keep it open (in ``clients``, for the caller to
    close): its head, and how long until the third event came."""
    started = time.monotonic()
    client = await RawClient.connect(port)
    clients.append(client)
    await client.send(build_request("GET", "/events", [("Accept", "text/event-stream")]))
    head = await client.read_head(timeout=FIRST_EVENTS_WITHIN)
    received = b""
    async with asyncio.timeout(FIRST_EVENTS_WITHIN):
        while needle not in received:
            data = await client.reader.read(65536)
            assert data, f"the stream ended: {received!r}"
            received += data
    return head, time.monotonic() - started


async def open_streams(port: int, count: int) -> list[tuple[bytes, float]]:
    """``count`` clients open the stream at once, and all stay connected until each has had
    its first events (a client that hung up would let the others go)."""
    clients: list[RawClient] = []
    try:
        return await asyncio.gather(*(first_events(port, clients) for _ in range(count)))
    finally:
        for client in clients:
            await client.close()


@pytest.mark.parametrize(
    "headers",
    [
        [("Content-Type", "text/event-stream")],
        # Never stored, even when the origin says it may be.
        [("Content-Type", "text/event-stream; charset=utf-8"), ("Cache-Control", "max-age=60")],
        # Storable, but of unknown length: no telling when the leader's body ends.
        [("Content-Type", "text/plain"), ("Cache-Control", "max-age=60")],
    ],
    ids=["sse", "sse-with-max-age", "endless-chunked-max-age"],
)
@async_test(30)
async def test_three_clients_of_an_endless_stream_each_get_the_first_events_promptly(
    headers: list[tuple[str, str]],
) -> None:
    """Three clients open the same endless stream at once: the second and third no longer
    wait for the first one's response to end (it never does); each gets its own live stream.
    A later client gets a live stream too, never a replay from the cache."""

    def stream(request: OriginRequest) -> Reply:
        return Reply(200, list(headers), endless_events())

    async with proxied({"/events": stream}) as (origin, proxy):
        results = await open_streams(proxy.port, 3)
        assert all(elapsed < FIRST_EVENTS_WITHIN for _, elapsed in results), results
        assert origin.requests["/events"] == 3
        [(head, _)] = await open_streams(proxy.port, 1)
        assert b"hit" not in head
        assert origin.requests["/events"] == 4


@async_test()
async def test_sse_is_never_stored_even_when_it_ends() -> None:
    """A finished text/event-stream answer with explicit freshness is not replayed."""
    reply = Reply(
        200,
        [("Content-Type", "text/event-stream"), ("Cache-Control", "max-age=60")],
        b"data: once\n\n",
    )
    async with proxied({"/events": reply}) as (origin, proxy):
        for _ in range(2):
            assert (await get(proxy.port, "/events")).body == b"data: once\n\n"
        assert origin.requests["/events"] == 2


@async_test()
async def test_a_waiter_goes_to_the_backend_itself_after_coalesce_timeout() -> None:
    """The first miss's origin takes 3 s to answer; the others for the URL wait for it at most
    coalesce_timeout (0.3 s here), then ask the origin themselves, which answers them at
    once."""
    arrivals = itertools.count()

    def first_slow(request: OriginRequest) -> Reply:
        delay = 3.0 if next(arrivals) == 0 else 0.0
        return Reply(200, [("Cache-Control", "max-age=60")], b"body\n", delay=delay)

    async with proxied({"/p": first_slow}, coalesce_timeout=0.3) as (origin, proxy):
        leader = asyncio.ensure_future(get(proxy.port, "/p"))
        await asyncio.sleep(0.1)  # the leader's request is on its way
        started = time.monotonic()
        waiters = await asyncio.gather(*(get(proxy.port, "/p") for _ in range(2)))
        elapsed = time.monotonic() - started
        assert all(w.body == b"body\n" for w in waiters)
        assert 0.2 <= elapsed < 2.0, elapsed
        assert origin.requests["/p"] == 3
        assert (await leader).body == b"body\n"
