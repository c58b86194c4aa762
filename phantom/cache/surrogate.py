"""``Surrogate-Control``: the origin's instructions to the caches it runs (CDNs, reverse
proxies), without I/O.

The W3C Edge Architecture Specification 1.0 (§2.2, §3) defines the header: a list of
directives like Cache-Control's, each optionally addressed to one device with ``;name``
(``max-age=60;edge1``). A surrogate uses them in preference to Cache-Control and removes the
header before the response goes on, so browsers never see it. phantom reads the directives
addressed to every device and those addressed to itself (``;phantom``); the policy decides what
they mean (:func:`phantom.cache.policy.storage_decision`).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

__all__ = ["DEVICE", "FIELD", "directives", "without_field"]

#: The field name, lowercase as h11 delivers it.
FIELD = b"surrogate-control"
#: The device token that addresses phantom itself (``max-age=60;phantom``).
DEVICE = "phantom"


def directives(values: Iterable[bytes]) -> dict[str, str | None]:
    """The Surrogate-Control directives meant for phantom, as ``{name: argument or None}``.

    Edge Architecture §3: list elements separated by commas, ``name[=value]`` with an optional
    ``;device`` target after it. Elements addressed to another device are ignored; names are
    lowercased, quoted arguments unquoted; the first occurrence of a name wins (as RFC 9111
    §4.2.1 says for Cache-Control). Never raises: what does not parse matches nothing.
    """
    result: dict[str, str | None] = {}
    for line in values:
        for element in line.decode("latin-1").split(","):
            body, _, device = element.partition(";")
            if device and device.strip().lower() != DEVICE:
                continue
            name, equals, argument = body.partition("=")
            name = name.strip(" \t").lower()
            if name and name not in result:
                result[name] = argument.strip(" \t").strip('"') if equals else None
    return result


def without_field(headers: Sequence[tuple[bytes, bytes]]) -> list[tuple[bytes, bytes]]:
    """``headers`` without Surrogate-Control: it is for surrogates, never for clients
    (Edge Architecture §2.2)."""
    return [(name, value) for name, value in headers if name.lower() != FIELD]
