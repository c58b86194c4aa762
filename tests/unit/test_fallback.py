"""phantom.fallback: the request a refused backend's fallback_url gets, and what counts as
refused (upstream.connect_failure). No socket is opened."""

from __future__ import annotations

import errno

import h11

from phantom.config import config_from_dict
from phantom.fallback import Fallback
from phantom.upstream import connect_failure


def fallback_for(proxy_url: str, fallback_url: str) -> Fallback:
    server = config_from_dict(
        {"server": {"app": {"proxy_url": proxy_url, "fallback_url": fallback_url}}}
    ).servers[0]
    assert server.fallback_url is not None
    return Fallback(server, server.fallback_url, 1.0, "phantom.toml")


def outgoing() -> h11.Request:
    return h11.Request(
        method="GET",
        target=b"/local/docs/x?q=1",
        headers=[
            (b"Host", b"localhost:3024"),
            (b"Origin", b"http://localhost:3024"),
            (b"X-Forwarded-Host", b"localhost:3024"),
        ],
    )


def test_base_path_host_and_origin_are_the_fallbacks() -> None:
    fallback = fallback_for("http://127.0.0.1:3001/local", "https://preview.example.com/deployed")
    request = fallback.request(outgoing(), upgrade=True)
    assert request.target == b"/deployed/docs/x?q=1"
    assert request.headers.raw_items() == [
        (b"Host", b"preview.example.com"),
        (b"Origin", b"https://preview.example.com"),
        (b"X-Forwarded-Host", b"localhost:3024"),
    ]
    plain = fallback.request(outgoing(), upgrade=False)
    assert (b"Origin", b"http://localhost:3024") in plain.headers.raw_items()


def test_a_port_other_than_the_schemes_stays_in_host() -> None:
    fallback = fallback_for("http://127.0.0.1:3001", "http://[::1]:8080")
    request = fallback.request(outgoing(), upgrade=True)
    assert request.target == b"/local/docs/x?q=1"
    assert request.headers.raw_items()[:2] == [
        (b"Host", b"[::1]:8080"),
        (b"Origin", b"http://[::1]:8080"),
    ]


def test_a_name_whose_every_address_refuses_is_refused() -> None:
    refused, unreachable = errno.ECONNREFUSED, errno.ENETUNREACH
    both = OSError(
        f"Multiple exceptions: [Errno {refused}] Connect call failed ('::1', 3001, 0, 0), "
        f"[Errno {refused}] Connect call failed ('127.0.0.1', 3001)"
    )
    assert connect_failure(both) == "refused"
    mixed = OSError(
        f"Multiple exceptions: [Errno {unreachable}] Network is unreachable, "
        f"[Errno {refused}] Connect call failed ('127.0.0.1', 3001)"
    )
    assert connect_failure(mixed) == "unreachable"
    assert connect_failure(ConnectionRefusedError(refused, "refused")) == "refused"
    assert connect_failure(ConnectionResetError(errno.ECONNRESET, "reset")) == "reset"
    assert connect_failure(OSError(errno.EHOSTUNREACH, "No route to host")) == "unreachable"
    assert connect_failure(OSError("odd")) == "unreachable"
