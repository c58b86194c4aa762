"""One process's link to the ``[redis]`` Redis: the client, its health and the invalidation
channel.

Built on redis-py's asyncio client (the ``redis`` extra): Redis's own client, kept by Redis's
maintainers, typed, with TLS (``rediss://``), Unix sockets and Sentinel/Cluster clients of its
own, and the package distributions ship (python3-redis); coredis is fast and typed too, but a
one-maintainer project, and phantom needs nothing it adds.

Redis is an accelerator, never a dependency of an answer. Each command is bounded by
``timeout``; one that fails or is late marks Redis down, and while it is down commands are not
tried at all (:class:`Unavailable` at once), so a dead or slow Redis costs a request nothing.
A background task holds the subscription to the invalidation channel, notices the link break,
and reconnects with backoff (0.1 s doubling to 5 s); each change of state is logged once.
``errors`` counts failed commands and connection attempts (``phantom_redis_errors_total``).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import secrets
import sys
from collections.abc import Awaitable, Callable, Coroutine
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

from .config import RedisConfig

if TYPE_CHECKING:
    from redis.asyncio import Redis

__all__ = ["RedisLink", "Subscriber", "Unavailable"]

log = logging.getLogger("phantom.redis")

T = TypeVar("T")

FIRST_BACKOFF = 0.1
LAST_BACKOFF = 5.0
# How often the listener looks up from the channel to see whether a command found Redis gone.
LISTEN_SECONDS = 0.25
# Writes waiting for Redis at most; beyond, new ones are dropped (the cache is best effort).
MAX_BACKGROUND = 1024


class Unavailable(Exception):
    """Redis is down, or the command failed or was late."""


class Subscriber(Protocol):
    """A store that shares through this link (one per server in redis mode)."""

    def invalidated_elsewhere(self, message: dict[str, Any]) -> None:
        """Another process invalidated something of this server: drop it from memory."""

    async def rejoined(self) -> None:
        """Redis is back: do what could not be done while it was away."""


class RedisLink:
    def __init__(self, config: RedisConfig) -> None:
        self.config = config
        self.up = False
        self.errors = 0
        self.channel = config.key_prefix + "invalidate"
        # Our own messages come back on the channel; this tells them apart.
        self.instance = secrets.token_hex(8)
        self._subscribers: dict[str, Subscriber] = {}
        self._client: Redis | None = None
        self._keeper: asyncio.Task[None] | None = None
        self._broken = asyncio.Event()  # a command failed: the listener reconnects
        self._first_attempt = asyncio.Event()
        self._background: set[asyncio.Future[object]] = set()
        self._logged_state: bool | None = None

    def join(self, server: str, subscriber: Subscriber) -> None:
        self._subscribers[server] = subscriber

    async def start(self) -> None:
        """Connect in the background; wait a moment for the first attempt, so that the first
        requests already share, but never fail to start because Redis is away."""
        self._client = _client(self.config)
        self._keeper = asyncio.ensure_future(self._keep())
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(self._first_attempt.wait(), 4 * self.config.timeout)

    async def close(self) -> None:
        if self._keeper is not None:
            self._keeper.cancel()
            await asyncio.gather(self._keeper, return_exceptions=True)
        if self._background:
            await asyncio.wait(self._background, timeout=self.config.timeout)
        for task in list(self._background):
            task.cancel()
        await asyncio.gather(*self._background, return_exceptions=True)
        if self._client is not None:
            with contextlib.suppress(Exception):
                await self._client.aclose(close_connection_pool=True)  # ours, not its
        self.up = False

    async def call(self, command: Callable[[Redis], Awaitable[T]]) -> T:
        """Run ``command`` on the client within ``timeout``; Unavailable when Redis is down or
        the command fails."""
        if not self.up or self._client is None:
            raise Unavailable()
        try:
            return await _within(self.config.timeout, command(self._client))
        except (OSError, asyncio.TimeoutError, _redis_error()) as exc:
            self.errors += 1
            self._state(False, exc)
            self._broken.set()
            raise Unavailable() from None

    def background(self, work: Coroutine[Any, Any, object]) -> asyncio.Future[object] | None:
        """Run ``work`` without waiting for it (a write after a response was stored); None
        when too many are waiting already (then it is dropped)."""
        if len(self._background) >= MAX_BACKGROUND:
            work.close()
            return None
        task = asyncio.ensure_future(work)
        self._background.add(task)
        task.add_done_callback(self._background.discard)
        return task

    async def publish(self, server: str, message: dict[str, Any]) -> None:
        """Tell every other process sharing this Redis about an invalidation of ``server``."""
        text = json.dumps({**message, "server": server, "from": self.instance})
        await self.call(lambda r: r.publish(self.channel, text))

    # -- the listener ---------------------------------------------------------------------

    async def _keep(self) -> None:
        assert self._client is not None
        backoff = FIRST_BACKOFF
        while True:
            pubsub = self._client.pubsub()
            try:
                await asyncio.wait_for(pubsub.subscribe(self.channel), self.config.timeout)
                await asyncio.wait_for(self._client.ping(), self.config.timeout)
                self._broken.clear()
                self._state(True)
                self._first_attempt.set()
                backoff = FIRST_BACKOFF
                await asyncio.gather(*(s.rejoined() for s in self._subscribers.values()))
                while not self._broken.is_set():
                    message = await pubsub.get_message(
                        ignore_subscribe_messages=True, timeout=LISTEN_SECONDS
                    )
                    if message is not None:
                        self._received(message.get("data"))
            except (OSError, asyncio.TimeoutError, _redis_error()) as exc:
                self.errors += 1
                self._state(False, exc)
            finally:
                self._first_attempt.set()
                with contextlib.suppress(Exception):
                    await pubsub.aclose()
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, LAST_BACKOFF)

    def _received(self, data: object) -> None:
        try:
            message = json.loads(data) if isinstance(data, (bytes, str)) else None
        except ValueError:
            message = None
        if not isinstance(message, dict):
            log.debug("redis: ignored a message on %s that is not phantom's", self.channel)
            return
        if message.get("from") == self.instance:
            return  # ours: done before it was published
        subscriber = self._subscribers.get(message.get("server"))  # type: ignore[arg-type]
        if subscriber is not None:
            subscriber.invalidated_elsewhere(message)

    def _state(self, up: bool, reason: BaseException | None = None) -> None:
        """Record up/down; log only when it changes."""
        self.up = up
        if self._logged_state is up:
            return
        self._logged_state = up
        where = self.config.shown_url
        if up:
            log.info("redis: connected to %s; sharing the cache", where)
        else:
            detail = str(reason) or type(reason).__name__
            log.warning(
                "redis: %s is unavailable (%s); serving from memory and the backends, "
                "retrying in the background", where, detail,
            )


if sys.version_info >= (3, 11):

    async def _within(seconds: float, work: Awaitable[T]) -> T:
        """``await work``, cancelled after ``seconds`` (TimeoutError); unlike wait_for
        before 3.12, without a task of its own per command."""
        async with asyncio.timeout(seconds):
            return await work

else:

    async def _within(seconds: float, work: Awaitable[T]) -> T:
        return await asyncio.wait_for(work, seconds)


def _redis_error() -> type[Exception]:
    from redis.exceptions import RedisError

    return RedisError


def _client(config: RedisConfig) -> Redis:
    from redis.asyncio import BlockingConnectionPool, Redis
    from redis.asyncio.retry import Retry
    from redis.backoff import NoBackoff

    pool = BlockingConnectionPool.from_url(
        config.url,
        max_connections=config.pool_size,
        timeout=config.timeout,  # waiting for a free connection
        # No per-socket timeout: RedisLink.call bounds each command as a whole, and redis-py
        # would wrap the write of every command in a wait_for task of its own on top (about
        # a third of the CPU of a GET in redis-py). The listener's reads are bounded by
        # get_message's own timeout.
        socket_timeout=None,
        socket_connect_timeout=config.timeout,
        # No retries: a failed command is a miss at once, and the listener reconnects.
        retry=Retry(NoBackoff(), 0),
    )
    return Redis(connection_pool=pool)
