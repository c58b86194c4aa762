"""Helpers for the integration tests: real sockets on 127.0.0.1, port 0 only.

* `async_test(timeout)`: turns an `async def` test into a sync one run by `asyncio.run`, bounded
  by `asyncio.timeout` (we do not use pytest-asyncio).
* `proxy_config(...)` / `running_proxy(...)` / `proxied(...)`: a phantom proxy (its public
  `create_proxy` API) in front of a test backend.
* `RawClient` / `fetch`: a tiny HTTP/1.x client over asyncio streams that sends arbitrary bytes
  and parses responses itself (Content-Length, chunked, close-delimited; truncation reported,
  not hidden), for pipelining, malformed requests and HTTP/1.0.

Test modules import these with `from conftest import ...`.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import hashlib
import inspect
import ssl
from collections.abc import AsyncIterator, Callable, Coroutine, Iterable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any, TypeVar

from origin import LOCALHOST, TestOrigin, set_linger_zero

from phantom.config import Config

T = TypeVar("T")

DEFAULT_TEST_TIMEOUT = 20.0
READ_TIMEOUT = 10.0


# -- running async tests -------------------------------------------------------------------


def run(coro: Coroutine[Any, Any, T], timeout: float = DEFAULT_TEST_TIMEOUT) -> T:
    """Run `coro` in a fresh event loop, failing with TimeoutError after `timeout` seconds."""

    async def bounded() -> T:
        async with asyncio.timeout(timeout):
            return await coro

    return asyncio.run(bounded())


def async_test(
    timeout: float = DEFAULT_TEST_TIMEOUT,
) -> Callable[[Callable[..., Coroutine[Any, Any, None]]], Callable[..., None]]:
    """Decorator: an `async def test_x(...)` becomes a sync test run with `run(...)`.

    The wrapper keeps the signature (so fixtures and parametrize work) but is a plain function,
    so pytest needs no async plugin.
    """

    def decorate(fn: Callable[..., Coroutine[Any, Any, None]]) -> Callable[..., None]:
        def wrapper(*args: Any, **kwargs: Any) -> None:
            run(fn(*args, **kwargs), timeout)

        wrapper.__name__ = fn.__name__
        wrapper.__qualname__ = fn.__qualname__
        wrapper.__doc__ = fn.__doc__
        wrapper.__module__ = fn.__module__
        wrapper.__signature__ = inspect.signature(fn)  # type: ignore[attr-defined]
        wrapper.pytestmark = getattr(fn, "pytestmark", [])  # type: ignore[attr-defined]
        return wrapper

    return decorate


# -- the proxy under test ------------------------------------------------------------------

# Options named like a root key of the config go to the root table; all others to the server.
ROOT_KEYS = {f.name for f in dataclasses.fields(Config)} - {"servers", "source"}


def proxy_config(
    backend_port: int,
    base_path: str = "",
    *,
    scheme: str = "http",
    backend_host: str = LOCALHOST,
    **options: Any,
) -> dict[str, Any]:
    """A config dict for one `[server.app]` in front of scheme://backend_host:backend_port.

    Options named like root keys (backend_timeout, ...) go to the root table, the rest
    (cache_ttl, enable_websocket, ...) to the server table.
    """
    root: dict[str, Any] = {"listen": LOCALHOST, "http_port": 0, "shutdown_timeout": 1}
    server: dict[str, Any] = {"proxy_url": f"{scheme}://{backend_host}:{backend_port}{base_path}"}
    for key, value in options.items():
        (root if key in ROOT_KEYS else server)[key] = value
    return {**root, "server": {"app": server}}


def servers_config(servers: dict[str, dict[str, Any]], **root: Any) -> dict[str, Any]:
    """A config dict with several `[server.NAME]` tables (each needs its own proxy_url)."""
    return {"listen": LOCALHOST, "http_port": 0, "shutdown_timeout": 1, **root, "server": servers}


@asynccontextmanager
async def running_proxy(backend_port: int, **options: Any) -> AsyncIterator[Any]:
    """A started phantom proxy in front of backend_port; closed on exit."""
    from phantom import create_proxy

    async with create_proxy(proxy_config(backend_port, **options)) as proxy:
        assert isinstance(proxy.port, int) and proxy.port > 0
        yield proxy


@asynccontextmanager
async def proxied(
    routes: dict[str, Any] | None = None, **options: Any
) -> AsyncIterator[tuple[TestOrigin, Any]]:
    """A `TestOrigin` with `routes` and a phantom proxy in front of it."""
    async with TestOrigin(routes) as origin, running_proxy(origin.port, **options) as proxy:
        yield origin, proxy


# -- a raw HTTP client ---------------------------------------------------------------------


@dataclass
class RawResponse:
    status: int
    reason: str
    version: str  # "HTTP/1.1"
    headers: list[tuple[str, str]]  # lowercase names, order and repeats kept
    head: bytes  # the head exactly as received (status line ... CRLF CRLF)
    body: bytes = b""
    chunked: bool = False
    complete: bool = True  # False: the connection ended before the framing said the body ends
    trailers: list[tuple[str, str]] = field(default_factory=list)

    def get_all(self, name: str) -> list[str]:
        key = name.lower()
        return [v for n, v in self.headers if n == key]

    def get(self, name: str) -> str | None:
        values = self.get_all(name)
        return values[0] if values else None

    def has(self, name: str) -> bool:
        return bool(self.get_all(name))

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.body).hexdigest()

    @property
    def content_length(self) -> int | None:
        value = self.get("content-length")
        return int(value) if value is not None else None


class ClosedBeforeResponse(Exception):
    """The connection ended before a complete response head arrived."""


def build_request(
    method: str,
    target: str,
    headers: Sequence[tuple[str, str]] = (),
    body: bytes = b"",
    *,
    chunks: Iterable[bytes] | None = None,
    version: str = "HTTP/1.1",
    host: str | None = "phantom.test",
) -> bytes:
    """Request bytes. Adds Host (unless host is None or given), Content-Length for a body, or
    Transfer-Encoding: chunked and chunk framing when `chunks` is given."""
    lines = [f"{method} {target} {version}"]
    names = {n.lower() for n, _ in headers}
    if host is not None and "host" not in names:
        lines.append(f"Host: {host}")
    lines += [f"{n}: {v}" for n, v in headers]
    payload = body
    if chunks is not None:
        lines.append("Transfer-Encoding: chunked")
        payload = b"".join(b"%x\r\n%s\r\n" % (len(c), c) for c in chunks if c) + b"0\r\n\r\n"
    elif (body or method in ("POST", "PUT")) and "content-length" not in names:
        lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + payload


class RawClient:
    """One client TCP connection to 127.0.0.1:port."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer

    @classmethod
    async def connect(
        cls, port: int, tls: ssl.SSLContext | None = None, source: str | None = None
    ) -> RawClient:
        """Connect to 127.0.0.1:port; with ``tls``, over TLS (server name "localhost"); from
        the loopback address ``source`` (another client: "127.0.0.2") when given."""
        reader, writer = await asyncio.open_connection(
            LOCALHOST,
            port,
            limit=1024 * 1024,
            ssl=tls,
            server_hostname="localhost" if tls is not None else None,
            local_addr=(source, 0) if source is not None else None,
        )
        return cls(reader, writer)

    async def __aenter__(self) -> RawClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        self.writer.close()
        with contextlib.suppress(Exception):
            await self.writer.wait_closed()

    def vanish(self) -> None:
        """Disappear abruptly: close with a RST."""
        set_linger_zero(self.writer.get_extra_info("socket"))
        self.writer.transport.abort()

    async def send(self, data: bytes) -> None:
        self.writer.write(data)
        await self.writer.drain()

    def shutdown_write(self) -> None:
        """Half-close: send a FIN, keep reading."""
        self.writer.write_eof()

    async def request(
        self,
        method: str,
        target: str,
        headers: Sequence[tuple[str, str]] = (),
        body: bytes = b"",
        **kwargs: Any,
    ) -> RawResponse:
        await self.send(build_request(method, target, headers, body, **kwargs))
        return await self.read_response(head_request=method == "HEAD")

    async def read_head(self, timeout: float = READ_TIMEOUT) -> bytes:
        try:
            async with asyncio.timeout(timeout):
                return await self.reader.readuntil(b"\r\n\r\n")
        except asyncio.IncompleteReadError as exc:
            raise ClosedBeforeResponse(f"connection closed; got {exc.partial[:200]!r}") from None
        except ConnectionResetError as exc:
            raise ClosedBeforeResponse(f"connection reset: {exc}") from None

    async def read_response(
        self, *, head_request: bool = False, timeout: float = READ_TIMEOUT
    ) -> RawResponse:
        """Read one response; 1xx other than 101 are skipped."""
        async with asyncio.timeout(timeout):
            while True:
                response = parse_head(await self.read_head())
                if response.status == 101 or response.status >= 200:
                    break
            if head_request or response.status in (101, 204, 304):
                return response
            await self._read_body(response)
            return response

    async def _read_body(self, response: RawResponse) -> None:
        te = ",".join(response.get_all("transfer-encoding")).lower()
        try:
            if "chunked" in te:
                response.chunked = True
                response.complete = False
                parts = []
                while True:
                    size_line = await self.reader.readuntil(b"\r\n")
                    size = int(size_line.split(b";")[0].strip(), 16)
                    if size == 0:
                        break
                    parts.append(await self.reader.readexactly(size))
                    response.body = b"".join(parts)
                    if await self.reader.readexactly(2) != b"\r\n":
                        raise AssertionError("chunk not followed by CRLF")
                while (line := await self.reader.readuntil(b"\r\n")) != b"\r\n":
                    name, _, value = line.decode("latin-1").partition(":")
                    response.trailers.append((name.strip().lower(), value.strip()))
                response.complete = True
            elif response.content_length is not None:
                length = response.content_length
                try:
                    response.body = await self.reader.readexactly(length)
                except asyncio.IncompleteReadError as exc:
                    response.body = exc.partial
                    response.complete = False
            else:
                response.body = await self.reader.read()  # close-delimited
        except asyncio.IncompleteReadError as exc:
            response.body += exc.partial if not response.chunked else b""
            response.complete = False
        except ConnectionResetError:
            response.complete = False

    async def read_exactly(self, n: int, timeout: float = READ_TIMEOUT) -> bytes:
        async with asyncio.timeout(timeout):
            return await self.reader.readexactly(n)

    async def read_until_eof(self, timeout: float = READ_TIMEOUT) -> bytes:
        """All bytes until the server closes (or resets) the connection."""
        chunks = []
        async with asyncio.timeout(timeout):
            while True:
                try:
                    data = await self.reader.read(256 * 1024)
                except ConnectionResetError:
                    break
                if not data:
                    break
                chunks.append(data)
        return b"".join(chunks)

    async def is_closed_by_peer(self, timeout: float = 2.0) -> bool:
        """True when the peer closes within `timeout` without sending anything more."""
        try:
            async with asyncio.timeout(timeout):
                data = await self.reader.read(1)
        except TimeoutError:
            return False
        except ConnectionResetError:
            return True
        if data:
            raise AssertionError(f"expected the connection to close, got {data!r}")
        return True


