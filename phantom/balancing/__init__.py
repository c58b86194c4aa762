"""Load balancing over a server's backends: strategies, health, circuit breaking, retries.

Pure modules but :mod:`.health` (the active health checker) and :mod:`.pool` (a server's
connection pools and the exchange that fails over), which talk to the backends.
"""

from .backend import Backend
from .balancer import Balancer
from .keys import KeyOf, key_function

__all__ = ["Backend", "Balancer", "KeyOf", "key_function"]
