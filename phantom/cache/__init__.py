"""The response cache: :mod:`.policy` decides (pure, RFC 9111), :mod:`.store` keeps."""

from __future__ import annotations

from . import policy, store
from .policy import Forward, StorageDecision
from .store import CachedResponse, CacheStore

__all__ = ["CacheStore", "CachedResponse", "Forward", "StorageDecision", "policy", "store"]
