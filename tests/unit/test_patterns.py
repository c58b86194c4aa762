"""phantom.patterns: bind_to entries, most-specific-first matching, rewrite templates. Pure."""

from __future__ import annotations

import random

import pytest

from phantom.patterns import PathTrie, parse_pattern, parse_rewrite, path_segments, serves


def first(entries: list[str], path: str) -> str | None:
    trie: PathTrie[str] = PathTrie()
    for entry in entries:
        trie.add(parse_pattern(entry), entry)
    match = next(trie.matches(path), None)
    return None if match is None else match[0]


def order(entries: list[str], path: str) -> list[str]:
    trie: PathTrie[str] = PathTrie()
    for entry in entries:
        trie.add(parse_pattern(entry), entry)
    return [value for value, *_ in trie.matches(path)]


@pytest.mark.parametrize(
    ("text", "canonical", "segments", "params", "tail"),
    [
        ("*", "*", (), (), ""),
        ("/", "*", (), (), ""),
        ("/api/", "/api", ("api",), (), ""),
        ("=/pricing/", "=/pricing", ("pricing",), (), None),
        ("=/", "=/", (), (), None),
        ("/users/{id}", "/users/{id}", ("users", None), ("id",), None),
        ("/files/{path*}", "/files/{path*}", ("files",), (), "path"),
        ("/a/{x}/b/{rest+}", "/a/{x}/b/{rest+}", ("a", None, "b"), ("x",), "rest"),
        ("/{tenant}", "/{tenant}", (None,), ("tenant",), None),
    ],
)
def test_entries_parse(
    text: str, canonical: str, segments: tuple[str | None, ...], params: tuple[str, ...],
    tail: str | None,
) -> None:
    pattern = parse_pattern(text)
    assert (pattern.text, pattern.segments, pattern.params, pattern.tail) == (
        canonical, segments, params, tail,
    )


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("api", 'expected "*", a path prefix'),
        ("/a?b", 'expected "*", a path prefix'),
        ("/a b", "must not contain spaces"),
        ("/%7Eu//x", "write the path in its normal form, '/~u/x'"),
        ("/files/{path*}/x", "only the last may be {name*}"),
        ("/user-{id}", "whole segments"),
        ("/a/*", "whole segments"),
        ("/{a}/{a}", "each name may appear once"),
        ("/{a}/{a*}", "each name may appear once"),
        ("=/users/{id}", '"=" marks an exact path'),
        ("/{1x}", "whole segments"),
    ],
)
def test_bad_entries_say_what_is_wrong(text: str, problem: str) -> None:
    with pytest.raises(ValueError, match=None) as info:
        parse_pattern(text)
    assert problem in str(info.value)


def test_path_segments_ignore_one_trailing_slash() -> None:
    assert path_segments("/") == []
    assert path_segments("/a/b/") == ["a", "b"]
    assert path_segments("/a/b") == ["a", "b"]


def test_prefixes_match_on_segment_boundaries() -> None:
    entries = ["/api", "/api/admin", "*"]
    assert first(entries, "/api") == "/api"
    assert first(entries, "/api/") == "/api"
    assert first(entries, "/api/x/y") == "/api"
    assert first(entries, "/api/admin/x") == "/api/admin"
    assert first(entries, "/api/administrator") == "/api"
    assert first(entries, "/apix") == "*"
    assert first(entries, "/") == "*"


def test_exact_paths_and_parameters_match_that_many_segments() -> None:
    assert first(["=/pricing"], "/pricing") == "=/pricing"
    assert first(["=/pricing"], "/pricing/") == "=/pricing"
    assert first(["=/pricing"], "/pricing/x") is None
    assert first(["=/"], "/") == "=/"
    assert first(["=/"], "/x") is None
    assert first(["/users/{id}"], "/users/7") == "/users/{id}"
    assert first(["/users/{id}"], "/users/7/") == "/users/{id}"
    assert first(["/users/{id}"], "/users") is None
    assert first(["/users/{id}"], "/users/7/posts") is None


def test_tails_star_may_be_empty_plus_may_not() -> None:
    star, plus = ["/files/{path*}"], ["/files/{path+}"]
    for path in ("/files", "/files/", "/files/a", "/files/a/b/c"):
        assert first(star, path) == star[0]
    assert first(star, "/filesx") is None
    assert first(plus, "/files") is None
    assert first(plus, "/files/") is None
    assert first(plus, "/files/a/b") == plus[0]


def test_most_specific_first_literal_then_parameter_then_tail() -> None:
    entries = [
        "*",
        "/users",
        "/users/{rest*}",
        "/users/{id}",
        "/users/me",
        "/users/{id}/posts",
        "/{tenant}/posts",
        "/users/{rest+}",
    ]
    assert order(entries, "/users/me") == [
        "/users/me", "/users/{id}", "/users/{rest+}", "/users", "/users/{rest*}", "*"
    ]
    assert order(entries, "/users/7/posts") == [
        "/users/{id}/posts", "/users/{rest+}", "/users", "/users/{rest*}", "*"
    ]
    assert order(entries, "/shop/posts") == ["/{tenant}/posts", "*"]
    assert order(entries, "/users") == ["/users", "/users/{rest*}", "*"]


def test_exact_end_beats_a_tail_at_the_same_place() -> None:
    assert order(["/docs", "=/docs", "/docs/{p*}"], "/docs") == ["=/docs", "/docs", "/docs/{p*}"]


