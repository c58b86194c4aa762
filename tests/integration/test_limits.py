"""Every limit over real sockets: the status the client gets, that the connection closes, that
nothing reaches the backend when the limit is known up front, and that phantom serves on."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import pytest
from conftest import (
    RawClient,
    RawResponse,
    async_test,
    build_request,
    fetch,
    parse_head,
    proxied,
    proxy_config,
    running_proxy,
)
from origin import TestOrigin, UpgradeBackend, echo
from test_tunnel import upgrade_request, upgraded

from phantom import create_proxy


async def refused(port: int, raw: bytes) -> tuple[int, str | None]:
    """Send ``raw``; the status and Connection header of the answer, once the server closed."""
    async with await RawClient.connect(port) as client:
        await client.send(raw)
        data = await client.read_until_eof()
    response = parse_head(data[: data.index(b"\r\n\r\n") + 4])
    return response.status, response.get("connection")


@pytest.mark.parametrize(
    "raw, options, status",
    [
        (build_request("GET", "/" + "a" * 200), {"max_request_line": 100}, 414),
        (build_request("GET", "/", [("X-Big", "b" * 3000)]), {"max_header_bytes": 2048}, 431),
        (build_request("GET", "/", [(f"X-{i}", "v") for i in range(12)]), {"max_headers": 10}, 431),
        (build_request("POST", "/echo", body=b"x" * 101), {"max_body_bytes": 100}, 413),
    ],
    ids=["request-line-414", "head-bytes-431", "header-count-431", "content-length-413"],
)
@async_test()
async def test_limit_refused_before_the_backend(
    raw: bytes, options: dict[str, int], status: int
) -> None:
    async with proxied({"/echo": echo, "/": echo}, **options) as (origin, proxy):
        assert await refused(proxy.port, raw) == (status, "close")
        assert origin.connections_accepted == 0
        assert (await fetch(proxy.port, "GET", "/")).status == 200


@async_test()
async def test_body_limit_at_exactly_the_limit_passes_and_a_server_override_wins() -> None:
    async with TestOrigin({"/echo": echo}) as origin:
        config = proxy_config(origin.port, max_body_bytes=10)
        config["server"]["app"]["max_body_bytes"] = 20
        async with create_proxy(config) as proxy:
            response = await fetch(proxy.port, "POST", "/echo", body=b"x" * 20)
            assert (response.status, response.body) == (200, b"x" * 20)
            raw = build_request("POST", "/echo", body=b"x" * 21)
            assert await refused(proxy.port, raw) == (413, "close")


@async_test()
async def test_chunked_body_over_the_limit_is_413_and_the_backend_request_abandoned() -> None:
    async with proxied({"/echo": echo}, max_body_bytes=1000) as (origin, proxy):
        chunks = [b"y" * 400] * 5
        raw = build_request("POST", "/echo", chunks=chunks)
        assert await refused(proxy.port, raw) == (413, "close")
        await asyncio.sleep(0.1)
        assert origin.requests["/echo"] == 0, "the backend never saw a complete request"
        assert (await fetch(proxy.port, "POST", "/echo", body=b"ok")).body == b"ok"


@async_test()
async def test_slowloris_head_gets_408_after_header_timeout() -> None:
    async with proxied({"/": echo}, header_timeout=0.5) as (origin, proxy):
        async with await RawClient.connect(proxy.port) as client:
            started = time.monotonic()
            await client.send(b"GET / HTTP/1.1\r\nHost: a\r\n")
            for _ in range(3):
                await asyncio.sleep(0.1)
                await client.send(b"X-Drip: 1\r\n")
            data = await client.read_until_eof()
            elapsed = time.monotonic() - started
        assert data.startswith(b"HTTP/1.1 408 "), data
        assert b"connection: close" in data.lower()
        assert 0.4 < elapsed < 3.0
        assert origin.connections_accepted == 0


@async_test()
async def test_silent_new_connection_closed_after_header_timeout_without_answer() -> None:
    async with proxied({"/": echo}, header_timeout=0.3) as (_, proxy):
        async with await RawClient.connect(proxy.port) as client:
            assert await client.is_closed_by_peer(3.0)


@async_test()
async def test_idle_keepalive_connection_closed_after_keepalive_timeout() -> None:
    async with proxied({"/": echo}, keepalive_timeout=0.3) as (_, proxy):
        async with await RawClient.connect(proxy.port) as client:
            assert (await client.request("GET", "/")).status == 200
            started = time.monotonic()
            assert await client.is_closed_by_peer(3.0)
            assert 0.2 < time.monotonic() - started < 2.5


@async_test()
async def test_max_connections_new_ones_get_503_existing_ones_unaffected() -> None:
    async with proxied({"/": echo}, max_connections=2) as (_, proxy):
        first = await RawClient.connect(proxy.port)
        second = await RawClient.connect(proxy.port)
        try:
            assert (await first.request("GET", "/")).status == 200
            assert (await second.request("GET", "/")).status == 200
            assert await refused(proxy.port, build_request("GET", "/")) == (503, "close")
            # the two admitted connections keep working
            assert (await first.request("GET", "/")).status == 200
            assert (await second.request("GET", "/")).status == 200
        finally:
            await first.close()
            await second.close()
        await asyncio.sleep(0.1)
        assert (await fetch(proxy.port, "GET", "/")).status == 200


@async_test()
async def test_max_tunnels_further_upgrades_get_503() -> None:
    async with UpgradeBackend() as backend, running_proxy(backend.port, max_tunnels=1) as proxy:
        async with upgraded(backend, proxy) as tunnel:
            assert await refused(proxy.port, upgrade_request()) == (503, "close")
            await tunnel.send(b"still here")
            assert await tunnel.read_exactly(10) == b"still here"
        assert len(backend.legs) == 1, "the refused upgrade never reached the backend"


@async_test()
async def test_tunnel_idle_timeout_closes_a_quiet_tunnel_and_activity_keeps_it() -> None:
    async with UpgradeBackend() as backend, running_proxy(
        backend.port, tunnel_idle_timeout=0.6
    ) as proxy:
        async with upgraded(backend, proxy) as busy:
            for _ in range(6):  # 1.2 s of traffic, twice the idle timeout
                await busy.send(b"ping")
                assert await busy.read_exactly(4) == b"ping"
                await asyncio.sleep(0.2)
            started = time.monotonic()
            assert await busy.is_closed_by_peer(3.0)
            assert 0.5 < time.monotonic() - started < 2.0
        leg = await backend.wait_leg(0)
        await asyncio.wait_for(leg.eof.wait(), 2)


@async_test()
async def test_quiet_tunnel_lives_on_without_an_idle_timeout() -> None:
    async with UpgradeBackend() as backend, running_proxy(backend.port) as proxy:
        async with upgraded(backend, proxy) as quiet:
            assert not await quiet.is_closed_by_peer(1.0)
            await quiet.send(b"late")
            assert await quiet.read_exactly(4) == b"late"


@async_test()
async def test_a_trickled_body_gets_408_after_header_timeout_between_pieces() -> None:
    """A slowloris on the body: each wait for more of it is bounded by header_timeout."""
    async with proxied({"/": echo}, header_timeout=0.5) as (_, proxy):
        async with await RawClient.connect(proxy.port) as client:
            started = time.monotonic()
            await client.send(b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 100\r\n\r\nab")
            data = await client.read_until_eof()
            elapsed = time.monotonic() - started
        assert data.startswith(b"HTTP/1.1 408 "), data
        assert 0.4 < elapsed < 3.0


@async_test()
async def test_an_upgrade_request_body_over_max_body_bytes_is_413() -> None:
    """The upgrade path keeps the body to replay it, so it is bounded like any other."""
    async with UpgradeBackend() as backend, running_proxy(
        backend.port, max_body_bytes=10
    ) as proxy:
        raw = build_request(
            "POST", "/", [("Connection", "Upgrade"), ("Upgrade", "x-echo")], b"x" * 100
        )
        status, connection = await refused(proxy.port, raw)
        assert (status, connection) == (413, "close")
        assert backend.handshakes == []


# -- each client's share (issue 11, item 10) ---------------------------------------------------

OTHER_CLIENT = "127.0.0.2"  # a second loopback address: another client


async def turned_away(port: int, source: str | None = None) -> RawResponse:
    """A new connection's answer, read to the close, without sending anything first."""
    async with await RawClient.connect(port, source=source) as client:
        data = await client.read_until_eof()
    return parse_head(data[: data.index(b"\r\n\r\n") + 4])


