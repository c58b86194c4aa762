"""``rate_limit``: each key (client address, a verified claim, a request field) gets its
quota; over it, 429 with ``Retry-After`` and the RateLimit fields, within it those fields on
the answer when ``rate_limit_headers`` (:mod:`phantom.ratelimit` decides). Counters are this
process's own (one per worker), or with ``shared = true`` kept in Redis for the whole fleet
(:mod:`phantom.sharedlimit`): one round trip per request, so that stage waits and its server
leaves the fast lane; while Redis is unavailable each process counts on its own again."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from ..bearer import TokenPlaces, find_token
from ..claims import Claims
from ..config import Network
from ..ratelimit import Limiter, rate_key
from ..redis_link import Unavailable
from ..sharedlimit import SharedLimiter
from .base import Answer, RequestView, SiteParts

if TYPE_CHECKING:
    from ..jwtauth import Verifier

log = logging.getLogger("phantom.ratelimit")

_OVER = b"Too many requests; try again later.\n"


class RateStage:
    def __init__(
        self,
        limiter: Limiter,
        key: str,
        trusted: tuple[Network, ...],
        headers: bool,
        verifier: Verifier | None,
        places: TokenPlaces,
    ) -> None:
        self.limiter = limiter
        self.key = key
        self.by_address = key == "client_ip"  # the common case, without rate_key's parsing
        self.trusted = trusted
        self.headers = headers
        # Only for a jwt:CLAIM key: the claim is read from a verified token only.
        self.verifier = verifier if key.startswith("jwt:") else None
        self.places = places

    def check(self, view: RequestView) -> Answer | None:
        return self.decide(view, self.key_of(view))

    def decide(self, view: RequestView, key: str) -> Answer | None:
        """Count ``key`` in this process and answer."""
        limiter = self.limiter
        wait = limiter.take(key)
        if not wait and not self.headers:
            return None
        return self.answer(view, wait, limiter.full_in(key))

    def key_of(self, view: RequestView) -> str:
        """The key ``view`` is counted under."""
        client = view.client(self.trusted)
        if self.by_address:
            return "ip:" + client
        claims = self._claims(view) if self.verifier is not None else None
        return rate_key(self.key, client, view.headers, claims)

    def answer(self, view: RequestView, wait: float, full_in: float) -> Answer | None:
        """429 when the key has to ``wait``; else None, with the RateLimit fields on the
        answer (``rate_limit_headers``). ``full_in``: seconds until its bucket is full."""
        fields = self.limiter.quota.fields(full_in, wait)
        if wait:
            return Answer(429, _OVER, [(b"Content-Type", b"text/plain"), *fields], "rate_limit")
        view.answer_fields += tuple(fields)
        return None

    def _claims(self, view: RequestView) -> Claims | None:
        """The verified token's claims (kept on the view for the auth stage), or None."""
        assert self.verifier is not None
        token = find_token(view.headers, view.target, self.places)[0]
        if token is None:
            return None
        result = self.verifier.verify(token)
        if isinstance(result, dict):
            view.claims = result
            return result
        return None  # refused or an unknown key: the auth stage says so; counted by address


class SharedRateStage:
    """``shared = true``: the budget is decided in Redis; :class:`RateStage` (this process's
    own counters) decides while Redis is unavailable."""

    def __init__(self, local: RateStage, shared: SharedLimiter, server: str) -> None:
        self.local = local
        self.shared = shared
        self.server = server
        self._sharing = True  # the state last logged

    async def check(self, view: RequestView) -> Answer | None:
        local = self.local
        key = local.key_of(view)
        try:
            wait, full_in = await self.shared.take(key)
        except Unavailable:
            self._log(False)
            return local.decide(view, key)
        self._log(True)
        if not wait and not local.headers:
            return None
        return local.answer(view, wait, full_in)

    def _log(self, sharing: bool) -> None:
        if sharing is self._sharing:
            return
        self._sharing = sharing
        if sharing:
            log.info("server.%s: rate_limit shared through Redis again", self.server)
        else:
            log.warning(
                "server.%s: rate_limit counted in this process while Redis is unavailable",
                self.server,
            )


def build(site: SiteParts) -> RateStage | SharedRateStage | None:
    config = site.config
    if config.rate_limit is None:
        return None
    local = RateStage(
        Limiter(config.rate_limit, config.rate_limit_max_keys),
        config.rate_limit.key,
        site.trusted_proxies,
        config.rate_limit_headers,
        site.verifier,
        TokenPlaces(config.token_cookie, config.token_query),
    )
    if not config.rate_limit.shared:
        return local
    if site.redis is None:
        log.warning(
            "server.%s: rate_limit.shared needs a restart ([redis] was not set when phantom "
            "started); counting in this process until then", config.name,
        )
        return local
    shared = SharedLimiter(site.redis, config.name, local.limiter.quota)
    return SharedRateStage(local, shared, config.name)
