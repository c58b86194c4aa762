"""The relay's wire format (phantom.agents.protocol): control messages cut anywhere, oversized or
unknown ones refused, the handshakes' bytes, the agents' reconnect delays."""

from __future__ import annotations

import struct

import h11
import pytest

from phantom.agents import protocol
from phantom.agents.protocol import Decoder, Kind, Message, ProtocolError, encode

MESSAGES = [
    Message(Kind.OPEN, 7),
    Message(Kind.READY, 15_000, "https://alice.relay.example.com"),
    Message(Kind.PING, 123456789012),
    Message(Kind.PONG, 123456789012),
    Message(Kind.CLOSE, 0, "agent stopped"),
    Message(Kind.ERROR, 9, "cannot connect to 127.0.0.1:8000: Connection refused ✗"),
]


def test_every_message_comes_back_as_sent() -> None:
    assert Decoder().feed(b"".join(encode(m) for m in MESSAGES)) == MESSAGES


@pytest.mark.parametrize("size", [1, 2, 3, 7, 11])
def test_messages_cut_at_any_byte_come_back_whole(size: int) -> None:
    stream = b"".join(encode(m) for m in MESSAGES)
    decoder = Decoder()
    got = []
    for start in range(0, len(stream), size):
        got += decoder.feed(stream[start : start + size])
    assert got == MESSAGES


def test_the_frame_is_length_kind_number_text() -> None:
    assert encode(Message(Kind.OPEN, 1)) == struct.pack("!HBQ", 9, 1, 1)
    assert encode(Message(Kind.CLOSE, 0, "bye")) == struct.pack("!HBQ", 12, 5, 0) + b"bye"


