"""The edge guards through a running phantom, over real loopback sockets: JWT on HTTP and on
WebSocket upgrades (tokens signed by PyJWT with HS256, RS256 and ES256 keys made here, a JWKS
endpoint of our own with rotating keys), Origin checks and CORS, rate limits, IP rules with
IPv4 and IPv6, the fixed order, and what each refusal leaves in the log and the metrics. Every
refusal is checked to have reached no backend."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import socket
import time
from pathlib import Path
from typing import Any

import jwt
import pytest
from conftest import RawClient, async_test, fetch, get, proxied, running_proxy, servers_config
from cryptography.hazmat.primitives import serialization
from issuer import SECRET, Issuer, hs256
from origin import OriginRequest, Reply, TestOrigin, UpgradeBackend, WebSocketBackend
from prometheus_client.parser import text_string_to_metric_families
from websockets.asyncio.client import connect

from phantom import create_proxy

JWT = {"secret": SECRET}
AUTH = {"jwt": JWT, "auth_required": True}


def bearer(token: str) -> list[tuple[str, str]]:
    return [("Authorization", f"Bearer {token}")]


def echo_headers(request: OriginRequest) -> Reply:
    fields = {n.decode(): v.decode() for n, v in request.headers}
    return Reply(
        200,
        [("Content-Type", "application/json"), ("Cache-Control", "no-store")],
        json.dumps({"target": request.target.decode(), "headers": fields}).encode(),
    )


ROUTES = {"/who": echo_headers, "/x": Reply(200, [("Cache-Control", "no-store")], b"x")}


def upgrade_head(target: str, *extra: tuple[str, str]) -> list[tuple[str, str]]:
    """An upgrade to the raw echo protocol of ``UpgradeBackend``."""
    return [("Connection", "Upgrade"), ("Upgrade", "x-echo"), *extra]


# -- JWT on HTTP ------------------------------------------------------------------------------


@async_test()
async def test_a_good_token_passes_and_claims_are_forwarded_in_place_of_forged_ones() -> None:
    async with proxied(
        ROUTES, **AUTH, forward_claims={"sub": "X-User-Id", "email": "X-User-Email"}
    ) as (origin, proxy):
        token = hs256(sub="alice", email="a@example.com")
        forged = [("X-User-Id", "root"), ("X-User-Email", "root@example.com")]
        response = await get(proxy.port, "/who", [*bearer(token), *forged])
        assert response.status == 200, response.body
        seen = json.loads(response.body)["headers"]
        assert seen["x-user-id"] == "alice" and seen["x-user-email"] == "a@example.com"
        assert [n for n, _ in origin.last.headers].count(b"x-user-id") == 1


def whose_page(request: OriginRequest) -> Reply:
    """A page each user gets their own of, shareable and saying it varies on the user."""
    user = dict(request.headers).get(b"x-user-id", b"-")
    fields = [("Cache-Control", "public, max-age=60"), ("Vary", "X-User-Id")]
    return Reply(200, fields, b"page of " + user)


@async_test()
async def test_an_answer_varying_on_a_forwarded_claim_is_stored_per_claim() -> None:
    """The cache reads the fields the backend was sent: Bob never gets Alice's page."""
    async with proxied({"/me": whose_page}, **AUTH, forward_claims={"sub": "X-User-Id"}) as (
        origin,
        proxy,
    ):
        alice, bob = bearer(hs256(sub="alice")), bearer(hs256(sub="bob"))
        assert (await get(proxy.port, "/me", alice)).body == b"page of alice"
        assert (await get(proxy.port, "/me", bob)).body == b"page of bob"
        again = await get(proxy.port, "/me", alice)
        assert again.body == b"page of alice" and "hit" in (again.get("cache-status") or "")
        assert origin.requests["/me"] == 2


@async_test()
async def test_forged_claim_fields_are_removed_on_a_server_whose_token_lacks_the_claim() -> None:
    async with proxied(ROUTES, **AUTH, forward_claims={"email": "X-User-Email"}) as (o, proxy):
        response = await get(proxy.port, "/who", [*bearer(hs256()), ("X-User-Email", "forged")])
        assert "x-user-email" not in json.loads(response.body)["headers"]


