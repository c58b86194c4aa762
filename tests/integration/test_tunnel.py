"""Upgrade tunnels through phantom: WebSocket (the `websockets` library on both ends) and custom
upgrade tokens over raw sockets (issue 2, "Upgrades")."""

from __future__ import annotations

import asyncio
import hashlib
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pytest
from conftest import ClosedBeforeResponse, RawClient, async_test, build_request, running_proxy
from origin import Reply, TestOrigin, UpgradeBackend, WebSocketBackend, payload_chunks
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed


def upgrade_request(token: str = "x-echo", target: str = "/tunnel", **kwargs: Any) -> bytes:
    return build_request("GET", target, [("Connection", "Upgrade"), ("Upgrade", token)], **kwargs)


@asynccontextmanager
async def ws_through_proxy(
    backend: WebSocketBackend, path: str = "/ws", **options: Any
) -> AsyncIterator[ClientConnection]:
    async with running_proxy(backend.port) as proxy:
        async with connect(f"ws://127.0.0.1:{proxy.port}{path}", **options) as ws:
            yield ws


@asynccontextmanager
async def upgraded(
    backend: UpgradeBackend, proxy: Any, early: bytes = b"", token: str = "x-echo"
) -> AsyncIterator[RawClient]:
    """A raw client connection through the proxy, switched to `token` (101 already read)."""
    async with await RawClient.connect(proxy.port) as client:
        await client.send(upgrade_request(token) + early)
        response = await client.read_response()
        assert response.status == 101, response.head
        yield client


# -- WebSocket ---------------------------------------------------------------------------------


@async_test()
async def test_websocket_text_and_binary_echo() -> None:
    async with WebSocketBackend() as backend, ws_through_proxy(backend) as ws:
        await ws.send("hello phantom")
        assert await ws.recv() == "hello phantom"
        await ws.send(b"\x00\x01\x02binary\xff")
        assert await ws.recv() == b"\x00\x01\x02binary\xff"
        big = bytes(range(256)) * 4096  # 1 MiB message, several TCP segments
        await ws.send(big)
        assert await ws.recv() == big
        for i in range(50):
            await ws.send(f"message {i}")
        assert [await ws.recv() for _ in range(50)] == [f"message {i}" for i in range(50)]


@async_test()
async def test_websocket_ping_pong() -> None:
    async with WebSocketBackend() as backend, ws_through_proxy(backend, ping_interval=None) as ws:
        for payload in (b"", b"probe-1", b"probe-2"):
            pong = await ws.ping(payload)
            latency = await asyncio.wait_for(pong, 2)
            assert latency >= 0
        await ws.send("still open")
        assert await ws.recv() == "still open"


@async_test()
async def test_websocket_close_from_client_reaches_backend() -> None:
    async with WebSocketBackend() as backend, ws_through_proxy(backend) as ws:
        await ws.send("bye soon")
        assert await ws.recv() == "bye soon"
        await ws.close(4001, "client done")
        assert ws.close_code == 4001
        await asyncio.wait_for(backend.closed.wait(), 2)
        assert backend.close_codes == [(4001, "client done")]


@async_test()
async def test_websocket_close_from_backend_reaches_client() -> None:
    async with WebSocketBackend() as backend, ws_through_proxy(backend) as ws:
        await ws.send("close:4000:server says bye")
        with pytest.raises(ConnectionClosed) as info:
            await asyncio.wait_for(ws.recv(), 2)
        assert info.value.rcvd is not None
        assert (info.value.rcvd.code, info.value.rcvd.reason) == (4000, "server says bye")


@async_test()
async def test_websocket_subprotocol_and_101_headers_pass_through() -> None:
    backend = WebSocketBackend(
        subprotocols=["chat.v2"],
        response_headers=[("Set-Cookie", "ws_session=42; Path=/"), ("X-Backend", "ws-origin")],
    )
    async with backend, ws_through_proxy(backend, subprotocols=["chat.v1", "chat.v2"]) as ws:
        assert ws.subprotocol == "chat.v2"
        assert ws.response is not None
        assert ws.response.headers["Sec-WebSocket-Protocol"] == "chat.v2"
        assert ws.response.headers["Set-Cookie"] == "ws_session=42; Path=/"
        assert ws.response.headers["X-Backend"] == "ws-origin"
        # the library negotiated permessage-deflate end to end (headers relayed untouched)
        assert "permessage-deflate" in ws.response.headers.get("Sec-WebSocket-Extensions", "")
        await ws.send("proto ok")
        assert await ws.recv() == "proto ok"
    assert backend.negotiated == ["chat.v2"]
    sent = dict((n.lower(), v) for n, v in backend.request_headers[0])
    assert sent["sec-websocket-protocol"] == "chat.v1, chat.v2"
    assert "sec-websocket-key" in sent


# -- custom upgrades over raw sockets -----------------------------------------------------------


