"""``phantom relay`` and ``phantom expose`` as real processes: the agent killed (no goodbye) gives
"agent offline" 502s within a second, a new agent restores service without a relay restart; a
refused agent exits with the reason; the relay's memory per idle public tunnel."""

from __future__ import annotations

import asyncio
import contextlib
import re
import shlex
import signal
import sys
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
from conftest import RawClient, async_test
from origin import LOCALHOST, Reply, TestOrigin, UpgradeBackend, echo, unused_port
from relay_helpers import ALICE, DOMAIN, TOKEN
from test_cli import REPO, assert_one_line_error, child_env, phantom

IDLE_TUNNELS = 200


def relay_config(tmp_path: Path, port: int) -> Path:
    path = tmp_path / "relay.toml"
    path.write_text(
        # Quiet: the processes' stderr is a pipe the tests read only at the end.
        f'listen = "{LOCALHOST}"\nhttp_port = {port}\nmax_connections = 0\n'
        'log_level = "warning"\naccess_log = "off"\n'
        "max_tunnels = 0\nmax_tunnels_per_client = 0\nmax_connections_per_client = 0\n"
        f'[relay]\nrelay_domain = "{DOMAIN}"\nmax_connections = 0\n'
        f'[relay.tokens]\n"$env:ALICE_TOKEN" = ["alice-*"]\n'
    )
    return path


@asynccontextmanager
async def process(
    *args: str, token: str = TOKEN, cwd: Path = REPO
) -> AsyncIterator[asyncio.subprocess.Process]:
    env = {**child_env(), "ALICE_TOKEN": TOKEN, "PHANTOM_RELAY_TOKEN": token}
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "phantom", *args, cwd=cwd, env=env,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    try:
        yield proc
    finally:
        if proc.returncode is None:
            proc.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(proc.wait(), 10)
            except TimeoutError:
                proc.kill()
                await proc.wait()


async def relay_answers(port: int) -> None:
    async with asyncio.timeout(10):
        while True:
            with contextlib.suppress(OSError):
                _, writer = await asyncio.open_connection(LOCALHOST, port)
                writer.close()
                return
            await asyncio.sleep(0.05)


def expose(
    relay_port: int, app_port: int, token: str = TOKEN
) -> contextlib.AbstractAsyncContextManager[asyncio.subprocess.Process]:
    relay = f"http://{LOCALHOST}:{relay_port}"
    return process(
        "expose", str(app_port), "--relay", relay, "--name", "alice-demo",
        "--log-level", "warning", token=token,
    )  # fmt: skip


async def public_status(port: int) -> tuple[int, bytes]:
    async with await RawClient.connect(port) as client:
        response = await client.request("GET", "/echo", host=ALICE)
    return response.status, response.body


@async_test(timeout=40)
async def test_a_killed_agent_is_offline_at_once_and_a_new_one_restores_service(
    tmp_path: Path,
) -> None:
    port = unused_port()
    async with TestOrigin({"/echo": echo}) as app:
        async with process("relay", "--config", str(relay_config(tmp_path, port))) as relay:
            await relay_answers(port)
            async with expose(port, app.port) as agent:
                assert agent.stdout is not None
                line = await asyncio.wait_for(agent.stdout.readline(), 10)
                assert (
                    line.decode().strip()
                    == f"http://{ALICE}:{port} -> http://{LOCALHOST}:{app.port}"
                )
                assert (await public_status(port))[0] == 200
                agent.kill()
                killed = time.monotonic()
                await agent.wait()
                while (status := await public_status(port))[0] == 200:
                    await asyncio.sleep(0.01)
                assert status[0] == 502 and b"agent offline" in status[1]
                assert time.monotonic() - killed < 1.0
            async with expose(port, app.port) as again:
                assert again.stdout is not None
                await asyncio.wait_for(again.stdout.readline(), 10)
                assert (await public_status(port))[0] == 200
            assert relay.returncode is None


