"""Command line: ``phantom serve``, ``phantom check``, ``phantom reload``, ``phantom relay``,
``phantom expose``, the control calls and ``phantom token``.

Also the small runner every long-running command uses: :func:`run` picks the event loop
(asyncio or uvloop) and turns SIGINT/SIGTERM into a graceful stop (first signal) or a forced
one (second signal).

Exit codes: 0 clean exit, 1 runtime failure (e.g. cannot listen) or forced shutdown,
2 configuration or usage error. Every expected failure is one line on stderr,
``phantom: <what>``, never a traceback.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import ssl
import sys
from collections.abc import Callable, Coroutine, Iterator
from typing import TYPE_CHECKING, Any, NoReturn

import click

from phantom._version import __version__
from phantom.config import (
    Config,
    config_from_dict,
    describe,
    host_port,
    load_config,
    parse_backend_url,
    parse_host,
    parse_log_level,
    parse_port,
    with_overrides,
)
from phantom.descriptors import AcceptFailureLog
from phantom.errors import ConfigError, PhantomError
from phantom.throttle import RepeatedWarnings

if TYPE_CHECKING:
    from phantom.proxy import ConfigLoader, Proxy
    from phantom.workers import WorkerSeat

__all__ = ["CLIError", "main", "new_event_loop", "run"]

log = logging.getLogger(__name__)

EXIT_OK = 0
EXIT_RUNTIME = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130

DEFAULT_CONFIG = "phantom.toml"
LOOP_CHOICES = ("auto", "asyncio", "uvloop")
LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
_LOG_LEVELS = {
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "warning": logging.WARNING,
    "error": logging.ERROR,
}

#: What :func:`run` runs: called with the stop event, which is set on the first SIGINT/SIGTERM.
MainFactory = Callable[[asyncio.Event], Coroutine[Any, Any, None]]


class CLIError(Exception):
    """Ends a command with ``phantom: <message>`` on stderr and ``exit_code``."""

    def __init__(self, message: str, exit_code: int = EXIT_RUNTIME) -> None:
        super().__init__(message)
        self.message = message
        self.exit_code = exit_code


# --------------------------------------------------------------------------- runner


def new_event_loop(loop_choice: str = "auto") -> asyncio.AbstractEventLoop:
    """A new loop: ``auto`` = uvloop when importable, else asyncio's default."""
    if loop_choice not in LOOP_CHOICES:
        raise CLIError(
            f"--loop: expected one of {', '.join(LOOP_CHOICES)}, got {loop_choice!r}", EXIT_USAGE
        )
    if loop_choice == "asyncio":
        return asyncio.new_event_loop()
    try:
        import uvloop
    except ImportError:
        if loop_choice == "uvloop":
            raise CLIError(
                "--loop uvloop: uvloop is not installed; use --loop asyncio (or auto)", EXIT_USAGE
            ) from None
        return asyncio.new_event_loop()
    loop: asyncio.AbstractEventLoop = uvloop.new_event_loop()
    return loop


def run(main: MainFactory, loop_choice: str = "auto") -> int:
    """Run ``main(stop)`` to completion on a new loop; return the process exit code.

    The first SIGINT/SIGTERM sets ``stop`` (``main`` shuts down gracefully and returns:
    exit code 0); a second one cancels ``main`` (exit code 1). Exceptions from ``main``
    propagate after the loop is closed.
    """
    loop = new_event_loop(loop_choice)
    loop.set_exception_handler(AcceptFailureLog())
    try:
        return loop.run_until_complete(_supervise(main))
    finally:
        _close_loop(loop)


async def _supervise(main: MainFactory) -> int:
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    task = loop.create_task(main(stop))
    forced = False

    def on_signal(sig: signal.Signals) -> None:
        nonlocal forced
        if not stop.is_set():
            log.info("received %s, shutting down (send it again to force)", sig.name)
            stop.set()
        elif not forced:
            log.warning("received %s again, forcing shutdown", sig.name)
            forced = True
            task.cancel()

    installed = []
    for sig in (signal.SIGINT, signal.SIGTERM):
        try:
            loop.add_signal_handler(sig, on_signal, sig)
        except (NotImplementedError, RuntimeError, ValueError):
            continue  # Windows, or not the main thread: the default behaviour stays
        installed.append(sig)
    try:
        await asyncio.wait({task})
    finally:
        for sig in installed:
            loop.remove_signal_handler(sig)
    if task.cancelled():
        return EXIT_RUNTIME
    task.result()  # re-raises what main raised
    return EXIT_OK


