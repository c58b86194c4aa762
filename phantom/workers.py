"""``workers = N``: N processes serving one port with SO_REUSEPORT, supervised by the parent.

Each worker is a fork of the parent running the ordinary single-process server: its own event
loop, cache and backend pool; the kernel spreads new connections over their listening sockets.
The parent serves no proxied request. It keeps one bound, non-listening SO_REUSEPORT socket so
that the port stays ours while a worker restarts (and ``http_port = 0`` means one port for all),
starts a new worker when one dies, and forwards SIGTERM, SIGINT and SIGHUP to the workers.
Workers run in their own process group, so a Ctrl-C in the terminal reaches them once, through
the parent.

The parent also runs what must exist once: the servers' ``execute`` commands (started before
the first worker, stopped after the last one has drained) and, with ``control_port``, the
control API, which reaches each worker over a Unix socket of its seat (:mod:`phantom.fanout`).
A replacement worker binds the same socket path, so it rejoins without the parent doing
anything. The parent runs a plain asyncio loop; a worker forgets it as its first act.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import multiprocessing
import os
import shutil
import signal
import socket
import tempfile
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace

from .config import Config, host_port, keep_restart_keys
from .errors import ConfigError
from .fanout import FleetControl, channel_path
from .launcher import Launcher, launchers_for, start_all, stop_all

log = logging.getLogger("phantom.workers")

POLL_SECONDS = 0.1
# A worker that dies this soon after starting counts as failing to start.
EARLY_EXIT_SECONDS = 1.0
MAX_EARLY_EXITS = 3
# After the drain bound, how long workers get to exit before they are killed.
EXIT_GRACE_SECONDS = 5.0
FORWARDED = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)


@dataclass(frozen=True, slots=True)
class WorkerSeat:
    """Worker ``index`` of ``workers = N``. ``control_socket``: where the parent reaches its
    control API (None without ``control_port``). Its ``execute`` commands run in the parent."""

    index: int
    control_socket: str | None


#: Runs one worker's server with the given config in its seat; returns its exit code.
WorkerMain = Callable[[Config, WorkerSeat], int]
#: Reads the configuration again (a reload); raises ConfigError when it is invalid.
ConfigLoader = Callable[[], Config]


class WorkersFailed(RuntimeError):
    """The control port could not be opened, or workers kept dying right after starting."""


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


def supervise(
    config: Config, worker_main: WorkerMain, loader: ConfigLoader | None = None
) -> int:
    """Run ``config.workers`` workers until a forwarded SIGTERM/SIGINT has stopped them all.

    On a reload (SIGHUP, ``POST /reload``) the workers re-read the configuration themselves;
    the supervisor re-reads it with ``loader`` too, so that a worker started later (in place of
    one that died) starts with what the others serve.

    Returns 0 when every worker exited cleanly after the stop signal, else 1. Raises
    :class:`WorkersFailed` when workers keep dying right after they start, OSError when the
    port cannot be reserved, and an ExecuteError when an ``execute`` command fails to start.
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
    # The parent's loop is asyncio's own: what a forked worker inherits of it is simple to drop.
    loop = asyncio.new_event_loop()
    try:
        supervisor = _Supervisor(config, worker_main, reserved, loader)
        return loop.run_until_complete(supervisor.run())
    finally:
        for sock in reserved:
            sock.close()
        loop.run_until_complete(loop.shutdown_default_executor())
        loop.close()