# h2c is tunnelled only where upgrade_protocols names it: test_upgrade_safety.py (issue 11).
@pytest.mark.parametrize("token", ["x-echo", "IRC/6.9"])
@async_test()
async def test_any_upgrade_token_is_tunnelled(token: str) -> None:
    async with UpgradeBackend() as backend, running_proxy(backend.port) as proxy:
        async with upgraded(backend, proxy, token=token) as client:
            await client.send(b"round trip\x00\xff")
            assert await client.read_exactly(12) == b"round trip\x00\xff"
        assert backend.handshakes[0].get("upgrade") == token


@async_test()
async def test_upgrade_request_head_replayed_with_original_names_and_order() -> None:
    headers = [
        ("X-First-Header", "1"),
        ("Connection", "keep-alive, Upgrade"),
        ("X-CamelCase-Token", "AbC"),
        ("Upgrade", "x-echo"),
        ("X-Last", "z"),
    ]
    async with UpgradeBackend() as backend, running_proxy(backend.port) as proxy:
        async with await RawClient.connect(proxy.port) as client:
            await client.send(build_request("GET", "/chat?room=7", headers, host="tun.test"))
            assert (await client.read_response()).status == 101
        handshake = backend.handshakes[0]
        assert (handshake.method, handshake.target) == (b"GET", b"/chat?room=7")
        names = [n.decode() for n, _ in handshake.raw_headers]
        client_names = ["Host"] + [n for n, _ in headers]
        order = [n for n in names if n in client_names]
        assert order == client_names, f"names/order changed: {names}"
        assert handshake.get("connection") == "keep-alive, Upgrade"
        assert handshake.get("x-camelcase-token") == "AbC"
        assert handshake.get("x-forwarded-for") is not None


@async_test()
async def test_backend_101_head_reaches_client_verbatim() -> None:
    extra = [
        (b"Set-Cookie", b"tunnel=1; Path=/"),
        (b"X-Odd-CASE-Header", b"Value With  Spaces"),
        (b"Sec-WebSocket-Protocol", b"custom.v1"),
    ]
    async with (
        UpgradeBackend(extra_101_headers=extra) as backend,
        running_proxy(backend.port) as proxy,
    ):
        async with await RawClient.connect(proxy.port) as client:
            await client.send(upgrade_request())
            head = await client.read_head()
        assert head.startswith(b"HTTP/1.1 101 ")
        for name, value in extra:
            assert b"\r\n" + name + b": " + value + b"\r\n" in head, head


@async_test(timeout=50)
async def test_custom_upgrade_moves_64_mib_each_way_with_matching_sha256() -> None:
    size = 64 * 1024 * 1024
    async with UpgradeBackend() as backend, running_proxy(backend.port) as proxy:
        async with upgraded(backend, proxy) as client:
            sent_hash = hashlib.sha256()

            async def send_all() -> None:
                for chunk in payload_chunks(size, seed=64):
                    sent_hash.update(chunk)
                    await client.send(chunk)

            async def receive_all() -> str:
                received_hash = hashlib.sha256()
                left = size
                while left:
                    data = await client.reader.read(min(left, 1024 * 1024))
                    assert data, f"tunnel ended with {left} bytes still to come"
                    received_hash.update(data)
                    left -= len(data)
                return received_hash.hexdigest()

            started = time.monotonic()
            _, received = await asyncio.gather(send_all(), receive_all())
            elapsed = time.monotonic() - started
            assert received == sent_hash.hexdigest()
            leg = backend.legs[0]
            assert leg.received == size and leg.sent == size
            print(f"64 MiB each way through the tunnel in {elapsed:.2f} s")


@async_test(timeout=40)
async def test_slow_reader_pauses_the_other_side_nothing_queues_without_bound() -> None:
    size = 128 * 1024 * 1024
    async with (
        UpgradeBackend(mode="source", source_bytes=size) as backend,
        running_proxy(backend.port) as proxy,
    ):
        async with upgraded(backend, proxy) as client:
            leg = await backend.wait_leg()
            await asyncio.sleep(1.0)  # the client reads nothing meanwhile
            stalled_at = leg.sent
            # socket buffers on three loopback connections hold some MiB; an unbounded
            # proxy-side queue would have taken (nearly) everything
            assert stalled_at < 64 * 1024 * 1024, f"backend sent {stalled_at} bytes unread"
            await asyncio.sleep(0.3)
            assert leg.sent - stalled_at < 8 * 1024 * 1024, "the backend is still sending"
            # reading resumes the flow: every byte arrives, in order
            received = hashlib.sha256()
            total = 0
            while data := await client.reader.read(1024 * 1024):
                received.update(data)
                total += len(data)
            assert total == size
            assert received.hexdigest() == sha256_of_chunks(size, 99, 64 * 1024)


