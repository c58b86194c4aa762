"""The key consistent_hash sticks a request to (``hash_key``).

Pure module: from the request's client address, target and headers (lowercase names) to the
bytes hashed, or None when the request has no such key (it is then balanced round robin).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from ..bearer import cookie_value
from ..clients import client_address
from ..config import Network

__all__ = ["KeyOf", "key_function"]

Headers = Sequence[tuple[bytes, bytes]]
#: ``(client_ip, target, headers) -> key``
KeyOf = Callable[[str, bytes, Headers], "bytes | None"]


def _client_ip(client_ip: str, target: bytes, headers: Headers) -> bytes | None:
    return client_ip.encode()


def _path(client_ip: str, target: bytes, headers: Headers) -> bytes | None:
    return target.partition(b"?")[0]


def _header(name: bytes) -> KeyOf:
    def key(client_ip: str, target: bytes, headers: Headers) -> bytes | None:
        values = [value for field, value in headers if field == name]
        return b", ".join(values) if values else None

    return key


def _cookie(name: bytes) -> KeyOf:
    def key(client_ip: str, target: bytes, headers: Headers) -> bytes | None:
        for field, value in headers:
            found = cookie_value(value, name) if field == b"cookie" else None
            if found is not None:
                return found
        return None

    return key


def _client_behind(trusted: tuple[Network, ...]) -> KeyOf:
    """The client's address after ``trusted_proxies`` (as the IP rules read it)."""

    def key(client_ip: str, target: bytes, headers: Headers) -> bytes | None:
        chain = [value for field, value in headers if field == b"x-forwarded-for"]
        return client_address(client_ip, chain, trusted).encode()

    return key


def key_function(hash_key: str | None, trusted: tuple[Network, ...] = ()) -> KeyOf:
    """The key function of a ``hash_key`` value (config-checked); None means client_ip, the
    address after ``trusted`` (``trusted_proxies``): behind a load balancer, the client's,
    not the balancer's, or every client would stick to one backend."""
    kind, _, name = (hash_key or "client_ip").partition(":")
    if kind == "header":
        return _header(name.lower().encode("latin-1"))
    if kind == "cookie":
        return _cookie(name.encode("latin-1"))
    if kind == "path":
        return _path
    return _client_behind(trusted) if trusted else _client_ip
