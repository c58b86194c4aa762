"""``python -m phantom`` as a real subprocess: --version, check, one-line config errors, the runner.

Nothing here binds a socket: `serve` is only run on configurations that fail before listening
(the serve tests that accept traffic live with the proxy's tests). The runner tests drive
``phantom.cli.run`` in a child process and signal it.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from phantom._version import __version__
from phantom.config import load_config

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib  # type: ignore[import-not-found, unused-ignore]

REPO = Path(__file__).resolve().parents[2]
SHIPPED = REPO / "phantom.toml"
CHILD_TIMEOUT = 30.0

GOOD = '[server.app]\nproxy_url = "http://127.0.0.1:8080"\n'


def child_env(*front: Path) -> dict[str, str]:
    env = dict(os.environ)
    paths = [str(p) for p in (*front, REPO)]
    if env.get("PYTHONPATH"):
        paths.append(env["PYTHONPATH"])
    env["PYTHONPATH"] = os.pathsep.join(paths)
    env.pop("PYTHONWARNINGS", None)
    return env


def phantom(
    *args: str, cwd: Path, path_front: tuple[Path, ...] = ()
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "phantom", *args],
        cwd=cwd,
        env=child_env(*path_front),
        capture_output=True,
        text=True,
        timeout=CHILD_TIMEOUT,
        check=False,
    )


def assert_one_line_error(result: subprocess.CompletedProcess[str], line: str) -> None:
    assert "Traceback" not in result.stderr
    assert result.stderr == f"phantom: {line}\n"
    assert result.stdout == ""
    assert result.returncode == 2


@pytest.fixture
def no_uvloop(tmp_path: Path) -> Path:
    """A directory that, put first on PYTHONPATH, makes ``import uvloop`` fail."""
    blocker = tmp_path / "no_uvloop"
    blocker.mkdir()
    (blocker / "uvloop.py").write_text('raise ImportError("uvloop blocked by the test")\n')
    return blocker


# -- version and help -------------------------------------------------------------------------


def test_version(tmp_path: Path) -> None:
    result = phantom("--version", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout == f"phantom {__version__}\n"


def test_help_lists_commands(tmp_path: Path) -> None:
    result = phantom("--help", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "serve" in result.stdout
    assert "check" in result.stdout


# -- check ------------------------------------------------------------------------------------


def test_check_shipped_config_from_repo_root() -> None:
    result = phantom("check", cwd=REPO)
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    out = result.stdout
    assert "[server.default]\n" in out
    assert 'proxy_url = "http://127.0.0.1:8080"  # from [server.default]\n' in out
    assert "http_port = 3000\n" in out
    assert 'listen = "127.0.0.1"\n' in out
    assert "enable_websocket = true  # from [server.default]\n" in out


def test_check_output_is_the_effective_config(tmp_path: Path) -> None:
    result = phantom("check", "--config", str(SHIPPED), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    from phantom.config import config_from_dict

    shipped = load_config(SHIPPED)
    assert config_from_dict(tomllib.loads(result.stdout), shipped.source) == shipped


def test_check_fills_in_defaults(tmp_path: Path) -> None:
    (tmp_path / "phantom.toml").write_text(GOOD)
    result = phantom("check", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "backend_timeout = 60\n" in result.stdout
    assert "cache_ttl = 60\n" in result.stdout
    assert "cache_max_entries = 10000\n" in result.stdout


# -- one-line configuration errors, for check and serve ---------------------------------------

BAD_CONFIGS = {
    "unknown-key": (
        GOOD + "cache_tl = 5\n",
        "server.app.cache_tl: unknown key",
    ),
    "unknown-root-key": (
        "htp_port = 3000\n" + GOOD,
        "htp_port: unknown key",
    ),
    "wrong-type": (
        'http_port = "3000"\n' + GOOD,
        "http_port: expected an integer, got string",
    ),
    "wrong-type-in-server": (
        GOOD + 'cache_ttl = "60"\n',
        "server.app.cache_ttl: expected a number, got string",
    ),
    "bad-url": (
        '[server.app]\nproxy_url = "localhost:8080"\n',
        "server.app.proxy_url: expected http[s]://host[:port][/path], got 'localhost:8080'",
    ),
    "missing-cert": (
        'https_port = 0\ncert_path = "no-such-cert.pem"\nkey_path = "k.pem"\n' + GOOD,
        "cert_path: <dir>/no-such-cert.pem: file not found",
    ),
    "missing-backend-ca": (
        '[server.app]\nproxy_url = "https://127.0.0.1:1"\nbackend_ca = "no-such-ca.pem"\n',
        "server.app.backend_ca: <dir>/no-such-ca.pem: file not found",
    ),
    "port-range": (
        "http_port = 65536\n" + GOOD,
        "http_port: must be between 0 and 65535, got 65536",
    ),
    "negative-timeout": (
        "backend_timeout = -1\n" + GOOD,
        "backend_timeout: must be greater than 0, got -1",
    ),
    "no-server": (
        "http_port = 3000\n",
        "server: at least one [server.NAME] table is required",
    ),
    "two-servers-on-one-mount": (
        GOOD + '[server.other]\nproxy_url = "http://127.0.0.1:8081"\n',
        "server.other.bind_to: '*' is already bound by server.app",
    ),
}


@pytest.mark.parametrize("command", ["check", "serve"])
@pytest.mark.parametrize("case", sorted(BAD_CONFIGS))
def test_bad_config(tmp_path: Path, command: str, case: str) -> None:
    text, problem = BAD_CONFIGS[case]
    problem = problem.replace("<dir>", str(tmp_path.resolve()))  # file keys are made absolute
    (tmp_path / "bad.toml").write_text(text)
    result = phantom(command, "--config", "bad.toml", cwd=tmp_path)
    assert_one_line_error(result, f"bad.toml: {problem}")


@pytest.mark.parametrize("command", ["check", "serve"])
def test_toml_syntax_error(tmp_path: Path, command: str) -> None:
    (tmp_path / "bad.toml").write_text('[server.app]\nproxy_url = "http://x\n')
    result = phantom(command, "--config", "bad.toml", cwd=tmp_path)
    assert "Traceback" not in result.stderr
    assert result.returncode == 2
    assert result.stdout == ""
    assert result.stderr.startswith("phantom: bad.toml: <toml>: ")
    assert "line 2" in result.stderr
    assert result.stderr.count("\n") == 1


@pytest.mark.parametrize("command", ["check", "serve"])
def test_missing_file(tmp_path: Path, command: str) -> None:
    result = phantom(command, "--config", "nope.toml", cwd=tmp_path)
    assert_one_line_error(result, "nope.toml: <file>: file not found")


def test_check_missing_default_file(tmp_path: Path) -> None:
    result = phantom("check", cwd=tmp_path)
    assert_one_line_error(result, "phantom.toml: <file>: file not found")


def test_serve_missing_default_file_hints(tmp_path: Path) -> None:
    result = phantom("serve", cwd=tmp_path)
    assert_one_line_error(
        result,
        "phantom.toml: <file>: file not found (pass --config PATH or --backend URL, or try --demo)",
    )


@pytest.mark.parametrize(
    ("args", "problem"),
    [
        (["--port", "70000"], "--port: must be between 0 and 65535, got 70000"),
        (
            ["--backend", "ftp://x"],
            "--backend: expected http[s]://host[:port][/path], got 'ftp://x'",
        ),
        (["--host", "a b"], "--host: expected an IP address or host name, got 'a b'"),
        (
            ["--log-level", "loud"],
            "--log-level: expected one of debug, info, warning, error, got 'loud'",
        ),
    ],
)
def test_serve_bad_override(tmp_path: Path, args: list[str], problem: str) -> None:
    (tmp_path / "good.toml").write_text(GOOD)
    result = phantom("serve", "--config", "good.toml", *args, cwd=tmp_path)
    assert_one_line_error(result, f"good.toml: {problem}")


def test_serve_uvloop_missing(tmp_path: Path, no_uvloop: Path) -> None:
    (tmp_path / "good.toml").write_text(GOOD)
    result = phantom(
        "serve", "--config", "good.toml", "--loop", "uvloop", cwd=tmp_path, path_front=(no_uvloop,)
    )
    assert_one_line_error(
        result, "--loop uvloop: uvloop is not installed; use --loop asyncio (or auto)"
    )


def test_demo_rejects_config_and_backend(tmp_path: Path) -> None:
    result = phantom("serve", "--demo", "--backend", "http://127.0.0.1:1", cwd=tmp_path)
    assert_one_line_error(
        result,
        "--demo reads no config file and runs its own backend; "
        "drop --config, --backend and --microfrontends",
    )


def test_demo_bad_option(tmp_path: Path) -> None:
    result = phantom("serve", "--demo", "--port", "99999", cwd=tmp_path)
    assert_one_line_error(result, "<command line>: --port: must be between 0 and 65535, got 99999")


# -- the runner: loop choice and signals ------------------------------------------------------

RUNNER_SCRIPT = textwrap.dedent(
    """
    import asyncio
    import sys

    from phantom.cli import run

    loop_choice, behaviour = sys.argv[1], sys.argv[2]

    async def main(stop: asyncio.Event) -> None:
        print(type(asyncio.get_running_loop()).__module__.split(".")[0], flush=True)
        print("ready", flush=True)
        if behaviour == "return":
            return
        if behaviour == "raise":
            raise RuntimeError("boom")
        await stop.wait()
        print("stopping", flush=True)
        if behaviour == "stubborn":
            await asyncio.sleep(3600)
        print("stopped", flush=True)

    sys.exit(run(main, loop_choice))
    """
)

posix_only = pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")


def start_runner(
    loop_choice: str, behaviour: str, path_front: tuple[Path, ...] = ()
) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-c", RUNNER_SCRIPT, loop_choice, behaviour],
        env=child_env(*path_front),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def finish(proc: subprocess.Popen[str]) -> tuple[int, str, str]:
    try:
        out, err = proc.communicate(timeout=CHILD_TIMEOUT)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    return proc.returncode, out, err


@pytest.mark.parametrize(
    ("loop_choice", "expected"), [("asyncio", "asyncio"), ("uvloop", "uvloop"), ("auto", "uvloop")]
)
def test_runner_loop_choice(loop_choice: str, expected: str) -> None:
    pytest.importorskip("uvloop")
    code, out, err = finish(start_runner(loop_choice, "return"))
    assert (code, out) == (0, f"{expected}\nready\n"), err


def test_runner_auto_falls_back_to_asyncio(no_uvloop: Path) -> None:
    code, out, err = finish(start_runner("auto", "return", (no_uvloop,)))
    assert (code, out) == (0, "asyncio\nready\n"), err


def test_runner_propagates_errors() -> None:
    code, out, err = finish(start_runner("asyncio", "raise"))
    assert code == 1
    assert "RuntimeError: boom" in err


@posix_only
@pytest.mark.parametrize("loop_choice", ["asyncio", "auto"])
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_runner_first_signal_stops_gracefully(loop_choice: str, sig: signal.Signals) -> None:
    proc = start_runner(loop_choice, "graceful")
    assert proc.stdout is not None
    proc.stdout.readline()  # loop name
    assert proc.stdout.readline() == "ready\n"
    proc.send_signal(sig)
    code, out, err = finish(proc)
    assert (code, out) == (0, "stopping\nstopped\n"), err
    assert "Traceback" not in err


@posix_only
@pytest.mark.parametrize("loop_choice", ["asyncio", "auto"])
def test_runner_second_signal_forces(loop_choice: str) -> None:
    proc = start_runner(loop_choice, "stubborn")
    assert proc.stdout is not None
    proc.stdout.readline()
    assert proc.stdout.readline() == "ready\n"
    proc.send_signal(signal.SIGINT)
    assert proc.stdout.readline() == "stopping\n"
    proc.send_signal(signal.SIGINT)
    code, out, err = finish(proc)
    assert (code, out) == (1, ""), err
    assert "forcing shutdown" in err
    assert "Traceback" not in err


@pytest.mark.parametrize("command", ["check", "serve"])
def test_control_auth_from_an_unset_variable_fails_loudly(tmp_path: Path, command: str) -> None:
    config = tmp_path / "env.toml"
    config.write_text('control_port = 0\ncontrol_auth = "$env:PHANTOM_TEST_NEVER_SET"\n' + GOOD)
    result = phantom(command, "--config", "env.toml", cwd=tmp_path)
    assert_one_line_error(
        result, "env.toml: control_auth: environment variable PHANTOM_TEST_NEVER_SET is not set"
    )


def test_check_warns_about_risky_settings_without_failing(tmp_path: Path) -> None:
    (tmp_path / "phantom.toml").write_text(
        'control_port = 9000\ncontrol_listen = "0.0.0.0"\n'
        '[server.app]\nproxy_url = "https://app.internal"\nbackend_tls_verify = false\n'
    )
    result = phantom("check", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "backend_tls_verify = false" in result.stdout
    lines = result.stderr.splitlines()
    assert [line.split(":", 3)[2].strip() for line in lines] == [
        "control_listen",
        "server.app.backend_tls_verify",
    ]
    assert all(line.startswith("phantom: warning: ") for line in lines)
