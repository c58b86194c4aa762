"""Configuration: frozen dataclasses, TOML loading and validation.

Pure module: no asyncio, no sockets. Every problem is a :class:`~phantom.errors.ConfigError`
naming the source (file name) and the key as a dotted path, e.g.
``phantom.toml: server.app.cache_ttl: expected a number, got string``.

The TOML shape::

    listen = "127.0.0.1"          # root keys: Config fields
    http_port = 3000
    [server.default]              # one or more [server.NAME] tables
    proxy_url = "http://127.0.0.1:8080"
"""

from __future__ import annotations

import importlib
import importlib.util
import ipaddress
import math
import os
import re
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields, replace
from datetime import date, datetime, time
from typing import Any, Final
from urllib.parse import urlsplit

from phantom.cache.encoding import COMPRESS_STRATEGIES
from phantom.cache.policy import HEURISTIC_MODES
from phantom.cache.rules import CACHE_STRATEGIES, parse_path_rule
from phantom.command import CommandError, parse_command
from phantom.dotenv import DotenvError, parse_dotenv
from phantom.errors import ConfigError
from phantom.jwtkeys import HMAC_MIN_BYTES, JWT_FAMILIES, KeyProblem, load_public_key
from phantom.microfrontends import DEFAULT_PORT as MICROFRONTENDS_PORT
from phantom.microfrontends import parse_microfrontends
from phantom.origins import parse_origin_pattern
from phantom.patterns import parse_pattern, parse_rewrite, serves

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10 only
    import tomli as tomllib  # type: ignore[import-not-found, unused-ignore]

__all__ = [
    "ACCESS_LOG_FORMATS",
    "HASH_KEYS",
    "LOAD_BALANCE",
    "LOG_LEVELS",
    "BackendConfig",
    "BackendURL",
    "Config",
    "HealthCheckConfig",
    "RelayConfig",
    "RedisConfig",
    "ServerConfig",
    "WebhookConfig",
    "config_from_dict",
    "describe",
    "host_port",
    "load_config",
    "parse_backend_url",
    "parse_expect_status",
    "parse_host",
    "parse_log_level",
    "parse_port",
    "with_overrides",
]

LOG_LEVELS: Final = ("debug", "info", "warning", "error")
STORAGE_MODES: Final = ("memory", "filesystem", "redis")
ACCESS_LOG_FORMATS: Final = ("combined", "json")

_URL_SHAPE: Final = "expected http[s]://host[:port][/path]"
# ws:// and wss:// name the same backends as http:// and https:// (upgrade-only servers).
_SCHEMES: Final = {"http": "http", "https": "https", "ws": "http", "wss": "https"}
DEFAULT_PORTS: Final = {"http": 80, "https": 443}
_BARE_KEY: Final = re.compile(r"[A-Za-z0-9_-]+")
_ARRAY_ITEM: Final = re.compile(r"[A-Za-z0-9_-]+\[\d+\]")  # "webhooks[0]" in messages
_HOST_LABEL: Final = r"[A-Za-z0-9_](?:[A-Za-z0-9_-]*[A-Za-z0-9_])?"
_HOSTNAME: Final = re.compile(rf"{_HOST_LABEL}(?:\.{_HOST_LABEL})*\.?")


# --------------------------------------------------------------------------- dataclasses


def host_port(host: str, port: int) -> str:
    """``host:port`` as it goes in a URL: an IPv6 address in brackets (``[::1]:8080``)."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


@dataclass(frozen=True, slots=True)
class BackendURL:
    """Where a server block forwards to: ``http[s]://host[:port][/base_path]``."""

    scheme: str  # "http" or "https" (ws/wss are normalised to these)
    host: str  # IPv6 without brackets
    port: int  # 80 / 443 when the URL names none
    base_path: str  # "" or "/v1" (no trailing slash)

    @property
    def netloc(self) -> str:
        """``host:port``, IPv6 bracketed (``[::1]:8080``)."""
        return host_port(self.host, self.port)

    def __str__(self) -> str:
        return f"{self.scheme}://{self.netloc}{self.base_path}"


WEBHOOK_TYPES: Final = ("blocking", "notify", "cache_key")
LOAD_BALANCE: Final = ("round_robin", "least_connections", "random_two", "consistent_hash")
# hash_key: one of these, or "header:NAME" / "cookie:NAME".
HASH_KEYS: Final = ("client_ip", "path")
HEALTH_STARTS: Final = ("healthy", "unhealthy")
MAX_WEIGHT: Final = 256  # HAProxy's bound: a finer ratio than 1:256 is not a weight any more
MAX_RETRIES: Final = 10


@dataclass(frozen=True, slots=True)
class BackendConfig:
    """One ``[[server.NAME.backends]]`` entry."""

    url: BackendURL
    weight: int = 1  # share of the requests, relative to the other backends' weights
    backup: bool = False  # used only while every non-backup backend is down


@dataclass(frozen=True, slots=True)
class HealthCheckConfig:
    """``health_check = {...}`` of a server: a GET every ``interval`` seconds to each backend."""

    path: str = "/"  # sent as written (no base path prepended), query allowed
    interval: float = 5.0
    timeout: float = 2.0  # connect and response head, at most
    healthy_threshold: int = 2  # consecutive passes that bring an unhealthy backend back
    unhealthy_threshold: int = 3  # consecutive failures that take a healthy one out
    expect_status: str = "2xx"  # "2xx", "200", "200,204,3xx": codes and classes
    host: str | None = None  # the Host sent; None = the backend's host:port


Network = ipaddress.IPv4Network | ipaddress.IPv6Network


@dataclass(frozen=True, slots=True)
class WebhookConfig:
    """One ``[[server.NAME.webhooks]]`` entry."""

    url: BackendURL
    type: str  # blocking | notify | cache_key
    timeout_ms: int = 5000


_ASYMMETRIC: Final = JWT_FAMILIES["rsa"] + JWT_FAMILIES["ec"] + JWT_FAMILIES["okp"]


@dataclass(frozen=True, slots=True)
class JwtConfig:
    """The root ``[jwt]`` table: where the keys come from and what every token must say.
    Exactly one of ``secret``, ``public_key``, ``jwks_url``."""

    secret: str | None = field(default=None, repr=False)  # HMAC key (HS256/384/512)
    public_key: str | None = None  # PEM file (absolute once loaded)
    jwks_url: BackendURL | None = None  # fetched at start, refreshed (phantom.jwks)
    jwks_optional_at_start: bool = False  # start even when jwks_url can't be fetched
    algorithms: tuple[str, ...] = ()  # filled in from the key when only one kind fits
    issuer: str | None = None
    audience: tuple[str, ...] = ()  # any of these; () = aud not checked
    leeway: float = 30.0  # seconds of clock skew allowed on exp, nbf, iat
    required_claims: tuple[str, ...] = ("exp",)


@dataclass(frozen=True, slots=True)
class RateLimitConfig:
    """``rate_limit = {requests, per, burst, key}``: ``requests`` per ``per`` seconds for each
    key, at most ``burst`` at once (a token bucket of ``burst``, refilled at requests/per)."""

    requests: int
    per: float
    burst: int
    key: str = "client_ip"  # client_ip | jwt:CLAIM | header:NAME
    shared: bool = False  # one budget per key for every process on the [redis] Redis


@dataclass(frozen=True, slots=True)
class CorsConfig:
    """``cors = {origins, methods, headers, credentials, max_age}``."""

    origins: tuple[str, ...]  # origin patterns (phantom.origins) or "*"
    methods: tuple[str, ...] = ("GET", "HEAD", "POST")
    headers: tuple[str, ...] = ()  # request headers a preflight may ask for, lowercase
    credentials: bool = False
    max_age: int = 600


# A claim's expected value in auth_claims.
ClaimValue = str | int | float | bool


