"""CPU per request of phantom's own code, in one process: client connections fed by fake
transports (no client sockets, no wrk), real backend connections to the benchmark origin.
Steadier than ``hit_cost`` on a busy machine, and blind to the client side's syscalls, so it
is the figure to tell small changes apart by; ``hit_cost`` gives the figure to quote.

    benchmarks/.venv/bin/python -m benchmarks.inprocess_cost [--path /nc/small]
        [--requests 20000] [--clients 50] [--source <a tree holding phantom/>]

Each of ``--clients`` connections sends a request as soon as its previous answer is complete
(as ``wrk -c50`` does); prints the process's user and system CPU per request (``os.times``,
10 ms ticks: use enough requests). Runs on the proxy's core, the origin on the load core.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from benchmarks.run import LOAD_CORE, PROXY_CORE
from benchmarks.targets import ROOT, start_origin

# The origin's 1 KiB bodies are all "s": an answer is complete when it ends with them.
_BODY_END = b"s" * 64


class FakeTransport:
    """What a client connection needs of its transport; ``write`` wakes the waiting client."""

    def __init__(self) -> None:
        self.out = bytearray()
        self.waiter: asyncio.Future[None] | None = None
        self.closing = False

    def write(self, data: bytes) -> None:
        self.out += data
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_result(None)

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        peers = {"peername": ("127.0.0.1", 40000), "sockname": ("127.0.0.1", 8080)}
        return peers.get(name, default)

    def is_closing(self) -> bool:
        return self.closing

    def close(self) -> None:
        self.closing = True

    abort = close

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass

    def write_eof(self) -> None:
        pass

    def can_write_eof(self) -> bool:
        return True


async def measure(origin_port: int, path: str, requests: int, clients: int) -> None:
    from phantom.config import config_from_dict
    from phantom.connection import ClientConnection
    from phantom.context import ProxyContext

    config = config_from_dict(
        {
            "access_log": "off",
            "max_connections": 0,
            "max_connections_per_client": 0,
            "server": {
                "bench": {
                    "proxy_url": f"http://127.0.0.1:{origin_port}",
                    "compress_strategy": "none",
                }
            },
        }
    )
    ctx = ProxyContext.build(config)
    loop = asyncio.get_running_loop()
    request = f"GET {path} HTTP/1.1\r\nHost: bench\r\n\r\n".encode()
    pairs = []
    for _ in range(clients):
        conn = ClientConnection(ctx)
        transport = FakeTransport()
        conn.connection_made(transport)  # type: ignore[arg-type]
        pairs.append((conn, transport))

    async def client(conn: ClientConnection, transport: FakeTransport, count: int) -> None:
        for _ in range(count):
            transport.out.clear()
            conn.data_received(request)
            while not transport.out.endswith(_BODY_END):
                transport.waiter = loop.create_future()
                await transport.waiter

    async def run(count: int) -> None:
        await asyncio.gather(*(client(conn, transport, count) for conn, transport in pairs))

    await run(max(200 // clients, 2))  # fill the cache and the pool, warm up
    if not pairs[0][1].out.startswith(b"HTTP/1.1 200"):
        raise RuntimeError(f"unexpected answer: {bytes(pairs[0][1].out[:200])!r}")
    per_client = max(requests // clients, 1)
    before = os.times()
    await run(per_client)
    after = os.times()
    total = per_client * clients
    user = (after.user - before.user) / total * 1e6
    system = (after.system - before.system) / total * 1e6
    print(f"{path}: user {user:.1f} us, system {system:.1f} us per request (in-process)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--path", default="/small", help="/small (hits) or /nc/small (passed)")
    parser.add_argument("--requests", type=int, default=20000)
    parser.add_argument("--clients", type=int, default=50)
    parser.add_argument("--source", type=Path, help="a source tree holding phantom/")
    parser.add_argument("--origin-port", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.origin_port is None:
        # Once more in a child pinned to the proxy's core, with the origin on the load core.
        with tempfile.TemporaryDirectory() as tmp:
            origin = start_origin(Path(tmp), LOAD_CORE)
            try:
                subprocess.run(
                    ["taskset", "-c", str(PROXY_CORE), sys.executable, "-m",
                     "benchmarks.inprocess_cost", *sys.argv[1:],
                     "--origin-port", str(origin.port)],
                    check=True, cwd=ROOT,
                )
            finally:
                origin.stop()
        return
    if args.source is not None:
        sys.path.insert(0, str(args.source.resolve()))  # ahead of this tree's phantom
    import uvloop

    uvloop.run(measure(args.origin_port, args.path, args.requests, args.clients))


if __name__ == "__main__":
    main()
