"""phantom relay and its agents over real loopback sockets, in one event loop: registration,
control messages, refusals, and public traffic through relay and agent to a local app (HTTP,
a large streamed body, WebSocket, a custom upgrade, many connections at once). The killed
agent process is in test_relay_process.py."""

from __future__ import annotations

import asyncio
import hashlib
import time

import pytest
from conftest import RawClient, async_test
from origin import (
    LOCALHOST,
    Reply,
    TestOrigin,
    UpgradeBackend,
    WebSocketBackend,
    echo,
    payload,
    unused_port,
)
from relay_helpers import (
    ALICE,
    BOB_TOKEN,
    DOMAIN,
    TOKEN,
    control_headers,
    handshake,
    host,
    public_get,
    running_agent,
    running_relay,
    until,
)
from websockets.asyncio.client import connect

from phantom.agents import protocol
from phantom.agents.protocol import Kind, Message


async def read_message(client: RawClient, decoder: protocol.Decoder) -> Message:
    pending: list[Message] = []
    while not pending:
        data = await asyncio.wait_for(client.reader.read(4096), 5)
        assert data, "the relay closed the control connection"
        pending = decoder.feed(data)
    assert len(pending) == 1
    return pending[0]


# -- registration and control messages ------------------------------------------------------


@async_test()
async def test_an_agent_registers_and_is_told_its_public_url() -> None:
    async with running_relay() as relay, TestOrigin() as app:
        async with running_agent(relay.port or 0, app.port) as agent:
            assert agent.urls == [f"http://alice-demo.{DOMAIN}:{relay.port}"]
            assert list(relay.hub.sessions) == ["alice-demo"]
            # The warm pool fills: the relay holds two idle data connections for it.
            session = relay.hub.sessions["alice-demo"]
            await until(lambda: session.warm == 2)


