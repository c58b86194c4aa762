"""Running out of file descriptors: a clear, rate-limited log line instead of silence or a crash.

Every client, tunnel leg and backend connection holds one descriptor, and the process has
``RLIMIT_NOFILE`` of them (``ulimit -n``). What happens at the limit depends on the loop:

- asyncio reports each failed ``accept()`` (EMFILE, ...) to the loop's exception handler and
  retries a second later: :class:`AcceptFailureLog`, installed by the CLI, turns that into one
  error line every ``LOG_INTERVAL`` seconds.
- uvloop (libuv) sheds the connection itself and reports nothing, so the warning has to come
  before the limit: :meth:`DescriptorWatch.check` runs on every accepted client, in O(1) (the
  limit is read at start and on reload, never per connection), and warns once every
  ``LOG_INTERVAL`` seconds while ``WARN_FRACTION`` of the limit or more is in use.

A backend connect that fails for lack of descriptors is a 502 with its own log line (upstream).
"""

from __future__ import annotations

import asyncio
import errno
import logging
import math
import os
import resource
import time
from collections.abc import Callable
from typing import Any

from .throttle import LOG_INTERVAL, Throttle

__all__ = [
    "EXHAUSTED",
    "LOG_INTERVAL",
    "WARN_FRACTION",
    "AcceptFailureLog",
    "DescriptorWatch",
    "Throttle",
    "open_file_limit",
]

log = logging.getLogger(__name__)

# Out of descriptors (or socket memory): accept() fails until some close.
EXHAUSTED = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM})
# Warn from here: at 95% of 20,000 that leaves 1,000 descriptors (500 tunnels with their
# backend legs) of headroom to act on the warning, and a busy proxy rarely sits this high.
WARN_FRACTION = 0.95


def open_file_limit() -> int:
    """The soft ``RLIMIT_NOFILE`` of this process; 0 when it is unlimited."""
    soft, _hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    return 0 if soft == resource.RLIM_INFINITY else soft


class DescriptorWatch:
    """Compares the descriptors in use with the open-file limit when a client is accepted."""

    __slots__ = ("_throttle", "limit", "threshold")

    def __init__(self, limit: int, clock: Callable[[], float] = time.monotonic) -> None:
        self._throttle = Throttle(LOG_INTERVAL, clock)
        self.limit = 0
        self.threshold = math.inf
        self.set_limit(limit)

    def set_limit(self, limit: int) -> None:
        """Use ``limit`` (0: unlimited, never warn) from now on; at start and on reload."""
        self.limit = limit
        self.threshold = math.ceil(limit * WARN_FRACTION) if limit > 0 else math.inf

    def check(self, in_use: int) -> None:
        """``in_use``: a lower bound of the descriptors open now (one comparison when far
        from the limit)."""
        if in_use >= self.threshold and self._throttle():
            log.warning(
                "running low on file descriptors: %d in use of the open-file limit %d; new "
                "clients will be refused when they run out; raise it with ulimit -n",
                in_use,
                self.limit,
            )


class AcceptFailureLog:
    """Loop exception handler: a failed accept() for lack of descriptors becomes one clear
    error line every ``LOG_INTERVAL`` seconds instead of a traceback per attempt; anything
    else goes to the loop's default handler."""

    __slots__ = ("_throttle",)

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._throttle = Throttle(LOG_INTERVAL, clock)

    def __call__(self, loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        exc = context.get("exception")
        if _late_accept_retry(context):
            # asyncio retries a failed accept a second later even when the server has been
            # closed since (shutdown): the retry then finds no socket. Nothing is lost.
            log.debug("accept retry after the listener closed: %s", exc)
            return
        if not (isinstance(exc, OSError) and exc.errno in EXHAUSTED):
            loop.default_exception_handler(context)
            return
        if self._throttle():
            log.error(
                "cannot accept connections: %s (open-file limit %d; raise it with ulimit -n); "
                "new clients wait until descriptors are free",
                os.strerror(exc.errno or 0),
                open_file_limit(),
            )


def _late_accept_retry(context: dict[str, Any]) -> bool:
    """The context of asyncio's accept retry (``_start_serving``) on a closed listener."""
    callback = getattr(context.get("handle"), "_callback", None)
    return (
        isinstance(context.get("exception"), ValueError)
        and getattr(callback, "__name__", "") == "_start_serving"
    )
