"""An agent as a backend: an :class:`~phantom.upstream.Upstream` whose connections are data
connections from the agent instead of TCP connects.

Everything else is the ordinary upstream: h11 client framing, the keep-alive pool (a pooled
data connection keeps its connection to the app), the retry of a pooled connection found dead,
and the hand-over of an upgraded connection to a tunnel. So phantom's request path (routing,
the cache, the access log, metrics, limits) serves an agent's name as it serves a backend.
"""

from __future__ import annotations

from ..config import BackendURL
from ..endpoint import hand_over
from ..errors import BackendError, BackendTimeout
from ..upstream import Upstream, UpstreamConnection
from .hub import AgentSession, AgentUnavailable


class AgentUpstream(Upstream):
    """Connections to the app behind one agent. ``url`` names it in messages and logs."""

    def __init__(self, session: AgentSession, url: BackendURL, connect_timeout: float) -> None:
        super().__init__(url, connect_timeout)
        self.session = session

    async def connect(self) -> UpstreamConnection:
        """A fresh data connection from the agent (warm, or dialled on request); a failure is
        the BackendError (502) or BackendTimeout (504) of a backend that can't be reached."""
        try:
            data = await self.session.open(self.connect_timeout)
        except AgentUnavailable as exc:
            if exc.status == 504:
                raise BackendTimeout(exc.reason) from None
            raise BackendError(exc.reason, "unreachable") from None
        conn = UpstreamConnection(self)
        hand_over(data.detach(), conn)
        return conn
