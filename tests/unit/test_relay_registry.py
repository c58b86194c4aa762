"""Names, tokens and reservations of a relay (phantom.agents.registry), with a fake clock."""

from __future__ import annotations

import pytest

from phantom.agents.registry import (
    Claim,
    Refused,
    Registry,
    TokenRules,
    is_name,
    name_from_host,
    name_from_path,
)

ALICE = "alice-token-0123456789"
BOB = "bob-token-0123456789xx"


def registry(*, grace: float = 60.0, max_agents: int = 0) -> Registry:
    rules = TokenRules([(ALICE, ["alice-*", "demo"]), (BOB, ["bob"])])
    return Registry(rules, grace=grace, max_agents=max_agents)


@pytest.mark.parametrize("name", ["a", "alice-demo", "x1", "a" * 63, "0-9"])
def test_dns_labels_are_names(name: str) -> None:
    assert is_name(name)


@pytest.mark.parametrize("name", ["", "-a", "a-", "A", "a.b", "a_b", "a" * 64, "é", "a b"])
def test_anything_else_is_not(name: str) -> None:
    assert not is_name(name)


@pytest.mark.parametrize(
    ("host", "name"),
    [
        (b"alice.relay.example.com", "alice"),
        (b"Alice.Relay.Example.com:8443", "alice"),
        (b"alice.relay.example.com.", "alice"),
        (b"relay.example.com", None),  # the relay itself
        (b"a.b.relay.example.com", None),  # two labels below
        (b"alice.relay.example.com.evil.net", None),
        (b"alicerelay.example.com", None),
        (b"[::1]:80", None),
        (b"", None),
    ],
)
def test_the_host_header_names_the_agent(host: bytes, name: str | None) -> None:
    assert name_from_host(host, "relay.example.com") == name


@pytest.mark.parametrize(
    ("path", "name"),
    [
        (b"/alice/x/y", "alice"),
        (b"/alice", "alice"),
        (b"/alice/", "alice"),
        (b"/", None),
        (b"//alice/x", None),
        (b"/Alice/x", None),
        (b"/-a/x", None),
        (b"*", None),
    ],
)
def test_the_path_mode_names_the_agent_in_the_first_segment(path: bytes, name: str | None) -> None:
    assert name_from_path(path) == name


def test_a_token_claims_only_names_matching_its_patterns() -> None:
    reg = registry()
    assert isinstance(reg.claim(ALICE, "alice-demo", 0), Claim)
    assert isinstance(reg.claim(ALICE, "demo", 0), Claim)
    refused = reg.claim(ALICE, "bob", 0)
    assert refused == Refused(403, "the token may not claim the name 'bob'")
    assert isinstance(reg.claim(ALICE, "alice-", 0), Refused)  # not a DNS label


def test_an_unknown_token_is_refused_before_anything_about_the_name() -> None:
    assert registry().claim("nope", "-bad-", 0) == Refused(401, "unknown token")
    assert registry().claim(ALICE[:-1], "alice-x", 0) == Refused(401, "unknown token")


def test_a_live_name_is_refused_to_a_second_agent_even_with_the_same_token() -> None:
    reg = registry()
    assert isinstance(reg.claim(ALICE, "alice-a", 0), Claim)
    refused = reg.claim(ALICE, "alice-a", 1)
    assert isinstance(refused, Refused) and refused.status == 409


def test_a_lost_agent_s_name_waits_for_its_token_through_the_grace_period() -> None:
    rules = TokenRules([(ALICE, ["shared"]), (BOB, ["shared"])])
    reg = Registry(rules, grace=60, max_agents=0)
    claim = reg.claim(ALICE, "shared", 0)
    assert isinstance(claim, Claim)
    reg.release(claim, 10, goodbye=False)
    assert reg.live == 0 and reg.known("shared")
    assert reg.claim(BOB, "shared", 69.9) == Refused(
        409, "the name 'shared' is reserved for another token"
    )
    again = reg.claim(ALICE, "shared", 30)
    assert isinstance(again, Claim) and again.session != claim.session
    reg.release(again, 40, goodbye=False)
    assert isinstance(reg.claim(BOB, "shared", 100.0), Claim)  # grace over


def test_a_goodbye_frees_the_name_at_once() -> None:
    rules = TokenRules([(ALICE, ["shared"]), (BOB, ["shared"])])
    reg = Registry(rules, grace=60, max_agents=0)
    claim = reg.claim(ALICE, "shared", 0)
    assert isinstance(claim, Claim)
    reg.release(claim, 1, goodbye=True)
    assert not reg.known("shared")
    assert isinstance(reg.claim(BOB, "shared", 1), Claim)


def test_a_stale_release_does_not_touch_the_next_session() -> None:
    reg = registry()
    first = reg.claim(ALICE, "alice-a", 0)
    assert isinstance(first, Claim)
    reg.release(first, 1, goodbye=True)
    second = reg.claim(ALICE, "alice-a", 2)
    assert isinstance(second, Claim)
    reg.release(first, 3, goodbye=True)  # the old session's end, reported late
    assert reg.live == 1 and isinstance(reg.claim(ALICE, "alice-a", 4), Refused)


def test_max_agents_counts_live_agents_only() -> None:
    reg = registry(max_agents=1)
    claim = reg.claim(ALICE, "alice-a", 0)
    assert isinstance(claim, Claim)
    assert reg.claim(BOB, "bob", 0) == Refused(503, "the relay serves its maximum of 1 agents")
    reg.release(claim, 1, goodbye=False)  # reserved, not live
    assert isinstance(reg.claim(BOB, "bob", 2), Claim)


def test_expired_reservations_are_forgotten() -> None:
    reg = registry(grace=5)
    claim = reg.claim(ALICE, "alice-a", 0)
    assert isinstance(claim, Claim)
    reg.release(claim, 0, goodbye=False)
    reg.forget_expired(4.9)
    assert reg.known("alice-a")
    reg.forget_expired(5.0)
    assert not reg.known("alice-a")


def test_a_grace_of_zero_frees_names_at_once() -> None:
    reg = registry(grace=0)
    claim = reg.claim(ALICE, "alice-a", 0)
    assert isinstance(claim, Claim)
    reg.release(claim, 0, goodbye=False)
    assert not reg.known("alice-a")


def test_the_rules_keep_no_token() -> None:
    rules = TokenRules([(ALICE, ["a"])])
    assert ALICE not in repr(vars(rules))
    assert rules.identify(ALICE) is not None
    assert rules.identify(BOB) is None
