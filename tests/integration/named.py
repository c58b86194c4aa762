"""Backends of the balancing tests' own, each saying who it is: an HTTP origin whose `/who`
answers its name (`/slow` after a while) and a WebSocket server whose first message is its
name; and the config of a proxy in front of several of them.

Test modules import these with `from named import ...`.
"""

from __future__ import annotations

from typing import Any

from origin import LOCALHOST, Reply, TestOrigin, WebSocketBackend
from websockets.asyncio.server import ServerConnection

SLOW_SECONDS = 1.0


def named_routes(name: str) -> dict[str, Any]:
    body = name.encode()
    plain = [("Cache-Control", "no-store"), ("Content-Type", "text/plain")]
    return {
        "/who": Reply(200, plain, body),
        "/slow": Reply(200, plain, body, delay=SLOW_SECONDS),
        "/healthz": Reply(200, plain, b"ok"),
    }


class NamedOrigin(TestOrigin):
    """A TestOrigin whose `/who` says ``name``."""

    __test__ = False

    def __init__(self, name: str) -> None:
        super().__init__(named_routes(name))
        self.name = name


class NamedWebSocketBackend(WebSocketBackend):
    """A WebSocket echo server that first sends its ``name``."""

    def __init__(self, name: str) -> None:
        super().__init__()
        self.name = name
        self.open = 0  # sessions open now

    async def _handler(self, ws: ServerConnection) -> None:
        self.open += 1
        try:
            await ws.send(self.name)
            await super()._handler(ws)
        finally:
            self.open -= 1

    @property
    def url(self) -> str:
        return f"http://{LOCALHOST}:{self.port}"


def balanced_config(urls: list[str], **options: Any) -> dict[str, Any]:
    """A config dict for one `[server.app]` with these backends; options named like root keys
    go to the root table, the others to the server."""
    from conftest import ROOT_KEYS

    root: dict[str, Any] = {"listen": LOCALHOST, "http_port": 0, "shutdown_timeout": 1}
    server: dict[str, Any] = {"backends": [{"url": url} for url in urls]}
    for key, value in options.items():
        (root if key in ROOT_KEYS else server)[key] = value
    return {**root, "server": {"app": server}}
