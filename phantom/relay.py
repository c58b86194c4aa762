"""Relaying a backend's answer to the client: its head (our fields added), its body as it
arrives, and on the way the cache filled (a 304 merged into the entry it validated, a stale
entry served when the backend fails and the entry allows it).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass

import h11

from . import headers as hdr
from . import revalidation
from .answers import Answers, ClientGone
from .cache import conditionals, encoding, policy, surrogate
from .cache.policy import Forward, reads_none
from .cache.store import CachedResponse, Key
from .context import Site
from .cors import is_cors_field
from .errors import BackendError
from .fallback import FALLBACK_FIELD
from .upstream import UpstreamConnection


class UnmatchedNotModified(BackendError):
    """The backend answered a revalidation with a 304 that selects no stored response
    (RFC 9111 §4.3.4: another ETag or Last-Modified): nothing may be updated with it. The
    forwarding step asks once more, as the client asked; uncaught, it is a 502."""


class Relaying(Answers):
    def _response_fields(self, response: h11.Response) -> list[tuple[bytes, bytes]]:
        """The backend's end-to-end fields, less its Access-Control-* where the server's
        ``cors`` answers for them."""
        fields = hdr.forward_response_headers(response.headers.raw_items())
        if self.owns_cors:
            fields = [(n, v) for n, v in fields if not is_cors_field(n.lower())]
        return fields

    async def _relay_response(
        self,
        site: Site,
        upstream: UpstreamConnection,
        request: h11.Request,
        response: h11.Response,
        plan: Plan,
        request_time: float,
    ) -> str:
        response_time = site.cache.clock()
        method = request.method
        status_code = response.status_code
        request_headers = plan.request_headers
        if request_headers is None:
            request_headers = list(request.headers)
        cache = site.cache
        timeout = self.ctx.config.backend_timeout
        if method not in policy.SAFE_METHODS:  # RFC 9111 §4.4: only unsafe methods invalidate
            host = hdr.get_header(request_headers, b"host") or b""
            for target in policy.invalidation_targets(
                method, status_code, host, request.target, list(response.headers), self.proto
            ):
                cache.discard(site.key_for(target, request_headers, self.proto))

        entry, key = plan.entry, plan.key
        if entry is not None and key is not None:
            if status_code == 304 or (method == b"HEAD" and status_code == 200):
                try:
                    await upstream.read_body(timeout, 0)
                except BaseException:
                    upstream.abort()
                    raise
                upstream.release()
                update = revalidation.apply_update(
                    site, key, entry, request_headers, response, request_time, response_time
                )
                if update is None:
                    if status_code == 304:
                        raise UnmatchedNotModified(
                            "the backend's 304 matches no stored response", "protocol"
                        )
                    # A HEAD answer for a changed resource: the stale entry went; pass it on.
                    out_headers = client_fields(site, self._response_fields(response))
                    out_headers.append(
                        (b"Cache-Status", policy.cache_status(fwd=plan.reason, fwd_status=200))
                    )
                    self._write_head(
                        self._relayed_head(
                            status_code,
                            out_headers,
                            response.reason,
                            site.config.cache_status_header,
                        )
                    )
                    self._send(h11.EndOfMessage())
                    return "next"
                refreshed, stored = update
                age = refreshed.age(cache.clock())
                cache_status = policy.cache_status(
                    fwd=plan.reason,
                    fwd_status=status_code,
                    stored=stored,
                    ttl=refreshed.decision.freshness_lifetime - age,
                )
                self._answer_from_cache(
                    site, refreshed, refreshed.body, age, cache_status, request_headers, method
                )
                return "next"
            if status_code >= 500 and self._serve_stale_on_error(
                site, request, plan, f"backend answered {status_code}", status_code
            ):
                upstream.abort()  # its error body is of no use to anyone
                return "next"

        if (
            status_code == 304
            and plan.after_unmatched_304
            and reads_none(request_headers, conditionals.VALIDATOR_FIELDS)
        ):
            upstream.abort()
            raise BackendError("the backend answered 304 to an unconditional request", "protocol")
        out_headers = self._response_fields(response)
        sent, filling = self._relayed_fields(
            site, plan, method, status_code, response.reason, out_headers, request_headers,
            (request_time, response_time),
        )
        head = self._relayed_head(
            status_code, sent, response.reason, site.config.cache_status_header
        )
        parts = upstream.body_parts(timeout)
        return await self._relay_body(site, upstream, method, request.target, head, parts, filling)

    def _relayed_fields(
        self,
        site: Site,
        plan: Plan,
        method: bytes,
        status: int,
        reason: bytes,
        out_headers: list[tuple[bytes, bytes]],
        request_headers: list[tuple[bytes, bytes]],
        times: tuple[float, float],
    ) -> tuple[list[tuple[bytes, bytes]], Filling | None]:
        """The head fields a backend response goes out with (its own end-to-end fields, then
        ours), and the cache entry it will fill, if it is to be stored; ``times`` are the
        request's and the response's store-clock times (RFC 9111 §4.2.3)."""
        key = plan.key
        decision = None
        if key is not None and method == b"GET":
            decision = revalidation.decide_storage(
                site, status, request_headers, out_headers, *times
            )
        length = hdr.get_header(out_headers, b"content-length")
        max_object = site.cache.max_object_bytes
        if decision is not None and length is not None and int(length) > max_object:
            decision = None
        if key is not None and method == b"GET":
            if decision is None:
                if key not in site.uncacheable:  # (re-setting it only moves its expiry)
                    site.uncacheable[key] = True
            else:
                site.uncacheable.pop(key, None)
        if decision is None or length is None:
            # Nothing to wait for, or no telling how long (a stream may never end): waiters
            # forward on their own right away.
            plan.land(site)
        sent = client_fields(site, out_headers)
        if decision is not None and encoding.varies(site.config.compress_strategy, out_headers):
            # Hits of this response will depend on Accept-Encoding: say so from the start.
            sent.append((b"Vary", b"Accept-Encoding"))
        if plan.fallback:
            sent.append(FALLBACK_FIELD)
        # The header leaves before the body: claim "stored" only when the length is known.
        sent.append(
            (
                b"Cache-Status",
                policy.forwarded_status(
                    plan.reason, status, decision is not None and length is not None
                ),
            )
        )
        if decision is None or key is None:
            return sent, None
        return sent, Filling(key, decision, status, reason, out_headers, times[1])

    async def _relay_body(
        self,
        site: Site,
        upstream: UpstreamConnection,
        method: bytes,
        target: bytes,
        head: bytes,
        parts: AsyncIterator[bytes],
        filling: Filling | None,
    ) -> str:
        """Send the response ``head``, pass the body on as it arrives, then give the backend
        connection back and store the response when ``filling`` the cache."""
        max_object = site.cache.max_object_bytes
        body: bytearray | None = bytearray() if filling is not None else None
        try:
            if not (self._outside_h11 and upstream.has_unread):
                # No body byte is here yet: the head must not wait for one. (One that is goes
                # out in the same write as the head: one send instead of two.)
                self._write_head(head)
                head = b""
            async for part in parts:
                self._send_body(part, head)
                head = b""
                if body is not None:
                    body += part
                    if len(body) > max_object:
                        body = None
                await self.drain()
            self._end_body()
        except BackendError as exc:
            if self.is_lost:
                # The client hung up and its backend request was abandoned (connection_lost):
                # that, not the backend, cut the response short.
                raise ClientGone() from None
            # The head is out: all we can do is end the connection so the client sees a
            # truncated response, never one that looks complete.
            self.exchange.error_kind = exc.kind
            upstream.abort()
            self._log_backend(site, method, target, f"response cut short: {exc}")
            self.abort()
            return "close"
        except BaseException:
            upstream.abort()
            raise
        upstream.release()
        if filling is not None and body is not None:
            filling.store(site, bytes(body))
        return "next"

    def _serve_stale_on_error(
        self, site: Site, request: h11.Request, plan: Plan, problem: str, status: int
    ) -> bool:
        """Answer with the stale entry being revalidated when the origin failed and
        stale-if-error (or serve_stale_on_error) allows it; False when it does not."""
        entry = plan.entry
        if entry is None or self.h11.our_state is not h11.SEND_RESPONSE:
            return False
        age = entry.age(site.cache.clock())
        if not policy.may_serve_stale_on_error(entry.decision, age):
            return False
        body = site.cache.body(entry)
        if body is None:
            return False
        self._log_backend(
            site, request.method, request.target, f"{problem}; serving the stale copy"
        )
        cache_status = policy.cache_status(
            fwd=plan.reason,
            fwd_status=status,
            ttl=entry.decision.freshness_lifetime - age,
            detail="stale-if-error",
        )
        self._answer_from_cache(
            site, entry, body, age, cache_status, list(request.headers), request.method
        )
        return True


@dataclass(slots=True)
class Plan:
    """How a forwarded request relates to the cache: the store ``key`` its response may fill
    (None: not cacheable), the RFC 9211 ``fwd`` reason, the stored ``entry`` being
    revalidated, if any, and the ``flight`` others wait on when it leads."""

    key: Key | None
    reason: Forward
    entry: CachedResponse | None = None
    # Set when this request leads a coalesced miss: others for the key wait for it.
    flight: asyncio.Future[None] | None = None
    # The request's fields with lowercase names (``list(request.headers)``), when known.
    request_headers: list[tuple[bytes, bytes]] | None = None
    # The answer comes from fallback_url (marked, never stored: key is None).
    fallback: bool = False
    # Sent again, as the client sent it, after a 304 that matched no stored response.
    after_unmatched_304: bool = False

    def land(self, site: Site) -> None:
        """Let the waiters go (they look the key up again). Called as soon as the answer is
        known not to be stored, so that a long stream never holds them, and at the end."""
        flight = self.flight
        if flight is None or flight.done():
            return
        if self.key is not None and site.inflight.get(self.key) is flight:
            del site.inflight[self.key]
        flight.set_result(None)


@dataclass(slots=True)
class Filling:
    """A relayed response on its way into the cache: what its entry is made of, but the body."""

    key: Key
    decision: policy.StorageDecision
    status: int
    reason: bytes
    headers: list[tuple[bytes, bytes]]
    response_time: float

    def store(self, site: Site, body: bytes) -> None:
        entry = revalidation.make_entry(
            self.status,
            self.reason,
            self.headers,
            body,
            self.decision,
            self.response_time,
            site.config,
        )
        site.cache.put(self.key, entry)


def client_fields(site: Site, fields: list[tuple[bytes, bytes]]) -> list[tuple[bytes, bytes]]:
    """A backend's fields as clients get them (a new list): where phantom reads
    Surrogate-Control (``surrogate_control``), without it: it is for surrogates only."""
    if site.config.surrogate_control:
        return surrogate.without_field(fields)
    return list(fields)
