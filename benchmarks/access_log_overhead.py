"""What the access log costs on the cache-hit path: sequential keep-alive hits through one
phantom, with ``access_log = "off"`` and with a file, alternated so machine noise hits both.

    python -m benchmarks.access_log_overhead [--requests 3000] [--rounds 3]

Prints requests per second (best round) for each mode. Loopback only; bounded by --requests.
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
from pathlib import Path

from phantom import create_proxy

BODY = b"a" * 1024
RESPONSE = (
    b"HTTP/1.1 200 OK\r\nCache-Control: max-age=3600\r\nContent-Length: %d\r\n\r\n%s"
    % (len(BODY), BODY)
)


async def _origin(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while await reader.readuntil(b"\r\n\r\n"):
            writer.write(RESPONSE)
    except (asyncio.IncompleteReadError, ConnectionError):
        pass
    finally:
        writer.close()


async def hits_per_second(access_log: str, requests: int, rounds: int) -> float:
    origin = await asyncio.start_server(_origin, "127.0.0.1", 0)
    port = origin.sockets[0].getsockname()[1]
    config = {
        "listen": "127.0.0.1",
        "http_port": 0,
        "access_log": access_log,
        "server": {"app": {"proxy_url": f"http://127.0.0.1:{port}"}},
    }
    best = 0.0
    async with origin, create_proxy(config) as proxy:
        reader, writer = await asyncio.open_connection("127.0.0.1", proxy.port)
        request = b"GET /x HTTP/1.1\r\nHost: bench\r\nUser-Agent: bench\r\n\r\n"
        for _ in range(rounds):
            started = time.perf_counter()
            for _ in range(requests):
                writer.write(request)
                await reader.readuntil(b"\r\n\r\n")
                await reader.readexactly(len(BODY))
            best = max(best, requests / (time.perf_counter() - started))
        writer.close()
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--requests", type=int, default=3000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        log_file = str(Path(tmp) / "access.log")
        results: dict[str, list[float]] = {"off": [], "file": []}
        for _ in range(2):
            for mode, target in (("off", "off"), ("file", log_file)):
                rate = asyncio.run(hits_per_second(target, args.requests, args.rounds))
                results[mode].append(rate)
    for mode, rates in results.items():
        print(f"access_log={mode:4}  {max(rates):8.0f} hits/s (best of {len(rates)} runs)")


if __name__ == "__main__":
    main()
