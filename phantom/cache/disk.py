"""Stored bodies as files (``cache_storage_mode = "filesystem"``).

Only bodies go to disk; the metadata stays in memory (:mod:`.store`), so files left by an
earlier run are orphans and are removed when the directory is opened. File names are hashes
of a per-run secret and a counter: no part of a request ever becomes a path. Every disk
problem (full, read-only, a file gone) degrades to "not stored" / "not found" with a log line,
never to an error for a client.

The calls are synchronous: bodies are bounded by ``cache_max_object_bytes`` and a local disk
answers in well under a millisecond for the sizes a cache keeps.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import secrets
from typing import Final

__all__ = ["DiskBodies"]

log = logging.getLogger("phantom.cache")

_SUFFIX: Final = ".body"
_NAME: Final = re.compile(r"[0-9a-f]{64}\.body")


class DiskBodies:
    """Body files in one directory, named by hash."""

    __slots__ = ("_counter", "_secret", "_warned", "directory")

    def __init__(self, directory: str) -> None:
        self.directory = directory
        self._secret = secrets.token_bytes(16)
        self._counter = 0
        self._warned = False

    def open(self) -> int:
        """Create the directory if needed and remove the body files a previous run left
        (their metadata died with it). Returns how many were removed."""
        try:
            os.makedirs(self.directory, exist_ok=True)
            names = os.listdir(self.directory)
        except OSError as exc:
            self._warn("cannot use the cache directory", exc)
            return 0
        removed = 0
        for name in names:
            if _NAME.fullmatch(name):
                try:
                    os.unlink(os.path.join(self.directory, name))
                    removed += 1
                except OSError as exc:
                    self._warn("cannot remove an orphaned body file", exc)
        if removed:
            log.info("cache: removed %d orphaned body files from %s", removed, self.directory)
        return removed

    def write(self, body: bytes) -> str | None:
        """Write a body to a new file; its path, or None when the disk refused."""
        self._counter += 1
        digest = hashlib.sha256(self._secret + self._counter.to_bytes(8, "big")).hexdigest()
        path = os.path.join(self.directory, digest + _SUFFIX)
        try:
            with open(path, "xb") as file:
                file.write(body)
        except OSError as exc:
            self._warn("cannot store a body; not caching it", exc)
            self.delete(path)
            return None
        return path

    def read(self, path: str) -> bytes | None:
        """A stored body, or None when its file cannot be read."""
        try:
            with open(path, "rb") as file:
                return file.read()
        except OSError as exc:
            self._warn("cannot read a stored body; treating it as a miss", exc)
            return None

    def delete(self, path: str) -> None:
        try:
            os.unlink(path)
        except FileNotFoundError:
            pass
        except OSError as exc:
            self._warn("cannot remove a body file", exc)

    def _warn(self, what: str, exc: OSError) -> None:
        """Warn once per run at warning level (a full disk would otherwise flood the log),
        then at debug level."""
        level = logging.DEBUG if self._warned else logging.WARNING
        self._warned = True
        log.log(level, "cache: %s in %s: %s", what, self.directory, exc.strerror or exc)
