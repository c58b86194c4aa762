"""``phantom serve`` as a real subprocess under conditions only a whole process shows:
``workers = N`` supervision, and running out of file descriptors."""

from __future__ import annotations

import asyncio
import os
import resource
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from conftest import async_test
from origin import LOCALHOST, UpgradeBackend, unused_port
from test_cli import REPO, child_env

from phantom.proxy import TUNNEL_QUIET_SECONDS

linux_only = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="uses /proc")
WAIT = 10.0


@contextmanager
def serve(
    config: Path, *args: str, preexec: Callable[[], None] | None = None
) -> Iterator[subprocess.Popen[bytes]]:
    log = config.with_suffix(".log")
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "phantom", "serve", "--config", str(config), *args],
            cwd=REPO, env=child_env(), stdout=out, stderr=subprocess.STDOUT,
            preexec_fn=preexec,
        )
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(WAIT)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(WAIT)


def wait_for(predicate: Callable[[], object], what: str) -> None:
    deadline = time.monotonic() + WAIT
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


def answers(port: int) -> bool:
    """Any HTTP response counts: the backend is down, so it is phantom's 502."""
    try:
        with socket.create_connection((LOCALHOST, port), timeout=2) as sock:
            sock.sendall(b"GET / HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
            return sock.recv(16).startswith(b"HTTP/1.1 ")
    except OSError:
        return False


def children(pid: int) -> set[int]:
    return {int(c) for c in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()}


def write_config(tmp_path: Path, port: int, extra: str = "") -> Path:
    config = tmp_path / "phantom.toml"
    config.write_text(
        f"http_port = {port}\n{extra}\n[server.app]\n"
        f'proxy_url = "http://{LOCALHOST}:{unused_port()}"\n'
    )
    return config


@linux_only
def test_workers_share_the_port_and_a_killed_worker_is_replaced(tmp_path: Path) -> None:
    port = unused_port()
    with serve(write_config(tmp_path, port), "--workers", "2") as proc:
        wait_for(lambda: len(children(proc.pid)) == 2 and answers(port), "two workers")
        first = children(proc.pid)
        victim = min(first)
        os.kill(victim, signal.SIGKILL)
        wait_for(lambda: len(children(proc.pid) - first) == 1, "a replacement worker")
        assert len(children(proc.pid)) == 2
        assert victim not in children(proc.pid)
        wait_for(lambda: answers(port), "the port to answer")
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(WAIT) == 0
    log = tmp_path.joinpath("phantom.log").read_text()
    assert f"(pid {victim}) exited with code -9" in log
    assert "Traceback" not in log


# A stop signal that reaches the supervisor while it forks a worker: the runner wraps
# multiprocessing's start() so that the signal arrives right after the fork of the Nth worker,
# the moment a Ctrl-C or a test's SIGTERM can hit by chance (the cause of a flaky exit).
SIGNAL_DURING_FORK = """
import multiprocessing.process, os, signal, sys
from phantom.cli import main
start, forks, nth, config = multiprocessing.process.BaseProcess.start, [], *sys.argv[1:]
def start_and_signal(self):
    start(self)
    forks.append(self.pid)
    if len(forks) == int(nth):
        os.kill(os.getpid(), signal.SIGTERM)
multiprocessing.process.BaseProcess.start = start_and_signal
sys.argv = ["phantom", "serve", "--workers", "2", "--config", config]
main()
"""


@linux_only
@pytest.mark.parametrize("fork", [1, 3], ids=["first-worker", "replacement-worker"])
def test_a_stop_signal_during_a_worker_fork_stops_every_worker(tmp_path: Path, fork: int) -> None:
    """The worker being started is told too (it used to be missed, and the supervisor waited
    for it until shutdown_timeout plus the exit grace ran out); none starts after it."""
    port = unused_port()
    config = write_config(tmp_path, port, "shutdown_timeout = 5")
    log = tmp_path / "phantom.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-c", SIGNAL_DURING_FORK, str(fork), str(config)],
            cwd=REPO, env=child_env(), stdout=out, stderr=subprocess.STDOUT,
        )
    try:
        if fork == 3:
            wait_for(lambda: len(children(proc.pid)) == 2 and answers(port), "two workers")
            os.kill(min(children(proc.pid)), signal.SIGKILL)
        assert proc.wait(WAIT / 2) == 0
    finally:
        if proc.poll() is None:
            for pid in children(proc.pid):
                os.kill(pid, signal.SIGKILL)
            proc.kill()
            proc.wait(WAIT)
    text = log.read_text()
    assert text.count("started (pid") == fork
    assert "still running; killing it" not in text
    assert "Traceback" not in text


