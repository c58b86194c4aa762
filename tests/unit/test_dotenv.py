"""phantom.dotenv: the .env syntax, line by line. Pure: plain strings."""

from __future__ import annotations

import pytest

from phantom.dotenv import DotenvError, parse_dotenv


def test_assignments_comments_and_export() -> None:
    text = (
        "# a comment\n"
        "\n"
        "PORT=8080\n"
        "  export NODE_ENV = production  # trailing comment\n"
        "URL=http://x/#fragment\n"
        "EMPTY=\n"
        "dotted.name=1\n"
    )
    assert parse_dotenv(text) == {
        "PORT": "8080",
        "NODE_ENV": "production",
        "URL": "http://x/#fragment",  # "#" starts a comment only after whitespace
        "EMPTY": "",
        "dotted.name": "1",
    }


def test_quotes() -> None:
    text = (
        "SINGLE='a \\n $b # c'\n"
        'DOUBLE="tab\\there \\"q\\" \\\\ \\$x"  # comment\n'
        "HASH='#not a comment'\n"
        'PEM="-----BEGIN-----\nabc\n-----END-----"\n'
        "AFTER=1\n"
    )
    assert parse_dotenv(text) == {
        "SINGLE": "a \\n $b # c",
        "DOUBLE": 'tab\there "q" \\ $x',
        "HASH": "#not a comment",
        "PEM": "-----BEGIN-----\nabc\n-----END-----",
        "AFTER": "1",
    }


def test_a_later_line_wins_and_nothing_is_expanded() -> None:
    assert parse_dotenv("A=1\nB=${A}\nA=2\n") == {"A": "2", "B": "${A}"}


@pytest.mark.parametrize(
    ("text", "line", "problem"),
    [
        ("A=1\njust words\n", 2, "expected KEY=VALUE"),
        ("A=1\n=2\n", 2, "'' is not a variable name"),
        ("1A=2\n", 1, "'1A' is not a variable name"),
        ("A-B=2\n", 1, "'A-B' is not a variable name"),
        ("A=1\nB='open\nC=3\n", 2, "no closing ' for the value"),
        ('A="x\\"\n', 1, 'no closing " for the value'),
        ("A='x' y\n", 1, "unexpected 'y' after the quoted value"),
        ('A="x\ny" z\n', 2, "unexpected 'z' after the quoted value"),
    ],
)
def test_syntax_errors_name_the_line(text: str, line: int, problem: str) -> None:
    with pytest.raises(DotenvError) as info:
        parse_dotenv(text)
    assert (info.value.line, info.value.problem) == (line, problem)
    assert str(info.value) == f"line {line}: {problem}"
