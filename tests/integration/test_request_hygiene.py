"""Issue 11, items 7-9: what a client sends can't forge where it came from, walk around a rule
by spelling a path another way, or break a request with a Connection header.

Over real sockets: a TestOrigin backend, a raw client, and for webhooks a TestOrigin hook.
"""

from __future__ import annotations

import json
import logging
from typing import Any

import pytest
from conftest import (
    RawClient,
    async_test,
    build_request,
    cache_status,
    fetch,
    get,
    proxied,
    running_proxy,
    servers_config,
)
from origin import OriginRequest, Reply, TestOrigin, UpgradeBackend, echo

from phantom import create_proxy

# Fields only a proxy in front of phantom may set (item 7), and one per other spoofing route.
FORGED = [
    ("X-Forwarded-Port", "1337"),
    ("X-Forwarded-Prefix", "//evil.example"),
    ("Forwarded", "for=6.6.6.6;host=evil.example;proto=https"),
    ("X-Real-IP", "6.6.6.6"),
    ("X-Original-URL", "/admin"),
    ("X-Rewrite-URL", "/admin"),
    ("X-Host", "evil.example"),
    ("True-Client-IP", "6.6.6.6"),
    ("X-Client-IP", "6.6.6.6"),
    ("X_Forwarded_Host", "evil.example"),
]
FORGED_NAMES = {name.lower() for name, _ in FORGED} - {"forwarded"}


def proxy_fix_page(request: OriginRequest) -> Reply:
    """A page as Flask's ProxyFix (x_port, x_prefix) would build it: the script's URL comes
    from X-Forwarded-*, and the page is cacheable."""
    host = request.get("x-forwarded-host") or "origin"
    port = request.get("x-forwarded-port")
    prefix = request.get("x-forwarded-prefix") or ""
    base = f"{request.get('x-forwarded-proto')}://{host}{f':{port}' if port else ''}{prefix}"
    return Reply(
        200,
        [("Content-Type", "text/html"), ("Cache-Control", "max-age=60")],
        f'<script src="{base}/static/app.js"></script>'.encode(),
    )


def assert_nothing_forged(request: OriginRequest, proxy_port: int) -> None:
    names = {name.decode().lower() for name, _ in request.raw_headers}
    assert not names & FORGED_NAMES, f"forged fields reached the backend: {names}"
    assert request.get_all("forwarded") == [
        f'for=127.0.0.1;proto=http;host=phantom.test;by="127.0.0.1:{proxy_port}"'
    ]
    assert request.get_all("x-forwarded-for") == ["127.0.0.1"]


# -- item 7: forged forwarding fields ----------------------------------------------------------


@pytest.mark.parametrize("lane", ["fast", "loop"])
@async_test()
async def test_proxy_fix_fields_from_an_untrusted_client_never_reach_a_cached_page(
    lane: str,
) -> None:
    """The attacker's X-Forwarded-Port / -Prefix would put its script URL in a page that is
    then served from the cache to everyone: they never reach the backend."""
    strict = [("Content-Length", "0")] if lane == "loop" else []  # outside the fast lane
    routes = {"/": proxy_fix_page, "/echo": echo}
    async with proxied(routes, exclude_paths=["/echo"]) as (origin, proxy):
        attacker = await get(proxy.port, "/", [*FORGED, *strict])
        victim = await get(proxy.port, "/")
        assert victim.status == 200 and "hit" in cache_status(victim)[1]
        for page in (attacker, victim):
            assert page.body == b'<script src="http://phantom.test/static/app.js"></script>'
        # A path that bypasses the cache: the fast lane forwards it itself (the loop with a
        # Content-Length), with the same fields.
        assert (await get(proxy.port, "/echo", [*FORGED, *strict])).status == 200
        assert [r.path for r in origin.log] == ["/", "/echo"]
        for request in origin.log:
            assert_nothing_forged(request, proxy.port)