@dataclass(frozen=True, slots=True)
class ServerConfig:
    """One ``[server.NAME]`` table."""

    name: str
    # The backend, or with ``backends`` the first one that is not a backup.
    proxy_url: BackendURL
    # [[server.NAME.backends]]; () = proxy_url is the only backend (see ``pool``).
    backends: tuple[BackendConfig, ...] = ()
    load_balance: str = "round_robin"  # see LOAD_BALANCE
    hash_key: str | None = None  # consistent_hash only; None there means "client_ip"
    health_check: HealthCheckConfig | None = None  # None = no active checks
    health_check_start: str = "healthy"  # the state backends start in: healthy | unhealthy
    breaker_failures: int = 5  # consecutive failures that open a backend's breaker; 0 = never
    breaker_statuses: tuple[int, ...] = ()  # response statuses that count as failures
    breaker_open: float = 10.0  # seconds open before the half-open trial (doubles, to 300)
    retries: int = 1  # further backends an idempotent bodiless request may be tried on
    retry_budget: float = 0.2  # retries at most this share of the last 10 s's requests
    enable_websocket: bool = True
    # Upgrade tokens tunnelled, lowercase; "*" = every one but h2c (see phantom.handshake).
    upgrade_protocols: tuple[str, ...] = ("*",)
    cache_ttl: float = 60.0  # seconds: the most heuristic freshness a response gets
    # Which responses without explicit freshness get some: last-modified | always | off.
    cache_heuristic: str = "last-modified"
    # Most seconds a miss waits for another request's identical miss before going itself.
    coalesce_timeout: float = 5.0
    cache_max_entries: int = 10_000  # the three cache bounds: 0 = nothing is cached
    cache_max_bytes: int = 256 * 1024 * 1024
    cache_max_object_bytes: int = 8 * 1024 * 1024
    # Entries: "*" (the fallback), a prefix ("/api"), an exact path ("=/pricing") or a
    # pattern ("/users/{id}", "/files/{path*}"); see phantom.patterns.
    bind_to: tuple[str, ...] = ("*",)
    strip_prefix: bool = True  # remove a plain bind_to prefix from the path before forwarding
    rewrite: str | None = None  # the backend path built from bind_to's captures ("/v1/{id}")
    methods: tuple[str, ...] = ()  # the methods this server takes ("GET" brings HEAD); () = any
    fallback_url: BackendURL | None = None  # where requests go when proxy_url refuses them
    hosts: tuple[str, ...] = ()  # lowercased "app.example.com" / "*.example.com"; () = any
    preserve_host: bool = True  # False: send the backend's host (and Origin on upgrades)
    merge_slashes: bool = True  # "//a" is forwarded, cached and matched as "/a" (phantom.paths)
    allow_encoded_slashes: bool = False  # False: %2F, %5C, %00 or "\" in a path -> 400
    proxy_mode: str = "dynamic"  # "dynamic" | "pre_generate" (serve snapshots only)
    pre_generate_paths: tuple[str, ...] = ()  # snapshotted at startup, as clients request them
    pre_generate_fallthrough: bool = False  # pre_generate: forward snapshot misses
    webhooks: tuple[WebhookConfig, ...] = ()  # called in order before the cache and upgrades
    execute: str | None = None  # command line that starts the backend (see phantom.command)
    execute_dir: str | None = None  # its working directory; absolute once execute is set
    execute_timeout: float = 120.0  # seconds until proxy_url's port must accept connections
    # Per-server overrides of the root keys of the same name (see _INHERITED).
    max_body_bytes: int = 0
    tunnel_idle_timeout: float = 0.0
    tunnel_rate: int = 0  # bytes per second per direction of a tunnel; 0 = no cap
    tunnel_max_bytes: int = 0  # bytes a tunnel may move (both ways) before it is closed; 0 = any
    rate_limit_max_keys: int = 100_000  # keys the rate limiter remembers (least recent go)

    # Edge guards, in the order a request meets them (docs/configuration.md "Guards").
    allow: tuple[Network, ...] = ()  # client addresses let in; () = any
    deny: tuple[Network, ...] = ()  # client addresses refused; wins over allow
    cors: CorsConfig | None = None  # CORS preflights answered here, Allow-* fields added
    allowed_origins: tuple[str, ...] | None = None  # Origin patterns an upgrade may carry
    require_origin: bool = False  # an upgrade without Origin is refused too
    rate_limit: RateLimitConfig | None = None
    rate_limit_headers: bool = False  # RateLimit-Policy / RateLimit on every answer
    auth_required: bool = False  # a valid JWT ([jwt]) or 401
    auth_claims: tuple[tuple[str, ClaimValue], ...] = ()  # claim must equal (or list contain)
    forward_claims: tuple[tuple[str, str], ...] = ()  # claim -> request header to the backend
    token_cookie: str | None = None  # cookie a token may come in
    token_query: str = "access_token"  # query parameter a token may come in; "" = none
    tunnel_auth_expiry: str = "keep"  # keep | close: a tunnel whose token expires

    store_set_cookie: bool = False  # store responses with Set-Cookie that are not public
    serve_stale_on_error: float = 0.0  # default stale-if-error window in seconds; 0 = none
    cache_stale_keep: float = 60.0  # expired entries kept this long (max-stale, stale-if-error)
    surrogate_control: bool = True  # its max-age/no-store win over Cache-Control; stripped
    cdn_cache_control: bool = True  # a valid CDN-Cache-Control stands for Cache-Control
    cache_strategy: str = "all"  # all|none|only_html|no_images|only_images|only_assets
    include_paths: tuple[str, ...] = ()  # "[METHOD ]/pattern*"; empty = every path
    exclude_paths: tuple[str, ...] = ()  # wins over include_paths
    forward_get_only: bool = False  # other methods get 405
    cache_404_capacity: int = 100  # 404s are kept apart, at most this many; 0 = none
    cache_404_ttl: float = 60.0  # lifetime of a 404 without explicit freshness
    compress_strategy: str = "brotli"  # none|brotli|gzip|deflate: how stored bodies are kept
    cache_storage_mode: str = "memory"  # memory|filesystem (bodies on disk)|redis (shared)
    # Redis mode: the in-process first level in front of Redis, and how old its entries get.
    cache_l1_max_bytes: int = 16 * 1024 * 1024
    cache_l1_ttl: float = 1.0
    cache_directory: str = ""  # where filesystem mode keeps bodies (required there)
    cache_status_header: bool = True  # false: answers carry no Cache-Status (the log keeps it)

    backend_ca: str | None = None  # extra CA file (PEM) trusted for an https:// backend
    backend_tls_verify: bool = True  # false: accept any backend certificate (logged at start)
    # Where each key set for this server came from ("[defaults]", "[server.app]", ...), for
    # `phantom check`; keys not listed are phantom's defaults. Not a setting: not compared.
    origins: tuple[tuple[str, str], ...] = field(default=(), compare=False, repr=False)

    @property
    def pre_generate(self) -> bool:
        return self.proxy_mode == "pre_generate"

    @property
    def pool(self) -> tuple[BackendConfig, ...]:
        """Every backend of this server: ``backends``, or ``proxy_url`` alone."""
        return self.backends or (BackendConfig(self.proxy_url),)


@dataclass(frozen=True, slots=True)
class RelayConfig:
    """The ``[relay]`` table: what ``phantom relay`` needs beyond the listener keys."""

    # Agents are reached at NAME.relay_domain (the Host header decides).
    relay_domain: str
    # token -> the name patterns it may claim ("alice-*"); never shown by describe().
    tokens: tuple[tuple[str, tuple[str, ...]], ...] = field(default=(), repr=False)
    relay_name_grace: float = 60.0  # a lost agent's name stays reserved for its token
    relay_max_agents: int = 100  # agents registered at once; 0 = no limit
    relay_ping_interval: float = 15.0  # 2 unanswered pings close the control connection
    max_connections: int = 100  # public connections per agent at once; 0 = no limit
    # Each of an agent's tunnels: bytes per second per direction, bytes in all (0 = no cap);
    # None = the root key of the same name.
    tunnel_rate: int | None = None
    tunnel_max_bytes: int | None = None
    # What each agent's cache may hold, when it asks for one (--cache); 0 = agents get none.
    cache_max_bytes: int = 32 * 1024 * 1024
    # Also reach agents at relay_domain/NAME/... (one origin for all agents: off by default).
    relay_path_mode: bool = False


REDIS_SCHEMES: Final = ("redis", "rediss", "unix")


@dataclass(frozen=True, slots=True)
class RedisConfig:
    """The ``[redis]`` table: the Redis that servers with ``cache_storage_mode = "redis"``
    share (every worker and host with the same Redis, key_prefix and server name)."""

    url: str  # redis://[:password@]host[:port][/db], rediss://..., unix:///path[?db=N]
    key_prefix: str = "phantom:"
    timeout: float = 0.25  # seconds per command; a slower Redis counts as down
    pool_size: int = 16  # connections per process

    @property
    def shown_url(self) -> str:
        """The URL without its password, for messages and ``phantom check``."""
        parts = urlsplit(self.url)
        if parts.password is None:
            return self.url
        netloc = parts.netloc.rpartition("@")[2]
        user = f"{parts.username}:***@" if parts.username else ":***@"
        return parts._replace(netloc=user + netloc).geturl()


@dataclass(frozen=True, slots=True)
class Config:
    """The whole configuration. ``source`` names the file for messages; it is not a TOML key."""

    servers: tuple[ServerConfig, ...]  # at least one; routing.Router picks one per request
    listen: str = "127.0.0.1"
    http_port: int = 3000  # 0 = pick a free port
    backend_connect_timeout: float = 5.0
    backend_timeout: float = 60.0  # until the backend's response head
    shutdown_timeout: float = 30.0  # graceful drain bound on SIGTERM / close()
    log_level: str = "info"  # debug|info|warning|error
    workers: int = 1  # processes sharing the port (SO_REUSEPORT), each with its own cache
    metrics_per_worker: bool = False  # workers > 1: /metrics per worker (a label), not summed
    control_port: int | None = None  # None = no control API; 0 = pick a free port
    control_listen: str = "127.0.0.1"
    control_auth: str | None = None  # bearer token every control call but /healthz needs
    dotenv: str | None = None  # the .env file that was loaded (absolute path)
    redis: RedisConfig | None = None  # the [redis] table
    # Limits (docs/security.md, "Limits"). 0 means "no limit" / "off" where noted.
    max_header_bytes: int = 64 * 1024  # request line + headers -> 431
    max_headers: int = 100  # header fields -> 431
    max_request_line: int = 8 * 1024  # -> 414
    max_body_bytes: int = 0  # 0 = no limit -> 413
    header_timeout: float = 10.0  # from a request's first byte to its complete head -> 408
    keepalive_timeout: float = 15.0  # idle time between requests on a connection
    max_connections: int = 1024  # concurrent client connections, tunnels included; 0 = no limit
    max_tunnels: int = 512  # concurrent upgrade tunnels; 0 = no limit
    # One client's share of those (connections: per peer address, trusted proxies exempt;
    # tunnels: per client address after trusted_proxies); 0 = no limit.
    max_connections_per_client: int = 256
    max_tunnels_per_client: int = 64
    tunnel_idle_timeout: float = 0.0  # 0 = a quiet tunnel lives as long as both ends do
    tunnel_rate: int = 0  # default of server.NAME.tunnel_rate
    tunnel_max_bytes: int = 0  # default of server.NAME.tunnel_max_bytes
    rate_limit_max_keys: int = 100_000  # default of server.NAME.rate_limit_max_keys
    jwt: JwtConfig | None = None  # [jwt]: keys and claims for auth_required servers
    trusted_proxies: tuple[Network, ...] = ()  # peers whose X-Forwarded-* are kept
    pid_file: str | None = None  # serve writes its pid here; `phantom reload` reads it
    https_port: int | None = None  # None = no TLS listener; needs cert_path and key_path
    cert_path: str | None = None  # PEM certificate chain of the TLS listener
    key_path: str | None = None  # PEM private key of the TLS listener
    access_log: str = "-"  # "-" = stderr, "off" = none, else a file path (appended to)
    access_log_format: str = "combined"  # combined | json
    relay: RelayConfig | None = None  # the [relay] table: this file configures a relay
    source: str = "<config>"
    # What the .env file set and the environment did not (the environment wins): "$env:NAME"
    # values were resolved with these, and execute commands get them. Not shown: secrets.
    dotenv_vars: tuple[tuple[str, str], ...] = field(default=(), repr=False)


# --------------------------------------------------------------------------- value checks
#
# Each check takes a raw value and returns the typed value or raises _Invalid(problem); the
# caller, which knows the source and the key, turns that into a ConfigError.


class _Invalid(ValueError):
    """A value is wrong; ``str()`` is the problem, without source or key."""


def _type_name(value: object) -> str:
    """The TOML name of a value's type, for "got ..." in messages."""
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "float"
    if isinstance(value, str):
        return "string"
    if isinstance(value, Mapping):
        return "table"
    if isinstance(value, (list, tuple)):
        return "array"
    if isinstance(value, datetime):
        return "datetime"
    if isinstance(value, date):
        return "date"
    if isinstance(value, time):
        return "time"
    if value is None:
        return "nothing"
    return type(value).__name__


