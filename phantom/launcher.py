"""A server's ``execute`` command: start it, wait for its port, relay its output, stop it.

The command line is parsed by :mod:`phantom.command` (no shell). Each program of the chain runs
in its own process group (a new session), so stopping reaches whatever it spawned: SIGTERM to
the group, then SIGKILL after :data:`STOP_GRACE` seconds. Its output (stdout and stderr) goes
to phantom's stderr, each line prefixed with the server's name; the last :data:`TAIL_LINES`
lines are kept for the error when the backend never comes up.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import os
import signal
import sys
from collections.abc import Mapping
from typing import Final

from .command import Step, change_dir, parse_command, should_run
from .config import Config, ServerConfig
from .errors import ExecuteError

__all__ = ["STOP_GRACE", "TAIL_LINES", "Launcher", "launchers_for", "start_all", "stop_all"]

log = logging.getLogger("phantom.execute")

STOP_GRACE: Final = 10.0  # seconds between SIGTERM and SIGKILL on shutdown
TAIL_LINES: Final = 20  # lines of output quoted when the command fails to start the backend
_POLL: Final = 0.1  # seconds between two connection attempts while waiting for the port
_DRAIN: Final = 1.0  # seconds to let the output catch up after a program exits
_CHUNK: Final = 65536


def ended(status: int) -> str:
    """How a program ended, from its exit status (negative: the signal that killed it)."""
    if status >= 0:
        return f"exited with code {status}"
    try:
        return f"was killed by {signal.Signals(-status).name}"
    except ValueError:
        return f"was killed by signal {-status}"


async def accepts_connections(host: str, port: int, timeout: float = 1.0) -> bool:
    """Whether ``host:port`` accepts a TCP connection right now."""
    try:
        _, writer = await asyncio.wait_for(asyncio.open_connection(host, port), timeout)
    except (OSError, asyncio.TimeoutError):
        return False
    writer.close()
    with contextlib.suppress(OSError):
        await writer.wait_closed()
    return True


class Launcher:
    """Runs one server's ``execute`` command. ``start()`` returns once ``proxy_url``'s port
    accepts connections, or raises :class:`ExecuteError`; ``stop()`` ends the process group."""

    def __init__(self, server: ServerConfig, environ: Mapping[str, str]) -> None:
        assert server.execute is not None and server.execute_dir is not None
        self.name = server.name
        self.command = server.execute
        self.steps = parse_command(server.execute)
        self.directory = server.execute_dir
        self.timeout = server.execute_timeout
        self.backend = server.proxy_url
        self.environ = dict(environ)
        self.tail: collections.deque[str] = collections.deque(maxlen=TAIL_LINES)
        self.pid: int | None = None  # the program of the chain running now (its group's id)
        self._chain: asyncio.Task[int] | None = None
        self._relays: set[asyncio.Task[None]] = set()
        self._stopping = False

    @property
    def running(self) -> bool:
        return self._chain is not None and not self._chain.done()

    async def start(self) -> None:
        where = self.backend.netloc
        if not os.path.isdir(self.directory):
            raise self._error(f"execute_dir {self.directory} is not a directory", tail=False)
        if await accepts_connections(self.backend.host, self.backend.port):
            raise self._error(
                f"{where} already accepts connections before the command started "
                "(is the backend already running?)",
                tail=False,
            )
        log.info("server.%s: starting %s (in %s)", self.name, self.command, self.directory)
        loop = asyncio.get_running_loop()
        chain = self._chain = asyncio.ensure_future(self._run_chain())
        deadline = loop.time() + self.timeout
        try:
            while not await accepts_connections(self.backend.host, self.backend.port):
                if chain.done():
                    raise self._error(
                        f"{ended(chain.result())} before {where} accepted connections"
                    )
                if loop.time() >= deadline:
                    waited = f"{self.timeout:g}s (execute_timeout)"
                    raise self._error(f"{where} did not accept connections within {waited}")
                await asyncio.wait({chain}, timeout=_POLL)
        except BaseException:
            await self.stop()
            raise
        chain.add_done_callback(self._exited)
        log.info("server.%s: %s accepts connections (pid %s)", self.name, where, self.pid)

    async def stop(self) -> None:
        """SIGTERM the running program's process group, SIGKILL it after STOP_GRACE."""
        self._stopping = True
        chain = self._chain
        if chain is None:
            return
        self._signal(signal.SIGTERM)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + STOP_GRACE
        while not chain.done() or self._group_alive():
            if loop.time() >= deadline:
                log.warning(
                    "server.%s: still running %gs after SIGTERM; killing", self.name, STOP_GRACE
                )
                self._signal(signal.SIGKILL)
                break
            await asyncio.sleep(_POLL / 2)
        await asyncio.wait({chain})
        for relay in list(self._relays):
            relay.cancel()
        await asyncio.gather(*self._relays, return_exceptions=True)

    # -- running the chain ------------------------------------------------------------------

    async def _run_chain(self) -> int:
        status, cwd = 0, self.directory
        for step in self.steps:
            if self._stopping:
                break
            if not should_run(step, status):
                continue
            if step.cd is not None:
                target = change_dir(cwd, step.cd)
                if os.path.isdir(target):
                    cwd, status = target, 0
                else:
                    self._note(f"cd: {step.cd}: no such directory")
                    status = 1
                continue
            status = await self._run(step, cwd)
        return status

    async def _run(self, step: Step, cwd: str) -> int:
        try:
            process = await asyncio.create_subprocess_exec(
                *step.argv,
                cwd=cwd,
                env={**self.environ, **dict(step.env)},
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.STDOUT,
                start_new_session=True,  # its own process group: stop() reaches its children
            )
        except OSError as exc:  # as sh: 127 when the program is not found, 126 otherwise
            self._note(f"{step.argv[0]}: {exc.strerror or exc}")
            return 127 if isinstance(exc, FileNotFoundError) else 126
        self.pid = process.pid
        assert process.stdout is not None
        relay = asyncio.ensure_future(self._relay(process.stdout))
        self._relays.add(relay)
        relay.add_done_callback(self._relays.discard)
        status = await process.wait()
        # A child that keeps the pipe open must not hold the chain up: wait only a little.
        await asyncio.wait({relay}, timeout=_DRAIN)
        return status

    async def _relay(self, stream: asyncio.StreamReader) -> None:
        pending = b""
        while chunk := await stream.read(_CHUNK):
            *lines, pending = (pending + chunk).split(b"\n")
            for line in lines:
                self._output(line)
            if len(pending) > _CHUNK:  # a very long line: show it in pieces
                self._output(pending)
                pending = b""
        if pending:
            self._output(pending)

    def _output(self, raw: bytes) -> None:
        line = raw.decode("utf-8", "replace").rstrip("\r")
        self.tail.append(line)
        sys.stderr.write(f"{self.name} | {line}\n")
        sys.stderr.flush()

    def _note(self, line: str) -> None:
        """A line about the command that phantom writes as if the command had said it."""
        self._output(f"phantom: {line}".encode())

    # -- signals and reports ----------------------------------------------------------------

    def _signal(self, sig: signal.Signals) -> None:
        if self.pid is not None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self.pid, sig)

    def _group_alive(self) -> bool:
        if self.pid is None:
            return False
        try:
            os.killpg(self.pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        return True

    def _exited(self, chain: asyncio.Task[int]) -> None:
        if self._stopping or chain.cancelled():
            return
        if chain.exception() is not None:
            log.error("server.%s: execute failed", self.name, exc_info=chain.exception())
            return
        log.warning(
            "server.%s: execute command %s while serving; "
            "requests to it fail with 502 until it is back on %s",
            self.name,
            ended(chain.result()),
            self.backend.netloc,
        )

    def _error(self, problem: str, *, tail: bool = True) -> ExecuteError:
        message = f"server.{self.name}: execute: {problem}"
        if tail and self.tail:
            message += "; last output:\n" + "\n".join(f"  {line}" for line in self.tail)
        elif tail:
            message += " (no output)"
        return ExecuteError(message)


def launchers_for(config: Config) -> dict[str, Launcher]:
    """A launcher for each server with an ``execute`` command, by server name; the environment
    wins over the .env file."""
    environ = {**dict(config.dotenv_vars), **os.environ}
    return {s.name: Launcher(s, environ) for s in config.servers if s.execute is not None}


async def start_all(launchers: Mapping[str, Launcher]) -> None:
    """Start every command, concurrently, and wait for their ports. On a failure (or
    cancellation) stop the others: nothing phantom started may outlive a failed start."""
    starts = [asyncio.ensure_future(launcher.start()) for launcher in launchers.values()]
    if not starts:
        return
    try:
        done, _ = await asyncio.wait(starts, return_when=asyncio.FIRST_EXCEPTION)
        for task in done:
            if (failure := task.exception()) is not None:
                raise failure
    except BaseException:
        for task in starts:
            task.cancel()
        await asyncio.gather(*starts, return_exceptions=True)
        await stop_all(launchers)
        raise


async def stop_all(launchers: Mapping[str, Launcher]) -> None:
    await asyncio.gather(*(launcher.stop() for launcher in launchers.values()))
