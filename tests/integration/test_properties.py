"""Hypothesis properties over real sockets (issue 6, "Property-based and fuzz tests").

Bounded for CI (a few seconds); `python benchmarks/fuzz.py --examples 2000` runs the long version
(it sets PHANTOM_FUZZ_EXAMPLES).
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Sequence

from conftest import RawClient, proxied, run
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from origin import echo

from phantom.headers import HOP_BY_HOP

EXAMPLES = int(os.environ.get("PHANTOM_FUZZ_EXAMPLES", "15"))
bounded = settings(
    max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)

TOKEN_CHARS = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-!#$%&'*+.^_`|~"
# Ours, or (from a client that is not a trusted proxy) removed as only a proxy may set them.
RESERVED = HOP_BY_HOP | {b"host", b"content-length", b"via", b"expect", b"forwarded"}
RESERVED |= {b"x-real-ip", b"x-original-url", b"x-rewrite-url", b"x-host"}
RESERVED |= {b"true-client-ip", b"x-client-ip"}
names = st.text(TOKEN_CHARS, min_size=1, max_size=20).filter(
    lambda n: n.lower().encode() not in RESERVED
    and not n.lower().startswith(("proxy-", "x-forwarded-"))
    and "_" not in n
)
values = st.text(st.characters(min_codepoint=0x21, max_codepoint=0x7E), max_size=40)
header_sets = st.lists(st.tuples(names, values), max_size=15)


Forwarded = tuple[bytes, list[tuple[bytes, bytes]]]


async def forward(raw: bytes, cuts: Sequence[int] = ()) -> Forwarded:
    """Send `raw` (split at `cuts`) through a fresh proxy: the body and headers the origin got."""
    async with proxied({"/echo": echo}) as (origin, proxy):
        async with await RawClient.connect(proxy.port) as client:
            bounds = [0, *cuts, len(raw)]
            pieces = [raw[a:b] for a, b in zip(bounds, bounds[1:], strict=False)]
            for piece in pieces:
                await client.send(piece)
                await asyncio.sleep(0)
            response = await client.read_response()
        assert response.status == 200, response.head
        return origin.last.body, origin.last.raw_headers


@bounded
@given(header_sets)
def test_header_sets_survive_forwarding_in_order_with_repeats(
    headers: list[tuple[str, str]],
) -> None:
    raw = b"GET /echo HTTP/1.1\r\nHost: h.test\r\n"
    raw += b"".join(f"{n}: {v}\r\n".encode() for n, v in headers) + b"\r\n"
    _, got = run(forward(raw), 10)
    ours = {b"host", b"x-forwarded-for", b"x-forwarded-proto", b"x-forwarded-host", b"via"}
    ours |= {b"forwarded"}
    kept = [(n, v) for n, v in got if n.lower() not in ours]
    assert kept == [(n.encode(), v.strip().encode()) for n, v in headers]


@bounded
@given(st.binary(min_size=1, max_size=2000), st.lists(st.integers(1, 1999), max_size=8))
def test_any_chunk_boundaries_give_the_same_forwarded_request(
    body: bytes, cuts: list[int]
) -> None:
    chunks = [body[i : i + 100] for i in range(0, len(body), 100)]
    framed = b"".join(b"%x\r\n%s\r\n" % (len(c), c) for c in chunks) + b"0\r\n\r\n"
    raw = b"POST /echo HTTP/1.1\r\nHost: h.test\r\nTransfer-Encoding: chunked\r\n\r\n" + framed
    points = sorted({c for c in cuts if c < len(raw)})
    got_body, got_headers = run(forward(raw, points), 10)
    assert got_body == body
    assert (b"Transfer-Encoding", b"chunked") in got_headers


@bounded
@given(st.lists(st.binary(min_size=1, max_size=300), min_size=1, max_size=5))
def test_arbitrary_bytes_never_crash_the_listener(streams: list[bytes]) -> None:
    async def scenario() -> None:
        async with proxied({"/echo": echo}, header_timeout=0.5) as (_, proxy):
            for data in streams:
                async with await RawClient.connect(proxy.port) as client:
                    await client.send(data)
                    client.shutdown_write()
                    answer = await client.read_until_eof(5)
                # Each connection ends in a close, after at most answers with a status line.
                if answer:
                    assert answer.startswith(b"HTTP/1.1 "), answer[:100]
                    status = int(answer[9:12])
                    assert 200 <= status < 600
            # the listener still serves a valid request
            async with await RawClient.connect(proxy.port) as client:
                assert (await client.request("GET", "/echo")).status == 200
            assert proxy.open_connections <= 1

    run(scenario(), 30)
