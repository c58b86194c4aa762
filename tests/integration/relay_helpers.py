"""A relay and its agents in the test's own event loop, on 127.0.0.1 port 0."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from conftest import RawClient, RawResponse
from origin import LOCALHOST

from phantom.agents import protocol
from phantom.agents.agent import Agent, AgentOptions
from phantom.agents.front import RelayServer
from phantom.config import config_from_dict, parse_backend_url

DOMAIN = "relay.test"
TOKEN = "alice-token-0123456789"
BOB_TOKEN = "bob-token-0123456789xx"


def host(name: str) -> str:
    return f"{name}.{DOMAIN}"


ALICE = host("alice-demo")


async def public_get(port: int | None, name: str = ALICE, target: str = "/") -> RawResponse:
    """``GET target`` on a public connection of its own, for ``name``."""
    async with await RawClient.connect(port or 0) as public:
        return await public.request("GET", target, host=name)


@asynccontextmanager
async def running_relay(
    root: dict[str, Any] | None = None, **relay: Any
) -> AsyncIterator[RelayServer]:
    data = {
        "listen": LOCALHOST,
        "http_port": 0,
        "access_log": "off",
        **(root or {}),
        "relay": {
            "relay_domain": DOMAIN,
            "tokens": {TOKEN: ["alice-*"], BOB_TOKEN: ["bob", "alice-shared"]},
            **relay,
        },
    }
    server = RelayServer(config_from_dict(data, environ={}))
    await server.start()
    try:
        yield server
    finally:
        await server.close()


class RunningAgent:
    def __init__(self, agent: Agent, task: asyncio.Task[None]) -> None:
        self.agent = agent
        self.task = task
        self.urls: list[str] = []
        self.registered = asyncio.Event()

    def ready(self, url: str) -> None:
        self.urls.append(url)
        self.registered.set()

    async def stop(self) -> None:
        """Ctrl-C: the agent says goodbye."""
        self.task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self.task
        self.agent.close()


@asynccontextmanager
async def running_agent(
    relay_port: int,
    app_port: int,
    name: str = "alice-demo",
    token: str = TOKEN,
    *,
    warm: int = 2,
    cache: bool = False,
    wait: bool = True,
) -> AsyncIterator[RunningAgent]:
    options = AgentOptions(
        relay=parse_backend_url(f"http://{LOCALHOST}:{relay_port}"),
        name=name,
        token=token,
        port=app_port,
        warm=warm,
        cache=cache,
    )
    holder: list[RunningAgent] = []
    agent = Agent(options, lambda url: holder[0].ready(url))
    running = RunningAgent(agent, asyncio.ensure_future(agent.run()))
    holder.append(running)
    try:
        if wait:
            await asyncio.wait_for(running.registered.wait(), 5)
        yield running
    finally:
        await running.stop()


async def until(predicate: Any, timeout: float = 5.0) -> None:
    """Poll ``predicate()`` until true (the loop keeps running meanwhile)."""
    async with asyncio.timeout(timeout):
        while not predicate():
            await asyncio.sleep(0.01)


async def handshake(
    port: int,
    path: bytes,
    headers: list[tuple[bytes, bytes]],
    *,
    pieces: int = 1,
    bare_lf: bool = False,
) -> tuple[RawClient, int, bytes]:
    """A raw agent handshake, sent whole or in ``pieces`` a little apart, its lines ended by
    CRLF or (``bare_lf``) LF: the client, the answer's status and its head and body."""
    client = await RawClient.connect(port)
    request = protocol.upgrade_request(path, DOMAIN.encode(), headers)
    if bare_lf:
        request = request.replace(b"\r\n", b"\n")
    size = -(-len(request) // pieces)
    for start in range(0, len(request), size):
        if start:
            await asyncio.sleep(0.05)
        await client.send(request[start : start + size])
    response = await client.read_response()
    return client, response.status, response.head + response.body


def control_headers(name: str = "alice-demo", token: str = TOKEN) -> list[tuple[bytes, bytes]]:
    return [
        (b"Authorization", b"Bearer " + token.encode()),
        (b"Phantom-Relay-Name", name.encode()),
    ]
