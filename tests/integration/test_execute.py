"""``execute``: phantom starts a real backend (Python's http.server), waits for its port, relays
its output, reports an early exit with the output's tail, and ends its process group on stop.

The backends are real child processes on loopback ports; the processes a test starts are
checked, by PID, to be gone when phantom has stopped.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import shlex
import signal
import subprocess
import sys
import textwrap
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import async_test, get, servers_config
from origin import LOCALHOST, TestOrigin, unused_port
from test_cli import child_env

from phantom import ExecuteError, create_proxy
from phantom.launcher import Launcher

PYTHON = shlex.quote(sys.executable)
CHILD_TIMEOUT = 30.0

# A backend that reports who and where it is, spawns a grandchild (to show that the whole
# process group is stopped), then serves its working directory.
BACKEND = """\
import http.server, json, os, subprocess, sys
child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
info = {
    "pid": os.getpid(),
    "grandchild": child.pid,
    "cwd": os.getcwd(),
    "greeting": os.environ.get("GREETING"),
    "from_dotenv": os.environ.get("FROM_DOTENV"),
}
with open("info.json", "w") as file:
    json.dump(info, file)
print("backend ready", flush=True)
http.server.ThreadingHTTPServer.allow_reuse_address = True
handler = http.server.SimpleHTTPRequestHandler
http.server.ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1])), handler).serve_forever()
"""


def is_gone(pid: int, within: float = 5.0) -> bool:
    """Whether process ``pid`` has exited (a zombie waiting to be reaped counts as exited)."""
    deadline = time.monotonic() + within
    while True:
        try:
            os.kill(pid, 0)
            stat = Path(f"/proc/{pid}/stat").read_text()
        except (ProcessLookupError, FileNotFoundError):
            return True
        if stat.rpartition(")")[2].split()[0] == "Z":
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.05)


def http_server_command(port: int) -> str:
    return f"{PYTHON} -m http.server {port} --bind {LOCALHOST}"


def execute_config(port: int, command: str, directory: Path, **server: object) -> dict[str, object]:
    return servers_config(
        {
            "app": {
                "proxy_url": f"http://{LOCALHOST}:{port}",
                "execute": command,
                "execute_dir": str(directory),
                **server,
            }
        }
    )


async def exited(launcher: Launcher, within: float = 5.0) -> None:
    for _ in range(int(within / 0.05)):
        if not launcher.running:
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"server.{launcher.name}: the command is still running")


# -- library ---------------------------------------------------------------------------------


@async_test(timeout=30)
async def test_execute_starts_the_backend_and_stops_its_process_group(tmp_path: Path) -> None:
    (tmp_path / "hello.txt").write_text("hello from http.server\n")
    port = unused_port()
    async with create_proxy(execute_config(port, http_server_command(port), tmp_path)) as proxy:
        launcher = proxy.launchers["app"]
        pid = launcher.pid
        assert pid is not None and launcher.running
        response = await get(proxy.port, "/hello.txt")
        assert response.status == 200
        assert response.body == b"hello from http.server\n"
    assert is_gone(pid)
    assert not launcher.running


@async_test(timeout=30)
async def test_a_command_that_exits_at_once_fails_with_its_output_tail(tmp_path: Path) -> None:
    port = unused_port()
    script = "import sys; print('starting'); print('bad config', file=sys.stderr); sys.exit(3)"
    proxy = create_proxy(execute_config(port, f"{PYTHON} -c {shlex.quote(script)}", tmp_path))
    with pytest.raises(ExecuteError) as info:
        await proxy.start()
    first, *tail = str(info.value).splitlines()
    assert first == (
        f"server.app: execute: exited with code 3 before {LOCALHOST}:{port} accepted "
        "connections; last output:"
    )
    assert tail == ["  starting", "  bad config"]
    assert proxy.port is None  # never listened


@async_test(timeout=30)
async def test_timeout_stops_the_command(tmp_path: Path) -> None:
    port = unused_port()
    command = f"{PYTHON} -c 'import time; time.sleep(60)'"
    proxy = create_proxy(execute_config(port, command, tmp_path, execute_timeout=0.5))
    with pytest.raises(ExecuteError, match=r"did not accept connections within 0\.5s"):
        await proxy.start()
    pid = proxy.launchers["app"].pid
    assert pid is not None and is_gone(pid)


@async_test(timeout=30)
async def test_missing_program_and_directory_are_reported_like_sh(tmp_path: Path) -> None:
    port = unused_port()
    proxy = create_proxy(execute_config(port, "cd nowhere || no-such-program-phantom", tmp_path))
    with pytest.raises(ExecuteError) as info:
        await proxy.start()
    assert str(info.value).splitlines() == [
        f"server.app: execute: exited with code 127 before {LOCALHOST}:{port} accepted "
        "connections; last output:",
        "  phantom: cd: nowhere: no such directory",
        "  phantom: no-such-program-phantom: No such file or directory",
    ]


@async_test(timeout=30)
async def test_a_port_already_in_use_is_refused_before_starting(tmp_path: Path) -> None:
    async with TestOrigin() as origin:
        marker = tmp_path / "ran"
        command = f'{PYTHON} -c \'open("ran", "w")\''
        proxy = create_proxy(execute_config(origin.port, command, tmp_path))
        with pytest.raises(ExecuteError, match="already accepts connections before the command"):
            await proxy.start()
    assert not marker.exists()


@async_test(timeout=30)
async def test_an_exit_while_serving_is_logged_and_answered_502(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    port = unused_port()
    caplog.set_level(logging.WARNING, logger="phantom.execute")
    async with create_proxy(execute_config(port, http_server_command(port), tmp_path)) as proxy:
        launcher = proxy.launchers["app"]
        assert launcher.pid is not None
        os.kill(launcher.pid, signal.SIGTERM)  # the http.server this test started
        await exited(launcher)
        assert (await get(proxy.port, "/")).status == 502
    messages = [r.getMessage() for r in caplog.records if r.name == "phantom.execute"]
    assert messages == [
        "server.app: execute command was killed by SIGTERM while serving; "
        f"requests to it fail with 502 until it is back on {LOCALHOST}:{port}"
    ]


@async_test(timeout=30)
async def test_an_exit_code_while_serving_is_logged(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The backend serves a moment, then exits 5 on its own: the warning names the code."""
    port = unused_port()
    script = (
        "import socket, sys, time; s = socket.create_server(('127.0.0.1', int(sys.argv[1])));"
        " time.sleep(0.5); sys.exit(5)"
    )
    command = f"{PYTHON} -c {shlex.quote(script)} {port}"
    caplog.set_level(logging.WARNING, logger="phantom.execute")
    async with create_proxy(execute_config(port, command, tmp_path)) as proxy:
        launcher = proxy.launchers["app"]
        await exited(launcher)
    assert [r.getMessage() for r in caplog.records if r.name == "phantom.execute"] == [
        "server.app: execute command exited with code 5 while serving; "
        f"requests to it fail with 502 until it is back on {LOCALHOST}:{port}"
    ]