def _close_loop(loop: asyncio.AbstractEventLoop) -> None:
    """What ``asyncio.run`` does on the way out: cancel leftovers, finish generators."""
    try:
        pending = asyncio.all_tasks(loop)
        for task in pending:
            task.cancel()
        if pending:
            loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
        for task in pending:
            if not task.cancelled() and task.exception() is not None:
                loop.call_exception_handler(
                    {
                        "message": "unhandled exception during shutdown",
                        "exception": task.exception(),
                        "task": task,
                    }
                )
        loop.run_until_complete(loop.shutdown_asyncgens())
        loop.run_until_complete(loop.shutdown_default_executor())
    finally:
        loop.close()


async def _until_stopped(coro: Coroutine[Any, Any, None], stop: asyncio.Event) -> None:
    """Run ``coro`` until it returns or ``stop`` is set; in the latter case cancel it."""
    task = asyncio.ensure_future(coro)
    waiter = asyncio.ensure_future(stop.wait())
    try:
        await asyncio.wait({task, waiter}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        waiter.cancel()
        if not task.done():
            task.cancel()
    await asyncio.wait({task})
    if not task.cancelled():
        task.result()


# --------------------------------------------------------------------------- helpers


def _fail(message: str, exit_code: int) -> NoReturn:
    click.echo(f"phantom: {message}", err=True)
    raise SystemExit(exit_code)


def _command_line_value(key: str, parse: Callable[[object], Any], value: object) -> Any:
    """``parse(value)``; its ValueError is a usage error naming the option ``key``."""
    try:
        return parse(value)
    except ValueError as exc:
        raise ConfigError("<command line>", key, str(exc)) from None


def _reason(exc: OSError) -> str:
    """A short reason: "Address already in use" rather than asyncio's long wrapping."""
    if exc.errno is not None and exc.errno > 0:
        with contextlib.suppress(ValueError):
            return os.strerror(exc.errno)
    return exc.strerror or str(exc) or type(exc).__name__


def _setup_logging(level: str) -> None:
    logging.basicConfig(level=_LOG_LEVELS[level], stream=sys.stderr, format=LOG_FORMAT)
    for handler in logging.getLogger().handlers:
        handler.addFilter(RepeatedWarnings())


def _load_microfrontends(config_path: str | None, microfrontends: str) -> Config:
    """``--microfrontends FILE``: the phantom.toml next to FILE (or ``--config``) with its
    ``microfrontends`` key set to FILE; without such a file, FILE alone (caching off)."""
    here = os.path.dirname(os.path.abspath(microfrontends))
    toml = config_path or os.path.join(here, DEFAULT_CONFIG)
    if config_path is None and not os.path.exists(toml):
        return config_from_dict(
            {"microfrontends": os.path.abspath(microfrontends)}, source="<command line>"
        )
    return load_config(toml, microfrontends=microfrontends)


def _load(
    config_path: str | None,
    *,
    host: str | None = None,
    port: int | None = None,
    backend: str | None = None,
    log_level: str | None = None,
    workers: int | None = None,
    microfrontends: str | None = None,
    hint: str = "pass --config PATH or --backend URL, or try --demo",
) -> Config:
    """The configuration a command runs with; ``hint``: what to do without a config file."""
    if microfrontends is not None:
        config = _load_microfrontends(config_path, microfrontends)
    elif config_path is None and backend is not None and not os.path.exists(DEFAULT_CONFIG):
        # `phantom serve --backend URL` alone: the built-in defaults in front of that backend
        # (the override below sets proxy_url, so a bad URL is reported as --backend's).
        config = config_from_dict(
            {"server": {"default": {"proxy_url": "http://127.0.0.1"}}}, source="<command line>"
        )
    else:
        try:
            config = load_config(config_path or DEFAULT_CONFIG)
        except ConfigError as err:
            if config_path is None and err.key == "<file>":
                raise ConfigError(err.source, err.key, f"{err.problem} ({hint})") from None
            raise
    return with_overrides(
        config, host=host, port=port, backend=backend, log_level=log_level, workers=workers
    )


# --------------------------------------------------------------------------- serving


def _on_sighup(proxy: Proxy) -> Callable[[], None]:
    """A SIGHUP handler: ``proxy.reload()`` in a task that logs a failure instead of raising."""
    running: set[asyncio.Future[None]] = set()

    async def reload() -> None:
        try:
            await proxy.reload()
        except PhantomError as err:  # an invalid file, a snapshot that could not be fetched
            log.error("reload failed, keeping the running configuration: %s", err)

    def handler() -> None:
        task = asyncio.ensure_future(reload())
        running.add(task)  # a reference until it is done
        task.add_done_callback(running.discard)

    return handler


@contextlib.contextmanager
def _pid_file(path: str | None) -> Iterator[None]:
    """Write our pid to ``path`` while serving (for ``phantom reload``); remove it after."""
    if path is None:
        yield
        return
    try:
        with open(path, "w", encoding="ascii") as file:
            file.write(f"{os.getpid()}\n")
    except OSError as exc:
        raise CLIError(f"cannot write pid_file {path}: {_reason(exc)}") from None
    try:
        yield
    finally:
        with contextlib.suppress(OSError):
            os.unlink(path)


async def _serve(
    config: Config, stop: asyncio.Event, loader: ConfigLoader, worker: WorkerSeat | None = None
) -> None:
    from phantom.proxy import Proxy

    proxy = Proxy(config, loader=loader, worker=worker)
    try:
        # Interruptible: starting may wait long for an execute command's backend.
        await _until_stopped(proxy.start(), stop)
    except OSError as exc:
        with contextlib.suppress(Exception):
            await proxy.close()
        where = host_port(config.listen, config.http_port)
        raise CLIError(f"cannot listen on {where}: {_reason(exc)}", EXIT_RUNTIME) from None
    except PhantomError as exc:  # e.g. a snapshot that could not be fetched
        raise CLIError(str(exc), EXIT_RUNTIME) from None
    if stop.is_set():  # stopped while starting: what start() began is already undone
        await proxy.close()
        log.info("phantom stopped")
        return
    loop = asyncio.get_running_loop()
    with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
        loop.add_signal_handler(signal.SIGHUP, _on_sighup(proxy))
    try:
        serving = asyncio.ensure_future(proxy.serve_forever())
        waiter = asyncio.ensure_future(stop.wait())
        try:
            await asyncio.wait({serving, waiter}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            waiter.cancel()
        if serving.done():
            # Closed from elsewhere (or failed): re-raise a failure.
            if not serving.cancelled():
                serving.result()
        else:
            # Graceful: the proxy stops accepting and drains, bounded by shutdown_timeout.
            await proxy.close()
            if not serving.done():
                serving.cancel()
            await asyncio.wait({serving})
            if not serving.cancelled() and serving.exception() is not None:
                log.debug("serve_forever failed after close", exc_info=serving.exception())
    except asyncio.CancelledError:
        # Forced (a second signal): what is still open is closed at once, the execute
        # commands stopped, and the runner ends.
        proxy.hurry()
        await proxy.close()
        raise
    except BaseException:
        await proxy.close()
        raise
    finally:
        with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
            loop.remove_signal_handler(signal.SIGHUP)
    await proxy.close()  # idempotent; a no-op after the graceful close above
    log.info("phantom stopped")


def _serve_workers(config: Config, loader: ConfigLoader, loop_choice: str) -> int:
    from phantom.workers import WorkersFailed, supervise

    def worker_main(worker_config: Config, seat: WorkerSeat) -> int:
        try:
            return run(lambda stop: _serve(worker_config, stop, loader, seat), loop_choice)
        except CLIError as err:
            click.echo(f"phantom: {err.message}", err=True)
            return err.exit_code

    try:
        return supervise(config, worker_main, loader)
    except OSError as exc:
        where = host_port(config.listen, config.http_port)
        raise CLIError(f"cannot listen on {where}: {_reason(exc)}") from None
    except (WorkersFailed, PhantomError) as exc:  # PhantomError: an execute command failed
        raise CLIError(str(exc)) from None


def _serve_demo(host: str | None, port: int | None, log_level: str | None, loop: str) -> int:
    option = _command_line_value
    demo_host: str = "127.0.0.1" if host is None else option("--host", parse_host, host)
    demo_port: int | None = None if port is None else option("--port", parse_port, port)
    level: str = "info" if log_level is None else option("--log-level", parse_log_level, log_level)

    async def demo_main(stop: asyncio.Event) -> None:
        from phantom.demo import run_demo

        try:
            await _until_stopped(run_demo(host=demo_host, port=demo_port, log_level=level), stop)
        except OSError as exc:
            if demo_port is None:
                raise CLIError(f"cannot start the demo: {_reason(exc)}") from None
            where = host_port(demo_host, demo_port)
            raise CLIError(f"cannot listen on {where}: {_reason(exc)}") from None

    _setup_logging(level)
    return run(demo_main, loop)


# --------------------------------------------------------------------------- commands

_loop_option = click.option(
    "--loop",
    "loop_choice",
    type=click.Choice(LOOP_CHOICES),
    default="auto",
    show_default=True,
    help="Event loop; auto = uvloop when installed.",
)


def _exit_with(command: Callable[[], int]) -> None:
    """Run a long-running command's body; its expected failures become one line and an exit
    code (2 for configuration and usage, the error's own for the others)."""
    try:
        code = command()
    except ConfigError as err:
        _fail(str(err), EXIT_USAGE)
    except CLIError as err:
        _fail(err.message, err.exit_code)
    except KeyboardInterrupt:
        raise SystemExit(EXIT_INTERRUPTED) from None
    if code != EXIT_OK:
        raise SystemExit(code)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(
    __version__, "--version", "-V", prog_name="phantom", message="%(prog)s %(version)s"
)
def main() -> None:
    """phantom: a caching reverse proxy that also tunnels HTTP/1.1 upgrades (WebSocket)."""


_CONFIG_OPTION = click.option(
    "--config",
    "config_path",
    metavar="PATH",
    help=f"Configuration file (default: ./{DEFAULT_CONFIG}).",
)
_MICROFRONTENDS_OPTION = click.option(
    "--microfrontends",
    metavar="FILE",
    help="Turborepo's microfrontends.json: one server per application "
    f"(with the {DEFAULT_CONFIG} next to it, if any).",
)


@main.command()
@_CONFIG_OPTION
@click.option("--host", metavar="HOST", help="Listen on this address instead of `listen`.")
@click.option("--port", type=int, metavar="N", help="Listen on this port instead of `http_port`.")
@click.option("--backend", metavar="URL", help="Forward to this URL instead of `proxy_url`.")
@click.option("--log-level", metavar="LEVEL", help="debug, info, warning or error.")
@click.option(
    "--workers", type=int, metavar="N", help="Worker processes sharing the port (`workers`)."
)
@_loop_option
@click.option(
    "--demo",
    is_flag=True,
    help="Run the built-in demo (an origin with phantom in front); reads no config file.",
)
@_MICROFRONTENDS_OPTION
def serve(
    config_path: str | None,
    host: str | None,
    port: int | None,
    backend: str | None,
    log_level: str | None,
    workers: int | None,
    loop_choice: str,
    demo: bool,
    microfrontends: str | None,
) -> None:
    """Run the proxy until SIGINT/SIGTERM (a second signal forces the exit)."""

    def serving() -> int:
        if demo:
            if config_path is not None or backend is not None or microfrontends is not None:
                _fail(
                    "--demo reads no config file and runs its own backend; "
                    "drop --config, --backend and --microfrontends",
                    EXIT_USAGE,
                )
            code = _serve_demo(host, port, log_level, loop_choice)
        else:
            def loader() -> Config:
                return _load(
                    config_path,
                    host=host,
                    port=port,
                    backend=backend,
                    log_level=log_level,
                    workers=workers,
                    microfrontends=microfrontends,
                )

            config = loader()
            if not config.servers:
                raise ConfigError(
                    config.source,
                    "server",
                    "at least one [server.NAME] table is required "
                    "(this file configures a relay: run `phantom relay`)",
                )
            _setup_logging(config.log_level)
            with _pid_file(config.pid_file):
                if config.workers > 1:
                    code = _serve_workers(config, loader, loop_choice)
                else:
                    code = run(lambda stop: _serve(config, stop, loader), loop_choice)
        return code

    _exit_with(serving)


# --------------------------------------------------------------------------- relay


async def _relay(config: Config, stop: asyncio.Event) -> None:
    from phantom.agents.front import RelayServer

    server = RelayServer(config)
    try:
        await server.start()
    except OSError as exc:
        await server.close()
        where = host_port(config.listen, config.http_port)
        raise CLIError(f"cannot listen on {where}: {_reason(exc)}", EXIT_RUNTIME) from None
    try:
        await stop.wait()
        await server.close()  # graceful: public requests drain as in `phantom serve`
    except asyncio.CancelledError:
        server.proxy.hurry()  # a second signal: what is left is closed at once
        await server.close()
        raise
    log.info("relay stopped")


@main.command()
@click.option(
    "--config",
    "config_path",
    default=DEFAULT_CONFIG,
    show_default=True,
    metavar="PATH",
    help="Configuration file with a [relay] table.",
)
@_loop_option
def relay(config_path: str, loop_choice: str) -> None:
    """Run a public relay that `phantom expose` agents register with (see docs/relay.md)."""

    def relaying() -> int:
        config = load_config(config_path)
        if config.relay is None:
            raise ConfigError(
                config.source, "relay", "missing: `phantom relay` needs a [relay] table"
            )
        if config.workers > 1:
            # An agent registers with one process; the others could not reach it.
            raise ConfigError(config.source, "workers", "phantom relay runs in one process")
        _setup_logging(config.log_level)
        return run(lambda stop: _relay(config, stop), loop_choice)

    _exit_with(relaying)


@main.command()
@click.argument("port", type=click.IntRange(1, 65535))
@click.option(
    "--relay",
    "relay_url",
    required=True,
    metavar="URL",
    help="The relay, e.g. https://relay.example.com.",
)
@click.option("--name", required=True, metavar="NAME", help="The name to claim: NAME.relay_domain.")
@click.option(
    "--token",
    required=True,
    envvar="PHANTOM_RELAY_TOKEN",
    metavar="TOKEN",
    help="The agent token (default: $PHANTOM_RELAY_TOKEN, which keeps it out of `ps`).",
)
@click.option(
    "--relay-ca", metavar="PATH", help="Also trust this CA (PEM) for the relay's certificate."
)
@click.option(
    "--cache",
    is_flag=True,
    help="Let the relay cache the app's answers (as their Cache-Control allows).",
)
@click.option(
    "--warm",
    type=click.IntRange(0, 16),
    default=2,
    show_default=True,
    metavar="N",
    help="Data connections kept open ahead of public connections.",
)
@click.option(
    "--host",
    "app_host",
    default="127.0.0.1",
    show_default=True,
    metavar="HOST",
    help="The local app's address.",
)
@click.option(
    "--log-level",
    default="info",
    show_default=True,
    metavar="LEVEL",
    help="debug, info, warning or error.",
)
@_loop_option
def expose(
    port: int,
    relay_url: str,
    name: str,
    token: str,
    relay_ca: str | None,
    cache: bool,
    warm: int,
    app_host: str,
    log_level: str,
    loop_choice: str,
) -> None:
    """Make the app on local PORT reachable through a relay, until Ctrl-C."""
    from phantom.agents.agent import Agent, AgentOptions, Refusal, relay_tls

    def options() -> AgentOptions:
        url = _command_line_value("--relay", parse_backend_url, relay_url)
        if url.base_path:
            raise ConfigError(
                "<command line>", "--relay", "expected no path, just scheme://host[:port]"
            )
        try:
            tls = relay_tls(relay_ca) if url.scheme == "https" else None
        except (OSError, ssl.SSLError) as exc:
            raise ConfigError("<command line>", "--relay-ca", f"{relay_ca}: {exc}") from None
        return AgentOptions(
            relay=url,
            name=name,
            token=token,
            port=port,
            host=_command_line_value("--host", parse_host, app_host),
            warm=warm,
            cache=cache,
            tls=tls,
        )

    def exposing() -> int:
        agent_options = options()
        app = f"http://{host_port(agent_options.host, port)}"
        registrations = 0

        def ready(public_url: str) -> None:
            nonlocal registrations
            if not registrations:  # stdout says it once; the log says every registration
                click.echo(f"{public_url} -> {app}")
            registrations += 1
            log.info("registered as %s", public_url)

        agent = Agent(agent_options, ready)
        _setup_logging(_command_line_value("--log-level", parse_log_level, log_level))
        return run(lambda stop: agent_main(agent, stop), loop_choice)

    async def agent_main(agent: Agent, stop: asyncio.Event) -> None:
        try:
            await _until_stopped(agent.run(), stop)
        except Refusal as exc:
            raise CLIError(f"{exc.reason} ({exc.status})") from None
        finally:
            agent.close()

    _exit_with(exposing)


def _config_file_option(help_text: str) -> Callable[[Callable[..., None]], Callable[..., None]]:
    """``--config PATH`` (default ./phantom.toml) for commands that read the file."""
    return click.option(
        "--config",
        "config_path",
        default=DEFAULT_CONFIG,
        show_default=True,
        metavar="PATH",
        help=help_text,
    )


@main.command()
@_config_file_option("Configuration file.")
def check(config_path: str) -> None:
    """Validate the configuration and print the effective settings (defaults filled in).

    TLS files are read as ``serve`` would read them; risky choices are warned about on stderr
    (``phantom: warning: ...``) without failing the check.
    """
    from phantom.checks import risky_settings
    from phantom.tls import backend_context, listener_context

    try:
        config = load_config(config_path)
        listener_context(config)
        for server in config.servers:
            backend_context(server, config.source)
    except ConfigError as err:
        _fail(str(err), EXIT_USAGE)
    click.echo(describe(config), nl=False)
    for warning in risky_settings(config):
        click.echo(f"phantom: warning: {warning}", err=True)


@main.command()
@_CONFIG_OPTION
@_MICROFRONTENDS_OPTION
@click.option("--host", "host", metavar="HOST", help="The Host the PATHs are requested with.")
@click.option(
    "--method", default="GET", show_default=True, metavar="METHOD", help="Their method."
)
@click.argument("paths", nargs=-1, metavar="[PATH]...")
def routes(
    config_path: str | None,
    microfrontends: str | None,
    host: str | None,
    method: str,
    paths: tuple[str, ...],
) -> None:
    """Print the routing table and, for each PATH, the server, backend and target it gets."""
    from phantom.routetable import explain, routing_table
    from phantom.routing import Router

    try:
        config = _load(
            config_path,
            microfrontends=microfrontends,
            hint="pass --config PATH or --microfrontends FILE",
        )
    except ConfigError as err:
        _fail(str(err), EXIT_USAGE)
    click.echo(routing_table(config), nl=False)
    if paths:
        click.echo("")
        router = Router(config.servers)
        for path in paths:
            click.echo(explain(router, path, host=host, method=method.upper()))


# --------------------------------------------------------------------------- control calls


def _control_options(command: Callable[..., None]) -> Callable[..., None]:
    for option in reversed(
        [
            click.option(
                "--config",
                "config_path",
                metavar="PATH",
                help=f"Read control_port/control_auth here (default: ./{DEFAULT_CONFIG}).",
            ),
            click.option(
                "--control", metavar="URL", help="Control API URL, e.g. http://127.0.0.1:17809."
            ),
            click.option("--token", metavar="TOKEN", help="Bearer token (default: control_auth)."),
            click.option("--server", metavar="NAME", help="Only this [server.NAME]."),
        ]
    ):
        command = option(command)
    return command


def _call_control(
    config_path: str | None,
    control: str | None,
    token: str | None,
    path: str,
    body: dict[str, Any] | None,
) -> Any:
    from phantom.control_client import ControlCallError, call, control_url

    try:
        if control is None:
            config = _load(config_path)
            control = control_url(config)
            token = token or config.control_auth
        elif token is None and config_path is not None:
            token = _load(config_path).control_auth
        return call(control, path, body, token)
    except ConfigError as err:
        _fail(str(err), EXIT_USAGE)
    except ControlCallError as err:
        _fail(str(err), EXIT_RUNTIME)


@main.command()
@click.argument("pattern")
@_control_options
def invalidate(
    pattern: str,
    config_path: str | None,
    control: str | None,
    token: str | None,
    server: str | None,
) -> None:
    """Remove cached responses whose key (METHOD:/path?query) matches PATTERN (* wildcards)."""
    body: dict[str, Any] = {"pattern": pattern}
    if server:
        body["server"] = server
    answer = _call_control(config_path, control, token, "/invalidate", body)
    click.echo(f"invalidated {answer['invalidated']} entries")


@main.command()
@click.argument("action", type=click.Choice(["add", "refresh", "remove"]))
@click.argument("paths", nargs=-1, required=True)
@_control_options
def snapshot(
    action: str,
    paths: tuple[str, ...],
    config_path: str | None,
    control: str | None,
    token: str | None,
    server: str | None,
) -> None:
    """Add, refresh or remove pre-generated snapshots of PATHS on a running phantom."""
    body: dict[str, Any] = {"paths": list(paths)}
    if server:
        body["server"] = server
    answer = _call_control(config_path, control, token, f"/bulk_{action}_snapshot", body)
    for item in answer["results"]:
        if item["ok"]:
            size = f" ({item['bytes']} bytes)" if "bytes" in item else ""
            click.echo(f"{action} {item['path']}: ok{size}")
        else:
            click.echo(f"{action} {item['path']}: failed: {item['error']}", err=True)
    if answer["failed"]:
        raise SystemExit(EXIT_RUNTIME)


def _columns(rows: list[list[str]]) -> list[str]:
    """Rows as lines of left-aligned columns (the last one unpadded)."""
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    widths[-1] = 0
    return ["  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)) for row in rows]


@main.command()
@click.argument("action", type=click.Choice(["list", "drain", "enable"]), default="list")
@click.argument("url", required=False)
@_control_options
def backends(
    action: str,
    url: str | None,
    config_path: str | None,
    control: str | None,
    token: str | None,
    server: str | None,
) -> None:
    """List the backends of a running phantom, or drain or enable the one at URL."""
    if action == "list":
        if url is not None:
            _fail(f"backends list takes no URL (got {url!r})", EXIT_USAGE)
        answer = _call_control(config_path, control, token, "/backends", None)
        rows = [
            [
                name,
                item["url"],
                str(item["weight"]) + (" backup" if item["backup"] else ""),
                item["state"],
                str(item["inflight"]),
                str(item["tunnels_open"]),
                item["last_error"] or "-",
            ]
            for name, listed in answer["servers"].items()
            if server is None or name == server
            for item in listed["backends"]
        ]
        header = ["SERVER", "BACKEND", "WEIGHT", "STATE", "INFLIGHT", "TUNNELS", "LAST ERROR"]
        for line in _columns([header, *rows]):
            click.echo(line)
        return
    if url is None:
        _fail(f"backends {action} needs the backend's URL", EXIT_USAGE)
    body: dict[str, Any] = {"url": url}
    if server:
        body["server"] = server
    answer = _call_control(config_path, control, token, f"/backends/{action}", body)
    for item in answer["drained" if action == "drain" else "enabled"]:
        click.echo(
            f"{item['url']} (server {item['server']}): {item['state']}, "
            f"{item['inflight']} requests and {item['tunnels_open']} tunnels open"
        )


@main.command()
@_config_file_option("Configuration file whose pid_file names the running phantom.")
@click.option("--pid", type=int, metavar="PID", help="Signal this process instead.")
def reload(config_path: str, pid: int | None) -> None:
    """Make a running phantom re-read its configuration (sends it SIGHUP)."""
    if pid is None:
        try:
            config = load_config(config_path)
        except ConfigError as err:
            _fail(str(err), EXIT_USAGE)
        if config.pid_file is None:
            _fail(f"{config_path}: pid_file: not set; set it, or pass --pid", EXIT_USAGE)
        try:
            with open(config.pid_file, encoding="ascii") as file:
                pid = int(file.read().strip())
        except (OSError, ValueError) as exc:
            _fail(f"cannot read pid_file {config.pid_file}: {exc}", EXIT_RUNTIME)
    try:
        os.kill(pid, signal.SIGHUP)
    except OSError as exc:
        _fail(f"cannot signal process {pid}: {_reason(exc)}", EXIT_RUNTIME)
    click.echo(f"phantom: sent SIGHUP to {pid}")


# --------------------------------------------------------------------------- tokens

_DURATION_UNITS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}


def _duration(text: str) -> int:
    """``90``, ``30s``, ``15m``, ``1h``, ``7d`` -> seconds."""
    number, unit = text.rstrip("smhd"), text[len(text.rstrip("smhd")) :]
    if not number.isdigit() or unit not in _DURATION_UNITS or int(number) == 0:
        _fail(f"--ttl: expected a duration such as 3600, 30m, 1h or 7d, got {text!r}", EXIT_USAGE)
    return int(number) * _DURATION_UNITS[unit]


def _claim(text: str) -> tuple[str, Any]:
    """``NAME=VALUE``: VALUE as JSON when it is (``3``, ``true``, ``["a","b"]``), else text."""
    import json

    name, equals, value = text.partition("=")
    if not equals or not name:
        _fail(f"--claim: expected NAME=VALUE, got {text!r}", EXIT_USAGE)
    try:
        return name, json.loads(value)
    except ValueError:
        return name, value


@main.command()
@click.option(
    "--secret",
    metavar="SECRET",
    help='HMAC secret, or "$env:NAME" (default: [jwt] secret of --config).',
)
@_config_file_option("Configuration file whose [jwt] gives the secret, issuer and audience.")
@click.option("--sub", metavar="SUBJECT", help="The sub claim.")
@click.option(
    "--ttl", default="1h", show_default=True, metavar="DURATION", help="Lifetime: 90, 30m, 1h, 7d."
)
@click.option(
    "--claim",
    "claims",
    multiple=True,
    metavar="NAME=VALUE",
    help="Another claim (VALUE read as JSON when it is); repeatable.",
)
@click.option("--issuer", metavar="ISS", help="The iss claim (default: [jwt] issuer).")
@click.option("--audience", metavar="AUD", help="The aud claim (default: [jwt] audience).")
@click.option(
    "--algorithm",
    type=click.Choice(["HS256", "HS384", "HS512"]),
    default="HS256",
    show_default=True,
    help="Signature algorithm.",
)
def token(
    secret: str | None,
    config_path: str,
    sub: str | None,
    ttl: str,
    claims: tuple[str, ...],
    issuer: str | None,
    audience: str | None,
    algorithm: str,
) -> None:
    """Print a signed JWT (HS256 by default), for trying auth_required out and for tests."""
    import time

    from phantom.jwtkeys import HMAC_MIN_BYTES

    try:
        import jwt
    except ImportError:
        _fail("token: needs PyJWT: pip install 'phantom-proxy[jwt]'", EXIT_USAGE)
    if secret is None:
        try:
            config = load_config(config_path)
        except ConfigError as err:
            _fail(f"{err} (or pass --secret)", EXIT_USAGE)
        if config.jwt is None or config.jwt.secret is None:
            _fail(f"{config.source}: jwt.secret: not set; set it, or pass --secret", EXIT_USAGE)
        secret = config.jwt.secret
        issuer = issuer or config.jwt.issuer
        audience = audience or (config.jwt.audience[0] if config.jwt.audience else None)
    elif secret.startswith("$env:"):
        name = secret[len("$env:") :]
        if name not in os.environ:
            _fail(f"--secret: environment variable {name} is not set", EXIT_USAGE)
        secret = os.environ[name]
    needed = HMAC_MIN_BYTES[algorithm]
    if len(secret.encode()) < needed:
        _fail(f"--secret: must be at least {needed} bytes for {algorithm}", EXIT_USAGE)
    now = int(time.time())
    payload: dict[str, Any] = {"iat": now, "exp": now + _duration(ttl)}
    for name, value in (("sub", sub), ("iss", issuer), ("aud", audience)):
        if value is not None:
            payload[name] = value
    payload.update(_claim(text) for text in claims)
    click.echo(jwt.encode(payload, secret, algorithm=algorithm))
