"""The control API's own rules over real sockets: health, auth, unknown endpoints, methods."""

from __future__ import annotations

import json
from typing import Any

from conftest import async_test, fetch, get, proxied, servers_config
from origin import Reply, TestOrigin

from phantom import create_proxy

TOKEN = "s3cret-token"


@async_test()
async def test_control_api_is_off_unless_control_port_is_set() -> None:
    async with proxied({"/": lambda req: Reply(200)}) as (_, proxy):
        assert proxy.control_port is None


@async_test()
async def test_healthz_answers_without_auth() -> None:
    async with proxied({}, control_port=0, control_auth=TOKEN) as (_, proxy):
        assert isinstance(proxy.control_port, int) and proxy.control_port != proxy.port
        response = await get(proxy.control_port, "/healthz")
        assert response.status == 200
        assert json.loads(response.body) == {"status": "ok"}


@async_test()
async def test_token_is_required_and_checked() -> None:
    async with proxied(
        {"/a": lambda req: Reply(200, [("Cache-Control", "max-age=60")], b"A")},
        control_port=0,
        control_auth=TOKEN,
    ) as (origin, proxy):
        await get(proxy.port, "/a")
        missing = await fetch(proxy.control_port, "POST", "/invalidate_all")
        assert missing.status == 401
        assert missing.get("www-authenticate") == 'Bearer realm="phantom"'
        wrong = await fetch(
            proxy.control_port, "POST", "/invalidate_all", [("Authorization", "Bearer nope")]
        )
        assert wrong.status == 403
        right = await fetch(
            proxy.control_port, "POST", "/invalidate_all", [("Authorization", f"Bearer {TOKEN}")]
        )
        assert right.status == 200
        assert json.loads(right.body) == {"invalidated": 1}
        await get(proxy.port, "/a")
        assert origin.requests["/a"] == 2  # the entry really went


@async_test()
async def test_unknown_endpoint_is_404_and_wrong_method_is_405() -> None:
    async with proxied({}, control_port=0) as (_, proxy):
        unknown = await fetch(proxy.control_port, "GET", "/nope")
        assert unknown.status == 404
        assert "error" in json.loads(unknown.body)
        wrong_method = await fetch(proxy.control_port, "GET", "/invalidate_all")
        assert wrong_method.status == 405
        assert wrong_method.get("allow") == "POST"


# -- cache endpoints ----------------------------------------------------------------------------

ENDPOINTS = [
    "/invalidate_all",
    "/invalidate",
    "/bulk_invalidate",
    "/add_snapshot",
    "/bulk_add_snapshot",
    "/refresh_snapshot",
    "/bulk_refresh_snapshot",
    "/remove_snapshot",
    "/bulk_remove_snapshot",
    "/refresh_all_snapshots",
]


def cached(body: bytes) -> Reply:
    return Reply(200, [("Cache-Control", "max-age=60")], body)


def local_program(port: int) -> list[tuple[str, str]]:
    """What a program on this machine sends with a control call (phantom's own commands, curl
    with -H 'Content-Type: application/json'): no web page can send all of it."""
    return [("Host", f"127.0.0.1:{port}"), ("Content-Type", "application/json")]


async def call(port: int, path: str, body: object = None, token: str | None = None) -> Any:
    headers = local_program(port)
    if token:
        headers.append(("Authorization", f"Bearer {token}"))
    data = body if isinstance(body, bytes) else b"" if body is None else json.dumps(body).encode()
    response = await fetch(port, "POST", path, headers, data)
    return response.status, json.loads(response.body)


@async_test()
async def test_every_endpoint_needs_the_token() -> None:
    async with proxied({}, control_port=0, control_auth=TOKEN) as (_, proxy):
        for path in ENDPOINTS:
            assert (await call(proxy.control_port, path))[0] == 401, path
            assert (await call(proxy.control_port, path, token="wrong"))[0] == 403, path
            status, _ = await call(proxy.control_port, path, token=TOKEN)
            assert status in (200, 400), path  # authorised: then judged on its body


@async_test()
async def test_invalidate_by_pattern_server_and_in_bulk() -> None:
    routes = {"/a/1": cached(b"1"), "/a/2": cached(b"2"), "/b": cached(b"b")}
    async with TestOrigin(routes) as origin:
        servers = {
            "one": {"proxy_url": origin.url},
            "two": {"proxy_url": origin.url, "hosts": ["two.test"]},
        }
        async with create_proxy(servers_config(servers, control_port=0)) as proxy:
            port = proxy.control_port

            async def fill() -> None:
                for path in routes:
                    await get(proxy.port, path)
                    await get(proxy.port, path, [("Host", "two.test")])

            await fill()
            assert len(proxy.cache) == 6
            assert await call(port, "/invalidate", {"pattern": "GET:/a/*", "server": "two"}) == (
                200,
                {"pattern": "GET:/a/*", "invalidated": 2},
            )
            assert await call(port, "/invalidate", {"pattern": "GET:/a/*"}) == (
                200,
                {"pattern": "GET:/a/*", "invalidated": 2},
            )
            status, bulk = await call(port, "/bulk_invalidate", {"patterns": ["GET:/b", "", "x"]})
            assert status == 200
            assert (bulk["requested"], bulk["succeeded"], bulk["failed"]) == (3, 2, 1)
            assert [r.get("invalidated") for r in bulk["results"]] == [2, None, 0]
            await fill()
            assert await call(port, "/invalidate_all", {"server": "one"}) == (
                200,
                {"invalidated": 3},
            )
            assert len(proxy.servers["two"].cache) == 3


