"""Pre-generated snapshots: fetched before the listener opens, served without the backend."""

from __future__ import annotations

import json
from typing import Any

import pytest
from conftest import RawClient, async_test, build_request, fetch, get, servers_config
from origin import Reply, TestOrigin
from test_control import local_program
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidStatus

from phantom import create_proxy
from phantom.errors import NotFound, SnapshotError, UsageError


def versioned(state: dict[str, int]) -> Any:
    """A page whose body changes with state["v"]; no-store, so only snapshots keep it."""

    def handler(request: Any) -> Reply:
        body = b"%s v%d" % (request.target, state["v"])
        fields = [("Cache-Control", "no-store"), ("Set-Cookie", "s=1"), ("Surrogate-Control", "x")]
        return Reply(200, fields, body)

    return handler


def ssg(origin: TestOrigin, **server: Any) -> dict[str, Any]:
    table = {
        "proxy_url": f"{origin.url}/site",
        "proxy_mode": "pre_generate",
        "pre_generate_paths": ["/", "/a", "/a?lang=en"],
        **server,
    }
    return servers_config({"ssg": table}, control_port=0)


async def control(proxy: Any, path: str, body: dict[str, Any] | None = None) -> Any:
    data = b"" if body is None else json.dumps(body).encode()
    return await fetch(proxy.control_port, "POST", path, local_program(proxy.control_port), data)


@async_test()
async def test_snapshots_are_fetched_at_startup_and_served_without_the_backend() -> None:
    state = {"v": 1}
    routes = {p: versioned(state) for p in ("/site/", "/site/a", "/site/b")}
    async with TestOrigin(routes) as origin, create_proxy(ssg(origin)) as proxy:
        assert (origin.requests["/site/"], origin.requests["/site/a"]) == (1, 2)
        for _ in range(3):
            page = await get(proxy.port, "/a?lang=en")
            assert page.body == b"/site/a?lang=en v1"
            assert page.get("cache-status") == "phantom; hit"
            assert not page.has("set-cookie") and not page.has("surrogate-control")
        part = await get(proxy.port, "/a?lang=en", [("Range", "bytes=-2")])
        assert (part.status, part.body) == (206, b"v1")  # RFC 9110 §14: ranges of snapshots
        head = await fetch(proxy.port, "HEAD", "/")
        assert head.status == 200 and head.content_length == len(b"/site/ v1")
        miss = await get(proxy.port, "/b")
        assert miss.status == 404
        assert origin.requests["/site/b"] == 0
        assert (await fetch(proxy.port, "POST", "/a")).status == 404
        with pytest.raises(InvalidStatus) as info:
            async with connect(f"ws://127.0.0.1:{proxy.port}/a"):
                pass
        assert info.value.response.status_code == 501
        assert len(origin.log) == 3


@async_test()
async def test_pipelined_requests_to_a_pre_generated_site_are_answered_in_order() -> None:
    """The fast lane asks the snapshot stage and leaves what it answers to the request loop,
    which goes on from that answer: hits and 404s come back in order, none from the backend."""
    state = {"v": 1}
    routes = {p: versioned(state) for p in ("/site/", "/site/a", "/site/b")}
    async with TestOrigin(routes) as origin, create_proxy(ssg(origin)) as proxy:
        burst = [build_request("GET", path, ()) for path in ("/a", "/b", "/", "/b", "/a")]
        async with await RawClient.connect(proxy.port) as client:
            await client.send(b"".join(burst))
            answers = [await client.read_response() for _ in burst]
        assert [a.status for a in answers] == [200, 404, 200, 404, 200]
        assert [a.body for a in answers[::2]] == [b"/site/a v1", b"/site/ v1", b"/site/a v1"]
        assert origin.requests["/site/b"] == 0 and len(origin.log) == 3