@async_test()
async def test_an_agent_reads_a_101_in_another_form_than_phantom_s() -> None:
    """The agent reads a phantom relay's plain 101 itself, and leaves any other form (bare LF
    line endings here, as from a proxy in between) to h11: it registers all the same."""
    heads: list[bytes] = []
    writers: list[asyncio.StreamWriter] = []

    async def relay(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writers.append(writer)
        head = await reader.readuntil(b"\r\n\r\n")
        heads.append(head)
        writer.write(
            b"HTTP/1.1 101 Switching Protocols\nConnection: Upgrade\nUpgrade: phantom-relay/1\n"
            b"Phantom-Relay-Session: k3y\n\n"
        )
        if head.startswith(b"GET " + protocol.CONTROL_PATH):
            writer.write(protocol.encode(Message(Kind.READY, 60_000, "http://alice-demo.example")))

    server = await asyncio.start_server(relay, LOCALHOST, 0)
    async with server:
        async with running_agent(server.sockets[0].getsockname()[1], unused_port()) as agent:
            assert agent.urls == ["http://alice-demo.example"]
            await until(lambda: len(heads) == 3)  # the control connection, then two warm ones
            assert all(b"Phantom-Relay-Session: k3y" in head for head in heads[1:])
            await asyncio.sleep(0.1)
            assert len(heads) == 3  # both are held, idle: none was refused or taken for use
        for writer in writers:
            writer.close()
            await writer.wait_closed()


@async_test()
async def test_control_messages_ready_ping_pong_and_two_missed_pings_close() -> None:
    async with running_relay(relay_ping_interval=0.2) as relay:
        client, status, head = await handshake(
            relay.port or 0, protocol.CONTROL_PATH, control_headers()
        )
        assert status == 101 and b"Phantom-Relay-Session: " in head
        decoder = protocol.Decoder()
        ready = await read_message(client, decoder)
        assert ready == Message(Kind.READY, 200, f"http://alice-demo.{DOMAIN}:{relay.port}")
        for _ in range(3):  # answered pings keep the session
            ping = await read_message(client, decoder)
            assert ping.kind is Kind.PING
            await client.send(protocol.encode(Message(Kind.PONG, ping.number)))
        assert "alice-demo" in relay.hub.sessions
        started = time.monotonic()
        assert (await read_message(client, decoder)).kind is Kind.PING  # left unanswered
        assert (await read_message(client, decoder)).kind is Kind.PING
        assert await client.is_closed_by_peer(timeout=1.0)
        assert 0.3 < time.monotonic() - started < 0.8
        assert "alice-demo" not in relay.hub.sessions
        await client.close()
        # The name is kept for the token: public requests get the "agent offline" page.
        response = await public_get(relay.port, ALICE)
        assert response.status == 502 and b"agent offline" in response.body


@async_test()
async def test_garbage_on_the_control_connection_ends_the_session(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async with running_relay() as relay:
        client, status, _ = await handshake(
            relay.port or 0, protocol.CONTROL_PATH, control_headers()
        )
        assert status == 101
        await client.send(b"GET / HTTP/1.1\r\n\r\n")
        await client.read_until_eof()
        assert "alice-demo" not in relay.hub.sessions
        assert "control message of" in caplog.text
        await client.close()


@pytest.mark.parametrize(
    ("headers", "status", "reason"),
    [
        (control_headers(token="wrong-token-0123456789"), 401, "unknown token"),
        (control_headers(name="bob"), 403, "the token may not claim the name 'bob'"),
        (control_headers(name="alice_x"), 400, "'alice_x' is not a DNS label"),
        (control_headers(name="alice-" + "a" * 60), 400, "is not a DNS label"),
        ([(b"Phantom-Relay-Name", b"alice-x")], 401, "missing Authorization: Bearer TOKEN"),
        ([(b"Authorization", b"Bearer " + TOKEN.encode())], 400, "missing Phantom-Relay-Name"),
    ],
)
@async_test()
async def test_refused_registrations_are_answered_and_logged(
    headers: list[tuple[bytes, bytes]], status: int, reason: str, caplog: pytest.LogCaptureFixture
) -> None:
    async with running_relay() as relay:
        client, got, text = await handshake(relay.port or 0, protocol.CONTROL_PATH, headers)
        await client.close()
        assert got == status and reason.encode() in text
        assert "refused" in caplog.text and reason in caplog.text
        assert not relay.hub.sessions


@pytest.mark.parametrize(
    ("pieces", "bare_lf"), [(1, False), (1, True), (3, False)], ids=["whole", "LF", "trickled"]
)
@async_test()
async def test_agent_handshakes_whole_or_trickled_end_the_same_way(
    pieces: int, bare_lf: bool
) -> None:
    """A handshake that arrives in one read is taken over in that read's callback (read
    without h11 in the form agents write it, by h11 in any other), one that trickles in is
    read by the request loop first: registered, a warm data connection taken, a wrong token
    refused, and none of them left among the public connections."""
    async with running_relay() as relay:
        port = relay.port or 0
        headers = [*control_headers(), (b"Phantom-Relay-Warm", b"1")]
        control, status, head = await handshake(
            port, protocol.CONTROL_PATH, headers, pieces=pieces, bare_lf=bare_lf
        )
        assert status == 101
        key = head.split(b"Phantom-Relay-Session: ", 1)[1].split(b"\r\n", 1)[0]
        assert (await read_message(control, protocol.Decoder())).kind is Kind.READY
        data_headers = [
            (b"Phantom-Relay-Name", b"alice-demo"),
            (b"Phantom-Relay-Session", key),
            (b"Phantom-Relay-Connection", protocol.WARM),
        ]
        data, status, _ = await handshake(
            port, protocol.DATA_PATH, data_headers, pieces=pieces, bare_lf=bare_lf
        )
        assert status == 101
        await until(lambda: relay.hub.sessions["alice-demo"].warm == 1)
        wrong = control_headers(token="wrong-token-0123456789")
        refused, status, text = await handshake(
            port, protocol.CONTROL_PATH, wrong, pieces=pieces, bare_lf=bare_lf
        )
        assert status == 401 and b"unknown token" in text
        assert await refused.is_closed_by_peer(3.0)
        await until(lambda: not relay.ctx.connections)
        for client in (control, data, refused):
            await client.close()


@async_test()
async def test_a_warm_count_of_thousands_of_digits_is_read_as_none(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Before any token is checked: a value int() refuses must not end in a traceback."""
    async with running_relay() as relay:
        headers = [*control_headers(), (b"Phantom-Relay-Warm", b"9" * 5000)]
        client, status, _ = await handshake(relay.port or 0, protocol.CONTROL_PATH, headers)
        await client.close()
        assert status == 101
        assert "Traceback" not in caplog.text and "Fatal error" not in caplog.text


@async_test()
async def test_a_second_agent_claiming_a_live_name_is_refused_and_logged(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async with running_relay() as relay, TestOrigin() as app:
        async with running_agent(relay.port or 0, app.port):
            client, status, text = await handshake(
                relay.port or 0, protocol.CONTROL_PATH, control_headers()
            )
            await client.close()
            assert status == 409 and b"in use by another agent" in text
            assert "refused for name 'alice-demo': the name 'alice-demo' is in use" in caplog.text


@async_test()
async def test_a_name_reserved_for_one_token_is_refused_to_another_through_the_grace() -> None:
    async with running_relay() as relay:
        client, status, _ = await handshake(
            relay.port or 0, protocol.CONTROL_PATH, control_headers("alice-shared")
        )
        assert status == 101
        client.vanish()  # lost, not a goodbye
        await until(lambda: not relay.hub.sessions)
        other, status, text = await handshake(
            relay.port or 0, protocol.CONTROL_PATH, control_headers("alice-shared", BOB_TOKEN)
        )
        await other.close()
        assert status == 409 and b"reserved for another token" in text


@async_test()
async def test_relay_max_agents() -> None:
    async with running_relay(relay_max_agents=1) as relay, TestOrigin() as app:
        async with running_agent(relay.port or 0, app.port):
            client, status, text = await handshake(
                relay.port or 0, protocol.CONTROL_PATH, control_headers("bob", BOB_TOKEN)
            )
            await client.close()
            assert status == 503 and b"maximum of 1 agents" in text


@async_test()
async def test_a_data_connection_needs_the_session_key(caplog: pytest.LogCaptureFixture) -> None:
    async with running_relay() as relay, TestOrigin() as app:
        async with running_agent(relay.port or 0, app.port):
            headers = [
                (b"Phantom-Relay-Name", b"alice-demo"),
                (b"Phantom-Relay-Session", b"guessed"),
                (b"Phantom-Relay-Connection", b"warm"),
            ]
            client, status, _ = await handshake(relay.port or 0, protocol.DATA_PATH, headers)
            await client.close()
            assert status == 403 and "unknown session" in caplog.text


@async_test()
async def test_a_goodbye_frees_the_name_at_once() -> None:
    async with running_relay() as relay, TestOrigin() as app:
        async with running_agent(relay.port or 0, app.port) as agent:
            await agent.stop()
            await until(lambda: not relay.hub.sessions)
            assert not relay.hub.registry.known("alice-demo")
            response = await public_get(relay.port, ALICE)
            assert response.status == 404


# -- public traffic ---------------------------------------------------------------------------


@pytest.mark.parametrize("warm", [2, 0])
@async_test()
async def test_http_keep_alive_through_relay_and_agent(warm: int) -> None:
    async with running_relay() as relay, TestOrigin({"/echo": echo}) as app:
        async with running_agent(relay.port or 0, app.port, warm=warm):
            async with await RawClient.connect(relay.port or 0) as public:
                first = await public.request("POST", "/echo?a=1", body=b"hello", host=ALICE)
                second = await public.request("GET", "/echo", host=ALICE)
            assert (first.status, first.body, first.get("x-echo-target")) == (
                200,
                b"hello",
                "/echo?a=1",
            )
            assert second.status == 200 and second.get("x-echo-method") == "GET"
            assert app.connections_accepted == 1  # one public connection, one app connection
            assert app.last.get("host") == ALICE  # the request arrives as the browser sent it


@async_test(timeout=30)
async def test_a_large_streamed_body_both_ways() -> None:
    size = 16 * 1024 * 1024
    body = payload(size)
    step = 1024 * 1024
    async with running_relay() as relay, TestOrigin({"/echo": echo}) as app:
        async with running_agent(relay.port or 0, app.port):
            async with await RawClient.connect(relay.port or 0) as public:
                chunks = [body[i : i + step] for i in range(0, size, step)]
                response = await public.request("POST", "/echo", chunks=chunks, host=ALICE)
            assert response.status == 200 and response.complete
            assert len(response.body) == size
            assert response.sha256 == hashlib.sha256(body).hexdigest()


@async_test()
async def test_websocket_echo_through_the_relay() -> None:
    async with running_relay() as relay, WebSocketBackend() as app:
        async with running_agent(relay.port or 0, app.port):
            url = f"ws://{ALICE}:{relay.port}/socket"
            async with connect(url, host=LOCALHOST, port=relay.port) as ws:
                for message in ("hello", b"\x00\x01binary", "x" * 200_000):
                    await ws.send(message)
                    assert await ws.recv() == message
            assert app.paths == ["/socket"]


@async_test()
async def test_a_custom_upgrade_through_the_relay() -> None:
    async with running_relay() as relay, UpgradeBackend(greeting=b"hi!") as app:
        async with running_agent(relay.port or 0, app.port):
            async with await RawClient.connect(relay.port or 0) as public:
                await public.send(
                    b"GET /raw HTTP/1.1\r\nHost: "
                    + ALICE.encode()
                    + b"\r\nConnection: Upgrade\r\nUpgrade: my-proto/2\r\n\r\n"
                )
                response = await public.read_response()
                assert response.status == 101 and response.get("upgrade") == "my-proto/2"
                assert await public.read_exactly(3) == b"hi!"
                await public.send(b"ping over my-proto")
                assert await public.read_exactly(18) == b"ping over my-proto"


@async_test(timeout=30)
async def test_100_concurrent_public_connections() -> None:
    async with running_relay() as relay, TestOrigin({"/echo": echo}) as app:
        async with running_agent(relay.port or 0, app.port):

            async def one(index: int) -> bytes:
                async with await RawClient.connect(relay.port or 0) as public:
                    body = f"request {index}".encode()
                    response = await public.request("POST", "/echo", body=body, host=ALICE)
                    assert response.status == 200
                    return response.body

            bodies = await asyncio.gather(*(one(i) for i in range(100)))
            assert bodies == [f"request {i}".encode() for i in range(100)]
            await until(lambda: not relay.ctx.tunnels)


@async_test()
async def test_unknown_names_and_the_relay_itself_are_404() -> None:
    async with running_relay() as relay:
        for name in (host("nobody"), DOMAIN, "127.0.0.1", host("a.b")):
            response = await public_get(relay.port, name)
            assert response.status == 404 and b"no such agent" in response.body


@async_test()
async def test_the_app_down_is_a_502_from_the_relay_with_the_reason_logged(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async with running_relay() as relay:
        async with running_agent(relay.port or 0, unused_port(), warm=0):
            response = await public_get(relay.port, ALICE)
            assert response.status == 502
            assert response.body == b"The agent could not reach its app.\n"
            assert "cannot connect to 127.0.0.1:" in caplog.text  # the agent's log line


@async_test()
async def test_the_app_down_behind_a_warm_connection_is_a_502_from_the_agent() -> None:
    async with running_relay() as relay:
        async with running_agent(relay.port or 0, unused_port(), warm=1):
            session = relay.hub.sessions["alice-demo"]
            await until(lambda: session.warm == 1)
            response = await public_get(relay.port, ALICE)
            assert response.status == 502 and b"is not reachable" in response.body


async def source_through_relay(relay_port: int, app: UpgradeBackend) -> tuple[int, float]:
    """Open the source upgrade through the relay; (bytes read until the close, seconds)."""
    async with await RawClient.connect(relay_port) as public:
        await public.send(
            b"GET /raw HTTP/1.1\r\nHost: "
            + ALICE.encode()
            + b"\r\nConnection: Upgrade\r\nUpgrade: my-proto/2\r\n\r\n"
        )
        assert (await public.read_response()).status == 101
        started, received = time.monotonic(), 0
        while chunk := await asyncio.wait_for(public.reader.read(65536), 10):
            received += len(chunk)
        return received, time.monotonic() - started


@async_test(timeout=30)
async def test_relay_tunnel_rate_paces_each_of_an_agents_tunnels() -> None:
    """``[relay] tunnel_rate``: 1 MiB from the app reaches the public client at the cap (the
    root key's own cap, 64 MiB/s, would not slow it); the app half-closes, so it all arrives."""
    size, rate = 1 << 20, 512 * 1024
    root = {"tunnel_rate": "64MiB"}
    async with running_relay(root, tunnel_rate=rate) as relay:
        async with UpgradeBackend(mode="source", source_bytes=size) as app:
            async with running_agent(relay.port or 0, app.port):
                received, seconds = await source_through_relay(relay.port or 0, app)
    assert received == size
    assert size / seconds == pytest.approx(rate, rel=0.15)


@async_test(timeout=30)
async def test_relay_tunnel_max_bytes_closes_an_agents_tunnel() -> None:
    """``tunnel_max_bytes`` left out of ``[relay]``: the root key bounds an agent's tunnels."""
    async with running_relay({"tunnel_max_bytes": 100_000}) as relay:
        async with UpgradeBackend(mode="source", source_bytes=1 << 20) as app:
            async with running_agent(relay.port or 0, app.port):
                received, _ = await source_through_relay(relay.port or 0, app)
    assert received <= 100_000


@async_test()
async def test_per_agent_max_connections(caplog: pytest.LogCaptureFixture) -> None:
    async with running_relay(max_connections=2) as relay, UpgradeBackend() as app:
        async with running_agent(relay.port or 0, app.port):
            held = [await RawClient.connect(relay.port or 0) for _ in range(2)]
            for client in held:
                await client.send(
                    b"GET / HTTP/1.1\r\nHost: "
                    + ALICE.encode()
                    + b"\r\nConnection: Upgrade\r\nUpgrade: x\r\n\r\n"
                )
                assert (await client.read_response()).status == 101
            response = await public_get(relay.port, ALICE)
            assert response.status == 503
            assert "has 2 connections open" in caplog.text
            for client in held:
                await client.close()
            await until(lambda: not relay.ctx.tunnels)
            async with await RawClient.connect(relay.port or 0) as again:
                assert (await again.request("GET", "/", host=ALICE)).status == 200


@async_test()
async def test_max_connections_per_client_counts_public_connections_not_the_agent_s() -> None:
    async with running_relay({"max_connections_per_client": 2}) as relay, UpgradeBackend() as app:
        # Control plus two warm data connections from 127.0.0.1: more than 2, all taken.
        async with running_agent(relay.port or 0, app.port, warm=2):
            session = relay.hub.sessions["alice-demo"]
            await until(lambda: session.warm == 2)
            held = [await RawClient.connect(relay.port or 0, source="127.0.0.2") for _ in range(2)]
            async with await RawClient.connect(relay.port or 0, source="127.0.0.2") as third:
                response = await third.request("GET", "/", host=ALICE)
                assert response.status == 503 and b"too many connections" in response.body
            async with await RawClient.connect(relay.port or 0, source="127.0.0.3") as other:
                assert (await other.request("GET", "/", host=ALICE)).status == 200
            await held[0].request("GET", "/", host=ALICE)  # spliced: still holds its place
            await held[1].close()
            await until(lambda: relay.ctx.client_connections.held("127.0.0.2") == 1)
            await held[0].close()
            await until(lambda: relay.ctx.client_connections.held("127.0.0.2") == 0)


@async_test()
async def test_the_agent_comes_back_by_itself_after_a_relay_restart() -> None:
    port = unused_port()
    async with TestOrigin({"/echo": echo}) as app:
        async with running_relay({"http_port": port}) as relay:
            async with running_agent(port, app.port) as agent:
                # (Its warm connections in place first: asyncio leaks a connection accepted
                # in the same turn as its server closes.)
                await until(lambda: relay.hub.sessions["alice-demo"].warm == 2)
                await relay.close()  # tells the agent CLOSE
                agent.registered.clear()
                async with running_relay({"http_port": port}) as again:
                    await asyncio.wait_for(agent.registered.wait(), 5)
                    assert list(again.hub.sessions) == ["alice-demo"]
                    async with await RawClient.connect(port) as public:
                        response = await public.request("GET", "/echo", host=ALICE)
                    assert response.status == 200


@async_test()
async def test_the_relay_file_s_own_servers_answer_other_hosts() -> None:
    async with TestOrigin({"/": Reply(200, [], b"relay home")}) as home:
        root = {"server": {"home": {"proxy_url": home.url, "hosts": [DOMAIN]}}}
        async with running_relay(root) as relay, TestOrigin({"/echo": echo}) as app:
            async with running_agent(relay.port or 0, app.port):
                assert (await public_get(relay.port, DOMAIN)).body == b"relay home"
                assert (await public_get(relay.port, host("nobody"))).status == 404
                async with await RawClient.connect(relay.port or 0) as public:
                    first = await public.request("POST", "/echo", body=b"x", host=ALICE)
                    # Pinned to its agent: another host on the same connection is not served.
                    other = await public.request("GET", "/", host=DOMAIN)
                assert (first.status, first.body, other.status) == (200, b"x", 404)


@async_test()
async def test_a_connection_opened_before_its_agent_registers_is_served_by_it() -> None:
    """The agent is picked by the connection's first request, not when it was accepted."""
    async with running_relay() as relay, TestOrigin({"/echo": echo}) as app:
        async with await RawClient.connect(relay.port or 0) as public:
            async with running_agent(relay.port or 0, app.port):
                response = await public.request("POST", "/echo", body=b"early", host=ALICE)
        assert (response.status, response.body) == (200, b"early")


@async_test()
async def test_the_first_head_is_bounded_in_time_and_size() -> None:
    async with running_relay({"header_timeout": 0.3, "max_header_bytes": 4096}) as relay:
        async with await RawClient.connect(relay.port or 0) as slow:
            await slow.send(b"GET / HTTP/1.1\r\nHost: " + ALICE.encode() + b"\r\n")
            assert (await slow.read_response()).status == 408
        async with await RawClient.connect(relay.port or 0) as large:
            await large.send(b"GET / HTTP/1.1\r\nX-Big: " + b"a" * 5000 + b"\r\n")
            assert (await large.read_response()).status == 431
        # Nothing sent, nothing answered: closed, as phantom serve closes it.
        async with await RawClient.connect(relay.port or 0) as silent:
            assert await silent.is_closed_by_peer(3.0)
        await asyncio.sleep(0.05)
        assert not relay.ctx.connections


@async_test()
async def test_a_handshake_path_without_the_upgrade_is_a_public_request() -> None:
    async with running_relay() as relay, TestOrigin({"/.phantom-relay/control": echo}) as app:
        async with running_agent(relay.port or 0, app.port):
            async with await RawClient.connect(relay.port or 0) as public:
                response = await public.request("GET", "/.phantom-relay/control", host=ALICE)
            assert response.status == 200 and response.get("x-echo-method") == "GET"


@async_test()
async def test_a_connection_over_max_connections_per_client_is_never_served() -> None:
    async with running_relay({"max_connections_per_client": 1}) as relay:
        async with running_agent(relay.port or 0, unused_port()):
            async with await RawClient.connect(relay.port or 0, source="127.0.0.2") as first:
                async with await RawClient.connect(relay.port or 0, source="127.0.0.2") as second:
                    await second.send(b"GET / HTTP/1.1\r\nHost: " + ALICE.encode() + b"\r\n\r\n")
                    response = await second.read_response()
                    assert response.status == 503
                    assert await second.is_closed_by_peer()
                await first.close()
