"""Metrics and access log over real sockets (issue 7): traffic through a running proxy shows up
in ``GET /metrics`` (parsed with prometheus-client's parser) and as access log lines."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path

import pytest
from conftest import async_test, fetch, get, proxied, running_proxy
from origin import Reply, WebSocketBackend, unused_port
from prometheus_client.parser import text_string_to_metric_families
from websockets.asyncio.client import connect

from phantom import ConfigError, create_proxy
from phantom.access_log import ROTATION_CHECK_SECONDS, AccessLog
from phantom.exchange import Exchange

TOKEN = "s3cret"
AUTH = [("Authorization", f"Bearer {TOKEN}")]
ROUTES = {
    "/page": Reply(
        200, [("Content-Type", "text/plain"), ("Cache-Control", "max-age=60")], b"page body"
    ),
    "/form": Reply(201, [("Content-Type", "text/plain")], b"created"),
}

Samples = dict[str, dict[tuple[tuple[str, str], ...], float]]


async def scrape(control_port: int) -> Samples:
    response = await fetch(control_port, "GET", "/metrics", AUTH)
    assert response.status == 200, response.body
    assert response.get("content-type") == "text/plain; version=0.0.4; charset=utf-8"
    out: Samples = {}
    for family in text_string_to_metric_families(response.body.decode()):
        for sample in family.samples:
            out.setdefault(sample.name, {})[tuple(sorted(sample.labels.items()))] = sample.value
    return out


def request_count(samples: Samples, method: str, status: int) -> float:
    labels = (
        ("method", method),
        ("server", "app"),
        ("status", str(status)),
        ("status_class", f"{status // 100}xx"),
    )
    return samples["phantom_requests_total"].get(labels, 0)


@async_test()
async def test_metrics_follow_traffic(tmp_path: Path) -> None:
    log_path = tmp_path / "access.log"
    async with proxied(ROUTES, control_port=0, control_auth=TOKEN, access_log=str(log_path)) as (
        _,
        proxy,
    ):
        assert (await get(proxy.port, "/page")).status == 200  # miss, stored
        assert (await get(proxy.port, "/page")).status == 200  # hit
        assert (await fetch(proxy.port, "POST", "/form", body=b"x=1")).status == 201
        unauthorised = await fetch(proxy.control_port, "GET", "/metrics")
        assert unauthorised.status == 401
        samples = await scrape(proxy.control_port)

    assert request_count(samples, "GET", 200) == 2
    assert request_count(samples, "POST", 201) == 1
    lookups = samples["phantom_cache_lookups_total"]
    assert lookups[(("result", "hit"), ("server", "app"))] == 1
    assert lookups[(("result", "miss"), ("server", "app"))] == 1
    assert samples["phantom_cache_entries"] == {(("server", "app"),): 1}
    assert samples["phantom_cache_bytes"][(("server", "app"),)] > len(b"page body")
    assert samples["phantom_upstream_seconds_count"] == {(("server", "app"),): 2}
    assert samples["phantom_connections_open"] == {(): 0}
    assert samples["process_open_fds"][()] > 0

    lines = log_path.read_text().splitlines()
    assert len(lines) == 3
    assert '"GET /page HTTP/1.1" 200 9 ' in lines[0] and " cache=miss " in lines[0]
    assert " cache=hit " in lines[1] and " upstream_time=- " in lines[1]
    assert '"POST /form HTTP/1.1" 201 7 ' in lines[2] and " cache=bypass " in lines[2]
    assert all(
        f" backend=http://127.0.0.1:{proxy.config.servers[0].proxy_url.port} " in line
        for line in lines
    )


@async_test()
async def test_upstream_errors_by_kind_and_json_log(tmp_path: Path) -> None:
    log_path = tmp_path / "access.json"
    config = {
        "listen": "127.0.0.1",
        "http_port": 0,
        "control_port": 0,
        "access_log": str(log_path),
        "access_log_format": "json",
        "server": {"app": {"proxy_url": f"http://127.0.0.1:{unused_port()}"}},
    }
    async with create_proxy(config) as proxy:
        response = await get(proxy.port, "/nothing-listens")
        assert response.status == 502
        samples = await scrape(proxy.control_port)
    assert samples["phantom_upstream_errors_total"] == {(("kind", "refused"),): 1}
    assert request_count(samples, "GET", 502) == 1
    record = json.loads(log_path.read_text())
    assert record["status"] == 502 and record["error"] == "refused"
    assert record["cache"] == "-" and record["upstream_time"] is None


@async_test()
async def test_tunnel_metrics_and_log_line_at_close(tmp_path: Path) -> None:
    log_path = tmp_path / "access.log"
    async with (
        WebSocketBackend() as backend,
        running_proxy(
            backend.port, control_port=0, control_auth=TOKEN, access_log=str(log_path)
        ) as proxy,
    ):
        async with connect(f"ws://127.0.0.1:{proxy.port}/ws", compression=None) as ws:
            await ws.send("x" * 1000)
            assert await asyncio.wait_for(ws.recv(), 5) == "x" * 1000
            during = await scrape(proxy.control_port)
            assert log_path.read_text() == ""  # logged when the tunnel closes
        await asyncio.wait_for(proxy._ctx.wait_idle(), 5)
        after = await scrape(proxy.control_port)

    assert during["phantom_tunnels_open"] == {(): 1}
    assert during["phantom_tunnels_total"] == {(): 1}
    moved = during["phantom_tunnel_bytes_total"]
    assert moved[(("direction", "client_to_backend"),)] >= 1000
    assert moved[(("direction", "backend_to_client"),)] >= 1000
    assert after["phantom_tunnels_open"] == {(): 0}
    assert after["phantom_tunnels_closed_total"] == {(): 1}
    final = after["phantom_tunnel_bytes_total"]
    assert (
        final[(("direction", "client_to_backend"),)] >= moved[(("direction", "client_to_backend"),)]
    )
    assert request_count(after, "GET", 101) == 1

    (line,) = log_path.read_text().splitlines()
    assert '"GET /ws HTTP/1.1" 101 ' in line
    fields = dict(part.split("=", 1) for part in line.split() if "=" in part and part[0].isalpha())
    assert int(fields["tunnel_up"]) >= 1000 and int(fields["tunnel_down"]) >= 1000


def test_unwritable_access_log_is_a_config_error(tmp_path: Path) -> None:
    target = tmp_path / "missing-dir" / "access.log"
    config = {"access_log": str(target), "server": {"app": {"proxy_url": "http://127.0.0.1:1"}}}
    with pytest.raises(ConfigError) as info:
        create_proxy(config)
    assert str(info.value) == f"<dict>: access_log: {target}: No such file or directory"


def test_access_log_file_is_reopened_after_rotation(tmp_path: Path) -> None:
    path = tmp_path / "access.log"
    log = AccessLog("combined", str(path))
    try:
        log.write(Exchange("127.0.0.1", b"GET", b"/before"))  # no event loop: written at once
        path.rename(tmp_path / "access.log.1")  # what logrotate does
        time.sleep(ROTATION_CHECK_SECONDS + 0.1)
        log.write(Exchange("127.0.0.1", b"GET", b"/after"))
    finally:
        log.close()
    assert '"GET /before HTTP/1.1"' in (tmp_path / "access.log.1").read_text()
    assert '"GET /after HTTP/1.1"' in path.read_text()
