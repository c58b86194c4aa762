"""The relay's agent-facing side: control sessions, data connections, the warm pool.

An agent's control connection, once upgraded, is driven by :class:`ControlLink` (control
messages in and out, heartbeats). :class:`AgentSession` is what the public side asks for a
backend connection: ``await session.open()`` gives a data connection from that agent (which
the agent has spliced to its app), taken from its warm pool or dialled on request (OPEN).
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import secrets
import time
from collections import deque
from collections.abc import Callable
from typing import Protocol

from ..config import DEFAULT_PORTS, RelayConfig
from ..endpoint import DetachedState, Endpoint, hand_over
from . import protocol
from .protocol import Kind, Message
from .registry import Claim, Refused, Registry, TokenRules

log = logging.getLogger("phantom.relay")

# The most idle data connections an agent may keep ready (--warm): each is a descriptor here.
MAX_WARM = 16
# A control connection must say nothing but control messages: missing two pings ends it.
MISSED_PINGS = 2


class AgentUnavailable(Exception):
    """No data connection for a public connection: ``status`` (502, 503 or 504) and
    ``public``, the general words its client is told; ``reason`` is for the log."""

    def __init__(self, status: int, reason: str, public: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason
        self.public = public


#: What a public client is told when its agent is not connected.
OFFLINE = "agent offline: the agent for this name is not connected (it may be reconnecting)"


class ControlLink(asyncio.Protocol):
    """The control connection after its 101: decodes messages, sends pings."""

    def __init__(self, session: AgentSession, transport: asyncio.Transport) -> None:
        self.session = session
        self.transport = transport
        self.decoder = protocol.Decoder()
        self.unanswered = 0
        self.closed = False
        self._timer: asyncio.TimerHandle | None = None

    def start(self, unread: bytes, interval: float) -> None:
        self.interval = interval
        self.transport.set_protocol(self)
        self._timer = asyncio.get_running_loop().call_later(interval, self._ping)
        if unread:
            self.data_received(unread)

    def send(self, message: Message) -> None:
        if not self.closed:
            self.transport.write(protocol.encode(message))

    def _ping(self) -> None:
        if self.unanswered >= MISSED_PINGS:
            log.warning(
                "agent %s: %d pings unanswered: closing its control connection",
                self.session.name,
                self.unanswered,
            )
            self.close()
            return
        self.unanswered += 1
        self.send(Message(Kind.PING, int(time.monotonic() * 1000)))
        self._timer = asyncio.get_running_loop().call_later(self.interval, self._ping)

    def data_received(self, data: bytes) -> None:
        try:
            messages = self.decoder.feed(data)
        except protocol.ProtocolError as exc:
            log.warning("agent %s: %s: closing its control connection", self.session.name, exc)
            self.close()
            return
        for message in messages:
            if message.kind is Kind.PONG:
                self.unanswered = 0
            elif message.kind is Kind.ERROR:
                self.session.open_failed(message.number, message.text)
            elif message.kind is Kind.CLOSE:
                log.info("agent %s: said goodbye: %s", self.session.name, message.text or "-")
                self.session.goodbye = True
                self.close()
            else:
                log.warning(
                    "agent %s: unexpected %s: closing its control connection",
                    self.session.name,
                    message.kind.name,
                )
                self.close()

    def eof_received(self) -> bool:
        return False  # the transport closes; connection_lost ends the session

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if self._timer is not None:
            self._timer.cancel()
        self.session.ended()

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self.transport.close()


class AgentSession:
    """One registered agent: its control link, warm pool and connections waiting for it."""

    def __init__(self, hub: Hub, claim: Claim, warm: int, cache: bool) -> None:
        self.hub = hub
        self.claim = claim
        self.name = claim.name
        self.cache = cache  # the agent asked the relay to cache its answers
        self.key = secrets.token_urlsafe(24)  # every data connection shows it
        self.warm_wanted = warm
        self.goodbye = False
        self.link: ControlLink | None = None
        self._warm: deque[Endpoint] = deque()
        # The transports of the data connections handed out, until they close (whoever owns
        # them then: a tunnel, the upstream pool): what max_connections counts.
        self._out: list[asyncio.BaseTransport] = []
        self._waiting: dict[int, asyncio.Future[Endpoint]] = {}
        self._next_id = 1
        self.alive = True

    # -- the public side ---------------------------------------------------------------------

    async def open(self, timeout: float) -> Endpoint:
        """A data connection from this agent: a warm one, or one dialled on request. Raises
        AgentUnavailable: 503 when it has ``max_connections`` open (or being dialled)."""
        limit = self.hub.config.max_connections
        self._out = [transport for transport in self._out if not transport.is_closing()]
        if limit and len(self._out) + len(self._waiting) >= limit:
            raise AgentUnavailable(
                503,
                f"agent {self.name} has {limit} connections open",
                "agent busy: too many connections to this agent; try again shortly",
            )
        conn = self._take_warm()
        if conn is None:
            conn = await self._dial(timeout)
        self._out.append(conn.transport)
        return conn

    def _take_warm(self) -> Endpoint | None:
        while self._warm:
            conn = self._warm.popleft()
            if not conn.is_lost and not conn.at_eof:
                return conn
            conn.close()
        return None

    async def _dial(self, timeout: float) -> Endpoint:
        """Ask the agent for a data connection (OPEN) and wait for it."""
        if self.link is None or not self.alive:
            raise AgentUnavailable(502, f"agent {self.name} offline", OFFLINE)
        number = self._next_id
        self._next_id += 1
        log.debug("agent %s: no warm data connection: OPEN %d", self.name, number)
        waiter: asyncio.Future[Endpoint] = asyncio.get_running_loop().create_future()
        self._waiting[number] = waiter
        self.link.send(Message(Kind.OPEN, number))
        try:
            return await asyncio.wait_for(waiter, timeout)
        except asyncio.TimeoutError:
            raise AgentUnavailable(
                504,
                f"agent {self.name} did not connect back within {timeout:g}s",
                "The agent did not answer in time.",
            ) from None
        finally:
            del self._waiting[number]

    # -- the agent side ----------------------------------------------------------------------

    @property
    def warm(self) -> int:
        """Idle data connections ready in its pool."""
        return len(self._warm)

    def refusal(self, which: bytes) -> str | None:
        """Why a data connection naming ``which`` (an OPEN's id, or ``warm``) is not wanted,
        or None when it is."""
        if which == protocol.WARM:
            if len(self._warm) >= self.warm_wanted:
                return f"already {self.warm_wanted} warm connections"
            return None
        number = protocol.number(which)
        waiter = None if number is None else self._waiting.get(number)
        if waiter is None or waiter.done():
            return f"no public connection {which.decode('latin-1')!r} is waiting"
        return None

    def take_data(self, state: DetachedState, which: bytes) -> None:
        """The data connection ``refusal`` just accepted, upgraded: park it in the pool or
        give it to the public connection waiting for it."""
        conn = Endpoint()
        hand_over(state, conn)
        if which == protocol.WARM:
            self._warm.append(conn)
        else:
            self._waiting[int(which)].set_result(conn)

    def open_failed(self, number: int, reason: str) -> None:
        waiter = self._waiting.get(number)
        if waiter is not None and not waiter.done():
            waiter.set_exception(
                AgentUnavailable(
                    502, f"agent {self.name}: {reason}", "The agent could not reach its app."
                )
            )

    def ended(self) -> None:
        """The control connection is gone: fail what waits, drop the pool, free the name."""
        if not self.alive:
            return
        self.alive = False
        for waiter in self._waiting.values():
            if not waiter.done():
                waiter.set_exception(
                    AgentUnavailable(502, f"agent {self.name} offline", OFFLINE)
                )
        while self._warm:
            self._warm.popleft().close()
        self.hub.session_ended(self)

    def close(self) -> None:
        if self.link is not None:
            self.link.send(Message(Kind.CLOSE, 0, "relay shutting down"))
            self.link.close()


class AgentEvents(Protocol):
    """Who is told when agents come and go (the relay's sites)."""

    def registered(self, session: AgentSession) -> None: ...

    def ended(self, session: AgentSession) -> None: ...


class Hub:
    """Every agent session of a relay, by name."""

    def __init__(self, config: RelayConfig, clock: Callable[[], float] = time.monotonic) -> None:
        self.config = config
        self.clock = clock
        self.events: AgentEvents | None = None
        self.registry = Registry(
            TokenRules(config.tokens),
            grace=config.relay_name_grace,
            max_agents=config.relay_max_agents,
        )
        self.sessions: dict[str, AgentSession] = {}

    def public_url(self, name: str, scheme: str, port: int) -> str:
        suffix = "" if port == DEFAULT_PORTS[scheme] else f":{port}"
        return f"{scheme}://{name}.{self.config.relay_domain}{suffix}"

    def register(
        self, token: str, name: str, warm: int, cache: bool, peer: str
    ) -> AgentSession | Refused:
        now = self.clock()
        self.registry.forget_expired(now)
        claim = self.registry.claim(token, name.lower(), now)
        if isinstance(claim, Refused):
            log.warning("agent from %s refused for name %r: %s", peer, name, claim.reason)
            return claim
        session = AgentSession(self, claim, min(max(warm, 0), MAX_WARM), cache)
        self.sessions[claim.name] = session
        log.info("agent %s registered from %s", claim.name, peer)
        return session

    def attach(self, session: AgentSession, state: DetachedState, url: str) -> None:
        """Drive the upgraded control connection of ``session`` (``state.unread``: what the
        agent sent after its handshake); tell the agent it is ready."""
        if state.lost or state.eof:
            session.ended()
            state.transport.close()
            return
        link = ControlLink(session, state.transport)
        session.link = link
        if self.events is not None:
            self.events.registered(session)
        interval = self.config.relay_ping_interval
        link.send(Message(Kind.READY, int(interval * 1000), url))
        link.start(state.unread, interval)

    def session_for_data(self, name: bytes, key: bytes) -> AgentSession | None:
        session = self.sessions.get(name.decode("latin-1").lower())
        if session is None or not hmac.compare_digest(session.key.encode(), key):
            return None
        return session

    def session_ended(self, session: AgentSession) -> None:
        if self.sessions.get(session.name) is session:
            del self.sessions[session.name]
        self.registry.release(session.claim, self.clock(), goodbye=session.goodbye)
        if self.events is not None:
            self.events.ended(session)
        kept = "" if session.goodbye else f"; name kept for {self.config.relay_name_grace:g}s"
        log.info("agent %s disconnected%s", session.name, kept)

    def lookup(self, name: str) -> AgentSession | None:
        return self.sessions.get(name)

    def close(self) -> None:
        for session in list(self.sessions.values()):
            session.goodbye = True
            session.close()
