"""``workers = N``: N processes serving one port with SO_REUSEPORT, supervised by the parent.

Each worker is a fork of the parent running the ordinary single-process server: its own event
loop, cache and backend pool; the kernel spreads new connections over their listening sockets.
The parent serves nothing. It keeps one bound, non-listening SO_REUSEPORT socket so that the
port stays ours while a worker restarts (and ``http_port = 0`` means one port for all), starts
a new worker when one dies, and forwards SIGTERM, SIGINT and SIGHUP to the workers. Workers run
in their own process group, so a Ctrl-C in the terminal reaches them once, through the parent.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import signal
import socket
import time
from collections.abc import Callable
from dataclasses import replace
from types import FrameType

from .config import Config

log = logging.getLogger("phantom.workers")

POLL_SECONDS = 0.1
# A worker that dies this soon after starting counts as failing to start.
EARLY_EXIT_SECONDS = 1.0
MAX_EARLY_EXITS = 3
# After the drain bound, how long workers get to exit before they are killed.
EXIT_GRACE_SECONDS = 5.0
FORWARDED = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)

#: Runs one worker's server with the given config; returns its exit code.
WorkerMain = Callable[[Config], int]


class WorkersFailed(RuntimeError):
    """The port could not be reserved, or workers kept dying right after starting."""


class _Worker:
    __slots__ = ("index", "process", "started")

    def __init__(self, index: int, process: multiprocessing.process.BaseProcess) -> None:
        self.index = index
        self.process = process
        self.started = time.monotonic()


def reserve_port(config: Config, port: int | None = None) -> socket.socket:
    """A bound, non-listening SO_REUSEPORT socket on the configured address and ``port``
    (default ``http_port``)."""
    family = socket.AF_INET6 if ":" in config.listen else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind((config.listen, config.http_port if port is None else port))
    except OSError:
        sock.close()
        raise
    return sock


def supervise(config: Config, worker_main: WorkerMain) -> int:
    """Run ``config.workers`` workers until a forwarded SIGTERM/SIGINT has stopped them all.

    Returns 0 when every worker exited cleanly after the stop signal, else 1. Raises
    :class:`WorkersFailed` when workers keep dying right after they start.
    """
    reserved = [reserve_port(config)]
    if config.https_port is not None:
        try:
            reserved.append(reserve_port(config, config.https_port))
        except OSError:
            reserved[0].close()
            raise
        config = replace(config, https_port=reserved[1].getsockname()[1])
    config = replace(config, http_port=reserved[0].getsockname()[1])
    context = multiprocessing.get_context("fork")
    workers: list[_Worker] = []
    stopping = False

    def spawn(index: int) -> None:
        """Start worker ``index`` in its slot of ``workers``."""
        process = context.Process(
            target=_worker_entry, args=(worker_main, config, reserved), name=f"phantom-{index}"
        )
        # Signals wait until the child has its own handlers (a stop signal arriving during the
        # fork would otherwise run the parent's forwarding handler inside the child) and until
        # the child is in ``workers``: a stop signal forwarded before that would miss the new
        # worker, and the supervisor would wait for it until the drain bound ran out. For the
        # same reason no worker starts once a stop signal has been forwarded.
        signal.pthread_sigmask(signal.SIG_BLOCK, FORWARDED)
        try:
            if stopping:
                return
            process.start()
            worker = _Worker(index, process)
            if index < len(workers):
                workers[index] = worker
            else:
                workers.append(worker)
        finally:
            signal.pthread_sigmask(signal.SIG_UNBLOCK, FORWARDED)
        log.info("worker %d started (pid %s)", index, process.pid)

    def forward(signum: int, _frame: FrameType | None) -> None:
        nonlocal stopping
        if signum != signal.SIGHUP:
            stopping = True
        for worker in workers:
            pid = worker.process.pid
            if pid is not None and worker.process.exitcode is None:
                try:
                    os.kill(pid, signum)
                except ProcessLookupError:
                    pass

    previous = {sig: signal.signal(sig, forward) for sig in FORWARDED}
    try:
        for index in range(config.workers):
            spawn(index)
        early_exits = 0
        while not stopping:
            time.sleep(POLL_SECONDS)
            for worker in workers:
                code = worker.process.exitcode
                if code is None or stopping:
                    continue
                lived = time.monotonic() - worker.started
                log.warning(
                    "worker %d (pid %s) exited with code %s after %.1fs; starting a new one",
                    worker.index, worker.process.pid, code, lived,
                )
                early_exits = early_exits + 1 if lived < EARLY_EXIT_SECONDS else 0
                if early_exits >= MAX_EARLY_EXITS:
                    raise WorkersFailed(
                        f"workers keep exiting right after starting (last exit code {code})"
                    )
                spawn(worker.index)
        return _wait_all(workers, config.shutdown_timeout + EXIT_GRACE_SECONDS)
    except BaseException:
        for worker in workers:
            if worker.process.exitcode is None:
                worker.process.kill()
            worker.process.join(EXIT_GRACE_SECONDS)
        raise
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        for sock in reserved:
            sock.close()


def _wait_all(workers: list[_Worker], bound: float) -> int:
    deadline = time.monotonic() + bound
    for worker in workers:
        worker.process.join(max(0.0, deadline - time.monotonic()))
        if worker.process.exitcode is None:
            log.warning("worker %d (pid %s) still running; killing it",
                        worker.index, worker.process.pid)
            worker.process.kill()
            worker.process.join(EXIT_GRACE_SECONDS)
    return 0 if all(w.process.exitcode == 0 for w in workers) else 1


def _worker_entry(
    worker_main: WorkerMain, config: Config, reserved: list[socket.socket]
) -> None:
    for sock in reserved:
        sock.close()
    # Our own process group: the terminal's Ctrl-C reaches us once, forwarded by the parent.
    os.setpgid(0, 0)
    # A stop signal that arrives before the worker's loop has installed its own handlers
    # (a replacement worker still starting) is a clean stop: nothing was being served yet.
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, _stop_before_serving)
    # A forwarded SIGHUP must not end the worker before its loop installs the reload handler.
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, FORWARDED)
    raise SystemExit(worker_main(config))


def _stop_before_serving(signum: int, _frame: FrameType | None) -> None:
    raise SystemExit(0)
