"""Turning origin responses into stored entries, and keeping entries fresh.

The policy (:mod:`phantom.cache.policy`) decides; this module applies its decisions to a
site's store: it builds the entry a hit will serve, merges a 304 into the entry it validated
(RFC 9111 §4.3.4), and runs the one background refresh that ``stale-while-revalidate`` asks
for (RFC 5861 §3). The client-facing side is in :mod:`phantom.lookup` and :mod:`phantom.relay`.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass

import h11

from . import headers as hdr
from .balancing.pool import status_of
from .cache import encoding, policy, ranges, surrogate
from .cache.store import CachedResponse, Key
from .config import ServerConfig
from .context import Site
from .errors import BackendError
from .upstream import UpstreamConnection

log = logging.getLogger("phantom")

HeaderList = list[tuple[bytes, bytes]]


def decide_storage(
    site: Site,
    status: int,
    request_headers: HeaderList,
    response_headers: HeaderList,
    request_time: float,
    response_time: float,
) -> policy.StorageDecision | None:
    """The policy's storage decision for a GET response, with this site's settings: its
    cache_strategy and cache_heuristic, and the negative cache's own lifetime for 404s."""
    config = site.config
    if not site.rules.keeps(hdr.get_header(response_headers, b"content-type")):
        return None
    return policy.storage_decision(
        b"GET",
        status,
        request_headers,
        response_headers,
        default_ttl=config.cache_404_ttl if status == 404 else config.cache_ttl,
        now=time.time(),
        request_time=request_time,
        response_time=response_time,
        store_set_cookie=config.store_set_cookie,
        stale_if_error_default=config.serve_stale_on_error,
        heuristic=config.cache_heuristic,
        surrogate_control=config.surrogate_control,
        cdn_cache_control=config.cdn_cache_control,
    )


def make_entry(
    status: int,
    reason: bytes,
    headers: HeaderList,
    body: bytes,
    decision: policy.StorageDecision,
    response_time: float,
    config: ServerConfig,
) -> CachedResponse:
    """The entry a hit serves, computed once here rather than on every hit: the stored fields
    with our own Content-Length (hits always send a complete, length-framed body), and
    ``Accept-Ranges: bytes`` on a 200 (phantom answers its ranges). With ``surrogate_control``
    the Surrogate-Control field is for phantom only: kept with the origin's fields (what a 304
    updates) but never served. With a ``compress_strategy``, a compressible body the origin
    sent unencoded is stored compressed, with both header lists ready and ``Vary:
    Accept-Encoding`` in each; a body it does not shrink is stored as it is, without that Vary."""
    compress_strategy = config.compress_strategy
    kept = policy.stored_headers(headers, decision)
    kept = [(name, value) for name, value in kept if name.lower() != b"content-length"]
    served = surrogate.without_field(kept) if config.surrogate_control else kept
    # The origin's fields are kept apart only when the served ones lack some of them.
    fields = kept if len(served) < len(kept) else None
    served = ranges.advertised(status, served)
    coding = encoding.coding_token(compress_strategy)
    packed = (
        encoding.compress(compress_strategy, body)
        if encoding.applies(compress_strategy, served) and len(body) >= encoding.MIN_COMPRESS_BYTES
        else body
    )
    if coding is None or len(packed) >= len(body):
        # Stored as it came (small or incompressible): every client gets these same bytes,
        # so the response does not depend on Accept-Encoding and says nothing about it.
        served.append((b"Content-Length", b"%d" % len(body)))
        return CachedResponse(status, reason, served, body, response_time, decision, fields=fields)
    if encoding.varies(compress_strategy, served):
        served.append((b"Vary", b"Accept-Encoding"))
    return CachedResponse(
        status,
        reason,
        served + [(b"Content-Encoding", coding), (b"Content-Length", b"%d" % len(packed))],
        packed,
        response_time,
        decision,
        coding=coding,
        identity_headers=served + [(b"Content-Length", b"%d" % len(body))],
        fields=kept,
    )


