"""An agent as phantom's backend (phantom.agents.upstream): requests sent through the ordinary
upstream client over data connections from a real agent, kept alive in the pool, upgraded."""

from __future__ import annotations

import h11
import pytest
from conftest import async_test
from origin import TestOrigin, UpgradeBackend, echo, unused_port
from relay_helpers import running_agent, running_relay, until

from phantom.agents.upstream import AgentUpstream
from phantom.config import parse_backend_url
from phantom.errors import BackendError
from phantom.upstream import UpstreamConnection

URL = parse_backend_url("http://alice-demo.relay.test")


def get(target: str) -> h11.Request:
    return h11.Request(method="GET", target=target, headers=[("Host", "alice-demo.relay.test")])


async def no_body(conn: UpstreamConnection) -> None:
    conn.send(h11.EndOfMessage())


@async_test()
async def test_requests_go_through_pooled_data_connections() -> None:
    async with running_relay() as relay, TestOrigin({"/echo": echo}) as app:
        async with running_agent(relay.port or 0, app.port):
            upstream = AgentUpstream(relay.hub, "alice-demo", URL, 2.0)
            for _ in range(3):
                conn, response = await upstream.exchange(
                    lambda c: c.request(get("/echo"), no_body, 2.0), retry=True
                )
                assert response.status_code == 200
                assert await conn.read_body(2.0, 1024) == b""
                upstream.release(conn)
            assert app.connections_accepted == 1  # one data connection, kept alive
            upstream.close()


@async_test()
async def test_an_upgrade_over_a_data_connection() -> None:
    async with running_relay() as relay, UpgradeBackend(greeting=b"hi") as app:
        async with running_agent(relay.port or 0, app.port, warm=0):
            upstream = AgentUpstream(relay.hub, "alice-demo", URL, 2.0)
            conn = await upstream.connect()
            conn.send(
                h11.Request(
                    method="GET",
                    target="/",
                    headers=[("Host", "a"), ("Connection", "Upgrade"), ("Upgrade", "x")],
                )
            )
            conn.send(h11.EndOfMessage())
            head, response = await conn.upgrade_head(2.0)
            assert response.status_code == 101 and head.startswith(b"HTTP/1.1 101")
            greeting = conn.h11.trailing_data[0]
            while len(greeting) < 2:
                greeting += await conn.read(2.0)
            assert greeting == b"hi"
            conn.close()


@pytest.mark.parametrize("warm", [0, 2])
@async_test()
async def test_an_agent_gone_is_a_backend_error(warm: int) -> None:
    async with running_relay() as relay:
        async with running_agent(relay.port or 0, unused_port(), warm=warm) as agent:
            session = relay.hub.sessions["alice-demo"]
            upstream = AgentUpstream(relay.hub, "alice-demo", URL, 2.0)
            await agent.stop()
            await until(lambda: not session.alive)
            with pytest.raises(BackendError, match="agent alice-demo offline") as failure:
                await upstream.connect()
            assert failure.value.status == 502 and failure.value.public.startswith("agent offline")
