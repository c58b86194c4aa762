"""The ``execute`` command line of a server: parsed without a shell.

Pure module: no processes, no I/O. ``phantom.launcher`` runs what :func:`parse_command` returns.

What a command line may hold (the subset of sh that starting a dev server needs)::

    cd web && NODE_ENV=production PORT=8080 npm run start || echo "failed"

- words split the POSIX way (``shlex``): quotes and backslashes work as in sh;
- ``&&`` runs the next segment only when the last one that ran succeeded (exit code 0),
  ``||`` only when it failed; a skipped segment keeps the last exit code (``a && b || c``
  runs ``c`` when ``a`` or ``b`` fails), as in sh;
- ``cd DIR`` changes the working directory of the segments after it (relative to the one
  before; ``~`` is the home directory);
- ``KEY=VALUE`` words before the program set environment variables for that segment only.

Nothing else of the shell: no ``$VAR`` expansion, globbing, pipes, redirections, ``;`` or
``&``. Those are refused rather than passed on as literal words; wrap the command in
``sh -c '...'`` when a shell is really wanted.
"""

from __future__ import annotations

import os
import re
import shlex
from dataclasses import dataclass
from typing import Final

__all__ = ["CommandError", "Step", "change_dir", "parse_command", "should_run"]

AND: Final = "&&"
OR: Final = "||"
_ASSIGNMENT: Final = re.compile(r"([A-Za-z_][A-Za-z0-9_]*)=(.*)", re.DOTALL)
_NEEDS_SHELL: Final = "needs a shell; use sh -c '...' if you want one"
_SHELL_ONLY: Final = {  # by the operator's first character: why phantom refuses it
    ";": "not supported; chain with && or ||",
    "&": "not supported; phantom already runs the command in the background",
    "|": f"a pipe {_NEEDS_SHELL}",
    "<": f"a redirection {_NEEDS_SHELL}",
    ">": f"a redirection {_NEEDS_SHELL}",
    "(": f"a subshell {_NEEDS_SHELL}",
    ")": f"a subshell {_NEEDS_SHELL}",
}


class CommandError(ValueError):
    """The command line cannot be run without a shell; ``str()`` is the problem."""


@dataclass(frozen=True, slots=True)
class Step:
    """One segment of the chain: a program to run, or a ``cd``."""

    connector: str  # "" for the first segment, else "&&" or "||" (what precedes it)
    argv: tuple[str, ...] = ()  # the program and its arguments; () for a cd
    env: tuple[tuple[str, str], ...] = ()  # KEY=VALUE prefixes, in order
    cd: str | None = None  # the directory of a "cd DIR" segment


def should_run(step: Step, last_status: int) -> bool:
    """Whether ``step`` runs after a chain whose last run segment exited with ``last_status``."""
    if step.connector == AND:
        return last_status == 0
    if step.connector == OR:
        return last_status != 0
    return True


def change_dir(cwd: str, target: str) -> str:
    """Where ``cd target`` leads from ``cwd`` (the path only; whether it exists is not known)."""
    return os.path.normpath(os.path.join(cwd, os.path.expanduser(target)))


def _tokens(text: str) -> list[str]:
    lexer = shlex.shlex(text, posix=True, punctuation_chars=True)
    lexer.whitespace_split = True
    lexer.commenters = ""  # a "#" is an ordinary character, as in a URL fragment
    try:
        return list(lexer)
    except ValueError as exc:  # "No closing quotation", "No escaped character"
        raise CommandError(str(exc).lower()) from None


def _is_operator(token: str) -> bool:
    return bool(token) and all(ch in "&|;<>()" for ch in token)


def _step(connector: str, words: list[str]) -> Step:
    if not words:
        where = f"after {connector!r}" if connector else "at the start"
        raise CommandError(f"a command is missing {where}")
    env: list[tuple[str, str]] = []
    while words and (match := _ASSIGNMENT.fullmatch(words[0])):
        env.append((match[1], match[2]))
        words = words[1:]
    if not words:
        raise CommandError(f"{env[-1][0]}=... must be followed by a program to run")
    if words[0] == "cd":
        if env:
            raise CommandError("KEY=VALUE before cd has no effect; put it before the program")
        if len(words) != 2:
            raise CommandError(f"cd takes exactly one directory, got {len(words) - 1}")
        return Step(connector, cd=words[1])
    return Step(connector, argv=tuple(words), env=tuple(env))


def parse_command(text: str) -> tuple[Step, ...]:
    """Split ``text`` into steps; raises :class:`CommandError` naming what is not supported."""
    steps: list[Step] = []
    connector = ""
    words: list[str] = []
    for token in _tokens(text):
        if not _is_operator(token):
            words.append(token)
        elif token in (AND, OR):
            steps.append(_step(connector, words))
            connector, words = token, []
        else:
            raise CommandError(f"{token!r}: {_SHELL_ONLY[token[0]]}")
    steps.append(_step(connector, words))
    if steps[-1].cd is not None:
        raise CommandError("the command must end with a program to run, not cd")
    return tuple(steps)
