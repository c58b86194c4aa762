"""``allow`` / ``deny``: a client address the server does not serve gets 403 before anything
else is asked (:mod:`phantom.iprules` decides)."""

from __future__ import annotations

from ..config import Network
from ..iprules import IpRules
from .base import Answer, RequestView, SiteParts

_REFUSED = Answer(403, b"Forbidden.\n", reason="ip")


class IpStage:
    def __init__(self, rules: IpRules, trusted: tuple[Network, ...]) -> None:
        self.rules = rules
        self.trusted = trusted

    def check(self, view: RequestView) -> Answer | None:
        return None if self.rules.permits(view.client(self.trusted)) else _REFUSED


def build(site: SiteParts) -> IpStage | None:
    config = site.config
    if not config.allow and not config.deny:
        return None
    return IpStage(IpRules(config.allow, config.deny), site.trusted_proxies)
