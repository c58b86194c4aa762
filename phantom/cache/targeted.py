"""``CDN-Cache-Control``: cache directives targeted at CDN caches (RFC 9213), without I/O.

RFC 9213 §2: a targeted field holds the Cache-Control directives as a Structured Field
Dictionary (RFC 8941 §3.2). A cache that recognises it and finds it valid uses its directives
*instead of* Cache-Control (and Pragma, the other cache-control field) for its own storage and
freshness; an empty field, or one that does not parse, is ignored as if absent (§2.2).
phantom, a shared cache run for the origin, takes ``CDN-Cache-Control`` as addressed to
itself; the policy decides what the directives mean
(:func:`phantom.cache.policy.storage_decision`). The field is forwarded: the RFC does not
have caches remove it, and a CDN further down may act on it.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Final

__all__ = ["FIELD", "directives"]

#: The field name, lowercase as h11 delivers it.
FIELD: Final = b"cdn-cache-control"

#: Directives whose argument is delta-seconds: RFC 9213 §2.1 has caches skip a value of
#: another type (``max-age="60"``, ``max-age=1.5``) rather than coerce it.
_SECONDS: Final = frozenset({"max-age", "s-maxage", "stale-while-revalidate", "stale-if-error"})

# RFC 8941 §3.1.2, §3.3: keys, integers, decimals, strings, tokens, byte sequences, booleans.
_KEY = re.compile(r"[a-z*][a-z0-9_\-.*]*")
_BARE_ITEM = re.compile(
    r"(?P<number>-?\d{1,15}(?:\.\d{1,3})?)"
    r'|"(?P<string>(?:[\x20\x21\x23-\x5b\x5d-\x7e]|\\["\\])*)"'
    r"|(?P<token>[A-Za-z*][!#$%&'*+\-.^_`|~0-9A-Za-z:/]*)"
    r"|:(?P<bytes>[A-Za-z0-9+/=]*):"
    r"|\?(?P<boolean>[01])"
)


class _Invalid(ValueError):
    """The field is not a valid Dictionary: RFC 9213 §2.2 ignores it."""


def directives(values: Iterable[bytes]) -> dict[str, str | None] | None:
    """The directives of the CDN-Cache-Control field lines ``values``, as ``{name: argument
    or None}`` like :func:`phantom.cache.policy.parse_cache_control`; None when the field is
    absent, empty or not a valid Dictionary (the cache then uses Cache-Control).

    A member that is ``?1`` (or a bare key) is a flag (None); ``?0`` is left out; an integer,
    token or string is its text; an inner list (``no-cache=("a" "b")``) its items joined with
    commas, as Cache-Control's field-name lists are. A delta-seconds directive whose value is
    not a non-negative integer is skipped. Parameters are ignored. Never raises.
    """
    # RFC 8941 §4.2: several field lines are one value, joined with commas.
    text = ", ".join(value.decode("latin-1") for value in values).strip(" ")
    if not text:
        return None
    try:
        members = _dictionary(text)
    except _Invalid:
        return None
    result: dict[str, str | None] = {}
    for name, argument in members.items():
        if argument is False:
            continue
        if argument is True:
            if name not in _SECONDS:
                result[name] = None
        elif name not in _SECONDS:
            result[name] = _text(argument)
        elif argument.isdigit() and argument.isascii():
            result[name] = argument
    return result


def _dictionary(text: str) -> dict[str, str | bool]:
    """RFC 8941 §4.2.2; the last member of a key wins."""
    members: dict[str, str | bool] = {}
    at = 0
    while at < len(text):
        key, at = _key(text, at)
        value: str | bool = True
        if text.startswith("=", at):
            if text.startswith("(", at + 1):
                value, at = _inner_list(text, at + 2)
            else:
                value, at = _bare_item(text, at + 1)
        at = _parameters(text, at)
        members[key] = value
        at = _skip(text, at, " \t")
        if at == len(text):
            break
        if text[at] != ",":
            raise _Invalid
        at = _skip(text, at + 1, " \t")
        if at == len(text):
            raise _Invalid  # a trailing comma
    return members


def _key(text: str, at: int) -> tuple[str, int]:
    match = _KEY.match(text, at)
    if match is None:
        raise _Invalid
    return match.group(), match.end()


def _bare_item(text: str, at: int) -> tuple[str | bool, int]:
    """An item's value: a boolean, or its text; an integer keeps its digits as they are, so
    only an integer ever reads as delta-seconds (an sf-string's text is returned quoted)."""
    match = _BARE_ITEM.match(text, at)
    if match is None:
        raise _Invalid
    if match.group("boolean") is not None:
        return match.group("boolean") == "1", match.end()
    return match.group(), match.end()


def _text(item: str) -> str:
    """An item's text as a Cache-Control argument: an sf-string unquoted and unescaped."""
    if item.startswith('"'):
        return re.sub(r"\\(.)", r"\1", item[1:-1])
    return item


def _inner_list(text: str, at: int) -> tuple[str, int]:
    """RFC 8941 §4.2.1.2, after the ``(``: its items joined with commas."""
    items: list[str] = []
    while True:
        at = _skip(text, at, " ")
        if text.startswith(")", at):
            return ",".join(items), at + 1
        item, at = _bare_item(text, at)
        items.append(str(item).lower() if isinstance(item, bool) else _text(item))
        at = _parameters(text, at)
        if at < len(text) and text[at] not in " )":
            raise _Invalid


def _parameters(text: str, at: int) -> int:
    """RFC 8941 §4.2.3.2: ``;key[=bare-item]`` repeated; skipped (no directive uses them)."""
    while text.startswith(";", at):
        at = _skip(text, at + 1, " ")
        _, at = _key(text, at)
        if text.startswith("=", at):
            _, at = _bare_item(text, at + 1)
    return at


def _skip(text: str, at: int, blanks: str) -> int:
    while at < len(text) and text[at] in blanks:
        at += 1
    return at