@async_test()
async def test_no_token_is_401_with_a_bare_bearer_challenge_and_no_backend_connection() -> None:
    async with proxied(ROUTES, **AUTH) as (origin, proxy):
        response = await get(proxy.port, "/who")
        assert response.status == 401
        assert response.get("www-authenticate") == 'Bearer realm="app"'
        assert origin.connections_accepted == 0


def forged_with_public_key(public_pem: bytes) -> str:
    """Key confusion: HS256 over the token, keyed with the server's public key."""
    header = base64.urlsafe_b64encode(b'{"alg":"HS256","typ":"JWT"}').rstrip(b"=")
    claims = {"exp": int(time.time()) + 600, "sub": "mallory"}
    payload = base64.urlsafe_b64encode(json.dumps(claims).encode()).rstrip(b"=")
    signature = hmac.new(public_pem, header + b"." + payload, hashlib.sha256).digest()
    return (
        header + b"." + payload + b"." + base64.urlsafe_b64encode(signature).rstrip(b"=")
    ).decode()


@async_test()
async def test_bad_tokens_are_401_invalid_token_and_reach_no_backend(tmp_path: Path) -> None:
    issuer = Issuer("RS256")
    key = issuer.private[issuer.kid]
    public_pem = key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    (tmp_path / "issuer.pem").write_bytes(public_pem)
    jwt_table = {
        "public_key": str(tmp_path / "issuer.pem"),
        "issuer": "https://login.test",
        "audience": "api",
        "required_claims": ["exp", "sub"],
    }
    good = {"iss": "https://login.test", "aud": "api", "sub": "alice"}
    now = int(time.time())
    cases = {
        "expired": issuer.sign(**good, exp=now - 3600),
        "audience": issuer.sign(**{**good, "aud": "other"}),
        "issuer": issuer.sign(**{**good, "iss": "https://evil.test"}),
        "alg none": jwt.encode({**good, "exp": now + 600}, None, algorithm="none"),
        "key confusion": forged_with_public_key(public_pem),
        "missing sub": issuer.sign(iss="https://login.test", aud="api"),
        "garbage": "not.a.token",
    }
    async with proxied(ROUTES, jwt=jwt_table, auth_required=True) as (origin, proxy):
        assert (await get(proxy.port, "/x", bearer(issuer.sign(**good)))).status == 200
        accepted = origin.connections_accepted
        for case, token in cases.items():
            response = await get(proxy.port, "/x", bearer(token))
            assert response.status == 401, case
            challenge = response.get("www-authenticate") or ""
            assert challenge.startswith('Bearer realm="app", error="invalid_token"'), case
        assert origin.connections_accepted == accepted
        assert len(origin.log) == 1


@async_test()
async def test_claims_that_do_not_match_are_403_insufficient_scope() -> None:
    async with proxied(ROUTES, **AUTH, auth_claims={"role": "admin"}) as (origin, proxy):
        response = await get(proxy.port, "/x", bearer(hs256(role="user")))
        assert response.status == 403
        assert 'error="insufficient_scope"' in (response.get("www-authenticate") or "")
        assert (await get(proxy.port, "/x", bearer(hs256(role=["user", "admin"])))).status == 200
        assert len(origin.log) == 1


@async_test()
async def test_es256_tokens_from_a_rotating_jwks() -> None:
    issuer = Issuer("ES256")
    async with TestOrigin(ROUTES) as origin:
        jwks_url = issuer.serve_on(origin)
        jwt_table = {"jwks_url": jwks_url, "algorithms": ["ES256"]}
        async with running_proxy(origin.port, jwt=jwt_table, auth_required=True) as proxy:
            assert (await get(proxy.port, "/x", bearer(issuer.sign(sub="a")))).status == 200
            issuer.rotate()  # a token under the new key: phantom fetches the set again
            assert (await get(proxy.port, "/x", bearer(issuer.sign(sub="b")))).status == 200
            assert issuer.fetches == 2
            made_up = issuer.sign(kid=issuer.new_key(), sub="c")  # never published
            response = await get(proxy.port, "/x", bearer(made_up))
            assert response.status == 401


