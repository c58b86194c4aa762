"""``workers = N`` with the control API: the supervisor serves ``control_port`` and fans every
call out to the workers (phantom.fanout); ``execute`` runs once, in the supervisor."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
from pathlib import Path
from typing import Any

from conftest import async_test, fetch, get
from origin import LOCALHOST, Reply, TestOrigin, unused_port
from test_serve_process import children, linux_only, serve, wait_for

PAGE = Reply(200, [("Cache-Control", "max-age=600")], b"page")
ROUNDS = 40  # new connections per round: SO_REUSEPORT spreads them over the workers


async def control(port: int, method: str, path: str, body: Any = None) -> tuple[int, Any]:
    """A control call as phantom's own commands make it; (status, decoded body)."""
    response = await fetch(
        port, method, path, [("Host", "127.0.0.1"), ("Content-Type", "application/json")],
        b"" if body is None else json.dumps(body).encode(),
    )
    text = response.body.decode()
    return response.status, json.loads(text) if path != "/metrics" else text


def samples(text: str, name: str) -> dict[str, float]:
    """The samples of metric ``name``: labels text -> value."""
    found = {}
    for line in text.splitlines():
        series, _, value = line.rpartition(" ")
        if series == name or series.startswith(name + "{"):
            found[series[len(name):]] = float(value)
    return found


def write_config(
    tmp_path: Path, port: int, control_port: int, backend: int, extra: str = ""
) -> Path:
    config = tmp_path / "phantom.toml"
    config.write_text(
        f"http_port = {port}\ncontrol_port = {control_port}\nworkers = 4\n{extra}\n"
        f'[server.app]\nproxy_url = "http://{LOCALHOST}:{backend}"\n'
    )
    return config


async def until(predicate: Any, what: str) -> None:
    await asyncio.to_thread(wait_for, predicate, what)


async def serving(log: Path, listening: int) -> None:
    """Until ``listening`` workers in all have said they listen (each binds its control
    socket before its listener)."""
    await until(
        lambda: log.read_text().count(" INFO phantom: listening on ") >= listening,
        f"{listening} workers listening",
    )


async def spread(port: int) -> None:
    """ROUNDS requests for /page, each on a new connection."""
    for _ in range(ROUNDS):
        assert (await get(port, "/page")).status == 200


@linux_only
@async_test(timeout=40)
async def test_invalidate_all_reaches_every_worker_and_metrics_are_summed(tmp_path: Path) -> None:
    async with TestOrigin({"/page": PAGE}) as origin:
        port, control_port = unused_port(), unused_port()
        with serve(write_config(tmp_path, port, control_port, origin.port)) as proc:
            await serving(tmp_path / "phantom.log", 4)
            await spread(port)
            first = origin.requests["/page"]  # one per worker the connections reached
            assert first >= 2
            status, text = await control(control_port, "GET", "/metrics")
            assert status == 200
            assert "worker=" not in text
            requests = samples(text, "phantom_requests_total")
            assert sum(requests.values()) == ROUNDS  # one series, the four workers' sum
            assert len(requests) == 1
            lookups = samples(text, "phantom_cache_lookups_total")
            assert lookups['{server="app",result="miss"}'] == first
            assert lookups['{server="app",result="hit"}'] == ROUNDS - first
            buckets = samples(text, "phantom_upstream_seconds_bucket")
            assert buckets['{server="app",le="+Inf"}'] == first
            assert samples(text, "phantom_cache_entries") == {'{server="app"}': first}

            status, body = await control(control_port, "POST", "/invalidate_all", {})
            assert (status, body) == (200, {"invalidated": first})
            await spread(port)
            assert origin.requests["/page"] > first  # the workers fetch it again
            status, body = await control(
                control_port, "POST", "/invalidate", {"pattern": "GET:/page"}
            )
            assert status == 200 and body["invalidated"] == origin.requests["/page"] - first
            proc.send_signal(signal.SIGTERM)
            assert await asyncio.to_thread(proc.wait, 10) == 0
    log = tmp_path.joinpath("phantom.log").read_text()
    assert "Traceback" not in log


