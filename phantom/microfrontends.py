"""Turborepo's ``microfrontends.json``, read as phantom server tables.

Pure: text in, :class:`Microfrontends` out (tables shaped like ``[server.NAME]``, which
``phantom.config`` validates like any other). What is read, from Turborepo's documented schema
(``applications.NAME``; the rest of the file, Vercel's keys included, is ignored):

* ``routing[].paths``: path-to-regexp patterns, converted to ``bind_to`` entries:
  ``/docs`` -> ``=/docs`` (that path only), ``/blog/:slug`` -> ``/blog/{slug}``,
  ``/docs/:path*`` -> ``/docs/{path*}``, ``/docs/:path+`` -> ``/docs/{path+}``. Optional
  parameters (``:x?``) and regular expressions are refused, naming the path.
* the one application without ``routing`` is the default: ``bind_to = "*"``.
* ``development.local``: a port (``3000``), ``"host:port"``, a URL (``"http://localhost:3000"``)
  or ``{"port": 3000}``; without one, the port Turborepo derives from the name.
* ``development.fallback``: a URL, a host (``https://`` is meant) or Vercel's
  ``{"protocol", "host", "port"}``: becomes ``fallback_url``.
* ``options.localProxyPort``: the listen port (Turborepo's default is 3024).

Paths are forwarded unchanged (``strip_prefix = false``): each app serves under its own base
path (Next.js ``basePath``, Vite ``base``). Comments (``//``, ``/* */``) are allowed, as in
Turborepo. Application names become server names, characters other than letters, digits,
``-`` and ``_`` replaced by ``-``.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final

from .errors import ConfigError

__all__ = ["DEFAULT_PORT", "Microfrontends", "parse_microfrontends", "turborepo_port"]

DEFAULT_PORT: Final = 3024  # Turborepo's local proxy port

_SEGMENT: Final = re.compile(r":([A-Za-z_][A-Za-z0-9_]*)([*+?]?)")
_NOT_NAME: Final = re.compile(r"[^A-Za-z0-9_-]")
# A JSON string, or a comment: comments go, strings stay as they are.
_COMMENT_OR_STRING: Final = re.compile(r'"(?:\\.|[^"\\])*"|//[^\n]*|/\*.*?\*/', re.DOTALL)


@dataclass(frozen=True, slots=True)
class Microfrontends:
    """``servers``: server name -> a ``[server.NAME]`` table; ``port``: ``localProxyPort``."""

    servers: dict[str, dict[str, Any]]
    port: int | None


def turborepo_port(name: str) -> int:
    """The port Turborepo gives an application without ``development.local``: a hash of
    its name (Java's string hash, on code points) folded into 3000..7999."""
    value = 0
    for char in name:
        value = (value * 31 + ord(char)) & 0xFFFFFFFF
    if value >= 1 << 31:
        value -= 1 << 32
    return 3000 + abs(value) % 5000


def _strip_comments(text: str) -> str:
    return _COMMENT_OR_STRING.sub(
        lambda m: m[0] if m[0].startswith('"') else " " * len(m[0]), text
    )


class _Reader:
    def __init__(self, source: str) -> None:
        self.source = source

    def error(self, key: str, problem: str) -> ConfigError:
        return ConfigError(self.source, key, problem)

    def table(self, value: object, key: str) -> Mapping[str, Any]:
        if not isinstance(value, Mapping):
            raise self.error(key, f"expected an object, got {_json_type(value)}")
        return value

    def array(self, value: object, key: str) -> list[Any]:
        if not isinstance(value, list):
            raise self.error(key, f"expected an array, got {_json_type(value)}")
        return value

    def port(self, value: object, key: str) -> int:
        if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 65535:
            raise self.error(key, f"expected a port number 1..65535, got {value!r}")
        return value

    def local(self, value: object, key: str) -> str:
        """``development.local`` as a backend URL."""
        if isinstance(value, Mapping):
            return f"http://localhost:{self.port(value.get('port'), key + '.port')}"
        if isinstance(value, str):
            if "://" in value:
                return value
            host, _, port = value.rpartition(":")
            if port.isdigit():
                return f"http://{host or 'localhost'}:{self.port(int(port), key)}"
            raise self.error(key, f'expected a port, "host:port" or a URL, got {value!r}')
        return f"http://localhost:{self.port(value, key)}"

    def fallback(self, value: object, key: str) -> str:
        """``development.fallback`` as a URL (a bare host means https)."""
        if isinstance(value, Mapping):
            host = value.get("host")
            if not isinstance(host, str) or not host:
                raise self.error(key + ".host", "expected a host name")
            protocol = value.get("protocol", "https")
            if protocol not in ("http", "https"):
                raise self.error(key + ".protocol", f'expected "http" or "https", got {protocol!r}')
            port = value.get("port")
            netloc = host if port is None else f"{host}:{self.port(port, key + '.port')}"
            return f"{protocol}://{netloc}"
        if not isinstance(value, str) or not value:
            raise self.error(key, f"expected a URL, got {_json_type(value)}")
        return value if "://" in value else f"https://{value}"

    def path(self, value: object, key: str) -> str:
        """A path-to-regexp path as a ``bind_to`` entry."""
        if not isinstance(value, str) or not value.startswith("/"):
            raise self.error(key, f'expected a path such as "/docs/:path*", got {value!r}')
        segments = value.split("/")
        out = []
        for index, segment in enumerate(segments):
            if not segment.startswith(":"):
                if any(c in segment for c in ":()*+?{}"):
                    raise self.error(key, f"{value!r}: only :name, :name* and :name+ are supported")
                out.append(segment)
                continue
            match = _SEGMENT.fullmatch(segment)
            if match is None or match[2] == "?":
                raise self.error(key, f"{value!r}: only :name, :name* and :name+ are supported")
            if match[2] and index != len(segments) - 1:
                raise self.error(key, f"{value!r}: :{match[1]}{match[2]} must come last")
            out.append(f"{{{match[1]}{match[2]}}}")
        entry = "/".join(out)
        return entry if "{" in entry else "=" + entry

    def application(self, name: str, raw: object) -> tuple[dict[str, Any], bool]:
        """The server table of one application, and whether it is the default (no routing)."""
        key = f"applications.{name}"
        app = self.table(raw, key)
        development = self.table(app.get("development", {}), key + ".development")
        table: dict[str, Any] = {"strip_prefix": False}
        if "local" in development:
            table["proxy_url"] = self.local(development["local"], key + ".development.local")
        else:
            table["proxy_url"] = f"http://localhost:{turborepo_port(name)}"
        if "fallback" in development:
            table["fallback_url"] = self.fallback(
                development["fallback"], key + ".development.fallback"
            )
        if "routing" not in app:
            table["bind_to"] = ["*"]
            return table, True
        entries: list[str] = []
        for index, group in enumerate(self.array(app["routing"], key + ".routing")):
            where = f"{key}.routing[{index}]"
            paths = self.array(self.table(group, where).get("paths"), where + ".paths")
            entries += (self.path(p, f"{where}.paths[{n}]") for n, p in enumerate(paths))
        if not entries:
            raise self.error(key + ".routing", "lists no paths")
        table["bind_to"] = entries
        return table, False


def parse_microfrontends(text: str, source: str) -> Microfrontends:
    """Read a ``microfrontends.json`` (see the module's docstring). Every problem is a
    one-line :class:`ConfigError` naming ``source`` and the JSON key."""
    reader = _Reader(source)
    try:
        data = json.loads(_strip_comments(text))
    except json.JSONDecodeError as exc:
        raise reader.error("<json>", f"line {exc.lineno} column {exc.colno}: {exc.msg}") from None
    root = reader.table(data, "<root>")
    apps = reader.table(root.get("applications"), "applications")
    if not apps:
        raise reader.error("applications", "lists no application")
    options = reader.table(root.get("options", {}), "options")
    port = options.get("localProxyPort")
    servers: dict[str, dict[str, Any]] = {}
    default = None
    for name, raw in apps.items():
        server = _NOT_NAME.sub("-", name)
        if server in servers or not server:
            raise reader.error(
                f"applications.{name}", f"names the same server as another: {server!r}"
            )
        servers[server], is_default = reader.application(name, raw)
        if is_default and default is not None:
            raise reader.error(
                f"applications.{name}",
                f"has no routing, like {default}: only the default application goes without",
            )
        default = name if is_default else default
    if default is None:
        raise reader.error(
            "applications", "no default application (the one without routing serves the rest)"
        )
    return Microfrontends(
        servers, None if port is None else reader.port(port, "options.localProxyPort")
    )


def _json_type(value: object) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, (int, float)):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    return "object"
