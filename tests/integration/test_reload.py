"""Shutdown and reload of a real `phantom serve` process (SIGTERM, SIGHUP, `phantom reload`)
and of the library proxy (`POST /reload`)."""

from __future__ import annotations

import asyncio
import json
import re
import signal
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from conftest import RawClient, async_test, fetch
from origin import LOCALHOST, Reply, TestOrigin
from test_cli import child_env

from phantom import create_proxy

NO_STORE = ("Cache-Control", "no-store")


def write_config(path: Path, backend_port: int, **root: object) -> None:
    lines = [f'listen = "{LOCALHOST}"', "http_port = 0", "shutdown_timeout = 5"]
    lines += [f"{key} = {json.dumps(value)}" for key, value in root.items()]
    lines += ["[server.app]", f'proxy_url = "http://{LOCALHOST}:{backend_port}"']
    path.write_text("\n".join(lines) + "\n")


class Child:
    def __init__(self, process: asyncio.subprocess.Process) -> None:
        self.process = process
        self.log: list[str] = []
        self.port = 0

    async def wait_log(self, pattern: str, timeout: float = 10.0) -> re.Match[str]:
        assert self.process.stderr is not None
        async with asyncio.timeout(timeout):
            while True:
                line = (await self.process.stderr.readline()).decode()
                assert line, f"phantom exited; log: {self.log}"
                self.log.append(line)
                match = re.search(pattern, line)
                if match:
                    return match


@asynccontextmanager
async def phantom_serve(config: Path) -> AsyncIterator[Child]:
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "phantom", "serve", "--config", str(config),
        cwd=config.parent, env=child_env(), stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    child = Child(process)
    try:
        child.port = int((await child.wait_log(r"listening on http://[^:]+:(\d+)"))[1])
        yield child
    finally:
        if process.returncode is None:
            process.kill()  # only our own child, by its pid
            await process.wait()


async def phantom_cli(*args: str, cwd: Path) -> tuple[int, str]:
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "phantom", *args, cwd=cwd, env=child_env(),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
    )  # fmt: skip
    out, _ = await process.communicate()
    assert process.returncode is not None
    return process.returncode, out.decode()


@async_test(30)
async def test_sigterm_lets_the_in_flight_request_finish_and_exits_0(tmp_path: Path) -> None:
    routes = {"/slow": Reply(200, [NO_STORE], b"finished", delay=1.0)}
    async with TestOrigin(routes) as origin:
        write_config(tmp_path / "phantom.toml", origin.port)
        async with phantom_serve(tmp_path / "phantom.toml") as child:
            client = await RawClient.connect(child.port)
            await client.send(b"GET /slow HTTP/1.1\r\nHost: a\r\n\r\n")
            while not origin.requests["/slow"]:
                await asyncio.sleep(0.02)
            child.process.send_signal(signal.SIGTERM)
            response = await client.read_response()
            assert (response.status, response.body) == (200, b"finished")
            assert response.get("connection") == "close"
            await client.close()
            assert await asyncio.wait_for(child.process.wait(), 10) == 0


@async_test(30)
async def test_sighup_via_phantom_reload_switches_new_connections_only(tmp_path: Path) -> None:
    config = tmp_path / "phantom.toml"
    pid_file = tmp_path / "phantom.pid"
    old_routes = {"/who": Reply(200, [NO_STORE], b"old")}
    new_routes = {"/who": Reply(200, [NO_STORE], b"new")}
    async with TestOrigin(old_routes) as old, TestOrigin(new_routes) as new:
        write_config(config, old.port, pid_file=str(pid_file))
        async with phantom_serve(config) as child:
            assert pid_file.read_text().strip() == str(child.process.pid)
            established = await RawClient.connect(child.port)
            assert (await established.request("GET", "/who")).body == b"old"

            write_config(config, new.port, pid_file=str(pid_file))
            code, out = await phantom_cli("reload", "--config", str(config), cwd=tmp_path)
            assert code == 0, out
            await child.wait_log("configuration reloaded")
            assert (await fetch(child.port, "GET", "/who")).body == b"new"
            # the connection opened before the reload keeps its settings
            assert (await established.request("GET", "/who")).body == b"old"
            await established.close()

            # an invalid config is logged and the running one stays
            config.write_text("http_port = 'x'\n")
            code, out = await phantom_cli("reload", "--pid", str(child.process.pid), cwd=tmp_path)
            assert code == 0, out
            await child.wait_log("reload failed, keeping the running configuration")
            assert (await fetch(child.port, "GET", "/who")).body == b"new"

            child.process.send_signal(signal.SIGTERM)
            assert await asyncio.wait_for(child.process.wait(), 10) == 0
        assert not pid_file.exists()


@async_test()
async def test_phantom_reload_without_pid_file_is_a_one_line_error(tmp_path: Path) -> None:
    write_config(tmp_path / "phantom.toml", 9)
    code, out = await phantom_cli("reload", cwd=tmp_path)
    assert code == 2
    assert out == "phantom: phantom.toml: pid_file: not set; set it, or pass --pid\n"


@async_test()
async def test_control_post_reload(tmp_path: Path) -> None:
    config = tmp_path / "phantom.toml"
    one_routes = {"/who": Reply(200, [NO_STORE], b"one")}
    two_routes = {"/who": Reply(200, [NO_STORE], b"two")}
    async with TestOrigin(one_routes) as one, TestOrigin(two_routes) as two:
        write_config(config, one.port, control_port=0, max_body_bytes=5)
        async with create_proxy(config) as proxy:
            assert proxy.control_port is not None
            json_call = [("Host", "127.0.0.1"), ("Content-Type", "application/json")]
            write_config(config, two.port, control_port=0, max_body_bytes=5)
            response = await fetch(proxy.control_port, "POST", "/reload", json_call)
            assert response.status == 200, response.body
            assert (await fetch(proxy.port, "GET", "/who")).body == b"two"

            config.write_text("nonsense = 1\n")
            response = await fetch(proxy.control_port, "POST", "/reload", json_call)
            assert response.status == 400
            assert "nonsense: unknown key" in json.loads(response.body)["error"]
            assert (await fetch(proxy.port, "GET", "/who")).body == b"two"
