"""Faults injected by real misbehaving peers (issue 6, "Faults"). After each one phantom serves
the next request normally. Backends that refuse, stay silent or close mid-body are covered in
test_backend_failures.py; tunnel legs vanishing in test_tunnel.py."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest
from conftest import RawClient, async_test, build_request, fetch, running_proxy
from origin import Reply, ScriptedBackend, TestOrigin, payload, read_request_head, reset

OK = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"

Misbehave = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


def scripted(misbehave: Misbehave) -> ScriptedBackend:
    """A backend that answers /ok properly and misbehaves on anything else."""

    async def script(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while True:
            head = await read_request_head(reader)
            if head.startswith(b"GET /ok "):
                writer.write(OK)
                await writer.drain()
                continue
            await misbehave(reader, writer)
            return

    return ScriptedBackend(script)


async def garbage(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    writer.write(b"\x16\x03\x01 this is not HTTP at all\r\n\r\n")
    await writer.drain()


async def reset_in_head(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    writer.write(b"HTTP/1.1 200 OK\r\nContent-Le")
    await writer.drain()
    await asyncio.sleep(0.05)
    reset(writer)


async def reset_in_body(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    writer.write(b"HTTP/1.1 200 OK\r\nCache-Control: max-age=60\r\nContent-Length: 1000\r\n\r\n")
    writer.write(b"x" * 300)
    await writer.drain()
    await asyncio.sleep(0.05)
    reset(writer)


@pytest.mark.parametrize(
    "misbehave, status",
    [(garbage, 502), (reset_in_head, 502), (reset_in_body, 200)],
    ids=["garbage", "reset-during-head", "reset-during-body"],
)
@async_test()
async def test_backend_fault_then_the_next_request_is_served(
    misbehave: Misbehave, status: int
) -> None:
    async with scripted(misbehave) as backend, running_proxy(backend.port) as proxy:
        async with await RawClient.connect(proxy.port) as client:
            response = await client.request("GET", "/fault")
            assert response.status == status
            if status == 200:
                assert not response.complete, "a cut body must never look complete"
                assert await client.is_closed_by_peer(2.0)
        response = await fetch(proxy.port, "GET", "/ok")
        assert (response.status, response.body) == (200, b"ok")
        # the reset response was not cached: the next /fault goes to the backend again
        async with await RawClient.connect(proxy.port) as client:
            response = await client.request("GET", "/fault")
            assert response.status == status and (status != 200 or not response.complete)


@async_test()
async def test_backend_sending_101_then_closing_at_once_closes_the_client() -> None:
    async def switch_and_close(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\n")
        writer.write(b"Upgrade: x\r\n\r\n")
        await writer.drain()

    async with scripted(switch_and_close) as backend, running_proxy(backend.port) as proxy:
        async with await RawClient.connect(proxy.port) as client:
            await client.send(
                build_request("GET", "/ws", [("Connection", "Upgrade"), ("Upgrade", "x")])
            )
            response = await client.read_response()
            assert response.status == 101
            assert await client.is_closed_by_peer(2.0)
        await asyncio.sleep(0.05)
        assert (await fetch(proxy.port, "GET", "/ok")).body == b"ok"


@pytest.mark.parametrize("phase", ["waiting-for-head", "sending-body"])
@async_test()
async def test_client_vanishing_mid_forward_abandons_the_backend_request(phase: str) -> None:
    """The backend connection is closed at once (not pooled, not left to time out)."""

    forwarded = asyncio.Event()

    async def hold(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        forwarded.set()  # the request head has arrived
        await backend.wait_for_eof(reader)

    backend = scripted(hold)
    async with backend, running_proxy(backend.port, backend_timeout=30) as proxy:
        client = await RawClient.connect(proxy.port)
        if phase == "waiting-for-head":
            await client.send(build_request("GET", "/hold"))
        else:
            head = build_request("POST", "/hold", [("Content-Length", "100000")])
            await client.send(head + b"x" * 1000)
        await forwarded.wait()
        vanished = time.monotonic()
        client.vanish()
        while not backend.eof_seen:
            await asyncio.sleep(0.01)
        assert backend.eof_seen[0] - vanished < 1.0
        response = await fetch(proxy.port, "GET", "/ok")
        assert response.body == b"ok"
        assert backend.connections_accepted == 2, "the abandoned connection was not reused"
        while proxy.open_connections:
            await asyncio.sleep(0.01)


@async_test()
async def test_client_vanishing_while_a_cached_body_is_written() -> None:
    body = payload(8 * 1024 * 1024 - 4096, seed=6)
    routes = {"/big": Reply(200, [("Cache-Control", "max-age=60")], body)}
    async with TestOrigin(routes) as origin, running_proxy(
        origin.port, cache_max_object_bytes=8 * 1024 * 1024
    ) as proxy:
        assert (await fetch(proxy.port, "GET", "/big")).sha256 is not None  # stored
        for _ in range(3):
            client = await RawClient.connect(proxy.port)
            await client.send(build_request("GET", "/big"))
            await client.read_exactly(1000)
            client.vanish()
        response = await fetch(proxy.port, "GET", "/big")
        assert response.status == 200 and response.body == body
        assert origin.requests["/big"] == 1, "all served from the cache"
        while proxy.open_connections:
            await asyncio.sleep(0.01)


@async_test()
async def test_a_backend_timeout_on_a_pooled_connection_is_not_retried() -> None:
    """A slow backend is not a dead pooled connection: the request is not sent twice."""
    calls = {"/slow": 0}

    async def slow(request: object) -> Reply:
        calls["/slow"] += 1
        return Reply(200, [], b"late", delay=2.0)

    async with TestOrigin({"/ok": Reply(200, [], b"ok"), "/slow": slow}) as origin:
        async with running_proxy(origin.port, backend_timeout=0.5) as proxy:
            async with await RawClient.connect(proxy.port) as client:
                assert (await client.request("GET", "/ok")).status == 200  # pools the conn
                answer = await client.request("GET", "/slow")
            assert answer.status == 504
            await asyncio.sleep(0.2)
            assert calls["/slow"] == 1


@async_test()
async def test_a_backend_closing_before_answering_is_reported_as_closed() -> None:
    async def hang_up(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request_head(reader)
        writer.close()

    async with ScriptedBackend(hang_up) as backend, running_proxy(backend.port) as proxy:
        answer = await fetch(proxy.port, "GET", "/")
        assert answer.status == 502
        assert answer.body == b"The backend closed the connection.\n"


@pytest.mark.parametrize("how", ["rst", "fin"])
@pytest.mark.parametrize("path", ["fast lane", "request loop"])
@async_test()
async def test_a_client_hanging_up_mid_response_is_a_499_not_a_backend_warning(
    how: str, path: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The backend is streaming a body when the client goes: the access log says 499 (the
    client left), with no error=reset, and nothing is logged as a backend failure."""
    caplog.set_level(logging.INFO, logger="phantom")
    started = asyncio.Event()

    async def chunks() -> AsyncIterator[bytes]:
        yield b"x" * 1000
        started.set()
        for _ in range(100):
            await asyncio.sleep(0.02)
            yield b"y" * 1000

    log_path = tmp_path / "access.log"
    routes = {"/stream": lambda _: Reply(200, [("Cache-Control", "no-store")], chunks())}
    async with TestOrigin(routes) as origin, running_proxy(
        origin.port, access_log=str(log_path)
    ) as proxy:
        client = await RawClient.connect(proxy.port)
        version = "HTTP/1.1" if path == "fast lane" else "HTTP/1.0"
        await client.send(build_request("GET", "/stream", version=version))
        await client.read_head()
        await started.wait()
        if how == "rst":
            client.vanish()
        else:
            await client.close()
        while proxy.open_connections:
            await asyncio.sleep(0.01)
        assert (await fetch(proxy.port, "GET", "/ok")).status == 404  # and it serves on
    [line] = [x for x in log_path.read_text().splitlines() if "/stream" in x]
    assert '"GET /stream HTTP/' in line and '" 499 ' in line
    assert "error=" not in line
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING], caplog.text



@async_test()
async def test_a_request_left_to_the_loop_gives_its_backend_place_back_if_the_client_goes() -> None:
    """The fast lane counts a request in its backend's flight and leaves it to the loop to
    connect; a client gone before the loop's turn (its bytes and its close read in one turn
    of the event loop: an order the kernel can give) must not leave the count up. A backend
    counted busy forever is never drained from a reload, and skews least-connections."""
    routes = {"/nc": Reply(200, [("Cache-Control", "no-store")], b"x")}
    async with (
        TestOrigin(routes) as origin,
        running_proxy(origin.port, exclude_paths=["/nc"]) as proxy,
    ):
        backend = proxy.servers["app"].backends.balancer.backends[0]
        async with await RawClient.connect(proxy.port):
            await asyncio.sleep(0.05)
            (conn,) = proxy._ctx.connections
            conn.data_received(b"GET /nc HTTP/1.1\r\nHost: app\r\n\r\n")
            assert conn.simple_forward is not None and backend.inflight == 1
            conn.connection_lost(None)
            conn.transport.abort()  # (its own connection_lost then comes a second time)
            await asyncio.sleep(0.1)
            assert backend.inflight == 0
        assert origin.requests["/nc"] == 0
