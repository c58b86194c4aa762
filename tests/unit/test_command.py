"""phantom.command: the execute command line, parsed without a shell. Pure: plain strings."""

from __future__ import annotations

import os

import pytest

from phantom.command import CommandError, Step, change_dir, parse_command, should_run


def test_a_plain_command_is_split_the_posix_way() -> None:
    assert parse_command("python -m http.server 8080 --bind '127.0.0.1' a\\ b \"c d\"") == (
        Step("", argv=("python", "-m", "http.server", "8080", "--bind", "127.0.0.1", "a b", "c d")),
    )


def test_cd_env_prefixes_and_chains() -> None:
    steps = parse_command('cd web && NODE_ENV=production URL="a=b c" npm start || echo failed')
    assert steps == (
        Step("", cd="web"),
        Step("&&", argv=("npm", "start"), env=(("NODE_ENV", "production"), ("URL", "a=b c"))),
        Step("||", argv=("echo", "failed")),
    )


def test_assignments_after_the_program_are_arguments() -> None:
    assert parse_command("make A=1") == (Step("", argv=("make", "A=1")),)


def test_operators_need_no_spaces_and_hash_is_not_a_comment() -> None:
    assert parse_command("cd a&&run http://x/#y||cd b&&run2") == (
        Step("", cd="a"),
        Step("&&", argv=("run", "http://x/#y")),
        Step("||", cd="b"),
        Step("&&", argv=("run2",)),
    )


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("", "a command is missing at the start"),
        ("&& run", "a command is missing at the start"),
        ("build &&", "a command is missing after '&&'"),
        ("build || && run", "a command is missing after '||'"),
        ("A=1", "A=... must be followed by a program to run"),
        ("cd", "cd takes exactly one directory, got 0"),
        ("cd a b && run", "cd takes exactly one directory, got 2"),
        ("A=1 cd web && run", "KEY=VALUE before cd has no effect; put it before the program"),
        ("build && cd dist", "the command must end with a program to run, not cd"),
        ("run 'open", "no closing quotation"),
        ("run a | grep b", "'|': a pipe needs a shell; use sh -c '...' if you want one"),
        ("run > log", "'>': a redirection needs a shell; use sh -c '...' if you want one"),
        ("(run)", "'(': a subshell needs a shell; use sh -c '...' if you want one"),
        ("a; b", "';': not supported; chain with && or ||"),
        ("run &", "'&': not supported; phantom already runs the command in the background"),
    ],
)
def test_what_needs_a_shell_is_refused(text: str, problem: str) -> None:
    with pytest.raises(CommandError) as info:
        parse_command(text)
    assert str(info.value) == problem


@pytest.mark.parametrize(
    ("connector", "last_status", "runs"),
    [("", 1, True), ("&&", 0, True), ("&&", 2, False), ("||", 0, False), ("||", 127, True)],
)
def test_should_run(connector: str, last_status: int, runs: bool) -> None:
    assert should_run(Step(connector, argv=("x",)), last_status) is runs


def test_a_chain_walks_like_sh() -> None:
    """`false && skipped || fallback`: the skipped step keeps the status, so fallback runs."""
    steps = parse_command("false && skipped || fallback && after")
    outcome = {"false": 1, "fallback": 0, "after": 0}
    ran, status = [], 0
    for step in steps:
        if should_run(step, status):
            ran.append(step.argv[0])
            status = outcome[step.argv[0]]
    assert ran == ["false", "fallback", "after"]


def test_change_dir() -> None:
    assert change_dir("/srv/app", "web") == os.path.normpath("/srv/app/web")
    assert change_dir("/srv/app", "../other/./x") == os.path.normpath("/srv/other/x")
    assert change_dir("/srv/app", "/abs") == os.path.normpath("/abs")
    assert change_dir("/srv/app", "~") == os.path.expanduser("~")