@async_test(timeout=30)
async def test_a_refused_agent_exits_with_the_reason(tmp_path: Path) -> None:
    port = unused_port()
    async with process("relay", "--config", str(relay_config(tmp_path, port))) as relay:
        await relay_answers(port)
        async with expose(port, unused_port(), token="wrong-token-0123456789") as agent:
            _, err = await asyncio.wait_for(agent.communicate(), 10)
            assert agent.returncode == 1
            assert err.decode().strip().endswith("phantom: unknown token (401)")
        relay.send_signal(signal.SIGTERM)
        _, log = await asyncio.wait_for(relay.communicate(), 10)
        assert relay.returncode == 0
        assert "refused for name 'alice-demo': unknown token" in log.decode()


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
@async_test(timeout=60)
async def test_the_relay_s_memory_per_idle_public_tunnel(tmp_path: Path) -> None:
    port = unused_port()
    async with UpgradeBackend() as app:
        async with process("relay", "--config", str(relay_config(tmp_path, port))) as relay:
            await relay_answers(port)
            async with expose(port, app.port) as agent:
                assert agent.stdout is not None
                await asyncio.wait_for(agent.stdout.readline(), 10)

                async def tunnel() -> RawClient:
                    client = await RawClient.connect(port)
                    await client.send(
                        f"GET / HTTP/1.1\r\nHost: {ALICE}\r\nConnection: Upgrade\r\n"
                        "Upgrade: x\r\n\r\n".encode()
                    )
                    assert (await client.read_response()).status == 101
                    return client

                for warmup in [await tunnel() for _ in range(20)]:
                    await warmup.close()
                await asyncio.sleep(0.5)
                before = rss_kib(relay.pid)
                clients = [await tunnel() for _ in range(IDLE_TUNNELS)]
                await asyncio.sleep(0.5)
                per_tunnel = (rss_kib(relay.pid) - before) / IDLE_TUNNELS
                for client in clients:
                    await client.close()
    print(f"relay RSS per idle public tunnel: {per_tunnel:.1f} KiB")
    # Two sockets, a Tunnel and its two directions: a few KiB, not a buffer per tunnel.
    assert per_tunnel < 64


@pytest.mark.parametrize(
    ("args", "line"),
    [
        (
            ("relay", "--config", "plain.toml"),
            "plain.toml: relay: missing: `phantom relay` needs a [relay] table",
        ),
        (
            ("relay", "--config", "workers.toml"),
            "workers.toml: workers: phantom relay runs in one process",
        ),
        (
            ("serve", "--config", "only-relay.toml"),
            "only-relay.toml: server: at least one [server.NAME] table is required "
            "(this file configures a relay: run `phantom relay`)",
        ),
        (
            ("expose", "8000", "--relay", "ftp://r.example", "--name", "a", "--token", TOKEN),
            "<command line>: --relay: expected http[s]://host[:port][/path], got 'ftp://r.example'",
        ),
        (
            ("expose", "8000", "--relay", "https://r.example/x", "--name", "a", "--token", TOKEN),
            "<command line>: --relay: expected no path, just scheme://host[:port]",
        ),
        (
            (
                "expose",
                "8000",
                "--relay",
                "https://r.example",
                "--name",
                "a",
                "--token",
                TOKEN,
                "--relay-ca",
                "missing.pem",
            ),
            "<command line>: --relay-ca: missing.pem: [Errno 2] No such file or directory",
        ),
    ],
)
def test_usage_errors_are_one_line(args: tuple[str, ...], line: str, tmp_path: Path) -> None:
    (tmp_path / "plain.toml").write_text('[server.app]\nproxy_url = "http://127.0.0.1:1"\n')
    relay = f'[relay]\nrelay_domain = "r.example"\n[relay.tokens]\n"{TOKEN}" = ["a"]\n'
    (tmp_path / "only-relay.toml").write_text(relay)
    (tmp_path / "workers.toml").write_text("workers = 2\n" + relay)
    result = phantom(*args, cwd=tmp_path)
    assert result.returncode == 2
    assert_one_line_error(result, line)


@async_test(timeout=40)
async def test_the_quick_start_of_docs_relay_md_works(tmp_path: Path) -> None:
    text = (REPO / "docs" / "relay.md").read_text()
    toml = re.findall(r"```toml\n(.*?)```", text, re.S)[0]
    commands = re.findall(r"```sh\n(.*?)```", text, re.S)[0].strip().splitlines()
    assert len(commands) == 3
    port = unused_port()
    (tmp_path / "relay.toml").write_text(toml.replace("8080", str(port)))
    relay_args = shlex.split(commands[0].rstrip(" &"))
    assert relay_args == ["phantom", "relay", "--config", "relay.toml"]
    async with TestOrigin({"/": Reply(200, [], b"hello from the app")}) as app:
        expose_args = shlex.split(
            commands[1].rstrip(" &").replace("8080", str(port)).replace("8000", str(app.port))
        )
        assert expose_args[:2] == ["phantom", "expose"] and expose_args[-2] == "--token"
        expose_args[-1] = TOKEN  # "$ALICE_TOKEN", expanded by the shell
        async with process(*relay_args[1:], cwd=tmp_path):
            await relay_answers(port)
            async with process(*expose_args[1:], cwd=tmp_path) as agent:
                assert agent.stdout is not None
                line = await asyncio.wait_for(agent.stdout.readline(), 10)
                url = f"http://alice-demo.localhost:{port}"
                assert line.decode().startswith(f"{url} -> ")
                assert commands[2] == "curl http://alice-demo.localhost:8080/"
                async with await RawClient.connect(port) as client:
                    response = await client.request("GET", "/", host=f"alice-demo.localhost:{port}")
                assert response.body == b"hello from the app"