def parse_head(head: bytes) -> RawResponse:
    lines = head.decode("latin-1").split("\r\n")
    version, status, *rest = lines[0].split(" ", 2)
    assert version.startswith("HTTP/"), f"not an HTTP response head: {head[:200]!r}"
    headers = []
    for line in lines[1:]:
        if not line:
            continue
        name, sep, value = line.partition(":")
        assert sep, f"bad header line {line!r}"
        headers.append((name.strip().lower(), value.strip()))
    return RawResponse(int(status), rest[0] if rest else "", version, headers, head)


async def fetch(
    port: int,
    method: str,
    target: str,
    headers: Sequence[tuple[str, str]] = (),
    body: bytes = b"",
    tls: ssl.SSLContext | None = None,
    **kwargs: Any,
) -> RawResponse:
    """One request on a new connection (over TLS with ``tls``); closed afterwards."""
    async with await RawClient.connect(port, tls) as client:
        return await client.request(method, target, headers, body, **kwargs)


async def get(port: int, target: str, headers: Sequence[tuple[str, str]] = ()) -> RawResponse:
    return await fetch(port, "GET", target, headers)


def cache_status(response: RawResponse) -> tuple[str, dict[str, str | None]]:
    """Parse the (last) `Cache-Status` member: ("phantom", {"hit": None, "ttl": "42", ...})."""
    values = response.get_all("cache-status")
    assert values, f"no Cache-Status header in {response.head!r}"
    member = ",".join(values).split(",")[-1].strip()
    name, *params = [p.strip() for p in member.split(";")]
    parsed: dict[str, str | None] = {}
    for param in params:
        key, sep, value = param.partition("=")
        parsed[key.strip().lower()] = value.strip().strip('"') if sep else None
    return name, parsed


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