@async_test()
async def test_a_start_without_the_jwks_fails_unless_optional() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    config = {
        "listen": "127.0.0.1",
        "http_port": 0,
        "jwt": {"jwks_url": f"http://127.0.0.1:{port}/jwks", "algorithms": ["RS256"]},
        "server": {"app": {"proxy_url": "http://127.0.0.1:1", "auth_required": True}},
    }
    with pytest.raises(
        Exception, match=rf"jwt.jwks_url: http://127.0.0.1:{port}/jwks: Connection refused"
    ):
        async with create_proxy(config):
            pass
    config["jwt"]["jwks_optional_at_start"] = True  # type: ignore[index]
    async with create_proxy(config) as proxy:
        response = await get(proxy.port, "/x", bearer(Issuer().sign()))
        assert response.status == 401


@async_test()
async def test_the_query_token_leaves_the_target_and_the_cache_key() -> None:
    shared = Reply(200, [("Cache-Control", "public, max-age=60")], b"shared page")
    async with proxied({"/page": shared, **ROUTES}, **AUTH) as (origin, proxy):
        first = await get(proxy.port, f"/page?a=1&access_token={hs256(sub='a')}")
        second = await get(proxy.port, f"/page?a=1&access_token={hs256(sub='b')}")
        assert (first.status, second.status) == (200, 200)
        assert "hit" in (second.get("cache-status") or "")
        assert [r.target for r in origin.log] == [b"/page?a=1"]


@async_test()
async def test_an_authenticated_answer_is_stored_only_when_shareable() -> None:
    personal = Reply(200, [("Cache-Control", "max-age=60")], b"yours")
    async with proxied({"/me": personal}, **AUTH, token_cookie="session") as (origin, proxy):
        for sub in ("a", "b"):
            response = await get(proxy.port, "/me", [("Cookie", f"session={hs256(sub=sub)}")])
            assert response.status == 200
        assert len(origin.log) == 2  # max-age alone is not shareable with a token


# -- JWT and origins on upgrades --------------------------------------------------------------


@async_test()
async def test_a_browser_style_websocket_with_a_query_token_is_tunnelled_without_it() -> None:
    async with WebSocketBackend() as backend, running_proxy(backend.port, **AUTH) as proxy:
        url = f"ws://127.0.0.1:{proxy.port}/chat?room=1&access_token={hs256(sub='a')}"
        async with connect(url) as ws:
            await ws.send("hi")
            assert await ws.recv() == "hi"
        assert backend.paths == ["/chat?room=1"]


@async_test()
async def test_an_upgrade_without_a_token_is_401_before_any_backend_connection() -> None:
    async with UpgradeBackend() as backend, running_proxy(backend.port, **AUTH) as proxy:
        async with await RawClient.connect(proxy.port) as client:
            response = await client.request("GET", "/ws", upgrade_head("/ws"))
        assert response.status == 401
        assert backend.legs == []


@async_test()
async def test_a_cross_site_origin_is_refused_on_upgrades_only() -> None:
    allowed = ["https://app.example.com"]
    async with (
        UpgradeBackend() as backend,
        running_proxy(backend.port, allowed_origins=allowed) as proxy,
    ):
        async with await RawClient.connect(proxy.port) as client:
            evil = upgrade_head("/ws", ("Origin", "https://evil.example"))
            assert (await client.request("GET", "/ws", evil)).status == 403
        assert backend.legs == []
        async with await RawClient.connect(proxy.port) as client:
            good = upgrade_head("/ws", ("Origin", "https://app.example.com"))
            assert (await client.request("GET", "/ws", good)).status == 101
        async with await RawClient.connect(proxy.port) as client:
            assert (await client.request("GET", "/ws", upgrade_head("/ws"))).status == 101
        # An ordinary request is not an upgrade: CORS governs those.
        plain = await get(proxy.port, "/x", [("Origin", "https://evil.example")])
        assert plain.status == 200


