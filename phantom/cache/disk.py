"""Stored bodies as files (``cache_storage_mode = "filesystem"``).

Only bodies go to disk; the metadata stays in memory (:mod:`.store`), so files left by an
earlier run are orphans and are removed when the directory is opened. Each process keeps its
files in a subdirectory named after its pid, so worker processes (``workers = N``) sharing one
``cache_directory`` never remove each other's files: opening removes the subdirectories of
processes that are gone (and its own, from an earlier run in this process). File names are
hashes of a per-run secret and a counter: no part of a request ever becomes a path. Every disk
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

    __slots__ = ("_counter", "_secret", "_warned", "directory", "root")

    def __init__(self, root: str) -> None:
        self.root = root
        self.directory = os.path.join(root, str(os.getpid()))
        self._secret = secrets.token_bytes(16)
        self._counter = 0
        self._warned = False

    def open(self) -> int:
        """Create this process's directory and remove the body files that processes no
        longer running left behind (their metadata died with them). Returns how many files
        were removed."""
        try:
            os.makedirs(self.root, exist_ok=True)
            owners = [name for name in os.listdir(self.root) if name.isdigit()]
        except OSError as exc:
            self._warn("cannot use the cache directory", exc)
            return 0
        removed = 0
        for owner in owners:
            if int(owner) == os.getpid() or not _running(int(owner)):
                removed += self._clear(os.path.join(self.root, owner))
        try:
            os.makedirs(self.directory, exist_ok=True)
        except OSError as exc:
            self._warn("cannot use the cache directory", exc)
        if removed:
            log.info("cache: removed %d orphaned body files from %s", removed, self.root)
        return removed

    def _clear(self, directory: str) -> int:
        """Remove our body files from ``directory``, and the directory once empty."""
        removed = 0
        try:
            names = os.listdir(directory)
        except OSError as exc:
            self._warn("cannot list an orphaned directory", exc)
            return 0
        for name in names:
            if _NAME.fullmatch(name):
                try:
                    os.unlink(os.path.join(directory, name))
                    removed += 1
                except OSError as exc:
                    self._warn("cannot remove an orphaned body file", exc)
        try:
            os.rmdir(directory)
        except OSError:
            pass  # not empty (someone else's files) or already gone: leave it
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


def _running(pid: int) -> bool:
    """Whether a process with this pid exists (then its files may be in use)."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:
        return True  # exists, but is not ours to signal
    return True