@async_test()
async def test_max_connections_per_client_turns_a_slowloris_away_and_serves_others() -> None:
    async with proxied({"/": echo}, max_connections_per_client=3) as (_, proxy):
        # One client holds its three connections with heads it never finishes...
        dripping = [await RawClient.connect(proxy.port) for _ in range(3)]
        try:
            for client in dripping:
                await client.send(b"GET / HTTP/1.1\r\nHost: a\r\n")
            # ... its fourth is answered at once, not after header_timeout, and closed,
            started = time.monotonic()
            refused_now = await turned_away(proxy.port)
            assert time.monotonic() - started < 1.0
            assert (refused_now.status, refused_now.get("connection")) == (503, "close")
            assert refused_now.get("retry-after") == "5"
            # and so is one that sends its request (it gets the 503, not a reset).
            refused_request = await refused(proxy.port, build_request("GET", "/"))
            assert refused_request == (503, "close")
            # Another client is served meanwhile.
            async with await RawClient.connect(proxy.port, source=OTHER_CLIENT) as other:
                assert (await other.request("GET", "/")).status == 200
            # The held connections were not touched: they finish their requests.
            await dripping[0].send(b"\r\n")
            assert (await dripping[0].read_response()).status == 200
        finally:
            for client in dripping:
                await client.close()
        # Once the client's connections close, it is served again.
        await asyncio.sleep(0.2)
        assert (await fetch(proxy.port, "GET", "/")).status == 200


