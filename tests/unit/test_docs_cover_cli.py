"""docs/cli.md names every command and option `phantom --help` shows (a command or an option
added without docs fails here), each option in the section of its command."""

from __future__ import annotations

import re
from pathlib import Path

import click
import pytest

from phantom.cli import main

DOC = (Path(__file__).resolve().parents[2] / "docs" / "cli.md").read_text()
INTRO, *SECTIONS = re.split(r"^## ", DOC, flags=re.M)


def section(command: str) -> str:
    """The sections whose heading names ``phantom <command>``."""
    found = [s for s in SECTIONS if f"`phantom {command}`" in s.partition("\n")[0]]
    assert found, f"docs/cli.md has no section headed `phantom {command}`"
    return "\n".join(found)


def mentions(text: str, flag: str) -> bool:
    """``flag`` appears in ``text`` as a word of its own (``--config`` is not ``--config-x``)."""
    return re.search(rf"(?<![\w-]){re.escape(flag)}(?![\w-])", text) is not None


def flags(command: click.Command) -> list[str]:
    """The option names --help lists for ``command`` (long and short)."""
    return [
        name
        for param in command.get_params(click.Context(command))
        if isinstance(param, click.Option)
        for name in (*param.opts, *param.secondary_opts)
    ]


@pytest.mark.parametrize("name", sorted(main.commands))
def test_every_command_has_a_section_naming_its_options(name: str) -> None:
    text = section(name)
    assert f"`{name}`" in INTRO, f"the introduction of docs/cli.md does not name `{name}`"
    for flag in flags(main.commands[name]):
        if flag in ("-h", "--help"):
            continue  # said once for every command, in the introduction
        assert mentions(text, flag), f"`phantom {name} {flag}` is not in docs/cli.md"


def test_the_introduction_names_the_global_options() -> None:
    for flag in flags(main):
        assert mentions(INTRO, flag), f"`phantom {flag}` is not in docs/cli.md"


def test_the_help_lists_exactly_the_documented_commands() -> None:
    headings = "\n".join(s.partition("\n")[0] for s in SECTIONS)
    assert set(re.findall(r"`phantom (\w+)`", headings)) == set(main.commands)
