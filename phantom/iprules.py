"""``allow`` and ``deny``: which client addresses a server answers at all.

The address is the client's after ``trusted_proxies`` (:func:`phantom.clients.client_address`).
``deny`` wins over ``allow``; an empty ``allow`` lets in every address not denied. An IPv6
address that carries an IPv4 one (``::ffff:10.0.0.1``, what a dual-stack listener sees for an
IPv4 client) is matched as that IPv4 address, so ``10.0.0.0/8`` covers it.

Pure module.
"""

from __future__ import annotations

import functools
import ipaddress
from collections.abc import Callable

from .config import Network

__all__ = ["IpRules"]

Address = ipaddress.IPv4Address | ipaddress.IPv6Address


class IpRules:
    __slots__ = ("_allow", "_deny", "permits")

    def __init__(self, allow: tuple[Network, ...], deny: tuple[Network, ...]) -> None:
        self._allow = allow
        self._deny = deny
        # Clients come back: each address is matched once (a bounded memory).
        self.permits: Callable[[str], bool] = functools.lru_cache(maxsize=4096)(self._match)

    def _match(self, client: str) -> bool:
        try:
            address: Address = ipaddress.ip_address(client)
        except ValueError:
            # Not an address (a Unix socket peer): only a server without allow takes it.
            return not self._allow
        if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
            address = address.ipv4_mapped
        if any(address in network for network in self._deny):
            return False
        return not self._allow or any(address in network for network in self._allow)
