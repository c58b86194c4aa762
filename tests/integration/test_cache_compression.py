"""compress_strategy through a running proxy: a stored body is compressed once; clients that
accept the coding get those bytes, the others identity, with Vary and Content-Length right."""

from __future__ import annotations

import gzip
import zlib

import brotli
import pytest
from conftest import async_test, cache_status, get, proxied
from origin import OriginRequest, Reply

PAGE = b"<html><body>" + b"<p>hello from the origin</p>" * 200 + b"</body></html>"


def page(*extra: tuple[str, str], body: bytes = PAGE) -> Reply:
    headers: list[tuple[str | bytes, str | bytes | int]] = [
        ("Content-Type", "text/html"),
        ("Cache-Control", "max-age=60"),
        ("ETag", '"p1"'),
        *extra,
    ]
    return Reply(200, headers, body)


DECODERS = {"br": brotli.decompress, "gzip": gzip.decompress, "deflate": zlib.decompress}


@pytest.mark.parametrize(
    ("strategy", "token"), [("brotli", "br"), ("gzip", "gzip"), ("deflate", "deflate")]
)
@async_test()
async def test_compressed_storage_serves_both_kinds_of_client(strategy: str, token: str) -> None:
    async with proxied({"/p": page()}, compress_strategy=strategy) as (origin, proxy):
        miss = await get(proxy.port, "/p")
        assert miss.body == PAGE and miss.get("content-encoding") is None
        assert miss.get("vary") == "Accept-Encoding"  # said from the first answer on

        coded = await get(proxy.port, "/p", [("Accept-Encoding", f"{token}, identity")])
        assert "hit" in cache_status(coded)[1]
        assert coded.get("content-encoding") == token
        assert coded.content_length == len(coded.body) < len(PAGE)
        assert DECODERS[token](coded.body) == PAGE
        assert "accept-encoding" in (coded.get("vary") or "").lower()

        for headers in ([], [("Accept-Encoding", f"{token};q=0")], [("Accept-Encoding", "xz")]):
            plain = await get(proxy.port, "/p", headers)
            assert plain.body == PAGE and plain.content_length == len(PAGE)
            assert plain.get("content-encoding") is None
            assert "accept-encoding" in (plain.get("vary") or "").lower()
        assert origin.requests["/p"] == 1


@async_test()
async def test_compress_strategy_default_is_brotli_and_none_stores_identity() -> None:
    async with proxied({"/p": page()}) as (origin, proxy):
        await get(proxy.port, "/p")
        assert (await get(proxy.port, "/p", [("Accept-Encoding", "br")])).get(
            "content-encoding"
        ) == "br"
    async with proxied({"/p": page()}, compress_strategy="none") as (origin, proxy):
        await get(proxy.port, "/p")
        hit = await get(proxy.port, "/p", [("Accept-Encoding", "br")])
        assert hit.get("content-encoding") is None and hit.body == PAGE
        assert hit.get("vary") is None


@async_test()
async def test_origin_encoded_bodies_are_kept_as_they_are() -> None:
    zipped = gzip.compress(PAGE)
    reply = page(("Content-Encoding", "gzip"), ("Vary", "Accept-Encoding"), body=zipped)
    async with proxied({"/z": reply}) as (origin, proxy):
        await get(proxy.port, "/z", [("Accept-Encoding", "gzip")])
        hit = await get(proxy.port, "/z", [("Accept-Encoding", "gzip")])
        assert "hit" in cache_status(hit)[1]
        assert hit.get("content-encoding") == "gzip" and hit.body == zipped


@async_test()
async def test_revalidated_compressed_entry_keeps_its_body() -> None:
    """A 304 refreshes a compressed entry: the origin's fields are merged (not the Vary and
    Content-Encoding phantom added), and the body still decodes to the original."""

    def handler(request: OriginRequest) -> Reply:
        if request.get("if-none-match") == '"p1"':
            return Reply(304, [("ETag", '"p1"'), ("Cache-Control", "max-age=60")])
        return Reply(
            200,
            [("Content-Type", "text/html"), ("Cache-Control", "max-age=0"), ("ETag", '"p1"')],
            PAGE,
        )

    async with proxied({"/r": handler}) as (origin, proxy):
        await get(proxy.port, "/r")
        refreshed = await get(proxy.port, "/r", [("Accept-Encoding", "br")])
        assert cache_status(refreshed)[1]["fwd-status"] == "304"
        assert brotli.decompress(refreshed.body) == PAGE
        for headers in ([("Accept-Encoding", "br")], [("Accept-Encoding", "gzip")]):
            hit = await get(proxy.port, "/r", headers)
            assert "hit" in cache_status(hit)[1], headers
        assert hit.body == PAGE
        assert origin.requests["/r"] == 2


@async_test()
async def test_small_bodies_are_stored_as_they_are_and_do_not_vary() -> None:
    """A body too small to gain from compression is stored as is: every client gets the same
    bytes, so neither the miss nor the hits add Vary: Accept-Encoding (RFC 9110 §12.5.5: Vary
    lists what the selection depends on), and the origin's own Vary stays verbatim."""
    async with proxied({"/s": page(("Vary", "Foo"), body=b"<p>tiny</p>")}) as (origin, proxy):
        miss = await get(proxy.port, "/s", [("Accept-Encoding", "br")])
        hit = await get(proxy.port, "/s", [("Accept-Encoding", "br")])
        assert "hit" in cache_status(hit)[1]
        assert hit.get("content-encoding") is None and hit.body == b"<p>tiny</p>"
        assert miss.get_all("vary") == hit.get_all("vary") == ["Foo"]


@pytest.mark.parametrize(
    ("vary", "sent"),
    [
        (["*"], ["*"]),
        (["Cookie, *"], ["Cookie, *"]),
        (["Cookie, ACCEPT-ENCODING"], ["Cookie, ACCEPT-ENCODING"]),
        (["Cookie", "accept-encoding"], ["Cookie", "accept-encoding"]),
        (["Cookie"], ["Cookie", "Accept-Encoding"]),
    ],
)
@async_test()
async def test_compression_keeps_the_origins_vary(vary: list[str], sent: list[str]) -> None:
    """With the default compress_strategy (brotli), Vary: * stays * (and is never a hit);
    Accept-Encoding is added only when no Vary line lists it, in any case."""
    reply = page(*(("Vary", line) for line in vary))
    async with proxied({"/v": reply}) as (origin, proxy):
        for _ in range(2):
            response = await get(proxy.port, "/v", [("Accept-Encoding", "br")])
            assert response.get_all("vary") == sent
        star = "*" in ",".join(vary)
        assert ("hit" in cache_status(response)[1]) is not star
        assert origin.requests["/v"] == (2 if star else 1)
