"""``rate_limit``: each key (client address, a verified claim, a request field) gets its
quota; over it, 429 with ``Retry-After`` and the RateLimit fields, within it those fields on
the answer when ``rate_limit_headers`` (:mod:`phantom.ratelimit` decides). Counters are this
process's own (one per worker)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..bearer import TokenPlaces, find_token
from ..claims import Claims
from ..config import Network
from ..ratelimit import Limiter, rate_key
from .base import Answer, RequestView, SiteParts

if TYPE_CHECKING:
    from ..jwtauth import Verifier

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
        client = view.client(self.trusted)
        if self.by_address:
            key = "ip:" + client
        else:
            claims = self._claims(view) if self.verifier is not None else None
            key = rate_key(self.key, client, view.headers, claims)
        limiter = self.limiter
        wait = limiter.take(key)
        if wait:
            fields = limiter.fields(key, wait)
            return Answer(429, _OVER, [(b"Content-Type", b"text/plain"), *fields], "rate_limit")
        if self.headers:
            view.answer_fields += tuple(limiter.fields(key, 0.0))
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


def build(site: SiteParts) -> RateStage | None:
    config = site.config
    if config.rate_limit is None:
        return None
    return RateStage(
        Limiter(config.rate_limit, config.rate_limit_max_keys),
        config.rate_limit.key,
        site.trusted_proxies,
        config.rate_limit_headers,
        site.verifier,
        TokenPlaces(config.token_cookie, config.token_query),
    )