def test_a_backend_down_under_load_is_one_warning_not_one_per_request(tmp_path: Path) -> None:
    """200 requests to a server whose backend is down: 200 access log lines with 502, and
    one warning (the next, five seconds on, would say how many were left out)."""
    port = unused_port()
    with serve(write_config(tmp_path, port)) as proc:
        wait_for(lambda: answers(port), "the proxy")
        for _ in range(199):
            assert answers(port)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(WAIT) == 0
    log = tmp_path.joinpath("phantom.log").read_text()
    assert log.count('"GET / HTTP/1.1" 502 ') == 200
    assert log.count("WARNING") == 1
    assert "cannot connect to 127.0.0.1:" in log


# What each loop says at the open-file limit: asyncio reports failed accepts to the loop's
# exception handler, so the line is written when they fail; uvloop sheds what it cannot accept
# without a word, so phantom warns as accepted clients bring the descriptors near the limit.
OUT_OF_DESCRIPTORS = {
    "asyncio": (
        "cannot accept connections",
        "Too many open files (open-file limit {limit}; raise it with ulimit -n)",
    ),
    "uvloop": (
        "running low on file descriptors",
        "in use of the open-file limit {limit}; new clients will be refused when they run out;"
        " raise it with ulimit -n",
    ),
}


@linux_only
@pytest.mark.parametrize("loop", sorted(OUT_OF_DESCRIPTORS))
def test_running_out_of_descriptors_is_one_log_line_not_a_crash(
    tmp_path: Path, loop: str
) -> None:
    if loop == "uvloop":
        pytest.importorskip("uvloop")
    line, detail = OUT_OF_DESCRIPTORS[loop]
    port = unused_port()
    limit = 64

    def low_fd_limit() -> None:
        resource.setrlimit(resource.RLIMIT_NOFILE, (limit, limit))

    log = tmp_path.joinpath("phantom.log")
    with serve(write_config(tmp_path, port), "--loop", loop, preexec=low_fd_limit) as proc:
        wait_for(lambda: answers(port), "the proxy")
        idle = []
        try:
            for _ in range(limit + 8):
                idle.append(socket.create_connection((LOCALHOST, port), timeout=2))
            wait_for(lambda: line in log.read_text(), "the log line")
            # Every descriptor is taken, and the process is still there.
            fds = Path(f"/proc/{proc.pid}/fd")
            wait_for(lambda: len(list(fds.iterdir())) >= limit - 1, "the limit to be reached")
            assert proc.poll() is None
        finally:
            for sock in idle:
                sock.close()
        wait_for(lambda: answers(port), "the proxy to serve again")
        assert proc.poll() is None
    text = log.read_text()
    assert detail.format(limit=limit) in text
    assert text.count(line) <= 3
    assert "Traceback" not in text


def test_serve_with_only_a_backend_flag_needs_no_config_file(tmp_path: Path) -> None:
    """`phantom serve --backend URL` in a directory without phantom.toml runs on the built-in
    defaults (the README's "your app" step)."""
    port = unused_port()
    backend = f"http://{LOCALHOST}:{unused_port()}"
    log = tmp_path / "phantom.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "phantom", "serve", "--backend", backend, "--port", str(port)],
            cwd=tmp_path, env=child_env(), stdout=out, stderr=subprocess.STDOUT,
        )
    try:
        wait_for(lambda: answers(port), "the proxy")
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(WAIT) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(WAIT)
    assert f"-> default: {backend}" in log.read_text()


# -- shutdown: quiet tunnels, and a second signal -----------------------------------------------


async def wait_until_answering(port: int) -> None:
    await asyncio.to_thread(wait_for, lambda: answers(port), "the proxy")


async def exit_code(proc: subprocess.Popen[bytes], within: float) -> int | None:
    """The process's exit code once it exits, or None if it is still running after ``within``."""
    deadline = time.monotonic() + within
    while proc.poll() is None and time.monotonic() < deadline:
        await asyncio.sleep(0.02)
    return proc.poll()


