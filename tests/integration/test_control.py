"""The control API's own rules over real sockets: health, auth, unknown endpoints, methods."""

from __future__ import annotations

import json

from conftest import async_test, fetch, get, proxied
from origin import Reply

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
