"""``.env`` files: ``KEY=VALUE`` lines, parsed without touching the environment.

Pure module: takes the file's text, returns the variables in order. The syntax::

    # a comment line
    PORT=8080                   # a comment after an unquoted value
    export NODE_ENV=production  # "export " is allowed (so the file can be sourced by sh)
    GREETING='hello   world'    # single quotes: taken literally
    MOTD="line one\\nline two"   # double quotes: \\n \\t \\r \\" \\\\ \\$ escapes
    PEM="-----BEGIN KEY-----
    ...
    -----END KEY-----"          # quoted values may span lines
    EMPTY=

Values are taken as written: ``${OTHER}`` is not expanded.
"""

from __future__ import annotations

import re
from typing import Final

__all__ = ["DotenvError", "parse_dotenv"]

_ASSIGNMENT: Final = re.compile(r"\s*(?:export\s+)?([^=\s]*)\s*=\s*(.*)", re.DOTALL)
_NAME: Final = re.compile(r"[A-Za-z_][A-Za-z0-9_.]*")
_ESCAPES: Final = {"n": "\n", "t": "\t", "r": "\r", '"': '"', "\\": "\\", "$": "$"}


class DotenvError(ValueError):
    """A syntax error: ``line`` (1-based) and ``problem``."""

    def __init__(self, line: int, problem: str) -> None:
        super().__init__(f"line {line}: {problem}")
        self.line = line
        self.problem = problem


def _unescape(text: str) -> str:
    return re.sub(r"\\(.)", lambda m: _ESCAPES.get(m[1], m[0]), text, flags=re.DOTALL)


def _quoted(rest: str, lines: list[str], index: int) -> tuple[str, str, int]:
    """The value of a quoted ``rest`` (which starts with its quote), the text after the
    closing quote, and the index of the line it ends on (quoted values may span lines)."""
    quote = rest[0]
    closing = re.compile(r"'" if quote == "'" else r'(?<!\\)(?:\\\\)*"')
    text, start = rest, index
    while (match := closing.search(text, 1)) is None:
        index += 1
        if index == len(lines):
            raise DotenvError(start + 1, f"no closing {quote} for the value")
        text += "\n" + lines[index]
    value = text[1 : match.end() - 1]
    return (value if quote == "'" else _unescape(value)), text[match.end() :], index


def parse_dotenv(text: str) -> dict[str, str]:
    """The variables of a ``.env`` file; a later line wins. Raises :class:`DotenvError`."""
    variables: dict[str, str] = {}
    lines = text.splitlines()
    index = 0
    while index < len(lines):
        line = lines[index]
        if not line.strip() or line.lstrip().startswith("#"):
            index += 1
            continue
        match = _ASSIGNMENT.fullmatch(line)
        if match is None:
            raise DotenvError(index + 1, "expected KEY=VALUE")
        name, rest = match[1], match[2]
        if not _NAME.fullmatch(name):
            raise DotenvError(index + 1, f"{name!r} is not a variable name")
        if rest[:1] in ("'", '"'):
            value, after, end = _quoted(rest, lines, index)
            if after.strip() and not after.strip().startswith("#"):
                raise DotenvError(end + 1, f"unexpected {after.strip()!r} after the quoted value")
            index = end
        else:
            value = re.split(r"\s+#", rest, maxsplit=1)[0].strip()
        variables[name] = value
        index += 1
    return variables
