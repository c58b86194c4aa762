"""The access log: one line per exchange, ``combined`` (what log tools parse) or ``json``.

``combined`` is the Apache/nginx combined format followed by phantom's own fields as
``key=value`` pairs, so tools that read the combined prefix keep working::

    127.0.0.1 - - [22/Nov/2026:10:00:00 +0000] "GET /a HTTP/1.1" 200 512 "-" "curl/8.5.0" \
cache=hit server=app backend=http://127.0.0.1:8000 upstream_time=- request_time=0.000

An upgrade is logged when its tunnel closes (as nginx does), with status 101, the bytes sent to
the client as the body size, ``tunnel_up=``/``tunnel_down=`` byte counts and the tunnel's
lifetime as ``request_time``.

Formatting is pure; :class:`AccessLog` writes through a dedicated ``logging`` logger, to stderr
or to a file reopened when log rotation moves it (``WatchedFileHandler``).
"""

from __future__ import annotations

import json
import logging
import logging.handlers
import sys
import time
from collections.abc import Callable
from typing import Any

from .config import Config
from .errors import ConfigError
from .exchange import Exchange, cache_result

__all__ = ["FORMATTERS", "AccessLog", "format_combined", "format_json"]

_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")


def _clf_time(when: float) -> str:
    """``22/Nov/2026:10:00:00 +0000`` in local time, month names in English whatever the locale."""
    t = time.localtime(when)
    offset = t.tm_gmtoff or 0
    sign = "+" if offset >= 0 else "-"
    hours, minutes = divmod(abs(offset) // 60, 60)
    return (
        f"{t.tm_mday:02d}/{_MONTHS[t.tm_mon - 1]}/{t.tm_year}:"
        f"{t.tm_hour:02d}:{t.tm_min:02d}:{t.tm_sec:02d} {sign}{hours:02d}{minutes:02d}"
    )


def _quoted(value: bytes | None) -> str:
    """A field inside double quotes: quote, backslash and non-printable bytes as ``\\xHH``."""
    if value is None:
        return "-"
    out = []
    for byte in value:
        if byte in (0x22, 0x5C) or byte < 0x20 or byte > 0x7E:
            out.append(f"\\x{byte:02X}")
        else:
            out.append(chr(byte))
    return "".join(out)


def _seconds(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"


def format_combined(ex: Exchange) -> str:
    request = f"{_quoted(ex.method)} {_quoted(ex.target)} HTTP/{_quoted(ex.http_version)}"
    line = (
        f'{ex.client_ip} - - [{_clf_time(ex.started)}] "{request}" {ex.status} {ex.body_bytes}'
        f' "{_quoted(ex.referer)}" "{_quoted(ex.user_agent)}"'
        f" cache={cache_result(ex.cache_status)} server={ex.server}"
        f" backend={ex.backend or '-'} upstream_time={_seconds(ex.upstream_seconds)}"
        f" request_time={_seconds(ex.total_seconds)}"
    )
    if ex.error_kind is not None:
        line += f" error={ex.error_kind}"
    if ex.tunnel_up is not None:
        line += f" tunnel_up={ex.tunnel_up} tunnel_down={ex.tunnel_down}"
    return line


def _text(value: bytes | None) -> str | None:
    return None if value is None else value.decode("latin-1")


def format_json(ex: Exchange) -> str:
    record: dict[str, Any] = {
        "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(ex.started))
        + f".{int(ex.started % 1 * 1000):03d}Z",
        "client": ex.client_ip,
        "method": _text(ex.method),
        "target": _text(ex.target),
        "http_version": _text(ex.http_version),
        "status": ex.status,
        "bytes": ex.body_bytes,
        "referer": _text(ex.referer),
        "user_agent": _text(ex.user_agent),
        "server": ex.server,
        "backend": None if ex.backend is None else str(ex.backend),
        "cache": cache_result(ex.cache_status),
        "cache_status": _text(ex.cache_status),
        "upstream_time": ex.upstream_seconds,
        "request_time": round(ex.total_seconds, 6),
    }
    if ex.error_kind is not None:
        record["error"] = ex.error_kind
    if ex.tunnel_up is not None:
        record["tunnel_up"] = ex.tunnel_up
        record["tunnel_down"] = ex.tunnel_down
    return json.dumps(record, separators=(",", ":"))


FORMATTERS: dict[str, Callable[[Exchange], str]] = {
    "combined": format_combined,
    "json": format_json,
}


class AccessLog:
    """Writes formatted exchanges to stderr (``access_log = "-"``) or appends them to a file.

    ``from_config`` returns None for ``access_log = "off"``; a file that can't be opened is a
    ConfigError naming it.
    """

    def __init__(self, handler: logging.Handler, log_format: str) -> None:
        self._format = FORMATTERS[log_format]
        # A logger outside the logging tree: access lines never mix into the error log.
        self._logger = logging.Logger("phantom.access", logging.INFO)
        handler.setFormatter(logging.Formatter("%(message)s"))
        self._logger.addHandler(handler)
        self._handler = handler

    @classmethod
    def from_config(cls, config: Config) -> AccessLog | None:
        destination = config.access_log
        if destination == "off":
            return None
        if destination == "-":
            return cls(logging.StreamHandler(sys.stderr), config.access_log_format)
        try:
            handler = logging.handlers.WatchedFileHandler(destination, encoding="utf-8")
        except OSError as exc:
            raise ConfigError(
                config.source, "access_log", f"{destination}: {exc.strerror or exc}"
            ) from None
        return cls(handler, config.access_log_format)

    def write(self, ex: Exchange) -> None:
        self._logger.info("%s", self._format(ex))

    def close(self) -> None:
        self._logger.removeHandler(self._handler)
        self._handler.close()
