"""The keys of ``[jwt] jwks_url``: a JWK Set fetched at start, again every REFRESH_SECONDS, and
at once when a token names a ``kid`` the set does not hold (an issuer that rotated its keys),
at most once every UNKNOWN_KID_SECONDS: a stream of tokens with made-up ``kid`` values costs
the issuer one request per interval, not one per token.

A failed refresh keeps the keys already held (and says so in the log); keys marked
``"use": "enc"`` and keys PyJWT can't use are left out. Each key is bound to one algorithm (its
``alg``, or its kind's default: RS256, ES256/384/512 by curve, EdDSA), so a token can't make
a key check a signature of another kind.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import math
import os
import time
from collections.abc import Callable

import h11
import jwt

from .config import BackendURL
from .errors import PhantomError
from .messages import NoAnswer, request

__all__ = ["JwksError", "JwksKeys", "parse_jwks"]

log = logging.getLogger("phantom.jwks")

REFRESH_SECONDS = 300.0
UNKNOWN_KID_SECONDS = 30.0
FETCH_TIMEOUT = 5.0
MAX_JWKS_BYTES = 1 << 20


class JwksError(PhantomError):
    """The JWK Set could not be fetched or used; ``str()`` says why, naming the URL."""


def parse_jwks(body: bytes, algorithms: tuple[str, ...]) -> dict[str | None, jwt.PyJWK]:
    """The usable signing keys of a JWK Set by ``kid`` (a set's only key also under None, for
    tokens without ``kid``). Raises ValueError when there is none."""
    try:
        document = json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise ValueError("not JSON") from None
    entries = document.get("keys") if isinstance(document, dict) else None
    if not isinstance(entries, list):
        raise ValueError('no "keys" array')
    keys: dict[str | None, jwt.PyJWK] = {}
    for entry in entries:
        if not isinstance(entry, dict) or entry.get("use", "sig") != "sig":
            continue
        try:
            key = jwt.PyJWK(entry)
        except jwt.PyJWTError:
            continue
        if key.algorithm_name in algorithms:
            keys[key.key_id] = key
    if not keys:
        raise ValueError(f"no signing key for {', '.join(algorithms)}")
    if len(keys) == 1:
        keys[None] = next(iter(keys.values()))
    return keys


class JwksKeys:
    """The key set of one ``jwks_url`` (a :class:`phantom.jwtauth.KeySet`)."""

    def __init__(
        self,
        url: BackendURL,
        algorithms: tuple[str, ...],
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.url = url
        self.algorithms = algorithms
        self.generation = 0
        self._clock = clock
        self._keys: dict[str | None, jwt.PyJWK] = {}
        self._digest = b""
        self._last_unknown_fetch = -math.inf
        self._fetching: asyncio.Task[None] | None = None
        self._periodic: asyncio.Task[None] | None = None

    def key_for(self, kid: str | None) -> jwt.PyJWK | None:
        return self._keys.get(kid)

    async def load(self) -> None:
        """Fetch the set now and use it. Raises JwksError; the keys held stay then."""
        try:
            response, body = await asyncio.wait_for(
                request(self.url, b"GET", [(b"Accept", b"application/json")], b"", MAX_JWKS_BYTES),
                FETCH_TIMEOUT,
            )
        except asyncio.TimeoutError:
            raise JwksError(f"{self.url}: no answer within {FETCH_TIMEOUT:g}s") from None
        except OSError as exc:
            # asyncio's connect errors say "Connect call failed (...)": the errno says more.
            reason = os.strerror(exc.errno) if exc.errno else str(exc) or type(exc).__name__
            raise JwksError(f"{self.url}: {reason}") from None
        except (h11.ProtocolError, NoAnswer) as exc:
            raise JwksError(f"{self.url}: {exc or type(exc).__name__}") from None
        if response.status_code != 200:
            raise JwksError(f"{self.url}: answered {response.status_code}, expected 200")
        try:
            keys = parse_jwks(body, self.algorithms)
        except ValueError as exc:
            raise JwksError(f"{self.url}: {exc}") from None
        digest = hashlib.sha256(body).digest()
        if digest != self._digest:
            # New keys: verdicts remembered under the old ones are dropped (phantom.jwtauth).
            self._keys, self._digest = keys, digest
            self.generation += 1
            log.info("JWKS %s: %d signing keys", self.url, len(set(map(id, keys.values()))))

    async def refresh_for(self, kid: str | None) -> None:
        """A token named a ``kid`` we lack: fetch the set again, unless that was done less
        than UNKNOWN_KID_SECONDS ago. Concurrent callers wait for the same fetch."""
        if self._fetching is None:
            now = self._clock()
            if now - self._last_unknown_fetch < UNKNOWN_KID_SECONDS:
                return
            self._last_unknown_fetch = now
            log.info("JWKS %s: unknown kid %r, fetching the set again", self.url, kid)
            self._fetching = asyncio.get_running_loop().create_task(self._refresh_for_unknown())
        await asyncio.shield(self._fetching)

    async def _refresh_for_unknown(self) -> None:
        try:
            await self._refresh()
        finally:
            self._fetching = None

    async def _refresh(self) -> None:
        try:
            await self.load()
        except JwksError as exc:
            log.warning("JWKS refresh failed, keeping the keys held: %s", exc)

    async def start(self, required: bool) -> None:
        """Fetch the set, then refresh it every REFRESH_SECONDS until :meth:`close`. Raises
        JwksError when the first fetch fails and the set is ``required``; otherwise that is
        logged, and tokens are refused until a fetch succeeds."""
        try:
            await self.load()
        except JwksError as exc:
            if required:
                raise
            log.warning("JWKS not fetched at start (tokens are refused until it is): %s", exc)
        self._periodic = asyncio.get_running_loop().create_task(self._every_while())

    async def _every_while(self) -> None:
        while True:
            await asyncio.sleep(REFRESH_SECONDS)
            await self._refresh()

    async def close(self) -> None:
        for task in (self._periodic, self._fetching):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
