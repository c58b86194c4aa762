"""TLS on both legs (issue 7): an HTTPS listener next to the HTTP one, https:// and wss://
backends verified against a CA (``backend_ca``), upgrades spliced over TLS, and a backend
whose certificate does not verify answered with 502 and a log line saying why.

Certificates come from ``trustme``: a throwaway CA per test, for localhost and 127.0.0.1.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
from pathlib import Path

import pytest
from conftest import TLSFiles, async_test, fetch, make_tls_files, running_proxy
from origin import LOCALHOST, OriginRequest, Reply, TestOrigin, WebSocketBackend
from websockets.asyncio.client import connect

from phantom import ConfigError, create_proxy

HELLO = {"/hello": Reply(200, [("Content-Type", "text/plain")], b"hello over tls")}


@pytest.fixture
def tls(tmp_path: Path) -> TLSFiles:
    return make_tls_files(tmp_path)


def tls_listener(files: TLSFiles) -> dict[str, object]:
    return {"https_port": 0, "cert_path": files.cert_path, "key_path": files.key_path}


@async_test()
async def test_https_client_to_http_backend(tls: TLSFiles) -> None:
    async with (
        TestOrigin(HELLO) as origin,
        running_proxy(origin.port, **tls_listener(tls)) as proxy,
    ):
        assert proxy.https_port and proxy.https_port != proxy.port
        client_tls = tls.client_context()
        response = await fetch(proxy.https_port, "GET", "/hello", tls=client_tls)
        assert response.status == 200
        assert response.body == b"hello over tls"
        assert origin.last.get("x-forwarded-proto") == "https"
        # The plain listener keeps serving next to the TLS one.
        plain = await fetch(proxy.port, "GET", "/hello?plain")
        assert plain.status == 200 and origin.last.get("x-forwarded-proto") == "http"


@async_test()
async def test_http_and_https_requests_never_share_cache_entries(tls: TLSFiles) -> None:
    """RFC 9111 §2: the key is the target URI, scheme included. A redirect to https stored
    for an http request must not loop an https client."""

    def by_scheme(request: OriginRequest) -> Reply:
        scheme = request.get("x-forwarded-proto")
        return Reply(200, [("Cache-Control", "max-age=60")], f"via {scheme}".encode())

    async with (
        TestOrigin({"/page": by_scheme}) as origin,
        running_proxy(origin.port, **tls_listener(tls)) as proxy,
    ):
        client_tls = tls.client_context()
        for _ in range(2):
            plain = await fetch(proxy.port, "GET", "/page")
            secure = await fetch(proxy.https_port, "GET", "/page", tls=client_tls)
            assert plain.body == b"via http"
            assert secure.body == b"via https"
        assert origin.requests["/page"] == 2  # one miss per scheme, then hits


@async_test()
async def test_listener_offers_only_http11_by_alpn(tls: TLSFiles) -> None:
    async with (
        TestOrigin(HELLO) as origin,
        running_proxy(origin.port, **tls_listener(tls)) as proxy,
    ):
        _, writer = await asyncio.open_connection(
            LOCALHOST, proxy.https_port, ssl=tls.client_context(), server_hostname="localhost"
        )
        try:
            assert writer.get_extra_info("ssl_object").selected_alpn_protocol() == "http/1.1"
        finally:
            writer.close()
            await writer.wait_closed()


@async_test()
async def test_http_client_to_https_backend_sends_sni(tls: TLSFiles) -> None:
    server_context = tls.server_context()
    names: list[str | None] = []
    server_context.sni_callback = lambda _sock, name, _ctx: names.append(name)  # type: ignore[assignment,func-returns-value]
    async with TestOrigin(HELLO, tls=server_context) as origin:
        async with running_proxy(
            origin.port, scheme="https", backend_host="localhost", backend_ca=tls.ca_path
        ) as proxy:
            first = await fetch(proxy.port, "GET", "/hello")
            second = await fetch(proxy.port, "GET", "/hello?again")
        assert (first.status, first.body) == (200, b"hello over tls")
        assert second.status == 200
        assert names and set(names) == {"localhost"}
        assert origin.connections_accepted == 1  # TLS backend connections are pooled too


@async_test()
async def test_https_backend_by_ip_address(tls: TLSFiles) -> None:
    async with TestOrigin(HELLO, tls=tls.server_context()) as origin:
        async with running_proxy(origin.port, scheme="https", backend_ca=tls.ca_path) as proxy:
            response = await fetch(proxy.port, "GET", "/hello")
        assert response.status == 200, response.body


@async_test()
async def test_untrusted_backend_certificate_is_502_with_reason(
    tls: TLSFiles, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    stranger = make_tls_files(tmp_path, "stranger")  # signed by a CA phantom does not trust
    caplog.set_level(logging.WARNING, logger="phantom")
    async with TestOrigin(HELLO, tls=stranger.server_context()) as origin:
        async with running_proxy(origin.port, scheme="https", backend_ca=tls.ca_path) as proxy:
            response = await fetch(proxy.port, "GET", "/hello")
        assert response.status == 502
        # The reason is the operator's: in the log, not in the answer.
        assert response.body == b"The TLS connection to the backend failed.\n"
        assert origin.log == []
    lines = [r.getMessage() for r in caplog.records if "certificate rejected" in r.getMessage()]
    assert lines and "GET /hello" in lines[0] and "(502)" in lines[0]


@async_test()
async def test_backend_tls_verify_false_accepts_and_warns(
    tls: TLSFiles, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="phantom")
    async with TestOrigin(HELLO, tls=tls.server_context()) as origin:
        async with running_proxy(origin.port, scheme="https", backend_tls_verify=False) as proxy:
            response = await fetch(proxy.port, "GET", "/hello")
        assert response.status == 200
    assert any("backend_tls_verify: false" in r.getMessage() for r in caplog.records)


@async_test()
async def test_websocket_over_tls_client_leg(tls: TLSFiles) -> None:
    async with (
        WebSocketBackend() as backend,
        running_proxy(backend.port, **tls_listener(tls)) as proxy,
    ):
        uri = f"wss://localhost:{proxy.https_port}/ws"
        async with connect(uri, ssl=tls.client_context(), host=LOCALHOST) as ws:
            await ws.send("ping over wss")
            assert await asyncio.wait_for(ws.recv(), 5) == "ping over wss"
            await ws.send(b"\x00" * 200_000)
            assert await asyncio.wait_for(ws.recv(), 5) == b"\x00" * 200_000
        await asyncio.wait_for(backend.closed.wait(), 5)
        assert backend.close_codes == [(1000, "")]
        await asyncio.wait_for(proxy._ctx.wait_idle(), 5)


@async_test()
async def test_websocket_over_tls_backend_leg(tls: TLSFiles) -> None:
    async with (
        WebSocketBackend(tls=tls.server_context()) as backend,
        running_proxy(
            backend.port, scheme="wss", backend_host="localhost", backend_ca=tls.ca_path
        ) as proxy,
    ):
        async with connect(f"ws://{LOCALHOST}:{proxy.port}/ws") as ws:
            await ws.send("ping to wss backend")
            assert await asyncio.wait_for(ws.recv(), 5) == "ping to wss backend"
        await asyncio.wait_for(backend.closed.wait(), 5)
        assert backend.close_codes == [(1000, "")]
        await asyncio.wait_for(proxy._ctx.wait_idle(), 5)


@async_test()
async def test_websocket_over_tls_on_both_legs(tls: TLSFiles) -> None:
    async with (
        WebSocketBackend(tls=tls.server_context()) as backend,
        running_proxy(
            backend.port,
            scheme="wss",
            backend_host="localhost",
            backend_ca=tls.ca_path,
            **tls_listener(tls),
        ) as proxy,
    ):
        uri = f"wss://localhost:{proxy.https_port}/ws"
        async with connect(uri, ssl=tls.client_context(), host=LOCALHOST) as ws:
            for n in range(5):
                await ws.send(f"message {n}")
                assert await asyncio.wait_for(ws.recv(), 5) == f"message {n}"
        await asyncio.wait_for(proxy._ctx.wait_idle(), 5)


@pytest.mark.parametrize("key", ["cert_path", "key_path"])
def test_missing_listener_file_names_it(tls: TLSFiles, tmp_path: Path, key: str) -> None:
    missing = str(tmp_path / "gone.pem")
    options = {**tls_listener(tls), key: missing}
    config = {"http_port": 0, **options, "server": {"app": {"proxy_url": "http://127.0.0.1:1"}}}
    with pytest.raises(ConfigError) as info:
        create_proxy(config)
    assert str(info.value) == f"<dict>: {key}: {missing}: file not found"


def test_key_that_does_not_match_the_certificate(tls: TLSFiles, tmp_path: Path) -> None:
    other = make_tls_files(tmp_path, "other")
    config = {
        "https_port": 0,
        "cert_path": tls.cert_path,
        "key_path": other.key_path,
        "server": {"app": {"proxy_url": "http://127.0.0.1:1"}},
    }
    with pytest.raises(ConfigError) as info:
        create_proxy(config)
    assert str(info.value).startswith(f"<dict>: cert_path: {tls.cert_path} with {other.key_path}:")


def test_backend_ca_that_is_not_pem(tmp_path: Path) -> None:
    bogus = tmp_path / "ca.pem"
    bogus.write_text("not a certificate\n")
    config = {"server": {"app": {"proxy_url": "https://127.0.0.1:1", "backend_ca": str(bogus)}}}
    with pytest.raises(ConfigError) as info:
        create_proxy(config)
    assert str(info.value).startswith(f"<dict>: server.app.backend_ca: {bogus}:")


def test_client_context_has_no_verification_surprises() -> None:
    # The client tests rely on Python's defaults: hostname checks on, CERT_REQUIRED.
    context = ssl.create_default_context()
    assert context.check_hostname and context.verify_mode is ssl.CERT_REQUIRED


@async_test()
async def test_reload_uses_a_renewed_certificate(tls: TLSFiles, tmp_path: Path) -> None:
    renewed = make_tls_files(tmp_path, "renewed")  # a new certificate under a new CA
    config_path = tmp_path / "phantom.toml"

    def write_config(files: TLSFiles) -> None:
        config_path.write_text(
            f'listen = "127.0.0.1"\nhttp_port = 0\nhttps_port = 0\naccess_log = "off"\n'
            f'cert_path = "{files.cert_path}"\nkey_path = "{files.key_path}"\n'
            f'[server.app]\nproxy_url = "http://127.0.0.1:{origin.port}"\n'
        )

    async with TestOrigin(HELLO) as origin:
        write_config(tls)
        async with create_proxy(config_path) as proxy:
            port = proxy.https_port
            assert (await fetch(port, "GET", "/hello", tls=tls.client_context())).status == 200
            write_config(renewed)
            await proxy.reload()
            assert proxy.https_port == port  # the same listener
            response = await fetch(port, "GET", "/hello", tls=renewed.client_context())
            assert response.status == 200
            with pytest.raises(ssl.SSLCertVerificationError):
                await fetch(port, "GET", "/hello", tls=tls.client_context())
            # A bad file on reload keeps the running certificate.
            config_path.write_text(config_path.read_text().replace(renewed.cert_path, "gone.pem"))
            with pytest.raises(ConfigError):
                await proxy.reload()
            response = await fetch(port, "GET", "/hello", tls=renewed.client_context())
            assert response.status == 200
