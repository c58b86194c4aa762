"""Writing answers to the client: our own (plain text, refusals, backend failures), stored ones
(cache hits, in one write), and the heads of relayed ones.

The lowest layer of a client connection (see :mod:`phantom.connection`): it knows the client's
h11 state machine, its transport and the exchange record, and nothing of caches or backends
beyond what an answer says.
"""

from __future__ import annotations

import logging

import h11

from . import clients
from . import headers as hdr
from .balancing.pool import NoBackend
from .cache import policy
from .cache.answer import from_stored
from .cache.store import CachedResponse
from .context import ProxyContext, Site
from .endpoint import Endpoint
from .errors import BackendError, PhantomError, RequestRejected
from .exchange import Exchange
from .reasons import reason_phrase
from .stages import Answer, RequestView, Stored

log = logging.getLogger("phantom")


class ClientGone(Exception):
    """The client closed or broke its connection while we were answering it."""


class Answers(Endpoint):
    """How a client connection answers; the state it shares with the layers above."""

    def __init__(self, ctx: ProxyContext, *, tls: bool = False) -> None:
        super().__init__()
        self.ctx = ctx
        # A reload swaps ctx's config, sites and router; this connection keeps what it
        # started with.
        self.config = config = ctx.config
        # The scanner enforces the head limits first; h11's own bound is only a backstop.
        self.h11 = h11.Connection(
            h11.SERVER, max_incomplete_event_size=config.max_header_bytes + 4096
        )
        self.client_ip = "-"
        # X-Forwarded-Proto: what the client spoke to us.
        self.proto = b"https" if tls else b"http"
        # The request being served: what metrics and the access log get when it ends.
        self.exchange = Exchange("-", b"-", b"-")
        # What its server's guards add to its answer (CORS, RateLimit), and whether they own
        # the Access-Control-* fields (the backend's are dropped): set per request.
        self.answer_fields: tuple[tuple[bytes, bytes], ...] = ()
        self.owns_cors = False

    def _send(self, event: h11.Event) -> None:
        data = self.h11.send(event)
        if data:
            if self.is_lost:
                raise ClientGone()
            self.transport.write(data)
            self.exchange.body_bytes += len(data)

    @property
    def _outside_h11(self) -> bool:
        """The request being answered was read by the fast lane: h11 never saw it, and the
        answer is framed by us (its length is the backend's Content-Length)."""
        return self.h11.our_state is h11.IDLE

    def _send_body(self, data: bytes, head: bytes = b"") -> None:
        """Send a part of a relayed body, after ``head`` (the response head, when it has not
        been sent: outside h11 only)."""
        if not self._outside_h11:
            self._send(h11.Data(data=data))
            return
        if self.is_lost:
            raise ClientGone()
        self.transport.write(head + data if head else data)
        self.exchange.body_bytes += len(data)

    def _end_body(self) -> None:
        if not self._outside_h11:
            self._send(h11.EndOfMessage())

    def _start_response(self, status: int, headers: list[tuple[bytes, bytes]]) -> None:
        """Send the head of a response of our own (h11 validates and frames it)."""
        headers.extend(self.answer_fields)
        if self.ctx.draining:
            headers.append((b"Connection", b"close"))
        reason = reason_phrase(status)
        self._send(h11.Response(status_code=status, headers=headers, reason=reason))
        cache_status = next((v for n, v in reversed(headers) if n == b"Cache-Status"), None)
        self._head_sent(status, cache_status)

    def _relayed_head(
        self,
        status: int,
        headers: list[tuple[bytes, bytes]],
        reason: bytes,
        show_cache_status: bool,
    ) -> bytes:
        """The head of a relayed response, for the caller to write. Its fields are a
        backend's (validated when they were parsed) plus phantom's own constants, so h11 is
        sent only the framing fields, which it may rewrite (Content-Length, chunked,
        Connection: close), and the others are appended verbatim instead of being validated
        and rebuilt a second time. Outside h11 every field goes out as is: the fast lane's
        responses are framed by one Content-Length, the backend's. Our Cache-Status (the
        last one) is left out unless ``show_cache_status``; the access log still gets it."""
        headers.extend(self.answer_fields)
        if self.ctx.draining:
            headers.append((b"Connection", b"close"))
        by_h11 = () if self._outside_h11 else _FRAMING_FIELDS
        frame_fields: list[tuple[bytes, bytes]] = []
        lines: list[bytes] = [b""]  # the status line (and h11's framing fields) go first
        cache_status = None  # the last Cache-Status field, ours
        ours = 0  # its line
        for n, v in headers:
            if by_h11 and n.lower() in by_h11:
                frame_fields.append((n, v))
            else:
                lines.append(b"%s: %s\r\n" % (n, v))
                if n == b"Cache-Status":
                    cache_status = v
                    ours = len(lines) - 1
        if ours and not show_cache_status:
            del lines[ours]
        if by_h11:
            framed = h11.Response(status_code=status, headers=frame_fields, reason=reason)
            lines[0] = self.h11.send(framed)[:-2]  # up to, not including, the blank line
        else:
            lines[0] = b"HTTP/1.1 %d %s\r\n" % (status, reason)
        lines.append(b"\r\n")
        self._head_sent(status, cache_status)
        return b"".join(lines)

    def _head_sent(self, status: int, cache_status: bytes | None) -> None:
        exchange = self.exchange
        exchange.status = status
        exchange.body_bytes = 0  # what follows the head
        exchange.cache_status = cache_status

    def _write_head(self, head: bytes) -> None:
        if self.is_lost:
            raise ClientGone()
        self.transport.write(head)

    def _respond_plain(
        self,
        status: int,
        body: bytes,
        *,
        close: bool = False,
        headers: list[tuple[bytes, bytes]] | None = None,
    ) -> None:
        """A response of our own; ``headers`` replace the default text/plain Content-Type."""
        if headers is None:
            headers = [hdr.PLAIN_TEXT]
        headers = [*headers, (b"Content-Length", b"%d" % len(body))]
        if close:
            headers.append((b"Connection", b"close"))
        self._start_response(status, headers)
        self._send(h11.Data(data=body))
        self._send(h11.EndOfMessage())

    def _answer(self, site: Site, answer: Answer | Stored, view: RequestView) -> None:
        """What a stage answered instead of letting the request go on."""
        if isinstance(answer, Stored):
            entry = answer.entry
            self._answer_from_cache(
                site, entry, entry.body, answer.age, answer.cache_status, list(view.headers),
                view.method,
            )
        else:
            self.exchange.refusal = answer.reason
            self._respond_plain(answer.status, answer.body, headers=answer.headers)

    def _answer_from_cache(
        self,
        site: Site,
        entry: CachedResponse,
        body: bytes,
        age: float,
        cache_status: bytes,
        request_headers: list[tuple[bytes, bytes]],
        method: bytes,
    ) -> None:
        """A stored response of ``site``, as it answers this request
        (``from_stored``: 412, 304, 206, 416 or the stored one)."""
        self._respond_cached(
            *from_stored(entry, body, request_headers, method),
            age,
            cache_status,
            method,
            site.config.cache_status_header,
        )

    def _respond_cached(
        self,
        status: int,
        reason: bytes,
        wire_headers: bytes,
        body: bytes,
        age: float,
        cache_status: bytes,
        method: bytes,
        show_cache_status: bool,
    ) -> None:
        """The cache-hit hot path: a stored response in one write, with no per-hit header
        validation.

        h11 still frames the answer: it is sent a Response carrying only the framing fields
        (Content-Length, plus Connection: close while draining), so its state machine and its
        keep-alive decision (it adds ``Connection: close`` itself for HTTP/1.0 or closing
        clients) stay exact, and the head it writes is the start of ours. The stored headers
        follow, serialised once at store time; only Age and Cache-Status are formatted here.
        A 304 gets no framing at all (RFC 9110 §15.4.5; h11 knows it has no body).
        """
        frame_fields = [] if status == 304 else [(b"Content-Length", b"%d" % len(body))]
        if self.ctx.draining:
            frame_fields.append((b"Connection", b"close"))
        conn = self.h11
        head = conn.send(h11.Response(status_code=status, headers=frame_fields, reason=reason))
        parts = [
            head[:-2],  # up to, not including, the blank line that ends the head
            wire_headers,
            *(b"%s: %s\r\n" % field for field in self.answer_fields),
            age_and_status(age, cache_status, show_cache_status),
        ]
        if method != b"HEAD" and body:
            # Passthrough: h11 counts the bytes against Content-Length and hands back the body
            # object itself, uncopied.
            parts += conn.send_with_data_passthrough(h11.Data(data=body)) or ()
        conn.send(h11.EndOfMessage())
        if self.is_lost:
            raise ClientGone()
        self.transport.write(b"".join(parts))
        exchange = self.exchange
        exchange.status = status
        exchange.cache_status = cache_status
        exchange.body_bytes = len(body) if method != b"HEAD" else 0

    def _reject(self, exc: RequestRejected) -> None:
        """Refuse a request: its status, a short body, and the connection closes."""
        log.info("client %s: request refused: %s -> %d", self.client_ip, exc.reason, exc.status)
        headers = None
        if exc.retry_after is not None:
            headers = [hdr.PLAIN_TEXT, (b"Retry-After", b"%d" % exc.retry_after)]
        if self.h11.our_state in (h11.IDLE, h11.SEND_RESPONSE):
            self._respond_plain(
                exc.status, f"{exc.reason}\n".encode(), close=True, headers=headers
            )

    def _reject_malformed(self, exc: h11.RemoteProtocolError) -> None:
        status = exc.error_status_hint
        log.info("client %s: malformed request: %s -> %d", self.client_ip, exc, status)
        if self.h11.our_state in (h11.IDLE, h11.SEND_RESPONSE):
            self._respond_plain(status, f"Bad request: {exc}\n".encode(), close=True)

    def _unsendable(self, exc: h11.LocalProtocolError) -> None:
        """h11 refused to send a message we built: before our answer started, the request
        for the backend (made from the client's: 400); after, our answer (made from the
        backend's: 502, and the connection ends). One log line, never a traceback."""
        if self.h11.our_state in (h11.IDLE, h11.SEND_RESPONSE):
            self._reject(RequestRejected(400, f"request can't be forwarded: {exc}"))
            return
        log.warning("client %s: response can't be relayed: %s -> 502", self.client_ip, exc)
        self.exchange.status = 502
        self.abort()

    def _log_backend(self, site: Site, method: bytes, target: bytes, what: str) -> None:
        """One warning line saying what happened to whom: client, request, backend. Lines
        about one backend failing the same way are one kind (``RepeatedWarnings``), whoever
        the client and whatever the path."""
        backend = self.exchange.backend or site.config.proxy_url  # the one tried last
        log.warning(
            "client %s: %s %s -> %s: %s",
            self.client_ip,
            method.decode("latin-1"),
            target.decode("latin-1"),
            backend,
            what,
            extra={"repeat_key": ("backend", backend, what)},
        )

    def _backend_failed(
        self, site: Site, request: h11.Request, exc: PhantomError, *, close: bool = False
    ) -> str:
        headers = None
        if isinstance(exc, BackendError):
            self.exchange.error_kind = exc.kind
        if isinstance(exc, NoBackend):
            # The balancer logs when its server has no backend left and when it has one
            # again, not each request it turns away.
            self.exchange.backend = None
            headers = [hdr.PLAIN_TEXT, (b"Retry-After", b"%d" % exc.retry_after)]
        else:
            self._log_backend(site, request.method, request.target, f"{exc} ({exc.status})")
        if self.h11.our_state is not h11.SEND_RESPONSE:
            self.abort()
            return "close"
        # An unread or broken request body means the connection can't be reused.
        close = close or self.h11.their_state in (h11.SEND_BODY, h11.ERROR)
        self._respond_plain(exc.status, f"{exc.public}\n".encode(), close=close, headers=headers)
        return "close" if close else "next"


#: What h11 reads and rewrites in a response head it sends.
_FRAMING_FIELDS = frozenset({b"content-length", b"transfer-encoding", b"connection"})


def age_and_status(age: float, cache_status: bytes, shown: bool) -> bytes:
    """The per-hit end of a cached response's head, blank line included; Cache-Status only
    when ``shown`` (``cache_status_header``)."""
    if not shown:
        return b"Age: %s\r\n\r\n" % policy.format_age(age)
    return b"Age: %s\r\nCache-Status: %s\r\n\r\n" % (policy.format_age(age), cache_status)


def over_limit(reason: str) -> RequestRejected:
    """A 503 for a capacity limit: the client may try again shortly."""
    return RequestRejected(503, reason, retry_after=clients.RETRY_AFTER_SECONDS)
