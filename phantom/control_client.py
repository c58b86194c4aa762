"""Calling a running phantom's control API (``invalidate``, ``snapshot``, ``backends``).

Blocking on purpose: a command line makes one call and exits.
"""

from __future__ import annotations

import http.client
import json
from typing import Any
from urllib.parse import urlsplit

from .config import Config, host_port
from .errors import PhantomError

__all__ = ["ControlCallError", "call", "control_url"]

TIMEOUT = 120.0  # snapshot calls wait for the backend to render pages


class ControlCallError(PhantomError):
    """The control API could not be reached, or answered with an error."""


def control_url(config: Config) -> str:
    """``http://host:port`` of the control API a config describes."""
    if config.control_port is None:
        raise ControlCallError(
            f"{config.source}: control_port is not set, so the control API is off"
        )
    if config.control_port == 0:
        raise ControlCallError(
            f"{config.source}: control_port = 0 picks a port at start; pass --control URL"
        )
    # A wildcard listen address is reached through loopback.
    host = {"0.0.0.0": "127.0.0.1", "::": "::1"}.get(config.control_listen, config.control_listen)
    return f"http://{host_port(host, config.control_port)}"


def call(base: str, path: str, body: dict[str, Any] | None, token: str | None) -> Any:
    """POST ``body`` as JSON to ``base + path`` (GET when ``body`` is None); the decoded
    answer, or ControlCallError."""
    parts = urlsplit(base)
    if parts.scheme != "http" or not parts.hostname:
        raise ControlCallError(f"--control: expected http://host:port, got {base!r}")
    headers = {"Content-Type": "application/json"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    conn = http.client.HTTPConnection(parts.hostname, parts.port or 80, timeout=TIMEOUT)
    try:
        if body is None:
            conn.request("GET", path, headers=headers)
        else:
            conn.request("POST", path, json.dumps(body).encode(), headers)
        response = conn.getresponse()
        raw = response.read()
    except (OSError, http.client.HTTPException) as exc:
        reason = getattr(exc, "strerror", None) or exc.__class__.__name__
        raise ControlCallError(f"cannot reach phantom's control API at {base}: {reason}") from None
    finally:
        conn.close()
    try:
        answer = json.loads(raw)
    except ValueError:
        raise ControlCallError(f"{base}{path}: not a phantom control API answer") from None
    if response.status != 200:
        error = answer.get("error") if isinstance(answer, dict) else None
        raise ControlCallError(f"{path}: {response.status} {error or response.reason}")
    return answer