def test_captures_and_the_tail_depth() -> None:
    trie: PathTrie[int] = PathTrie()
    trie.add(parse_pattern("/a/{x}/b/{y}/{rest*}"), 1)
    assert list(trie.matches("/a/1/b/2/c/d")) == [
        (1, parse_pattern("/a/{x}/b/{y}/{rest*}"), ("1", "2"), 4)
    ]


def test_the_trie_agrees_with_a_scan_of_the_entries_in_order_of_specificity() -> None:
    """Against a brute-force oracle: every entry tested on its own, sorted by the rule (per
    segment from the left: literal < parameter < tail; exact end before tail; + before *)."""
    rng = random.Random(14)
    words = ["a", "b", "c"]

    def random_entry() -> str:
        parts = []
        for index in range(rng.randint(0, 3)):
            kind = rng.random()
            parts.append(rng.choice(words) if kind < 0.6 else f"{{p{index}}}")
        end = rng.random()
        if end < 0.3:
            return "/" + "/".join(parts) if parts else "*"
        if end < 0.5:
            parts.append("{t*}" if rng.random() < 0.5 else "{t+}")
        elif not any("{" in p for p in parts):
            return "=/" + "/".join(parts)
        return "/" + "/".join(parts)

    def matches_alone(entry: str, segments: list[str]) -> tuple[object, ...] | None:
        pattern = parse_pattern(entry)
        fixed = pattern.segments
        if len(segments) < len(fixed):
            return None
        for want, got in zip(fixed, segments, strict=False):
            if want is not None and want != got:
                return None
        rest = len(segments) - len(fixed)
        if pattern.tail is None and rest:
            return None
        if pattern.tail is not None and rest < pattern.min_tail:
            return None
        # The sort key: per fixed segment 0 literal / 1 parameter; then, where segments are
        # left, 2 for a tail ({name+} before {name*}); where none are, 0 exact / 1 tail.
        key = tuple(0 if want is not None else 1 for want in fixed)
        if rest:
            return (*key, 2, 0 if pattern.min_tail else 1)
        return (*key, 0 if pattern.tail is None else 1, 0)

    for _ in range(300):
        entries = list(dict.fromkeys(parse_pattern(random_entry()).text for _ in range(8)))
        path = "/" + "/".join(rng.choice(words) for _ in range(rng.randint(0, 4)))
        segments = path_segments(path)
        keyed = [(matches_alone(e, segments), n, e) for n, e in enumerate(entries)]
        expected = [e for key, _, e in sorted((k, n, e) for k, n, e in keyed if k is not None)]
        assert order(entries, path) == expected, (entries, path)


def test_serves() -> None:
    assert serves(("/api",), "/api/x?q")
    assert not serves(("/api",), "/apix")
    assert serves(("=/a", "/b/{id}"), "/b/1")


@pytest.mark.parametrize(
    ("entry", "template", "path", "rest", "expected"),
    [
        ("/users/{id}", "/v1/user/{id}", "/users/7", "", "/v1/user/7"),
        ("/u/{a}/{b}", "/x/{b}-{a}", "/u/1/2", "", "/x/2-1"),
        ("/files/{path*}", "/storage/{path*}", "/files", "", "/storage"),
        ("/files/{path*}", "/storage/{path*}", "/files/", "/", "/storage/"),
        ("/files/{path*}", "/storage/{path*}", "/files/a/b", "/a/b", "/storage/a/b"),
        ("/files/{path*}", "/{path*}", "/files", "", "/"),
        ("/files/{path*}", "/all", "/files/a", "/a", "/all"),
        ("/login", "/auth/login", "/login", "", "/auth/login"),
        ("/login", "/auth/login", "/login/x", "/x", "/auth/login/x"),
        ("/login", "/", "/login/x", "/x", "/x"),
        ("*", "/app", "/x", "/x", "/app/x"),
        ("=/old", "/new", "/old", "", "/new"),
    ],
)
def test_rewrite_renders_captures(
    entry: str, template: str, path: str, rest: str, expected: str
) -> None:
    pattern = parse_pattern(entry)
    rewrite = parse_rewrite(template)
    rewrite.check(pattern)
    trie: PathTrie[None] = PathTrie()
    trie.add(pattern, None)
    match = next(trie.matches(path))
    assert rewrite.render(pattern, match[2], rest) == expected


@pytest.mark.parametrize(
    ("entry", "template", "problem"),
    [
        ("/api", "/v1/{id}", "plain prefix that captures none (write it as '/api/{path*}')"),
        ("*", "/{path*}", "write it as '/{path*}'"),
        ("/users/{id}", "/v1/{uid}", "{uid} is not captured by bind_to entry '/users/{id}'"),
        ("/f/{path*}", "/x/{path}", "{path} is the tail of '/f/{path*}': write it {path*}, last"),
        ("/f/{id}", "/x/{path*}", "{path*} is not the tail of bind_to entry '/f/{id}'"),
    ],
)
def test_rewrite_names_what_the_entry_does_not_capture(
    entry: str, template: str, problem: str
) -> None:
    with pytest.raises(ValueError) as info:
        parse_rewrite(template).check(parse_pattern(entry))
    assert problem in str(info.value)


@pytest.mark.parametrize("template", ["v1", "/v1?x", "/a/{b", "/a/{b}}", "/a/{p*}/b"])
def test_bad_rewrites(template: str) -> None:
    with pytest.raises(ValueError):
        parse_rewrite(template)
