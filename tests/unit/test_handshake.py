"""Upgrade handshakes (pure): which offered protocols may be tunnelled (``upgrade_protocols``)
and whether a backend's 101 completes the handshake (RFC 9110 §7.8, RFC 6455 §4.2.2)."""

from __future__ import annotations

import base64
import hashlib

import pytest

from phantom.handshake import accept_for, offered, offering_only, permitted, switch_problem

Fields = list[tuple[bytes, bytes]]

# What `curl --http2 http://host/` sends (RFC 7540 §3.2).
CURL_H2C: Fields = [
    (b"Host", b"app.test"),
    (b"User-Agent", b"curl/8.5.0"),
    (b"Accept", b"*/*"),
    (b"Connection", b"Upgrade, HTTP2-Settings"),
    (b"Upgrade", b"h2c"),
    (b"HTTP2-Settings", b"AAMAAABkAAQAoAAAAAIAAAAA"),
]

# RFC 6455 §1.3's own example key and accept.
KEY = b"dGhlIHNhbXBsZSBub25jZQ=="
ACCEPT = b"s3pPLMBiTxaQ9kYGzzhZRbK+xOo="


def websocket_request(key: bytes = KEY) -> Fields:
    return [
        (b"Host", b"app.test"),
        (b"Connection", b"keep-alive, Upgrade"),
        (b"Upgrade", b"websocket"),
        (b"Sec-WebSocket-Key", key),
        (b"Sec-WebSocket-Version", b"13"),
    ]


def test_accept_is_the_rfc_6455_example() -> None:
    assert accept_for(KEY) == ACCEPT
    key = base64.b64encode(b"0123456789abcdef")
    digest = hashlib.sha1(key + b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11").digest()
    assert accept_for(key) == base64.b64encode(digest)


# -- what is offered, what is allowed -----------------------------------------------------------


def test_offered_tokens_as_spelled_across_fields() -> None:
    fields = [(b"Connection", b"upgrade"), (b"Upgrade", b"IRC/6.9 , h2c"), (b"upgrade", b"WS")]
    assert offered(fields) == [b"IRC/6.9", b"h2c", b"WS"]


@pytest.mark.parametrize(
    "fields",
    [
        [(b"Upgrade", b"h2c")],  # no upgrade token in Connection: Upgrade is just hop-by-hop
        [(b"Connection", b"Upgrade")],  # nothing offered
        [(b"Connection", b"keep-alive"), (b"Upgrade", b"websocket")],
    ],
)
def test_no_offer_without_connection_upgrade_and_upgrade(fields: Fields) -> None:
    assert offered(fields) == []


@pytest.mark.parametrize(
    ("protocols", "tokens", "allowed"),
    [
        (("*",), [b"websocket", b"x-echo", b"IRC/6.9"], [b"websocket", b"x-echo", b"IRC/6.9"]),
        # "*" means every protocol but h2c, whatever its spelling or version
        (("*",), [b"h2c"], []),
        (("*",), [b"H2C", b"h2c/2"], []),
        (("*",), [b"h2c", b"websocket"], [b"websocket"]),
        (("*", "h2c"), [b"H2c"], [b"H2c"]),
        (("h2c",), [b"h2c", b"websocket"], [b"h2c"]),
        # a name allows every version of it; a version, only that one
        (("websocket",), [b"WebSocket", b"websocket/13", b"x-0"], [b"WebSocket", b"websocket/13"]),
        (("irc/6.9",), [b"IRC/6.9", b"IRC/7"], [b"IRC/6.9"]),
        ((), [b"websocket"], []),
    ],
)
def test_permitted(protocols: tuple[str, ...], tokens: list[bytes], allowed: list[bytes]) -> None:
    assert permitted(tokens, protocols) == allowed


def test_curl_h2c_is_not_allowed_by_default() -> None:
    assert permitted(offered(CURL_H2C), ("*",)) == []


def test_offering_only_keeps_the_head_byte_for_byte_when_nothing_is_dropped() -> None:
    fields = [(b"Connection", b"Upgrade"), (b"UPGRADE", b"x-echo ,  IRC/6.9"), (b"X-A", b"1")]
    assert offering_only(fields, [b"x-echo", b"IRC/6.9"]) == fields


def test_offering_only_rewrites_one_field_in_place() -> None:
    fields = [
        (b"Connection", b"Upgrade, HTTP2-Settings"),
        (b"upgrade", b"h2c, x-echo"),
        (b"X-A", b"1"),
        (b"Upgrade", b"websocket"),
    ]
    assert offering_only(fields, [b"x-echo", b"websocket"]) == [
        (b"Connection", b"Upgrade, HTTP2-Settings"),
        (b"upgrade", b"x-echo, websocket"),
        (b"X-A", b"1"),
    ]


# -- the backend's 101 ------------------------------------------------------------------------


def test_a_websocket_101_with_the_right_accept_is_spliced() -> None:
    response = [
        (b"upgrade", b"WebSocket"),
        (b"connection", b"Upgrade"),
        (b"sec-websocket-accept", b" " + ACCEPT),
    ]
    assert switch_problem(websocket_request(), response) is None


def test_a_custom_101_naming_an_offered_token_is_spliced() -> None:
    request = [(b"Connection", b"upgrade"), (b"Upgrade", b"x-echo, IRC/6.9")]
    assert switch_problem(request, [(b"upgrade", b"irc/6.9")]) is None


@pytest.mark.parametrize(
    ("request_fields", "response", "problem"),
    [
        (
            websocket_request(),
            [(b"upgrade", b"websocket"), (b"sec-websocket-accept", accept_for(b"other key"))],
            "WebSocket 101 whose Sec-WebSocket-Accept does not answer the key",
        ),
        (
            websocket_request(),
            [(b"upgrade", b"websocket")],
            "WebSocket 101 without Sec-WebSocket-Accept",
        ),
        (
            websocket_request(),
            [(b"upgrade", b"websocket"), (b"sec-websocket-accept", ACCEPT)] * 2,
            "WebSocket 101 whose Sec-WebSocket-Accept does not answer the key",
        ),
        (
            # an accept computed for a key the client did not send
            websocket_request(b"x3JJHMbDL1EzLkh9GBhXDw=="),
            [(b"upgrade", b"websocket"), (b"sec-websocket-accept", ACCEPT)],
            "WebSocket 101 whose Sec-WebSocket-Accept does not answer the key",
        ),
        (
            [(b"Connection", b"upgrade"), (b"Upgrade", b"websocket")],  # no key sent
            [(b"upgrade", b"websocket"), (b"sec-websocket-accept", ACCEPT)],
            "WebSocket 101 whose Sec-WebSocket-Accept does not answer the key",
        ),
        (
            websocket_request(),
            [(b"upgrade", b"h2c"), (b"sec-websocket-accept", ACCEPT)],
            "101 switches to 'h2c', which was not offered",
        ),
        (
            [(b"Connection", b"upgrade"), (b"Upgrade", b"x-echo")],
            [(b"upgrade", b"x-echo, h2c")],
            "101 switches to 'h2c', which was not offered",
        ),
        (
            [(b"Connection", b"upgrade"), (b"Upgrade", b"x-echo")],
            [],
            "101 without an Upgrade header",
        ),
        (
            [(b"Content-Length", b"3")],  # an ordinary POST
            [(b"upgrade", b"x-echo")],
            "101 to a request that asked for no upgrade",
        ),
    ],
)
def test_a_101_that_does_not_answer_the_handshake_is_refused(
    request_fields: Fields, response: Fields, problem: str
) -> None:
    assert switch_problem(request_fields, response) == problem