def _number_text(value: float) -> str:
    """A number as a person (and TOML) writes it: 60 rather than 60.0, nan, inf."""
    if math.isfinite(value) and value == int(value) and abs(value) < 1e15:
        return str(int(value))
    return repr(value)


def _check_str(value: object) -> str:
    if not isinstance(value, str):
        raise _Invalid(f"expected a string, got {_type_name(value)}")
    return value


def _check_bool(value: object) -> bool:
    if not isinstance(value, bool):
        raise _Invalid(f"expected a boolean, got {_type_name(value)}")
    return value


def _check_int(value: object, minimum: int, maximum: int | None = None) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise _Invalid(f"expected an integer, got {_type_name(value)}")
    if maximum is None:
        if value < minimum:
            raise _Invalid(f"must be {minimum} or greater, got {value}")
    elif not minimum <= value <= maximum:
        raise _Invalid(f"must be between {minimum} and {maximum}, got {value}")
    return value


def _check_seconds(value: object, *, allow_zero: bool) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise _Invalid(f"expected a number, got {_type_name(value)}")
    try:
        seconds = float(value)
    except OverflowError:
        seconds = math.inf
    if not math.isfinite(seconds):
        raise _Invalid(f"must be a finite number, got {_number_text(seconds)}")
    if allow_zero and seconds < 0:
        raise _Invalid(f"must be 0 or greater, got {_number_text(seconds)}")
    if not allow_zero and seconds <= 0:
        raise _Invalid(f"must be greater than 0, got {_number_text(seconds)}")
    return seconds


def _check_timeout(value: object) -> float:
    return _check_seconds(value, allow_zero=False)


def _check_ttl(value: object) -> float:
    return _check_seconds(value, allow_zero=True)


def _check_size(value: object) -> int:
    return _check_int(value, 0)


def parse_workers(value: object) -> int:
    """A worker process count, 1 to 256. Raises ``ValueError``."""
    return _check_int(value, 1, 256)


def _is_host(host: str) -> bool:
    if ":" in host:
        try:
            ipaddress.IPv6Address(host)
        except ValueError:
            return False
        return True
    return len(host) <= 253 and _HOSTNAME.fullmatch(host) is not None


def parse_host(value: object) -> str:
    """A listen address: IPv4, IPv6 (brackets optional, stored without) or a host name.

    Raises ``ValueError`` whose text is the problem.
    """
    text = _check_str(value)
    if not text:
        raise _Invalid('must not be empty (use "0.0.0.0" or "::" for all interfaces)')
    host = text[1:-1] if text.startswith("[") and text.endswith("]") else text
    if not _is_host(host):
        name, _, port = host.rpartition(":")
        if port.isdigit() and _is_host(name.removeprefix("[").removesuffix("]")):
            raise _Invalid(f"expected an IP address or host name without a port, got {text!r}")
        raise _Invalid(f"expected an IP address or host name, got {text!r}")
    return host


def parse_port(value: object) -> int:
    """A listening port, 0 (pick a free one) to 65535. Raises ``ValueError``."""
    return _check_int(value, 0, 65535)


def parse_log_level(value: object) -> str:
    """One of :data:`LOG_LEVELS`, any case; returned in lower case. Raises ``ValueError``."""
    text = _check_str(value)
    level = text.lower()
    if level not in LOG_LEVELS:
        raise _Invalid(f"expected one of {', '.join(LOG_LEVELS)}, got {text!r}")
    return level


def parse_backend_url(value: object) -> BackendURL:
    """``http://host[:port][/path]`` -> :class:`BackendURL`. Raises ``ValueError``."""
    text = _check_str(value)
    shape = f"{_URL_SHAPE}, got {text!r}"
    if any(ch.isspace() or not ch.isprintable() for ch in text):
        raise _Invalid(shape)
    try:
        parts = urlsplit(text)
        port = parts.port
    except ValueError:
        # Out-of-range or non-numeric port, unbalanced IPv6 brackets.
        raise _Invalid(shape) from None
    scheme = _SCHEMES.get(parts.scheme.lower())
    if scheme is None or not text[len(parts.scheme) :].startswith("://"):
        raise _Invalid(shape)
    if "@" in parts.netloc:
        # Do not echo the URL: it carries credentials.
        raise _Invalid(f"{_URL_SHAPE} without user:password@")
    if "?" in text or "#" in text:
        raise _Invalid(f"{_URL_SHAPE} without a query or fragment, got {text!r}")
    host = parts.hostname or ""
    if not host or not _is_host(host):
        raise _Invalid(shape)
    if port == 0 or parts.netloc.endswith(":"):
        raise _Invalid(shape)
    return BackendURL(
        scheme=scheme,
        host=host,
        port=DEFAULT_PORTS[scheme] if port is None else port,
        base_path=parts.path.rstrip("/"),
    )


def _check_secret(value: object) -> str:
    text = _check_str(value)
    if not text.strip():
        raise _Invalid("must not be empty")
    return text


def _check_command(value: object) -> str:
    text = _check_str(value)
    if not text.strip():
        raise _Invalid("must not be empty (leave the key out to start nothing)")
    try:
        parse_command(text)
    except CommandError as exc:
        raise _Invalid(str(exc)) from None
    return text


def _check_directory(value: object) -> str:
    text = _check_str(value)
    if not text or "\0" in text:
        raise _Invalid(f"expected a directory path, got {text!r}")
    return text


def _check_bind_to(value: object) -> tuple[str, ...]:
    items = [value] if isinstance(value, str) else value
    if not isinstance(items, (list, tuple)) or not items:
        got = "[]" if isinstance(items, (list, tuple)) else _type_name(value)
        raise _Invalid(f"expected a path, a pattern or an array of them, got {got}")
    entries = []
    for item in items:
        try:
            entries.append(parse_pattern(_check_str(item)).text)
        except ValueError as exc:
            raise _Invalid(str(exc)) from None
    return tuple(dict.fromkeys(entries))


def _check_rewrite(value: object) -> str:
    text = _check_str(value)
    try:
        parse_rewrite(text)
    except ValueError as exc:
        raise _Invalid(str(exc)) from None
    return text


# RFC 9110 §5.6.2: a token (methods, header and cookie names).
_TOKEN: Final = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")


def _check_methods(value: object) -> tuple[str, ...]:
    if not isinstance(value, (list, tuple)):
        raise _Invalid(
            f'expected an array of methods such as ["GET", "POST"], got {_type_name(value)}'
        )
    methods = []
    for item in value:
        text = _check_str(item)
        if not _TOKEN.fullmatch(text):
            raise _Invalid(f"expected a method such as GET, got {text!r}")
        methods.append(text.upper())
    return tuple(dict.fromkeys(methods))


def _check_host_pattern(value: object) -> str:
    text = _check_str(value)
    name = text.lower().rstrip(".")
    bare = name[2:] if name.startswith("*.") else name
    if not bare or "*" in bare or ":" in bare or not _is_host(bare):
        raise _Invalid(f'expected a host name or "*.domain" without a port, got {text!r}')
    return name


def _check_hosts(value: object) -> tuple[str, ...]:
    if not isinstance(value, (list, tuple)):
        raise _Invalid(f"expected an array of host names, got {_type_name(value)}")
    return tuple(dict.fromkeys(_check_host_pattern(item) for item in value))


PROXY_MODES: Final = ("dynamic", "pre_generate")
TUNNEL_AUTH_EXPIRY: Final = ("keep", "close")


def _check_choice(value: object, choices: tuple[str, ...]) -> str:
    text = _check_str(value)
    if text not in choices:
        raise _Invalid(f"expected one of {', '.join(choices)}, got {text!r}")
    return text


def _check_proxy_mode(value: object) -> str:
    return _check_choice(value, PROXY_MODES)


def check_snapshot_path(value: object) -> str:
    """A path as clients request it, query allowed: ``/blog/post?lang=en``."""
    text = _check_str(value)
    if not text.startswith("/") or "#" in text or not text.isprintable() or " " in text:
        raise _Invalid(f'expected a path starting with "/", got {text!r}')
    # A ".." segment (or "%2e%2e", which backends decode) would climb out of bind_to and out of
    # proxy_url's base path on the backend.
    segments = text.partition("?")[0].split("/")
    if any(segment.lower().replace("%2e", ".") == ".." for segment in segments):
        raise _Invalid(f"a path with a .. segment is not allowed, got {text!r}")
    return text


def _check_paths(value: object) -> tuple[str, ...]:
    if not isinstance(value, (list, tuple)):
        raise _Invalid(f"expected an array of paths, got {_type_name(value)}")
    return tuple(dict.fromkeys(check_snapshot_path(item) for item in value))


def _check_count(value: object) -> int:
    return _check_int(value, 1)


def _check_fraction(value: object) -> float:
    share = _check_ttl(value)
    if share > 1:
        raise _Invalid(f"expected a share from 0 to 1 (0.2 = 20%), got {_number_text(share)}")
    return share


def _check_hash_key(value: object) -> str:
    text = _check_str(value)
    kind, sep, name = text.partition(":")
    if text in HASH_KEYS or (sep and kind in ("header", "cookie") and _TOKEN.fullmatch(name)):
        return f"header:{name.lower()}" if kind == "header" else text
    raise _Invalid(
        f'expected "client_ip", "path", "header:NAME" or "cookie:NAME", got {text!r}'
    )


def parse_expect_status(value: object) -> frozenset[int]:
    """``"2xx"``, ``"200"``, ``"200,204,3xx"`` -> the status codes it accepts."""
    text = str(value) if isinstance(value, int) and not isinstance(value, bool) else None
    text = _check_str(value if text is None else text)
    codes: set[int] = set()
    for item in text.replace(" ", "").lower().split(","):
        if re.fullmatch(r"[1-5]xx", item):
            codes.update(range(int(item[0]) * 100, int(item[0]) * 100 + 100))
        elif re.fullmatch(r"[1-5][0-9][0-9]", item):
            codes.add(int(item))
        else:
            raise _Invalid(
                f'expected status codes and classes such as "2xx" or "200,301", got {text!r}'
            )
    return frozenset(codes)


def _check_expect_status(value: object) -> str:
    parse_expect_status(value)
    return str(value).replace(" ", "").lower()


def _check_health_host(value: object) -> str:
    text = _check_str(value)
    name, sep, port = text.rpartition(":") if not text.endswith("]") else ("", "", "")
    host = name if sep and port.isdigit() else text
    if not _is_host(host.removeprefix("[").removesuffix("]")):
        raise _Invalid(f'expected a host name and maybe a port ("app.internal"), got {text!r}')
    return text


