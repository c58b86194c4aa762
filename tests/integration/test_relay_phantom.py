"""The relay's public side is a full phantom: an agent's name is a server with an access log
line per request, metrics, the cache when the agent asks for it (``--cache``), and its site
kept, cache included, for an agent that comes back within the grace period."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import RawClient, async_test, fetch
from origin import Reply, TestOrigin, echo
from relay_helpers import (
    ALICE,
    DOMAIN,
    control_headers,
    handshake,
    public_get,
    running_agent,
    running_relay,
    until,
)

from phantom.agents import protocol

CONTROL = "s3cret-control-token"
PAGE = Reply(200, [("Content-Type", "text/plain"), ("Cache-Control", "max-age=60")], b"page")


async def get_page(port: int | None) -> tuple[int, str | None]:
    response = await public_get(port, ALICE, "/page")
    return response.status, response.get("cache-status")


@pytest.mark.parametrize("cache", [True, False])
@async_test()
async def test_the_cache_serves_an_agent_that_asks_for_it(cache: bool) -> None:
    async with running_relay() as relay, TestOrigin({"/page": PAGE}) as app:
        async with running_agent(relay.port or 0, app.port, cache=cache):
            for _ in range(3):
                status, _ = await get_page(relay.port)
                assert status == 200
            assert app.requests["/page"] == (1 if cache else 3)


@async_test()
async def test_access_log_and_metrics_name_the_agent(tmp_path: Path) -> None:
    log = tmp_path / "access.log"
    root = {"access_log": str(log), "control_port": 0, "control_auth": CONTROL}
    async with running_relay(root) as relay, TestOrigin({"/page": PAGE}) as app:
        async with running_agent(relay.port or 0, app.port):
            assert (await get_page(relay.port))[0] == 200
            control = relay.proxy.control_port or 0
            auth = [("Authorization", f"Bearer {CONTROL}")]
            metrics = await fetch(control, "GET", "/metrics", auth)
            assert b'server="agent:alice-demo"' in metrics.body
            reload = await fetch(control, "POST", "/reload", auth, b"{}")
            assert reload.status == 400  # a relay does not re-read its file
    lines = log.read_text().splitlines()
    assert len(lines) == 1
    assert '"GET /page HTTP/1.1" 200' in lines[0] and "server=agent:alice-demo" in lines[0]


@async_test()
async def test_an_agent_back_within_the_grace_period_finds_its_cache() -> None:
    async with running_relay() as relay, TestOrigin({"/page": PAGE}) as app:
        async with running_agent(relay.port or 0, app.port, cache=True) as agent:
            assert (await get_page(relay.port))[0] == 200
            session = relay.hub.sessions["alice-demo"]
            assert session.link is not None
            session.link.transport.abort()  # lost, not a goodbye
            await until(lambda: "alice-demo" not in relay.hub.sessions)
            status, cache_status = await get_page(relay.port)
            assert status == 200 and cache_status is not None and "hit" in cache_status
            agent.registered.clear()
            await until(lambda: "alice-demo" in relay.hub.sessions, timeout=5)
            assert (await get_page(relay.port))[0] == 200
        assert app.requests["/page"] == 1


@async_test()
async def test_a_lost_agent_s_site_goes_after_the_grace_period() -> None:
    async with running_relay(relay_name_grace=0.3) as relay, TestOrigin({"/page": PAGE}) as app:
        # A raw agent that vanishes: no goodbye, and no reconnect within the grace period.
        client, status, _ = await handshake(
            relay.port or 0, protocol.CONTROL_PATH, control_headers()
        )
        assert status == 101
        client.vanish()
        await until(lambda: "alice-demo" not in relay.hub.sessions)
        assert (await get_page(relay.port))[0] == 502  # reserved: "agent offline"
        await until(lambda: relay.front.sites.router_for("alice-demo") is None, 2)
        assert "agent:alice-demo" not in relay.ctx.sites
        assert (await get_page(relay.port))[0] == 404
        assert app.requests["/page"] == 0


@pytest.mark.parametrize("path_mode", [True, False])
@async_test()
async def test_the_path_mode_reaches_an_agent_at_relay_domain_slash_name(path_mode: bool) -> None:
    async with (
        running_relay(relay_path_mode=path_mode) as relay,
        TestOrigin({"/echo": echo}) as app,
    ):
        async with running_agent(relay.port or 0, app.port):
            async with await RawClient.connect(relay.port or 0) as public:
                first = await public.request("GET", "/alice-demo/echo?x=1", host=DOMAIN)
                if not path_mode:
                    assert first.status == 404
                    return
                other = await public.request("GET", "/bob/echo", host=DOMAIN)
            assert (first.status, first.get("x-echo-target")) == (200, "/echo?x=1")
            assert app.last.get("host") == DOMAIN
            assert other.status == 404  # the connection stays with alice-demo
            # The host mode keeps working next to it.
            assert (await get_page(relay.port))[0] == 404  # (no /page route: the app's 404)
