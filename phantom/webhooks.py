"""Webhooks (``[[server.NAME.webhooks]]``): ask another service about a request before it is
served, from the cache or by the backend, and before an upgrade is tunnelled, so access control
covers WebSockets too.

Each call is a JSON ``POST`` of ``{"method", "path", "query", "headers"}`` (header names
lowercase; repeated fields joined with ", "), bounded by the hook's ``timeout_ms``.

- ``blocking``: 2xx lets the request through; 3xx is returned to the client with its
  ``Location``; any other status is returned as is (status, body, Content-Type). A timeout or
  connection failure is 503. Hooks run in order; the first denial stops the chain.
- ``notify``: fire and forget; never delays the request; at most NOTIFY_IN_FLIGHT at once
  (more are dropped with a warning).
- ``cache_key``: a 2xx body, trimmed, becomes the cache key; any failure keeps the default.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass

import h11

from .config import WebhookConfig
from .messages import NoAnswer, request

__all__ = ["Denial", "Webhooks"]

log = logging.getLogger("phantom.webhooks")

NOTIFY_IN_FLIGHT = 64
MAX_ANSWER_BYTES = 64 * 1024


@dataclass(frozen=True, slots=True)
class Denial:
    """What the client gets instead of its request."""

    status: int
    headers: list[tuple[bytes, bytes]]
    body: bytes


class _HookFailed(Exception):
    pass


async def _post(hook: WebhookConfig, payload: bytes) -> tuple[h11.Response, bytes]:
    """POST ``payload``; the response and its body (at most MAX_ANSWER_BYTES)."""
    try:
        return await request(
            hook.url, b"POST", [(b"Content-Type", b"application/json")], payload, MAX_ANSWER_BYTES
        )
    except NoAnswer as exc:
        raise _HookFailed(str(exc)) from None


async def _call(hook: WebhookConfig, payload: bytes) -> tuple[h11.Response, bytes]:
    try:
        answer = await asyncio.wait_for(_post(hook, payload), hook.timeout_ms / 1000)
    except asyncio.TimeoutError:
        raise _HookFailed(f"no answer within {hook.timeout_ms} ms") from None
    except (OSError, h11.ProtocolError) as exc:
        raise _HookFailed(
            getattr(exc, "strerror", None) or str(exc) or type(exc).__name__
        ) from None
    return answer


def request_payload(
    method: bytes, target: bytes, headers: Sequence[tuple[bytes, bytes]]
) -> bytes:
    path, _, query = target.decode("latin-1").partition("?")
    fields: dict[str, str] = {}
    for name, value in headers:
        key = name.decode("latin-1").lower()
        text = value.decode("latin-1")
        fields[key] = f"{fields[key]}, {text}" if key in fields else text
    data = {"method": method.decode("latin-1"), "path": path, "query": query, "headers": fields}
    return json.dumps(data).encode()


class Webhooks:
    """One server's webhooks."""

    def __init__(self, hooks: tuple[WebhookConfig, ...]) -> None:
        self.hooks = hooks
        self._notifying: set[asyncio.Task[None]] = set()

    def __bool__(self) -> bool:
        return bool(self.hooks)

    async def run(self, payload: bytes) -> tuple[Denial | None, str | None]:
        """Call every hook in order: (a denial, or None to go on; the cache key, or None)."""
        cache_key = None
        for hook in self.hooks:
            if hook.type == "notify":
                self._notify(hook, payload)
            elif hook.type == "blocking":
                denial = await self._ask(hook, payload)
                if denial is not None:
                    return denial, None
            else:
                cache_key = await self._cache_key(hook, payload) or cache_key
        return None, cache_key

    async def _ask(self, hook: WebhookConfig, payload: bytes) -> Denial | None:
        try:
            response, body = await _call(hook, payload)
        except _HookFailed as exc:
            log.warning("webhook %s failed: %s; answering 503", hook.url, exc)
            return Denial(503, [(b"Content-Type", b"text/plain")], b"Access check unavailable.\n")
        status = response.status_code
        if 200 <= status < 300:
            return None
        if 300 <= status < 400:
            location = [(n, v) for n, v in response.headers if n == b"location"]
            return Denial(status, location, b"")
        passed = (b"content-type", b"www-authenticate", b"retry-after")
        return Denial(status, [(n, v) for n, v in response.headers if n in passed], body)

    async def _cache_key(self, hook: WebhookConfig, payload: bytes) -> str | None:
        try:
            response, body = await _call(hook, payload)
        except _HookFailed as exc:
            log.warning("cache_key webhook %s failed: %s; default key", hook.url, exc)
            return None
        key = body.decode("utf-8", "replace").strip()
        return key if 200 <= response.status_code < 300 and key else None

    def _notify(self, hook: WebhookConfig, payload: bytes) -> None:
        if len(self._notifying) >= NOTIFY_IN_FLIGHT:
            log.warning(
                "notify webhook %s: %d calls in flight, dropped", hook.url, NOTIFY_IN_FLIGHT
            )
            return

        async def send() -> None:
            try:
                await _call(hook, payload)
            except _HookFailed as exc:
                log.warning("notify webhook %s failed: %s", hook.url, exc)

        task = asyncio.get_running_loop().create_task(send())
        self._notifying.add(task)
        task.add_done_callback(self._notifying.discard)

    def close(self) -> None:
        """Shutdown: drop notifications still in flight."""
        for task in list(self._notifying):
            task.cancel()