def test_a_long_text_is_cut_to_the_limit_on_a_character_boundary() -> None:
    frame = encode(Message(Kind.ERROR, 1, "é" * protocol.MAX_TEXT))
    (message,) = Decoder().feed(frame)
    assert message.text == "é" * (protocol.MAX_TEXT // 2)


def test_a_number_out_of_range_is_a_programming_error() -> None:
    with pytest.raises(ValueError):
        encode(Message(Kind.OPEN, -1))


@pytest.mark.parametrize(
    "frame",
    [
        struct.pack("!HBQ", 9, 99, 1),  # unknown kind
        struct.pack("!H", 3) + b"abc",  # shorter than kind + number
        struct.pack("!H", 9 + protocol.MAX_TEXT + 1),  # announced too long: refused at once
        struct.pack("!HBQ", 11, 6, 1) + b"\xff\xfe",  # text not UTF-8
        b"GET / HTTP/1.1\r\n",  # not the protocol at all
    ],
)
def test_garbage_is_a_protocol_error(frame: bytes) -> None:
    with pytest.raises(ProtocolError):
        Decoder().feed(frame)


def test_an_agent_handshake_is_an_upgrade_request_h11_accepts() -> None:
    raw = protocol.upgrade_request(
        protocol.CONTROL_PATH, b"relay.example.com", [(b"Phantom-Relay-Name", b"alice")]
    )
    server = h11.Connection(h11.SERVER)
    server.receive_data(raw)
    request = server.next_event()
    assert isinstance(request, h11.Request)
    assert request.target == protocol.CONTROL_PATH
    headers = list(request.headers)
    assert protocol.header(headers, b"upgrade") == protocol.UPGRADE_TOKEN
    assert protocol.header(headers, protocol.NAME_HEADER) == b"alice"


def test_a_header_given_twice_counts_as_missing() -> None:
    headers = [(b"phantom-relay-name", b"a"), (b"Phantom-Relay-Name", b"b")]
    assert protocol.header(headers, protocol.NAME_HEADER) is None
    assert protocol.header([], protocol.NAME_HEADER) is None


def test_answers_are_complete_responses_that_close() -> None:
    client = h11.Connection(h11.CLIENT)
    client.send(h11.Request(method="GET", target="/", headers=[("Host", "x")]))
    client.send(h11.EndOfMessage())
    client.receive_data(protocol.answer(502, "agent offline", html=True))
    response = client.next_event()
    assert isinstance(response, h11.Response) and response.status_code == 502
    assert (b"connection", b"close") in list(response.headers)
    body = client.next_event()
    assert isinstance(body, h11.Data) and b"<h1>agent offline</h1>" in body.data
    assert isinstance(client.next_event(), h11.EndOfMessage)


def test_switching_names_the_protocol_and_the_extra_headers() -> None:
    head = protocol.switching((b"Phantom-Relay-Session", b"k"))
    assert head.startswith(b"HTTP/1.1 101 ")
    assert b"\r\nUpgrade: phantom-relay/1\r\n" in head
    assert head.endswith(b"Phantom-Relay-Session: k\r\n\r\n")


def test_reconnect_delays_grow_to_the_cap_and_never_reach_zero() -> None:
    lows = [protocol.reconnect_delay(n, 0.0) for n in range(12)]
    highs = [protocol.reconnect_delay(n, 0.999999) for n in range(12)]
    assert lows[0] == 0.25 and highs[0] == pytest.approx(0.5)
    assert lows == sorted(lows) and highs == sorted(highs)
    assert highs[-1] == pytest.approx(30.0) and lows[-1] == 15.0
    assert protocol.reconnect_delay(10_000, 0.5) == 22.5  # huge attempt counts stay bounded


def test_an_agent_s_plain_handshake_is_read_without_h11() -> None:
    raw = protocol.upgrade_request(
        protocol.DATA_PATH, b"relay.test:8080", [(b"Phantom-Relay-Connection", b"warm")]
    )
    assert protocol.plain_handshake(raw + b"early") == (
        protocol.DATA_PATH,
        [
            (b"host", b"relay.test:8080"),
            (b"connection", b"Upgrade"),
            (b"upgrade", protocol.UPGRADE_TOKEN),
            (b"phantom-relay-connection", b"warm"),
        ],
        b"early",
    )


_PLAIN = b"GET /.phantom-relay/control HTTP/1.1\r\nHost: r\r\nUpgrade: phantom-relay/1\r\n"


@pytest.mark.parametrize(
    "raw",
    [
        _PLAIN,  # not whole yet
        _PLAIN.replace(b"GET", b"POST") + b"\r\n",
        _PLAIN.replace(b"HTTP/1.1", b"HTTP/1.0") + b"\r\n",
        _PLAIN.replace(b"control", b"controls") + b"\r\n",
        _PLAIN.replace(b"control", b"control?x=1") + b"\r\n",
        _PLAIN.replace(b"GET ", b"GET  ") + b"\r\n",
        _PLAIN.replace(b"\r\n", b"\n") + b"\n",  # bare LF: h11's to read
        _PLAIN + b"Host: s\r\n\r\n",  # two Hosts
        _PLAIN.replace(b"Host: r\r\n", b"") + b"\r\n",  # none
        _PLAIN + b"Content-Length: 3\r\n\r\nabc",
        _PLAIN + b"Transfer-Encoding: chunked\r\n\r\n",
        _PLAIN + b" folded\r\n\r\n",
        _PLAIN + b"bad name: x\r\n\r\n",
        _PLAIN + b"X: a\x00b\r\n\r\n",
        _PLAIN + b"X: " + b"a" * 9000 + b"\r\n\r\n",  # longer than an agent writes
    ],
)
def test_any_other_handshake_is_left_to_h11(raw: bytes) -> None:
    assert protocol.plain_handshake(raw) is None


def test_a_relay_s_plain_101_is_read_without_h11() -> None:
    head = protocol.switching((b"Phantom-Relay-Session", b"k3y"))
    assert protocol.switched_fields(head[:-4]) == [
        (b"connection", b"Upgrade"),
        (b"upgrade", protocol.UPGRADE_TOKEN),
        (b"phantom-relay-session", b"k3y"),
    ]
    assert protocol.switched_fields(b"HTTP/1.1 101") == []


@pytest.mark.parametrize(
    "head",
    [
        b"HTTP/1.1 401 Unauthorized\r\nContent-Length: 3",
        b"HTTP/1.0 101 Switching Protocols",
        b"HTTP/1.1 1010 Switching Protocols",
        b"HTTP/1.1 101 Switching Protocols\r\nno colon",
        b"HTTP/1.1 101 Switching Protocols\r\nbad name: x",
        b"HTTP/1.1 101 Switching Protocols\r\n: empty name",
        b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: a\nb",
        b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: a\x00b",
        b"HTTP/1.1 101 Switching Protocols\nUpgrade: x",
    ],
)
def test_anything_else_is_left_to_h11(head: bytes) -> None:
    assert protocol.switched_fields(head) is None


@pytest.mark.parametrize(
    ("value", "parsed"),
    [
        (b"0", 0),
        (b"2", 2),
        (b"18446744073709551615", None),  # 20 digits
        (b"9" * 5000, None),  # int() would raise on this many digits
        (b"", None),
        (b"-1", None),
        (b"1.5", None),
        (b"\xd9\xa3", None),  # a non-ASCII digit
    ],
)
def test_a_number_field_is_read_only_when_it_fits_a_message(
    value: bytes, parsed: int | None
) -> None:
    assert protocol.number(value) == parsed