@linux_only
@async_test(timeout=40)
async def test_a_replaced_worker_rejoins_and_per_worker_metrics_label_them(
    tmp_path: Path,
) -> None:
    async with TestOrigin({"/page": PAGE}) as origin:
        port, control_port = unused_port(), unused_port()
        config = write_config(
            tmp_path, port, control_port, origin.port, "metrics_per_worker = true"
        )
        with serve(config) as proc:
            await serving(tmp_path / "phantom.log", 4)
            first = children(proc.pid)
            os.kill(min(first), signal.SIGKILL)
            await until(lambda: len(children(proc.pid) - first) == 1, "a replacement worker")
            await serving(tmp_path / "phantom.log", 5)
            assert (await control(control_port, "GET", "/healthz"))[1]["workers"] == 4
            await spread(port)
            status, text = await control(control_port, "GET", "/metrics")
            assert status == 200
            requests = samples(text, "phantom_requests_total")
            workers = {series.rpartition("worker=")[2] for series in requests}
            assert workers <= {'"0"}', '"1"}', '"2"}', '"3"}'}
            assert sum(requests.values()) == ROUNDS
            assert text.count("# TYPE phantom_requests_total") == 1
            status, body = await control(control_port, "POST", "/invalidate_all", {})
            assert (status, body) == (200, {"invalidated": origin.requests["/page"]})
            # The supervisor checks what a single process checks before anything is forwarded.
            status, body = await control(control_port, "POST", "/invalidate", {})
            assert status == 400 and "pattern" in body["error"]
            assert (await control(control_port, "POST", "/nowhere", {}))[0] == 404
            status, body = await control(control_port, "POST", "/reload", {})
            assert (status, body) == (200, {"reloaded": str(config)})
            proc.send_signal(signal.SIGHUP)
            log = tmp_path / "phantom.log"
            await until(
                lambda: log.read_text().count("configuration reloaded") == 8, "SIGHUP reloads"
            )


# An execute command: records that it started, then serves a page.
BACKEND = """
import http.server, os, sys
with open(sys.argv[2], "a") as f:
    f.write(f"{os.getpid()} {os.getppid()}\\n")
class Page(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        self.send_response(200)
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"ok")
    def log_message(self, *args):
        pass
http.server.HTTPServer(("127.0.0.1", int(sys.argv[1])), Page).serve_forever()
"""


@linux_only
@async_test(timeout=40)
async def test_execute_runs_once_in_the_supervisor(tmp_path: Path) -> None:
    backend, port, control_port = unused_port(), unused_port(), unused_port()
    tmp_path.joinpath("backend.py").write_text(BACKEND)
    starts = tmp_path / "starts"
    config = write_config(tmp_path, port, control_port, backend)
    config.write_text(
        config.read_text() + f'execute = "{sys.executable} backend.py {backend} {starts}"\n'
    )
    with serve(config) as proc:
        await serving(tmp_path / "phantom.log", 4)
        assert (await get(port, "/")).body == b"ok"
        lines = starts.read_text().splitlines()
        assert len(lines) == 1
        pid, parent = map(int, lines[0].split())
        assert parent == proc.pid
        proc.send_signal(signal.SIGTERM)
        assert await asyncio.to_thread(proc.wait, 20) == 0
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return
    os.kill(pid, signal.SIGKILL)
    raise AssertionError("the execute command was left running")


@linux_only
@async_test(timeout=40)
async def test_a_worker_started_after_a_reload_serves_the_reloaded_configuration(
    tmp_path: Path,
) -> None:
    fresh = Reply(200, [("Cache-Control", "no-store")], b"x")
    async with TestOrigin({"/nc": fresh}) as old, TestOrigin({"/nc": fresh}) as new:
        port, control_port = unused_port(), unused_port()
        config = write_config(tmp_path, port, control_port, old.port)
        log = tmp_path / "phantom.log"
        with serve(config) as proc:
            await serving(log, 4)
            config.write_text(config.read_text().replace(str(old.port), str(new.port)))
            proc.send_signal(signal.SIGHUP)
            await until(lambda: log.read_text().count("configuration reloaded") == 4, "reloads")
            first = children(proc.pid)
            os.kill(min(first), signal.SIGKILL)
            await until(lambda: len(children(proc.pid) - first) == 1, "a replacement worker")
            await serving(log, 5)
            for _ in range(ROUNDS):
                assert (await get(port, "/nc")).status == 200
            assert (old.requests["/nc"], new.requests["/nc"]) == (0, ROUNDS)