# -- TLS certificates (trustme) -------------------------------------------------------------


@dataclass
class TLSFiles:
    """A throwaway CA and a certificate it signed for localhost and 127.0.0.1, as PEM files."""

    ca: Any  # trustme.CA
    ca_path: str
    cert_path: str
    key_path: str

    def server_context(self) -> ssl.SSLContext:
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(self.cert_path, self.key_path)
        return context

    def client_context(self) -> ssl.SSLContext:
        context = ssl.create_default_context(cafile=self.ca_path)
        context.set_alpn_protocols(["h2", "http/1.1"])  # as a browser offers
        return context


def make_tls_files(directory: Any, name: str = "tls") -> TLSFiles:
    import trustme

    ca = trustme.CA()
    cert = ca.issue_cert("localhost", "127.0.0.1")
    ca_path, cert_path, key_path = (
        str(directory / f"{name}-{p}.pem") for p in ("ca", "cert", "key")
    )
    ca.cert_pem.write_to_path(ca_path)
    cert.private_key_pem.write_to_path(key_path)
    cert.cert_chain_pems[0].write_to_path(cert_path)
    with open(cert_path, "ab") as chain:
        for pem in cert.cert_chain_pems[1:]:
            chain.write(pem.bytes())
    return TLSFiles(ca, ca_path, cert_path, key_path)