@async_test()
async def test_a_trusted_proxy_keeps_its_fields_and_forwarded_is_extended() -> None:
    async with proxied({"/echo": echo}, trusted_proxies=["127.0.0.0/8"]) as (origin, proxy):
        await get(proxy.port, "/echo", FORGED)
        seen = origin.last
        for name, value in FORGED:
            if name != "Forwarded":
                assert seen.get(name) == value
        assert seen.get_all("forwarded") == [
            "for=6.6.6.6;host=evil.example;proto=https, "
            f'for=127.0.0.1;proto=http;host=phantom.test;by="127.0.0.1:{proxy.port}"'
        ]


@async_test()
async def test_the_upgrade_replay_removes_forged_fields_too() -> None:
    headers = [("Connection", "Upgrade"), ("Upgrade", "x-echo"), *FORGED]
    async with UpgradeBackend() as backend, running_proxy(backend.port) as proxy:
        async with await RawClient.connect(proxy.port) as client:
            await client.send(build_request("GET", "/chat", headers))
            assert (await client.read_response()).status == 101
        handshake = backend.handshakes[0]
        names = {name.decode().lower() for name, _ in handshake.raw_headers}
        assert not names & FORGED_NAMES
        assert handshake.get("forwarded") == (
            f'for=127.0.0.1;proto=http;host=phantom.test;by="127.0.0.1:{proxy.port}"'
        )


# -- item 8: one normal form of the path for every rule and the backend -----------------------

def spellings(name: str) -> list[str]:
    """Other spellings of ``/name`` that a backend normalising paths reads as ``/name``."""
    first, last = name[0], name[-1]
    return [
        f"/%{ord(first):02x}{name[1:]}",
        f"//{name}",
        f"/x/../{name}",
        f"/%2E/{name[:-1]}%{ord(last):02X}",
    ]


def account_page(request: OriginRequest) -> Reply:
    """Alice's private page, sent as cacheable as careless apps send it."""
    cookie = request.get("cookie") or "session=nobody"
    return Reply(200, [("Cache-Control", "max-age=60")], b"account of " + cookie[8:].encode())


def decoding_origin(name: str, handler: Any) -> dict[str, Any]:
    """Routes that answer every spelling of ``/name`` alike, as a backend that decodes and
    normalises paths itself would: on 0084f9e phantom forwarded the spellings as sent."""
    return {spelling: handler for spelling in [f"/{name}", *spellings(name)]}


@pytest.mark.parametrize("lane", ["fast", "loop"])
@pytest.mark.parametrize("spelling", spellings("account"))
@async_test()
async def test_exclude_paths_holds_for_every_spelling_of_the_path(spelling: str, lane: str) -> None:
    strict = [("Content-Length", "0")] if lane == "loop" else []
    routes = decoding_origin("account", account_page)
    async with proxied(routes, exclude_paths=["/account*"]) as (origin, proxy):
        victim = await get(proxy.port, spelling, [("Cookie", "session=alice"), *strict])
        attacker = await get(proxy.port, spelling, strict)
        assert victim.body == b"account of alice"
        assert attacker.body == b"account of nobody", "a private page was served from the cache"
        assert [r.target for r in origin.log] == [b"/account", b"/account"]


@async_test()
async def test_encoded_separators_are_400_unless_allowed() -> None:
    routes = {"/%2Faccount": echo, "/a%5Cb": echo}
    async with proxied(routes) as (origin, proxy):
        for target in ("/%2faccount", "/%5caccount", "/a\\b", "/a%00"):
            refused = await get(proxy.port, target)
            assert refused.status == 400, target
        assert not origin.log
    async with proxied(routes, allow_encoded_slashes=True) as (origin, proxy):
        assert (await get(proxy.port, "/%2faccount")).status == 200
        assert (await get(proxy.port, "/a\\b")).status == 200
        assert [r.target for r in origin.log] == [b"/%2Faccount", b"/a%5Cb"]


