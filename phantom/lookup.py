"""The cache step of a request: look it up (RFC 9111 §4), answer from the store when it may
be, wait for a request already on its way for the same key (coalescing), or forward it with
a plan that says what its answer may fill.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import h11

from . import framing, revalidation
from .cache import policy, ranges
from .cache.policy import Forward
from .cache.store import CachedResponse, Key
from .context import Site
from .forward import Forwarding
from .relay import Plan
from .stages import RequestView


class CacheLookup(Forwarding):
    async def _serve_http(
        self,
        site: Site,
        request: h11.Request,
        target: bytes,
        raw_headers: list[tuple[bytes, bytes]],
        view: RequestView,
    ) -> str:
        """Look the request up in the cache (RFC 9111 §4) and act on the policy's answer."""
        method = request.method
        # The fields the backend is sent (as the guards left them: forged claim fields out,
        # the verified ones in), so an answer that varies on a claim is stored per claim.
        headers = list(request.headers)
        if view.token_elsewhere:
            # A token from a cookie or the query is a credential like Authorization: answers
            # are shared only when they say they may be (RFC 9111 §3.5).
            headers.append((b"authorization", b"Bearer"))
        cache_key = view.cache_key
        if method not in policy.LOOKUP_METHODS:
            plan = Plan(None, Forward.METHOD, request_headers=headers)
            return await self._forward(site, request, target, raw_headers, plan)
        if (
            not site.rules.uses_cache(method, request.target)
            # A GET or HEAD with a body: the backend may answer what the body asks for, so
            # that answer is no one else's ("fat GET" poisoning), and no stored one is its.
            or framing.body_framing(raw_headers).has_body
        ):
            plan = Plan(None, Forward.BYPASS, request_headers=headers)
            return await self._forward(site, request, target, raw_headers, plan)
        cache = site.cache
        # A cache_key webhook's own key wins (not tied to the host), then create_proxy's.
        key = (
            ("", cache_key)
            if cache_key is not None
            else site.key_for(request.target, headers, self.proto)
        )
        state = policy.lookup(method, headers, cache.variants(key), cache.clock())
        if (
            cache.shared
            and isinstance(state, policy.Miss)
            and key not in site.inflight
            and key not in site.uncacheable  # its last answer was not stored anywhere
        ):
            # Not in this process's first level: one round trip to the shared one.
            state = policy.lookup(method, headers, await cache.fetch(key), cache.clock())
        collapsed = False
        coalesce = fills_cache(state) and key not in site.uncacheable
        if coalesce and key in site.inflight:
            # Another request for this key is on its way to the origin: wait for its result
            # rather than stampede the origin (request coalescing).
            await self._await_flight(site, site.inflight[key])
            state = policy.lookup(method, headers, cache.variants(key), cache.clock())
            collapsed = True
        if isinstance(state, (policy.Fresh, policy.ServeStale)):
            body = cache.body(state.entry)
            if body is not None:
                await self._read_body()
                self._serve_stored(
                    site, key, request, target, raw_headers, state, body, collapsed
                )
                return "next"
            cache.discard(key)  # its body file is gone: the entry is no use any more
            state = policy.Miss(Forward.URI_MISS)
        if isinstance(state, policy.Unsatisfiable):
            await self._read_body()
            self._respond_plain(504, b"Nothing usable is stored (only-if-cached).\n")
            return "next"
        if isinstance(state, policy.Miss) and ranges.asked(headers):
            plan = Plan(miss_key(key, headers), state.reason, request_headers=headers)
            return await self._forward(site, request, target, raw_headers, plan)
        entry = None if isinstance(state, policy.Miss) else state.entry
        if collapsed or method != b"GET" or not coalesce or key in site.inflight:
            plan = Plan(key, state.reason, entry, request_headers=headers)
            return await self._forward(site, request, target, raw_headers, plan)
        flight: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        site.inflight[key] = flight
        plan = Plan(key, state.reason, entry, flight, headers)
        leading = False  # holds the fill lock of the processes that share the cache
        try:
            if cache.shared:
                # Another process sharing the cache may be fetching it: wait for its answer.
                filled = await cache.follow(key, site.config.coalesce_timeout)
                leading = filled is None
                found = policy.lookup(method, headers, filled or (), cache.clock())
                body = cache.body(found.entry) if isinstance(found, policy.Fresh) else None
                if isinstance(found, policy.Fresh) and body is not None:
                    plan.land(site)  # the requests waiting here find it in the first level
                    await self._read_body()
                    self._serve_stored(site, key, request, target, raw_headers, found, body, True)
                    return "next"
            return await self._forward(site, request, target, raw_headers, plan)
        finally:
            plan.land(site)
            if leading:
                await cache.release(key)

    def _serve_stored(
        self,
        site: Site,
        key: Key,
        request: h11.Request,
        target: bytes,
        raw_headers: list[tuple[bytes, bytes]],
        state: policy.Fresh[CachedResponse] | policy.ServeStale[CachedResponse],
        body: bytes,
        collapsed: bool,
    ) -> None:
        """Answer from a usable stored response; a stale-while-revalidate one also starts
        the background refresh."""
        headers = list(request.headers)
        detail = None
        if isinstance(state, policy.ServeStale):
            detail = "stale-while-revalidate" if state.refresh else "max-stale"
            if state.refresh:
                revalidation.BackgroundRefresh(
                    site,
                    key,
                    self._outgoing(
                        site, request, target, raw_headers, state.entry.decision, method=b"GET"
                    ),
                    headers,
                    state.entry,
                    self.ctx.config.backend_timeout,
                ).start()
        status = policy.cache_status(
            hit=not collapsed,
            fwd=Forward.URI_MISS if collapsed else None,
            collapsed=collapsed,
            ttl=state.ttl,
            detail=detail,
        )
        self._answer_from_cache(
            site, state.entry, body, state.age, status, headers, request.method
        )

    async def _await_flight(self, site: Site, flight: asyncio.Future[None]) -> None:
        """Wait for another request's trip to the origin, at most ``coalesce_timeout``."""
        try:
            await asyncio.wait_for(asyncio.shield(flight), site.config.coalesce_timeout)
        except asyncio.TimeoutError:
            pass  # the caller looks again and, finding nothing, forwards on its own


def miss_key(key: Key, headers: Sequence[tuple[bytes, bytes]]) -> Key | None:
    """The key the answer to a forwarded miss may fill: none for a Range request. phantom
    stores whole responses only (RFC 9111 §3.3): the origin's 206 is relayed, stored nowhere,
    and must not mark the URL as one whose answers are not stored."""
    return None if ranges.asked(headers) else key


def fills_cache(state: policy.Lookup[CachedResponse]) -> bool:
    """Whether forwarding for this lookup result would (re)fill the shared entry, so that
    concurrent requests for the key may wait for it instead of going to the origin too."""
    if isinstance(state, policy.Miss):
        return state.reason in (Forward.URI_MISS, Forward.VARY_MISS)
    return isinstance(state, policy.Revalidate) and state.reason is Forward.STALE
