"""TLS contexts: the HTTPS listener's and each https:// backend's (stdlib ``ssl``).

Built once at startup from the config; every file problem is a :class:`ConfigError` naming the
key and the file, so ``phantom serve`` fails before it binds anything.
"""

from __future__ import annotations

import ssl

from .config import Config, ServerConfig
from .errors import ConfigError

__all__ = ["backend_context", "listener_context"]

# Offered on both legs: phantom speaks HTTP/1.1 only, so a browser never tries h2 on it.
ALPN = ["http/1.1"]


def _readable(source: str, key: str, path: str) -> None:
    """Open the file once so the error names it precisely (ssl's own messages do not)."""
    try:
        with open(path, "rb"):
            pass
    except FileNotFoundError:
        raise ConfigError(source, key, f"{path}: file not found") from None
    except IsADirectoryError:
        raise ConfigError(source, key, f"{path}: is a directory") from None
    except OSError as exc:
        raise ConfigError(source, key, f"{path}: {exc.strerror or exc}") from None


def _ssl_reason(exc: ssl.SSLError) -> str:
    return str(exc.reason or exc.strerror or exc)


def listener_context(config: Config) -> ssl.SSLContext | None:
    """The server-side context of the HTTPS listener, or None when ``https_port`` is unset."""
    if config.https_port is None:
        return None
    assert config.cert_path is not None and config.key_path is not None  # config checks this
    _readable(config.source, "cert_path", config.cert_path)
    _readable(config.source, "key_path", config.key_path)
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.set_alpn_protocols(ALPN)
    try:
        context.load_cert_chain(config.cert_path, config.key_path)
    except ssl.SSLError as exc:
        raise ConfigError(
            config.source,
            "cert_path",
            f"{config.cert_path} with {config.key_path}: {_ssl_reason(exc)}"
            " (expected a PEM certificate chain and its private key)",
        ) from None
    return context


def backend_context(server: ServerConfig, source: str) -> ssl.SSLContext | None:
    """The client-side context for the server's https:// backends, or None when it has none.

    Verifies against the system store, plus ``backend_ca`` when set; ``backend_tls_verify =
    false`` turns verification off (the proxy logs a warning at start).
    """
    if all(backend.url.scheme != "https" for backend in server.pool):
        return None
    context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH)
    context.set_alpn_protocols(ALPN)
    if server.backend_ca is not None:
        key = f"server.{server.name}.backend_ca"
        _readable(source, key, server.backend_ca)
        try:
            context.load_verify_locations(cafile=server.backend_ca)
        except ssl.SSLError as exc:
            raise ConfigError(
                source, key, f"{server.backend_ca}: {_ssl_reason(exc)} (expected PEM)"
            ) from None
    if not server.backend_tls_verify:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    return context
