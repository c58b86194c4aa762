"""``enable_websocket = false``: every upgrade request is refused with 501. (Where upgrades are
enabled, offers of protocols outside ``upgrade_protocols`` are dropped before the stages run,
RFC 9110 §7.8, and a request left with none is an ordinary one.)"""

from __future__ import annotations

from .base import Answer, RequestView, SiteParts

_NOT_ENABLED = Answer(501, b"Upgrade requests are not enabled on this server.\n")


class UpgradesOff:
    def check(self, view: RequestView) -> Answer | None:
        return _NOT_ENABLED if view.upgrade else None


def build(site: SiteParts) -> UpgradesOff | None:
    return None if site.config.enable_websocket else UpgradesOff()
