"""Stages: the guards a request meets after routing and before the cache and the backend.

Each stage is one module with a ``build`` that makes it for one server (None when the server's
configuration leaves it nothing to do) and an object whose ``check`` takes a
:class:`RequestView` and returns None ("go on") or an :class:`Answer` that the client gets
instead. ``check`` is a plain method when the stage decides at once, and ``async def`` only
when it has to wait for something (a webhook's answer). A stage that passes something on to
the steps after it writes it on the view (``cache_key``).

``ORDER`` is the one place that says which stages there are and in which order they run.
After them come the steps every request takes: the cache (:mod:`phantom.lookup`) and the
backend (:mod:`phantom.forward`, :mod:`phantom.upgrade`). The fast lane
(:mod:`phantom.fastlane`) asks the same stages, through the same :class:`Stages`; a server
with a stage that waits leaves its requests to the request loop.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Sequence
from typing import cast

from . import auth, cors, iprules, methods, origin, ratelimit, snapshots, upgrades, webhooks
from .base import Answer, RequestView, Result, SiteParts, Stage, Stored, WaitingStage

__all__ = [
    "ORDER", "Answer", "RequestView", "Result", "SiteParts", "Stage", "Stages", "Stored",
    "WaitingStage",
]

Build = Callable[[SiteParts], "Stage | WaitingStage | None"]

ORDER: tuple[Build, ...] = (
    iprules.build,  # allow / deny: 403
    cors.build,  # a CORS preflight answered here; Access-Control-* on the answer
    origin.build,  # allowed_origins: 403 for an upgrade from another origin
    ratelimit.build,  # rate_limit: 429
    auth.build,  # auth_required: 401 / 403; claims passed on, the token's parameter taken out
    webhooks.build,  # blocking webhooks refuse, cache_key webhooks choose the key
    snapshots.build,  # a pre-generated server answers from its snapshots
    upgrades.build,  # enable_websocket = false: 501 for upgrades
    methods.build,  # forward_get_only: 405 for other methods
)


class Stages:
    """One server's stages, in ``ORDER``."""

    def __init__(self, stages: Sequence[Stage | WaitingStage]) -> None:
        self.all = tuple(stages)
        # Whether every stage decides at once: the fast lane and the loop then call ``check``.
        self.sync = not any(inspect.iscoroutinefunction(stage.check) for stage in self.all)
        self._checks = cast(
            "tuple[Callable[[RequestView], Result], ...]",
            tuple(stage.check for stage in self.all) if self.sync else (),
        )

    @classmethod
    def build(cls, site: SiteParts) -> Stages:
        return cls([stage for build in ORDER if (stage := build(site)) is not None])

    def check(self, view: RequestView) -> Result:
        """The first answer of a stage, or None; only when ``sync``."""
        for check in self._checks:
            answer = check(view)
            if answer is not None:
                return answer
        return None

    async def run(self, view: RequestView) -> Result:
        """The first answer of a stage, or None, waiting for the stages that wait."""
        for stage in self.all:
            answer = stage.check(view)
            if inspect.isawaitable(answer):
                answer = await answer
            if answer is not None:
                return cast(Result, answer)
        return None