def _check_statuses(value: object) -> tuple[int, ...]:
    if not isinstance(value, (list, tuple)):
        raise _Invalid(f"expected an array of status codes ([502, 503]), got {_type_name(value)}")
    return tuple(sorted({_check_int(item, 400, 599) for item in value}))


def _check_networks(value: object) -> tuple[Network, ...]:
    if not isinstance(value, (list, tuple)):
        raise _Invalid(f"expected an array of CIDR strings, got {_type_name(value)}")
    networks = []
    for item in value:
        text = _check_str(item)
        try:
            networks.append(ipaddress.ip_network(text, strict=False))
        except ValueError:
            raise _Invalid(f"expected an address or CIDR (10.0.0.0/8), got {text!r}") from None
    return tuple(networks)


# RFC 9110 §7.8: protocol-name ["/" protocol-version], each a token.
_UPGRADE_TOKEN: Final = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+(/[!#$%&'*+.^_`|~0-9A-Za-z-]+)?")


def _check_upgrade_protocols(value: object) -> tuple[str, ...]:
    if not isinstance(value, (list, tuple)):
        raise _Invalid(
            f'expected an array of Upgrade tokens or "*", such as ["websocket"], '
            f"got {_type_name(value)}"
        )
    protocols = []
    for item in value:
        text = _check_str(item)
        if text != "*" and not _UPGRADE_TOKEN.fullmatch(text):
            raise _Invalid(f'expected an Upgrade token such as "websocket", or "*", got {text!r}')
        protocols.append(text.lower())
    return tuple(dict.fromkeys(protocols))


def _check_path_rules(value: object) -> tuple[str, ...]:
    if not isinstance(value, (list, tuple)):
        raise _Invalid(f"expected an array of strings, got {_type_name(value)}")
    rules = []
    for item in value:
        text = _check_str(item)
        try:
            parse_path_rule(text)
        except ValueError as exc:
            raise _Invalid(str(exc)) from None
        rules.append(text)
    return tuple(rules)


def _check_path(value: object) -> str:
    text = _check_str(value)
    if not text or "\0" in text:
        raise _Invalid("expected a file path")
    return text


def _check_access_log_format(value: object) -> str:
    text = _check_str(value)
    if text not in ACCESS_LOG_FORMATS:
        raise _Invalid(f"expected one of {', '.join(ACCESS_LOG_FORMATS)}, got {text!r}")
    return text


def _check_redis_url(value: object) -> str:
    text = _check_str(value)
    try:
        parts = urlsplit(text)
        parts.port  # noqa: B018 - raises ValueError on a bad port
    except ValueError:
        parts = None
    if parts is None or parts.scheme not in REDIS_SCHEMES or not (parts.hostname or parts.path):
        # Not echoed: the URL may carry a password.
        raise _Invalid(
            "expected redis://host[:port][/db], rediss://host[:port][/db] or unix:///path"
        )
    return text


def _check_key_prefix(value: object) -> str:
    text = _check_str(value)
    if not text or not text.isprintable() or any(ch in text for ch in "*?[]\\ "):
        raise _Invalid(f"expected printable text without spaces or * ? [ ] \\, got {text!r}")
    return text


def _check_table(value: object) -> Mapping[str, Any]:
    if not isinstance(value, Mapping):
        raise _Invalid(f"expected a table, got {_type_name(value)}")
    return value


# A relay name is one DNS label (RFC 1035 §2.3.1, lowercase); a pattern may add "*" anywhere.
_RELAY_NAME_PATTERN: Final = re.compile(r"[a-z0-9*](?:[a-z0-9*-]{0,61}[a-z0-9*])?")
# An agent token shorter than this could be guessed; generate one with `openssl rand -hex 24`.
RELAY_TOKEN_MIN_LENGTH: Final = 16


def _check_relay_domain(value: object) -> str:
    text = _check_str(value).lower().rstrip(".")
    if not text or ":" in text or not _is_host(text):
        raise _Invalid(f"expected a host name such as relay.example.com, got {value!r}")
    return text


def _check_name_patterns(value: object) -> tuple[str, ...]:
    if not isinstance(value, list) or not value:
        raise _Invalid('expected a non-empty array of names such as ["alice-*"]')
    patterns = []
    for item in value:
        text = _check_str(item)
        if not _RELAY_NAME_PATTERN.fullmatch(text):
            raise _Invalid(
                f"{text!r} is not a DNS label (a-z, 0-9 and '-', at most 63; '*' as a wildcard)"
            )
        patterns.append(text)
    return tuple(patterns)


# --------------------------------------------------------------------------- guard values
#
# The edge guards' keys (docs/configuration.md "Guards"): sizes, origins, claims, names.

_SIZE_UNITS: Final = {
    "": 1, "b": 1, "k": 1000, "kb": 1000, "kib": 1 << 10, "m": 1000**2, "mb": 1000**2,
    "mib": 1 << 20, "g": 1000**3, "gb": 1000**3, "gib": 1 << 30,
}
_SIZE: Final = re.compile(r"\s*(\d+(?:\.\d+)?)\s*([A-Za-z]*)\s*")
_MAX_BYTE_SIZE: Final = 1 << 63


def _check_byte_size(value: object) -> int:
    """Bytes: an integer, or text such as ``"1MiB"``, ``"512 KiB"``, ``"10MB"``."""
    if isinstance(value, str):
        match = _SIZE.fullmatch(value)
        unit = match and _SIZE_UNITS.get(match[2].lower())
        if not match or unit is None:
            raise _Invalid(f'expected bytes such as 1048576 or "1MiB", got {value!r}')
        size = float(match[1]) * unit
        if not size < _MAX_BYTE_SIZE:  # (inf too: "999...9" of hundreds of digits)
            raise _Invalid(f"expected at most {_MAX_BYTE_SIZE} bytes (what TOML's integers hold)")
        return int(size)
    return _check_size(value)


# Request fields a claim may not be forwarded as: framing, routing and what only a proxy sets.
_RESERVED_FIELDS: Final = frozenset(
    {
        "host", "content-length", "transfer-encoding", "connection", "upgrade", "te",
        "trailer", "keep-alive", "proxy-connection", "authorization", "cookie", "forwarded",
        "via", "x-real-ip",
    }
)


def _check_token(value: object) -> str:
    text = _check_str(value)
    if not _TOKEN.fullmatch(text):
        raise _Invalid(f"expected a name of letters, digits and -_.!#$%&'*+^`|~, got {text!r}")
    return text


def _check_string_list(value: object, item: Callable[[object], str]) -> tuple[str, ...]:
    if not isinstance(value, (list, tuple)):
        raise _Invalid(f"expected an array of strings, got {_type_name(value)}")
    return tuple(dict.fromkeys(item(entry) for entry in value))


def _check_origin_patterns(value: object) -> tuple[str, ...]:
    def one(item: object) -> str:
        try:
            return str(parse_origin_pattern(_check_str(item)))
        except ValueError as exc:
            raise _Invalid(str(exc)) from None

    return _check_string_list(value, one)


def _check_forwarded_field(value: object) -> str:
    name = _check_token(value)
    lower = name.lower()
    if lower in _RESERVED_FIELDS or lower.startswith(("x-forwarded-", "proxy-")):
        raise _Invalid(f"{name!r} is a field phantom or the client's framing owns; pick another")
    if "_" in name:
        # phantom removes fields with "_" from untrusted clients (CGI reads them as "-").
        raise _Invalid(f"use '-' rather than '_' in a header name, got {name!r}")
    return name


def _check_claim_map(value: object) -> tuple[tuple[str, Any], ...]:
    table = _check_table(value)
    return tuple((_check_str(claim), claimed) for claim, claimed in table.items())


def _check_auth_claims(value: object) -> tuple[tuple[str, ClaimValue], ...]:
    pairs = _check_claim_map(value)
    for claim, expected in pairs:
        if not isinstance(expected, (str, int, float)):
            raise _Invalid(
                f"{claim}: expected a string, number or boolean, got {_type_name(expected)}"
            )
    return pairs


def _check_forward_claims(value: object) -> tuple[tuple[str, str], ...]:
    pairs = tuple((claim, _check_forwarded_field(name)) for claim, name in _check_claim_map(value))
    names = [name.lower() for _, name in pairs]
    if len(set(names)) != len(names):
        raise _Invalid("two claims are forwarded in the same header")
    return pairs


def _check_query_name(value: object) -> str:
    text = _check_str(value)
    if any(ch in text for ch in "&=#? ") or not text.isprintable():
        raise _Invalid(f'expected a query parameter name (or "" for none), got {text!r}')
    return text


RATE_LIMIT_KEYS: Final = ("client_ip", "jwt:CLAIM", "header:NAME")


def _check_rate_key(value: object) -> str:
    text = _check_str(value)
    kind, _, name = text.partition(":")
    if text == "client_ip" or (kind == "jwt" and name):
        return text
    if kind == "header" and _TOKEN.fullmatch(name):
        return text.lower()
    raise _Invalid(f"expected one of {', '.join(RATE_LIMIT_KEYS)}, got {text!r}")


def _check_audience(value: object) -> tuple[str, ...]:
    if isinstance(value, str):
        return (_check_secret(value),)
    return _check_string_list(value, _check_secret)


def _check_algorithms(value: object) -> tuple[str, ...]:
    known = [name for family in JWT_FAMILIES.values() for name in family]

    def one(item: object) -> str:
        text = _check_str(item)
        if text not in known:
            # "none" too: an unsigned token is never accepted.
            raise _Invalid(f"expected some of {', '.join(known)}, got {text!r}")
        return text

    algorithms = _check_string_list(value, one)
    if not algorithms:
        raise _Invalid("must name at least one algorithm")
    return algorithms


# --------------------------------------------------------------------------- tables

ENV_PREFIX: Final = "$env:"
_UNSET: Final = object()  # an "$env:NAME" whose variable is not set: the key is left out


class _EnvString(str):
    """The text of an ``"$env:NAME"`` value: remembers NAME, and may stand for a number or
    a boolean where the key wants one (``http_port = "$env:PORT"``)."""

    name: str

    def __new__(cls, text: str, name: str) -> _EnvString:
        value = super().__new__(cls, text)
        value.name = name
        return value

    def typed(self) -> object:
        """The number or boolean the text spells (``8080``, ``1.5``, ``true``), else the text."""
        text = self.strip()
        if text.lower() in ("true", "false"):
            return text.lower() == "true"
        for number in (int, float):
            try:
                return number(text)
            except ValueError:
                continue
        return str(self)

_Check = Callable[[Any], Any]

_ROOT_CHECKS: Final[dict[str, _Check]] = {
    "listen": parse_host,
    "http_port": parse_port,
    "backend_connect_timeout": _check_timeout,
    "backend_timeout": _check_timeout,
    "shutdown_timeout": _check_timeout,
    "log_level": parse_log_level,
    "workers": parse_workers,
    "metrics_per_worker": _check_bool,
    "control_port": parse_port,
    "control_listen": parse_host,
    "control_auth": _check_secret,
    "max_header_bytes": _check_count,
    "max_headers": _check_count,
    "max_request_line": _check_count,
    "max_body_bytes": _check_size,
    "header_timeout": _check_timeout,
    "keepalive_timeout": _check_timeout,
    "max_connections": _check_size,
    "max_tunnels": _check_size,
    "max_connections_per_client": _check_size,
    "max_tunnels_per_client": _check_size,
    "tunnel_idle_timeout": _check_ttl,
    "tunnel_rate": _check_byte_size,
    "tunnel_max_bytes": _check_byte_size,
    "rate_limit_max_keys": _check_count,
    "trusted_proxies": _check_networks,
    "pid_file": _check_secret,
    "https_port": parse_port,
    "cert_path": _check_path,
    "key_path": _check_path,
    "access_log": _check_path,
    "access_log_format": _check_access_log_format,
}

_REDIS_CHECKS: Final[dict[str, _Check]] = {
    "url": _check_redis_url,
    "key_prefix": _check_key_prefix,
    "timeout": _check_timeout,
    "pool_size": lambda value: _check_int(value, 2, 1024),  # one holds the subscription
}

_WEBHOOK_CHECKS: Final[dict[str, _Check]] = {
    "url": parse_backend_url,
    "type": lambda value: _check_choice(value, WEBHOOK_TYPES),
    "timeout_ms": lambda value: _check_int(value, 1),
}

_BACKEND_CHECKS: Final[dict[str, _Check]] = {
    "url": parse_backend_url,
    "weight": lambda value: _check_int(value, 1, MAX_WEIGHT),
    "backup": _check_bool,
}

_HEALTH_CHECKS: Final[dict[str, _Check]] = {
    "path": check_snapshot_path,
    "interval": _check_timeout,
    "timeout": _check_timeout,
    "healthy_threshold": _check_count,
    "unhealthy_threshold": _check_count,
    "expect_status": _check_expect_status,
    "host": _check_health_host,
}

_SERVER_CHECKS: Final[dict[str, _Check]] = {
    "proxy_url": parse_backend_url,
    "load_balance": lambda value: _check_choice(value, LOAD_BALANCE),
    "hash_key": _check_hash_key,
    "health_check_start": lambda value: _check_choice(value, HEALTH_STARTS),
    "breaker_failures": _check_size,
    "breaker_statuses": _check_statuses,
    "breaker_open": _check_timeout,
    "retries": lambda value: _check_int(value, 0, MAX_RETRIES),
    "retry_budget": _check_fraction,
    "enable_websocket": _check_bool,
    "upgrade_protocols": _check_upgrade_protocols,
    "cache_ttl": _check_ttl,
    "cache_heuristic": lambda value: _check_choice(value, HEURISTIC_MODES),
    "coalesce_timeout": _check_timeout,
    "cache_max_entries": _check_size,
    "cache_max_bytes": _check_size,
    "cache_max_object_bytes": _check_size,
    "bind_to": _check_bind_to,
    "strip_prefix": _check_bool,
    "rewrite": _check_rewrite,
    "methods": _check_methods,
    "fallback_url": parse_backend_url,
    "hosts": _check_hosts,
    "preserve_host": _check_bool,
    "merge_slashes": _check_bool,
    "allow_encoded_slashes": _check_bool,
    "proxy_mode": _check_proxy_mode,
    "pre_generate_paths": _check_paths,
    "pre_generate_fallthrough": _check_bool,
    "execute": _check_command,
    "execute_dir": _check_directory,
    "execute_timeout": _check_timeout,
    "store_set_cookie": _check_bool,
    "serve_stale_on_error": _check_ttl,
    "cache_stale_keep": _check_ttl,
    "surrogate_control": _check_bool,
    "cdn_cache_control": _check_bool,
    "cache_strategy": lambda value: _check_choice(value, CACHE_STRATEGIES),
    "include_paths": _check_path_rules,
    "exclude_paths": _check_path_rules,
    "forward_get_only": _check_bool,
    "cache_404_capacity": _check_size,
    "cache_404_ttl": _check_ttl,
    "compress_strategy": lambda value: _check_choice(value, COMPRESS_STRATEGIES),
    "cache_storage_mode": lambda value: _check_choice(value, STORAGE_MODES),
    "cache_directory": _check_str,
    "cache_l1_max_bytes": _check_size,
    "cache_l1_ttl": _check_ttl,
    "cache_status_header": _check_bool,
    "max_body_bytes": _check_size,
    "tunnel_idle_timeout": _check_ttl,
    "tunnel_rate": _check_byte_size,
    "tunnel_max_bytes": _check_byte_size,
    "rate_limit_max_keys": _check_count,
    "allow": _check_networks,
    "deny": _check_networks,
    "allowed_origins": _check_origin_patterns,
    "require_origin": _check_bool,
    "rate_limit_headers": _check_bool,
    "auth_required": _check_bool,
    "auth_claims": _check_auth_claims,
    "forward_claims": _check_forward_claims,
    "token_cookie": _check_token,
    "token_query": _check_query_name,
    "tunnel_auth_expiry": lambda value: _check_choice(value, TUNNEL_AUTH_EXPIRY),
    "backend_ca": _check_path,
    "backend_tls_verify": _check_bool,
}

_RELAY_CHECKS: Final[dict[str, _Check]] = {
    "relay_domain": _check_relay_domain,
    "relay_name_grace": _check_ttl,
    "relay_max_agents": _check_size,
    "relay_ping_interval": _check_timeout,
    "max_connections": _check_size,
    "tunnel_rate": _check_byte_size,
    "tunnel_max_bytes": _check_byte_size,
    "cache_max_bytes": _check_byte_size,
    "relay_path_mode": _check_bool,
}

_JWT_CHECKS: Final[dict[str, _Check]] = {
    "secret": _check_secret,
    "public_key": _check_path,
    "jwks_url": parse_backend_url,
    "jwks_optional_at_start": _check_bool,
    "algorithms": _check_algorithms,
    "issuer": _check_secret,
    "audience": _check_audience,
    "leeway": _check_ttl,
    "required_claims": lambda value: _check_string_list(value, _check_secret),
}

_RATE_LIMIT_CHECKS: Final[dict[str, _Check]] = {
    "requests": _check_count,
    "per": _check_timeout,
    "burst": _check_count,
    "key": _check_rate_key,
    "shared": _check_bool,
}

_CORS_CHECKS: Final[dict[str, _Check]] = {
    "origins": lambda value: _check_string_list(
        value, lambda item: "*" if item == "*" else _check_origin_patterns([item])[0]
    ),
    "methods": lambda value: _check_string_list(value, _check_token),
    "headers": lambda value: tuple(h.lower() for h in _check_string_list(value, _check_token)),
    "credentials": _check_bool,
    "max_age": _check_size,
}

# Server keys that default to the root key of the same name.
_INHERITED: Final[tuple[str, ...]] = (
    "max_body_bytes", "tunnel_idle_timeout", "tunnel_rate", "tunnel_max_bytes",
    "rate_limit_max_keys",
)
# Server keys that name one app: not in [defaults].
_PER_APP: Final = frozenset(
    {
        "proxy_url",
        "backends",
        "bind_to",
        "rewrite",
        "hosts",
        "execute",
        "execute_dir",
        "pre_generate_paths",
    }
)


def _key_part(name: object) -> str:
    """One component of a dotted key, quoted the TOML way when it is not a bare key."""
    text = str(name)
    if _BARE_KEY.fullmatch(text) or _ARRAY_ITEM.fullmatch(text):
        return text
    return _toml_string(text)


def _dotted(*parts: object) -> str:
    return ".".join(_key_part(part) for part in parts)


class _Reader:
    """Validates one mapping into a Config, raising ConfigError named after ``source``."""

    def __init__(
        self, source: str, environ: Mapping[str, str] | None = None, base_dir: str = ""
    ) -> None:
        self.source = source
        self.environ: Mapping[str, str] = os.environ if environ is None else environ
        self.base_dir = base_dir  # relative paths (dotenv, execute_dir) start here; "" = cwd

    def error(self, key: str, problem: str) -> ConfigError:
        return ConfigError(self.source, key, problem)

    def check(self, key: str, check: _Check, value: object) -> Any:
        try:
            return check(str(value) if isinstance(value, _EnvString) else value)
        except _Invalid as exc:
            problem = str(exc)
        if isinstance(value, _EnvString):
            typed = value.typed()
            if not isinstance(typed, str):
                try:
                    return check(typed)
                except _Invalid as exc:
                    problem = str(exc)
            problem = f"{ENV_PREFIX}{value.name} is {str(value)!r}: {problem}"
        raise self.error(key, problem)

    def path(self, text: str) -> str:
        """A path from the config, relative to the config file's directory."""
        return os.path.join(self.base_dir, os.path.expanduser(text))

    def dotenv(self, raw: object) -> tuple[str | None, dict[str, str]]:
        """``dotenv = true | "path"``: the file read and the variables it sets."""
        value = self.from_env(raw, ("dotenv",))
        if value is _UNSET or value is False:
            return None, {}
        if value is True:
            value = ".env"
        if not isinstance(value, str) or not value:
            problem = f"got {_type_name(value)}" if not isinstance(value, str) else "got ''"
            raise self.error("dotenv", f'expected true, false or a path such as ".env", {problem}')
        path = self.path(value)
        try:
            with open(path, encoding="utf-8-sig") as file:
                text = file.read()
        except FileNotFoundError:
            raise self.error("dotenv", f"{path}: file not found") from None
        except UnicodeDecodeError as exc:
            raise self.error("dotenv", f"{path}: not valid UTF-8 (byte {exc.start})") from None
        except OSError as exc:
            raise self.error("dotenv", f"{path}: {exc.strerror or exc}") from None
        try:
            return os.path.abspath(path), parse_dotenv(text)
        except DotenvError as exc:
            raise self.error("dotenv", f"{path}:{exc.line}: {exc.problem}") from None

    def table(
        self, data: Mapping[str, Any], checks: Mapping[str, _Check], prefix: tuple[str, ...]
    ) -> dict[str, Any]:
        """Check every key of ``data`` against ``checks``, in the order the file has them."""
        values: dict[str, Any] = {}
        for key, value in data.items():
            check = checks.get(key) if isinstance(key, str) else None
            if check is None:
                raise self.error(_dotted(*prefix, key), "unknown key")
            values[key] = self.check(_dotted(*prefix, key), check, value)
        return values

    def from_env(self, value: Any, path: tuple[object, ...]) -> Any:
        """``"$env:NAME"`` strings, anywhere, become the variable's value. An unset variable
        drops its key (or array item), so the default applies; for a secret such as
        ``control_auth`` it is an error: a secret that silently vanished would open the door."""
        if isinstance(value, Mapping):
            resolved = {k: self.from_env(v, (*path, k)) for k, v in value.items()}
            return {k: v for k, v in resolved.items() if v is not _UNSET}
        if isinstance(value, list):
            items = [self.from_env(item, path) for item in value]
            return [item for item in items if item is not _UNSET]
        if isinstance(value, str) and value.startswith(ENV_PREFIX):
            name = value[len(ENV_PREFIX) :]
            if name in self.environ:
                return _EnvString(self.environ[name], name)
            if path and path[-1] in _SECRETS:
                raise self.error(_dotted(*path), f"environment variable {name} is not set")
            return _UNSET
        return value

    def config(self, data: object) -> Config:
        root = dict(self.check("<root>", _check_table, data))
        dotenv, variables = self.dotenv(root.pop("dotenv", False))
        # The environment wins over the file: a deployment overrides a checked-in default.
        added = tuple((k, v) for k, v in variables.items() if k not in self.environ)
        self.environ = {**dict(added), **self.environ}
        root = dict(self.from_env(root, ()))
        servers_raw = root.pop("server", None)
        relay = self.relay(root.pop("relay")) if "relay" in root else None
        defaults_raw = root.pop("defaults", None)
        microfrontends = root.pop("microfrontends", None)
        redis = self.redis(root.pop("redis", None))
        jwt_raw = root.pop("jwt", None)
        values = self.table(root, _ROOT_CHECKS, ())
        if jwt_raw is not None:
            values["jwt"] = self.jwt(jwt_raw)
        layers = [("the root key", {key: values[key] for key in _INHERITED if key in values})]
        if defaults_raw is not None:
            layers.append(("[defaults]", self.defaults(defaults_raw)))
        apps: dict[str, list[tuple[str, dict[str, Any]]]] = {}
        if microfrontends is not None:
            apps, port = self.microfrontends(microfrontends)
            values.setdefault("http_port", MICROFRONTENDS_PORT if port is None else port)
        # A relay's backends are its agents: its file may have no [server.NAME] at all.
        if relay and servers_raw is None and not apps:
            servers: tuple[ServerConfig, ...] = ()
        else:
            servers = self.servers(servers_raw, layers, apps)
        self.check_redis_users(redis, servers)
        if "jwt" not in values:
            self.check_jwt_users(servers)
        self.tls_listener(values)
        for key in ("cert_path", "key_path"):
            if key in values:
                values[key] = os.path.abspath(self.path(values[key]))
        if values.get("access_log", "-") not in ("-", "off"):
            values["access_log"] = os.path.abspath(self.path(values["access_log"]))
        return Config(
            servers=servers,
            source=self.source,
            dotenv=dotenv,
            dotenv_vars=added,
            relay=relay,
            redis=redis,
            **values,
        )

    def relay(self, raw: object) -> RelayConfig:
        body = dict(self.check("relay", _check_table, raw))
        tokens = self.relay_tokens(body.pop("tokens", None))
        values = self.table(body, _RELAY_CHECKS, ("relay",))
        if "relay_domain" not in values:
            raise self.error(
                "relay.relay_domain",
                'missing: agents get NAME.relay_domain, e.g. "relay.example.com"',
            )
        return RelayConfig(tokens=tokens, **values)

    def relay_tokens(self, raw: object) -> tuple[tuple[str, tuple[str, ...]], ...]:
        """``[relay.tokens]``: token = [name patterns]. A token (the key) may be ``"$env:NAME"``;
        its variable must be set, as for every secret."""
        if raw is None:
            raise self.error(
                "relay.tokens", 'missing: e.g. [relay.tokens] "$env:ALICE" = ["alice-*"]'
            )
        table = self.check("relay.tokens", _check_table, raw)
        tokens = []
        for index, (key, value) in enumerate(table.items()):
            token = str(key)
            # A message names the variable, or the entry's place: never the token itself.
            where = (
                _dotted("relay", "tokens", key)
                if token.startswith(ENV_PREFIX)
                else f"relay.tokens (entry {index + 1})"
            )
            if token.startswith(ENV_PREFIX):
                name = token[len(ENV_PREFIX) :]
                if name not in self.environ:
                    raise self.error(where, f"environment variable {name} is not set")
                token = self.environ[name]
            # ASCII: an HTTP field carries it, and the relay compares the bytes it receives.
            if (
                len(token) < RELAY_TOKEN_MIN_LENGTH
                or not (token.isascii() and token.isprintable())
                or " " in token
            ):
                raise self.error(
                    where,
                    f"a token must be at least {RELAY_TOKEN_MIN_LENGTH} printable ASCII "
                    "characters without spaces (e.g. from `openssl rand -hex 24`)",
                )
            tokens.append((token, self.check(where, _check_name_patterns, value)))
        if not tokens:
            raise self.error("relay.tokens", "no token: no agent could register")
        return tuple(tokens)

    def redis(self, raw: object) -> RedisConfig | None:
        if raw is None:
            return None
        values = self.table(self.check("redis", _check_table, raw), _REDIS_CHECKS, ("redis",))
        if "url" not in values:
            raise self.error("redis.url", 'missing: where Redis is, e.g. "redis://127.0.0.1:6379/0"')
        return RedisConfig(**values)

    def check_redis_users(
        self, redis: RedisConfig | None, servers: tuple[ServerConfig, ...]
    ) -> None:
        """A server in redis mode, or with a shared rate limit, needs the [redis] table and
        the client library."""
        users = [
            (_dotted("server", s.name, "cache_storage_mode"), '"redis"')
            for s in servers if s.cache_storage_mode == "redis"
        ] + [
            (_dotted("server", s.name, "rate_limit", "shared"), "true")
            for s in servers if s.rate_limit is not None and s.rate_limit.shared
        ]
        if not users:
            return
        key, value = users[0]
        if redis is None:
            raise self.error(key, f"{value} needs a [redis] table with url")
        if not redis_client_installed():
            raise self.error(
                key, f"{value} needs the Redis client: pip install 'phantom-proxy[redis]'"
            )

    def tls_listener(self, values: Mapping[str, Any]) -> None:
        """https_port, cert_path and key_path come together (readability is checked at start)."""
        if values.get("https_port") is not None:
            for key in ("cert_path", "key_path"):
                if key not in values:
                    raise self.error(key, "missing: https_port needs cert_path and key_path")
        else:
            for key in ("cert_path", "key_path"):
                if key in values:
                    raise self.error(key, "set, but https_port is not: no TLS listener uses it")

    def defaults(self, raw: object) -> dict[str, Any]:
        """``[defaults]``: any server key but those naming one app."""
        table = self.check("defaults", _check_table, raw)
        for key in table:
            if key in _PER_APP:
                raise self.error(
                    _dotted("defaults", key), "names one app: set it in each [server.NAME] table"
                )
        return self.server_table(table, ("defaults",))

    def microfrontends(
        self, raw: object
    ) -> tuple[dict[str, list[tuple[str, dict[str, Any]]]], int | None]:
        """``microfrontends = "path"``: Turborepo's file as server layers (caching off below
        ``[defaults]``, the file's values above it), and its ``localProxyPort``."""
        path = self.path(self.check("microfrontends", _check_path, raw))
        try:
            with open(path, encoding="utf-8-sig") as file:
                text = file.read()
        except (OSError, UnicodeDecodeError) as exc:
            reason = "not valid UTF-8" if isinstance(exc, UnicodeDecodeError) else (
                "file not found" if isinstance(exc, FileNotFoundError) else exc.strerror
            )
            raise self.error("microfrontends", f"{path}: {reason}") from None
        parsed = parse_microfrontends(text, path)
        reader = _Reader(path, self.environ, self.base_dir)
        origin = os.path.basename(path)
        apps = {
            name: [
                ("microfrontends (caching off)", {"cache_strategy": "none"}),
                (origin, reader.table(table, _SERVER_CHECKS, ("applications", name))),
            ]
            for name, table in parsed.servers.items()
        }
        return apps, parsed.port

    def servers(
        self,
        raw: object,
        layers: list[tuple[str, dict[str, Any]]],
        apps: Mapping[str, list[tuple[str, dict[str, Any]]]],
    ) -> tuple[ServerConfig, ...]:
        """The servers: ``[server.NAME]`` tables over ``layers`` (root keys, ``[defaults]``);
        an app of a microfrontends file comes first, its table of the same name over it."""
        if raw is None and not apps:
            raise self.error("server", "at least one [server.NAME] table is required")
        table = self.check("server", _check_table, {} if raw is None else raw)
        for name, value in table.items():
            if not isinstance(value, Mapping):
                if name in _SERVER_CHECKS:
                    problem = "settings go in a [server.NAME] table, e.g. [server.default]"
                else:
                    problem = f"expected a [server.NAME] table, got {_type_name(value)}"
                raise self.error(_dotted("server", name), problem)
            if not isinstance(name, str) or not _BARE_KEY.fullmatch(name):
                raise self.error(
                    _dotted("server", name),
                    "server names may use only letters, digits, '-' and '_'",
                )
        if not table and not apps:
            raise self.error("server", "at least one [server.NAME] table is required")
        stacks: dict[str, list[tuple[str, dict[str, Any]]]] = {}
        for name, (base, app) in ((n, (a[0], a[1:])) for n, a in apps.items()):
            stacks[name] = [*layers[:1], base, *layers[1:], *app]
        for name, body in table.items():
            own = (f"[{_dotted('server', name)}]", self.server_table(body, ("server", name)))
            stacks[name] = [*stacks.get(name, layers), own]
        servers = tuple(self.server(name, stack) for name, stack in stacks.items())
        self.check_mounts(servers)
        return servers

    def jwt(self, raw: object) -> JwtConfig:
        """The ``[jwt]`` table: one key source, algorithms that fit it, a long enough secret."""
        values = self.table(self.check("jwt", _check_table, raw), _JWT_CHECKS, ("jwt",))
        if importlib.util.find_spec("jwt") is None:
            raise self.error("jwt", "needs PyJWT: pip install 'phantom-proxy[jwt]'")
        sources = [key for key in ("secret", "public_key", "jwks_url") if key in values]
        if len(sources) != 1:
            problem = "set only one of" if sources else "missing: set one of"
            raise self.error("jwt", f"{problem} secret, public_key, jwks_url")
        if "public_key" in values:
            values["public_key"] = os.path.abspath(self.path(values["public_key"]))
        fitting = self.jwt_key_algorithms(values)
        algorithms = values.get("algorithms")
        if algorithms is None:
            if fitting is None:
                raise self.error(
                    "jwt.algorithms",
                    'missing: a JWKS may hold several kinds of key; name them, e.g. ["RS256"]',
                )
            # HS256 alone for a secret: the longer hashes want longer secrets (below).
            values["algorithms"] = fitting[:1] if "secret" in values else fitting
        else:
            # A JWKS never checks HMAC: its public keys would become secrets anyone knows.
            wrong = [a for a in algorithms if a not in (fitting or _ASYMMETRIC)]
            if wrong:
                raise self.error(
                    "jwt.algorithms",
                    f"{', '.join(wrong)} can't be checked with {sources[0]} (a token could pick "
                    "an algorithm that turns the key against itself)",
                )
        secret = values.get("secret")
        if secret is not None:
            needed = max(HMAC_MIN_BYTES[a] for a in values["algorithms"])
            if len(secret.encode()) < needed:
                raise self.error(
                    "jwt.secret",
                    f"must be at least {needed} bytes for {', '.join(values['algorithms'])}, "
                    f"got {len(secret.encode())} (a short secret can be guessed offline)",
                )
        return JwtConfig(**values)

    def jwt_key_algorithms(self, values: Mapping[str, Any]) -> tuple[str, ...] | None:
        """The algorithms the ``[jwt]`` key can check; None for a JWKS (any kind of key)."""
        if "secret" in values:
            return JWT_FAMILIES["hmac"]
        if "jwks_url" in values:
            return None
        try:
            return load_public_key(values["public_key"]).algorithms
        except KeyProblem as exc:
            raise self.error("jwt.public_key", str(exc)) from None

    def check_jwt_users(self, servers: tuple[ServerConfig, ...]) -> None:
        """Without ``[jwt]`` there is no key to check a token with."""
        for server in servers:
            users = {
                "auth_required": server.auth_required,
                "rate_limit": server.rate_limit and server.rate_limit.key.startswith("jwt:"),
            }
            for key, used in users.items():
                if used:
                    raise self.error(
                        _dotted("server", server.name, key),
                        "needs a [jwt] table with the key tokens are checked with",
                    )

    def check_guards(self, name: str, values: Mapping[str, Any]) -> None:
        """Guard keys that only mean something together."""
        needs_auth = {
            "auth_claims": bool(values.get("auth_claims")),
            "forward_claims": bool(values.get("forward_claims")),
            "tunnel_auth_expiry": values.get("tunnel_auth_expiry") == "close",
        }
        for key, set_ in needs_auth.items():
            if set_ and not values.get("auth_required"):
                raise self.error(_dotted("server", name, key), "needs auth_required = true")
        if values.get("require_origin") and values.get("allowed_origins") is None:
            raise self.error(
                _dotted("server", name, "require_origin"),
                "needs allowed_origins (the origins an upgrade may come from)",
            )

    def subtable(
        self, raw: object, checks: Mapping[str, _Check], prefix: tuple[str, ...]
    ) -> dict[str, Any]:
        return self.table(self.check(_dotted(*prefix), _check_table, raw), checks, prefix)

    def rate_limit(self, raw: object, prefix: tuple[str, ...]) -> RateLimitConfig:
        values = self.subtable(raw, _RATE_LIMIT_CHECKS, prefix)
        for required in ("requests", "per"):
            if required not in values:
                raise self.error(_dotted(*prefix, required), "missing")
        values.setdefault("burst", values["requests"])
        return RateLimitConfig(**values)

    def cors(self, raw: object, prefix: tuple[str, ...]) -> CorsConfig:
        values = self.subtable(raw, _CORS_CHECKS, prefix)
        if "origins" not in values:
            raise self.error(_dotted(*prefix, "origins"), 'missing, e.g. ["https://app.example.com"]')
        if values.get("credentials") and "*" in values["origins"]:
            raise self.error(
                _dotted(*prefix, "origins"),
                '"*" with credentials = true would let every site read answers made with the '
                "user's cookies; list the origins",
            )
        return CorsConfig(**values)

    def check_mounts(self, servers: tuple[ServerConfig, ...]) -> None:
        """Two servers with entries matching the same paths for the same host and a method in
        common: the second could never be reached."""
        claimed: dict[tuple[str, object], list[ServerConfig]] = {}
        for server in servers:
            for entry in server.bind_to:
                shape = parse_pattern(entry).shape
                for host in server.hosts or ("",):
                    others = claimed.setdefault((host, shape), [])
                    other = next((o for o in others if _share_a_method(o, server)), None)
                    if other is not None and other.name != server.name:
                        where = f" for host {host!r}" if host else ""
                        raise self.error(
                            _dotted("server", server.name, "bind_to"),
                            f"{entry!r}{where} is already bound by server.{other.name}",
                        )
                    others.append(server)

    def array_of_tables(
        self,
        raw: object,
        prefix: tuple[str, ...],
        checks: Mapping[str, _Check],
        required: tuple[str, ...],
    ) -> list[dict[str, Any]]:
        """``[[prefix]]`` tables, each checked against ``checks``; ``required`` keys must be set."""
        key = _dotted(*prefix)
        if not isinstance(raw, list):
            raise self.error(key, f"expected [[{key}]] tables, got {_type_name(raw)}")
        items = []
        for index, item in enumerate(raw):
            where = (*prefix[:-1], f"{prefix[-1]}[{index}]")
            table = self.check(_dotted(*prefix), _check_table, item)
            values = self.table(table, checks, where)
            for name in required:
                if name not in values:
                    raise self.error(_dotted(*where, name), "missing")
            items.append(values)
        return items

    def webhooks(self, raw: object, prefix: tuple[str, ...]) -> tuple[WebhookConfig, ...]:
        items = self.array_of_tables(raw, prefix, _WEBHOOK_CHECKS, ("url", "type"))
        return tuple(WebhookConfig(**values) for values in items)

    def backends(self, raw: object, prefix: tuple[str, ...]) -> tuple[BackendConfig, ...]:
        items = self.array_of_tables(raw, prefix, _BACKEND_CHECKS, ("url",))
        backends = tuple(BackendConfig(**values) for values in items)
        key = _dotted(*prefix)
        if not backends:
            raise self.error(key, f"expected at least one [[{key}]] table with a url")
        seen: dict[tuple[str, str, int], int] = {}
        for index, backend in enumerate(backends):
            url = backend.url
            first = seen.setdefault((url.scheme, url.host, url.port), index)
            if first != index:
                raise self.error(
                    _dotted(*prefix[:-1], f"{prefix[-1]}[{index}]", "url"),
                    f"duplicate backend {url.scheme}://{url.netloc} (also {prefix[-1]}[{first}]);"
                    " give that one more weight instead",
                )
        if all(backend.backup for backend in backends):
            raise self.error(key, "every backend is a backup: at least one must not be")
        return backends

    def health_check(self, raw: object, prefix: tuple[str, ...]) -> HealthCheckConfig:
        table = self.check(_dotted(*prefix), _check_table, raw)
        check = HealthCheckConfig(**self.table(table, _HEALTH_CHECKS, prefix))
        if check.timeout > check.interval:
            raise self.error(
                _dotted(*prefix, "timeout"),
                f"must not be longer than interval ({_number_text(check.interval)}),"
                f" got {_number_text(check.timeout)}",
            )
        return check

    def balancing(self, values: dict[str, Any], prefix: tuple[str, ...]) -> None:
        """The keys of several backends that only make sense together."""
        if "hash_key" in values and values.get("load_balance") != "consistent_hash":
            raise self.error(
                _dotted(*prefix, "hash_key"), 'needs load_balance = "consistent_hash"'
            )
        if values.get("health_check_start") == "unhealthy" and "health_check" not in values:
            raise self.error(
                _dotted(*prefix, "health_check_start"),
                '"unhealthy" needs a health_check to bring the backends up',
            )
        if "backends" in values and "execute" in values:
            raise self.error(
                _dotted(*prefix, "execute"),
                "starts the backend of proxy_url; start several backends yourself",
            )

    def server_table(self, body: object, prefix: tuple[str, ...]) -> dict[str, Any]:
        """A ``[server.NAME]`` or ``[defaults]`` table, checked; relative paths made absolute."""
        body = dict(self.check(_dotted(*prefix), _check_table, body))
        hooks = body.pop("webhooks", None)
        rate_limit = body.pop("rate_limit", None)
        cors = body.pop("cors", None)
        backends = body.pop("backends", None)
        health = body.pop("health_check", None)
        values = self.table(body, _SERVER_CHECKS, prefix)
        if hooks is not None:
            values["webhooks"] = self.webhooks(hooks, (*prefix, "webhooks"))
        if rate_limit is not None:
            values["rate_limit"] = self.rate_limit(rate_limit, (*prefix, "rate_limit"))
        if cors is not None:
            values["cors"] = self.cors(cors, (*prefix, "cors"))
        if backends is not None:
            values["backends"] = self.backends(backends, (*prefix, "backends"))
        if health is not None:
            values["health_check"] = self.health_check(health, (*prefix, "health_check"))
        for key in ("cache_directory", "backend_ca"):
            if values.get(key):
                values[key] = os.path.abspath(self.path(values[key]))
        return values

    def server(self, name: str, layers: list[tuple[str, dict[str, Any]]]) -> ServerConfig:
        """One server from its layers, the last one winning key by key."""
        values: dict[str, Any] = {}
        origins: dict[str, str] = {}
        for origin, layer in layers:
            values.update(layer)
            origins.update(dict.fromkeys(layer, origin))

        def key(name_of_key: str) -> str:
            return _dotted("server", name, name_of_key)

        if "backends" in values:
            if "proxy_url" in values:
                raise self.error(key("backends"), "set proxy_url or [[backends]] tables, not both")
            values["proxy_url"] = next(b.url for b in values["backends"] if not b.backup)
        if "proxy_url" not in values:
            raise self.error(
                key("proxy_url"),
                'missing: the backend to forward to, e.g. "http://127.0.0.1:8080"'
                " (or [[backends]] tables)",
            )
        self.balancing(values, ("server", name))
        if "execute" in values:
            values["execute_dir"] = os.path.abspath(self.path(values.get("execute_dir", ".")))
        if values.get("cache_storage_mode") == "filesystem" and not values.get("cache_directory"):
            raise self.error(
                key("cache_directory"), 'required when cache_storage_mode = "filesystem"'
            )
        self.check_guards(name, values)
        server = ServerConfig(name=name, origins=tuple(origins.items()), **values)
        if server.rewrite is not None:
            for entry in server.bind_to:
                try:
                    parse_rewrite(server.rewrite).check(parse_pattern(entry))
                except ValueError as exc:
                    raise self.error(key("rewrite"), str(exc)) from None
        for path in server.pre_generate_paths:
            if not serves(server.bind_to, path):
                raise self.error(
                    key("pre_generate_paths"), f"{path!r} is outside bind_to {list(server.bind_to)}"
                )
        return server


def _share_a_method(one: ServerConfig, other: ServerConfig) -> bool:
    return not one.methods or not other.methods or bool(set(one.methods) & set(other.methods))

def redis_client_installed() -> bool:
    """Whether redis-py (the ``redis`` extra) can be imported."""
    try:
        importlib.import_module("redis.asyncio")
    except ImportError:
        return False
    return True


# --------------------------------------------------------------------------- public API


def config_from_dict(
    data: Mapping[str, Any],
    source: str = "<dict>",
    environ: Mapping[str, str] | None = None,
    base_dir: str = "",
) -> Config:
    """Validate a mapping shaped like the TOML file and build a :class:`Config`.
    ``"$env:NAME"`` values are looked up in ``environ`` (default: ``os.environ``); relative
    paths (``dotenv``, ``execute_dir``) start at ``base_dir`` (default: the current one)."""
    return _Reader(source, environ, base_dir).config(data)


def load_config(path: str | os.PathLike[str], *, microfrontends: str | None = None) -> Config:
    """Read and validate a TOML file. Every problem is a one-line :class:`ConfigError`.
    ``microfrontends`` (``--microfrontends FILE``) sets the root key of that name, relative
    to the current directory."""
    source = os.fspath(path)
    try:
        with open(path, "rb") as file:
            raw = file.read()
    except FileNotFoundError:
        raise ConfigError(source, "<file>", "file not found") from None
    except IsADirectoryError:
        raise ConfigError(source, "<file>", "is a directory, expected a TOML file") from None
    except PermissionError:
        raise ConfigError(source, "<file>", "permission denied") from None
    except OSError as exc:
        raise ConfigError(source, "<file>", exc.strerror or str(exc)) from None
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise ConfigError(source, "<toml>", f"not valid UTF-8 (byte {exc.start})") from None
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(source, "<toml>", str(exc)) from None
    if microfrontends is not None:
        data["microfrontends"] = os.path.abspath(microfrontends)
    return config_from_dict(data, source, base_dir=os.path.dirname(source))


# Root keys a reload cannot change: the sockets are bound, the processes and links started.
RESTART_KEYS: Final = (
    "listen",
    "http_port",
    "https_port",
    "workers",
    "metrics_per_worker",
    "control_port",
    "control_listen",
    "control_auth",
    "redis",
)


def keep_restart_keys(new: Config, running: Config) -> tuple[Config, list[str]]:
    """``new`` (a reloaded config) with the :data:`RESTART_KEYS` of the ``running`` one (what
    is bound stays as bound: a worker's port is the supervisor's reserved one), and the keys
    whose change waits for a restart."""
    changed = [key for key in RESTART_KEYS if getattr(new, key) != getattr(running, key)]
    return replace(new, **{key: getattr(running, key) for key in RESTART_KEYS}), changed


def with_overrides(
    config: Config,
    *,
    host: str | None = None,
    port: int | None = None,
    backend: str | None = None,
    log_level: str | None = None,
    workers: int | None = None,
) -> Config:
    """Apply command-line overrides; problems name the flag (``--port``) as the key."""
    reader = _Reader(config.source)
    changes: dict[str, Any] = {}
    if host is not None:
        changes["listen"] = reader.check("--host", parse_host, host)
    if port is not None:
        changes["http_port"] = reader.check("--port", parse_port, port)
    if log_level is not None:
        changes["log_level"] = reader.check("--log-level", parse_log_level, log_level)
    if workers is not None:
        changes["workers"] = reader.check("--workers", parse_workers, workers)
    if backend is not None:
        url = reader.check("--backend", parse_backend_url, backend)
        if len(config.servers) != 1:
            raise reader.error("--backend", "needs exactly one [server.NAME] table to apply to")
        # One backend replaces them all, as it replaces proxy_url.
        changes["servers"] = (replace(config.servers[0], proxy_url=url, backends=()),)
    return replace(config, **changes) if changes else config


# --------------------------------------------------------------------------- describe

_TOML_ESCAPES: Final = {
    '"': '\\"',
    "\\": "\\\\",
    "\b": "\\b",
    "\t": "\\t",
    "\n": "\\n",
    "\f": "\\f",
    "\r": "\\r",
}


def _toml_string(text: str) -> str:
    out = []
    for ch in text:
        if ch in _TOML_ESCAPES:
            out.append(_TOML_ESCAPES[ch])
        elif ord(ch) < 0x20 or ord(ch) == 0x7F:
            out.append(f"\\u{ord(ch):04x}")
        else:
            out.append(ch)
    return '"' + "".join(out) + '"'


def _size_note(value: int) -> str:
    for unit, size in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if value >= size and value % size == 0:
            return f"  # {value // size} {unit}"
    return ""


# Keys whose value is a table of claim -> value, kept as a tuple of pairs.
_PAIR_TABLES: Final = frozenset({"auth_claims", "forward_claims"})


def _toml_value(key: str, value: object) -> str:
    if key in _PAIR_TABLES and isinstance(value, tuple):
        items = ", ".join(f"{_key_part(name)} = {_toml_value(name, item)}" for name, item in value)
        return "{ " + items + " }" if items else "{}"
    if isinstance(value, (RateLimitConfig, CorsConfig, HealthCheckConfig)):
        items = ", ".join(  # a key not set (None) is left out: TOML has no null
            f"{f.name} = {_toml_value(f.name, getattr(value, f.name))}"
            for f in fields(value)
            if getattr(value, f.name) is not None
        )
        return "{ " + items + " }"
    if isinstance(value, tuple):
        return "[" + ", ".join(_toml_value(key, item) for item in value) + "]"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        text = f"{value:_}" if value >= 100_000 else str(value)
        return text + (_size_note(value) if key.endswith("_bytes") else "")
    if isinstance(value, float):
        return _number_text(value)
    return _toml_string(str(value))


_SECRETS: Final = frozenset({"control_auth", "secret"})


def _describe_field(name: str, value: object, origin: str | None = None) -> str:
    if value is None:
        line = f"# {name} is not set"
    elif name in _SECRETS:
        line = f"# {name} is set (not shown)"
    else:
        line = f"{name} = {_toml_value(name, value)}"
    if origin is None:
        return line
    return f"{line}{';' if '  # ' in line else '  #'} from {origin}"


def _pool_summary(server: ServerConfig) -> str:
    """``round_robin over http://a:1 (weight 2), http://b:1; backup http://c:1``."""

    def listed(backends: list[BackendConfig]) -> str:
        return ", ".join(
            f"{b.url}" + (f" (weight {b.weight})" if b.weight != 1 else "") for b in backends
        )

    primary = [b for b in server.pool if not b.backup]
    backups = [b for b in server.pool if b.backup]
    strategy = server.load_balance
    if strategy == "consistent_hash":
        strategy += f" on {server.hash_key or 'client_ip'}"
    text = f"# {strategy} over {listed(primary)}"
    return text + (f"; backup {listed(backups)}" if backups else "")


def describe(config: Config) -> str:
    """The effective settings as TOML text, defaults filled in; it loads back to ``config``.
    A server's key that was set says where (``# from [defaults]``); the others are phantom's
    defaults."""
    source = " ".join(config.source.splitlines())
    lines = [
        f"# phantom: effective configuration from {source} (defaults filled in; a server's "
        "key set in the file says where it came from)"
    ]
    # [redis], [relay] and [jwt], when set, follow the root keys as tables of their own.
    tables = [name for name in ("redis", "relay", "jwt") if getattr(config, name) is not None]
    for f in fields(Config):
        if f.name not in ("servers", "source", "dotenv_vars", *tables):
            lines.append(_describe_field(f.name, getattr(config, f.name)))
    if config.redis is not None:
        lines.extend(("", "[redis]"))
        for f in fields(RedisConfig):
            value = getattr(config.redis, f.name)
            if f.name == "url" and config.redis.shown_url != value:
                shown = _toml_string(config.redis.shown_url)
                lines.append(f"# url = {shown}  (password not shown)")
            else:
                lines.append(_describe_field(f.name, value))
    if config.relay is not None:
        lines.append("")
        lines.append("[relay]")
        for f in fields(RelayConfig):
            if f.name != "tokens":
                lines.append(_describe_field(f.name, getattr(config.relay, f.name)))
        lines.append("")
        lines.append("[relay.tokens]")
        lines.append(f"# {len(config.relay.tokens)} token(s) set (not shown)")
    jwt = config.jwt
    if jwt is not None:
        lines.extend(["", "[jwt]"])  # its secret is not shown
        lines.extend(_describe_field(f.name, getattr(jwt, f.name)) for f in fields(jwt))
    for server in config.servers:
        origins = dict(server.origins)
        lines.append("")
        lines.append(f"[{_dotted('server', server.name)}]")
        lines.append(_pool_summary(server))
        for f in fields(ServerConfig):
            value = getattr(server, f.name)
            if f.name in ("name", "origins", "backends") or (f.name == "webhooks" and value):
                continue  # webhooks and backends, when there are some, follow as [[...]] tables
            if f.name == "proxy_url" and server.backends:
                continue  # the first of the backends
            lines.append(_describe_field(f.name, value, origins.get(f.name)))
        for table, items in (("webhooks", server.webhooks), ("backends", server.backends)):
            for item in items:
                lines.append("")
                lines.append(
                    f"[[{_dotted('server', server.name, table)}]]  # from {origins[table]}"
                )
                lines.extend(
                    f"{f.name} = {_toml_value(f.name, getattr(item, f.name))}"
                    for f in fields(item)
                )
    return "\n".join(lines) + "\n"
