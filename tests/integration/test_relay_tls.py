"""A relay with an HTTPS listener: the agent verifies it against ``--relay-ca`` (a private CA),
is told its https:// URL, and public clients come over TLS; without the CA the agent refuses
the relay and keeps retrying."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

import pytest
from conftest import RawClient, TLSFiles, async_test, make_tls_files
from origin import TestOrigin, echo
from relay_helpers import DOMAIN, TOKEN, running_relay

from phantom.agents.agent import Agent, AgentOptions, relay_tls
from phantom.config import parse_backend_url

ALICE = f"alice-demo.{DOMAIN}"


@pytest.fixture
def tls(tmp_path: Path) -> TLSFiles:
    return make_tls_files(tmp_path)


def options(port: int, app_port: int, ca: str | None) -> AgentOptions:
    return AgentOptions(
        relay=parse_backend_url(f"https://127.0.0.1:{port}"),
        name="alice-demo",
        token=TOKEN,
        port=app_port,
        tls=relay_tls(ca),
    )


@async_test()
async def test_an_agent_over_tls_with_a_private_ca(tls: TLSFiles) -> None:
    root = {"https_port": 0, "cert_path": tls.cert_path, "key_path": tls.key_path}
    async with running_relay(root) as relay, TestOrigin({"/echo": echo}) as app:
        port = relay.proxy.https_port or 0
        urls: list[str] = []
        agent = Agent(options(port, app.port, tls.ca_path), urls.append)
        task = asyncio.ensure_future(agent.run())
        try:
            async with asyncio.timeout(5):
                while not urls:
                    await asyncio.sleep(0.01)
            assert urls == [f"https://{ALICE}:{port}"]
            async with await RawClient.connect(port, tls=tls.client_context()) as public:
                response = await public.request("POST", "/echo", body=b"secret", host=ALICE)
            assert (response.status, response.body) == (200, b"secret")
            assert app.last.get("x-forwarded-proto") == "https"
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
            agent.close()


@async_test()
async def test_without_the_ca_the_agent_refuses_the_relay(
    tls: TLSFiles, caplog: pytest.LogCaptureFixture
) -> None:
    root = {"https_port": 0, "cert_path": tls.cert_path, "key_path": tls.key_path}
    async with running_relay(root) as relay:
        port = relay.proxy.https_port or 0
        agent = Agent(options(port, 1, None), lambda url: None)
        with caplog.at_level(logging.WARNING, "phantom.expose"):
            task = asyncio.ensure_future(agent.run())
            await asyncio.sleep(1.0)
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
        assert not relay.hub.sessions
        assert "CERTIFICATE_VERIFY_FAILED" in caplog.text
