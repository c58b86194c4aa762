"""The access log: one line per exchange, ``combined`` (what log tools parse) or ``json``.

``combined`` is the Apache/nginx combined format followed by phantom's own fields as
``key=value`` pairs, so tools that read the combined prefix keep working::

    127.0.0.1 - - [22/Nov/2026:10:00:00 +0000] "GET /a HTTP/1.1" 200 512 "-" "curl/8.5.0" \
cache=hit server=app backend=http://127.0.0.1:8000 upstream_time=- request_time=0.000

An upgrade is logged when its tunnel closes (as nginx does), with status 101, the bytes sent to
the client as the body size, ``tunnel_up=``/``tunnel_down=`` byte counts and the tunnel's
lifetime as ``request_time``.

Formatting is pure; :class:`AccessLog` writes the lines, to stderr or to a file it reopens
when log rotation moves it.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import re
import sys
import time
from collections.abc import Callable
from typing import Any, TextIO

from .config import Config
from .errors import ConfigError
from .exchange import Exchange, cache_result

__all__ = ["FORMATTERS", "AccessLog", "format_combined", "format_json"]

log = logging.getLogger("phantom")

ROTATION_CHECK_SECONDS = 1.0
# Bytes that go into a quoted field as they are: printable ASCII but the quote and backslash.
_PLAIN = re.compile(rb'[ !#-\[\]-~]*')

_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")


_clf_cache: tuple[int, str] = (-1, "")


def _clf_time(when: float) -> str:
    """``22/Nov/2026:10:00:00 +0000`` in local time, month names in English whatever the
    locale; formatted once per second."""
    global _clf_cache
    second = int(when)
    if _clf_cache[0] == second:
        return _clf_cache[1]
    text = _format_clf_time(second)
    _clf_cache = (second, text)
    return text


def _format_clf_time(when: float) -> str:
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
    if _PLAIN.fullmatch(value):
        return value.decode("ascii")
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
    if ex.refusal is not None:
        line += f" reason={ex.refusal}"
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
    if ex.refusal is not None:
        record["reason"] = ex.refusal
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

    Lines are collected and written together once per event-loop iteration (a burst of
    pipelined or concurrent requests costs one write). A file is reopened when log rotation
    has moved it (checked at most once a second). ``from_config`` returns None for
    ``access_log = "off"``; a file that can't be opened is a ConfigError naming it.
    """

    def __init__(self, log_format: str, path: str | None = None) -> None:
        self._format = FORMATTERS[log_format]
        self._path = path
        self._file: TextIO = sys.stderr if path is None else self._open(path)
        self._pending: list[str] = []
        self._next_rotation_check = 0.0

    @staticmethod
    def _open(path: str) -> TextIO:
        return open(path, "a", encoding="utf-8", errors="backslashreplace")

    @classmethod
    def from_config(cls, config: Config) -> AccessLog | None:
        destination = config.access_log
        if destination == "off":
            return None
        if destination == "-":
            return cls(config.access_log_format)
        try:
            return cls(config.access_log_format, destination)
        except OSError as exc:
            raise ConfigError(
                config.source, "access_log", f"{destination}: {exc.strerror or exc}"
            ) from None

    def write(self, ex: Exchange) -> None:
        pending = self._pending
        pending.append(self._format(ex))
        if len(pending) == 1:
            try:
                asyncio.get_running_loop().call_soon(self.flush)
            except RuntimeError:  # no loop (a library caller's own thread): write now
                self.flush()

    def flush(self) -> None:
        if not self._pending:
            return
        text = "\n".join(self._pending) + "\n"
        self._pending.clear()
        try:
            self._reopen_if_rotated()
            self._file.write(text)
            self._file.flush()
        except OSError as exc:  # a full disk must not take requests down with it
            log.warning("access log: cannot write: %s", exc.strerror or exc)

    def _reopen_if_rotated(self) -> None:
        path = self._path
        now = time.monotonic()
        if path is None or now < self._next_rotation_check:
            return
        self._next_rotation_check = now + ROTATION_CHECK_SECONDS
        try:
            on_disk = os.stat(path)
        except FileNotFoundError:
            on_disk = None
        ours = os.fstat(self._file.fileno())
        if on_disk is None or (on_disk.st_dev, on_disk.st_ino) != (ours.st_dev, ours.st_ino):
            self._file.close()
            self._file = self._open(path)

    def close(self) -> None:
        self.flush()
        if self._path is not None:
            self._file.close()
