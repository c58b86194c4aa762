"""`phantom invalidate` and `phantom snapshot` as real subprocesses calling a running proxy."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

from conftest import async_test, get, servers_config
from origin import Reply, TestOrigin, unused_port

from phantom import create_proxy

TOKEN = "cli-token"


async def phantom(*args: str, cwd: Path | None = None) -> tuple[int, str, str]:
    child = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "phantom",
        *args,
        cwd=cwd,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(child.communicate(), 20)
    assert child.returncode is not None
    return child.returncode, out.decode(), err.decode()


@async_test(timeout=40)
async def test_invalidate_and_snapshot_commands(tmp_path: Path) -> None:
    routes = {
        "/x": Reply(200, [("Cache-Control", "max-age=60")], b"x"),
        "/p": Reply(200, [], b"page"),
    }
    async with TestOrigin(routes) as origin:
        servers = {
            "web": {"proxy_url": origin.url},
            "ssg": {
                "proxy_url": origin.url,
                "bind_to": "/p",
                "strip_prefix": False,
                "proxy_mode": "pre_generate",
            },
        }
        config = servers_config(servers, control_port=0, control_auth=TOKEN)
        async with create_proxy(config) as proxy:
            url = f"http://127.0.0.1:{proxy.control_port}"
            await get(proxy.port, "/x")
            code, out, err = await phantom(
                "invalidate", "GET:/x", "--control", url, "--token", TOKEN
            )
            assert (code, out, err) == (0, "invalidated 1 entries\n", "")

            code, out, err = await phantom(
                "snapshot", "add", "/p", "--control", url, "--token", TOKEN
            )
            assert (code, out) == (0, "add /p: ok (4 bytes)\n")
            assert (await get(proxy.port, "/p")).body == b"page"

            # The config file tells where the control API is and the token.
            (tmp_path / "phantom.toml").write_text(
                f'control_port = {proxy.control_port}\ncontrol_auth = "{TOKEN}"\n'
                f'[server.a]\nproxy_url = "{origin.url}"\n'
            )
            code, out, err = await phantom("snapshot", "remove", "/p", "/q", cwd=tmp_path)
            assert code == 1
            assert out == "remove /p: ok\n"
            assert "remove /q: failed: " in err

            code, _, err = await phantom("invalidate", "*", "--control", url)
            assert (code, err) == (1, "phantom: /invalidate: 401 authorization required\n")
            code, _, err = await phantom("invalidate", "*", "--server", "nope", cwd=tmp_path)
            assert (code, err) == (1, "phantom: /invalidate: 404 no server named 'nope'\n")


@async_test()
async def test_a_clear_error_when_nothing_is_running(tmp_path: Path) -> None:
    url = f"http://127.0.0.1:{unused_port()}"
    code, out, err = await phantom("invalidate", "*", "--control", url)
    assert code == 1 and out == ""
    assert err.startswith(f"phantom: cannot reach phantom's control API at {url}: ")
    assert err.count("\n") == 1
    (tmp_path / "phantom.toml").write_text('[server.a]\nproxy_url = "http://127.0.0.1:1"\n')
    code, _, err = await phantom("snapshot", "add", "/", cwd=tmp_path)
    assert (code, err) == (
        1,
        "phantom: phantom.toml: control_port is not set, so the control API is off\n",
    )


@async_test(timeout=40)
async def test_the_commands_work_without_a_token() -> None:
    """Without control_auth the control API takes only calls a web page can't make; phantom's
    own client makes them (JSON, no Origin, the address as Host)."""
    routes = {"/x": Reply(200, [("Cache-Control", "max-age=60")], b"x")}
    async with TestOrigin(routes) as origin:
        config = servers_config({"web": {"proxy_url": origin.url}}, control_port=0)
        async with create_proxy(config) as proxy:
            for host in ("127.0.0.1", "localhost"):
                await get(proxy.port, "/x")
                url = f"http://{host}:{proxy.control_port}"
                code, out, err = await phantom("invalidate", "GET:/x", "--control", url)
                assert (code, out, err) == (0, "invalidated 1 entries\n", ""), host
