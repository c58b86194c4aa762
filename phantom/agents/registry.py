"""Who may be reached under which name: tokens, name rules, reservations and limits.

Pure: no sockets; time is passed in (``now``, monotonic seconds), so the grace period is tested
with a fake clock.

- A name is one DNS label, lowercase: it becomes ``NAME.relay_domain``.
- A token may claim only names matching its patterns (``"alice-*"``). Tokens are compared in
  constant time, all of them every time, so neither which token matched nor how much of it
  did leaks through timing; the registry keeps only a digest of a token, never the token.
- A live name belongs to its session: a second claim is refused, whoever makes it (the first
  agent may only have lost its network; heartbeats free the name within two ping intervals).
- When an agent is lost, its name stays reserved for its token for ``relay_name_grace``
  seconds, so another token cannot take it over while the agent reconnects. An agent that
  says goodbye (CLOSE) frees its name at once.
"""

from __future__ import annotations

import fnmatch
import hashlib
import hmac
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final

__all__ = [
    "Claim",
    "Refused",
    "Registry",
    "TokenRules",
    "is_name",
    "name_from_host",
    "name_from_path",
]

_LABEL: Final = re.compile(r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?")


def is_name(name: str) -> bool:
    """Whether ``name`` is a valid agent name: one lowercase DNS label."""
    return _LABEL.fullmatch(name) is not None


def name_from_host(host: bytes, domain: str) -> str | None:
    """The agent name a ``Host`` value addresses under ``domain``: ``alice.relay.example.com``
    (any port) gives ``alice``; None when it is not one label below the domain."""
    text = host.decode("latin-1").strip().lower()
    if text.startswith("["):
        return None  # an IPv6 literal names no agent
    text = text.rsplit(":", 1)[0] if ":" in text else text
    suffix = "." + domain
    if not text.rstrip(".").endswith(suffix):
        return None
    name = text.rstrip(".")[: -len(suffix)]
    return name if is_name(name) else None


def name_from_path(path: bytes) -> str | None:
    """The agent name a path addresses in the path mode: ``/alice/...`` gives ``alice``."""
    if not path.startswith(b"/"):
        return None
    name = path[1:].split(b"/", 1)[0].decode("latin-1")
    return name if is_name(name) else None


def _digest(token: str) -> bytes:
    return hashlib.sha256(token.encode("utf-8")).digest()


class TokenRules:
    """``[relay.tokens]``: which names each token may claim."""

    def __init__(self, tokens: Sequence[tuple[str, Sequence[str]]]) -> None:
        self._rules = [(_digest(token), tuple(patterns)) for token, patterns in tokens]

    def identify(self, token: str) -> bytes | None:
        """The digest standing for ``token`` when it is one of ours, else None. Every known
        token is compared, each in constant time, whatever matched before."""
        offered = _digest(token)
        found = None
        for digest, _ in self._rules:
            if hmac.compare_digest(offered, digest):
                found = digest
        return found

    def may_claim(self, identity: bytes, name: str) -> bool:
        for digest, patterns in self._rules:
            if digest == identity:
                return any(fnmatch.fnmatchcase(name, pattern) for pattern in patterns)
        return False


@dataclass(frozen=True, slots=True)
class Claim:
    """A name granted to a new session."""

    name: str
    session: int


@dataclass(frozen=True, slots=True)
class Refused:
    """A claim refused: ``status`` for the handshake's answer, ``reason`` for it and the log."""

    status: int
    reason: str


@dataclass(slots=True)
class _Entry:
    identity: bytes  # the token's digest
    session: int | None  # None: reserved, no agent connected
    reserved_until: float = 0.0


class Registry:
    """The names in use and reserved. ``max_agents`` 0 = no limit."""

    def __init__(self, rules: TokenRules, *, grace: float, max_agents: int) -> None:
        self.rules = rules
        self.grace = grace
        self.max_agents = max_agents
        self._names: dict[str, _Entry] = {}
        self._live = 0
        self._next_session = 1

    @property
    def live(self) -> int:
        return self._live

    def claim(self, token: str, name: str, now: float) -> Claim | Refused:
        """A session for the agent holding ``token`` under ``name``, or why not."""
        identity = self.rules.identify(token)
        if identity is None:
            return Refused(401, "unknown token")
        if not is_name(name):
            return Refused(400, f"{name!r} is not a DNS label (a-z, 0-9 and '-', at most 63)")
        if not self.rules.may_claim(identity, name):
            return Refused(403, f"the token may not claim the name {name!r}")
        entry = self._names.get(name)
        if entry is not None and entry.session is None and entry.reserved_until <= now:
            entry = None  # the grace period is over
        if entry is not None:
            if entry.session is not None:
                return Refused(409, f"the name {name!r} is in use by another agent")
            if not hmac.compare_digest(entry.identity, identity):
                return Refused(409, f"the name {name!r} is reserved for another token")
        if self.max_agents and self._live >= self.max_agents:
            return Refused(503, f"the relay serves its maximum of {self.max_agents} agents")
        session = self._next_session
        self._next_session += 1
        self._names[name] = _Entry(identity, session)
        self._live += 1
        return Claim(name, session)

    def release(self, claim: Claim, now: float, *, goodbye: bool) -> None:
        """The session of ``claim`` ended: its name is reserved for ``grace`` seconds, or free
        at once when the agent said goodbye."""
        entry = self._names.get(claim.name)
        if entry is None or entry.session != claim.session:
            return
        self._live -= 1
        if goodbye or self.grace <= 0:
            del self._names[claim.name]
        else:
            entry.session = None
            entry.reserved_until = now + self.grace

    def known(self, name: str) -> bool:
        """Whether ``name`` is live or reserved (call ``forget_expired`` first)."""
        return name in self._names

    def forget_expired(self, now: float) -> None:
        """Drop reservations whose grace period is over (memory stays bounded by live agents
        plus those lost within the last ``grace`` seconds)."""
        for name in [
            name
            for name, entry in self._names.items()
            if entry.session is None and entry.reserved_until <= now
        ]:
            del self._names[name]
