"""Header rules (pure): hop-by-hop removal, upgrade detection, X-Forwarded-*, Via."""

from __future__ import annotations

import pytest

from phantom import headers as hdr


@pytest.mark.parametrize(
    "connection",
    [b"Upgrade", b"upgrade", b"keep-alive, Upgrade", b"UPGRADE ,keep-alive", b" upgrade "],
)
def test_upgrade_detected_in_any_case_and_list_position(connection: bytes) -> None:
    assert hdr.is_upgrade([(b"Connection", connection), (b"Upgrade", b"websocket")])


@pytest.mark.parametrize(
    "fields",
    [
        [(b"Upgrade", b"websocket")],  # no Connection token
        [(b"Connection", b"upgrade")],  # no Upgrade field
        [(b"Connection", b"upgrade"), (b"Upgrade", b"  ")],  # empty Upgrade
        [(b"Connection", b"upgrades"), (b"Upgrade", b"websocket")],  # a different token
        [(b"Connection", b"keep-alive"), (b"Upgrade", b"websocket")],
    ],
)
def test_not_an_upgrade(fields: list[tuple[bytes, bytes]]) -> None:
    assert not hdr.is_upgrade(fields)


def test_upgrade_token_found_across_repeated_connection_fields() -> None:
    fields = [(b"Connection", b"keep-alive"), (b"connection", b"Upgrade"), (b"Upgrade", b"h2c")]
    assert hdr.is_upgrade(fields)


def test_hop_by_hop_fields_and_connection_named_fields_are_removed() -> None:
    """RFC 9110 §7.6.1: Connection, the fields it names, and the fixed hop-by-hop set."""
    fields = [
        (b"Host", b"example.com"),
        (b"Connection", b"keep-alive, X-Secret"),
        (b"X-Secret", b"1"),
        (b"Keep-Alive", b"timeout=5"),
        (b"TE", b"trailers"),
        (b"Trailer", b"X-Sum"),
        (b"Transfer-Encoding", b"chunked"),
        (b"Upgrade", b"websocket"),
        (b"Proxy-Authorization", b"Basic abc"),
        (b"Proxy-Connection", b"keep-alive"),
        (b"Proxy-Whatever", b"x"),
        (b"Accept", b"*/*"),
    ]
    assert hdr.strip_hop_by_hop(fields) == [(b"Host", b"example.com"), (b"Accept", b"*/*")]


def test_repeated_fields_keep_order_and_casing() -> None:
    fields = [
        (b"Set-Cookie", b"a=1"),
        (b"X-Thing", b"x"),
        (b"set-cookie", b"b=2; Path=/"),
    ]
    assert hdr.forward_response_headers(fields) == fields


def test_forwarded_request_replaces_client_supplied_x_forwarded_fields() -> None:
    fields = [
        (b"Host", b"app.example:3000"),
        (b"X-Forwarded-For", b"6.6.6.6"),
        (b"x-forwarded-proto", b"https"),
        (b"X-Forwarded-Host", b"evil"),
        (b"Accept", b"text/html"),
    ]
    out = hdr.forward_request_headers(
        fields, client_ip="127.0.0.1", proto=b"http", body_chunked=False
    )
    assert out == [
        (b"Host", b"app.example:3000"),
        (b"Accept", b"text/html"),
        (b"X-Forwarded-For", b"127.0.0.1"),
        (b"X-Forwarded-Proto", b"http"),
        (b"X-Forwarded-Host", b"app.example:3000"),
        (b"Via", b"1.1 phantom"),
    ]


def test_via_is_appended_to_earlier_hops() -> None:
    """RFC 9110 §7.6.3: each proxy appends its own entry."""
    out = hdr.forward_request_headers(
        [(b"Host", b"h"), (b"Via", b"1.0 edge")],
        client_ip="::1",
        proto=b"http",
        body_chunked=False,
    )
    assert (b"Via", b"1.0 edge, 1.1 phantom") in out
    assert sum(1 for name, _ in out if name.lower() == b"via") == 1


def test_chunked_body_is_reframed_and_expect_dropped() -> None:
    fields = [
        (b"Host", b"h"),
        (b"Transfer-Encoding", b"chunked"),
        (b"Expect", b"100-continue"),
    ]
    out = hdr.forward_request_headers(
        fields, client_ip="1.2.3.4", proto=b"http", body_chunked=True, drop=(b"expect",)
    )
    names = [name.lower() for name, _ in out]
    assert names.count(b"transfer-encoding") == 1
    assert (b"Transfer-Encoding", b"chunked") in out
    assert b"expect" not in names


def test_upgrade_replay_keeps_connection_and_upgrade_in_order() -> None:
    fields = [
        (b"Host", b"h"),
        (b"Connection", b"Upgrade"),
        (b"Upgrade", b"websocket"),
        (b"Sec-WebSocket-Key", b"dGhlIHNhbXBsZSBub25jZQ=="),
        (b"X-Forwarded-For", b"forged"),
    ]
    out = hdr.upgrade_request_headers(fields, client_ip="10.0.0.1", proto=b"http")
    assert out[:4] == fields[:4]
    assert (b"X-Forwarded-For", b"10.0.0.1") in out
    assert (b"X-Forwarded-For", b"forged") not in out
