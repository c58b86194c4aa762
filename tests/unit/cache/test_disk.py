"""Filesystem storage: bodies in hashed files, removed with their entries; a failing disk
degrades to not storing (phantom.cache.disk with phantom.cache.store)."""

from __future__ import annotations

import os
from pathlib import Path

from phantom.cache.disk import DiskBodies
from phantom.cache.policy import StorageDecision, store_key
from phantom.cache.store import CachedResponse, CacheStore


def entry(body: bytes, lifetime: float = 60.0) -> CachedResponse:
    return CachedResponse(200, b"OK", [], body, 0.0, StorageDecision(lifetime, 0.0))


def key(target: str) -> tuple[str, str]:
    return store_key(b"h", b"GET", target.encode())


class Clock:
    now = 0.0

    def __call__(self) -> float:
        return self.now


def files(root: Path) -> list[str]:
    """This process's body files under ``root``."""
    own = root / str(os.getpid())
    return sorted(os.listdir(own)) if own.exists() else []


def disk_store(directory: Path, clock: Clock | None = None, **limits: int) -> CacheStore:
    disk = DiskBodies(str(directory))
    disk.open()
    return CacheStore(
        limits.get("max_entries", 100),
        limits.get("max_bytes", 1_000_000),
        limits.get("max_object_bytes", 100_000),
        clock=clock or Clock(),
        disk=disk,
    )


def test_bodies_live_in_hashed_files_not_named_after_keys(tmp_path: Path) -> None:
    store = disk_store(tmp_path)
    assert store.put(key("/secret/../../etc/passwd"), entry(b"body one"))
    [name] = files(tmp_path)
    assert len(name) == 64 + len(".body") and "secret" not in name
    stored = store.variants(key("/secret/../../etc/passwd"))[0]
    assert stored.body == b"" and store.body(stored) == b"body one"
    assert store.total_bytes >= len(b"body one")


def test_files_go_with_discard_invalidation_replacement_and_eviction(tmp_path: Path) -> None:
    clock = Clock()
    store = disk_store(tmp_path, clock, max_entries=2)
    store.put(key("/a"), entry(b"a"))
    store.put(key("/a"), entry(b"a2"))  # replaces: the old file goes
    assert len(files(tmp_path)) == 1
    store.put(key("/b"), entry(b"b"))
    store.put(key("/c"), entry(b"c"))  # evicts /a (max_entries)
    assert len(files(tmp_path)) == 2
    store.discard(key("/b"))
    assert len(files(tmp_path)) == 1
    store.put(key("/d"), entry(b"d", lifetime=1))
    clock.now = 5.0
    store.put(key("/e"), entry(b"e", lifetime=100))  # /d expired on the way
    store.invalidate("GET:/c")
    assert [store.body(store.variants(key("/e"))[0])] == [b"e"]
    assert len(files(tmp_path)) == 1
    store.invalidate_all()
    assert files(tmp_path) == []


def test_open_removes_orphans_but_not_other_files(tmp_path: Path) -> None:
    disk_store(tmp_path).put(key("/a"), entry(b"left over"))
    (tmp_path / str(os.getpid()) / "notes.txt").write_text("keep me")
    assert DiskBodies(str(tmp_path)).open() == 1
    assert files(tmp_path) == ["notes.txt"]


def test_open_keeps_files_of_running_processes_and_clears_dead_ones(tmp_path: Path) -> None:
    """Workers sharing a cache_directory: a starting process must not remove the files of
    another running one; those of a process that is gone are orphans."""
    body = "0" * 64 + ".body"
    alive, dead = tmp_path / str(os.getppid()), tmp_path / "999999999"
    for directory in (alive, dead):
        directory.mkdir()
        (directory / body).write_bytes(b"x")
    assert DiskBodies(str(tmp_path)).open() == 1
    assert (alive / body).exists()
    assert not dead.exists()


def test_lost_file_reads_as_none(tmp_path: Path) -> None:
    store = disk_store(tmp_path)
    store.put(key("/a"), entry(b"a"))
    for name in files(tmp_path):
        os.unlink(tmp_path / str(os.getpid()) / name)
    assert store.body(store.variants(key("/a"))[0]) is None


def test_unwritable_directory_degrades_to_not_storing(tmp_path: Path) -> None:
    """A disk that refuses writes (here the directory became a file; full and read-only disks
    fail the same way) means "not stored", never an error."""
    root = tmp_path / "bodies"
    store = disk_store(root)
    store.put(key("/old"), entry(b"old"))
    directory = root / str(os.getpid())
    for name in files(root):
        os.unlink(directory / name)
    directory.rmdir()
    directory.write_text("not a directory")
    assert store.put(key("/a"), entry(b"a")) is False
    assert store.variants(key("/a")) == ()
    assert store.invalidate_all() == 1  # removing what is gone is no error either


def test_open_on_an_unusable_path_does_not_raise(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("x")
    assert DiskBodies(str(tmp_path / "file" / "sub")).open() == 0