class _Supervisor:
    def __init__(
        self,
        config: Config,
        worker_main: WorkerMain,
        reserved: list[socket.socket],
        loader: ConfigLoader | None,
    ) -> None:
        self.config = config
        self.worker_main = worker_main
        self.reserved = reserved
        self.loader = loader
        self.reload_due = False  # set by SIGHUP and POST /reload, done in the watch loop
        self.context = multiprocessing.get_context("fork")
        self.workers: list[_Worker] = []
        # Set by the signal handler, which runs synchronously (signal.signal, not the loop's
        # handlers): a stop that arrives while a worker is forked is seen before the next fork.
        self.stopping = False
        # The workers' control sockets live in a directory only our user can enter.
        self.channels: str | None = None
        self.control: FleetControl | None = None

    async def run(self) -> int:
        previous = {sig: signal.signal(sig, self.forward) for sig in FORWARDED}
        launchers = launchers_for(self.config)
        try:
            if self.config.control_port is not None:
                self.channels = tempfile.mkdtemp(prefix="phantom-workers-")
                self.control = FleetControl(
                    self.config, self.channels, self.alive, self.request_reload
                )
                try:
                    await self.control.start()
                except OSError as exc:
                    where = host_port(self.config.control_listen, self.config.control_port)
                    raise WorkersFailed(
                        f"cannot listen on {where} (control_port): {exc.strerror or exc}"
                    ) from None
            # The backends phantom starts are up before a worker forwards to them.
            if not await self.start_commands(launchers):
                return 0  # stopped while the commands started
            for index in range(self.config.workers):
                self.spawn(index)
            await self.watch()
            return await self.wait_all(self.config.shutdown_timeout + EXIT_GRACE_SECONDS)
        except BaseException:
            for worker in self.workers:
                if worker.process.exitcode is None:
                    worker.process.kill()
                worker.process.join(EXIT_GRACE_SECONDS)
            raise
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)
            # Last: the backends phantom started served the requests the workers drained.
            await stop_all(launchers)
            if self.control is not None:
                await self.control.close()
            if self.channels is not None:
                shutil.rmtree(self.channels, ignore_errors=True)

    async def start_commands(self, launchers: Mapping[str, Launcher]) -> bool:
        """Start the execute commands; False when a stop signal came first (then what had
        started is stopped). Raises ExecuteError when one fails to start."""
        starting = asyncio.ensure_future(start_all(launchers))
        try:
            while not (starting.done() or self.stopping):
                await asyncio.wait({starting}, timeout=POLL_SECONDS)
        finally:
            if not starting.done():
                starting.cancel()  # start_all stops what it began
                await asyncio.wait({starting})
        if starting.cancelled():
            return False
        starting.result()
        return True

    def alive(self) -> list[int]:
        """The seats whose worker is running now."""
        return [w.index for w in self.workers if w.process.exitcode is None]

    def spawn(self, index: int) -> None:
        """Start worker ``index`` in its slot of ``workers``."""
        seat = WorkerSeat(
            index, None if self.channels is None else channel_path(self.channels, index)
        )
        inherited = [sock.fileno() for sock in self.reserved]
        if self.control is not None:
            inherited.extend(self.control.sockets)
        process = self.context.Process(
            target=_worker_entry,
            args=(self.worker_main, self.config, seat, inherited),
            name=f"phantom-{index}",
        )
        # Signals wait until the child has its own handlers (a stop signal arriving during the
        # fork would otherwise run the parent's forwarding handler inside the child) and until
        # the child is in ``workers``: a stop signal forwarded before that would miss the new
        # worker, and the supervisor would wait for it until the drain bound ran out. For the
        # same reason no worker starts once a stop signal has been forwarded.
        signal.pthread_sigmask(signal.SIG_BLOCK, FORWARDED)
        try:
            if self.stopping:
                return
            process.start()
            worker = _Worker(index, process)
            if index < len(self.workers):
                self.workers[index] = worker
            else:
                self.workers.append(worker)
        finally:
            signal.pthread_sigmask(signal.SIG_UNBLOCK, FORWARDED)
        log.info("worker %d started (pid %s)", index, process.pid)

    def request_reload(self) -> None:
        self.reload_due = True

    def reload(self) -> None:
        """The configuration a worker started from now on gets (the workers log problems)."""
        self.reload_due = False
        if self.loader is None:
            return
        try:
            self.config, _ = keep_restart_keys(self.loader(), self.config)
        except ConfigError:
            pass  # each worker logs it and keeps its configuration; so does the supervisor

    def forward(self, signum: int, _frame: object) -> None:
        if signum == signal.SIGHUP:
            self.reload_due = True
        else:
            self.stopping = True
        for worker in self.workers:
            pid = worker.process.pid
            if pid is not None and worker.process.exitcode is None:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signum)

    async def watch(self) -> None:
        """Replace workers that die, until a stop signal; give up when they die at once."""
        early_exits = 0
        while not self.stopping:
            await asyncio.sleep(POLL_SECONDS)
            if self.reload_due:
                self.reload()
            for worker in self.workers:
                code = worker.process.exitcode
                if code is None or self.stopping:
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
                self.spawn(worker.index)

    async def wait_all(self, bound: float) -> int:
        deadline = time.monotonic() + bound
        while self.alive() and time.monotonic() < deadline:
            await asyncio.sleep(POLL_SECONDS)
        for worker in self.workers:
            if worker.process.exitcode is None:
                log.warning("worker %d (pid %s) still running; killing it",
                            worker.index, worker.process.pid)
                worker.process.kill()
            worker.process.join(EXIT_GRACE_SECONDS)
        return 0 if all(w.process.exitcode == 0 for w in self.workers) else 1


def _worker_entry(
    worker_main: WorkerMain, config: Config, seat: WorkerSeat, inherited: list[int]
) -> None:
    # Forget the parent's loop: this thread runs a loop of its own from here.
    asyncio.events._set_running_loop(None)
    for fd in inherited:  # the reserved ports and the control port are the parent's
        with contextlib.suppress(OSError):
            os.close(fd)
    # Our own process group: the terminal's Ctrl-C reaches us once, forwarded by the parent.
    os.setpgid(0, 0)
    # A stop signal that arrives before the worker's loop has installed its own handlers
    # (a replacement worker still starting) is a clean stop: nothing was being served yet.
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, _stop_before_serving)
    # A forwarded SIGHUP must not end the worker before its loop installs the reload handler.
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, FORWARDED)
    raise SystemExit(worker_main(config, seat))


def _stop_before_serving(signum: int, _frame: object) -> None:
    raise SystemExit(0)
