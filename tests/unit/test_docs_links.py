"""The README and the docs link to places that exist: every relative link names a file of the
repository and, with a ``#fragment``, a heading of that file (as GitHub makes its anchors)."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
PAGES = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md")), REPO / "benchmarks/README.md"]
LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")


def without_code_blocks(text: str) -> str:
    """The text without its fenced code blocks, where ``#`` lines are not headings."""
    return re.sub(r"^```.*?^```", "", text, flags=re.S | re.M)


def anchors(page: Path) -> set[str]:
    """GitHub's anchors for the headings of ``page``: lower case, punctuation (backticks of
    code spans too) dropped, spaces as ``-``, a repeated heading numbered."""
    found, seen = set(), dict[str, int]()
    for heading in re.findall(r"^#{1,6} (.+)$", without_code_blocks(page.read_text()), re.M):
        slug = re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")
        repeats = seen.get(slug, 0)
        seen[slug] = repeats + 1
        found.add(slug if repeats == 0 else f"{slug}-{repeats}")
    return found


def links(page: Path) -> list[str]:
    return [
        target
        for target in LINK.findall(re.sub(r"`[^`]*`", "", without_code_blocks(page.read_text())))
        if not re.match(r"[a-z]+:", target)  # https:, mailto: are not ours to check
    ]


@pytest.mark.parametrize("page", PAGES, ids=lambda page: str(page.relative_to(REPO)))
def test_every_relative_link_reaches_a_file_and_a_heading(page: Path) -> None:
    broken = []
    for target in links(page):
        path, _, fragment = target.partition("#")
        linked = (page.parent / path).resolve() if path else page
        if not linked.exists():
            broken.append(f"{target}: no such file")
        elif fragment and fragment not in anchors(linked):
            broken.append(f"{target}: no such heading in {linked.relative_to(REPO)}")
    assert not broken, broken


def test_the_security_table_is_one_click_from_the_readme() -> None:
    readme = (REPO / "README.md").read_text()
    security = readme.split("\n## Security\n", 1)[1].split("\n## ", 1)[0]
    assert "(docs/security.md#security)" in security
    assert "| attack | what phantom does | test |" in (REPO / "docs/security.md").read_text()


@pytest.mark.parametrize("page", PAGES, ids=lambda page: str(page.relative_to(REPO)))
def test_every_python_example_parses(page: Path) -> None:
    for block in re.findall(r"```python\n(.*?)```", page.read_text(), re.S):
        ast.parse(block)