def apply_update(
    site: Site,
    key: Key,
    entry: CachedResponse,
    request_headers: HeaderList,
    response: h11.Response,
    request_time: float,
    response_time: float,
) -> tuple[CachedResponse, bool] | None:
    """A 304 (or a 200 to HEAD, RFC 9111 §4.3.5) for ``entry``: its stored fields freshened
    by the new ones (§3.2) and stored again. Returns the refreshed entry, for serving, and
    whether it was stored.

    None when the new response does not select ``entry`` (§4.3.4: different validators), or
    its body file is gone: the entry is then dropped. When the merged response may no
    longer be stored (it now says ``no-store``, say), the entry is dropped and the refreshed
    one is still returned to answer this one request.
    """
    new_headers = hdr.forward_response_headers(response.headers.raw_items())
    body = site.cache.body(entry)
    if body is None or not policy.revalidation_matches(entry.decision, new_headers):
        site.cache.discard(key)
        return None
    if entry.coding is not None:
        body = encoding.decompress(entry.coding, body)  # make_entry compresses it again
    merged = policy.freshened_headers(entry.origin_fields, new_headers)
    decision = decide_storage(
        site, entry.status, request_headers, merged, request_time, response_time
    )
    stored = decision is not None
    if decision is None:
        site.cache.discard(key)
        decision = policy.StorageDecision(freshness_lifetime=0.0, initial_age=0.0)
    refreshed = make_entry(
        entry.status,
        entry.reason,
        merged,
        body,
        decision,
        response_time,
        site.config,
    )
    return refreshed, stored and site.cache.put(key, refreshed)


@dataclass(frozen=True, slots=True)
class BackgroundRefresh:
    """The one background revalidation of a stale ``entry`` that stale-while-revalidate asks
    for (RFC 5861 §3): ``request`` is the conditional GET to send."""

    site: Site
    key: Key
    request: h11.Request
    request_headers: HeaderList
    entry: CachedResponse
    timeout: float

    def start(self) -> None:
        """Run in the background, unless a request for the key is already on its way to the
        origin (its answer refreshes the entry just as well)."""
        site = self.site
        if self.key in site.inflight:
            return
        loop = asyncio.get_running_loop()
        site.inflight[self.key] = loop.create_future()
        task = loop.create_task(self._run())
        site.background.add(task)
        task.add_done_callback(site.background.discard)

    async def _run(self) -> None:
        site, key, timeout = self.site, self.key, self.timeout
        cache = site.cache
        try:
            request_time = cache.clock()
            backends = site.backends
            _, upstream, response = await backends.exchange(
                None,
                lambda conn: conn.request(
                    backends.adapt(self.request, conn.url, upgrade=False), _end_request, timeout
                ),
                status_of,
                retry=True,
            )
            try:
                body = await upstream.read_body(timeout, cache.max_object_bytes)
            except BaseException:
                upstream.abort()
                raise
            if body is None:
                upstream.abort()
                return  # too large to store: the stale entry stays until it expires
            upstream.release()
            response_time = cache.clock()
            status = response.status_code
            if status == 304:
                apply_update(
                    site, key, self.entry, self.request_headers, response, request_time,
                    response_time,
                )
                return
            headers = hdr.forward_response_headers(response.headers.raw_items())
            decision = decide_storage(
                site, status, self.request_headers, headers, request_time, response_time
            )
            if decision is not None:
                cache.put(
                    key,
                    make_entry(
                        status, response.reason, headers, body, decision, response_time,
                        site.config,
                    ),
                )
        except BackendError as exc:
            log.warning("background refresh of %s: %s", key[1], exc)
        finally:
            site.inflight.pop(key).set_result(None)


async def _end_request(upstream: UpstreamConnection) -> None:
    upstream.send(h11.EndOfMessage())
