"""Is ``cache_max_bytes`` a real bound? Fill a running phantom with 10x its size in distinct
URLs and report the store's bytes and the process RSS.

    python benchmarks/cache_memory.py [--max-mib 16] [--body-kib 16] [--factor 10]

A local origin answers every GET with a distinct, incompressible body (max-age=3600); one
keep-alive client fetches distinct URLs through phantom until factor x cache_max_bytes went
through. The store must stay within cache_max_bytes while RSS stays flat once it is full.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import time

import h11

from phantom import create_proxy


def rss_mib() -> float:
    """Resident set size of this process (Linux /proc; 0 where unavailable)."""
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


async def origin(body_size: int) -> asyncio.Server:
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        conn = h11.Connection(h11.SERVER)
        try:
            while True:
                event = conn.next_event()
                if event is h11.NEED_DATA:
                    data = await reader.read(65536)
                    if not data:
                        return
                    conn.receive_data(data)
                elif isinstance(event, h11.Request):
                    body = os.urandom(body_size)
                    headers = [
                        (b"Content-Type", b"application/octet-stream"),
                        (b"Cache-Control", b"max-age=3600"),
                        (b"Content-Length", b"%d" % body_size),
                    ]
                    writer.write(conn.send(h11.Response(status_code=200, headers=headers)))
                    writer.write(conn.send(h11.Data(data=body)))
                    writer.write(conn.send(h11.EndOfMessage()))
                    await writer.drain()
                elif isinstance(event, h11.EndOfMessage):
                    conn.start_next_cycle()
                else:
                    return
        finally:
            writer.close()

    return await asyncio.start_server(handle, "127.0.0.1", 0)


async def fetch_all(port: int, count: int) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    conn = h11.Connection(h11.CLIENT)
    try:
        for i in range(count):
            request = h11.Request(method="GET", target=f"/item/{i}", headers=[("Host", "bench")])
            writer.write(conn.send(request) + conn.send(h11.EndOfMessage()))
            while True:
                event = conn.next_event()
                if event is h11.NEED_DATA:
                    conn.receive_data(await reader.read(262144))
                elif isinstance(event, h11.EndOfMessage):
                    conn.start_next_cycle()
                    break
    finally:
        writer.close()


async def main(max_mib: int, body_kib: int, factor: int) -> None:
    max_bytes = max_mib * 1024 * 1024
    body_size = body_kib * 1024
    count = factor * max_bytes // body_size
    server = await origin(body_size)
    port = server.sockets[0].getsockname()[1]
    config = {
        "listen": "127.0.0.1",
        "http_port": 0,
        "log_level": "warning",
        "server": {
            "bench": {
                "proxy_url": f"http://127.0.0.1:{port}",
                "cache_max_bytes": max_bytes,
                "cache_max_entries": 1_000_000,
            }
        },
    }
    async with create_proxy(config) as proxy:
        assert proxy.port is not None
        before = rss_mib()
        started = time.perf_counter()
        await fetch_all(proxy.port, count // 2)
        half = rss_mib()
        await fetch_all(proxy.port, count - count // 2)
        elapsed = time.perf_counter() - started
        after = rss_mib()
        store = proxy.cache
        print(f"cache_max_bytes        {max_mib} MiB")
        print(f"sent through           {count} distinct URLs x {body_kib} KiB "
              f"= {count * body_size / 2**20:.0f} MiB ({factor}x) in {elapsed:.1f} s")
        print(f"stored                 {len(store)} responses, "
              f"{store.total_bytes / 2**20:.1f} MiB (bound {max_mib} MiB)")
        print(f"RSS                    start {before:.0f} MiB, half way {half:.0f} MiB, "
              f"at {factor}x {after:.0f} MiB")
        assert store.total_bytes <= max_bytes, "cache_max_bytes exceeded"
    server.close()
    await server.wait_closed()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--max-mib", type=int, default=16)
    parser.add_argument("--body-kib", type=int, default=16)
    parser.add_argument("--factor", type=int, default=10)
    args = parser.parse_args()
    asyncio.run(main(args.max_mib, args.body_kib, args.factor))
