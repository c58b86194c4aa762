"""``allowed_origins``: an upgrade from a page of another origin gets 403 before any backend
connection (Cross-Site WebSocket Hijacking: the browser sends its cookies with a cross-site
``new WebSocket()``); one without ``Origin`` goes on unless ``require_origin``."""

from __future__ import annotations

from ..origins import OriginMatcher, origin_allowed
from .base import Answer, RequestView, SiteParts

_REFUSED = Answer(403, b"This origin may not open a connection here.\n", reason="origin")


class OriginStage:
    def __init__(self, matcher: OriginMatcher, required: bool) -> None:
        self.matcher = matcher
        self.required = required

    def check(self, view: RequestView) -> Answer | None:
        if not view.upgrade:
            return None
        origins = [v for n, v in view.headers if n == b"origin"]
        return None if origin_allowed(origins, self.matcher, required=self.required) else _REFUSED


def build(site: SiteParts) -> OriginStage | None:
    config = site.config
    if config.allowed_origins is None:
        return None
    return OriginStage(OriginMatcher(config.allowed_origins), config.require_origin)
