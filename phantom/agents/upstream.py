"""An agent as a backend: an :class:`~phantom.upstream.Upstream` whose connections are data
connections from the agent instead of TCP connects.

Everything else is the ordinary upstream: h11 client framing, the keep-alive pool (a pooled
data connection keeps its connection to the app), the retry of a pooled connection found dead,
and the hand-over of an upgraded connection to a tunnel. So phantom's request path (routing,
stages, the cache, the access log, metrics, limits) serves an agent's name as it serves any
backend.
"""

from __future__ import annotations

from ..config import BackendURL
from ..endpoint import hand_over
from ..errors import BackendError, BackendTimeout
from ..upstream import Upstream, UpstreamConnection
from .hub import OFFLINE, AgentUnavailable, Hub


class AgentError(BackendError):
    """An agent could not give a data connection: offline (502), busy (503), or unable to
    reach its app (502). The client is told in general words which."""

    def __init__(self, failure: AgentUnavailable) -> None:
        super().__init__(failure.reason, "unreachable")
        self.status = failure.status
        self._public = failure.public

    @property
    def public(self) -> str:
        return self._public


class AgentUpstream(Upstream):
    """Connections to the app behind the agent registered as ``name`` (whichever session of
    it is live: an agent that reconnects keeps its site, cache included)."""

    def __init__(self, hub: Hub, name: str, url: BackendURL, connect_timeout: float) -> None:
        super().__init__(url, connect_timeout)
        self.hub = hub
        self.name = name

    async def connect(self) -> UpstreamConnection:
        """A fresh data connection from the agent (warm, or dialled on request)."""
        session = self.hub.lookup(self.name)
        try:
            if session is None:
                raise AgentUnavailable(502, f"agent {self.name} offline", OFFLINE)
            data = await session.open(self.connect_timeout)
        except AgentUnavailable as exc:
            if exc.status == 504:
                raise BackendTimeout(exc.reason) from None
            raise AgentError(exc) from None
        conn = UpstreamConnection(self)
        hand_over(data.detach(), conn)
        return conn
