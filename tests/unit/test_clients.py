"""Each client's share (phantom.clients): which address a client is, and what it holds."""

from __future__ import annotations

import ipaddress

import pytest

from phantom.clients import Shares, client_address

TRUSTED = (ipaddress.ip_network("10.0.0.0/8"), ipaddress.ip_network("::1/128"))


@pytest.mark.parametrize(
    "peer, chain, client",
    [
        ("192.0.2.1", [b"203.0.113.7"], "192.0.2.1"),  # an untrusted peer is the client
        ("10.0.0.1", [], "10.0.0.1"),  # a trusted peer that names nobody
        ("10.0.0.1", [b"203.0.113.7"], "203.0.113.7"),
        ("10.0.0.1", [b"198.51.100.1, 203.0.113.7"], "203.0.113.7"),  # the left is the client's
        ("10.0.0.1", [b"203.0.113.7, 10.0.0.2"], "203.0.113.7"),  # two proxies of ours
        ("10.0.0.1", [b"203.0.113.7", b"10.0.0.2"], "203.0.113.7"),  # in two fields
        ("10.0.0.1", [b"10.0.0.3, 10.0.0.2"], "10.0.0.3"),  # all trusted: the farthest
        ("::1", [b"2001:DB8::0:1"], "2001:db8::1"),  # one spelling per address
        ("10.0.0.1", [b"unknown"], "unknown"),
    ],
)
def test_client_address_walks_x_forwarded_for_while_the_address_is_trusted(
    peer: str, chain: list[bytes], client: str
) -> None:
    assert client_address(peer, chain, TRUSTED) == client


def test_shares_count_up_to_the_limit_and_forget_a_client_that_holds_nothing() -> None:
    shares = Shares()
    first, second = shares.take("a", 2), shares.take("a", 2)
    assert first is not None and second is not None
    assert shares.take("a", 2) is None
    assert shares.take("b", 2) is not None  # another client has its own share
    first.release()
    first.release()  # given back once only
    assert shares.held("a") == 1
    third = shares.take("a", 2)
    assert third is not None
    second.release()
    third.release()
    assert shares.held("a") == 0 and "a" not in shares._held


def test_shares_without_a_limit_count_but_never_refuse() -> None:
    shares = Shares()
    holds = [shares.take("a", 0) for _ in range(1000)]
    assert all(hold is not None for hold in holds) and shares.held("a") == 1000