@async_test()
async def test_require_origin_refuses_an_upgrade_without_origin() -> None:
    async with (
        UpgradeBackend() as backend,
        running_proxy(
            backend.port, allowed_origins=["https://app.example.com"], require_origin=True
        ) as proxy,
    ):
        async with await RawClient.connect(proxy.port) as client:
            assert (await client.request("GET", "/ws", upgrade_head("/ws"))).status == 403
        assert backend.legs == []


@async_test(timeout=15)
async def test_tunnel_auth_expiry_close_ends_the_tunnel_at_exp(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level("INFO", "phantom.tunnel")
    jwt_table = {**JWT, "leeway": 0}
    async with (
        WebSocketBackend() as backend,
        running_proxy(
            backend.port, jwt=jwt_table, auth_required=True, tunnel_auth_expiry="close"
        ) as proxy,
    ):
        token = hs256(exp=int(time.time()) + 2)
        started = time.monotonic()
        async with connect(
            f"ws://127.0.0.1:{proxy.port}/ws", additional_headers=bearer(token)
        ) as ws:
            await ws.send("hi")
            assert await ws.recv() == "hi"
            await asyncio.wait_for(ws.wait_closed(), 5)
        assert 1.0 < time.monotonic() - started < 4.0
    assert "its token expired: closing" in caplog.text


@async_test(timeout=20)
async def test_tunnel_rate_paces_a_tunnel_through_the_proxy() -> None:
    size = 1 << 20
    async with (
        UpgradeBackend(mode="source", source_bytes=size) as backend,
        running_proxy(backend.port, tunnel_rate=size // 2) as proxy,
    ):
        async with await RawClient.connect(proxy.port) as client:
            response = await client.request("GET", "/ws", upgrade_head("/ws"))
            assert response.status == 101
            started = time.monotonic()
            data = await client.read_until_eof(timeout=10)
            elapsed = time.monotonic() - started
        assert len(data) == size
        assert elapsed == pytest.approx(2.0, rel=0.15)


# -- CORS -------------------------------------------------------------------------------------

CORS = {
    "origins": ["https://app.example.com"],
    "methods": ["GET", "PUT"],
    "headers": ["content-type"],
}


@async_test()
async def test_a_preflight_is_answered_at_the_edge() -> None:
    async with proxied(ROUTES, cors=CORS) as (origin, proxy):
        preflight = [
            ("Origin", "https://app.example.com"),
            ("Access-Control-Request-Method", "PUT"),
            ("Access-Control-Request-Headers", "Content-Type"),
        ]
        response = await fetch(proxy.port, "OPTIONS", "/x", preflight)
        assert response.status == 204
        assert response.get("access-control-allow-origin") == "https://app.example.com"
        assert response.get("access-control-allow-methods") == "GET, PUT"
        refused = await fetch(
            proxy.port, "OPTIONS", "/x", [("Origin", "https://evil.example"), preflight[1]]
        )
        assert refused.status == 403
        assert origin.log == []


@async_test()
async def test_answers_carry_the_allow_fields_and_vary_origin() -> None:
    backend_cors = Reply(
        200,
        [("Cache-Control", "max-age=60"), ("Access-Control-Allow-Origin", "*")],
        b"page",
    )
    async with proxied({"/page": backend_cors}, cors=CORS) as (origin, proxy):
        listed = await get(proxy.port, "/page", [("Origin", "https://app.example.com")])
        assert listed.get_all("access-control-allow-origin") == ["https://app.example.com"]
        assert "Origin" in ", ".join(listed.get_all("vary"))
        other = await get(proxy.port, "/page", [("Origin", "https://evil.example")])
        assert "hit" in (other.get("cache-status") or "")
        assert other.get_all("access-control-allow-origin") == []
        assert "Origin" in ", ".join(other.get_all("vary"))


# -- rate limits ------------------------------------------------------------------------------


@async_test()
async def test_a_burst_over_the_limit_gets_429_with_a_correct_retry_after() -> None:
    limit = {"requests": 2, "per": 10, "burst": 3}
    async with proxied(ROUTES, rate_limit=limit, rate_limit_headers=True) as (origin, proxy):
        answers = [await get(proxy.port, "/x") for _ in range(4)]
        assert [a.status for a in answers] == [200, 200, 200, 429]
        assert answers[0].get("ratelimit-policy") == '"default";q=2;w=10'
        assert answers[0].get("ratelimit") == '"default";r=2;t=5'
        refused = answers[3]
        assert refused.get("retry-after") == "5"
        assert refused.get("ratelimit") == '"default";r=0;t=15'
        assert len(origin.log) == 3
        # Another client address has its own bucket.
        async with await RawClient.connect(proxy.port, source="127.0.0.2") as client:
            assert (await client.request("GET", "/x")).status == 200


@async_test()
async def test_upgrade_handshakes_count_as_requests() -> None:
    async with (
        UpgradeBackend() as backend,
        running_proxy(backend.port, rate_limit={"requests": 1, "per": 60}) as proxy,
    ):
        async with await RawClient.connect(proxy.port) as client:
            assert (await client.request("GET", "/ws", upgrade_head("/ws"))).status == 101
        async with await RawClient.connect(proxy.port) as client:
            assert (await client.request("GET", "/ws", upgrade_head("/ws"))).status == 429
        assert len(backend.legs) == 1


# -- IP rules ---------------------------------------------------------------------------------


@async_test()
async def test_allow_and_deny_with_ipv4() -> None:
    async with proxied(ROUTES, allow=["127.0.0.0/8"], deny=["127.0.0.2"]) as (origin, proxy):
        assert (await get(proxy.port, "/x")).status == 200
        async with await RawClient.connect(proxy.port, source="127.0.0.2") as client:
            assert (await client.request("GET", "/x")).status == 403
        assert len(origin.log) == 1


def has_ipv6_loopback() -> bool:
    try:
        with socket.socket(socket.AF_INET6) as sock:
            sock.bind(("::1", 0))
        return True
    except OSError:
        return False


@pytest.mark.skipif(not has_ipv6_loopback(), reason="no IPv6 loopback (::1) on this machine")
@async_test()
async def test_allow_and_deny_with_ipv6() -> None:
    for rules, status in (
        ({"allow": ["::1"]}, 200),
        ({"deny": ["::1/128"]}, 403),
        ({"allow": ["127.0.0.1"]}, 403),
    ):
        async with (
            TestOrigin(ROUTES) as origin,
            running_proxy(origin.port, listen="::1", **rules) as proxy,
        ):
            reader, writer = await asyncio.open_connection("::1", proxy.port)
            writer.write(b"GET /x HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")
            head = await asyncio.wait_for(reader.read(), 5)
            writer.close()
            assert head.startswith(b"HTTP/1.1 %d" % status), (rules, head[:40])


# -- order and observability ------------------------------------------------------------------


@async_test()
async def test_ip_rules_come_before_auth_and_rate_limits_before_auth(tmp_path: Path) -> None:
    log = tmp_path / "access.log"
    options: dict[str, Any] = {
        **AUTH,
        "deny": ["127.0.0.2"],
        "rate_limit": {"requests": 1, "per": 60},
        "access_log": str(log),
        "control_port": 0,
    }
    async with proxied(ROUTES, **options) as (origin, proxy):
        async with await RawClient.connect(proxy.port, source="127.0.0.2") as client:
            assert (await client.request("GET", "/x")).status == 403  # not 401
        assert (await get(proxy.port, "/x")).status == 401  # counted by the limit...
        assert (await get(proxy.port, "/x", bearer(hs256()))).status == 429  # ...so this is over
        metrics = await fetch(proxy.control_port, "GET", "/metrics")
    reasons = {
        sample.labels["reason"]: sample.value
        for family in text_string_to_metric_families(metrics.body.decode())
        for sample in family.samples
        if sample.name == "phantom_refusals_total"
    }
    assert reasons == {"ip": 1, "token_missing": 1, "rate_limit": 1}
    lines = log.read_text().splitlines()
    assert [line.rsplit(" reason=", 1)[-1] for line in lines if " reason=" in line] == [
        "ip",
        "token_missing",
        "rate_limit",
    ]
    assert origin.log == []


@async_test()
async def test_a_query_token_never_reaches_the_access_log(tmp_path: Path) -> None:
    log = tmp_path / "access.log"
    limit = {"requests": 1, "per": 60}
    async with proxied(ROUTES, **AUTH, rate_limit=limit, access_log=str(log)) as (origin, proxy):
        token = hs256(sub="a")
        assert (await get(proxy.port, f"/x?a=1&access_token={token}")).status == 200
        refused = await get(proxy.port, f"/x?access_token={token}&b=2")  # by the rate limit
        assert refused.status == 429
    text = log.read_text()
    assert token not in text
    assert '"GET /x?a=1 HTTP/1.1" 200' in text and '"GET /x?b=2 HTTP/1.1" 429' in text


@async_test()
async def test_answer_fields_stay_with_their_request_on_a_kept_alive_connection() -> None:
    async with TestOrigin(ROUTES) as origin:
        servers = {
            "api": {"proxy_url": origin.url, "bind_to": "/api", "cors": CORS},
            "web": {"proxy_url": origin.url},
        }
        async with create_proxy(servers_config(servers)) as proxy:
            async with await RawClient.connect(proxy.port) as client:
                first = await client.request(
                    "GET", "/api/x", [("Origin", "https://app.example.com")]
                )
                assert first.get("access-control-allow-origin") == "https://app.example.com"
                # The next one, for a server without guards, is relayed by the fast lane.
                second = await client.request("GET", "/x")
                assert second.status == 200
                assert not second.has("access-control-allow-origin")
                assert "Origin" not in ", ".join(second.get_all("vary"))


def write_config(path: Path, origin: TestOrigin, root: str, server: str) -> None:
    """A phantom.toml with the ``root`` lines and one ``[server.app]`` in front of ``origin``
    with the ``server`` lines."""
    path.write_text(
        f'listen = "127.0.0.1"\nhttp_port = 0\n{root}\n'
        f'[server.app]\nproxy_url = "{origin.url}"\n{server}\n'
    )


@async_test()
async def test_a_reload_that_stops_trusting_a_proxy_stops_the_ip_rules_reading_its_fields(
    tmp_path: Path,
) -> None:
    async with TestOrigin(ROUTES) as origin:
        path = tmp_path / "phantom.toml"
        deny = 'deny = ["203.0.113.9"]'
        forwarded = [("X-Forwarded-For", "203.0.113.9")]
        write_config(path, origin, 'trusted_proxies = ["127.0.0.1"]', deny)
        async with create_proxy(path) as proxy:
            assert (await get(proxy.port, "/x", forwarded)).status == 403
            write_config(path, origin, "", deny)
            await proxy.reload()
            # 127.0.0.1 is no proxy any more: its X-Forwarded-For says nothing.
            assert (await get(proxy.port, "/x", forwarded)).status == 200


@async_test()
async def test_a_reload_with_a_new_secret_checks_tokens_with_it(tmp_path: Path) -> None:
    other = "another-secret-that-is-long-enough-for-hs256"
    async with TestOrigin(ROUTES) as origin:
        path = tmp_path / "phantom.toml"

        def write(secret: str) -> None:
            write_config(path, origin, f'[jwt]\nsecret = "{secret}"', "auth_required = true")

        write(SECRET)
        async with create_proxy(path) as proxy:
            new_token = jwt.encode({"exp": int(time.time()) + 600}, other, algorithm="HS256")
            assert (await get(proxy.port, "/x", bearer(hs256()))).status == 200
            assert (await get(proxy.port, "/x", bearer(new_token))).status == 401
            write(other)
            await proxy.reload()
            assert (await get(proxy.port, "/x", bearer(new_token))).status == 200
            assert (await get(proxy.port, "/x", bearer(hs256()))).status == 401