def sha256_of_chunks(size: int, seed: int, chunk: int) -> str:
    digest = hashlib.sha256()
    for part in payload_chunks(size, seed, chunk):
        digest.update(part)
    return digest.hexdigest()


@async_test()
async def test_bytes_right_behind_both_handshakes_are_forwarded() -> None:
    early = b"CLIENT-EARLY-BYTES\x00\x01"
    greeting = b"BACKEND-GREETING\xfe\xff"
    async with UpgradeBackend(greeting=greeting) as backend, running_proxy(backend.port) as proxy:
        async with await RawClient.connect(proxy.port) as client:
            await client.send(upgrade_request() + early)  # one write: head + first bytes
            response = await client.read_response()
            assert response.status == 101
            # the backend wrote greeting in the same write as its 101, then echoed `early`
            got = await client.read_exactly(len(greeting) + len(early))
            assert got == greeting + early
            await client.send(b"after")
            assert await client.read_exactly(5) == b"after"
        assert backend.legs[0].received == len(early) + 5


@async_test()
async def test_refused_upgrade_reaches_client_as_ordinary_response() -> None:
    body = b"no tunnels for you\n"
    async with (
        UpgradeBackend(mode="refuse", refuse_body=body) as backend,
        running_proxy(backend.port) as proxy,
    ):
        async with await RawClient.connect(proxy.port) as client:
            await client.send(upgrade_request())
            response = await client.read_response()
            assert response.status == 403
            assert response.body == body and response.complete
            assert response.content_length == len(body)
            # keep-alive may continue (or the proxy closes): it must not hang or send garbage
            try:
                await client.send(build_request("GET", "/after"))
                after = await client.read_response(timeout=3)
            except (ConnectionError, ClosedBeforeResponse):
                pass  # the proxy closed the connection after the 403: acceptable
            else:
                assert (after.status, after.body) == (200, b"plain\n")


@async_test()
async def test_websocket_disabled_gets_501_and_connection_stays_usable() -> None:
    routes = {"/after": Reply(200, [("Cache-Control", "no-store")], b"after"), "/ws": Reply()}
    async with (
        TestOrigin(routes) as origin,
        running_proxy(origin.port, enable_websocket=False) as proxy,
    ):
        async with await RawClient.connect(proxy.port) as client:
            await client.send(
                build_request(
                    "GET",
                    "/ws",
                    [
                        ("Connection", "Upgrade"),
                        ("Upgrade", "websocket"),
                        ("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ=="),
                        ("Sec-WebSocket-Version", "13"),
                    ],
                )
            )
            response = await client.read_response()
            assert response.status == 501
            assert response.complete and 0 < len(response.body) < 1024
            after = await client.request("GET", "/after")
            assert (after.status, after.body) == (200, b"after")
        assert origin.requests["/ws"] == 0
        assert origin.requests["/after"] == 1


@async_test()
async def test_half_close_keeps_the_other_direction_flowing() -> None:
    tail = b"backend tail after client EOF|" * 20_000  # ~600 KB, several segments
    async with UpgradeBackend(eof_reply=tail) as backend, running_proxy(backend.port) as proxy:
        async with upgraded(backend, proxy) as client:
            await client.send(b"last words")
            assert await client.read_exactly(10) == b"last words"
            client.shutdown_write()
            leg = await backend.wait_leg()
            await asyncio.wait_for(leg.eof.wait(), 2)  # the FIN was carried to the backend
            rest = await client.read_until_eof(timeout=5)
            assert rest == tail, f"got {len(rest)} of {len(tail)} bytes after the half-close"


@pytest.mark.parametrize("how", ["fin", "rst"])
@async_test()
async def test_client_vanishing_closes_backend_leg_within_a_second(how: str) -> None:
    async with UpgradeBackend() as backend, running_proxy(backend.port) as proxy:
        client = await RawClient.connect(proxy.port)
        await client.send(upgrade_request())
        assert (await client.read_response()).status == 101
        await client.send(b"hi")
        assert await client.read_exactly(2) == b"hi"
        leg = await backend.wait_leg()
        gone = time.monotonic()
        if how == "rst":
            client.vanish()
        else:
            await client.close()
        await asyncio.wait_for(leg.eof.wait(), 1.0)
        assert leg.eof_at is not None and leg.eof_at - gone < 1.0


@pytest.mark.parametrize("how", ["fin", "rst"])
@async_test()
async def test_backend_vanishing_closes_client_leg_within_a_second(how: str) -> None:
    async with UpgradeBackend() as backend, running_proxy(backend.port) as proxy:
        async with upgraded(backend, proxy) as client:
            await client.send(b"hi")
            assert await client.read_exactly(2) == b"hi"
            leg = await backend.wait_leg()
            leg.vanish(rst=how == "rst")
            started = time.monotonic()
            rest = await client.read_until_eof(timeout=1.0)
            assert rest == b""
            assert time.monotonic() - started < 1.0
