"""``forward_get_only``: a request with a method other than GET and HEAD gets 405 with
``Allow``, and never reaches the backend. (Upgrades are left to the upgrade rules.)"""

from __future__ import annotations

from .. import headers as hdr
from ..cache import policy
from .base import Answer, RequestView, SiteParts

_GET_ONLY = Answer(
    405,
    b"Only GET and HEAD are forwarded.\n",
    [hdr.PLAIN_TEXT, (b"Allow", b"GET, HEAD")],
)


class GetOnly:
    def check(self, view: RequestView) -> Answer | None:
        if view.upgrade or view.method in policy.LOOKUP_METHODS:
            return None
        return _GET_ONLY


def build(site: SiteParts) -> GetOnly | None:
    return GetOnly() if site.config.forward_get_only else None
