"""``auth_required``: a request (an upgrade too) needs a token that ``[jwt]`` verifies, and
``auth_claims`` to hold; else 401 / 403 with ``WWW-Authenticate`` (RFC 6750). A good token's
``forward_claims`` go to the backend in place of any the client sent; the token's query
parameter leaves the target; with ``tunnel_auth_expiry = "close"`` a tunnel ends at ``exp``.

:mod:`phantom.bearer` finds the token, :mod:`phantom.jwtauth` verifies it (remembering good
ones), :mod:`phantom.claims` answers. With a JWKS (``jwks_url``) the stage may wait: a token
naming a key the set lacks makes it fetch the set again (rate-limited) before it decides.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..bearer import TokenPlaces, find_token
from ..claims import (
    Claims,
    Refusal,
    UnknownKey,
    check_claims,
    claim_headers,
    insufficient,
    missing_token,
)
from ..config import ServerConfig
from .base import Answer, RequestView, SiteParts

if TYPE_CHECKING:
    from ..jwks import JwksKeys
    from ..jwtauth import Verifier


def _refused(refusal: Refusal, realm: str) -> Answer:
    headers = [(b"Content-Type", b"text/plain"), (b"WWW-Authenticate", refusal.challenge(realm))]
    return Answer(refusal.status, f"{refusal.description}.\n".encode(), headers, refusal.reason)


class _Auth:
    """What both kinds of auth stage do around the verification."""

    def __init__(self, config: ServerConfig, verifier: Verifier) -> None:
        self.verifier = verifier
        self.realm = config.name
        self.places = TokenPlaces(config.token_cookie, config.token_query)
        self.wanted = config.auth_claims
        self.forward = config.forward_claims
        self.forwarded_names = frozenset(n.lower().encode() for _, n in config.forward_claims)
        self.close_tunnels = config.tunnel_auth_expiry == "close"

    def _take_token(self, view: RequestView) -> str | None:
        """The request's token; its query parameter leaves the target, and the claim fields
        the client sent leave the request, whatever becomes of it."""
        token, target, in_header = find_token(view.headers, view.target, self.places)
        if target != view.target:
            view.target = target
            view.token_param = self.places.query
        view.drop_fields = self.forwarded_names
        if token is not None and not in_header:
            # In a cookie or the query: stored answers are shared only as with Authorization.
            view.token_elsewhere = True
        return token

    def _verdict(self, view: RequestView, token: str) -> Claims | Refusal | UnknownKey:
        # The rate limit may have verified it already (a jwt:CLAIM key).
        return view.claims if view.claims is not None else self.verifier.verify(token)

    def _decide(self, view: RequestView, verdict: Claims | Refusal | UnknownKey) -> Answer | None:
        if isinstance(verdict, UnknownKey):
            verdict = self.verifier.refuse_unknown()
        if isinstance(verdict, Refusal):
            return _refused(verdict, self.realm)
        if self.wanted:
            failing = check_claims(verdict, self.wanted)
            if failing is not None:
                return _refused(insufficient(failing), self.realm)
        view.claims = verdict
        if self.forward:
            view.forward_fields = tuple(claim_headers(verdict, self.forward))
        if self.close_tunnels and view.upgrade:
            exp = verdict.get("exp")
            if isinstance(exp, (int, float)):
                view.expires = float(exp)
        return None


class AuthStage(_Auth):
    """A ``[jwt]`` with a secret or a public key: decides at once."""

    def check(self, view: RequestView) -> Answer | None:
        token = self._take_token(view)
        if token is None:
            return _refused(missing_token(), self.realm)
        return self._decide(view, self._verdict(view, token))


class JwksAuthStage(_Auth):
    """A ``[jwt]`` with a ``jwks_url``: a token under a key the set lacks waits for the set
    to be fetched again (at most once per interval, see :mod:`phantom.jwks`)."""

    def __init__(self, config: ServerConfig, verifier: Verifier, keys: JwksKeys) -> None:
        super().__init__(config, verifier)
        self.keys = keys

    async def check(self, view: RequestView) -> Answer | None:
        token = self._take_token(view)
        if token is None:
            return _refused(missing_token(), self.realm)
        verdict = self._verdict(view, token)
        if isinstance(verdict, UnknownKey):
            await self.keys.refresh_for(verdict.kid)
            verdict = self.verifier.verify(token)
        return self._decide(view, verdict)


def build(site: SiteParts) -> AuthStage | JwksAuthStage | None:
    config = site.config
    verifier = site.verifier
    if not config.auth_required:
        return None
    if verifier is None:
        # Config refuses auth_required without [jwt]; should that ever slip, fail closed
        # rather than serve the server without its auth.
        raise RuntimeError(f"server.{config.name}: auth_required without a [jwt] verifier")
    # Imported here: a verifier exists only where PyJWT (the jwt extra) is installed.
    from ..jwks import JwksKeys

    if isinstance(verifier.keys, JwksKeys):
        return JwksAuthStage(config, verifier, verifier.keys)
    return AuthStage(config, verifier)
