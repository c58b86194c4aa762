"""The stages: one order, one interface. Each server gets the stages its configuration asks
for, in ``ORDER``; each answers or lets the request go on, from the request view alone."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from phantom.config import config_from_dict
from phantom.context import Site, build_verifier
from phantom.stages import ORDER, Answer, RequestView, Stages

BACKEND = "http://127.0.0.1:9"


def site(**server: Any) -> Site:
    config = config_from_dict({"server": {"app": {"proxy_url": BACKEND, **server}}})
    return Site.build(config.servers[0], config)


def view(
    method: bytes = b"GET", target: bytes = b"/a", upgrade: tuple[bytes, ...] = ()
) -> RequestView:
    return RequestView(method, target, [(b"host", b"example.com")], "127.0.0.1", upgrade)


def test_the_order_is_the_documented_one() -> None:
    assert [build.__module__.rpartition(".")[2] for build in ORDER] == [
        "iprules", "cors", "origin", "ratelimit", "auth",
        "webhooks", "snapshots", "upgrades", "methods",
    ]


def test_a_server_without_guards_has_no_stage_and_decides_at_once() -> None:
    stages = site().stages
    assert stages.all == () and stages.sync
    assert stages.check(view()) is None


def test_a_webhook_makes_the_server_wait_for_its_stages() -> None:
    hook = {"url": "http://127.0.0.1:9/hook", "type": "blocking"}
    stages = site(webhooks=[hook], forward_get_only=True).stages
    assert len(stages.all) == 2 and not stages.sync


def test_forward_get_only_answers_405_with_allow_but_leaves_upgrades_alone() -> None:
    stages = site(forward_get_only=True).stages
    refused = stages.check(view(b"POST"))
    assert isinstance(refused, Answer) and refused.status == 405
    assert (b"Allow", b"GET, HEAD") in (refused.headers or [])
    assert stages.check(view(b"HEAD")) is None
    assert stages.check(view(b"POST", upgrade=(b"websocket",))) is None


def test_enable_websocket_false_refuses_upgrades_only() -> None:
    stages = site(enable_websocket=False).stages
    refused = stages.check(view(upgrade=(b"websocket",)))
    assert isinstance(refused, Answer) and refused.status == 501
    assert stages.check(view()) is None


def test_a_pre_generated_server_answers_404_and_501_unless_it_falls_through() -> None:
    stages = site(proxy_mode="pre_generate").stages
    missing = stages.check(view(target=b"/nowhere"))
    assert isinstance(missing, Answer) and missing.status == 404
    upgrade = stages.check(view(upgrade=(b"websocket",)))
    assert isinstance(upgrade, Answer) and upgrade.status == 501
    through = site(proxy_mode="pre_generate", pre_generate_fallthrough=True).stages
    assert through.check(view(target=b"/nowhere")) is None


class Refuses:
    def __init__(self, status: int, seen: list[str]) -> None:
        self.status, self.seen = status, seen

    def check(self, view: RequestView) -> Answer | None:
        self.seen.append(f"refuses {self.status}")
        return Answer(self.status, b"no\n") if view.method == b"POST" else None


class Waits:
    def __init__(self, seen: list[str]) -> None:
        self.seen = seen

    async def check(self, view: RequestView) -> Answer | None:
        await asyncio.sleep(0)
        self.seen.append("waits")
        view.cache_key = "chosen"
        return None


@pytest.mark.timeout(5)
def test_stages_run_in_order_until_one_answers_awaiting_those_that_wait() -> None:
    seen: list[str] = []
    stages = Stages([Waits(seen), Refuses(403, seen), Refuses(429, seen)])
    assert not stages.sync
    passed = view()
    assert asyncio.run(stages.run(passed)) is None
    assert passed.cache_key == "chosen"  # a stage passes things on on the view
    assert seen == ["waits", "refuses 403", "refuses 429"]
    seen.clear()
    answer = asyncio.run(stages.run(view(b"POST")))
    assert isinstance(answer, Answer) and answer.status == 403
    assert seen == ["waits", "refuses 403"]


SECRET = "s" * 32


def guarded_site(jwt: dict[str, Any] | None = None, **server: Any) -> Site:
    data: dict[str, Any] = {"server": {"app": {"proxy_url": BACKEND, **server}}}
    if jwt is not None:
        data["jwt"] = jwt
    config = config_from_dict(data)
    return Site.build(config.servers[0], config, verifier=build_verifier(config.jwt))


def test_the_guards_with_static_keys_decide_at_once_in_their_order() -> None:
    stages = guarded_site(
        {"secret": SECRET},
        allow=["127.0.0.0/8"],
        cors={"origins": ["https://a.example"]},
        allowed_origins=["https://a.example"],
        rate_limit={"requests": 1, "per": 60},
        auth_required=True,
    ).stages
    assert [type(stage).__name__ for stage in stages.all] == [
        "IpStage", "CorsStage", "OriginStage", "RateStage", "AuthStage",
    ]
    assert stages.sync  # the fast lane asks them too
    refused = stages.check(view())
    assert isinstance(refused, Answer) and (refused.status, refused.reason) == (
        401, "token_missing",
    )
    over = stages.check(view())  # the rate limit came first, and counted the first one
    assert isinstance(over, Answer) and (over.status, over.reason) == (429, "rate_limit")


def test_a_jwks_makes_the_auth_stage_one_that_waits() -> None:
    jwks = {"jwks_url": "http://127.0.0.1:9/jwks", "algorithms": ["RS256"]}
    assert not guarded_site(jwks, auth_required=True).stages.sync


def test_an_ip_refusal_names_its_reason() -> None:
    refused = guarded_site(deny=["127.0.0.1"]).stages.check(view())
    assert isinstance(refused, Answer) and (refused.status, refused.reason) == (403, "ip")
