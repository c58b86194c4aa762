"""Each client's fair share of the proxy (``max_connections_per_client``,
``max_tunnels_per_client``): which address a client is, and what it holds.

Pure: no I/O. Connections are counted per peer address as accepted, since nothing else is known
then; a peer in ``trusted_proxies`` is not counted at all (a proxy in front of phantom carries
many clients' requests on its connections). Tunnels are counted per client address after
``trusted_proxies``: the peer, or, for a trusted peer, the nearest address of its
``X-Forwarded-For`` chain that is not itself trusted.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence
from dataclasses import dataclass

from .config import Network

# What a client turned away for holding its share is told to wait (Retry-After, seconds).
RETRY_AFTER_SECONDS = 5


def is_trusted(ip: str, networks: tuple[Network, ...]) -> bool:
    if not networks:
        return False
    try:
        address = ipaddress.ip_address(ip)
    except ValueError:
        return False
    return any(address in network for network in networks)


def client_address(
    peer: str, forwarded_for: Sequence[bytes], networks: tuple[Network, ...]
) -> str:
    """The address a request comes from: walking ``X-Forwarded-For`` (its fields in order)
    from the right while the address so far is a trusted proxy, as nginx's
    ``real_ip_recursive`` does. The entries left of the first untrusted one are whatever the
    client wrote, so they are never reached."""
    address = peer
    chain = [entry.strip() for value in forwarded_for for entry in value.split(b",")]
    while chain and is_trusted(address, networks):
        address = chain.pop().decode("latin-1")
    try:
        return str(ipaddress.ip_address(address))  # one spelling per address (IPv6)
    except ValueError:
        return address


class Shares:
    """How many of one thing (connections, or tunnels) each client holds."""

    def __init__(self) -> None:
        self._held: dict[str, int] = {}

    def take(self, client: str, limit: int) -> Hold | None:
        """One more for ``client``, or None when it holds ``limit`` already (0 = no limit)."""
        held = self._held.get(client, 0)
        if limit and held >= limit:
            return None
        self._held[client] = held + 1
        return Hold(self, client)

    def held(self, client: str) -> int:
        return self._held.get(client, 0)

    def _give_back(self, client: str) -> None:
        held = self._held[client] - 1
        if held:
            self._held[client] = held
        else:
            del self._held[client]  # only clients holding something are remembered


@dataclass(slots=True)
class Hold:
    """One connection's or tunnel's place in its client's share, given back once."""

    shares: Shares
    client: str
    released: bool = False

    def release(self) -> None:
        if not self.released:
            self.released = True
            self.shares._give_back(self.client)
