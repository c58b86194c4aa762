"""phantom: a caching reverse proxy that also tunnels HTTP/1.1 upgrades.

The library API::

    from phantom import create_proxy

    config = {"http_port": 0, "server": {"app": {"proxy_url": "http://127.0.0.1:8080"}}}
    async with create_proxy(config) as proxy:
        print(proxy.port)
        await proxy.serve_forever()
"""

from ._version import __version__
from .cache.policy import RequestInfo
from .config import Config, ServerConfig, load_config
from .errors import BackendError, BackendTimeout, ConfigError, ExecuteError, PhantomError
from .proxy import Proxy, create_proxy

__all__ = [
    "BackendError",
    "BackendTimeout",
    "Config",
    "ConfigError",
    "ExecuteError",
    "PhantomError",
    "Proxy",
    "RequestInfo",
    "ServerConfig",
    "__version__",
    "create_proxy",
    "load_config",
]