@async_test()
async def test_refresh_add_remove_through_the_control_api_and_the_library() -> None:
    state = {"v": 1}
    routes = {p: versioned(state) for p in ("/site/", "/site/a", "/site/b")}
    async with TestOrigin(routes) as origin, create_proxy(ssg(origin)) as proxy:
        state["v"] = 2
        refreshed = await control(proxy, "/refresh_snapshot", {"path": "/a"})
        assert refreshed.status == 200
        assert json.loads(refreshed.body) == {
            "path": "/a",
            "server": "ssg",
            "ok": True,
            "bytes": 10,
        }
        assert (await get(proxy.port, "/a")).body == b"/site/a v2"
        assert (await get(proxy.port, "/")).body == b"/site/ v1"
        everything = json.loads((await control(proxy, "/refresh_all_snapshots")).body)
        assert (everything["requested"], everything["failed"]) == (3, 0)
        assert (await get(proxy.port, "/")).body == b"/site/ v2"

        assert (await control(proxy, "/add_snapshot", {"path": "/b"})).status == 200
        assert (await get(proxy.port, "/b")).body == b"/site/b v2"
        assert (await control(proxy, "/remove_snapshot", {"path": "/b"})).status == 200
        assert (await get(proxy.port, "/b")).status == 404
        gone = await control(proxy, "/remove_snapshot", {"path": "/b"})
        assert gone.status == 404 and "not a snapshot" in json.loads(gone.body)["error"]
        missing = await control(proxy, "/refresh_snapshot", {"path": "/b"})
        assert missing.status == 404

        bulk = await control(proxy, "/bulk_add_snapshot", {"paths": ["/b", "/nope", 7]})
        answer = json.loads(bulk.body)
        assert (answer["requested"], answer["succeeded"], answer["failed"]) == (3, 1, 2)
        assert answer["results"][1]["status"] == 502
        assert "backend answered 404" in answer["results"][1]["error"]
        assert answer["results"][2] == {
            "path": 7,
            "ok": False,
            "status": 400,
            "error": "not a path",
        }
        removed = json.loads(
            (await control(proxy, "/bulk_remove_snapshot", {"paths": ["/b", "/a"]})).body
        )
        assert removed["succeeded"] == 2
        assert (await get(proxy.port, "/a")).status == 404
        refreshed = json.loads(
            (await control(proxy, "/bulk_refresh_snapshot", {"paths": ["/"]})).body
        )
        assert refreshed["succeeded"] == 1

        site = proxy.servers["ssg"]
        state["v"] = 3
        entry = await site.add_snapshot("/a")
        assert entry.body == b"/site/a v3"
        assert (await get(proxy.port, "/a")).body == b"/site/a v3"
        site.remove_snapshot("/a")
        with pytest.raises(NotFound):
            site.remove_snapshot("/a")
        with pytest.raises(SnapshotError, match="backend answered 404"):
            await site.add_snapshot("/missing")


@async_test()
async def test_fallthrough_forwards_misses() -> None:
    state = {"v": 1}
    routes = {p: versioned(state) for p in ("/site/", "/site/a", "/site/b")}
    async with TestOrigin(routes) as origin:
        config = ssg(origin, pre_generate_fallthrough=True)
        async with create_proxy(config) as proxy:
            state["v"] = 2
            assert (await get(proxy.port, "/a")).body == b"/site/a v1"
            assert (await get(proxy.port, "/b")).body == b"/site/b v2"
            assert origin.requests["/site/b"] == 1


@async_test()
async def test_a_failed_snapshot_stops_startup_naming_path_and_status() -> None:
    async with TestOrigin({"/site/": Reply(200, [], b"ok")}) as origin:
        proxy = create_proxy(ssg(origin))
        with pytest.raises(SnapshotError) as info:
            await proxy.start()
        assert str(info.value).startswith("server ssg: snapshot /a: backend answered 404")
        assert proxy.port is None  # the listener never opened


@async_test()
async def test_snapshot_calls_need_a_pre_generate_server() -> None:
    async with TestOrigin({}) as origin:
        config = servers_config({"app": {"proxy_url": origin.url}}, control_port=0)
        async with create_proxy(config) as proxy:
            answer = await control(proxy, "/add_snapshot", {"path": "/"})
            assert answer.status == 400
            assert "pre_generate" in json.loads(answer.body)["error"]
            assert (await control(proxy, "/refresh_all_snapshots")).status == 400
            with pytest.raises(UsageError):
                await proxy.servers["app"].add_snapshot("/")