# -- phantom serve, for real -----------------------------------------------------------------


def wait_for_port(port: int, process: subprocess.Popen[str], within: float = 20.0) -> None:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise AssertionError(f"phantom exited early: {process.communicate()[1]}")
        try:
            with urllib.request.urlopen(f"http://{LOCALHOST}:{port}/", timeout=1):
                return
        except OSError:
            time.sleep(0.1)
    raise AssertionError(f"phantom did not listen on {port} within {within}s")


@contextlib.contextmanager
def phantom_serve(cwd: Path) -> Iterator[subprocess.Popen[str]]:
    """``phantom serve`` in ``cwd``, its stderr piped; killed on exit if still running."""
    process = subprocess.Popen(
        [sys.executable, "-m", "phantom", "serve", "--loop", "asyncio"],
        cwd=cwd,
        env=child_env(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        yield process
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()


def stop(process: subprocess.Popen[str]) -> str:
    """SIGTERM (a graceful stop); the rest of phantom's stderr once it has exited."""
    process.send_signal(signal.SIGTERM)
    return process.communicate(timeout=CHILD_TIMEOUT)[1]


def write_config(directory: Path, port: int, script: str) -> None:
    """phantom.toml with one server whose execute command is ``python -c script``."""
    (directory / "phantom.toml").write_text(
        f'[server.app]\nproxy_url = "http://{LOCALHOST}:{port}"\n'
        f"execute = {json.dumps(f'{PYTHON} -c {shlex.quote(script)}')}\n"
    )


def test_phantom_serve_runs_cd_env_and_the_backend_and_stops_them(tmp_path: Path) -> None:
    site = tmp_path / "site"
    site.mkdir()
    (tmp_path / "backend.py").write_text(BACKEND)
    (tmp_path / ".env").write_text("FROM_DOTENV=yes\nGREETING=overridden by the prefix\n")
    backend_port, phantom_port = unused_port(), unused_port()
    command = f"cd site && GREETING='hi there' {PYTHON} -u ../backend.py {backend_port}"
    (tmp_path / "phantom.toml").write_text(
        textwrap.dedent(
            f"""\
            dotenv = true
            listen = "{LOCALHOST}"
            http_port = {phantom_port}
            shutdown_timeout = 2
            [server.app]
            proxy_url = "http://{LOCALHOST}:{backend_port}"
            execute = {json.dumps(command)}
            """
        )
    )
    with phantom_serve(tmp_path) as process:
        wait_for_port(phantom_port, process)
        url = f"http://{LOCALHOST}:{phantom_port}/info.json"
        with urllib.request.urlopen(url, timeout=5) as response:
            info = json.loads(response.read())
        assert info["cwd"] == str(site)
        assert info["greeting"] == "hi there"
        assert info["from_dotenv"] == "yes"
        stderr = stop(process)
    assert process.returncode == 0, stderr
    assert "app | backend ready\n" in stderr
    assert '"GET /info.json HTTP/1.1" 200' in stderr
    assert is_gone(info["pid"])
    assert is_gone(info["grandchild"])


def test_phantom_serve_exits_with_the_error_and_the_tail(tmp_path: Path) -> None:
    script = "print('line one'); print('line two'); raise SystemExit(4)"
    port = unused_port()
    write_config(tmp_path, port, script)
    result = subprocess.run(
        [sys.executable, "-m", "phantom", "serve"],
        cwd=tmp_path,
        env=child_env(),
        capture_output=True,
        text=True,
        timeout=CHILD_TIMEOUT,
        check=False,
    )
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    error = result.stderr[result.stderr.index("phantom: server.app") :]
    assert error == (
        f"phantom: server.app: execute: exited with code 4 before {LOCALHOST}:{port} "
        "accepted connections; last output:\n  line one\n  line two\n"
    )


def test_phantom_serve_stops_while_waiting_for_the_backend(tmp_path: Path) -> None:
    """SIGTERM while the command has not opened its port yet: phantom ends it and exits 0."""
    script = "import os, time; print(os.getpid(), flush=True); time.sleep(60)"
    write_config(tmp_path, unused_port(), script)
    with phantom_serve(tmp_path) as process:
        assert process.stderr is not None
        while not (line := process.stderr.readline()).startswith("app | "):
            assert line, "phantom exited before the command printed its pid"
        pid = int(line.removeprefix("app | "))
        rest = stop(process)
    assert process.returncode == 0, rest
    assert is_gone(pid)
