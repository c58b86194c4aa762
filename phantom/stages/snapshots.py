"""A pre-generated server (``proxy_mode = "pre_generate"``) answers from its snapshots: a GET
or HEAD of a snapshot's path gets the snapshot; anything else 404 (an upgrade 501), unless
``pre_generate_fallthrough`` lets it go on to the cache and the backend."""

from __future__ import annotations

from ..cache import policy
from ..cache.store import CacheStore
from ..snapshots import Snapshots
from .base import Answer, RequestView, SiteParts, Stored

_NO_SNAPSHOT = Answer(404, b"Not found: no snapshot of this path.\n")
_NO_UPGRADES = Answer(501, b"Upgrades are not served by a pre-generated site.\n")
# A snapshot never expires: its hit carries no ttl.
_HIT = policy.cache_status(hit=True)


class SnapshotStage:
    def __init__(self, snapshots: Snapshots, cache: CacheStore, fallthrough: bool) -> None:
        self.snapshots = snapshots
        self.clock = cache.clock
        self.fallthrough = fallthrough

    def check(self, view: RequestView) -> Answer | Stored | None:
        if not view.upgrade and view.method in (b"GET", b"HEAD"):
            entry = self.snapshots.get(view.target)
            if entry is not None:
                return Stored(entry, entry.age(self.clock()), _HIT)
        if self.fallthrough:
            return None
        return _NO_UPGRADES if view.upgrade else _NO_SNAPSHOT


def build(site: SiteParts) -> SnapshotStage | None:
    config = site.config
    if not config.pre_generate:
        return None
    return SnapshotStage(site.snapshots, site.cache, config.pre_generate_fallthrough)
