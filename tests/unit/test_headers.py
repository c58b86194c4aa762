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
        (b"Forwarded", b'for=127.0.0.1;proto=http;host="app.example:3000"'),
        (b"Via", b"1.1 phantom"),
    ]


UNTRUSTED_ONLY = [
    (b"Forwarded", b"for=6.6.6.6;host=evil"),
    (b"X-Forwarded-Port", b"1337"),
    (b"X-Forwarded-Prefix", b"//evil.example"),
    (b"x-forwarded-server", b"evil"),
    (b"X-Real-IP", b"6.6.6.6"),
    (b"X-Original-URL", b"/admin"),
    (b"X-Rewrite-URL", b"/admin"),
    (b"X-Host", b"evil"),
    (b"True-Client-IP", b"6.6.6.6"),
    (b"X-Client-IP", b"6.6.6.6"),
    (b"X_Forwarded_For", b"6.6.6.6"),
    (b"my_header", b"x"),
]


def test_fields_only_a_proxy_may_set_are_removed_from_an_untrusted_peer() -> None:
    fields = [(b"Host", b"h"), *UNTRUSTED_ONLY, (b"X-Forwarded", b"kept: not a prefix match")]
    for out in (
        hdr.forward_request_headers(
            fields, client_ip="10.0.0.1", proto=b"http", body_chunked=False, by="127.0.0.1:80"
        ),
        hdr.upgrade_request_headers(fields, client_ip="10.0.0.1", proto=b"http", by="[::1]:80"),
    ):
        names = [name.lower() for name, _ in out]
        assert not {name.lower() for name, _ in UNTRUSTED_ONLY[1:]} & set(names)
        assert (b"X-Forwarded", b"kept: not a prefix match") in out
        assert names.count(b"forwarded") == 1
        assert hdr.get_header(out, b"forwarded") in (
            b'for=10.0.0.1;proto=http;host=h;by="127.0.0.1:80"',
            b'for=10.0.0.1;proto=http;host=h;by="[::1]:80"',
        )


def test_a_trusted_proxy_keeps_its_fields_and_chains_are_extended() -> None:
    fields = [
        (b"Host", b"h"),
        *UNTRUSTED_ONLY,
        (b"X-Forwarded-For", b"203.0.113.9"),
    ]
    out = hdr.forward_request_headers(
        fields, client_ip="::1", proto=b"https", body_chunked=False, trusted=True
    )
    for name, value in UNTRUSTED_ONLY[1:]:
        assert (name, value) in out
    assert hdr.get_header(out, b"x-forwarded-for") == b"203.0.113.9, ::1"
    assert hdr.get_header(out, b"forwarded") == (
        b'for=6.6.6.6;host=evil, for="[::1]";proto=https;host=h'
    )


@pytest.mark.parametrize(
    ("ip", "port", "node", "element"),
    [
        ("127.0.0.1", None, "127.0.0.1", b"for=127.0.0.1;proto=http;by=127.0.0.1"),
        ("127.0.0.1", 80, "127.0.0.1:80", b'for=127.0.0.1;proto=http;by="127.0.0.1:80"'),
        ("::1", 8080, "[::1]:8080", b'for="[::1]";proto=http;by="[::1]:8080"'),
        ("-", None, "unknown", b"for=unknown;proto=http;by=unknown"),
    ],
)
def test_forwarded_nodes_are_bracketed_and_quoted_per_rfc_7239(
    ip: str, port: int | None, node: str, element: bytes
) -> None:
    """RFC 7239 §6: IPv6 in brackets; a value with ':' (not a token character) is quoted."""
    assert hdr.node(ip, port) == node
    assert hdr.forwarded_element(ip, b"http", None, node) == element


@pytest.mark.parametrize("listed", [b"Content-Length", b"host, content-length", b"HOST"])
def test_connection_cannot_make_host_or_content_length_hop_by_hop(listed: bytes) -> None:
    fields = [(b"Host", b"h"), (b"Content-Length", b"5"), (b"Connection", listed)]
    out = hdr.forward_request_headers(
        fields, client_ip="10.0.0.1", proto=b"http", body_chunked=False
    )
    assert out[:2] == fields[:2]
    assert hdr.strip_hop_by_hop(fields) == fields[:2]


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
