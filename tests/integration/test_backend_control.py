"""GET /backends, POST /backends/drain and /backends/enable over a real control listener, and
`phantom backends` calling it as a subprocess."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from conftest import async_test

from phantom.backend_routes import add_backend_routes
from phantom.balancing import Balancer
from phantom.config import config_from_dict
from phantom.control import ControlServer
from phantom.control_client import ControlCallError, call

A, B = "http://127.0.0.1:8001", "http://127.0.0.1:8002"
TOKEN = "t0ken"


def balancers() -> dict[str, Balancer]:
    servers = {
        "app": {"backends": [{"url": A, "weight": 2}, {"url": B, "backup": True}]},
        "api": {"proxy_url": A, "bind_to": "/api"},
    }
    config = config_from_dict({"server": servers}, "test.toml")
    return {server.name: Balancer(server) for server in config.servers}


@asynccontextmanager
async def control(running: dict[str, Balancer]) -> AsyncIterator[str]:
    server = ControlServer("127.0.0.1", 0, TOKEN)
    add_backend_routes(server, lambda: running)
    await server.start()
    try:
        yield f"http://127.0.0.1:{server.port}"
    finally:
        await server.close()


async def api(base: str, path: str, body: dict[str, Any] | None = None) -> Any:
    return await asyncio.to_thread(call, base, path, body, TOKEN)


async def phantom(*args: str) -> tuple[int, str, str]:
    child = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "phantom", "backends", *args,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(child.communicate(), 20)
    assert child.returncode is not None
    return child.returncode, out.decode(), err.decode()


@async_test()
async def test_list_drain_enable_over_the_api() -> None:
    running = balancers()
    async with control(running) as base:
        listed = await api(base, "/backends")
        assert listed["servers"]["app"] == {
            "load_balance": "round_robin",
            "hash_key": None,
            "backends": [
                {"url": A, "weight": 2, "backup": False, "state": "healthy", "inflight": 0,
                 "tunnels_open": 0, "last_error": None},
                {"url": B, "weight": 1, "backup": True, "state": "healthy", "inflight": 0,
                 "tunnels_open": 0, "last_error": None},
            ],
        }
        app_a = running["app"].backends[0]
        running["app"].tunnel_opened(app_a)
        drained = await api(base, "/backends/drain", {"url": A + "/", "server": "app"})
        assert drained == {
            "drained": [{"server": "app", "url": A, "state": "draining", "inflight": 0,
                         "tunnels_open": 1}]
        }
        assert running["app"].pick() is running["app"].backends[1]  # the backup now
        assert running["api"].pick() is not None  # the other server's A is not drained
        # Without "server": every server that has it.
        enabled = await api(base, "/backends/enable", {"url": A})
        assert [(r["server"], r["state"]) for r in enabled["enabled"]] == [
            ("app", "healthy"), ("api", "healthy"),
        ]


@async_test()
async def test_api_errors() -> None:
    async with control(balancers()) as base:
        for body, message in [
            ({}, '/backends/drain: 400 missing field "url" (a backend such as'),
            ({"url": "nope"}, "/backends/drain: 400 \"url\": expected http[s]://host"),
            ({"url": "http://127.0.0.1:9"}, "/backends/drain: 404 http://127.0.0.1:9 is not a"),
            ({"url": A, "server": "x"}, "/backends/drain: 404 no server named 'x'"),
        ]:
            try:
                await api(base, "/backends/drain", body)
            except ControlCallError as exc:
                assert str(exc).startswith(message), str(exc)
            else:
                raise AssertionError(f"{body} was accepted")


@async_test(timeout=40)
async def test_the_backends_command() -> None:
    async with control(balancers()) as base:
        options = ("--control", base, "--token", TOKEN)
        code, out, err = await phantom(*options)
        assert (code, err) == (0, "")
        assert out.splitlines() == [
            "SERVER  BACKEND                WEIGHT    STATE    INFLIGHT  TUNNELS  LAST ERROR",
            "app     http://127.0.0.1:8001  2         healthy  0         0        -",
            "app     http://127.0.0.1:8002  1 backup  healthy  0         0        -",
            "api     http://127.0.0.1:8001  1         healthy  0         0        -",
        ]
        code, out, err = await phantom("drain", A, "--server", "app", *options)
        assert (code, out, err) == (
            0, "http://127.0.0.1:8001 (server app): draining, 0 requests and 0 tunnels open\n", ""
        )
        code, out, _ = await phantom("list", "--server", "app", *options)
        assert "app     http://127.0.0.1:8001  2         draining" in out
        code, out, _ = await phantom("enable", A, *options)
        assert code == 0 and out.count(": healthy,") == 2
        code, _, err = await phantom("drain", *options)
        assert (code, err) == (2, "phantom: backends drain needs the backend's URL\n")
        code, _, err = await phantom("drain", "http://127.0.0.1:9", *options)
        assert code == 1 and "404 http://127.0.0.1:9 is not a backend of any server" in err
