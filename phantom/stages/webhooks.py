"""Blocking webhooks refuse a request, cache_key webhooks choose its cache key, notify
webhooks hear of it (:mod:`phantom.webhooks` makes the calls). The one stage that waits."""

from __future__ import annotations

from ..webhooks import Webhooks, request_payload
from .base import Answer, RequestView, SiteParts


class WebhookStage:
    def __init__(self, webhooks: Webhooks) -> None:
        self.webhooks = webhooks

    async def check(self, view: RequestView) -> Answer | None:
        payload = request_payload(view.method, view.target, view.headers)
        denial, view.cache_key = await self.webhooks.run(payload)
        if denial is None:
            return None
        return Answer(denial.status, denial.body, denial.headers)


def build(site: SiteParts) -> WebhookStage | None:
    return WebhookStage(site.webhooks) if site.webhooks else None