@async_test()
async def test_bad_requests_are_400_and_unknown_servers_404() -> None:
    async with proxied({}, control_port=0) as (_, proxy):
        port = proxy.control_port
        status, answer = await call(port, "/invalidate", b"{nope")
        assert status == 400 and answer["error"].startswith("invalid JSON body")
        status, answer = await call(port, "/invalidate", {})
        assert status == 400 and answer["error"].startswith('missing field "pattern"')
        status, answer = await call(port, "/bulk_invalidate", {"patterns": "x"})
        assert status == 400 and "non-empty array" in answer["error"]
        status, answer = await call(port, "/invalidate", [1])
        assert status == 400 and answer["error"] == "the body must be a JSON object"
        status, answer = await call(port, "/invalidate", {"pattern": "*", "server": "nope"})
        assert (status, answer) == (404, {"error": "no server named 'nope'"})
        status, answer = await call(port, "/add_snapshot", {"path": "/"})
        assert status == 400 and "pre_generate" in answer["error"]


# -- without control_auth: calls a web page could make are refused ---------------------------------


@async_test()
async def test_without_a_token_a_web_page_cannot_change_state() -> None:
    """A cross-site form or text/plain POST, a fetch() that sends Origin, and a DNS-rebound page
    (Host: its own name) are refused before any handler runs; the cache stays."""
    async with proxied({"/a": cached(b"A")}, control_port=0) as (origin, proxy):
        port = proxy.control_port
        await get(proxy.port, "/a")
        good = dict(local_program(port))
        refused = [
            (403, {**good, "Host": "evil.example"}, "Host must be an IP address or localhost"),
            (403, {**good, "Host": f"evil.example:{port}"}, "(got 'evil.example:"),
            (403, {**good, "Origin": "https://evil.example"}, "calls from web pages"),
            (403, {**good, "Origin": "null"}, "calls from web pages"),
            (415, {**good, "Content-Type": "text/plain"}, "Content-Type: application/json"),
            (415, {**good, "Content-Type": "application/x-www-form-urlencoded"}, "application/"),
            (415, {"Host": good["Host"]}, "Content-Type: application/json"),
        ]
        for path in ("/invalidate_all", "/reload"):
            for status, headers, error in refused:
                response = await fetch(port, "POST", path, list(headers.items()), b"{}")
                assert response.status == status, (path, headers)
                assert error in json.loads(response.body)["error"], (path, headers)
        json_only = [("Content-Type", "application/json")]
        no_host = await fetch(port, "POST", "/invalidate_all", json_only, host=None,
                              version="HTTP/1.0")
        assert no_host.status == 403
        assert len(proxy.cache) == 1  # nothing ran
        for host in (f"localhost:{port}", "[::1]", "LOCALHOST", f"127.0.0.1:{port}"):
            headers = [("Host", host), ("Content-Type", "application/json; charset=utf-8")]
            response = await fetch(port, "POST", "/invalidate_all", headers)
            assert response.status == 200, host
        assert len(proxy.cache) == 0
        # Reading is not changing state: /metrics and /healthz answer as before.
        assert (await get(port, "/metrics")).status == 200
        assert (await get(port, "/healthz")).status == 200


@async_test()
async def test_with_a_token_the_token_is_what_counts() -> None:
    async with proxied({}, control_port=0, control_auth=TOKEN) as (_, proxy):
        headers = [
            ("Host", "phantom.internal"),
            ("Origin", "https://ops.example"),
            ("Content-Type", "text/plain"),
            ("Authorization", f"Bearer {TOKEN}"),
        ]
        response = await fetch(proxy.control_port, "POST", "/invalidate_all", headers)
        assert response.status == 200


@async_test()
async def test_snapshot_paths_with_dot_dot_segments_are_400() -> None:
    """A ".." segment (plain or percent-encoded) would climb out of bind_to on the backend."""
    async with TestOrigin({"/p/a": Reply(200, [], b"a")}) as origin:
        servers = {
            "ssg": {
                "proxy_url": origin.url,
                "bind_to": "/p",
                "strip_prefix": False,
                "proxy_mode": "pre_generate",
            }
        }
        async with create_proxy(servers_config(servers, control_port=0)) as proxy:
            port = proxy.control_port
            for path in ("/p/../admin", "/p/%2e%2E/admin", "/p/..", "/p/x/../../admin?q"):
                status, answer = await call(port, "/add_snapshot", {"path": path})
                assert status == 400, path
                assert "a path with a .. segment is not allowed" in answer["error"], path
            status, answer = await call(port, "/bulk_add_snapshot", {"paths": ["/p/a", "/p/.."]})
            assert status == 200
            assert [(r["ok"], r.get("status")) for r in answer["results"]] == [
                (True, None),
                (False, 400),
            ]
            # Dots inside a segment or in the query are no segment of their own.
            status, answer = await call(port, "/add_snapshot", {"path": "/p/a..b?x=.."})
            assert ".. segment" not in answer.get("error", "")
            assert set(origin.requests) == {"/p/a", "/p/a..b"}
