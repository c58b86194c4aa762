"""Experiment: how should a tunnel copy bytes? One direction, loopback TCP, relay on core 0,
sender and receiver on core 1 (the suite's layout).

    benchmarks/.venv/bin/python -m benchmarks.tunnel_copy [--mib 512] [--repeats 3]

Variants of the relay (each moves ``--mib`` MiB from the sender's socket to the receiver's):

* ``transport``: what phantom's tunnel does (``phantom.tunnel._Direction``): a uvloop
  Protocol whose ``data_received`` writes the chunk to the other transport, pausing reads
  while that transport's buffer is over its high-water mark (uvloop default: 64 KiB);
* ``transport-hw1m``: the same with a 1 MiB write-buffer high-water mark;
* ``transport-hw16k``: the same with 16 KiB (HAProxy's buffer size);
* ``splice``: ``os.splice`` socket -> pipe -> socket in a blocking loop with a 1 MiB pipe: the
  best case for zero-copy (no event loop at all, one tunnel).

Prints, per variant (median of the repeats, variants interleaved), the MB/s seen by the
receiver and the relay's own CPU cost as MB moved per CPU-second of the relay process (user +
system): with the sender and the receiver sharing one core the wall-clock rate is often their
limit, not the relay's, while the CPU cost is the relay's alone. ``direct`` (no relay) gives
the wall-clock ceiling of the layout.
"""

from __future__ import annotations

import argparse
import asyncio
import fcntl
import os
import resource
import socket
import statistics
import threading
import time
from collections.abc import Callable

import uvloop

MiB = 1024 * 1024
CHUNK = 256 * 1024
F_SETPIPE_SZ = getattr(fcntl, "F_SETPIPE_SZ", 1031)


class _Copy(asyncio.Protocol):
    """phantom's _Direction, reduced to the copy and its backpressure."""

    def __init__(self, done: asyncio.Future[None]) -> None:
        self.done = done
        self.sink: asyncio.Transport

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.source = transport

    def data_received(self, data: bytes) -> None:
        self.sink.write(data)

    def eof_received(self) -> bool:
        self.sink.write_eof()
        if not self.done.done():
            self.done.set_result(None)
        return True


class _Sink(asyncio.Protocol):
    def __init__(self, source: Callable[[], asyncio.BaseTransport]) -> None:
        self.source = source

    def pause_writing(self) -> None:
        self.source().pause_reading()  # type: ignore[attr-defined]

    def resume_writing(self) -> None:
        self.source().resume_reading()  # type: ignore[attr-defined]


def relay_transport(inbound: socket.socket, outbound: socket.socket, high: int | None) -> None:
    async def run() -> None:
        loop = asyncio.get_running_loop()
        done: asyncio.Future[None] = loop.create_future()
        copy = _Copy(done)
        sink_transport, _ = await loop.connect_accepted_socket(
            lambda: _Sink(lambda: copy.source), outbound
        )
        if high is not None:
            sink_transport.set_write_buffer_limits(high=high)
        copy.sink = sink_transport
        await loop.connect_accepted_socket(lambda: copy, inbound)
        await done
        while sink_transport.get_write_buffer_size():
            await asyncio.sleep(0.001)
        sink_transport.close()

    uvloop.run(run())


def relay_splice(inbound: socket.socket, outbound: socket.socket) -> None:
    read_end, write_end = os.pipe()
    fcntl.fcntl(write_end, F_SETPIPE_SZ, MiB)
    src, dst = inbound.fileno(), outbound.fileno()
    while True:
        n = os.splice(src, write_end, MiB)
        if n == 0:
            break
        while n:
            n -= os.splice(read_end, dst, n)
    outbound.shutdown(socket.SHUT_WR)
    os.close(read_end)
    os.close(write_end)


def _cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def one_run(variant: str, size: int) -> tuple[float, float]:
    """(wall MB/s, relay MB per CPU-second) through one relay of ``variant``; sender and
    receiver run in a pinned child."""
    listener = socket.create_server(("127.0.0.1", 0))
    sink_listener = socket.create_server(("127.0.0.1", 0))
    port, sink_port = listener.getsockname()[1], sink_listener.getsockname()[1]
    read_fd, write_fd = os.pipe()
    child = os.fork()
    if child == 0:  # sender and receiver, on core 1
        os.sched_setaffinity(0, {1})
        os.close(read_fd)
        received = 0

        def receive() -> None:
            nonlocal received
            if variant == "direct":
                conn, _ = sink_listener.accept()
            else:
                conn = socket.create_connection(("127.0.0.1", sink_port))
            while data := conn.recv(CHUNK):
                received += len(data)

        receiver = threading.Thread(target=receive)
        receiver.start()
        sender = socket.create_connection(("127.0.0.1", sink_port if variant == "direct" else port))
        block = os.urandom(CHUNK)
        started = time.perf_counter()
        for _ in range(size // CHUNK):
            sender.sendall(block)
        sender.shutdown(socket.SHUT_WR)
        receiver.join()
        elapsed = time.perf_counter() - started
        os.write(write_fd, f"{received} {elapsed}".encode())
        os._exit(0)
    os.close(write_fd)
    os.sched_setaffinity(0, {0})
    cpu_before = _cpu_seconds()
    if variant == "direct":
        os.waitpid(child, 0)
        listener.close()
        sink_listener.close()
        return _report(variant, size, read_fd, cpu_before)
    inbound, _ = listener.accept()
    outbound, _ = sink_listener.accept()
    listener.close()
    sink_listener.close()
    if variant == "splice":
        relay_splice(inbound, outbound)
    else:
        high = {"transport": None, "transport-hw1m": MiB, "transport-hw16k": 16 * 1024}[variant]
        relay_transport(inbound, outbound, high)
    inbound.close()
    outbound.close()
    os.waitpid(child, 0)
    return _report(variant, size, read_fd, cpu_before)


def _report(variant: str, size: int, read_fd: int, cpu_before: float) -> tuple[float, float]:
    cpu = _cpu_seconds() - cpu_before
    received_text, elapsed_text = os.read(read_fd, 100).decode().split()
    os.close(read_fd)
    os.sched_setaffinity(0, {0, 1})
    if int(received_text) != size:
        raise RuntimeError(f"{variant}: {received_text} bytes arrived of {size}")
    return size / float(elapsed_text) / 1e6, size / max(cpu, 1e-9) / 1e6


VARIANTS = ["direct", "transport", "transport-hw1m", "transport-hw16k", "splice"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--mib", type=int, default=512)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    results: dict[str, list[tuple[float, float]]] = {variant: [] for variant in VARIANTS}
    for repeat in range(args.repeats):
        order = VARIANTS[repeat % len(VARIANTS) :] + VARIANTS[: repeat % len(VARIANTS)]
        for variant in order:
            results[variant].append(one_run(variant, args.mib * MiB))
    print(f"{'variant':16} {'wall MB/s':>10} {'spread':>7} {'MB per relay CPU-s':>19}")
    for variant, samples in results.items():
        wall = [sample[0] for sample in samples]
        spread = (max(wall) - min(wall)) / statistics.median(wall)
        per_cpu = "-" if variant == "direct" else f"{statistics.median(s[1] for s in samples):,.0f}"
        print(f"{variant:16} {statistics.median(wall):10,.0f} {100 * spread:6.0f}% {per_cpu:>19}")


if __name__ == "__main__":
    main()