@async_test()
async def test_max_connections_per_client_does_not_count_a_trusted_proxys_connections() -> None:
    async with proxied(
        {"/": echo}, max_connections_per_client=1, trusted_proxies=["127.0.0.1"]
    ) as (_, proxy):
        first = await RawClient.connect(proxy.port)
        try:
            assert (await fetch(proxy.port, "GET", "/")).status == 200
        finally:
            await first.close()


def forwarded_for(address: str) -> bytes:
    return build_request(
        "GET", "/tunnel",
        [("Connection", "Upgrade"), ("Upgrade", "x-echo"), ("X-Forwarded-For", address)],
    )


@asynccontextmanager
async def tunnel_for(port: int, address: str) -> AsyncIterator[RawClient]:
    """An upgraded connection through the trusted proxy on 127.0.0.1 for client ``address``."""
    async with await RawClient.connect(port) as client:
        await client.send(forwarded_for(address))
        response = await client.read_response()
        assert response.status == 101, response.head
        yield client


@async_test()
async def test_max_tunnels_per_client_gives_503_to_one_client_and_tunnels_for_another() -> None:
    async with UpgradeBackend() as backend, running_proxy(
        backend.port, max_tunnels_per_client=2, trusted_proxies=["127.0.0.1"]
    ) as proxy:
        # Through a trusted proxy (127.0.0.1), each client is its X-Forwarded-For address.
        async with tunnel_for(proxy.port, "203.0.113.7"), tunnel_for(proxy.port, "203.0.113.7"):
            async with await RawClient.connect(proxy.port) as client:
                await client.send(forwarded_for("203.0.113.7"))
                answer = await client.read_response()
                assert (answer.status, answer.get("retry-after")) == (503, "5")
                assert await client.is_closed_by_peer()
            # A client's own X-Forwarded-For entries, left of the trusted proxy's, are not it.
            async with await RawClient.connect(proxy.port) as client:
                await client.send(forwarded_for("198.51.100.1, 203.0.113.7"))
                assert (await client.read_response()).status == 503
            async with tunnel_for(proxy.port, "203.0.113.8") as other:
                await other.send(b"still here")
                assert await other.read_exactly(10) == b"still here"
            assert len(backend.legs) == 3, "the refused upgrades never reached the backend"
        # Its tunnels closed, the first client may open new ones.
        await asyncio.sleep(0.2)
        async with tunnel_for(proxy.port, "203.0.113.7") as again:
            await again.send(b"back")
            assert await again.read_exactly(4) == b"back"


@async_test()
async def test_max_tunnels_per_client_counts_the_peer_address_without_a_trusted_proxy() -> None:
    async with UpgradeBackend() as backend, running_proxy(
        backend.port, max_tunnels_per_client=1
    ) as proxy:
        async with upgraded(backend, proxy):
            assert await refused(proxy.port, upgrade_request()) == (503, "close")
            async with await RawClient.connect(proxy.port, source=OTHER_CLIENT) as other:
                await other.send(upgrade_request())
                assert (await other.read_response()).status == 101
