"""The control API: a small HTTP/1.1 server on its own port for operators and deploy pipelines.

Off unless ``control_port`` is set. One request per connection (``Connection: close``): control
calls are rare and a short-lived connection keeps this server trivially correct. Every call but
``GET /healthz`` needs ``Authorization: Bearer <control_auth>`` when ``control_auth`` is set.
Without ``control_auth``, a state-changing call must come from a program, not from a web page
(``check_not_from_a_page``).

Endpoints are registered by the parts of phantom that own them (``ControlServer.route``); a
handler gets the parsed request and returns a :class:`ControlResponse`.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import ipaddress
import json
import logging
import os
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import h11

from .config import host_port
from .messages import MessageTooLarge, read_message
from .reasons import reason_phrase
from .routing import request_host

log = logging.getLogger("phantom.control")

MAX_BODY_BYTES = 1024 * 1024
READ_TIMEOUT = 10.0


@dataclass(frozen=True, slots=True)
class ControlRequest:
    method: str
    path: str
    headers: list[tuple[bytes, bytes]]
    body: bytes

    def json(self) -> Any:
        """The body as JSON; an empty body is an empty object. Raises ControlError(400)."""
        if not self.body.strip():
            return {}
        try:
            return json.loads(self.body)
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise ControlError(400, f"invalid JSON body: {exc}") from None

    def json_object(self) -> dict[str, Any]:
        data = self.json()
        if not isinstance(data, dict):
            raise ControlError(400, "the body must be a JSON object")
        return data


@dataclass(frozen=True, slots=True)
class ControlResponse:
    status: int
    body: bytes
    content_type: bytes = b"application/json"
    headers: list[tuple[bytes, bytes]] = field(default_factory=list)

    @classmethod
    def json(cls, status: int, data: Any) -> ControlResponse:
        return cls(status, json.dumps(data).encode() + b"\n")


class ControlError(Exception):
    """Ends a control call with ``status`` and a JSON ``{"error": message}``."""

    def __init__(
        self, status: int, message: str, headers: Sequence[tuple[bytes, bytes]] = ()
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.headers = list(headers)


Handler = Callable[[ControlRequest], Awaitable[ControlResponse]]


def check_bearer(headers: list[tuple[bytes, bytes]], token: str) -> None:
    """401 without credentials, 403 with wrong ones; compared in constant time."""
    challenge = [(b"WWW-Authenticate", b'Bearer realm="phantom"')]
    value = next((v for n, v in headers if n == b"authorization"), None)
    if value is None:
        raise ControlError(401, "authorization required", challenge)
    scheme, _, credentials = value.partition(b" ")
    if scheme.lower() != b"bearer":
        raise ControlError(401, "expected a Bearer token", challenge)
    if not hmac.compare_digest(credentials.strip(), token.encode()):
        raise ControlError(403, "wrong token")


def check_not_from_a_page(headers: list[tuple[bytes, bytes]]) -> None:
    """Without ``control_auth`` the port is the only key, and any web page open in a browser on
    a machine that can reach it holds that key too. Such a page can POST across sites without a
    CORS preflight only with a form's or text/plain's Content-Type, always sends ``Origin``
    when it does, and after rebinding its own DNS name to this address (which defeats the
    browser's same-origin check) still sends that name as ``Host``. So a state-changing call
    needs ``Content-Type: application/json`` (415), no ``Origin`` and a ``Host`` that is an IP
    literal or ``localhost`` (403); phantom's own commands, curl and scripts send just that."""
    host = origin = content_type = None
    for name, value in headers:
        if name == b"host":
            host = value
        elif name == b"origin":
            origin = value
        elif name == b"content-type":
            content_type = value
    hint = "set control_auth to call the control API from elsewhere"
    if not _is_address(request_host(host)):
        shown = "none" if host is None else repr(host.decode("latin-1"))
        raise ControlError(
            403, f"Host must be an IP address or localhost without control_auth (got {shown}); "
            + hint
        )
    if origin is not None:
        raise ControlError(403, f"calls from web pages (Origin) are refused; {hint}")
    media_type = (content_type or b"").partition(b";")[0].strip().lower()
    if media_type != b"application/json":
        raise ControlError(415, "send the call with Content-Type: application/json")


def _is_address(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False  # a name, which a web page's DNS may point here
    return True


class ControlServer:
    """The control API on ``host:port``, or on the Unix socket ``path`` instead: the channel
    through which the supervisor of ``workers = N`` reaches each worker (in a directory only
    phantom's user can enter, so it carries no token)."""

    def __init__(
        self, host: str, port: int, auth: str | None, *, path: str | None = None
    ) -> None:
        self.host = host
        self.requested_port = port
        self.auth = auth
        self.path = path
        self.port: int | None = None
        self._routes: dict[str, dict[str, Handler]] = {}
        self._public: set[str] = set()
        self._fallback: Handler | None = None
        self._server: asyncio.Server | None = None

    def route(self, method: str, path: str, handler: Handler, *, public: bool = False) -> None:
        """Register ``handler`` for ``method path``; ``public`` skips the token check."""
        self._routes.setdefault(path, {})[method] = handler
        if public:
            self._public.add(path)

    def fallback(self, handler: Handler) -> None:
        """Let ``handler`` answer every call no route claims (after the same checks)."""
        self._fallback = handler

    @property
    def sockets(self) -> list[int]:
        """The listening sockets' descriptors (a forked worker closes its copies)."""
        if self._server is None:
            return []
        return [sock.fileno() for sock in self._server.sockets]

    async def start(self) -> None:
        if self.path is not None:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.path)  # left by a worker that died in this seat
            self._server = await asyncio.start_unix_server(self._serve, self.path)
            return
        self._server = await asyncio.start_server(
            self._serve, self.host, self.requested_port, reuse_address=True
        )
        self.port = self._server.sockets[0].getsockname()[1]
        log.info("control API on http://%s", host_port(self.host, self.port))

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        conn = h11.Connection(h11.SERVER)
        try:
            request = await asyncio.wait_for(_read_request(conn, reader), READ_TIMEOUT)
            response = await self._dispatch(request)
        except ControlError as exc:
            response = _error_response(exc)
        except (h11.RemoteProtocolError, asyncio.TimeoutError, ConnectionError) as exc:
            response = _error_response(ControlError(400, f"bad request: {exc}"))
        try:
            if conn.our_state in (h11.IDLE, h11.SEND_RESPONSE):
                writer.write(_serialise(conn, response))
                await writer.drain()
        except (ConnectionError, h11.LocalProtocolError):
            pass
        finally:
            writer.close()

    async def _dispatch(self, request: ControlRequest) -> ControlResponse:
        methods = self._routes.get(request.path)
        if methods is None and self._fallback is not None:
            handler = self._fallback
        elif methods is None:
            raise ControlError(404, f"no such endpoint: {request.path}")
        elif (found := methods.get(request.method)) is not None:
            handler = found
        else:
            allow = ", ".join(sorted(methods)).encode()
            raise ControlError(405, f"use {allow.decode()}", [(b"Allow", allow)])
        if self.auth is not None and request.path not in self._public:
            check_bearer(request.headers, self.auth)
        elif self.auth is None and request.method not in ("GET", "HEAD"):
            check_not_from_a_page(request.headers)
        try:
            return await handler(request)
        except ControlError:
            raise
        except Exception:
            log.exception("control %s %s failed", request.method, request.path)
            raise ControlError(500, "internal error (see the log)") from None


async def _read_request(conn: h11.Connection, reader: asyncio.StreamReader) -> ControlRequest:
    try:
        message = await read_message(conn, reader, MAX_BODY_BYTES)
    except MessageTooLarge as exc:
        raise ControlError(413, str(exc)) from None
    if message is None:
        raise h11.RemoteProtocolError("connection closed before a complete request")
    head, body = message
    assert isinstance(head, h11.Request)  # a server's h11 only parses requests
    path = head.target.decode("latin-1").partition("?")[0]
    return ControlRequest(head.method.decode("ascii"), path, list(head.headers), body)


def _error_response(exc: ControlError) -> ControlResponse:
    response = ControlResponse.json(exc.status, {"error": exc.message})
    response.headers.extend(exc.headers)
    return response


def _serialise(conn: h11.Connection, response: ControlResponse) -> bytes:
    headers = [
        (b"Content-Type", response.content_type),
        (b"Content-Length", b"%d" % len(response.body)),
        (b"Connection", b"close"),
        (b"Cache-Control", b"no-store"),
        *response.headers,
    ]
    head = h11.Response(
        status_code=response.status, headers=headers, reason=reason_phrase(response.status)
    )
    data = conn.send(head) or b""
    return data + (conn.send(h11.Data(data=response.body)) or b"") + (
        conn.send(h11.EndOfMessage()) or b""
    )
