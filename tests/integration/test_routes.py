"""Routes over real sockets: patterns and rewrites, methods (405 with Allow), upgrades on the
same routes, Turborepo's microfrontends.json (the seed's example), fallback_url."""

from __future__ import annotations

import json
import logging
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import RawClient, async_test, fetch, get, servers_config
from origin import Reply, TestOrigin, WebSocketBackend
from websockets.asyncio.client import connect

from phantom import create_proxy
from phantom.config import config_from_dict

SEED = Path(__file__).resolve().parents[1] / "fixtures" / "microfrontends" / "seed-002.json"


@pytest.fixture
def down() -> Iterator[int]:
    """A loopback port that refuses connections for the test: bound, never listening, so
    nothing else (the proxy under test included) can take it meanwhile."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        yield sock.getsockname()[1]


def said(name: str) -> Any:
    """A reply naming the origin and the target and Host it saw."""

    def handler(request: Any) -> Reply:
        host = request.get("host") or ""
        return Reply(200, [("X-Origin", name)], f"{name} {request.target.decode()} {host}".encode())

    return handler


class Everything(dict[str, Any]):
    """A route table that answers every path with one handler."""

    def __init__(self, handler: Any) -> None:
        super().__init__()
        self.handler = handler

    def get(self, key: str, default: Any = None) -> Any:
        return self.handler


def answering(name: str) -> TestOrigin:
    """A TestOrigin answering every path with ``said(name)``."""
    origin = TestOrigin()
    origin.routes = Everything(said(name))
    return origin


@async_test()
async def test_patterns_rewrites_and_methods() -> None:
    async with answering("read") as reader, answering("write") as writer:
        servers = {
            "read": {
                "proxy_url": f"{reader.url}/api",
                "bind_to": "/users/{id}",
                "rewrite": "/user/{id}",
                "methods": ["GET"],
            },
            "write": {
                "proxy_url": writer.url,
                "bind_to": ["/users/{id}", "=/form"],
                "methods": ["POST", "PUT"],
            },
        }
        async with create_proxy(servers_config(servers)) as proxy:
            got = await get(proxy.port, "/users/7?full=1")
            assert got.body.startswith(b"read /api/user/7?full=1 ")
            posted = await fetch(proxy.port, "POST", "/users/7", body=b"x")
            assert posted.body.startswith(b"write /users/7 ")
            async with await RawClient.connect(proxy.port) as client:
                refused = await client.request("DELETE", "/users/7")
                assert refused.status == 405
                assert refused.get("allow") == "GET, HEAD, POST, PUT"
                # The connection stays usable: a 405 is an answer, not a broken request.
                again = await client.request("GET", "/users/8")
                assert again.body.startswith(b"read /api/user/8 ")
            assert (await get(proxy.port, "/nothing")).status == 404
            # A simple GET (the fast lane's kind) is refused the same way.
            form = await get(proxy.port, "/form")
            assert (form.status, form.get("allow")) == (405, "POST, PUT")
        assert [r.method for r in reader.log] == [b"GET", b"GET"]
        assert [r.method for r in writer.log] == [b"POST"]


async def assert_echoes(url: str, text: str) -> None:
    """A WebSocket of its own to ``url`` sends ``text`` and gets it back."""
    async with connect(url) as ws:
        await ws.send(text)
        assert await ws.recv() == text


@async_test()
async def test_a_websocket_on_a_pattern_takes_its_route_and_rewrite() -> None:
    async with WebSocketBackend() as rooms, WebSocketBackend() as web:
        servers = {
            "web": {"proxy_url": f"http://127.0.0.1:{web.port}"},
            "rooms": {
                "proxy_url": f"http://127.0.0.1:{rooms.port}",
                "bind_to": "/rooms/{room}/socket",
                "rewrite": "/ws/{room}",
                "methods": ["GET"],
            },
        }
        async with create_proxy(servers_config(servers)) as proxy:
            url = f"ws://127.0.0.1:{proxy.port}"
            await assert_echoes(f"{url}/rooms/lobby/socket?token=t", "hello")
            await assert_echoes(f"{url}/rooms/lobby/other", "web")
        assert rooms.paths == ["/ws/lobby?token=t"]
        assert web.paths == ["/rooms/lobby/other"]


def seed_with_ports(tmp_path: Path, web: int, docs: int) -> Path:
    """The seed's microfrontends.json, its two local ports replaced by the tests' backends."""
    data = json.loads(SEED.read_text())
    data["applications"]["web"]["development"]["local"]["port"] = web
    data["applications"]["docs"]["development"]["local"]["port"] = docs
    path = tmp_path / "microfrontends.json"
    path.write_text(json.dumps(data))
    return path


@async_test()
async def test_the_seeds_hmr_sockets_reach_each_app_with_the_path_unchanged(
    tmp_path: Path,
) -> None:
    async with WebSocketBackend() as docs, WebSocketBackend() as web:
        file = seed_with_ports(tmp_path, web.port, docs.port)
        config = config_from_dict(
            {"microfrontends": str(file), "http_port": 0, "listen": "127.0.0.1"}
        )
        assert [s.cache_strategy for s in config.servers] == ["none", "none"]
        async with create_proxy(config) as proxy:
            url = f"ws://127.0.0.1:{proxy.port}"
            await assert_echoes(f"{url}/docs/_next/webpack-hmr", "docs hmr")
            await assert_echoes(f"{url}/_next/webpack-hmr", "web hmr")
        assert docs.paths == ["/docs/_next/webpack-hmr"]
        assert web.paths == ["/_next/webpack-hmr"]


# "none": simple GETs take the fast lane's relay; "all": the request loop's way.
CACHING = pytest.mark.parametrize("cache_strategy", ["none", "all"])


@CACHING
@async_test()
async def test_a_refused_backend_falls_back_marked_and_logged(
    caplog: pytest.LogCaptureFixture, down: int, cache_strategy: str
) -> None:
    caplog.set_level(logging.INFO, logger="phantom")
    async with answering("preview") as preview:
        servers = {
            "docs": {
                "proxy_url": f"http://127.0.0.1:{down}/local",
                "bind_to": "/docs",
                "strip_prefix": False,
                "fallback_url": f"{preview.url}/deployed",
            },
            "web": {"proxy_url": f"http://127.0.0.1:{down}"},
        }
        config = servers_config(servers, defaults={"cache_strategy": cache_strategy})
        async with create_proxy(config) as proxy:
            async with await RawClient.connect(proxy.port) as client:
                for _ in range(2):  # the second on the fallback's pooled connection
                    answer = await client.request(
                        "GET", "/docs/page?x=1", [("Host", "localhost:3024")]
                    )
                    assert answer.status == 200
                    assert answer.get("x-phantom-fallback") == "1"
                    assert answer.body == (
                        f"preview /deployed/docs/page?x=1 127.0.0.1:{preview.port}".encode()
                    )
            assert preview.connections_accepted == 1
            posted = await fetch(proxy.port, "POST", "/docs/form", body=b"field=1")
            assert posted.status == 200 and posted.get("x-phantom-fallback") == "1"
            assert preview.log[-1].body == b"field=1"
            # Without fallback_url, a refused backend is the 502 it always was.
            plain = await get(proxy.port, "/else")
            assert plain.status == 502 and not plain.has("x-phantom-fallback")
        assert preview.log[0].get("x-forwarded-host") == "localhost:3024"
    assert any(
        "falling back to" in record.getMessage() and "/docs/page" in record.getMessage()
        for record in caplog.records
    )


@async_test()
async def test_an_upgrade_handshake_falls_back_too(down: int) -> None:
    async with WebSocketBackend() as preview:
        servers = {
            "app": {
                "proxy_url": f"http://127.0.0.1:{down}",
                "fallback_url": f"http://127.0.0.1:{preview.port}",
            },
        }
        async with create_proxy(servers_config(servers)) as proxy:
            url = f"ws://127.0.0.1:{proxy.port}/hmr"
            async with connect(url, origin="http://localhost:3024") as ws:  # type: ignore[arg-type]
                assert ws.response is not None
                assert ws.response.headers.get("X-Phantom-Fallback") == "1"
                await ws.send("up")
                assert await ws.recv() == "up"
        assert preview.paths == ["/hmr"]
        headers = {n.lower(): v for n, v in preview.request_headers[0]}
        # The fallback's own Host and Origin; X-Forwarded-Host keeps the client's.
        assert headers["host"] == f"127.0.0.1:{preview.port}"
        assert headers["origin"] == f"http://127.0.0.1:{preview.port}"
        assert headers["x-forwarded-host"] == f"127.0.0.1:{proxy.port}"


@async_test()
async def test_a_running_backend_is_not_replaced_by_the_fallback() -> None:
    async with answering("local") as local, answering("preview") as preview:
        servers = {"app": {"proxy_url": local.url, "fallback_url": preview.url}}
        async with create_proxy(servers_config(servers)) as proxy:
            answer = await get(proxy.port, "/x")
            assert answer.body.startswith(b"local /x")
            assert not answer.has("x-phantom-fallback")
        assert preview.log == []


@CACHING
@async_test()
async def test_a_refused_fallback_is_the_502_it_would_have_been(
    down: int, cache_strategy: str
) -> None:
    servers = {
        "app": {
            "proxy_url": f"http://127.0.0.1:{down}",
            "fallback_url": f"http://127.0.0.1:{down}/also-down",
            "cache_strategy": cache_strategy,
        },
    }
    async with create_proxy(servers_config(servers)) as proxy:
        answer = await get(proxy.port, "/x")
        assert answer.status == 502
        assert not answer.has("x-phantom-fallback")


def base_path_app(base: str) -> TestOrigin:
    """Like a dev server with a base path (Vite's ``base``): a path outside it is redirected
    to the base, one inside it answered."""

    def handler(request: Any) -> Reply:
        if request.path.startswith(base):
            return Reply(200, [], f"app {request.target.decode()}".encode())
        return Reply(302, [("Location", base)], b"")

    origin = TestOrigin()
    origin.routes = Everything(handler)
    return origin


@async_test()
async def test_an_app_with_a_base_path_needs_its_prefix_kept() -> None:
    """The README's case: strip_prefix = false serves a base-path app; the default strip sends
    it paths outside its base, and its redirect to the base comes back to it stripped again."""
    async with base_path_app("/docs/") as app:
        kept = {"docs": {"proxy_url": app.url, "bind_to": "/docs", "strip_prefix": False}}
        async with create_proxy(servers_config(kept)) as proxy:
            answer = await get(proxy.port, "/docs/")
            assert (answer.status, answer.body) == (200, b"app /docs/")
        stripped = {"docs": {"proxy_url": app.url, "bind_to": "/docs"}}
        async with create_proxy(servers_config(stripped)) as proxy:
            for _ in range(3):  # following the redirect: the same answer, for ever
                answer = await get(proxy.port, "/docs/")
                assert (answer.status, answer.get("location")) == (302, "/docs/")
