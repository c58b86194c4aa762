"""``cors``: a preflight is answered here (204, or 403 for an origin, method or header not
listed), and every other answer gets the Access-Control-Allow-* fields for a listed origin and
``Vary: Origin`` (:mod:`phantom.cors` decides)."""

from __future__ import annotations

from ..cors import Cors
from .base import Answer, RequestView, SiteParts


class CorsStage:
    def __init__(self, cors: Cors) -> None:
        self.cors = cors

    def check(self, view: RequestView) -> Answer | None:
        preflight = self.cors.preflight(view.method, view.headers)
        if preflight is not None:
            reason = None if preflight.status == 204 else "cors"
            return Answer(preflight.status, b"", preflight.headers, reason)
        origin = next((v for n, v in view.headers if n == b"origin"), None)
        view.answer_fields += tuple(self.cors.answer_fields(origin))
        view.owns_cors = True
        return None


def build(site: SiteParts) -> CorsStage | None:
    cors = site.config.cors
    return None if cors is None else CorsStage(Cors(cors))
