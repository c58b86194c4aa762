"""Reason phrases for the status lines phantom writes itself: ``HTTP/1.1 502 Bad Gateway``, not
``HTTP/1.1 502 `` (allowed by RFC 9112 §4, but what people and some clients read).

Pure module. Answers relayed from a backend keep the backend's own phrase.
"""

from __future__ import annotations

from http import HTTPStatus

__all__ = ["reason_phrase"]

_PHRASES = {status.value: status.phrase.encode("ascii") for status in HTTPStatus}


def reason_phrase(status: int) -> bytes:
    """RFC 9110's phrase for ``status``; empty for a code it does not name."""
    return _PHRASES.get(status, b"")
