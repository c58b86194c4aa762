"""Path patterns (``bind_to`` entries), rewrite templates, and the trie that matches them.

Pure: strings in, matches out. A ``bind_to`` entry is one of

* ``"*"``: everything (the fallback; the same as the prefix ``"/"``);
* a **prefix**, ``"/api"``: ``/api`` and everything under it on a segment boundary
  (``/api``, ``/api/``, ``/api/x``, never ``/apix``); ``strip_prefix`` removes it;
* an **exact path**, ``"=/pricing"``: that path only (nginx's ``location =``);
* a **pattern** with named segments: ``"/users/{id}"`` (``{id}`` is one non-empty segment),
  ``"/files/{path*}"`` (the tail: zero or more segments, so ``/files`` too) or
  ``"/files/{path+}"`` (one or more). A tail comes last.

Exact paths and patterns ignore one trailing slash (``/users/7/`` is ``/users/7``). Patterns
match the path's normal form (``phantom.paths``), segment by segment.

**Most specific wins.** Two entries that match one path are compared segment by segment from
the left: a literal segment beats a parameter, which beats a tail; where the path ends, an
exact end beats a tail. So the longest literal prefix wins (``/api/admin`` over ``/api``, any
entry over ``"*"``), ``/users/me`` beats ``/users/{id}``, and ``/users/{id}`` beats
``/users/{rest*}``. Equal entries keep the order they were added in.

**Matching** walks a trie of segments (:class:`PathTrie`), in that order of preference, so it
costs the path's segment count, whatever the number of entries: it only steps back where a
literal branch dead-ends beside a parameter or a tail at the same depth.

**Rewrite templates** (``rewrite = "/v1/user/{id}"``) name the captures of the entries; the
tail is written ``{path*}`` and comes last. With a plain prefix (or ``"*"``) the template
replaces the prefix: ``/login`` rewritten to ``/auth/login`` sends ``/login/x`` to
``/auth/login/x``.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Final, Generic, TypeVar

from .paths import normalize_target

__all__ = [
    "FALLBACK",
    "PathTrie",
    "Pattern",
    "Rewrite",
    "parse_pattern",
    "parse_rewrite",
    "path_segments",
    "serves",
]

FALLBACK: Final = "*"

_NAME: Final = r"[A-Za-z_][A-Za-z0-9_]*"
_PARAM: Final = re.compile(rf"\{{({_NAME})\}}")
_TAIL: Final = re.compile(rf"\{{({_NAME})([*+])\}}")

V = TypeVar("V")


@dataclass(frozen=True, slots=True)
class Pattern:
    """One ``bind_to`` entry, parsed. ``segments``: a literal string, or None for a parameter;
    ``params``: the parameters' names in order; ``tail``: the tail's name ("" for a plain
    prefix or ``"*"``), None when the entry ends exactly; ``min_tail``: 1 for ``{name+}``."""

    text: str
    segments: tuple[str | None, ...]
    params: tuple[str, ...]
    tail: str | None
    min_tail: int = 0

    @property
    def is_prefix(self) -> bool:
        """A plain prefix (or ``"*"``): ``strip_prefix`` applies, a rewrite replaces it."""
        return self.tail == ""

    @property
    def sort_key(self) -> tuple[tuple[int, str], ...]:
        """Orders entries the way matching prefers them where both match: per segment a
        literal (by text) before a parameter; then an exact end, ``{name+}``, a tail."""
        key = [(1, "") if segment is None else (0, segment) for segment in self.segments]
        end = 2 if self.tail is None else (3 if self.min_tail else 4)
        return (*key, (end, ""))

    @property
    def shape(self) -> tuple[object, ...]:
        """What the entry matches, names aside: two entries of one shape match the same paths."""
        return (self.segments, self.tail is None, self.min_tail)


def _check_text(text: str, what: str) -> None:
    if not text.startswith("/") or any(c in text for c in "?#") or not text.isprintable():
        raise ValueError(f"expected {what}, got {text!r}")
    if any(ch.isspace() for ch in text):
        raise ValueError(f"must not contain spaces, got {text!r}")
    # Requests are routed by their path's normal form: a literal in another form never matches.
    normal = normalize_target(text.encode("utf-8", "surrogateescape"))
    written = normal.target(merge_slashes=True).decode("utf-8", "surrogateescape")
    if written != text:
        raise ValueError(f"write the path in its normal form, {written!r}, got {text!r}")


_BIND_TO_SHAPE: Final = (
    '"*", a path prefix such as "/api", an exact path such as "=/pricing" '
    'or a pattern such as "/users/{id}"'
)


@functools.lru_cache(maxsize=4096)
def parse_pattern(text: str) -> Pattern:
    """A ``bind_to`` entry (see the module's docstring). Raises ``ValueError`` saying what is
    wrong. ``Pattern.text`` is the entry in canonical form (no trailing slash; ``"/"`` is
    ``"*"``)."""
    if text == FALLBACK:
        return Pattern(FALLBACK, (), (), "")
    exact = text.startswith("=")
    body = text[1:] if exact else text
    _check_text(body, _BIND_TO_SHAPE)
    body = body.rstrip("/")
    if not body and not exact:
        return parse_pattern(FALLBACK)
    segments: list[str | None] = []
    names: list[str] = []
    tail: str | None = None if exact else ""
    min_tail = 0
    parts = body[1:].split("/") if body else []
    for index, part in enumerate(parts):
        param, tail_match = _PARAM.fullmatch(part), _TAIL.fullmatch(part)
        if exact and (param or tail_match):
            raise ValueError(f'"=" marks an exact path, without {{name}} segments, got {text!r}')
        if tail_match is not None and index == len(parts) - 1:
            tail, min_tail = tail_match[1], 1 if tail_match[2] == "+" else 0
            names.append(tail)
        elif param is not None:
            segments.append(None)
            names.append(param[1])
            if tail == "":
                tail = None  # a pattern ends where it ends, unless it has a tail
        elif any(c in part for c in "{}*"):
            raise ValueError(
                f"{{name}} segments are whole segments, and only the last may be {{name*}} "
                f"or {{name+}}, got {text!r}"
            )
        else:
            segments.append(part)
    if len(set(names)) != len(names):
        raise ValueError(f"each name may appear once, got {text!r}")
    params = tuple(names[:-1] if tail else names)
    return Pattern(("=" if exact else "") + (body or "/"), tuple(segments), params, tail, min_tail)


def path_segments(path: str) -> list[str]:
    """The segments of a path (``/a/b/`` -> ``["a", "b"]``; ``/`` -> ``[]``): one trailing
    slash is not a segment. Repeated slashes must be merged already."""
    segments = path[1:].split("/")
    if segments[-1] == "":
        segments.pop()
    return segments


def serves(entries: Iterable[str], path: str) -> bool:
    """Whether ``path`` (normal form, a query allowed) matches one of ``entries``."""
    trie: PathTrie[None] = PathTrie()
    for entry in entries:
        trie.add(parse_pattern(entry), None)
    return next(trie.matches(path.partition("?")[0]), None) is not None


# --------------------------------------------------------------------------- the trie


class _Node(Generic[V]):
    __slots__ = ("exact", "literal", "param", "tails")

    def __init__(self) -> None:
        self.literal: dict[str, _Node[V]] = {}
        self.param: _Node[V] | None = None
        self.exact: list[tuple[V, Pattern]] = []  # entries that end here
        self.tails: list[tuple[V, Pattern]] = []  # entries whose tail starts here


#: A match: the value added with the entry, the entry, the parameters' values in order, and
#: how many of the path's segments come before the tail (the rest is the tail).
Match = tuple[V, Pattern, tuple[str, ...], int]

_VISIT: Final = 0
_TAILS: Final = 1


class PathTrie(Generic[V]):
    """Entries by segment; :meth:`matches` yields those matching a path, most specific first."""

    def __init__(self) -> None:
        self._root: _Node[V] = _Node()

    def add(self, pattern: Pattern, value: V) -> None:
        node = self._root
        for segment in pattern.segments:
            if segment is None:
                if node.param is None:
                    node.param = _Node()
                node = node.param
            else:
                node = node.literal.setdefault(segment, _Node())
        if pattern.tail is None:
            node.exact.append((value, pattern))
        else:
            # {name+} before {name*} (it asks for more); equal ones keep their order.
            plus = sum(1 for _, added in node.tails if added.min_tail)
            node.tails.insert(plus if pattern.min_tail else len(node.tails), (value, pattern))

    def matches(self, path: str) -> Iterator[Match[V]]:
        """The entries matching ``path`` (normal form, slashes merged, no query), most
        specific first (see the module's docstring): a depth-first walk that tries the literal
        child, then the parameter child, then the tails at each segment."""
        segments = path_segments(path)
        count = len(segments)
        stack: list[tuple[int, _Node[V], int, tuple[str, ...]]] = [(_VISIT, self._root, 0, ())]
        while stack:
            kind, node, depth, values = stack.pop()
            if kind == _TAILS or depth == count:
                if kind == _VISIT:
                    for value, pattern in node.exact:
                        yield value, pattern, values, depth
                for value, pattern in node.tails:
                    if count - depth >= pattern.min_tail:
                        yield value, pattern, values, depth
                continue
            # Pushed in reverse order of preference: the literal child is taken first.
            if node.tails:
                stack.append((_TAILS, node, depth, values))
            if node.param is not None:
                stack.append((_VISIT, node.param, depth + 1, (*values, segments[depth])))
            child = node.literal.get(segments[depth])
            if child is not None:
                stack.append((_VISIT, child, depth + 1, values))


# --------------------------------------------------------------------------- rewrite


@dataclass(frozen=True, slots=True)
class Rewrite:
    """A ``rewrite`` template: ``head`` with ``{name}`` references, then maybe ``/{tail*}``."""

    text: str
    head: str
    names: tuple[str, ...]  # the {name} references in head
    tail: str | None  # the name of the tail reference, if the template ends with one

    def check(self, pattern: Pattern) -> None:
        """Raise ``ValueError`` unless every name this template uses is captured by
        ``pattern`` (a plain prefix captures none: the template replaces it)."""
        if pattern.is_prefix and (self.names or self.tail is not None):
            raise ValueError(
                f"{self.text!r} uses captures, but bind_to entry {pattern.text!r} is a plain "
                f"prefix that captures none (write it as {_as_tail(pattern)!r})"
            )
        for name in self.names:
            if name not in pattern.params and name != pattern.tail:
                raise ValueError(f"{{{name}}} is not captured by bind_to entry {pattern.text!r}")
            if name == pattern.tail:
                raise ValueError(
                    f"{{{name}}} is the tail of {pattern.text!r}: write it {{{name}*}}, last"
                )
        if self.tail is not None and self.tail != pattern.tail:
            raise ValueError(
                f"{{{self.tail}*}} is not the tail of bind_to entry {pattern.text!r}"
            )

    def render(self, pattern: Pattern, values: tuple[str, ...], rest: str) -> str:
        """The path for a match of ``pattern`` with parameter ``values`` and ``rest``, the
        path after the matched segments (``""`` or starting with ``/``)."""
        head = self.head
        if self.names:
            captured = dict(zip(pattern.params, values, strict=True))
            head = _PARAM.sub(lambda m: captured[m[1]], head)
        if pattern.is_prefix or self.tail is not None:
            return head.rstrip("/") + rest or "/"
        return head


def _as_tail(pattern: Pattern) -> str:
    return "/{path*}" if pattern.text == FALLBACK else pattern.text + "/{path*}"


def parse_rewrite(text: str) -> Rewrite:
    """A ``rewrite`` template. Raises ``ValueError`` saying what is wrong."""
    _check_text(text, 'a path such as "/v1/user/{id}"')
    head, tail = text, None
    last = text.rpartition("/")
    tail_match = _TAIL.fullmatch(last[2])
    if tail_match is not None:
        head, tail = last[0], tail_match[1]
    names = tuple(_PARAM.findall(head))
    if "{" in _PARAM.sub("", head) or "}" in _PARAM.sub("", head):
        raise ValueError(
            f"expected {{name}} references and a last {{name*}}, got {text!r}"
        )
    return Rewrite(text, head, names, tail)
