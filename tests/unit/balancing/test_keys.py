"""phantom.balancing.keys: what consistent_hash sticks a request to."""

from __future__ import annotations

import ipaddress

from phantom.balancing import key_function

HEADERS = [
    (b"host", b"app.test"),
    (b"x-user", b"alice"),
    (b"cookie", b"theme=dark; session=abc123"),
    (b"cookie", b"other=1"),
]


def test_each_kind_of_key() -> None:
    assert key_function(None)("10.0.0.7", b"/a?b", HEADERS) == b"10.0.0.7"
    assert key_function("client_ip")("10.0.0.7", b"/a?b", HEADERS) == b"10.0.0.7"
    assert key_function("path")("10.0.0.7", b"/room/7?token=x", HEADERS) == b"/room/7"
    assert key_function("header:x-user")("10.0.0.7", b"/", HEADERS) == b"alice"
    assert key_function("cookie:session")("10.0.0.7", b"/", HEADERS) == b"abc123"
    assert key_function("cookie:other")("10.0.0.7", b"/", HEADERS) == b"1"  # a second header


def test_a_missing_header_or_cookie_is_no_key() -> None:
    assert key_function("header:x-tenant")("10.0.0.7", b"/", HEADERS) is None
    assert key_function("cookie:sess")("10.0.0.7", b"/", HEADERS) is None
    # A cookie named like the end of another is not it.
    assert key_function("cookie:ion")("10.0.0.7", b"/", HEADERS) is None


def test_repeated_headers_make_one_key() -> None:
    headers = [(b"x-user", b"a"), (b"x-user", b"b")]
    assert key_function("header:x-user")("", b"/", headers) == b"a, b"


def test_client_ip_is_the_client_behind_a_trusted_proxy() -> None:
    trusted = (ipaddress.ip_network("10.0.0.0/8"),)
    forwarded = [*HEADERS, (b"x-forwarded-for", b"198.51.100.4, 10.0.0.9")]
    key = key_function("client_ip", trusted)
    assert key("10.0.0.7", b"/", forwarded) == b"198.51.100.4"
    assert key("203.0.113.1", b"/", forwarded) == b"203.0.113.1"  # no proxy of ours
    # Without trusted_proxies, X-Forwarded-For is whatever the client wrote.
    assert key_function("client_ip")("10.0.0.7", b"/", forwarded) == b"10.0.0.7"
