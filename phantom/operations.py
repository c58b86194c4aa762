"""The control API's cache and snapshot endpoints (phantom-frame's names and shapes).

Every endpoint is ``POST`` with a JSON object body and answers JSON. ``"server"`` (optional)
names one ``[server.NAME]``; an unknown name is 404. Bad JSON or a missing or mistyped field
is 400 with ``{"error": ...}``. Bulk calls answer ``requested``, ``succeeded``, ``failed`` and
one ``results`` item per request, in order, and are 200 even when some items failed.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from .context import Site
from .control import ControlError, ControlRequest, ControlResponse, ControlServer
from .errors import PhantomError
from .patterns import PathTrie, parse_pattern
from .snapshots import gather_each

__all__ = ["add_operation_routes"]

Item = dict[str, Any]


def _field(body: Mapping[str, Any], name: str, kind: type, what: str) -> Any:
    if name not in body:
        raise ControlError(400, f'missing field "{name}" ({what})')
    value = body[name]
    if not isinstance(value, kind) or (kind is list and not value) or value == "":
        raise ControlError(400, f'"{name}" must be {what}')
    return value


def _bulk(results: list[Item]) -> ControlResponse:
    failed = sum(1 for item in results if not item["ok"])
    return ControlResponse.json(
        200,
        {
            "requested": len(results),
            "succeeded": len(results) - failed,
            "failed": failed,
            "results": results,
        },
    )


def _failure(item: Item, exc: PhantomError) -> Item:
    return {**item, "ok": False, "status": exc.status, "error": str(exc)}


class _Operations:
    def __init__(self, sites: Mapping[str, Site]) -> None:
        self.sites = sites

    # -- which server ----------------------------------------------------------------------

    def named(self, body: Mapping[str, Any]) -> Site | None:
        """The site ``"server"`` names, None when the body names none."""
        if "server" not in body:
            return None
        name = _field(body, "server", str, "a server name")
        site = self.sites.get(name)
        if site is None:
            raise ControlError(404, f"no server named {name!r}")
        return site

    def caches(self, body: Mapping[str, Any]) -> list[Site]:
        site = self.named(body)
        return list(self.sites.values()) if site is None else [site]

    def pre_generate_sites(self, body: Mapping[str, Any]) -> list[Site]:
        sites = [s for s in self.sites.values() if s.config.pre_generate]
        if not sites:
            raise ControlError(400, 'no server uses proxy_mode = "pre_generate"')
        site = self.named(body)
        if site is None:
            return sites
        if not site.config.pre_generate:
            raise ControlError(
                400, f'server {site.config.name} does not use proxy_mode = "pre_generate"'
            )
        return [site]

    @staticmethod
    def snapshot_site(sites: list[Site], path: str) -> Site:
        """The pre-generate server a path belongs to: the most specific bind_to it matches."""
        trie: PathTrie[Site] = PathTrie()
        for site in sites:
            for entry in site.config.bind_to:
                trie.add(parse_pattern(entry), site)
        match = next(trie.matches(path.partition("?")[0]), None)
        if match is None:
            raise _NoServer(f"no pre-generate server is mounted at {path}")
        return match[0]

    # -- invalidation ----------------------------------------------------------------------

    async def invalidate_all(self, request: ControlRequest) -> ControlResponse:
        sites = self.caches(request.json_object())
        count = sum([await site.cache.purge_all() for site in sites])
        return ControlResponse.json(200, {"invalidated": count})

    async def invalidate(self, request: ControlRequest) -> ControlResponse:
        body = request.json_object()
        pattern = _field(body, "pattern", str, 'a non-empty pattern such as "GET:/api/*"')
        count = sum([await s.cache.purge(pattern) for s in self.caches(body)])
        return ControlResponse.json(200, {"pattern": pattern, "invalidated": count})

    async def bulk_invalidate(self, request: ControlRequest) -> ControlResponse:
        body = request.json_object()
        patterns = _field(body, "patterns", list, "a non-empty array of patterns")
        sites = self.caches(body)
        results: list[Item] = []
        for pattern in patterns:
            if not isinstance(pattern, str) or not pattern:
                results.append({"pattern": pattern, "ok": False, "error": "not a pattern"})
                continue
            count = sum([await s.cache.purge(pattern) for s in sites])
            results.append({"pattern": pattern, "ok": True, "invalidated": count})
        return _bulk(results)

    # -- snapshots -------------------------------------------------------------------------

    async def _snapshot_one(
        self, sites: list[Site], path: object, action: Callable[[Site, str], Awaitable[Item]]
    ) -> Item:
        if not isinstance(path, str):
            return {"path": path, "ok": False, "status": 400, "error": "not a path"}
        item: Item = {"path": path}
        try:
            site = self.snapshot_site(sites, path)
            item["server"] = site.config.name
            return {**item, "ok": True, **await action(site, path)}
        except PhantomError as exc:
            return _failure(item, exc)

    def single(
        self, action: Callable[[Site, str], Awaitable[Item]]
    ) -> Callable[[ControlRequest], Awaitable[ControlResponse]]:
        async def handler(request: ControlRequest) -> ControlResponse:
            body = request.json_object()
            path = _field(body, "path", str, 'a path such as "/blog/post"')
            item = await self._snapshot_one(self.pre_generate_sites(body), path, action)
            return ControlResponse.json(200 if item["ok"] else item["status"], item)

        return handler

    def bulk(
        self, action: Callable[[Site, str], Awaitable[Item]]
    ) -> Callable[[ControlRequest], Awaitable[ControlResponse]]:
        async def handler(request: ControlRequest) -> ControlResponse:
            body = request.json_object()
            paths = _field(body, "paths", list, "a non-empty array of paths")
            sites = self.pre_generate_sites(body)
            done = await gather_each(paths, lambda p: self._snapshot_one(sites, p, action))
            return _bulk([item for _, item in done if isinstance(item, dict)])

        return handler

    async def refresh_all(self, request: ControlRequest) -> ControlResponse:
        results: list[Item] = []
        for site in self.pre_generate_sites(request.json_object()):
            for path, outcome in await site.refresh_all_snapshots():
                item: Item = {"path": path, "server": site.config.name}
                if isinstance(outcome, PhantomError):
                    results.append(_failure(item, outcome))
                else:
                    results.append({**item, "ok": True, "bytes": len(outcome.body)})
        return _bulk(results)


class _NoServer(PhantomError):
    status = 400


async def _add(site: Site, path: str) -> Item:
    return {"bytes": len((await site.add_snapshot(path)).body)}


async def _refresh(site: Site, path: str) -> Item:
    return {"bytes": len((await site.refresh_snapshot(path)).body)}


async def _remove(site: Site, path: str) -> Item:
    site.remove_snapshot(path)
    return {}


def add_operation_routes(control: ControlServer, sites: Mapping[str, Site]) -> None:
    ops = _Operations(sites)
    control.route("POST", "/invalidate_all", ops.invalidate_all)
    control.route("POST", "/invalidate", ops.invalidate)
    control.route("POST", "/bulk_invalidate", ops.bulk_invalidate)
    for name, action in (("add", _add), ("refresh", _refresh), ("remove", _remove)):
        control.route("POST", f"/{name}_snapshot", ops.single(action))
        control.route("POST", f"/bulk_{name}_snapshot", ops.bulk(action))
    control.route("POST", "/refresh_all_snapshots", ops.refresh_all)