async def open_tunnel(port: int) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """A custom-upgrade tunnel through phantom to an echoing UpgradeBackend, checked to echo."""
    reader, writer = await asyncio.open_connection(LOCALHOST, port)
    writer.write(b"GET /ws HTTP/1.1\r\nHost: t\r\nConnection: Upgrade\r\nUpgrade: x-echo\r\n\r\n")
    assert (await reader.readuntil(b"\r\n\r\n")).startswith(b"HTTP/1.1 101 ")
    writer.write(b"ping")
    assert await reader.readexactly(4) == b"ping"
    return reader, writer


async def closed_by_peer(reader: asyncio.StreamReader) -> bool:
    try:
        return await asyncio.wait_for(reader.read(), 2) == b""
    except ConnectionError:
        return True


@async_test(timeout=30)
async def test_an_idle_tunnel_does_not_hold_a_graceful_shutdown(tmp_path: Path) -> None:
    """Ctrl-C with an idle WebSocket open: phantom exits within about TUNNEL_QUIET_SECONDS,
    not after shutdown_timeout (30 s by default)."""
    async with UpgradeBackend() as backend:
        port = unused_port()
        config = tmp_path / "phantom.toml"
        config.write_text(
            f'http_port = {port}\n[server.app]\nproxy_url = "http://{LOCALHOST}:{backend.port}"\n'
        )
        with serve(config) as proc:
            await wait_until_answering(port)
            reader, writer = await open_tunnel(port)
            proc.send_signal(signal.SIGINT)
            assert await exit_code(proc, 2 * TUNNEL_QUIET_SECONDS + 2) == 0
            assert await closed_by_peer(reader)
            writer.close()
    log = config.with_suffix(".log").read_text()
    assert "tunnel 127.0.0.1 /ws -> " in log and "is quiet; closing it" in log
    assert "Traceback" not in log


# An execute command that holds every connection without answering: the request in flight.
HANG = """
import os, socket, sys, time
open(sys.argv[2], "w").write(str(os.getpid()))
server = socket.create_server(("127.0.0.1", int(sys.argv[1])))
held = []
while True:
    held.append(server.accept())
"""


@async_test(timeout=30)
async def test_a_second_signal_closes_what_is_left_at_once(tmp_path: Path) -> None:
    """The first SIGINT waits for a busy tunnel and a request in flight; the second one closes
    both at once, stops the execute command, and says so."""
    hang_port = unused_port()
    tmp_path.joinpath("hang.py").write_text(HANG)
    pid_file = tmp_path / "hang.pid"
    async with UpgradeBackend() as backend:
        port = unused_port()
        config = tmp_path / "phantom.toml"
        config.write_text(
            f"http_port = {port}\n"
            f'[server.app]\nproxy_url = "http://{LOCALHOST}:{backend.port}"\n'
            f'[server.slow]\nproxy_url = "http://{LOCALHOST}:{hang_port}"\nbind_to = "/slow"\n'
            f'execute = "{sys.executable} hang.py {hang_port} {pid_file}"\n'
        )
        with serve(config) as proc:
            await wait_until_answering(port)
            reader, writer = await open_tunnel(port)

            async def chatter() -> None:
                while True:  # never quiet for long
                    writer.write(b"tick")
                    await reader.readexactly(4)
                    await asyncio.sleep(TUNNEL_QUIET_SECONDS / 5)

            busy = asyncio.ensure_future(chatter())
            slow_reader, slow_writer = await asyncio.open_connection(LOCALHOST, port)
            slow_writer.write(b"GET /slow HTTP/1.1\r\nHost: t\r\n\r\n")
            await asyncio.sleep(0.2)
            proc.send_signal(signal.SIGINT)
            # Graceful: both are waited for (shutdown_timeout is 30 s).
            assert await exit_code(proc, 3 * TUNNEL_QUIET_SECONDS) is None
            assert not busy.done()
            proc.send_signal(signal.SIGINT)
            assert await exit_code(proc, 3) == 1
            assert await closed_by_peer(slow_reader)
            busy.cancel()
            assert await closed_by_peer(reader)
            writer.close()
            slow_writer.close()
    log = config.with_suffix(".log").read_text()
    assert "received SIGINT again, forcing shutdown" in log
    assert "shutdown: forced; closing what is left now (connections: 1, tunnels: 1)" in log
    assert "Traceback" not in log
    hang = int(pid_file.read_text())
    try:
        os.kill(hang, 0)
    except ProcessLookupError:
        return  # the execute command was stopped
    os.kill(hang, signal.SIGKILL)
    raise AssertionError("the execute command was left running")
