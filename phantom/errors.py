"""Error types. One root, :class:`PhantomError`; each subclass knows the HTTP status it maps to.

Pure module: no I/O.
"""

from __future__ import annotations

__all__ = [
    "BackendError",
    "BackendTimeout",
    "ConfigError",
    "ExecuteError",
    "NotFound",
    "PhantomError",
    "RequestRejected",
    "SnapshotError",
    "UsageError",
]


class PhantomError(Exception):
    """Root of every error phantom raises on purpose."""

    #: The HTTP status a client sees when this error ends a request.
    status: int = 500

    @property
    def public(self) -> str:
        """What a client is told; the log line gets ``str(self)``."""
        return str(self)


class ConfigError(PhantomError):
    """A configuration problem, located by source (file name) and dotted key.

    ``str(err)`` is one line, ``"{source}: {key}: {problem}"``; the CLI prints it after
    ``"phantom: "`` and exits with status 2.
    """

    def __init__(self, source: str, key: str, problem: str) -> None:
        # Keep the message on one line whatever the problem text carries.
        self.source = source
        self.key = key
        self.problem = " ".join(line.strip() for line in problem.splitlines()).strip()
        super().__init__(source, key, self.problem)

    def __str__(self) -> str:
        return f"{self.source}: {self.key}: {self.problem}"


class BackendError(PhantomError):
    """The backend is unreachable, refused or reset the connection, or sent garbage.

    ``kind`` classifies the failure for metrics: ``refused``, ``timeout``, ``reset``, ``tls``
    (handshake or certificate), ``protocol`` (an invalid response) or ``unreachable``.
    """

    status = 502
    kind = "unreachable"

    def __init__(
        self,
        message: str,
        kind: str | None = None,
        *,
        detail: str = "",
        unanswered: bool = False,
    ) -> None:
        # ``detail`` (in ``str()``, for the log and the operator) may quote the backend's
        # bytes, which can belong to another client's response.
        super().__init__(f"{message}: {detail}" if detail else message)
        if kind is not None:
            self.kind = kind
        # The request got nowhere: no connection, or closed before any byte of an answer (and
        # not because its client left). Another backend may take it if it is idempotent.
        self.unanswered = unanswered

    @property
    def public(self) -> str:
        """The failure in general words: the message names the backend's address (and the
        operating system's words), and the detail may quote the backend's bytes; both are the
        operator's business, not every client's."""
        return _PUBLIC.get(self.kind, _PUBLIC["unreachable"])


_PUBLIC = {
    "refused": "The backend refused the connection.",
    "timeout": "The backend did not answer in time.",
    "reset": "The backend closed the connection.",
    "tls": "The TLS connection to the backend failed.",
    "protocol": "The backend sent an invalid response.",
    "unreachable": "The backend could not be reached.",
}


class BackendTimeout(BackendError):
    """Connecting to the backend, or waiting for its response head, took too long."""

    status = 504
    kind = "timeout"


class ExecuteError(BackendError):
    """A server's ``execute`` command did not bring its backend up (exited, or timed out)."""


class SnapshotError(BackendError):
    """A snapshot could not be fetched: the backend failed or answered other than 200."""


class NotFound(PhantomError):
    """An operation named something that does not exist (a server, a snapshot)."""

    status = 404


class UsageError(PhantomError):
    """An operation that does not apply, e.g. a snapshot call on a dynamic server."""

    status = 400


class RequestRejected(PhantomError):
    """A client request phantom refuses to forward (malformed, ambiguous or over a limit).

    The client gets ``status`` and ``Connection: close``; the backend never sees the request.
    """

    def __init__(self, status: int, reason: str, *, retry_after: int | None = None) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason
        self.retry_after = retry_after  # seconds, sent as Retry-After (a 503 over a limit)