@async_test()
async def test_a_blocking_webhook_sees_the_normal_path() -> None:
    def deny_admin(request: OriginRequest) -> Reply:
        denied = json.loads(request.body)["path"] == "/admin"
        return Reply(403 if denied else 204, [], b"no" if denied else b"")

    async with TestOrigin({"/hook": deny_admin}) as hook:
        hooks = [{"url": f"{hook.url}/hook", "type": "blocking"}]
        async with proxied(decoding_origin("admin", echo), webhooks=hooks) as (origin, proxy):
            for spelling in ["/admin", *spellings("admin")]:
                assert (await get(proxy.port, spelling)).status == 403, spelling
            assert (await get(proxy.port, "/other")).status == 404  # allowed: reaches origin
            assert [r.target for r in origin.log] == [b"/other"]
            paths = [json.loads(r.body)["path"] for r in hook.log]
            assert paths == ["/admin"] * 5 + ["/other"]


@async_test()
async def test_bind_to_routing_sees_the_normal_path() -> None:
    async with TestOrigin({"/x": echo}) as admin, TestOrigin({"/admin/x": echo}) as web:
        servers = {
            "admin": {"proxy_url": admin.url, "bind_to": "/admin"},
            "web": {"proxy_url": web.url},
        }
        async with create_proxy(servers_config(servers)) as proxy:
            for spelling in ["/%61dmin/x", "//admin/x", "/x/../admin//x", "/%2e%2e/admin/x"]:
                assert (await get(proxy.port, spelling)).status == 200, spelling
            assert [r.target for r in admin.log] == [b"/x"] * 4
            assert not web.log


@async_test()
async def test_the_cache_key_is_that_of_the_normal_path() -> None:
    page = Reply(200, [("Cache-Control", "max-age=60")], b"page")
    async with proxied({"/page": page, "//page": page}) as (origin, proxy):
        for spelling in ["/page", "/%70age", "/x/../page", "//page", "/./p%61ge"]:
            response = await get(proxy.port, spelling)
            assert response.body == b"page"
        assert origin.requests["/page"] == 1
    async with proxied({"/page": page, "//page": page}, merge_slashes=False) as (origin, proxy):
        for spelling in ["/page", "//page", "//%70age"]:
            assert (await get(proxy.port, spelling)).body == b"page"
        assert [r.target for r in origin.log] == [b"/page", b"//page"]


# -- item 9: Connection can't drop framing; no request makes a traceback ----------------------


def no_tracebacks(caplog: pytest.LogCaptureFixture) -> None:
    assert not [r for r in caplog.records if r.exc_info], caplog.text


@pytest.mark.parametrize(
    "listed", ["Content-Length", "Host", "host, content-length", "Transfer-Encoding"]
)
def test_connection_naming_host_or_framing_fields_never_drops_them(
    listed: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="phantom")

    @async_test()
    async def scenario() -> None:
        async with proxied({"/echo": echo}) as (origin, proxy):
            chunks = [b"hel", b"lo"] if listed == "Transfer-Encoding" else None
            body = b"" if chunks else b"hello"
            headers = [("Connection", listed)]
            response = await fetch(proxy.port, "POST", "/echo", headers, body, chunks=chunks)
            assert (response.status, response.body) == (200, b"hello")
            assert origin.last.get("host") == "phantom.test"

    scenario()
    no_tracebacks(caplog)


def test_a_request_that_cant_be_forwarded_is_400_and_one_log_line(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """An HTTP/1.0 request without Host has none for the HTTP/1.1 request to the backend."""
    caplog.set_level(logging.INFO, logger="phantom")

    @async_test()
    async def scenario() -> None:
        async with proxied({"/echo": echo}) as (origin, proxy):
            async with await RawClient.connect(proxy.port) as client:
                await client.send(b"GET /echo HTTP/1.0\r\n\r\n")
                assert (await client.read_response()).status == 400
            assert not origin.log
            assert (await get(proxy.port, "/echo")).status == 200  # still serving

    scenario()
    no_tracebacks(caplog)
    refused = [r for r in caplog.records if "Host" in r.getMessage() and r.name == "phantom"]
    assert len(refused) == 1, caplog.text
