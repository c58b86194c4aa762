"""The benchmark's origin: a raw asyncio Protocol fast enough not to be the bottleneck.

Run as ``python -m benchmarks.origin --port N`` (prints ``ready PORT`` once listening).

HTTP/1.1 with keep-alive (and pipelining, answered in order); no body parsing (the benchmark
sends none). Endpoints:

- ``GET /small``: 1 KiB, ``Cache-Control: max-age=3600`` (cacheable).
- ``GET /nc/small``: 1 KiB, ``Cache-Control: no-store`` (always passed through).
- ``GET /public/small``: 1 KiB, ``Cache-Control: public, max-age=3600`` (cacheable for requests
  with a token too).
- ``GET /large``: 1 MiB, ``no-store``.
- ``GET /__stats``: JSON ``{path: requests seen}``, so the suite can prove a cache hit never
  reached the origin. Not counted itself.
- Upgrades (``Connection: Upgrade`` + ``Upgrade: <any>``), answered ``101`` with the same token:
  ``/echo`` sends back every byte; ``/sink?n=N`` swallows N bytes and then writes
  ``b"ok %d\\n" % N``; ``/source?n=N`` writes N bytes and keeps the connection open.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import resource
from collections import Counter
from urllib.parse import parse_qs, urlsplit

SMALL = b"s" * 1024
LARGE = b"L" * (1024 * 1024)
SOURCE_CHUNK = memoryview(b"x" * (1024 * 1024))


def _response(body: bytes, cache_control: bytes, content_type: bytes = b"text/plain") -> bytes:
    return (
        b"HTTP/1.1 200 OK\r\nContent-Type: %s\r\nCache-Control: %s\r\nContent-Length: %d\r\n\r\n%s"
        % (content_type, cache_control, len(body), body)
    )


FIXED = {
    b"/small": _response(SMALL, b"max-age=3600"),
    b"/nc/small": _response(SMALL, b"no-store"),
    # Shareable with Authorization (RFC 9111 §3.5): the guards' benchmark sends a token.
    b"/public/small": _response(SMALL, b"public, max-age=3600"),
    b"/large": _response(LARGE, b"no-store"),
}
NOT_FOUND = b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n"


class OriginProtocol(asyncio.Protocol):
    def __init__(self, stats: Counter[str]) -> None:
        self.stats = stats
        self.buffer = b""
        self.mode = "http"  # http | echo | sink
        self.transport: asyncio.Transport | None = None
        self.sink_left = 0
        self.sink_total = 0
        self.source_left = 0
        self.paused = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        if self.mode == "echo":
            assert self.transport is not None
            self.transport.write(data)
            return
        if self.mode == "sink":
            self._sink(len(data))
            return
        self.buffer += data
        while self.mode == "http":
            end = self.buffer.find(b"\r\n\r\n")
            if end < 0:
                return
            head, self.buffer = self.buffer[:end], self.buffer[end + 4 :]
            self._request(head)

    def _request(self, head: bytes) -> None:
        assert self.transport is not None
        lines = head.split(b"\r\n")
        target = lines[0].split(b" ")[1]
        path = target.split(b"?", 1)[0]
        # proxy.py in forward mode sends the absolute form.
        if path.startswith(b"http://"):
            target = b"/" + target.split(b"/", 3)[3]
            path = target.split(b"?", 1)[0]
        upgrade = None
        close = False
        for line in lines[1:]:
            name, _, value = line.partition(b":")
            name = name.strip().lower()
            if name == b"upgrade":
                upgrade = value.strip()
            elif name == b"connection" and value.strip().lower() == b"close":
                close = True
        if path == b"/__stats":
            body = json.dumps(self.stats).encode()
            self.transport.write(_response(body, b"no-store", b"application/json"))
        else:
            self.stats[path.decode("latin-1")] += 1
            if upgrade is not None:
                self._upgrade(target.decode("latin-1"), upgrade)
                return
            self.transport.write(FIXED.get(path, NOT_FOUND))
        if close:
            self.mode = "closed"
            self.transport.close()

    def _upgrade(self, target: str, token: bytes) -> None:
        assert self.transport is not None
        url = urlsplit(target)
        size = int(parse_qs(url.query).get("n", ["0"])[0])
        self.transport.write(
            b"HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: %s\r\n\r\n"
            % token
        )
        rest, self.buffer = self.buffer, b""
        if url.path == "/echo":
            self.mode = "echo"
            if rest:
                self.transport.write(rest)
        elif url.path == "/sink":
            self.mode = "sink"
            self.sink_left = self.sink_total = size
            self._sink(len(rest))
        elif url.path == "/source":
            self.mode = "source"
            self.source_left = size
            self._pump()
        else:
            self.transport.close()

    def _sink(self, count: int) -> None:
        assert self.transport is not None
        if self.sink_left <= 0:
            return
        self.sink_left -= count
        if self.sink_left <= 0:
            self.transport.write(b"ok %d\n" % (self.sink_total - self.sink_left))

    def _pump(self) -> None:
        assert self.transport is not None
        while self.source_left > 0 and not self.paused:
            chunk = SOURCE_CHUNK[: min(len(SOURCE_CHUNK), self.source_left)]
            self.source_left -= len(chunk)
            self.transport.write(chunk)

    def pause_writing(self) -> None:
        self.paused = True

    def resume_writing(self) -> None:
        self.paused = False
        if self.mode == "source":
            self._pump()


async def serve(port: int) -> None:
    stats: Counter[str] = Counter()
    loop = asyncio.get_running_loop()
    server = await loop.create_server(
        lambda: OriginProtocol(stats), "127.0.0.1", port, backlog=4096, reuse_address=True
    )
    print("ready", server.sockets[0].getsockname()[1], flush=True)
    async with server:
        await server.serve_forever()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--loop", choices=("uvloop", "asyncio"), default="uvloop")
    args = parser.parse_args()
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    if args.loop == "uvloop":
        import uvloop

        uvloop.run(serve(args.port))
    else:
        asyncio.run(serve(args.port))


if __name__ == "__main__":
    main()
