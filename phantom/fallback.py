"""``fallback_url``: where a server's requests go when its backend refuses the connection.

A dev server that is not running refuses connections; with ``fallback_url`` (Turborepo's
``development.fallback``) the request, or an upgrade handshake, goes to that URL instead of
being answered 502: the same path and query under the fallback's base path, the fallback's own
``Host`` (a deployed site is chosen by its name; an upgrade's ``Origin`` is the fallback's
too), and ``X-Phantom-Fallback: 1`` on the answer.
Only a refused connection falls back: nothing of the request reached the backend, so it can be
sent elsewhere whatever its method. A timeout or an error answer is the backend's to give.
"""

from __future__ import annotations

import dataclasses
from typing import Final

import h11

from . import headers as hdr
from .config import DEFAULT_PORTS, BackendURL, ServerConfig
from .routing import target_at
from .tls import backend_context
from .upstream import Upstream

__all__ = ["FALLBACK_FIELD", "Fallback"]

#: The field marking an answer that came from ``fallback_url`` (like ``Cache-Status``, ours).
FALLBACK_FIELD: Final = (b"X-Phantom-Fallback", b"1")


class Fallback:
    """A server's ``fallback_url``: its connection pool and the requests it is sent."""

    def __init__(self, server: ServerConfig, url: BackendURL, connect_timeout: float, source: str):
        self.url = url
        # Always verified (system store, plus backend_ca): backend_tls_verify = false is for
        # the local backend's certificate, not a deployed site's.
        tls = backend_context(
            dataclasses.replace(server, proxy_url=url, backends=(), backend_tls_verify=True),
            source,
        )
        self.upstream = Upstream(url, connect_timeout, tls)
        self._server = server
        # Host as a browser would send it to that URL: no port when it is the scheme's own.
        bare = f"[{url.host}]" if ":" in url.host else url.host
        host = bare if url.port == DEFAULT_PORTS[url.scheme] else url.netloc
        self._host = host.encode("latin-1")
        self._scheme = url.scheme.encode("ascii")

    def request(self, outgoing: h11.Request, *, upgrade: bool) -> h11.Request:
        """The request ``outgoing`` (as the backend would have got it) for the fallback."""
        return h11.Request(
            method=outgoing.method,
            target=target_at(self._server, outgoing.target, self.url),
            headers=hdr.with_backend_host(
                outgoing.headers.raw_items(), self._host, origin=upgrade, scheme=self._scheme
            ),
        )
