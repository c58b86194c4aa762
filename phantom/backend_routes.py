"""The control API's backend endpoints: ``GET /backends``, ``POST /backends/drain`` and
``POST /backends/enable``.

``drain`` and ``enable`` take ``{"url": ..., "server": ...}``: ``url`` names a backend by its
address (scheme, host and port; a base path is ignored), ``server`` (optional) limits the call
to one ``[server.NAME]``, and without it every server with that backend is meant. An unknown
server or a backend no server has is 404; a missing or malformed field is 400.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from .balancing import Backend, Balancer
from .config import BackendURL, parse_backend_url
from .control import ControlError, ControlRequest, ControlResponse, ControlServer

__all__ = ["add_backend_routes"]

#: The balancers of the running configuration, by server name (they change on a reload).
Balancers = Callable[[], Mapping[str, Balancer]]


class _Backends:
    def __init__(self, balancers: Balancers) -> None:
        self.balancers = balancers

    async def show(self, request: ControlRequest) -> ControlResponse:
        return ControlResponse.json(
            200,
            {
                "servers": {
                    name: {
                        "load_balance": balancer.load_balance,
                        "hash_key": balancer.hash_key,
                        "backends": balancer.report(),
                    }
                    for name, balancer in self.balancers().items()
                }
            },
        )

    def named(self, request: ControlRequest) -> list[tuple[Balancer, Backend]]:
        """The backends a drain or enable call names."""
        body = request.json_object()
        url = _url(body)
        balancers = self.balancers()
        server = body.get("server")
        if server is not None:
            if not isinstance(server, str) or server not in balancers:
                raise ControlError(404, f"no server named {server!r}")
            balancers = {server: balancers[server]}
        found = [
            (balancer, backend)
            for balancer in balancers.values()
            if (backend := balancer.find(url)) is not None
        ]
        if not found:
            where = f"server {server}" if server is not None else "any server"
            raise ControlError(404, f"{url.scheme}://{url.netloc} is not a backend of {where}")
        return found

    async def drain(self, request: ControlRequest) -> ControlResponse:
        results = []
        for balancer, backend in self.named(request):
            balancer.drain(backend)
            results.append(_result(balancer, backend))
        return ControlResponse.json(200, {"drained": results})

    async def enable(self, request: ControlRequest) -> ControlResponse:
        found = self.named(request)
        for balancer, backend in found:
            if backend in balancer.retired:
                raise ControlError(
                    409,
                    f"{backend.url} was removed from server {balancer.server} by a reload; "
                    "add it to the configuration again",
                )
        for balancer, backend in found:
            balancer.enable(backend)
        return ControlResponse.json(200, {"enabled": [_result(b, backend) for b, backend in found]})


def _url(body: Mapping[str, Any]) -> BackendURL:
    value = body.get("url")
    if not isinstance(value, str) or not value:
        raise ControlError(400, 'missing field "url" (a backend such as "http://10.0.0.5:8000")')
    try:
        return parse_backend_url(value)
    except ValueError as exc:
        raise ControlError(400, f'"url": {exc}') from None


def _result(balancer: Balancer, backend: Backend) -> dict[str, Any]:
    return {
        "server": balancer.server,
        "url": str(backend.url),
        "state": backend.state(balancer.clock()),
        "inflight": backend.inflight,
        "tunnels_open": backend.tunnels,
    }


def add_backend_routes(control: ControlServer, balancers: Balancers) -> None:
    routes = _Backends(balancers)
    control.route("GET", "/backends", routes.show)
    control.route("POST", "/backends/drain", routes.drain)
    control.route("POST", "/backends/enable", routes.enable)
